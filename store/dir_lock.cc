#include "store/dir_lock.h"

#include <sys/file.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include "util/error.h"
#include "util/interrupt.h"

namespace storemove::store {
namespace {
thread_local const FolderLockWait* tls_scope = nullptr;
}  // namespace

FolderLockWait::FolderLockWait(int timeout_seconds, std::function<void(const std::string&)> on_wait,
                               std::function<bool()> cancelled)
    : timeout_seconds(timeout_seconds), on_wait(std::move(on_wait)), cancelled(std::move(cancelled)), outer_(tls_scope) {
  tls_scope = this;
}

FolderLockWait::~FolderLockWait() { tls_scope = outer_; }

void LockFolderDirectory(int fd, int how, const std::string& shown,
                         const std::function<void(const std::string&)>& store_on_wait, int timeout_seconds) {
  const FolderLockWait* scope = tls_scope;
  if (scope && scope->timeout_seconds > 0 && (timeout_seconds <= 0 || scope->timeout_seconds < timeout_seconds))
    timeout_seconds = scope->timeout_seconds;
  const std::function<void(const std::string&)>& on_wait = scope && scope->on_wait ? scope->on_wait : store_on_wait;
  const bool cancellable = scope && scope->cancelled;
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  const Clock::time_point announce_at = start + std::chrono::seconds(1);
  auto pause = std::chrono::milliseconds(1);
  bool told = false;
  while (::flock(fd, how | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) ThrowErrno("lock " + shown);
    ThrowIfInterrupted("waiting for the lock of " + shown);
    if (cancellable && scope->cancelled())
      Throw(Errc::kTempFail, "waiting for the lock of folder " + shown + ": stopped (the server is stopping)");
    if (Clock::now() >= announce_at && !told) {
      told = true;
      if (on_wait)
        on_wait("waiting for the lock of folder " + shown +
                ": another process holds it (a rename or partition move of its user copying it, or a stopped "
                "process)");
    }
    if (timeout_seconds > 0) {
      // flock(2) has no timeout: a bounded wait asks again every 50 ms.
      if (Clock::now() - start >= std::chrono::seconds(timeout_seconds))
        Throw(Errc::kTempFail, "the lock of folder " + shown + " has been held by another process for over " +
                                   std::to_string(timeout_seconds) +
                                   " s (a rename or partition move of its user copying it, or a stopped process); "
                                   "try again later");
    } else if (told && !cancellable) {
      while (::flock(fd, how) != 0) {
        if (errno != EINTR) ThrowErrno("lock " + shown);
        ThrowIfInterrupted("waiting for the lock of " + shown);
      }
      break;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  // A wait that was said is said to be over: a log shows how long the holder held it.
  if (told && on_wait)
    on_wait("waited " + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start).count()) +
            " s for the lock of folder " + shown + "; going on");
}

}  // namespace storemove::store
