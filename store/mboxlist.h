// The mboxlist Berkeley DB environment (docs/store-format.md §mboxlist). Internal to store/.
#pragma once

#include <db.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "store/store.h"

namespace storemove::store {

// Record values (docs/store-format.md §3), encoded in store.cc; also used by admin.cc, which
// changes many records in one transaction.
struct UserValue {
  UserStatus status;
  std::string partition;
  int64_t created = 0;
  // Set by user renames (UserInfo::renames). Encoded only when set, so other records keep their
  // first layout.
  std::vector<UserRename> renames;
  bool renames_truncated = false;
};
struct FolderValue {
  uint32_t uidvalidity = 0;
  int64_t created = 0;
  std::string partition;
  std::string acl;
  // The stream a restore made the folder from (FolderInfo::origin); encoded only when set.
  std::string origin;
  // FolderInfo::coverage; encoded only when set (after the origin, then written even if empty).
  FolderCoverage coverage;
};
std::string EncodeUser(const UserValue& u);
UserValue DecodeUser(std::string_view v, std::string_view user);  // throws kCorrupt
// Raises the store's user rename generation (folder.db `#user-renames`) in `txn`; returns it.
uint64_t RaiseUserRenameGeneration(Store::Db& db, DB_TXN* txn);
std::string EncodeQuota(uint64_t limit, uint64_t used);
std::pair<uint64_t, uint64_t> DecodeQuota(std::string_view v, std::string_view user);  // {limit, used}
std::string EncodeFolder(const FolderValue& f);
FolderValue DecodeFolder(std::string_view v, std::string_view mailbox);
// libdb's message lines, as the environment's error callback gets them, kept for the one line we
// report (`last`: the previous one of this thread). A multi-line message keeps its first line:
// BDB2506 "file F has LSN ..., past end of log at ..." and not BDB2509, its last ("the log files
// from a database environment").
void KeepDbMessage(std::string* last, std::string_view message);
// Whether a libdb failure `ret`, with `message` (KeepDbMessage's), says that the environment was
// recovered under this process: a database page's LSN past the end of the log that the recovery
// truncated (EINVAL, BDB2506), beside DB_RUNRECOVERY. Temporary, as DB_RUNRECOVERY is: a new
// process succeeds (helper-155: an import exited 70 with "put: Invalid argument (BDB2509 the log
// files from a database environment)" while other processes hit by the same recovery exited 75).
bool RecoveredUnderThisProcess(int ret, std::string_view message);
// Whether `message` only repeats the error `ret` with a buffer's address and length ("BDB0137
// write: 0x7ff5bf800ee0, 1628: No space left on device"): left out of the one line, which says
// the error already (helper-158 F).
bool DbMessageOnlyRepeats(int ret, std::string_view message);

// "inbox/x" -> "INBOX/x": the first component is case-insensitive when it spells INBOX.
std::string NormalizeFolder(std::string_view folder);
// "joe lrs anyone lr" -> {{"joe", "lrs"}, {"anyone", "lr"}}; throws kInvalidArgument.
std::vector<std::pair<std::string, std::string>> ParseAcl(std::string_view acl);

// Thin RAII over a transactional libdb 5.3 environment with the store's databases.
class Store::Db {
 public:
  // Opens (creating when `create`) the environment in `dir` with DB_REGISTER|DB_RECOVER, so
  // recovery runs exactly when a previous process died holding it (never under a live one).
  // `frees_space` (StoreOptions::frees_space): on a filesystem too full for the environment, the
  // store's reserve file is removed to make room (docs/store-format.md §3, "The reserve").
  Db(const std::string& dir, bool create, bool frees_space = false);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  DB* folder() { return folder_; }    // "user/<uid>/<folder>" -> FolderValue
  DB* quota() { return quota_; }      // "<uid>" -> QuotaValue
  DB* users() { return users_; }      // "<uid>" -> UserValue (stands in for LDAP mailUserStatus/mailHost)
  DB* subscr() { return subscr_; }    // "<uid>\0<mailbox>" -> ""
  DB* peruser() { return peruser_; }  // "<mailbox>\0<reader>" -> opaque per-user data
  DB* lright() { return lright_; }    // "<identifier>\0<mailbox>" -> rights string
  DB* verified() { return verified_; }  // "<uid>" -> verification record (admin.cc)

