#include "util/descriptor_limit.h"

#include <dirent.h>

namespace storemove {

bool RaiseDescriptorLimit(rlim_t need, rlim_t* hard) {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    *hard = RLIM_INFINITY;
    return true;  // not known: not refused on a guess
  }
  *hard = rl.rlim_max;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) return true;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) return false;
  rl.rlim_cur = need;
  return ::setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

size_t OpenDescriptors() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return 0;
  size_t open = 0;
  while (dirent* e = ::readdir(d)) open += e->d_name[0] != '.';
  ::closedir(d);
  return open > 0 ? open - 1 : 0;  // less the directory's own descriptor
}

}  // namespace storemove
