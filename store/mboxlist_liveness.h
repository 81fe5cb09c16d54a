// Which processes and threads attached to the mboxlist environment are alive, for libdb's
// failure check (DB_FAILCHK). Internal to store/.
#pragma once

#include <db.h>
#include <sys/types.h>

#include <chrono>
#include <string>

#include "util/fs.h"

namespace storemove::store {

// The kernel's id of the calling thread, asked once per thread (a fork's child asks again).
pid_t ThisThread();

// Whether __db.register (`registry_fd`, open for the environment's life) names a process that
// died without leaving the environment: libdb's own test (env_register.c), which a process
// opening the store makes before it recovers or checks. True when there is no registry to ask.
bool ADeadProcessIsRegistered(int registry_fd);

// Whether `pid` holds its slot in the registry: attached to the environment and alive. True when
// the registry cannot say.
bool HoldsItsRegistrySlot(int registry_fd, pid_t pid);
// libdb's registry scan (an open with DB_REGISTER) reads a slot, then tries the slot's lock: a
// process whose close empties its slot and drops the lock in between is taken for dead, and the
// scanner recovers the environment under every live process (helper-108: DB_RUNRECOVERY in a
// restore, nobody killed). A scanner holds the registry's byte 1 for its whole scan; so does a
// close that first takes it here (waiting until `give_up` for a scan or a recovery, said after a second),
// and libdb's own close of its descriptor then releases it with the slot. The descriptor
// returned must stay open until that close (closing it drops this process's slot lock too).
UniqueFd HoldOffRegistryScans(const std::string& registry_path, std::chrono::steady_clock::time_point give_up);
// The processes other than this one that __db.register names and that hold no slot lock (died
// attached), as "123, 456"; empty when none.
std::string DeadRegisteredPids(int registry_fd);

// Whether the task whose /proc directory is `task` ("/proc/self/task/TID", "/proc/PID") sleeps
// in a futex, where libdb waits for a mutex or a lock: not in the disk (state D) nor anywhere
// else. Without /proc nothing tells them apart: true.
bool SleepsInAFutex(const std::string& task);

// Whether this process holds open a region file (`__db.0NN`) of the environment in the directory
// `env_dir` that has been removed since: another process recovered the environment while this
// one was attaching to it, and the open waits on a mutex of the old region for ever once that
// mutex's holder is dead (helper-131: a delivery hung until the MTA's time limit bounced it).
bool HoldsARemovedRegion(const std::string& env_dir);

// Configures `env`, whose app_private is its Store::Db, before its open so that a process that died attached is cleaned up by the
// next opener's failchk (its transactions aborted, its locks released) rather than by recovery,
// which would end every other process attached (docs/store-format.md §3). Recovery stays the
// answer when the dead process was inside libdb.
void TrackThreadsForFailureCheck(DB_ENV* env);

}  // namespace storemove::store
