#include "store/stale_temporaries.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <memory>

#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {

namespace {

// The pid in "tmp.<pid>.<token>"; 0 when the name is not of that form.
pid_t WriterPid(std::string_view name) {
  if (!name.starts_with("tmp.")) return 0;
  name.remove_prefix(4);
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == name.size()) return 0;
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + dot, pid);
  if (ec != std::errc() || end != name.data() + dot || pid <= 0) return 0;
  return pid;
}

// "n<inode>." of this process's pid namespace, or "" when /proc does not say.
const std::string& NamespaceTag() {
  static const std::string tag = [] {
    struct stat st;
    if (::stat("/proc/self/ns/pid", &st) != 0) return std::string();
    return "n" + std::to_string(uint64_t(st.st_ino)) + ".";
  }();
  return tag;
}

// The pid namespace a temporary's token names ("n<inode>.<random>"), 0 for a name without one.
uint64_t TokenNamespace(std::string_view token) {
  if (!token.starts_with('n')) return 0;
  const size_t dot = token.find('.');
  if (dot == std::string_view::npos) return 0;
  uint64_t ino = 0;
  const auto [end, ec] = std::from_chars(token.data() + 1, token.data() + dot, ino);
  return ec == std::errc() && end == token.data() + dot ? ino : 0;
}

// Whether a process of the pid namespace `ino` still runs: one of /proc's processes is in it.
// A process whose namespace cannot be read is not counted (a container's init, even for root;
// writers run as the store's owner, whose processes' namespaces that owner may read). Without
// /proc, it may.
bool NamespaceLives(uint64_t ino) {
  std::unique_ptr<DIR, int (*)(DIR*)> proc(::opendir("/proc"), ::closedir);
  if (!proc) return true;
  while (const dirent* e = ::readdir(proc.get())) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    struct stat st;
    if (::stat(("/proc/" + std::string(e->d_name) + "/ns/pid").c_str(), &st) == 0 && uint64_t(st.st_ino) == ino)
      return true;
  }
  return false;
}

bool ProcessRuns(pid_t pid) {
  // EPERM: it runs, under another user.
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

}  // namespace

bool IsStaleTemporary(std::string_view name, const struct stat& st, std::time_t now, std::chrono::seconds min_age) {
  if (!S_ISREG(st.st_mode)) return false;
  if (now - st.st_ctime < min_age.count()) return false;
  if (const pid_t pid = WriterPid(name)) {
    // A pid of another namespace (a container's writer) means nothing here: that namespace's
    // end is the writer's (helper-129: a live writer's files removed, a dead pid 1's kept).
    const uint64_t ns = TokenNamespace(name.substr(name.find('.', 4) + 1));
    const std::string& own = NamespaceTag();
    if (ns != 0 && !own.empty() && "n" + std::to_string(ns) + "." != own) return !NamespaceLives(ns);
    return !ProcessRuns(pid);
  }
  const size_t tmp = name.find(".tmp.");
  return tmp != std::string_view::npos && tmp > 0 && tmp + 5 < name.size();
}

uint64_t RemoveStaleTemporaries(int dirfd, const std::string& shown, std::chrono::seconds min_age) {
  const int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return 0;  // the folder was removed meanwhile
    ThrowErrno("open " + shown);
  }
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(fd), ::closedir);
  if (!dir) {
    const int err = errno;
    ::close(fd);
    ThrowErrno("list " + shown, err);
  }
  const std::time_t now = std::time(nullptr);
  uint64_t removed = 0;
  for (;;) {
    errno = 0;
    const dirent* e = ::readdir(dir.get());
    if (!e) {
      if (errno != 0) ThrowErrno("list " + shown);
      break;
    }
    const std::string_view name = e->d_name;
    if (!name.starts_with("tmp.") && name.find(".tmp.") == std::string_view::npos) continue;
    struct stat st;
    if (::fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    if (!IsStaleTemporary(name, st, now, min_age)) continue;
    if (::unlinkat(dirfd, e->d_name, 0) == 0) {
      ++removed;
    } else if (errno != ENOENT) {
      ThrowErrno("remove " + shown + "/" + std::string(name));
    }
  }
  return removed;
}

std::string NewTemporaryName() {
  return "tmp." + std::to_string(::getpid()) + "." + NamespaceTag() + RandomToken();
}

uint64_t RemoveTemporariesOfGoneWriters(int dirfd) {
  const std::string& tag = NamespaceTag();
  if (tag.empty()) return 0;
  const int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return 0;
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(fd), ::closedir);
  if (!dir) {
    ::close(fd);
    return 0;
  }
  uint64_t removed = 0;
  while (const dirent* e = ::readdir(dir.get())) {
    const std::string_view name = e->d_name;
    const pid_t pid = WriterPid(name);
    if (pid == 0) continue;
    const std::string_view token = name.substr(name.find('.', 4) + 1);
    if (!token.starts_with(tag) || ProcessRuns(pid)) continue;
    struct stat st;
    if (::fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::unlinkat(dirfd, e->d_name, 0) == 0) ++removed;
  }
  return removed;
}

}  // namespace storemove::store
