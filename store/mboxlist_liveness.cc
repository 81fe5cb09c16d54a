// libdb's failchk asks is_alive(pid, tid) about every thread it finds in the environment. Being
// wrong is costly either way: a live process taken for dead gets its transactions aborted under
// it; a dead one taken for alive keeps its locks for ever, once its registry slot was cleared.
// So a process other than this one is alive exactly when libdb's own registry says so (its
// `__db.register` slot is locked, env_register.c): the test that made libdb look in the first
// place, and one that holds across PID namespaces. The registry is read through the descriptor
// Store::Db keeps open: closing any descriptor of that file would drop this process's own
// registration lock. Threads are told apart only in this process.
#include "store/mboxlist_liveness.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "store/mboxlist.h"

namespace storemove::store {
namespace {

std::atomic<uint64_t> fork_generation{0};

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
  *pid = ThisProcess();
  // The kernel's id, not pthread_self(): it can be asked whether it still runs (tgkill).
  if (tid != nullptr) *tid = db_threadid_t(ThisThread());
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
    const bool locked = ::fcntl(registry_fd, F_GETLK, &lock) != 0 || lock.l_type != F_UNLCK;
    if (fn(pid_t(pid), locked)) return;
  }
}

int IsAlive(DB_ENV* env, pid_t pid, db_threadid_t tid, u_int32_t flags) {
  if (pid != ThisProcess()) {
    auto* db = static_cast<Store::Db*>(env->app_private);
    return db == nullptr || HoldsItsRegistrySlot(db->RegistryFd(), pid) ? 1 : 0;
  }
  if (flags & DB_MUTEX_PROCESS_ONLY) return 1;
  return ::syscall(SYS_tgkill, pid, pid_t(tid), 0) == 0 || errno != ESRCH ? 1 : 0;
}

// failchk reports what it cleaned up ("Aborting txn", "Freeing read locks") as messages, which
// libdb writes to stdout unless told otherwise: a backup's stream goes there.
void OnMessage(const DB_ENV*, const char*) {}

}  // namespace

bool ADeadProcessIsRegistered(int registry_fd) {
  if (registry_fd < 0) return true;  // no registry to ask: the caller's other evidence decides
  const pid_t self = ::getpid();
  bool dead = false;
  ForEachRegistered(registry_fd, [&](pid_t pid, bool locked) { return dead = pid != self && !locked; });
  return dead;
}

bool HoldsItsRegistrySlot(int registry_fd, pid_t pid) {
  if (registry_fd < 0) return true;
  bool holds = false;
  ForEachRegistered(registry_fd, [&](pid_t slot_pid, bool locked) { return holds = slot_pid == pid && locked; });
  return holds;
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
  env->set_msgcall(env, &OnMessage);
}

}  // namespace storemove::store
