// A hard link makes two messages one inode, with one owner and one mode. Whoever links message
// files (relink, restore, delivery on arrival, a user's move to another filesystem) links only
// when that changes neither (helper-126 M4: a message made 0644 by hand, or another user's, gave
// its mode and owner to every identical message linked to it).
#pragma once

#include <sys/stat.h>

namespace storemove::store {

// The mode writers give a new message file (Folder::NewMessage).
inline constexpr mode_t kMessageFileMode = 0600;

// Two files of the same owner and mode (and group, where the mode gives the group access).
bool SameOwnerAndMode(const struct stat& a, const struct stat& b);

// A file as this process makes a new message: its own, mode kMessageFileMode.
bool AsNewMessage(const struct stat& st);

}  // namespace storemove::store
