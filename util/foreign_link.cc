#include "util/foreign_link.h"

#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "util/error.h"
#include "util/user_name.h"

namespace storemove {
namespace {

bool Trusted(uid_t owner) { return owner == ::geteuid() || owner == 0; }

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

void RefuseForeignLink(const std::string& path, std::string_view what) {
  std::string at = path;
  for (int hops = 0; hops < 40; ++hops) {  // the kernel's own bound on a chain of links
    struct stat st;
    if (::lstat(at.c_str(), &st) != 0) return;  // missing: the caller's open says why
    const char* kind = S_ISLNK(st.st_mode) ? "symbolic link" : S_ISFIFO(st.st_mode) ? "FIFO" : S_ISSOCK(st.st_mode) ? "socket" : nullptr;
    if (!kind) return;
    if (!Trusted(st.st_uid))
      Throw(Errc::kAuth, std::string(what) + " " + path + (at == path ? "" : " (through " + at + ")") + " is a " + kind +
                             " owned by " + UserName(st.st_uid) +
                             ", not by this user or root: refusing to " + (S_ISLNK(st.st_mode) ? "follow" : "use") +
                             " it (another user may have put it there to redirect this " + std::string(what) +
                             "); remove it, or run as its owner");
    if (!S_ISLNK(st.st_mode)) return;
    std::vector<char> target(size_t(st.st_size > 0 ? st.st_size : 4095) + 1);
    const ssize_t n = ::readlink(at.c_str(), target.data(), target.size());
    if (n <= 0 || size_t(n) >= target.size()) return;  // changed meanwhile: the open decides
    std::string next(target.data(), size_t(n));
    at = next.front() == '/' ? next : DirectoryOf(at) + "/" + next;
  }
}

}  // namespace storemove
