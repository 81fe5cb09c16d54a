// libdb's failchk asks is_alive(pid, tid) about every thread it finds in the environment. Being
// wrong is costly either way: a live process taken for dead gets its transactions aborted under
// it; a dead one taken for alive keeps its locks for ever, once its registry slot was cleared.
// So a process other than this one is alive exactly when libdb's own registry says so (its
// `__db.register` slot is locked, env_register.c): the test that made libdb look in the first
// place, and one that holds across PID namespaces. The registry is read through the descriptor
// Store::Db keeps open: closing any descriptor of that file would drop this process's own
// registration lock. Threads are told apart only in this process.
#include "store/mboxlist_liveness.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "store/mboxlist.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {
namespace {

std::atomic<uint64_t> fork_generation{0};

// util's ReadFile, with "nothing" for a task that has ended (or no /proc).
std::string ReadProcFile(const std::string& path) {
  try {
    return ReadFile(path);
  } catch (const Error&) {
    return {};
  }
}

// The process's id, asked once per fork generation: libdb asks at every call.
pid_t ThisProcess() {
  static std::atomic<uint64_t> asked_in{UINT64_MAX};
  static std::atomic<pid_t> pid{0};
  const uint64_t generation = (ThisThread(), fork_generation.load(std::memory_order_acquire));
  if (asked_in.load(std::memory_order_acquire) != generation) {
    pid.store(::getpid(), std::memory_order_relaxed);
    asked_in.store(generation, std::memory_order_release);
  }
  return pid.load(std::memory_order_relaxed);
}

void ThreadId(DB_ENV*, pid_t* pid, db_threadid_t* tid) {
  // libdb passes fields of its shared regions (a mutex's owner), which it guards with its own
  // test-and-set locks; stores that are atomic say so to ThreadSanitizer, which cannot see those.
  __atomic_store_n(pid, ThisProcess(), __ATOMIC_RELAXED);
  // The kernel's id, not pthread_self(): it can be asked whether it still runs (tgkill).
  if (tid != nullptr) __atomic_store_n(tid, db_threadid_t(ThisThread()), __ATOMIC_RELAXED);
}

// Each slot of the registry is 25 bytes, "%24lu\n" or the empty mark "X...0\n", and its process
// holds a write lock on the slot's first byte. F_GETLK only asks; this process's own slot never
// conflicts with it, so callers skip their own pid. `fn(pid, locked)` returns true to stop.
template <typename Fn>
void ForEachRegistered(int registry_fd, Fn fn) {
  constexpr size_t kSlot = 25;
  char slot[kSlot];
  for (off_t pos = 0;; pos += off_t(kSlot)) {
    if (::pread(registry_fd, slot, kSlot, pos) != ssize_t(kSlot)) return;
    if (slot[0] == 'X') continue;
    const long pid = std::strtol(std::string(slot, kSlot - 1).c_str(), nullptr, 10);
    if (pid <= 0) continue;
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = pos;
    lock.l_len = 1;
    bool locked = ::fcntl(registry_fd, F_GETLK, &lock) != 0 || lock.l_type != F_UNLCK;
    // Unlocked: its owner died, or closed between the read and the look (it empties the slot
    // first), which a second read tells (helper-111).
    if (!locked) {
      char again[kSlot];
      if (::pread(registry_fd, again, kSlot, pos) != ssize_t(kSlot) || std::memcmp(again, slot, kSlot) != 0) continue;
    }
    if (fn(pid_t(pid), locked)) return;
  }
}

// Set in the failure check's child (Store::Db::CleanUpAfterDeadProcesses).
bool in_failure_check = false;
// The dead thread the check asked about last, and since when it has asked about that one alone.
pid_t asked_pid = 0;
db_threadid_t asked_tid = 0;
std::chrono::steady_clock::time_point asked_since{};

// In the failure check's child: libdb asks about a dead owner again and again while it waits
// for a mutex that owner holds, and never gets it. The check itself asks about each thread,
// locker and mutex in turn (live and dead), in milliseconds: a second of questions about one dead
// thread and nothing else is such a wait. (Timed from the first "dead" answer instead, a check
// slowed down by a busy machine was cut short, and the open recovered the environment under
// every process attached.)
void NoteAsked(pid_t pid, db_threadid_t tid, bool alive) {
  const auto now = std::chrono::steady_clock::now();
  if (alive || pid != asked_pid || tid != asked_tid || asked_since == std::chrono::steady_clock::time_point{}) {
    asked_pid = alive ? 0 : pid;
    asked_tid = alive ? 0 : tid;
    asked_since = alive ? std::chrono::steady_clock::time_point{} : now;
  } else if (now - asked_since > std::chrono::seconds(1)) {
    ::_exit(3);
  }
}

int IsAlive(DB_ENV* env, pid_t pid, db_threadid_t tid, u_int32_t flags) {
  bool alive;
  if (pid != ThisProcess()) {
    auto* db = static_cast<Store::Db*>(env->app_private);
    alive = db == nullptr || HoldsItsRegistrySlot(db->RegistryFd(), pid);
  } else {
    alive = (flags & DB_MUTEX_PROCESS_ONLY) || ::syscall(SYS_tgkill, pid, pid_t(tid), 0) == 0 || errno != ESRCH;
  }
  if (in_failure_check) NoteAsked(pid, tid, alive);
  return alive ? 1 : 0;
}

}  // namespace

