#include "util/user_name.h"

#include <pwd.h>

#include <vector>

namespace storemove {

std::string LoginName(uid_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found) return found->pw_name;
  return "";
}

std::string UserName(uid_t uid) {
  const std::string name = LoginName(uid);
  return name.empty() ? "uid " + std::to_string(uid) : name + " (uid " + std::to_string(uid) + ")";
}

}  // namespace storemove
