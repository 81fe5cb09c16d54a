// A stop asked by SIGINT or SIGTERM, for commands whose work can end at a safe point: the
// handler only records the signal; waits for locks and long loops ask and throw kInterrupted, so
// the stack unwinds and the Berkeley DB environment is closed. A process that died with it open
// would make the next opener run recovery, which ends every other process on the store (75).
#pragma once

#include <string>

namespace storemove {

// Installs the handler for SIGINT and SIGTERM (without SA_RESTART: a blocked flock(2) returns
// EINTR and its loop asks). A second signal ends the process at once, as the default would.
void StopAtSafePointOnSignal();

// The signal asked for, or 0. Async-signal-safe state; cheap enough for every message of a loop.
int InterruptSignal();

// Throws kInterrupted ("interrupted by SIGTERM while <doing>") once a signal asked for a stop.
void ThrowIfInterrupted(const std::string& doing);

}  // namespace storemove
