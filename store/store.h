// The Sun-style message store: partitions of <uid>.msg files, per-folder store.idx, and the
// mboxlist Berkeley DB environment. docs/store-format.md specifies every byte this writes.
//
// Concurrency model (docs/store-format.md §Locking):
//  * mboxlist updates are Berkeley DB transactions (several processes at once, recovery on open).
//  * A folder is locked with flock(2) on its directory: writers (Commit, SetFlags, Expunge) take
//    it exclusively for a short critical section; Snapshot() takes it shared only while it reads
//    store.idx. Message bytes are written to a temporary name *outside* the lock and become
//    visible only in Commit(), after they are complete, so a reader never sees a record whose
//    file is missing or half-written.
//  * Message files are immutable once visible (they may be hard links shared by many folders).
#pragma once

#include <sys/stat.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "store/message_list.h"
#include "store/message_meta.h"
#include "util/digest.h"
#include "util/fs.h"

namespace storemove::store {

// System flags, bit i in Sun's order: Recent Deleted Seen Answered Flagged Draft Archived.
enum SystemFlag : uint8_t {
  kRecent = 1 << 0,
  kDeleted = 1 << 1,
  kSeen = 1 << 2,
  kAnswered = 1 << 3,
  kFlagged = 1 << 4,
  kDraft = 1 << 5,
  kArchived = 1 << 6,
};
constexpr uint8_t kAllSystemFlags = 0x7f;
// "0010000" style (imcheck's display) and "Seen,Flagged" style.
std::string FlagBits(uint8_t flags);
std::string FlagNames(uint8_t flags);
// Parses comma/space separated names (case-insensitive, optional leading '\'); throws kInvalidArgument.
uint8_t ParseFlagNames(std::string_view names);


enum class UserState : uint8_t { kActive = 0, kHold = 1, kMoved = 2 };
struct UserStatus {
  UserState state = UserState::kActive;
  std::string host;  // only for kMoved
  // Not for kMoved: the store id of the source store whose migration made this user here (its
  // copy on hold, then the switched user); empty for a user no migration made (or one made by a
  // version before 2026-12-04). Stored in user.db's host field. A status change that gives none
  // keeps it (a hold by hand does not make another store's copy free to be mirrored over); a
  // move drops it. Lets a destination tell two source stores with the same user ids apart.
  std::string origin_store{};  // (an initializer: {STATE, HOST} stays complete)
  // Only for kHold: a copy that a pass of origin_store's migration made here and that has been on
  // hold ever since (never switched, held by hand or adopted): nothing but that store's passes
  // wrote to it, so a pass may replace a folder of it that the source re-created. Any status
  // change that does not say so clears it, and so does any other writer taking the user's write
  // lock (import, restore, rename, delete, moveuser: LockWait::keeps_untouched_copy).
  bool untouched_copy = false;
  // Only for kHold: a `moveuser --hold` pull set this hold and has not completed (it failed, or
  // runs): the next pull of the user lifts it at its end. A hold without it (by hand, a
  // migration's copy) is someone else's, and a pull leaves it on. Any status change that does
  // not say so clears it.
  bool held_by_pull = false;
  std::string ToString() const;  // "active", "hold", "moved:HOST" (origin_store is not shown)
  static UserStatus Parse(std::string_view text);  // throws kInvalidArgument
  // Whether two moved:HOST names are one host: DNS names, one whatever their case.
  static bool SameHost(std::string_view a, std::string_view b);
  friend bool operator==(const UserStatus&, const UserStatus&) = default;
};

// One rename of a user: the store's rename generation it made (Store::UserRenameGeneration)
// and the name the user had before it.
struct UserRename {
  uint64_t generation = 0;
  std::string from;
  friend bool operator==(const UserRename&, const UserRename&) = default;
};
inline constexpr size_t kUserRenamesKept = 4;

struct UserInfo {
  std::string user;
  std::string partition;
  UserStatus status;
  uint64_t quota_limit = 0;  // bytes, 0 = no limit
  uint64_t quota_used = 0;   // bytes
  int64_t created = 0;
  // The user's last renames, oldest first (UserRename), at most kUserRenamesKept of them;
  // renames_truncated when older ones were dropped.
  std::vector<UserRename> renames;
  bool renames_truncated = false;
};

// What a restore proved a folder holds of a source folder (restore's chain check,
// docs/store-format.md §3.3): every message that folder of store `store_id` (the source
// mailbox of that UIDVALIDITY) held that was stored before `through` (unix seconds), as far as
// the restores into it know. Empty: unknown (made here, or by a version before 2026-12-05).
struct FolderCoverage {
  std::string store_id;
  uint32_t uidvalidity = 0;
  int64_t through = 0;
  bool empty() const { return store_id.empty(); }
  friend bool operator==(const FolderCoverage&, const FolderCoverage&) = default;
};

struct FolderInfo {
  std::string user;       // "joe" or "joe@example.com"
  std::string folder;     // "INBOX", "Sent", "Projects/2024"
  std::string partition;
  uint32_t uidvalidity = 0;
  uint32_t uidnext = 1;
  uint32_t count = 0;
  uint64_t bytes = 0;
  int64_t last_append = 0;
  int64_t created = 0;
  // HIGHESTMODSEQ: raised by every append, flag change, expunge, user-flag-name change and
  // UIDNEXT raise (docs/store-format.md §4.5). Equal values = nothing in store.idx changed.
  uint64_t highest_modseq = 0;
  std::string acl;  // "identifier rights" pairs separated by spaces, e.g. "joe lrswipkxtea anyone lr"
  std::vector<std::string> user_flag_names;
  // Set by restore on a folder it made: the stream it came from, so that a rerun of
  // `restore -n` finds the folders its first run made (docs/store-format.md §3.3). Else empty.
  std::string origin;
  FolderCoverage coverage;  // set by restore (FolderCoverage)
  std::string Mailbox() const { return "user/" + user + "/" + folder; }
};

struct FolderSnapshot {
  FolderInfo info;
  MessageList messages;  // sorted by UID; a large folder's in a temporary file (MessageList)
};

// What two copies of a folder must agree on, computed from store.idx alone (no message file
// is read): migrate's proof that a destination folder equals its source (docs/store-format.md
// §4.6). The digest covers, in UID order, each message's UID, system flags without \Recent,
// its user flags by name (sorted), size and content digest; so two stores whose user-flag bit
// numbering differs agree when their messages do.
struct FolderSummary {
  uint32_t count = 0;
  uint32_t uidvalidity = 0;
  uint32_t uidnext = 0;
  uint64_t bytes = 0;
  Digest digest;
  friend bool operator==(const FolderSummary&, const FolderSummary&) = default;
};
FolderSummary Summarize(const FolderSnapshot& snapshot);

// --- names ------------------------------------------------------------------------------
// Throw kInvalidArgument with a message naming the bad value.
void ValidateUserId(std::string_view user);
// As ValidateUserId, for an id about to be made (a user created or renamed, a -m map's): also
// refuses characters that show as nothing (docs/store-format.md §1.1), which an older store may hold.
void ValidateNewUserId(std::string_view user);
void ValidateFolderName(std::string_view folder);
void ValidatePartitionName(std::string_view partition);
bool IsValidPartitionName(std::string_view partition);  // the same, as a yes or no
// "user/joe/Sent/2024" -> {"joe", "Sent/2024"}; "user/joe" -> {"joe", "INBOX"}.
std::pair<std::string, std::string> ParseMailboxName(std::string_view mailbox);
// An ACL: "identifier rights" pairs; identifiers are user ids, anyone, anonymous, authuser or
// group:NAME (optionally prefixed with - for negative rights), rights RFC 4314 letters.
void ValidateAcl(std::string_view acl);
// A folder's keyword (user flag) names: each an IMAP atom (RFC 3501 flag-keyword: no control,
// space, 8-bit byte or any of (){%*"\]), 1-200 bytes, none twice. A name with CR LF would reach
// an IMAP client inside a FLAGS response (helper-70).
void ValidateUserFlagNames(const std::vector<std::string>& names);
// One such name: an IMAP atom of 1-200 bytes.
bool IsUserFlagName(std::string_view name);
// Which of a folder's names keyword `name` is: the same spelling, else the first that differs
// only in ASCII case, as IMAP servers take keywords in any case (`$forwarded` is `$Forwarded`,
// not a second flag). nullopt: none.
std::optional<size_t> FindUserFlagName(const std::vector<std::string>& names, std::string_view name);
// IMAP LIST-style pattern: '*' matches anything, '%' anything but '/'.
bool MatchPattern(std::string_view pattern, std::string_view name);
// Two hex levels of the user's hash directory, e.g. "d1/a7".
std::string HashDir(std::string_view user);
// Relative path of a folder below the partition root: "=user/d1/a7/=joe/+Sent/+2024".
std::string FolderRelPath(std::string_view user, std::string_view folder);
// Relative path of a message below its folder directory: "<bucket>/<uid>.msg".
std::string MessageRelPath(uint32_t uid);

// --- parsing helpers used by delivery ----------------------------------------------------
// Bytes up to and including the first empty line (LF or CRLF); the whole size if none.
uint32_t HeaderSize(std::string_view message);
// The Date: header of a header block as unix seconds, 0 if absent or unparseable.
int64_t SentDate(std::string_view header);
// A date-time as a Date: field (or an mbox "From " line) writes it, as unix seconds; nullopt if it
// cannot be read (where SentDate says 0, which is also 1970-01-01T00:00:00Z).
std::optional<int64_t> ParseDateTimeText(std::string_view text);

enum class Durability : uint8_t {
  kNone,   // rely on the OS page cache (survives kill -9, not power loss)
  kBatch,  // fsync message files, store.idx and directories once per Commit()
};

class Store;
class Folder;

// Left in a folder's directory by a rename or move from just before its commit until the old
// files are gone (docs/store-format.md §6.8): a writer that finds it checks the mailbox's record.
inline constexpr char kMovingMarker[] = "store.moving";

// A message under a temporary name in its folder directory, invisible until Folder::Commit().
struct StagedMessage {
  std::string temp_name;  // inside the folder directory
  MessageMeta meta;
};

// Writes one message's bytes to a temporary file, hashing and measuring as they arrive.
// It belongs to the Folder that made it and must not outlive it.
class MessageWriter {
 public:
  ~MessageWriter();  // removes the temporary file unless Finish() succeeded
  MessageWriter(const MessageWriter&) = delete;
  MessageWriter& operator=(const MessageWriter&) = delete;
  void Write(const void* data, size_t size);
  void Write(std::string_view bytes) { Write(bytes.data(), bytes.size()); }
  // Closes the file. size, header_size and digest of `meta` are filled from the bytes written;
  // sent_date is filled from the header when it is 0.
  StagedMessage Finish(MessageMeta meta);