bool ADeadProcessIsRegistered(int registry_fd) {
  if (registry_fd < 0) return true;  // no registry to ask: the caller's other evidence decides
  const pid_t self = ::getpid();
  bool dead = false;
  ForEachRegistered(registry_fd, [&](pid_t pid, bool locked) { return dead = pid != self && !locked; });
  return dead;
}

std::string DeadRegisteredPids(int registry_fd) {
  std::string dead;
  if (registry_fd < 0) return dead;
  const pid_t self = ::getpid();
  ForEachRegistered(registry_fd, [&](pid_t pid, bool locked) {
    if (pid != self && !locked) dead += (dead.empty() ? "" : ", ") + std::to_string(pid);
    return false;
  });
  return dead;
}

UniqueFd HoldOffRegistryScans(const std::string& registry_path, std::chrono::steady_clock::time_point give_up) {
  if (registry_path.empty()) return UniqueFd();
  UniqueFd fd(::open(registry_path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return fd;  // no right to write it: closed as before
  struct flock scan {};
  scan.l_type = F_WRLCK;
  scan.l_whence = SEEK_SET;
  scan.l_start = 1;  // libdb's REGISTRY_EXCL_LOCK
  scan.l_len = 1;
  // An opener holds it for its scan (milliseconds) or its recovery; one stopped mid-scan holds it
  // for ever, so the wait is bounded, after which the close goes ahead as before. A wait of over
  // a second is said once (helper-111: a silent 10 s in every close).
  const auto said_after = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  bool said = false;
  while (::fcntl(fd.get(), F_SETLK, &scan) != 0) {
    if (errno != EACCES && errno != EAGAIN && errno != EINTR) break;
    const auto now = std::chrono::steady_clock::now();
    if (now >= give_up) {
      if (said) std::fprintf(stderr, "storemove: warning: %s: closing without waiting any longer\n", registry_path.c_str());
      break;
    }
    if (!said && now >= said_after) {
      said = true;
      std::fprintf(stderr,
                   "storemove: warning: %s: waiting to close the database environment until another process's open "
                   "has read it (a recovery, or a process stopped in its open)\n",
                   registry_path.c_str());
    }
    ::usleep(2000);
  }
  return fd;
}

bool HoldsItsRegistrySlot(int registry_fd, pid_t pid) {
  if (registry_fd < 0) return true;
  bool holds = false;
  ForEachRegistered(registry_fd, [&](pid_t slot_pid, bool locked) { return holds = slot_pid == pid && locked; });
  return holds;
}

bool HoldsARemovedRegion(const std::string& env_dir) {
  constexpr std::string_view kDeleted = " (deleted)";
  struct stat env;
  if (::stat(env_dir.c_str(), &env) != 0) return false;
  std::unique_ptr<DIR, int (*)(DIR*)> fds(::opendir("/proc/self/fd"), ::closedir);
  if (!fds) return false;
  while (const dirent* e = ::readdir(fds.get())) {
    char target[PATH_MAX];
    const ssize_t n = ::readlinkat(::dirfd(fds.get()), e->d_name, target, sizeof target);
    if (n <= 0) continue;
    std::string_view link(target, size_t(n));
    if (!link.ends_with(kDeleted)) continue;
    link.remove_suffix(kDeleted.size());
    const size_t slash = link.rfind('/');
    if (slash == std::string_view::npos || !link.substr(slash + 1).starts_with("__db.0")) continue;
    struct stat parent;
    if (::stat(std::string(link.substr(0, slash)).c_str(), &parent) == 0 && parent.st_dev == env.st_dev &&
        parent.st_ino == env.st_ino)
      return true;
  }
  return false;
}

bool SleepsInAFutex(const std::string& task) {
  const std::string stat = ReadProcFile(task + "/stat");
  const std::string syscall = ReadProcFile(task + "/syscall");
  if (stat.empty() || syscall.empty()) return ::access("/proc/self/task", F_OK) != 0;
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'S') return false;
  return std::strtol(syscall.c_str(), nullptr, 10) == SYS_futex;
}

pid_t ThisThread() {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, [] { ++fork_generation; });
    return true;
  }();
  (void)registered;
  thread_local uint64_t generation = UINT64_MAX;
  thread_local pid_t tid = 0;
  if (generation != fork_generation.load(std::memory_order_relaxed)) {
    tid = pid_t(::syscall(SYS_gettid));
    generation = fork_generation.load(std::memory_order_relaxed);
  }
  return tid;
}

