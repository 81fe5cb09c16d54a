// flock(2) of a folder directory, the lock every reader and writer of its store.idx takes. An
// index change holds it for moments; a wait that lasts (a rename or partition move copying the
// folder, or a process stopped with it) is said once through `on_wait`, then waited for, and a
// stop asked by a signal (util/interrupt.h) ends the wait.
#pragma once

#include <functional>
#include <string>

namespace storemove::store {

// how: LOCK_SH or LOCK_EX. Throws kIo on an error other than the wait, kInterrupted on a stop,
// and kTempFail once the lock has been waited for `timeout_seconds` (0: no bound), naming the
// folder: a deliver the MTA retries later, a backup --to whose server session would have
// ended anyway (StoreOptions::folder_lock_wait_seconds).
void LockFolderDirectory(int fd, int how, const std::string& shown,
                         const std::function<void(const std::string&)>& on_wait, int timeout_seconds = 0);

// While one lives, this thread's folder lock waits are bound to `timeout_seconds` too (the
// shorter bound wins; 0: none of its own), said through `on_wait` in place of the store's, and
// ended with kTempFail once `cancelled` returns true (it may throw its own error instead).
// serve's sessions share one Store, each on its own thread: a session's wait for a folder a
// stopped process held had no bound, no word in its log and outlived the server's stop
// (helper-170). Scopes nest; the innermost rules.
class FolderLockWait {
 public:
  FolderLockWait(int timeout_seconds, std::function<void(const std::string&)> on_wait,
                 std::function<bool()> cancelled);
  ~FolderLockWait();
  FolderLockWait(const FolderLockWait&) = delete;
  FolderLockWait& operator=(const FolderLockWait&) = delete;

  const int timeout_seconds;
  const std::function<void(const std::string&)> on_wait;
  const std::function<bool()> cancelled;

 private:
  const FolderLockWait* outer_;
};

}  // namespace storemove::store