 private:
  friend class Folder;
  MessageWriter(Folder* folder, std::string temp_name, UniqueFd fd);
  Folder* folder_;
  std::string temp_name_;
  UniqueFd fd_;
  Hasher hasher_;
  uint64_t size_ = 0;
  uint32_t header_size_ = 0;
  bool header_done_ = false;
  uint8_t tail_ = 0;  // state machine for finding the blank line
  std::string header_;  // first bytes of the header, for SentDate
  bool finished_ = false;
};

class Folder {
 public:
  ~Folder();
  const std::string& path() const { return path_; }  // absolute folder directory
  int dir_fd() const { return dir_.get(); }  // the folder directory, open while the Folder lives
  const std::string& user() const { return user_; }
  const std::string& folder() const { return folder_; }
  std::string Mailbox() const { return "user/" + user_ + "/" + folder_; }
  // Made by CreateUnpublishedFolder and not published yet: no record leads to it.
  bool unpublished() const { return unpublished_; }

  // A consistent view of the folder: header and every committed record.
  FolderSnapshot Snapshot();
  std::string MessagePath(uint32_t uid) const;
  // Opens a committed message read-only; invalid fd when it was expunged after the caller's
  // snapshot. A file that is missing while store.idx still lists its UID is damage, never
  // "expunged meanwhile": kCorrupt naming the mailbox, UID and path.
  UniqueFd OpenMessage(uint32_t uid) const;
  // The file alone, without that check (restore compares and repairs by itself).
  UniqueFd OpenMessageFile(uint32_t uid) const;