  // Runs fn(txn) in a transaction, retrying on deadlock; commits (synchronously when `sync`).
  void Txn(const std::function<void(DB_TXN*)>& fn, bool sync = false);
  bool Get(DB* db, DB_TXN* txn, std::string_view key, std::string* value, bool for_update = false);
  void Put(DB* db, DB_TXN* txn, std::string_view key, std::string_view value);
  // Returns false when the key exists already.
  bool PutNew(DB* db, DB_TXN* txn, std::string_view key, std::string_view value);
  void Del(DB* db, DB_TXN* txn, std::string_view key);
  // Calls fn(key, value) for every key starting with `prefix`, in key order, until fn returns
  // false. Reads in short batches without holding locks across calls, so fn may write.
  void Scan(DB* db, std::string_view prefix, const std::function<bool(std::string_view, std::string_view)>& fn);
  // Every (key, value) starting with `prefix`, in key order, read inside `txn`: its read locks
  // are held to the transaction's end, so a concurrent transaction is seen wholly or not at all.
  std::vector<std::pair<std::string, std::string>> ReadRange(DB* db, DB_TXN* txn, std::string_view prefix);
  // The first key at or after `from` that starts with `prefix`, if any (its own short read).
  std::optional<std::string> FirstKeyFrom(DB* db, std::string_view from, std::string_view prefix);
  // The same, telling `on_batch` about every batch read, before fn sees its keys: what Store's
  // ForEachUser needs to say where the scan stood when a user was renamed (ScanBatch).
  struct BatchHooks {
    std::function<void()> before_read;  // runs before the batch's cursor opens
    std::function<void(std::string_view after, bool from_start, std::string_view last, bool end)> after_read;
  };
  void Scan(DB* db, std::string_view prefix, const std::function<bool(std::string_view, std::string_view)>& fn,
            const BatchHooks& hooks);
  // Throws kTempFail when the checkpoint is still waiting after the limit (a process died
  // inside the environment; see BoundedCheckpoint).
  void Checkpoint();
  bool wedged() const { return wedged_; }  // any thread may ask
  // Another process recovered the environment since this one opened it: a call failed with
  // DB_RUNRECOVERY, or the guard saw its regions replaced. Every call fails from now on.
  bool recovered_elsewhere() const { return watch_->panicked; }
  // Whether folder.db (open) holds a record: a missing database beside it is damage (Open).
  bool FolderListsAMailbox();
  // Lock requests of any process that had to wait, since the environment was created (tests).
  uint64_t LockWaits();

  // A lock not granted within this many seconds fails its request (DB_SET_LOCK_TIMEOUT).
  static constexpr int kLockTimeoutSeconds = 10;
  // How long the failure check after a process that died attached may take (CleanUpAfterDead...).
  static constexpr int kFailureCheckSeconds = 3;
  // Tests: replaces libdb's checkpoint call (empty: libdb's) and how long one is waited for.
  static void SetCheckpointForTesting(std::function<int(DB_ENV*, u_int32_t)> call, std::chrono::milliseconds limit);
  // deliver: once its message is committed (NoteCommitted), a guard that has to end the process
  // (a call stuck on a dead process's mutex, in the quota update or the close that follow) ends
  // it with 0, not 75: the message is stored and synced, and the MTA would deliver it again.
  // Quota usage left short is corrected by Store::RecomputeQuota. Process-wide, one way.
  static void EndWithSuccessOnceCommitted();
  // Folder::Commit, once its index append (the commit point) has returned.
  static void NoteCommitted();
  // Whether NoteCommitted has been called in this process. Async-signal-safe (deliver's handler
  // of a crash decides its exit status by it).
  static bool Committed();
  // Tests: how many of the guard's one-second ticks a call may wait on a mutex of a dead owner
  // before the process gives up (exit 75), and Close waits for the detector; 60 when not set.
  static void SetStallTicksForTesting(int ticks);
  // Tests: replaces the detector's libdb call (empty: libdb's lock_detect); when set, the
  // detector starts with the store instead of with the first call that waits.
  static void SetLockDetectForTesting(std::function<int(DB_ENV*)> call);
  // The environment's __db.register, for the liveness of other processes (mboxlist_liveness.cc):
  // -1 when there is none yet.
  int RegistryFd();