void TrackThreadsForFailureCheck(DB_ENV* env) {
  // A soft bound: beyond it libdb reuses the slots of this process's ended threads.
  env->set_thread_count(env, 1000);
  env->set_thread_id(env, &ThreadId);
  env->set_isalive(env, &IsAlive);
}

namespace {

// Waits for `child` to end: false when it is still running after `limit`, or has slept in a
// futex for a second (every look, 50 ms apart). A mutex of a live process is held for
// microseconds; one held that long is a dead process's, which libdb never gives back. (Where
// libdb spins on such a mutex asking is_alive instead, the child gives up itself: IsAlive.)
bool EndsWithin(pid_t child, std::chrono::milliseconds limit) {
  constexpr int kLooksAsleep = 20;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  UniqueFd pidfd(int(::syscall(SYS_pidfd_open, child, 0)));
  for (int asleep = 0;;) {
    siginfo_t info{};
    if (::waitid(P_PID, id_t(child), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == child) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    asleep = SleepsInAFutex("/proc/" + std::to_string(child)) ? asleep + 1 : 0;
    if (asleep >= kLooksAsleep) return false;
    if (pidfd.valid()) {
      struct pollfd ended {pidfd.get(), POLLIN, 0};
      ::poll(&ended, 1, 50);  // EINTR: look again
    } else {
      ::usleep(50000);  // kernels before 5.3: no pidfd to wait on
    }
  }
}

}  // namespace

bool Store::Db::CleanUpAfterDeadProcesses(const std::string& dir, u_int32_t flags, const std::string& dead) {
  if (RegistryFd() < 0 || dead.empty()) return true;
  // The check attaches to the regions before it looks at anything, and so waits for ever on a
  // region mutex the dead process held (libdb 5.3 as Debian builds it has no failchk broadcast):
  // then every later open would wait behind it for the registry's lock. A child of its own can be
  // ended; this process then opens as before, and that open recovers the environment.
  // The child's close waits for scans only within the time its parent gives it (helper-111: a
  // longer wait got it killed registered, one more dead process, and the parent recovered).
  const auto close_by = std::chrono::steady_clock::now() + std::chrono::seconds(kFailureCheckSeconds) -
                        std::chrono::milliseconds(500);
  const pid_t child = ::fork();
  if (child < 0) return false;
  if (child == 0) {
    // Never outlives the bound, even orphaned: the alarm ends it whatever the forking thread's
    // signal mask and handlers were.
    ::signal(SIGALRM, SIG_DFL);
    // A fault here is the child's own, which its parent sees as such: not a handler the parent
    // installed (deliver's said "crashed ... delivery deferred" for deliveries that went on and
    // succeeded: helper-136).
    for (const int fault : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) ::signal(fault, SIG_DFL);
    sigset_t alarm_only;
    ::sigemptyset(&alarm_only);
    ::sigaddset(&alarm_only, SIGALRM);
    ::pthread_sigmask(SIG_UNBLOCK, &alarm_only, nullptr);
    ::alarm(unsigned(kFailureCheckSeconds + 2));
    in_failure_check = true;
    int rc = 1;
    try {
      CreateEnvironment(/*track_threads=*/true);
      BeginRegistryNotes(dead);
      rc = env_->open(env_, dir.c_str(), flags | DB_FAILCHK | DB_CREATE, 0600) == 0 ? 0 : 1;
      SayIfThisOpenRecovered(dir);  // failchk failed inside libdb's registry, which then recovered
      UniqueFd scans_held_off = HoldOffRegistryScans(dir + "/__db.register", close_by);  // as Close does
      env_->close(env_, 0);  // leaves the registry: a child that died attached would be one more
    } catch (...) {
    }
    ::_exit(rc);
  }
  const bool ended = EndsWithin(child, std::chrono::seconds(kFailureCheckSeconds));
  if (!ended) ::kill(child, SIGKILL);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!ended || (WIFEXITED(status) && WEXITSTATUS(status) == 3)) {
    std::fprintf(stderr,
                 "storemove: warning: mboxlist %s: the check after a process that died attached did not finish "
                 "(the dead process held one of the environment's mutexes); recovering the environment instead\n",
                 dir.c_str());
  }
  return ended && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace storemove::store
