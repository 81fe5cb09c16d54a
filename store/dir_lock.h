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

}  // namespace storemove::store
