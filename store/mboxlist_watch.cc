// Nothing waits for ever inside libdb: the lock detector and the guard of Store::Db
// (store/mboxlist.h, docs/store-format.md §3 "A process killed while it held one of the
// environment's mutexes").
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>

#include "util/error.h"
#include "util/fs.h"

#include "store/mboxlist.h"
#include "store/mboxlist_liveness.h"

namespace storemove::store {
namespace {

constexpr int kLockTimeoutSeconds = Store::Db::kLockTimeoutSeconds;
// How many of the guard's ticks (about a second each) a call may wait on a mutex of a dead owner.
std::atomic<int> stall_ticks{6 * kLockTimeoutSeconds};
std::mutex lock_detect_seam_mutex;
std::function<int(DB_ENV*)> lock_detect_call;  // tests only; empty: libdb's

int DetectExpired(DB_ENV* env) {
  std::function<int(DB_ENV*)> call;
  {
    std::lock_guard lock(lock_detect_seam_mutex);
    call = lock_detect_call;
  }
  if (call) return call(env);
  int rejected = 0;
  return env->lock_detect(env, 0, DB_LOCK_EXPIRE, &rejected);
}

// Whether another process has recovered the environment since this one opened it: recovery
// removes the region files and creates new ones. A missing file decides nothing (recovery may be
// under way, or the store is being taken apart).
bool RegionReplaced(int dir_fd, dev_t dev, ino_t ino) {
  if (dir_fd < 0) return false;
  struct stat now;
  if (::fstatat(dir_fd, "__db.001", &now, AT_SYMLINK_NOFOLLOW) != 0) return false;
  return now.st_dev != dev || now.st_ino != ino;
}

std::atomic<bool> success_once_committed{false};
std::atomic<bool> committed{false};
static_assert(std::atomic<bool>::is_always_lock_free, "read in a signal handler");

// `why` the call cannot return; `rerun` what a rerun does about it. 75: a delivery is retried by
// the MTA, a migrate run again finds its journal; 0 for a delivery already committed.
[[noreturn]] void SayAndEnd(const std::string& why, const std::string& rerun) {
  const bool done = success_once_committed.load() && committed.load();
  const std::string text = done ? "storemove: warning: " + why + "; the message was committed before it (exit 0)\n"
                                : "storemove: " + why + "; stopping (exit 75, run again" + rerun + ")\n";
  // write(2), not stdio: its lock may be held by a thread that will never let go of it.
  for (size_t written = 0; written < text.size();) {
    ssize_t n = ::write(STDERR_FILENO, text.data() + written, text.size() - written);
    if (n <= 0) break;
    written += size_t(n);
  }
  ::_exit(done ? 0 : 75);
}

}  // namespace

void Store::Db::EndWithSuccessOnceCommitted() { success_once_committed = true; }

void Store::Db::NoteCommitted() { committed = true; }

bool Store::Db::Committed() { return committed.load(); }

void Store::Db::SetStallTicksForTesting(int ticks) { stall_ticks = ticks; }

void Store::Db::SetLockDetectForTesting(std::function<int(DB_ENV*)> call) {
  std::lock_guard lock(lock_detect_seam_mutex);
  lock_detect_call = std::move(call);
}

Store::Db::InFlight::InFlight(Db& db, const char* what) : watch_(*db.watch_) {
  const pid_t tid = ThisThread();
  std::lock_guard lock(watch_.calls_mutex);
  id_ = watch_.next_call++;
  watch_.calls.push_back({id_, tid, watch_.ticks.load(), what});
}

Store::Db::InFlight::~InFlight() {
  std::lock_guard lock(watch_.calls_mutex);
  auto it = std::find_if(watch_.calls.begin(), watch_.calls.end(), [&](const Watch::Call& c) { return c.id == id_; });
  if (it != watch_.calls.end()) {
    *it = watch_.calls.back();
    watch_.calls.pop_back();
  }
}

void Store::Db::StartGuard() {
  watch_->dir = dir_;
  // Started with every signal blocked, so that a SIGTERM or SIGINT sent to the process goes to a
  // thread that takes it (migrate's signalfd, or the main thread's default action), not to this
  // one, nor to the detector it starts (which inherits its mask).
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &old);
  try {
    guard_ = std::thread([watch = watch_] { GuardCalls(watch); });
  } catch (...) {
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throw;
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void Store::Db::WatchOpenedEnvironment(const std::string& env_dir) {
  RegistryFd();  // Open named it; made by the open when it did not exist before
  bool eager = false;
  {
    std::lock_guard seam(lock_detect_seam_mutex);
    eager = bool(lock_detect_call);
  }
  {
    std::lock_guard lock(watch_->mutex);
    watch_->env = env_;
    watch_->dir_fd = ::open(env_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct stat region;
    if (watch_->dir_fd >= 0 && ::fstatat(watch_->dir_fd, "__db.001", &region, AT_SYMLINK_NOFOLLOW) == 0) {
      watch_->region_dev = region.st_dev;
      watch_->region_ino = region.st_ino;
    } else if (watch_->dir_fd >= 0) {
      ::close(watch_->dir_fd);
      watch_->dir_fd = -1;
    }
    watch_->detector_eager = eager;
    watch_->opened = true;
  }
  if (eager) StartDetector(watch_);
}

void Store::Db::StartDetector(const std::shared_ptr<Watch>& watch) {
  std::lock_guard lock(watch->mutex);
  if (watch->detector.joinable() || !watch->detector_allowed || !watch->opened) return;
  try {
    watch->detector = std::thread([watch] { DetectExpiredLocks(*watch); });
  } catch (const std::system_error&) {
    // No thread to be had now: the guard asks again at its next tick.
  }
}

void Store::Db::DetectExpiredLocks(Watch& watch) {
  std::unique_lock lock(watch.mutex);
  for (;;) {
    if (watch.detector_stopping) break;
    if (watch.wedged) {
      watch.cv.wait_for(lock, std::chrono::seconds(1), [&] { return watch.detector_stopping; });
      continue;
    }
    lock.unlock();  // Close must not wait for the mutex behind a detector asleep in libdb
    if (DetectExpired(watch.env) == DB_RUNRECOVERY) watch.panicked = true;
    lock.lock();
    if (watch.cv.wait_for(lock, std::chrono::seconds(1), [&] { return watch.detector_stopping; })) break;
  }
  watch.detector_done = true;
  watch.cv.notify_all();
}

void Store::Db::GuardCalls(const std::shared_ptr<Watch>& shared) {
  Watch& watch = *shared;
  const auto StillInFlight = [](Watch& w, uint64_t id) {
    std::lock_guard calls(w.calls_mutex);
    return std::any_of(w.calls.begin(), w.calls.end(), [&](const Watch::Call& c) { return c.id == id; });
  };
  // Counted in ticks of about a second, not in wall time: a process stopped (SIGSTOP, a paused
  // machine) is not stuck when it resumes.
  std::optional<uint64_t> warned;  // the call a warning was given for
  std::unique_lock lock(watch.mutex);
  while (!watch.cv.wait_for(lock, std::chrono::seconds(1), [&] { return watch.guard_stopping; })) {
    // Fixed once the environment is open (WatchOpenedEnvironment); until then no region to watch.
    const bool opened = watch.opened;
    const int dir_fd = opened ? watch.dir_fd : -1;
    const dev_t region_dev = watch.region_dev;
    const ino_t region_ino = watch.region_ino;
    lock.unlock();  // the checks below read files: Close must not wait behind them
    const uint64_t tick = ++watch.ticks;
    std::optional<Watch::Call> oldest;
    {
      std::lock_guard calls(watch.calls_mutex);
      for (const Watch::Call& c : watch.calls)
        if (!oldest || c.since < oldest->since) oldest = c;
    }
    if (oldest) {
      const uint64_t waited = tick - oldest->since;
      // A call that waits may wait for a lock: from now on the detector enforces its timeout.
      if (waited >= 1) StartDetector(shared);
      if (!watch.panicked && waited >= 2 && RegionReplaced(dir_fd, region_dev, region_ino)) watch.panicked = true;
      // Another process recovered the environment after one died: this one's regions are dead,
      // and every call fails at once with DB_RUNRECOVERY, except one asleep on the dead
      // process's lock or mutex, which is never woken. It can only end, as kill -9 would.
      if (watch.panicked && waited >= uint64_t(kLockTimeoutSeconds + 2))
        SayAndEnd("mboxlist " + watch.dir +
                      ": waiting for a lock of a process that died, in a database environment another process has "
                      "recovered since",
                  "");
      // The same during the open: it attached to regions another process's recovery removed
      // since, and waits on a mutex of one of them, which nobody will free (helper-131: two
      // deliveries in three runs of kill -9 waited until the MTA's time limit bounced the mail).
      // The region mutex of a live process that is merely slow is held for a moment, not seconds.
      if (!opened && waited >= uint64_t(kLockTimeoutSeconds + 2) && HoldsARemovedRegion(watch.dir))
        SayAndEnd("mboxlist " + watch.dir + ": " + oldest->what +
                      " the database environment waits on a region another process has recovered (removed) since",
                  "");
      // Nobody has recovered it. A call asleep on a mutex for a minute, while the registry names
      // a process that died inside the environment, waits on a mutex that process left locked,
      // which libdb 5.3 never frees; the next process that opens the store recovers it. A call
      // waiting on the disk, or on a live process (one stopped, or itself waiting on the disk),
      // is not ended: the guard says once that it waits.
      const int limit = stall_ticks.load();
      if (waited >= uint64_t(limit)) {
        if (SleepsInAFutex("/proc/self/task/" + std::to_string(oldest->tid)) && ADeadProcessIsRegistered(watch.registry_fd) && StillInFlight(watch, oldest->id))
          SayAndEnd("mboxlist " + watch.dir + ": " + oldest->what + " the database environment has waited " +
                        std::to_string(waited) + " s for a mutex of a process that died inside it",
                    ": the next open recovers it");
        if (warned != oldest->id) {
          warned = oldest->id;
          const std::string line = "storemove: warning: mboxlist " + watch.dir + ": " + oldest->what +
                                   " the database environment has waited " + std::to_string(waited) +
                                    " s (on the disk, or on a process that is stopped); still waiting\n";
          (void)!::write(STDERR_FILENO, line.data(), line.size());
        }
      }
    }
    lock.lock();
  }
}

void Store::Db::StopDetector() {
  std::thread detector;
  {
    std::lock_guard lock(watch_->mutex);
    watch_->detector_allowed = false;
    watch_->detector_stopping = true;
    detector = std::move(watch_->detector);
  }
  watch_->cv.notify_all();
  if (!detector.joinable()) return;
  // A detector asleep on a mutex a dead process holds never returns: after the guard's limit it
  // is left behind with the environment, as a stuck checkpoint leaves it (the next open
  // recovers it).
  const int limit = stall_ticks.load();
  std::unique_lock lock(watch_->mutex);
  const bool ended = watch_->cv.wait_for(lock, std::chrono::seconds(limit), [&] { return watch_->detector_done; });
  lock.unlock();
  if (ended) {
    detector.join();
    return;
  }
  detector.detach();
  stuck_after_ms_ = int64_t{limit} * 1000;
  wedged_ = true;
  watch_->wedged = true;
  std::fprintf(stderr,
               "storemove: warning: mboxlist %s: the lock detector is still waiting after %d s (a process died inside "
               "the database environment); left to the recovery of the next process that opens it\n",
               dir_.c_str(), limit);
}

void Store::Db::StopGuard() {
  if (guard_.joinable()) {
    {
      std::lock_guard lock(watch_->mutex);
      watch_->guard_stopping = true;
    }
    watch_->cv.notify_all();
    guard_.join();
  }
  // A wedged environment is left open, and so is its registry: closing a descriptor of it would
  // drop the registration lock libdb's own descriptor holds.
  if (wedged_) return;
  if (watch_->dir_fd >= 0) ::close(watch_->dir_fd);
  watch_->dir_fd = -1;
  std::lock_guard lock(watch_->registry_mutex);
  if (const int fd = watch_->registry_fd.exchange(-1); fd >= 0) ::close(fd);
}

int Store::Db::RegistryFd() {
  if (const int fd = watch_->registry_fd.load(); fd >= 0) return fd;
  std::lock_guard lock(watch_->registry_mutex);
  if (watch_->registry_fd.load() < 0 && !watch_->registry_path.empty())
    watch_->registry_fd = ::open(watch_->registry_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  return watch_->registry_fd.load();
}

}  // namespace storemove::store