 private:
  // A process killed (kill -9) inside a checkpoint leaves the environment's checkpoint mutex
  // locked, and libdb 5.3 as Debian builds it waits for a dead owner forever (no failchk
  // broadcast). The next process to open the environment recovers it (DB_REGISTER), but one
  // attached before would hang in its own checkpoint. So a checkpoint runs on a thread and is
  // waited for at most a limit (30 s): false when it did not finish, and the environment is
  // then left as it is (every commit is in the log already; the next open recovers it).
  bool BoundedCheckpoint(u_int32_t flags, int* ret);
  // The limit of the wait that found the environment stuck, for the messages that say so.
  std::atomic<std::chrono::milliseconds::rep> stuck_after_ms_{0};  // set before wedged_
  [[noreturn]] void Fail(int ret, const std::string& what);
  // The cursor read under Scan, ReadRange and FirstKeyFrom: up to `limit` (key, value) pairs
  // from `from` on (`from` itself only if `inclusive`) while keys start with `prefix`, in `txn`
  // (nullptr: read-committed, no lock kept). True when the range ended before the limit.
  bool ReadKeys(DB* db, DB_TXN* txn, std::string_view from, std::string_view prefix, bool inclusive, size_t limit,
                std::vector<std::pair<std::string, std::string>>* out);
  void Open(bool create, bool frees_space);
  // db_env_create and the settings every process uses; failchk's callbacks when `track_threads`.
  void CreateEnvironment(bool track_threads);
  // When the registry names processes that died attached (`dead`, DeadRegisteredPids): libdb's
  // failure check (DB_FAILCHK) in
  // a child process, ended after kFailureCheckSeconds. True when it cleaned up, so that this
  // process's open needs no recovery (mboxlist_liveness.cc, docs/store-format.md §3).
  bool CleanUpAfterDeadProcesses(const std::string& dir, u_int32_t flags, const std::string& dead);
  // Nothing waits for ever inside libdb (store/mboxlist_watch.cc, docs/store-format.md §3).
  // libdb enforces a lock timeout only when its deadlock detector runs, which it does when a
  // request blocks: a waiter behind a holder that never lets go (a stopped process, or one killed
  // -9) would sleep for ever. A detector thread runs it for expired requests every second, so the
  // 10 s timeout holds (the waiter gets DB_LOCK_NOTGRANTED: kTempFail). A guard thread, which
  // never calls libdb, ends the process with one line and 75 when a call cannot return:
  // - the environment was recovered by another process since and a call has been in flight for
  //   longer than the lock timeout: libdb wakes no waiter in the old regions;
  // - a call has waited a minute on a mutex while the environment's registry shows a process
  //   that died inside it: libdb 5.3 never frees a dead owner's mutex (the detector itself may
  //   be asleep on it), and nobody has opened the store since to recover it. The environment's
  //   open is such a call too: it waits on a region mutex of a process stopped inside libdb, and
  //   for ever once that process is killed, holding the registry's lock every later open needs.
  // Their state is shared, so that Close can leave a detector asleep on a dead owner's mutex
  // behind (as it leaves the environment) without it touching freed memory.
  struct Watch {
    DB_ENV* env = nullptr;
    std::string dir;
    std::mutex mutex;
    std::condition_variable cv;
    // Under mutex. The detector starts when a call has been in flight for a tick (a short
    // command, nothing waiting, never pays for a second thread), and not once Close began.
    std::thread detector;
    bool detector_allowed = true;
    bool detector_eager = false;  // tests: started with the guard
    bool detector_stopping = false;
    bool detector_done = false;
    bool guard_stopping = false;
    // Under mutex: set once the environment is open. Until then the guard watches the open
    // itself (a region mutex a stopped process holds, and that process killed meanwhile), and no
    // detector may call into it.
    bool opened = false;
    std::atomic<bool> wedged{false};
    std::atomic<bool> panicked{false};
    // The environment's directory and its first region file as opened (under mutex until
    // `opened`): recovery by another process replaces that file, which the guard sees without
    // calling libdb.
    int dir_fd = -1;
    dev_t region_dev = 0;
    ino_t region_ino = 0;
    // __db.register, open for the environment's life: closing any descriptor of it would drop
    // this process's registration lock (POSIX record locks belong to the process). Opened before
    // the environment when it exists (failchk asks about other processes during the open),
    // otherwise at the first question or after the open; under registry_mutex until then.
    std::string registry_path;
    std::mutex registry_mutex;
    std::atomic<int> registry_fd{-1};
    // libdb calls in flight (any thread) and the guard's tick at which each began.
    struct Call {
      uint64_t id;
      pid_t tid;
      uint64_t since;
      const char* what;  // for the guard's lines: "a call into", "the open of"
    };
    std::mutex calls_mutex;
    std::vector<Call> calls;  // under calls_mutex
    uint64_t next_call = 0;   // under calls_mutex
    std::atomic<uint64_t> ticks{0};
  };
  // Before the environment's open, which it watches too: the guard's thread.
  void StartGuard();
  // After the environment opened: what the guard and the detector need of it.
  void WatchOpenedEnvironment(const std::string& env_dir);
  // Close's first step: the detector ends, or is left behind (wedged) after the guard's limit.
  void StopDetector();
  // Close's last step, after the handles: the guard ends; its descriptors close unless wedged.
  void StopGuard();
  static void DetectExpiredLocks(Watch& watch);
  static void StartDetector(const std::shared_ptr<Watch>& watch);
  static void GuardCalls(const std::shared_ptr<Watch>& watch);
  std::shared_ptr<Watch> watch_ = std::make_shared<Watch>();
  std::thread guard_;
  class InFlight {
   public:
    explicit InFlight(Db& db, const char* what = "a call into");
    ~InFlight();
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;