  std::unique_ptr<MessageWriter> NewMessage();
  // In a folder nobody can see yet (CreateUnpublishedFolder), a message whose UID is known is
  // written straight to its final name, saving a rename (a leftover of an interrupted restore
  // under that name is unlinked first, never truncated: it may be a hard link shared with other
  // mailboxes); elsewhere this is NewMessage().
  std::unique_ptr<MessageWriter> NewMessage(uint32_t known_uid);
  // The directory that holds (or will hold) message `uid`'s file, and the file's name in it: for
  // the *at(2) calls of a pass over many messages, which then skip the walk from the folder. The
  // directory is opened beneath the folder (no symlink followed) and kept open, one at a time,
  // while the Folder lives; kNotFound when it does not exist. One caller at a time.
  int MessageDirFd(uint32_t uid, std::string* name) const;
  // Hard-links an existing file (identical content, proven by the caller) as a staged message.
  // Returns nullopt when the link cannot be made (EMLINK, EXDEV, or the file was removed since
  // the caller proved it, e.g. a repository entry purged by `relink -d`): the caller writes a copy.
  std::optional<StagedMessage> StageLink(const std::string& existing_path, MessageMeta meta);
  // Makes staged messages visible, in order, under one exclusive lock. meta.uid == 0 takes the
  // next UID; a given UID must not be present already (throws kExists) and raises uidnext.
  // Returns the UIDs assigned. The batch's temporary files are consumed either way.
  std::vector<uint32_t> Commit(std::vector<StagedMessage>& batch);
  // Puts back the lost file of a message store.idx still lists (damage, §6.2): `staged` must
  // hold the recorded size and digest; it is renamed onto the message's name under the
  // exclusive lock if the file is still missing, or, with `damaged` (the stat of a file found
  // not to hold the recorded bytes), if that very file is still there. False (and the staged
  // file removed) when the record is gone or changed, or another file is there.
  bool RepairMissingFile(StagedMessage& staged, const struct stat* damaged = nullptr);
  // Discards staged messages that will not be committed.
  void Discard(std::vector<StagedMessage>& batch);

