#include "store/message_owner.h"

#include <unistd.h>

namespace storemove::store {

bool SameOwnerAndMode(const struct stat& a, const struct stat& b) {
  // The group counts only where the mode gives it something (a setgid directory gives new files
  // its group: 0600 files of two groups are alike).
  return a.st_uid == b.st_uid && (a.st_mode & 07777) == (b.st_mode & 07777) &&
         ((a.st_mode & 0070) == 0 || a.st_gid == b.st_gid);
}

bool AsNewMessage(const struct stat& st) {
  return st.st_uid == ::geteuid() && (st.st_mode & 07777) == kMessageFileMode;
}

}  // namespace storemove::store
