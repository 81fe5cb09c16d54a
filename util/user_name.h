// Names of local users, for messages that name a file's owner.
#pragma once

#include <sys/types.h>

#include <string>

namespace storemove {

// The login name of `uid`; "" when the user database has none.
std::string LoginName(uid_t uid);

// "joe (uid 1001)", or "uid 1001" when the user database has no name for it.
std::string UserName(uid_t uid);

}  // namespace storemove
