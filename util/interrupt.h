// A stop asked by SIGINT, SIGTERM or SIGHUP, for commands whose work can end at a safe point: the
// handler only records the signal; waits for locks and long loops ask and throw kInterrupted, so
// the stack unwinds and the Berkeley DB environment is closed. A process that died with it open
// would make the next opener run recovery, which ends every other process on the store (75).
#pragma once

#include <string>

namespace storemove {

// Installs the handler for SIGINT, SIGTERM and SIGHUP (without SA_RESTART: a blocked flock(2)
// returns EINTR and its loop asks). A second signal ends the process at once, as the default would.
void StopAtSafePointOnSignal();

// Installs `handler` for the signals that ask a command to stop: SIGINT (Ctrl-C), SIGTERM, and
// SIGHUP (its terminal closed, its ssh session lost), which killed it without a word
// (helper-123: a migrate so killed during its hold left every user of its group on hold).
// SIGHUP stays ignored when the caller ignores it (nohup).
void OnStopSignals(void (*handler)(int), int flags = 0);

// Whether SIGHUP is one of those here (not ignored by the caller).
bool SighupStops();

// The signal asked for, or 0. Async-signal-safe state; cheap enough for every message of a loop.
int InterruptSignal();

// Throws kInterrupted ("interrupted by SIGTERM while <doing>") once a signal asked for a stop.
void ThrowIfInterrupted(const std::string& doing);

}  // namespace storemove
