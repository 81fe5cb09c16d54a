#include "store/mboxlist.h"
#include "store/mboxlist_liveness.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "util/descriptor_limit.h"
#include "util/error.h"
#include "util/fs.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

namespace storemove::store {

namespace {

DBT Dbt(std::string_view s) {
  DBT d;
  std::memset(&d, 0, sizeof d);
  d.data = const_cast<char*>(s.data());
  d.size = static_cast<u_int32_t>(s.size());
  return d;
}

DBT OutDbt() {
  DBT d;
  std::memset(&d, 0, sizeof d);
  d.flags = DB_DBT_MALLOC;
  return d;
}

bool Retryable(int ret) { return ret == DB_LOCK_DEADLOCK || ret == DB_LOCK_NOTGRANTED; }

constexpr int kMaxTxnRetries = 50;
// A deadlock victim is retried at once and often; a request that waited out the lock timeout
// (10 s: the holder is stopped or dead) is not, so a caller hears kTempFail after ~10 s instead
// of 50 timeouts later. (Not even once: libdb 5.3's detector recomputes the next timeout from
// the waiters it saw, so a request that blocks again while the detector's pass that expired it
// is still running can be left without a timeout until some other request blocks.)
constexpr int kMaxLockTimeouts = 1;
// Whether the last kTempFail this thread threw from Fail was a lock timeout (Txn's retry count).
thread_local bool last_failure_timed_out = false;
// Berkeley DB's last error message on this thread, for the one line we report.
thread_local std::string last_db_message;
// What libdb's registry said during this thread's environment open (DB_VERB_REGISTER): whether
// it created the registry, ran recovery itself, and which processes it found dead.
struct RegistryNotes {
  bool created = false;
  bool recovered = false;
  std::string dead;  // "1234, 5678"
};
thread_local RegistryNotes registry_notes;
constexpr size_t kScanBatch = 512;
}  // namespace

void KeepDbMessage(std::string* last, std::string_view message) {
  const bool continuation = message.starts_with("BDB2507 ") || message.starts_with("BDB2508 ") ||
                            message.starts_with("BDB2509 ");
  if (continuation && last->starts_with("BDB2506 ")) return;
  *last = message;
}

bool RecoveredUnderThisProcess(int ret, std::string_view message) {
  return ret == DB_RUNRECOVERY || (ret == EINVAL && message.starts_with("BDB2506 "));
}

bool DbMessageOnlyRepeats(int ret, std::string_view message) {
  return ret > 0 && message.find(": 0x") != std::string_view::npos &&
         message.ends_with(std::string(": ") + std::strerror(ret));
}

[[noreturn]] void Store::Db::Fail(int ret, const std::string& what) {
  std::string msg = "mboxlist " + dir_ + ": " + what + ": " + db_strerror(ret);
  if (!last_db_message.empty() && !DbMessageOnlyRepeats(ret, last_db_message)) msg += " (" + last_db_message + ")";
  const bool recovered = RecoveredUnderThisProcess(ret, last_db_message);
  last_db_message.clear();
  if (ret == DB_RUNRECOVERY) msg += " (another process died; reopen the store to recover)";
  else if (recovered)
    msg += " (another process died and the environment was recovered under this one: run again; if none "
           "did, the store's log files were removed or a database copied in from another store)";
  if (recovered) watch_->panicked = true;  // for a long-running process that must reopen (serve)
  // A panic means another process ran recovery after one died: nothing of this operation was
  // committed and a new process will succeed, so it is temporary (deliver exits 75 and the MTA
  // retries, instead of bouncing a message for another process's crash).
  last_failure_timed_out = ret == DB_LOCK_NOTGRANTED;
  if (last_failure_timed_out)
    msg += " (another process has held it for over " + std::to_string(kLockTimeoutSeconds) + " s)";
  if (Retryable(ret) || recovered) Throw(Errc::kTempFail, msg);
  // A full disk, a quota or a file-size limit met by the log or a database: an I/O failure (74)
  // like the same limit met by a message file, not a software error (70, helper-113).
  if (ret == ENOSPC || ret == EDQUOT || ret == EFBIG) Throw(Errc::kIo, msg);
  Throw(Errc::kDatabase, msg);
}

// Berkeley DB reports details (a checksum error, the page) through this instead of stderr: the
// last one goes into the error we throw, so a damaged file makes one line, not hundreds.
void Store::Db::OnDbMessage(const DB_ENV* env, const char*, const char* message) {
  // Per thread: libdb calls this on the thread whose call failed (the detector's too, in a
  // panicked environment), and the message belongs to that thread's error.
  (void)env;
  KeepDbMessage(&last_db_message, message);
}

// libdb's notes (failchk's "Aborting txn", the registry's steps) go here, not to standard
// output, where `backup -f -` writes its stream. Of the registry's, three tell whether this open
// recovered the environment, which fails every process attached to it at that moment: said by
// SayIfThisOpenRecovered, so that such a failure elsewhere can be traced to its cause.
void Store::Db::OnDbNote(const DB_ENV*, const char* message) {
  const std::string_view note = message;
  if (note.starts_with("BDB1525 ")) {  // "PID: creating DIR/__db.register"
    registry_notes.created = true;
  } else if (note.starts_with("BDB1533 ")) {  // "PID: recovery completed, unlocking"
    registry_notes.recovered = true;
  } else if (note.starts_with("BDB1530 ") && note.ends_with(": FAILED") && registry_notes.dead.empty()) {
    std::string_view pid = note.substr(0, note.size() - std::string_view(": FAILED").size());  // "SLOT: PID: FAILED"
    registry_notes.dead = pid.substr(pid.rfind(' ') + 1);
  }
}

void Store::Db::BeginRegistryNotes(const std::string& dead) {
  registry_notes = {};
  registry_notes.dead = dead;
}

void Store::Db::SayIfThisOpenRecovered(const std::string& dir) {
  const RegistryNotes notes = std::exchange(registry_notes, {});
  if (!notes.recovered || notes.created) return;
  const std::string line =
      "storemove: warning: mboxlist " + dir + ": " +
      (notes.dead.empty() ? std::string("a process died while it registered with the database environment")
                          : notes.dead.find(',') == std::string::npos
                              ? "process " + notes.dead +
                                    " died attached to the database environment and no failure check could clean up after it"
                              : "processes " + notes.dead +
                                    " died attached to the database environment and no failure check could clean up after them") +
      ": recovered the environment; processes attached to it until now fail with \"another process died\" and are "
      "to be run again\n";
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

Store::Db::Db(const std::string& dir, bool create, bool frees_space) : dir_(dir) {
  try {
    Open(create, frees_space);
  } catch (...) {
    Close(/*checkpoint=*/false);
    throw;
  }
}

namespace {

// The reserve (Open): kept while there is room, given up by a command that frees space.
constexpr const char* kReserveFile = "storemove.reserve";
constexpr uint64_t kReserveBytes = uint64_t{4} << 20;

// Bytes the user running may still write on the filesystem of `dir` (the most when unknown).
uint64_t FreeBytes(const std::string& dir) {
  struct statvfs fs;
  return ::statvfs(dir.c_str(), &fs) == 0 ? uint64_t(fs.f_bavail) * fs.f_frsize : UINT64_MAX;
}

// Whether the reserve at `path` holds its blocks (a sparse copy, rsync -S or tar -S, or an empty
// file a kill left holds none, and giving it up frees nothing: review).
bool ReserveHeld(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && uint64_t(st.st_blocks) * 512 >= kReserveBytes;
}

// Makes the reserve when it is missing or holds less than its blocks: allocated under a
// temporary name, then renamed into place, so it is whole or absent. Best effort: a store that
// cannot keep one works as before.
void KeepReserve(const std::string& path) {
  if (ReserveHeld(path)) return;
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return;  // no right to
  const bool made = ::posix_fallocate(fd, 0, kReserveBytes) == 0;
  ::close(fd);
  if (!made || ::rename(temp.c_str(), path.c_str()) != 0) ::unlink(temp.c_str());
}

// An `init` that failed before its first database (a file-size limit, helper-105) left region
// files and a registry that made every rerun fail ("open folder.db: No such file or directory"):
// with no database and no log there is nothing to recover, so they are removed before `init`
// makes the environment again.
// The region files of an environment without any database or log (empty when it has one). The
// directory is read only when folder.db, the first database made, is missing: not on every open.
std::vector<std::string> UnfinishedEnvironment(const std::string& dir) {
  std::vector<std::string> regions;
  if (PathExists(dir + "/folder.db")) return regions;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return regions;
  bool finished = false;
  while (dirent* e = ::readdir(d)) {
    const std::string_view name = e->d_name;
    if (name.starts_with("__db."))
      regions.emplace_back(name);
    else if (name.starts_with("log.") || name.ends_with(".db"))
      finished = true;
  }
  ::closedir(d);
  if (finished) regions.clear();
  return regions;
}

// libdb opens the environment's files as it goes (its log file at the first commit) and panics the
// whole environment when one of those opens fails: a process out of descriptors (ulimit -n) made
// every process attached fail with DB_RUNRECOVERY, "another process died" (helper-113: a running
// restore stopped by a `user --status` under ulimit -n 20). So an open needs this many free
// descriptors (the soft limit is raised when the hard one allows), or is refused, naming the limit.
constexpr rlim_t kFreeDescriptors = 48;
void RequireFreeDescriptors(const std::string& dir) {
  const size_t open = OpenDescriptors();
  rlim_t hard;
  if (RaiseDescriptorLimit(open + kFreeDescriptors, &hard)) return;
  Throw(Errc::kTempFail, "mboxlist " + dir + ": opening the database environment needs " +
                             std::to_string(kFreeDescriptors) + " free open files; the limit is " +
                             std::to_string(hard) + " (ulimit -n) with " + std::to_string(open) +
                             " open: nothing was opened");
}

void RemoveUnfinishedEnvironment(const std::string& dir) {
  for (const std::string& name : UnfinishedEnvironment(dir)) ::unlink((dir + "/" + name).c_str());
}

// Copies the environment's databases and logs (not its regions) into a new private directory.
std::string CopyEnvironment(const std::string& from) {
  const char* tmp = std::getenv("TMPDIR");
  std::string to = std::string(tmp && *tmp ? tmp : "/tmp") + "/storemove-mboxlist-XXXXXX";
  if (!::mkdtemp(to.data())) ThrowErrno("mkdtemp " + to);
  DIR* d = ::opendir(from.c_str());
  if (!d) ThrowErrno("opendir " + from);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.' && std::strncmp(e->d_name, "__db.", 5) != 0 && std::strncmp(e->d_name, kReserveFile, std::strlen(kReserveFile)) != 0)
      names.emplace_back(e->d_name);
  ::closedir(d);
  std::vector<char> buf(1 << 20);
  for (const std::string& name : names) {
    UniqueFd in = OpenFile(from + "/" + name, O_RDONLY);
    UniqueFd out = OpenFile(to + "/" + name, O_WRONLY | O_CREAT | O_EXCL, 0600);
    while (size_t n = ReadSome(in.get(), buf.data(), buf.size(), from + "/" + name))
      WriteAll(out.get(), buf.data(), n, to + "/" + name);
  }
  return to;
}

// Berkeley DB opens its files by name, blocking and following links: a FIFO planted among them
// would hang every command (open(2) waits for a writer), a symlink would send its writes
// elsewhere. Only regular files and directories are let through (docs/store-format.md §1).
void RefuseWhatIsNoFile(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;  // the environment's open says what is wrong with the directory
  struct Closer {
    DIR* d;
    ~Closer() { ::closedir(d); }
  } closer{d};
  while (dirent* e = ::readdir(d)) {
    if (e->d_type == DT_REG || e->d_type == DT_DIR) continue;
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) continue;
    const char* kind = S_ISLNK(st.st_mode) ? "a symbolic link" : S_ISFIFO(st.st_mode) ? "a FIFO" : "not a regular file";
    Throw(Errc::kCorrupt, "mboxlist " + dir + "/" + e->d_name + " is " + kind + "; refusing to open the database");
  }
}

bool OnReadOnlyFilesystem(const std::string& dir) {
  struct statvfs fs;
  return ::statvfs(dir.c_str(), &fs) == 0 && (fs.f_flag & ST_RDONLY);
}

}  // namespace

void Store::Db::CreateEnvironment(bool track_threads) {
  int ret = db_env_create(&env_, 0);
  if (ret != 0) {
    env_ = nullptr;
    Fail(ret, "db_env_create");
  }
  env_->app_private = this;
  env_->set_errcall(env_, &Db::OnDbMessage);
  env_->set_msgcall(env_, &Db::OnDbNote);
  env_->set_verbose(env_, DB_VERB_REGISTER, 1);
  if (track_threads) TrackThreadsForFailureCheck(env_);
  // The mboxlist is small and its pages are a pread away (tmpfs or the page cache): memory is for
  // messages. The cache fills up to this size on a large store, so it is part of the RSS bound.
  env_->set_cachesize(env_, 0, 2 * 1024 * 1024, 1);
  env_->set_lk_detect(env_, DB_LOCK_DEFAULT);
  // Nothing waits forever: a lock not granted within 10 s fails the transaction (retried).
  env_->set_timeout(env_, kLockTimeoutSeconds * 1000 * 1000, DB_SET_LOCK_TIMEOUT);
  // A timed-out request says so (DB_LOCK_NOTGRANTED) instead of posing as a deadlock victim,
  // which Txn retries at once and many times (DetectExpiredLocks).
  env_->set_flags(env_, DB_TIME_NOTGRANTED, 1);
  env_->set_lk_max_locks(env_, 100000);
  env_->set_lk_max_objects(env_, 100000);
  env_->set_lk_max_lockers(env_, 10000);
  // The object hash table is sized from max_objects by default (131,071 buckets, ~10 MB of the
  // shared region, touched page by page as the scan of a large mboxlist hashes ever more page
  // ids: resident memory that grew with the store). A store holds a few dozen lock objects at a
  // time, so 4,096 buckets keep chains short.
  env_->set_lk_tablesize(env_, 4096);
  env_->set_tx_max(env_, 1000);
  // Commits reach the OS (survive kill -9) without an fsync each; callers that acknowledge to a
  // sender (deliver) ask for a synchronous commit.
  env_->set_flags(env_, DB_TXN_WRITE_NOSYNC, 1);
  env_->log_set_config(env_, DB_LOG_AUTO_REMOVE, 1);
  env_->set_flags(env_, DB_REGION_INIT, 1);
  env_->set_lg_max(env_, 512 * 1024);
}

void Store::Db::Open(bool create, bool frees_space) {
  RefuseWhatIsNoFile(dir_);
  std::string dir = dir_;
  if (!create && OnReadOnlyFilesystem(dir_)) {
    // A mounted snapshot: Berkeley DB cannot open its environment where it cannot write its
    // regions, and the snapshot's .db files may lag its logs. A private copy (the mboxlist is
    // small beside the messages), recovered as usual, reads exactly what the snapshot committed.
    private_copy_ = CopyEnvironment(dir_);
    dir = private_copy_;
  }
  RequireFreeDescriptors(dir);
  u_int32_t flags = DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG | DB_INIT_MPOOL | DB_THREAD | DB_REGISTER | DB_RECOVER;
  if (create) flags |= DB_CREATE;
  if (!create && !PathExists(dir + "/__db.register") && !PathExists(dir + "/folder.db"))
    Throw(Errc::kNotFound, "mboxlist " + dir + ": no database environment");
  if (create) RemoveUnfinishedEnvironment(dir);
  else if (!UnfinishedEnvironment(dir).empty())
    Throw(Errc::kNotFound, "mboxlist " + dir + ": no database environment (an init that did not finish: run "
                           "storemove init again)");
  // The region files are memory-mapped: created on a full filesystem, the first touch of a page
  // that has no space behind it kills the process with SIGBUS instead of returning ENOSPC. So
  // they are created only with room for them (about 1 MiB; 2 MiB asked). Existing ones are no
  // proof: recovery (after a process died attached, or one whose commit failed on the full disk
  // left the environment panicked) removes them and makes new ones, which a backup after such a
  // restore died of (found by review, helper-43). So the room is asked for at every open.
  // A store that filled its filesystem could not be opened by the command that frees space
  // either (helper-102: `delete` exited 74 like every other): the reserve, a file of 4 MiB kept
  // beside the environment while there is room, is given up for `delete` (frees_space), and
  // made again by the first open that finds room for it.
  {
    constexpr uint64_t kRegionSpace = uint64_t{2} << 20;
    const std::string reserve = dir + "/" + kReserveFile;
    uint64_t free = FreeBytes(dir);
    const bool writable = private_copy_.empty();
    bool given_up = false;
    if (free < kRegionSpace && frees_space && writable && ::unlink(reserve.c_str()) == 0) {
      given_up = true;
      free = FreeBytes(dir);
    }
    if (free < kRegionSpace)
      Throw(Errc::kIo, "mboxlist " + dir + ": no space left on device (" + std::to_string(free / 1024) +
                           " KiB free; the database environment needs 2048 KiB)" +
                           (writable && ReserveHeld(reserve)
                                ? "; storemove delete still runs (it gives up the store's 4 MiB reserve) to free some"
                                : ""));
    // Not by the open that gave it up: the space is for what it deletes.
    if (writable && !given_up && free >= kRegionSpace + kReserveBytes) KeepReserve(reserve);
  }
  // Kept open with the environment; read by the failure check (is_alive) and the guard.
  watch_->registry_path = dir + "/__db.register";
  const std::string dead_before = DeadRegisteredPids(RegistryFd());
  // A process that died attached is cleaned up by a failure check rather than by recovery, which
  // would end every process attached (docs/store-format.md §3). When it cannot, this open recovers.
  // libdb's check empties one dead slot a run (the first it finds; helper-108: with two dead,
  // the open recovered the environment under the live processes): a run per dead process, while
  // each makes progress.
  for (std::string dead = dead_before; !dead.empty() && CleanUpAfterDeadProcesses(dir, flags, dead);) {
    std::string left = DeadRegisteredPids(RegistryFd());
    if (left == dead) break;
    dead = std::move(left);
  }
  // DB_REGISTER needs DB_CREATE to create its region files; the databases themselves are only
  // created when `create` (below). The thread table goes into regions this open makes.
  CreateEnvironment(/*track_threads=*/true);
  // The open may wait on a region mutex of a process stopped inside libdb, and for ever once
  // that process is killed: the guard watches it as it watches every call (mboxlist_watch.cc).
  StartGuard();
  const auto open_environment = [&] {
    InFlight call(*this, "the open of");
    // Those the failure check left (helper-111: the line named processes it had cleaned up).
    BeginRegistryNotes(dead_before.empty() ? dead_before : DeadRegisteredPids(RegistryFd()));
    const int ret = env_->open(env_, dir.c_str(), flags | DB_CREATE, 0600);
    SayIfThisOpenRecovered(dir);
    return ret;
  };
  int ret = open_environment();
  if (ret == EINVAL && last_db_message.find("BDB1505") != std::string::npos) {
    // "thread table must be allocated when the database environment is created": regions made by
    // a storemove before failchk, attached to by processes still running or left by a clean
    // close. This process goes without failchk until a recovery makes new regions.
    last_db_message.clear();
    env_->close(env_, 0);
    env_ = nullptr;
    CreateEnvironment(/*track_threads=*/false);
    ret = open_environment();
  }
  if (ret != 0) Fail(ret, "open environment");  // the caller closes env_ (required after a failed open)
  WatchOpenedEnvironment(dir);
  struct Spec {
    DB** handle;
    const char* file;
  } specs[] = {{&folder_, "folder.db"}, {&quota_, "quota.db"},     {&users_, "user.db"},
               {&subscr_, "subscr.db"}, {&peruser_, "peruser.db"}, {&lright_, "lright.db"},
               {&verified_, "verified.db"}};
  for (const Spec& s : specs) {
    ret = db_create(s.handle, env_, 0);
    if (ret != 0) {
      *s.handle = nullptr;
      Fail(ret, std::string("db_create ") + s.file);
    }
    // A database missing beside a folder.db that lists mailboxes is damage, not an unfinished
    // init: making it empty would hide it (every mailbox's user gone). Refused, even by init.
    if (s.handle != &folder_ && s.handle != &verified_ && !PathExists(dir + "/" + s.file) && FolderListsAMailbox())
      Throw(Errc::kCorrupt, "mboxlist " + dir + ": " + s.file +
                                " is missing beside folder.db, which lists mailboxes: the store is damaged (restore "
                                "its mboxlist from a backup); nothing was made");
    // verified.db is newer than the store format's first stores: created when missing.
    bool create_db = create || s.handle == &verified_;
    u_int32_t oflags = DB_AUTO_COMMIT | DB_THREAD | (create_db ? DB_CREATE : 0);
    {
      InFlight call(*this);
      ret = (*s.handle)->open(*s.handle, nullptr, s.file, nullptr, DB_BTREE, oflags, 0600);
    }
    // A database missing beside a folder.db without mailboxes: an `init` that stopped between
    // them (its open files ran out, helper-113). Not damage to report as a software error (70) for
    // ever: kNotFound, which `init` takes for a store to make (its open with DB_CREATE makes it).
    if (ret == ENOENT && !create_db && PathExists(dir + "/folder.db"))
      Throw(Errc::kNotFound, "mboxlist " + dir_ + ": " + s.file + " is missing (an init that did not finish?): run "
                             "storemove init --store STORE again");
    if (ret != 0) Fail(ret, std::string("open ") + s.file);  // the handle is closed with the rest
  }
}

bool Store::Db::FolderListsAMailbox() {
  DBC* cursor = nullptr;
  InFlight call(*this);
  if (folder_->cursor(folder_, nullptr, &cursor, 0) != 0) return true;  // not known: not taken for empty
  DBT key{}, value{};
  key.flags = value.flags = DB_DBT_USERMEM;  // no room: a record says DB_BUFFER_SMALL, none DB_NOTFOUND
  const int ret = cursor->get(cursor, &key, &value, DB_FIRST);
  cursor->close(cursor);
  return ret != DB_NOTFOUND;
}

uint64_t Store::Db::LockWaits() {
  DB_LOCK_STAT* stat = nullptr;
  if (int ret = env_->lock_stat(env_, &stat, 0); ret != 0) Fail(ret, "lock_stat");
  const uint64_t waits = stat->st_lock_wait;
  free(stat);
  return waits;
}

Store::Db::~Db() { Close(/*checkpoint=*/true); }

namespace {

std::mutex checkpoint_seam_mutex;
std::function<int(DB_ENV*, u_int32_t)> checkpoint_call;  // tests only; empty: libdb's
std::chrono::milliseconds checkpoint_limit{30000};

std::string LimitText(std::chrono::milliseconds limit) {
  return limit.count() < 1000 ? std::to_string(limit.count()) + " ms" : std::to_string(limit.count() / 1000) + " s";
}

}  // namespace

void Store::Db::SetCheckpointForTesting(std::function<int(DB_ENV*, u_int32_t)> call, std::chrono::milliseconds limit) {
  std::lock_guard lock(checkpoint_seam_mutex);
  checkpoint_call = std::move(call);
  checkpoint_limit = limit;
}

bool Store::Db::BoundedCheckpoint(u_int32_t flags, int* ret) {
  struct State {
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
    int ret = 0;
  };
  std::function<int(DB_ENV*, u_int32_t)> call;
  std::chrono::milliseconds limit;
  {
    std::lock_guard lock(checkpoint_seam_mutex);
    call = checkpoint_call;
    limit = checkpoint_limit;
  }
  auto state = std::make_shared<State>();
  DB_ENV* env = env_;
  auto run = [state, env, flags, call = std::move(call)] {
    int r = call ? call(env, flags) : env->txn_checkpoint(env, 0, 0, flags);
    std::lock_guard lock(state->mutex);
    state->ret = r;
    state->done = true;
    state->done_cv.notify_all();
  };
  try {
    // Detached: if it never returns, the process ends without it (nothing else waits for it).
    std::thread(run).detach();
  } catch (const std::system_error&) {
    run();  // no thread to be had (a destructor must not throw): the checkpoint as before
  }
  std::unique_lock lock(state->mutex);
  if (!state->done_cv.wait_for(lock, limit, [&] { return state->done; })) {
    stuck_after_ms_ = limit.count();
    wedged_ = true;
    watch_->wedged = true;
    return false;
  }
  *ret = state->ret;
  return true;
}

void Store::Db::Close(bool checkpoint) {
  StopDetector();
  // A checkpoint on close makes each .db file complete on its own (db5.3_verify on a copy). It
  // runs while the databases are open, so one pass writes and syncs every dirty page; closing them
  // first would flush and sync each file (and the log before it) once more, to no end: a
  // per-process cost of every short-lived command (deliver, import), measured in
  // docs/performance.md "Import (issue 12)".
  int ret = -1;
  if (checkpoint && env_ && !wedged_ && !BoundedCheckpoint(0, &ret))
    std::fprintf(stderr, "storemove: warning: mboxlist %s: a checkpoint is still waiting after %s (a process died "
                 "inside the database environment, or the disk stalls); left to the recovery of the next process "
                 "that opens it\n",
                 dir_.c_str(), LimitText(std::chrono::milliseconds(stuck_after_ms_.load())).c_str());
  if (wedged_) {
    // Closing the handles would wait on the same dead owner: they are left open, as a killed
    // process leaves them, for the next open's recovery. (Abandoned on purpose: not a leak for
    // LeakSanitizer, which would otherwise fail the test that makes an environment stuck.)
#if defined(__SANITIZE_ADDRESS__)
    for (const void* handle : {static_cast<const void*>(env_), static_cast<const void*>(folder_),
                               static_cast<const void*>(quota_), static_cast<const void*>(users_),
                               static_cast<const void*>(subscr_), static_cast<const void*>(peruser_),
                               static_cast<const void*>(lright_), static_cast<const void*>(verified_)})
      if (handle) __lsan_ignore_object(handle);
#endif
    folder_ = quota_ = users_ = subscr_ = peruser_ = lright_ = verified_ = nullptr;
    env_ = nullptr;
  }
  const bool checkpointed = ret == 0;
  for (DB** h : {&folder_, &quota_, &users_, &subscr_, &peruser_, &lright_, &verified_}) {
    if (*h) {
      InFlight call(*this);  // handles give their locks back through the lock table's mutexes
      (*h)->close(*h, checkpointed ? DB_NOSYNC : 0);
    }
    *h = nullptr;
  }
  if (env_) {
    // Not mid-scan of another open (HoldOffRegistryScans), which would take this process for
    // dead and recover the environment; the lock goes with libdb's descriptor, at its close.
    UniqueFd scans_held_off = HoldOffRegistryScans(
        watch_->registry_path, std::chrono::steady_clock::now() + std::chrono::seconds(kLockTimeoutSeconds));
    InFlight call(*this);
    env_->close(env_, 0);
    env_ = nullptr;
  }
  StopGuard();  // last: it watches the closes above
  if (!private_copy_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(private_copy_, ec);
    private_copy_.clear();
  }
}

void Store::Db::Txn(const std::function<void(DB_TXN*)>& fn, bool sync) {
  int timeouts = 0;
  int attempt = 0;
  // A deadlock victim is retried; a lock timeout only while under kMaxLockTimeouts.
  const auto retry = [&](bool temporary, bool timed_out) {
    return temporary && attempt < kMaxTxnRetries && (!timed_out || ++timeouts < kMaxLockTimeouts);
  };
  for (;; ++attempt) {
    DB_TXN* txn = nullptr;
    int ret;
    {
      InFlight call(*this);
      ret = env_->txn_begin(env_, nullptr, &txn, 0);
    }
    if (ret != 0) Fail(ret, "txn_begin");
    const auto abort = [&] {
      InFlight call(*this);
      txn->abort(txn);
    };
    try {
      last_failure_timed_out = false;
      fn(txn);
    } catch (const Error& e) {
      abort();
      if (retry(e.code() == Errc::kTempFail, last_failure_timed_out)) continue;
      throw;
    } catch (...) {
      abort();
      throw;
    }
    {
      InFlight call(*this);
      ret = txn->commit(txn, sync ? DB_TXN_SYNC : 0);
    }
    if (ret == 0) return;
    if (!retry(Retryable(ret), ret == DB_LOCK_NOTGRANTED)) Fail(ret, "commit");
  }
}

bool Store::Db::Get(DB* db, DB_TXN* txn, std::string_view key, std::string* value, bool for_update) {
  DBT k = Dbt(key), v = OutDbt();
  int ret;
  {
    InFlight call(*this);
    ret = db->get(db, txn, &k, &v, for_update ? DB_RMW : 0);
  }
  if (ret == DB_NOTFOUND) return false;
  if (ret != 0) Fail(ret, "get");
  value->assign(static_cast<char*>(v.data), v.size);
  free(v.data);
  return true;
}

void Store::Db::Put(DB* db, DB_TXN* txn, std::string_view key, std::string_view value) {
  DBT k = Dbt(key), v = Dbt(value);
  int ret;
  {
    InFlight call(*this);
    ret = db->put(db, txn, &k, &v, 0);
  }
  if (ret != 0) Fail(ret, "put");
}

bool Store::Db::PutNew(DB* db, DB_TXN* txn, std::string_view key, std::string_view value) {
  DBT k = Dbt(key), v = Dbt(value);
  int ret;
  {
    InFlight call(*this);
    ret = db->put(db, txn, &k, &v, DB_NOOVERWRITE);
  }
  if (ret == DB_KEYEXIST) return false;
  if (ret != 0) Fail(ret, "put");
  return true;
}

void Store::Db::Del(DB* db, DB_TXN* txn, std::string_view key) {
  DBT k = Dbt(key);
  int ret;
  {
    InFlight call(*this);
    ret = db->del(db, txn, &k, 0);
  }
  if (ret != 0 && ret != DB_NOTFOUND) Fail(ret, "del");
}

void Store::Db::Scan(DB* db, std::string_view prefix,
                     const std::function<bool(std::string_view, std::string_view)>& fn) {
  Scan(db, prefix, fn, BatchHooks{});
}

void Store::Db::Scan(DB* db, std::string_view prefix,
                     const std::function<bool(std::string_view, std::string_view)>& fn, const BatchHooks& hooks) {
  std::string from(prefix);
  bool inclusive = true;
  for (;;) {
    std::vector<std::pair<std::string, std::string>> batch;
    if (hooks.before_read) hooks.before_read();
    const bool done = ReadKeys(db, nullptr, from, prefix, inclusive, kScanBatch, &batch);
    if (hooks.after_read)
      hooks.after_read(from, inclusive, batch.empty() ? std::string_view(from) : std::string_view(batch.back().first),
                       done || batch.empty());
    for (auto& [key, value] : batch)
      if (!fn(key, value)) return;
    if (done || batch.empty()) return;
    from = batch.back().first;
    inclusive = false;
  }
}

bool Store::Db::ReadKeys(DB* db, DB_TXN* txn, std::string_view from, std::string_view prefix, bool inclusive,
                         size_t limit, std::vector<std::pair<std::string, std::string>>* out) {
  DBC* cursor = nullptr;
  int ret;
  {
    InFlight call(*this);
    ret = db->cursor(db, txn, &cursor, txn ? 0 : DB_READ_COMMITTED);
  }
  if (ret != 0) Fail(ret, "cursor");
  // DB_DBT_MALLOC: libdb allocates each returned key and value; the seek key we pass in is
  // ours and is never freed here.
  DBT k = Dbt(from), v = OutDbt();
  k.flags = DB_DBT_MALLOC;
  u_int32_t op = DB_SET_RANGE;
  bool ended = false;
  while (out->size() < limit) {
    {
      InFlight call(*this);
      ret = cursor->get(cursor, &k, &v, op);
    }
    if (ret != 0) break;
    std::string key(static_cast<char*>(k.data), k.size);
    std::string value(static_cast<char*>(v.data), v.size);
    free(k.data);
    free(v.data);
    k = OutDbt();
    v = OutDbt();
    op = DB_NEXT;
    if (!std::string_view(key).starts_with(prefix)) {
      ended = true;
      break;
    }
    if (inclusive || key != from) out->emplace_back(std::move(key), std::move(value));
  }
  {
    InFlight call(*this);
    cursor->close(cursor);
  }
  if (ret == DB_NOTFOUND) return true;
  if (ret != 0) Fail(ret, "cursor get");
  return ended;
}

std::vector<std::pair<std::string, std::string>> Store::Db::ReadRange(DB* db, DB_TXN* txn, std::string_view prefix) {
  std::vector<std::pair<std::string, std::string>> out;
  ReadKeys(db, txn, prefix, prefix, true, SIZE_MAX, &out);
  return out;
}

std::optional<std::string> Store::Db::FirstKeyFrom(DB* db, std::string_view from, std::string_view prefix) {
  std::vector<std::pair<std::string, std::string>> first;
  ReadKeys(db, nullptr, from, prefix, true, 1, &first);
  if (first.empty()) return std::nullopt;
  return std::move(first.front().first);
}

void Store::Db::Checkpoint() {
  int ret = 0;
  if (wedged_ || !BoundedCheckpoint(DB_FORCE, &ret))
    Throw(Errc::kTempFail, "mboxlist " + dir_ + ": a checkpoint did not finish within " +
                               LimitText(std::chrono::milliseconds(stuck_after_ms_.load())) +
                               ": a process died inside the database environment; run again (opening it recovers it)");
  if (ret != 0) Fail(ret, "checkpoint");
}

}  // namespace storemove::store
