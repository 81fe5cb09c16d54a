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
#include <sstream>

#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {

namespace {

// What a temporary's name says of its writer: "tmp.<pid>.[n<ns>.][s<start>.]<random>".
struct WriterName {
  pid_t pid = 0;        // 0: not a writer's temporary
  uint64_t ns = 0;      // the inode of its pid namespace; 0 when the name has none (an older version's)
  uint64_t start = 0;   // when it started, clock ticks since boot; 0 when the name has none
};

// A run of digits after `prefix` and up to the next dot, taken off `text`; 0 when absent.
uint64_t TakeNumberField(std::string_view& text, char prefix) {
  if (!text.starts_with(prefix)) return 0;
  const size_t dot = text.find('.');
  if (dot == std::string_view::npos || dot < 2) return 0;
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data() + 1, text.data() + dot, value);
  if (ec != std::errc() || end != text.data() + dot) return 0;
  text.remove_prefix(dot + 1);
  return value;
}

WriterName ParseWriterName(std::string_view name) {
  WriterName w;
  if (!name.starts_with("tmp.")) return w;
  name.remove_prefix(4);
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == name.size()) return w;
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + dot, pid);
  if (ec != std::errc() || end != name.data() + dot || pid <= 0) return w;
  name.remove_prefix(dot + 1);
  w.pid = pid;
  w.ns = TakeNumberField(name, 'n');
  if (w.ns != 0) w.start = TakeNumberField(name, 's');
  return w;
}

// Field 9 (flags) and field 22 (start, clock ticks since boot) of /proc/PID/stat, read after the
// command in parentheses (which may hold anything). False when the file cannot be read.
bool ReadProcessStat(const std::string& path, unsigned* flags, unsigned long long* start_ticks) {
  std::string text;
  if (FILE* f = std::fopen(path.c_str(), "re")) {
    char buf[1024];
    const size_t got = std::fread(buf, 1, sizeof buf - 1, f);
    text.assign(buf, got);
    std::fclose(f);
  }
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return false;
  return std::sscanf(text.c_str() + paren + 1,
                     " %*c %*d %*d %*d %*d %*d %u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", flags,
                     start_ticks) == 2;
}

// Whether the start times /proc shows this process are the kernel's own: no time namespace
// shifts its boot clock (/proc/self/timens_offsets, where the kernel has one). A writer in a
// shifted one names no start; a reader in one compares none.
bool BootClockUnshifted() {
  static const bool unshifted = [] {
    FILE* f = std::fopen("/proc/self/timens_offsets", "re");
    if (!f) return true;
    bool zero = true;
    char line[128];
    while (std::fgets(line, sizeof line, f)) {
      long long seconds = 0, nanoseconds = 0;
      if (std::sscanf(line, "boottime %lld %lld", &seconds, &nanoseconds) == 2) zero = seconds == 0 && nanoseconds == 0;
    }
    std::fclose(f);
    return zero;
  }();
  return unshifted;
}

// How many pid namespaces /proc/<pid>/status's NSpid line lists (from /proc's own namespace down
// to the process's) and the process's effective uid; false when the file cannot be read.
bool ReadProcessStatus(const std::string& dir, size_t* namespaces, uid_t* euid) {
  FILE* f = std::fopen((dir + "/status").c_str(), "re");
  if (!f) return false;
  bool have_ns = false, have_uid = false;
  char line[512];
  while (std::fgets(line, sizeof line, f)) {
    unsigned real = 0, effective = 0;
    if (std::sscanf(line, "Uid: %u %u", &real, &effective) == 2) {
      *euid = uid_t(effective);
      have_uid = true;
    } else if (std::string_view(line).starts_with("NSpid:")) {
      std::istringstream fields(line + 6);
      size_t count = 0;
      for (long pid; fields >> pid;) ++count;
      *namespaces = count;
      have_ns = count > 0;
    }
  }
  std::fclose(f);
  return have_ns && have_uid;
}

