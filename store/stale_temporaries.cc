#include "store/stale_temporaries.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>

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

// When each pid namespace's oldest process started (seconds since the epoch), from one scan of
// /proc: relink asks for every temporary of another namespace, and /proc is scanned at most every
// few seconds, not once a file (helper-130). A process whose namespace or start cannot be read is not
// counted (a container's init, even for root; writers run as the store's owner, whose processes
// that owner may read).
struct NamespaceStarts {
  std::time_t scanned = 0;
  bool readable = false;  // /proc could be listed
  std::map<uint64_t, std::time_t> oldest;
};

NamespaceStarts ScanNamespaces() {
  NamespaceStarts n;
  n.scanned = std::time(nullptr);
  std::time_t boot = 0;
  if (FILE* system = std::fopen("/proc/stat", "re")) {
    char line[256];
    while (std::fgets(line, sizeof line, system))
      if (std::sscanf(line, "btime %ld", &boot) == 1) break;
    std::fclose(system);
  }
  const long ticks = ::sysconf(_SC_CLK_TCK);
  std::unique_ptr<DIR, int (*)(DIR*)> proc(::opendir("/proc"), ::closedir);
  if (!proc || boot == 0 || ticks <= 0) return n;
  n.readable = true;
  while (const dirent* e = ::readdir(proc.get())) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    const std::string dir = "/proc/" + std::string(e->d_name);
    struct stat ns;
    if (::stat((dir + "/ns/pid").c_str(), &ns) != 0) continue;
    // Field 22 of /proc/PID/stat, after the command in parentheses (which may hold anything).
    std::string text;
    if (FILE* f = std::fopen((dir + "/stat").c_str(), "re")) {
      char buf[1024];
      const size_t got = std::fread(buf, 1, sizeof buf, f);
      text.assign(buf, got);
      std::fclose(f);
    }
    const size_t paren = text.rfind(')');
    if (paren == std::string::npos) continue;
    unsigned long long start_ticks = 0;
    if (std::sscanf(text.c_str() + paren + 1,
                    " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                    &start_ticks) != 1)
      continue;
    const std::time_t started = boot + std::time_t(start_ticks / uint64_t(ticks));
    auto [it, fresh] = n.oldest.emplace(uint64_t(ns.st_ino), started);
    if (!fresh) it->second = std::min(it->second, started);
  }
  return n;
}

// Whether the writer of a temporary of pid namespace `ino`, last changed at `changed`, may still
// run: a process of that namespace started no later than the file changed. The kernel hands a
// dead namespace's inode number to the next one made, whose processes all started after the
// file (helper-130: a restarted container kept its predecessor's files for ever). A file changed
// after the scan (a namespace made since) is not judged.
bool NamespaceLives(uint64_t ino, std::time_t changed) {
  static std::mutex mutex;
  static std::shared_ptr<const NamespaceStarts> scan;
  std::shared_ptr<const NamespaceStarts> n;
  {
    std::lock_guard<std::mutex> lock(mutex);
    const std::time_t now = std::time(nullptr);
    if (!scan || changed >= scan->scanned || now - scan->scanned >= 5 || now < scan->scanned)
      scan = std::make_shared<const NamespaceStarts>(ScanNamespaces());
    n = scan;
  }
  if (!n->readable || changed > n->scanned) return true;
  const auto it = n->oldest.find(ino);
  return it != n->oldest.end() && it->second <= changed + 1;  // whole seconds on both sides
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
    if (ns != 0 && !own.empty() && "n" + std::to_string(ns) + "." != own) return !NamespaceLives(ns, st.st_ctime);
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
