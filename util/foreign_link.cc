#include "util/foreign_link.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "util/error.h"
#include "util/fs.h"
#include "util/user_name.h"

namespace storemove {
namespace {

bool Trusted(uid_t owner) { return owner == ::geteuid() || owner == 0; }

// Walks every component of a path the way the kernel resolves it, lstat'ing each prefix: a link
// anywhere in it (a directory link as much as the last name: root's `import ~joe/mail/*` with
// ~joe/mail a link of joe's, helper-84) and the links its targets pass through.
class Walk {
 public:
  Walk(const std::string& path, std::string_view what) : path_(path), what_(what) {}

  void Check(const std::string& p) {
    std::string prefix = p.front() == '/' ? "" : ".";
    size_t pos = 0;
    while (pos <= p.size()) {
      const size_t slash = std::min(p.find('/', pos), p.size());
      const std::string name = p.substr(pos, slash - pos);
      pos = slash + 1;
      if (name.empty() || name == ".") continue;
      prefix += "/" + name;
      struct stat st;
      if (::lstat(prefix.c_str(), &st) != 0) return;  // missing: the caller's open says why
      const bool last = pos > p.size();
      if (S_ISLNK(st.st_mode)) {
        if (!Trusted(st.st_uid)) Refuse(prefix, st.st_uid, "symbolic link", "follow");
        if (++links_ > 40) return;  // the kernel's own bound: its open fails with ELOOP
        std::vector<char> target(size_t(st.st_size > 0 ? st.st_size : 4095) + 1);
        const ssize_t n = ::readlink(prefix.c_str(), target.data(), target.size());
        if (n <= 0 || size_t(n) >= target.size()) return;  // changed meanwhile: the open decides
        const std::string next(target.data(), size_t(n));
        Check(next.front() == '/' ? next : DirectoryOf(prefix) + "/" + next);
      } else if (last && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) && !Trusted(st.st_uid)) {
        Refuse(prefix, st.st_uid, S_ISFIFO(st.st_mode) ? "FIFO" : "socket", "use");
      }
    }
  }

 private:
  [[noreturn]] void Refuse(const std::string& at, uid_t owner, const char* kind, const char* verb) const {
    const bool itself = at == path_ || at == "./" + path_;
    Throw(Errc::kAuth, std::string(what_) + " " + path_ + (itself ? "" : " (through " + at + ")") + " is a " + kind +
                           " owned by " + UserName(owner) + ", not by this user or root: refusing to " + verb +
                           " it (another user may have put it there to redirect this " + std::string(what_) +
                           "); remove it, or run as its owner");
  }

  const std::string& path_;
  const std::string_view what_;
  int links_ = 0;
};

}  // namespace

void RefuseForeignLink(const std::string& path, std::string_view what) {
  if (!path.empty()) Walk(path, what).Check(path);
}

}  // namespace storemove