  void SetFlags(uint32_t uid, uint8_t flags, uint64_t user_flags);
  // The flags of many messages under one lock and one read of store.idx: a call per message
  // reads the whole index each time, quadratic in a folder whose every flag changed ("mark all
  // read" of a large INBOX before a migration's pass). A UID given twice takes its last change.
  // Throws kNotFound naming the first UID the index lacks, before anything is written. Returns
  // how many records changed.
  size_t SetFlags(const std::vector<FlagChange>& changes);
  void SetUserFlagNames(const std::vector<std::string>& names);
  // Raises uidnext to at least `uidnext` (restore keeps the source's next UID).
  void RaiseUidNext(uint32_t uidnext);
  // Removes messages: records go to store.exp, then the files are unlinked.
  void Expunge(const std::vector<uint32_t>& uids);

 private:
  friend class Store;
  friend class MessageWriter;
  Folder(Store* store, std::string user, std::string folder, std::string path, UniqueFd dir);
  class Lock;
  Store* store_;
  std::string user_, folder_, path_;
  UniqueFd dir_;
  bool unpublished_ = false;
  std::set<std::string> buckets_made_;  // unpublished folders: buckets created so far
  mutable std::string open_bucket_;  // MessageDirFd's directory: UIDs come in order, so one is enough
  mutable UniqueFd open_bucket_fd_;
  uint32_t known_uidnext_ = 0;  // the index's uidnext was at least this (it never decreases)
  bool swept_ = false;  // the temporaries of writers that are gone were removed (first Commit)
};

struct StoreOptions {
  Durability durability = Durability::kNone;
  // Told once why a user's write lock waits, when the caller of LockUserForWriting gave no
  // `on_wait` of its own: a command run by a person never waits without a word.
  std::function<void(const std::string&)> on_wait;
  // How long a folder's lock is waited for before giving up with kTempFail (store/dir_lock.h);
  // 0 = as long as it takes. deliver bounds it (an MTA retries later), and so do backup --to
  // and migrate (their server's session does not outlive their --timeout).
  int folder_lock_wait_seconds = 0;
  // A snapshot keeps up to this many records in memory and the rest of a larger folder's in a
  // temporary file ($TMPDIR), read back in slices (MessageList): ~2.8 MiB a folder at most.
  size_t snapshot_records_in_memory = 32768;
  // The command frees space (delete): on a filesystem too full to open the store, it may use the
  // store's reserve (docs/store-format.md §3, "The reserve").
  bool frees_space = false;
};

class Store {
 public:
  // Creates a new store (or adds partitions to an existing one) and opens it.
  static std::unique_ptr<Store> Init(const std::string& root, const std::vector<std::string>& partitions,
                                     StoreOptions options = {});
  // Opens an existing store; runs Berkeley DB recovery if a previous process died. kNotFound if absent.
  static std::unique_ptr<Store> Open(const std::string& root, StoreOptions options = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& root() const { return root_; }
  const std::string& store_id() const { return store_id_; }
  std::vector<std::string> Partitions() const;
  // Whether `name` is one of Partitions(), without listing them: false for an invalid name.
  bool HasPartition(std::string_view name) const;
  std::string PartitionPath(std::string_view partition) const;
  std::string DefaultPartition() const;
  Durability durability() const { return options_.durability; }
  // StoreOptions::on_wait: also told when a folder's lock is held for long (Folder).
  const std::function<void(const std::string&)>& on_wait() const { return options_.on_wait; }
  void set_durability(Durability d) { options_.durability = d; }
  int folder_lock_wait() const { return options_.folder_lock_wait_seconds; }
  void set_folder_lock_wait(int seconds) { options_.folder_lock_wait_seconds = seconds; }
  size_t snapshot_records_in_memory() const { return options_.snapshot_records_in_memory; }
  void set_snapshot_records_in_memory(size_t n) { options_.snapshot_records_in_memory = n; }

  // --- users ---
  std::optional<UserInfo> FindUser(std::string_view user);
  // Throws kInvalidArgument when `user` is marked moved to another host here: its mail lives
  // there, and `what` (a pull, an import) writing it here would split it between the two hosts.
  void RefuseIfMoved(std::string_view user, std::string_view what);
  // Creates the user (with an INBOX unless `with_inbox` is false, as restore does to keep the
  // archived UIDVALIDITY) and `status` (a migrate's copy is made on hold, never active for a
  // moment); returns the existing user unchanged if present.
  UserInfo CreateUser(std::string_view user, std::string_view partition = {}, bool with_inbox = true,
                      const UserStatus& status = {});
  // How long LockUserForWriting, and a status change waiting for a delivery gate, may wait. A tool run by an administrator waits as long as it
  // takes (and says why); a server session must not: its client may have given up, and the
  // server must stop in time (docs/transport.md §7).
  struct LockWait {
    std::function<void(const std::string&)> on_wait;  // told once, before waiting, why
    int timeout_seconds = 0;                           // 0: no limit; else kTempFail after that long
    std::function<bool()> cancelled;                   // asked every ~200 ms while waiting; true: kTempFail
    // LockUserForWriting: a migrate pass writing its own copy keeps UserStatus::untouched_copy;
    // any other writer clears it (durably) before it can write.
    bool keeps_untouched_copy = false;
  };
  // Changes the status under the user's delivery gate: once it returns, no delivery that saw
  // the old status is still appending (see LockUserForDelivery). A delivery holds the gate only
  // from its status check to its commit; one that is stuck meanwhile is waited for as `wait`
  // says (told once why; kTempFail naming the user after the timeout or on cancellation).
  void SetUserStatus(std::string_view user, const UserStatus& status);
  void SetUserStatus(std::string_view user, const UserStatus& status, const LockWait& wait);
  // SetUserStatus for many users at once (migrate's hold and switch of a whole group): takes
  // every listed user's delivery gate exclusively, in user-id order (so two callers with
  // overlapping lists cannot deadlock), then changes every status in ONE Berkeley DB
  // transaction. All or nothing: an unknown user throws kNoUser naming the first one (in list
  // order) and changes nobody. Same guarantee as SetUserStatus, for every user listed.
  // Duplicates are allowed; one descriptor per distinct user is held meanwhile.
  // With MovedUsers::kLeave, a user whose status is moved (to any host) when the transaction
  // reads it is left as it is: an administrator's bulk change must not undo a migration that
  // switched some of a group's users meanwhile. Returns each listed user with the status it had
  // in that transaction.
  enum class MovedUsers { kChange, kLeave };
  std::vector<std::pair<std::string, UserStatus>> SetUsersStatus(const std::vector<std::string>& users,
                                                                 const UserStatus& status,
                                                                 MovedUsers moved = MovedUsers::kChange);
  std::vector<std::pair<std::string, UserStatus>> SetUsersStatus(const std::vector<std::string>& users,
                                                                 const UserStatus& status, MovedUsers moved,
                                                                 const LockWait& wait);
  // Migrate's switch: takes every listed user's delivery gate exclusively (as SetUsersStatus),
  // checks that every one is still on `hold`, runs `between` (the destination's switch) while
  // the gates are held, then sets `status` in ONE transaction that checks `hold` again. A user
  // found in another state (an administrator gave it its service back during the hold: the
  // source may have accepted mail the final pass did not carry) throws kTempFail naming it,
  // before `between` runs, and changes nobody. No delivery and no status change can come in
  // between, since both need the gates.
  void SwitchHeldUsers(const std::vector<std::string>& users, const UserStatus& status,
                       const std::function<void()>& between, const LockWait& wait);
  // A delivery holds this (shared) from its status check until its message is committed, so a
  // status change (hold, moved) can never slip between the two: a migration that sets `hold`
  // and then copies the user cannot miss a message. flock(2) on <user dir>/user.lck.
  class UserGate {
   public:
    ~UserGate();
    UserGate(UserGate&&) = default;

   private:
    friend class Store;
    explicit UserGate(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
  };
  UserGate LockUserForDelivery(std::string_view user);
  // The same, waited for as `wait` says: a status change (a migration's hold or switch, `user
  // --status`) or a quota recount holds the gate exclusively, for moments unless it is stuck or
  // stopped; deliver gives up after its --lock-wait (kTempFail: the mail stays queued).
  UserGate LockUserForDelivery(std::string_view user, const LockWait& wait);
  // A bulk writer's claim on a user (restore and serve sessions, import, moveuser, rename, delete): exclusive
  // between processes (flock(2) on STORE/lock/<h1>/<h2>/<user>) and between threads of this
  // process; the kernel drops it when the holder dies, so a crashed holder never blocks anyone.
  // While it is held, no other process or thread can create a folder of that user
  // (CreateFolder throws kTempFail: deliver exits 75 and the MTA retries), so a mailbox being
  // restored unpublished is never re-initialised under its restorer. docs/store-format.md §6.9.
  class UserWriteLock {
   public:
    UserWriteLock(UserWriteLock&& other) noexcept;
    UserWriteLock& operator=(UserWriteLock&&) = delete;
    ~UserWriteLock();
    const std::string& user() const { return user_; }

   private:
    friend class Store;
    UserWriteLock(Store* store, std::string user, UniqueFd fd);
    Store* store_;
    std::string user_;
    UniqueFd fd_;
  };
  // Blocks while another thread or process holds `user`; `on_wait` (if set) is called once
  // before blocking, so a waiting tool can say why it waits. A thread holds at most what it
  // asked for: asking again for a user it holds throws kInvalidArgument.
  UserWriteLock LockUserForWriting(std::string_view user, const std::function<void(const std::string&)>& on_wait = {});
  UserWriteLock LockUserForWriting(std::string_view user, const LockWait& wait);
  // Whether this thread holds the user's write lock.
  bool HoldsUserWriteLock(std::string_view user);
  void SetQuotaLimit(std::string_view user, uint64_t limit);
  // Recomputes quota_used from the user's folders, under the user's delivery gate (exclusively,
  // waited for as `wait` says): a delivery commits and adds its bytes under the gate, so none
  // lands between the count and its write. Import, restore and pull counted without it and
  // could leave the usage off by a message delivered meanwhile (helper-145). Deliveries wait
  // while the gate is held, so a folder lock held for over a second is waited for with the gate
  // let go (as `wait` says), then the count starts again (helper-147). The caller must not hold
  // the gate. *was (if given): the usage the count replaced.
  uint64_t RecomputeQuota(std::string_view user, const LockWait& wait, uint64_t* was = nullptr);
  uint64_t RecomputeQuota(std::string_view user);  // the gate waited for without limit
  // RecomputeQuota while nothing can change the user's folders: under its write lock (restore,
  // import, pull, serve) as well, waited for as `wait` says. Usage left short by a writer killed
  // between its commit and its quota update (folder.cc) is made exact; one counted while such a
  // writer ran could be off by its batch. Keeps a migration's untouched copy so. Returns the
  // usage before and after.
  std::pair<uint64_t, uint64_t> RecountQuota(std::string_view user, const LockWait& wait);
  void AddQuotaUsed(std::string_view user, int64_t delta);
  // In user-id order. Users are read in batches and fn runs with no cursor open, so fn may use
  // the store (and takes as long as it likes) without holding the mboxlist.
  void ForEachUser(const std::function<void(const UserInfo&)>& fn);
  // Where a scan of the users stood at one batch read: every user id above `after` (every one
  // when from_start) up to `last` (to the end when `end`) was read, while the rename generation
  // went from renames_before to renames_after.
  struct UserScanBatch {
    std::string after;
    bool from_start = false;
    std::string last;
    bool end = false;
    uint64_t renames_before = 0;
    uint64_t renames_after = 0;
  };
  // ForEachUser telling on_batch about each batch before fn sees its users: with the rename
  // generation, a pass can tell afterwards whether a user renamed meanwhile was passed over.
  void ForEachUser(const std::function<void(const UserInfo&)>& fn,
                   const std::function<void(const UserScanBatch&)>& on_batch);
  // Raised by every user rename, in the rename's transaction (docs/store-format.md §3.3).
  uint64_t UserRenameGeneration();

  // --- folders ---
  // How much of a FolderInfo a lookup fills: the index's counters (uidnext, count, bytes,
  // highest_modseq, ...) cost an open, a lock and a read of the folder's store.idx each; the
  // mboxlist record alone (user, folder, partition, created, acl) costs none.
  enum class FolderDetail { kWithIndex, kRecordOnly };
  std::optional<FolderInfo> FindFolder(std::string_view user, std::string_view folder,
                                       FolderDetail detail = FolderDetail::kWithIndex);
  std::vector<FolderInfo> ListFolders(std::string_view user,
                                      FolderDetail detail = FolderDetail::kWithIndex);  // in name order
  // What the user's folders hold (their store.idx headers' byte counts), as of one moment as
  // ListFolders lists them, without holding the list.
  uint64_t FolderBytes(std::string_view user);
  void ForEachFolder(const std::function<void(const FolderInfo&)>& fn);  // every mailbox, name order
  std::unique_ptr<Folder> OpenFolder(std::string_view user, std::string_view folder);  // kNotFound
  // A hint for a pass about to snapshot the folder: its directory and store.idx are looked up
  // and the index's data asked for (posix_fadvise), without the mboxlist, the lock or a parse.
  // A folder gone meanwhile is no error; other errors throw, for the hint's caller to ignore.
  void HintFolderIndex(const FolderInfo& folder);
  // Creates the folder (and the user record, without INBOX, when missing); opens it if it
  // exists, whatever `uidvalidity` and `created` say. uidvalidity 0 = now. `created` 0 = now, or
  // the start of a backup begun since if later (`backup -d` carries a folder made since its date
  // whole); else that time (gen: folders as old as their account). Creating throws kTempFail
  // while another thread or process holds the user's write lock.
  std::unique_ptr<Folder> CreateFolder(std::string_view user, std::string_view folder,
                                       uint32_t uidvalidity = 0, int64_t created = 0);
  // A folder that stays invisible (no mboxlist record) until PublishFolder(): restore fills a
  // new mailbox completely before anyone can see it. The caller must hold the user's write lock
  // (LockUserForWriting) until it publishes or abandons the folder; kExists if the mailbox exists.
  // Leftovers of an unpublished folder (a killed restore) are overwritten by the next creation.
  // `user_flag_names` are the folder's keywords from the start (SetUserFlagNames, without a
  // second write of its index).
  std::unique_ptr<Folder> CreateUnpublishedFolder(std::string_view user, std::string_view folder,
                                                  uint32_t uidvalidity,
                                                  const std::vector<std::string>& user_flag_names = {});
  // Makes the folder visible; throws kExists if a folder of that name appeared meanwhile.
  // `origin` (restore: which stream made it) is kept in the record, FolderInfo::origin.
  // `coverage` likewise (FolderInfo::coverage).
  void PublishFolder(Folder& folder, std::string_view origin = {}, const FolderCoverage& coverage = {});
  // Replaces a folder's FolderInfo::coverage (nothing is written when it is the same already).
  void SetCoverage(std::string_view user, std::string_view folder, const FolderCoverage& coverage);
  void SetAcl(std::string_view user, std::string_view folder, std::string_view acl);

  // --- subscriptions and per-user data on shared folders ---
  void Subscribe(std::string_view user, std::string_view mailbox);
  void Unsubscribe(std::string_view user, std::string_view mailbox);
  std::vector<std::string> Subscriptions(std::string_view user);
  void SetPerUser(std::string_view mailbox, std::string_view reader, std::string_view data);
  std::vector<std::pair<std::string, std::string>> PerUser(std::string_view mailbox);

  // Checkpoints the environment so every .db file is complete on its own (db5.3_verify-able).
  void Checkpoint();
  // Whether the mboxlist environment is stuck: a checkpoint never finished because a process died
  // inside the environment holding its mutex, or another process has recovered the environment
  // since this one opened it (a call failed with DB_RUNRECOVERY). Every later call through this
  // Store would fail or wait; a new open (a new process) works. Any thread may ask.
  bool EnvironmentStuck() const;
  // Lets go of an environment another process recovered under this one (EnvironmentStuck, not
  // wedged) and opens it again, for a process that goes on after the failure (migrate puts its
  // held users back). Only while no other thread uses this Store. kTempFail when it is wedged;
  // after a failure the Store has no environment: only root() and its destruction remain.
  void ReopenEnvironment();

  class Db;  // the mboxlist environment (store/mboxlist.h)
  Db& db() { return *db_; }

 private:
  Store(std::string root, StoreOptions options);
  uint32_t NextUidValidity();
  bool FolderFromRecord(std::string_view key, std::string_view value, FolderInfo* info,
                        FolderDetail detail = FolderDetail::kWithIndex);
  bool ReadIndexHeaderUnlessDeleted(const std::string& dir, std::string_view key, FolderInfo* info);
  // ListFolders' listing, folder by folder (store.cc).
  void VisitFolders(std::string_view user, FolderDetail detail, const std::function<void(size_t)>& start,
                    const std::function<void(FolderInfo&&)>& each);
  UniqueFd OpenUserLockFile(std::string_view user);
  std::vector<UniqueFd> LockGates(const std::vector<std::string>& users, const LockWait& wait);
  // Shares the user's write lock for a folder creation by someone who does not hold it; an
  // invalid fd when this thread holds it; kTempFail when another holds it.
  UniqueFd ShareUserWriteLock(std::string_view user);
  void ReleaseUserWriteLock(const std::string& user);
  void ForgetUntouchedCopy(const std::string& user);
  // CreateFolder's creation once its user and partition are known, while the caller shares the
  // user's write lock. With `new_user`, that user's records go into the folder record's
  // transaction (CreateUser with its INBOX).
  struct NewUser;
  std::unique_ptr<Folder> MakeFolder(std::string_view user, const std::string& name, const std::string& partition,
                                     uint32_t uidvalidity, int64_t created, const NewUser* new_user);
  std::string root_;
  std::string store_id_;
  StoreOptions options_;
  TrustedRoot trusted_;  // no symlink below root_ is followed (util/fs.h)
  std::unique_ptr<Db> db_;
  std::mutex writers_mutex_;
  std::condition_variable writer_released_;
  std::map<std::string, std::thread::id, std::less<>> writers_;  // users write-locked in this process
};

}  // namespace storemove::store