   private:
    Watch& watch_;
    uint64_t id_;
  };
  // Closes whatever is open: the destructor, and a constructor that failed part-way (which must
  // not run the destructor on itself and then read its members).
  void Close(bool checkpoint);
  static void OnDbMessage(const DB_ENV* env, const char* prefix, const char* message);
  static void OnDbNote(const DB_ENV* env, const char* message);
  // One warning line when this thread's last environment open ran recovery (not the one that
  // created the environment): every process attached until then fails its next call.
  static void SayIfThisOpenRecovered(const std::string& dir);
  // Before an environment open: the processes the registry names as dead ("123, 456"), which the
  // line names if the open recovers (libdb's own note names only the first it finds).
  static void BeginRegistryNotes(const std::string& dead);
  std::string dir_;
  std::string private_copy_;  // a read-only store's environment is opened from a copy here
  DB_ENV* env_ = nullptr;
  DB* folder_ = nullptr;
  DB* quota_ = nullptr;
  DB* users_ = nullptr;
  DB* subscr_ = nullptr;
  DB* peruser_ = nullptr;
  DB* lright_ = nullptr;
  DB* verified_ = nullptr;
  std::atomic<bool> wedged_{false};  // a checkpoint never finished: nothing more is asked of libdb
};

}  // namespace storemove::store