// Whether /proc is this process's pid namespace's, so that /proc/<pid> is the process this
// process knows as <pid>: not so after `unshare --pid` without a /proc of its own, where this
// process's NSpid lists two pids. Comparing /proc/self with getpid() was not enough: the two
// numbers can be equal there, and a live writer's file was removed (helper-135).
bool ProcIsOurs() {
  size_t namespaces = 0;
  uid_t euid = 0;
  return ReadProcessStatus("/proc/self", &namespaces, &euid) && namespaces == 1;
}

// This process's writer identity, "n<ns>.s<start>." (or "n<ns>." where its start cannot be
// given), "" when /proc does not say. Made again after a fork: a child may be in another
// namespace than the parent that asked first.
std::string WriterTag() {
  static std::mutex mutex;
  static pid_t made_for = 0;
  static std::string tag;
  std::lock_guard<std::mutex> lock(mutex);
  if (made_for != ::getpid()) {
    made_for = ::getpid();
    tag.clear();
    struct stat st;
    if (::stat("/proc/self/ns/pid", &st) == 0) {
      tag = "n" + std::to_string(uint64_t(st.st_ino)) + ".";
      unsigned flags = 0;
      unsigned long long start = 0;
      if (BootClockUnshifted() && ReadProcessStat("/proc/self/stat", &flags, &start) && start > 0)
        tag += "s" + std::to_string(start) + ".";
    }
  }
  return tag;
}

// The inode of this process's pid namespace, 0 when /proc does not say.
uint64_t OwnNamespace() {
  const std::string tag = WriterTag();
  std::string_view fields = tag;
  return TakeNumberField(fields, 'n');
}

// When each pid namespace's oldest process started (clock ticks since boot), from one scan of
// /proc: relink asks for every temporary of another namespace, and /proc is scanned at most every
// few seconds, not once a file (helper-130). No wall clock is involved: a step of the clock moves
// the boot time /proc/stat gives and every start computed from it, and made a live writer's
// files look older than their namespace (helper-134).
struct NamespaceStarts {
  std::time_t scanned = 0;
  uid_t scanned_as = 0;
  // Every process that could be a writer was seen: /proc is the initial pid namespace's (it shows
  // kernel threads), and none of this user's processes in another namespace hid its namespace
  // (a process that is not dumpable, as `serve` makes itself: helper-134).
  bool complete = false;
  bool starts_comparable = false;  // this process's boot clock is not shifted
  std::map<uint64_t, unsigned long long> oldest;
};

NamespaceStarts ScanNamespaces() {
  constexpr unsigned kKernelThread = 0x00200000;  // PF_KTHREAD
  NamespaceStarts n;
  n.scanned = std::time(nullptr);
  n.scanned_as = ::geteuid();
  n.starts_comparable = BootClockUnshifted();
  size_t own_depth = 0;
  uid_t own_euid = 0;
  std::unique_ptr<DIR, int (*)(DIR*)> proc(::opendir("/proc"), ::closedir);
  if (!proc || !ReadProcessStatus("/proc/self", &own_depth, &own_euid)) return n;
  bool kernel_threads = false, hidden = false;
  while (const dirent* e = ::readdir(proc.get())) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    const std::string dir = "/proc/" + std::string(e->d_name);
    unsigned flags = 0;
    unsigned long long start_ticks = 0;
    if (!ReadProcessStat(dir + "/stat", &flags, &start_ticks)) continue;  // gone meanwhile
    if (flags & kKernelThread) {
      kernel_threads = true;
      continue;
    }
    struct stat ns;
    if (::stat((dir + "/ns/pid").c_str(), &ns) != 0) {
      // Where it is not /proc's own namespace (and ours), and it could be a writer (this user's,
      // or any for root), its namespace is unknown.
      size_t depth = 0;
      uid_t euid = 0;
      if (errno != ENOENT && ReadProcessStatus(dir, &depth, &euid) &&
          (n.scanned_as == 0 || euid == n.scanned_as) && (depth != 1 || own_depth != 1))
        hidden = true;
      continue;
    }
    auto [it, fresh] = n.oldest.emplace(uint64_t(ns.st_ino), start_ticks);
    if (!fresh) it->second = std::min(it->second, start_ticks);
  }
  n.complete = kernel_threads && !hidden;
  return n;
}

// Whether the writer of a temporary of pid namespace `ino` that started at `start` (0: unknown),
// the file last changed at `changed`, may still run: a process of that namespace started no
// later than the writer. The kernel hands a dead namespace's inode number to the next one made,
// whose processes all started after the dead writer (helper-130: a restarted container kept its
// predecessor's files for ever). Kept whenever the scan cannot tell.
bool NamespaceLives(uint64_t ino, uint64_t start, std::time_t changed) {
  static std::mutex mutex;
  static std::shared_ptr<const NamespaceStarts> scan;
  std::shared_ptr<const NamespaceStarts> n;
  {
    std::lock_guard<std::mutex> lock(mutex);
    const std::time_t now = std::time(nullptr);
    if (!scan || changed >= scan->scanned || now - scan->scanned >= 5 || now < scan->scanned ||
        scan->scanned_as != ::geteuid())
      scan = std::make_shared<const NamespaceStarts>(ScanNamespaces());
    n = scan;
  }
  if (!n->complete || changed > n->scanned) return true;
  const auto it = n->oldest.find(ino);
  if (it == n->oldest.end()) return false;
  if (start == 0 || !n->starts_comparable) return true;  // any process of it: an older name
  return it->second <= start;
}

bool ProcessRuns(pid_t pid) {
  // EPERM: it runs, under another user.
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

// Whether the writer `w` of this pid namespace may still run: its pid runs, and, where the name
// gives the writer's start and /proc shows this namespace's processes, it is the same process
// (not another given the pid since).
bool OwnWriterRuns(const WriterName& w) {
  if (!ProcessRuns(w.pid)) return false;
  if (w.start == 0 || !BootClockUnshifted() || !ProcIsOurs()) return true;
  unsigned flags = 0;
  unsigned long long start = 0;
  if (!ReadProcessStat("/proc/" + std::to_string(w.pid) + "/stat", &flags, &start)) return true;
  return start == w.start;
}

// Whether the writer named `w` (of a temporary last changed at `changed`) may still run.
bool WriterMayRun(const WriterName& w, std::time_t changed) {
  const uint64_t own = OwnNamespace();
  // A pid of another namespace (a container's writer) means nothing here: that namespace's
  // end is the writer's (helper-129: a live writer's files removed, a dead pid 1's kept).
  if (w.ns != 0 && own != 0 && w.ns != own) return NamespaceLives(w.ns, w.start, changed);
  return OwnWriterRuns(w);
}

}  // namespace

bool IsStaleTemporary(std::string_view name, const struct stat& st, std::time_t now, std::chrono::seconds min_age) {
  if (!S_ISREG(st.st_mode)) return false;
  if (now - st.st_ctime < min_age.count()) return false;
  if (const WriterName w = ParseWriterName(name); w.pid != 0) return !WriterMayRun(w, st.st_ctime);
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
  return "tmp." + std::to_string(::getpid()) + "." + WriterTag() + RandomToken();
}

uint64_t RemoveTemporariesOfGoneWriters(int dirfd) {
  const uint64_t own = OwnNamespace();
  if (own == 0) return 0;
  const int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return 0;
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(fd), ::closedir);
  if (!dir) {
    ::close(fd);
    return 0;
  }
  uint64_t removed = 0;
  while (const dirent* e = ::readdir(dir.get())) {
    const WriterName w = ParseWriterName(e->d_name);
    if (w.pid == 0 || w.ns != own || OwnWriterRuns(w)) continue;
    struct stat st;
    if (::fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::unlinkat(dirfd, e->d_name, 0) == 0) ++removed;
  }
  return removed;
}

}  // namespace storemove::store
