// Store: the store root, its partitions, and the mboxlist records (users, folders, quota, ...).
#include "store/clock_floor.h"
#include "store/store.h"
#include "store/repository_layout.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <set>
#include <thread>
#include <utility>

#include "store/index.h"
#include "store/mboxlist.h"
#include "store/names.h"
#include "util/bytes.h"
#include "util/error.h"
#include "util/interrupt.h"
#include "util/printable.h"
#include "util/user_name.h"
#include "util/wait_budget.h"
#include "store/dir_lock.h"

namespace storemove::store {

namespace {

// --- value encodings (docs/store-format.md §mboxlist) ---

class ValueReader {
 public:
  ValueReader(std::string_view v, std::string what) : v_(v), what_(std::move(what)) {}
  uint8_t U8() { Need(1); return static_cast<uint8_t>(v_[pos_++]); }
  uint16_t U16() { Need(2); auto r = GetU16(P()); pos_ += 2; return r; }
  uint32_t U32() { Need(4); auto r = GetU32(P()); pos_ += 4; return r; }
  uint64_t U64() { Need(8); auto r = GetU64(P()); pos_ += 8; return r; }
  std::string Str16() { size_t n = U16(); Need(n); std::string s(v_.substr(pos_, n)); pos_ += n; return s; }
  std::string Str32() { size_t n = U32(); Need(n); std::string s(v_.substr(pos_, n)); pos_ += n; return s; }
  bool AtEnd() const { return pos_ == v_.size(); }

 private:
  const uint8_t* P() const { return reinterpret_cast<const uint8_t*>(v_.data()) + pos_; }
  void Need(size_t n) {
    if (pos_ + n > v_.size()) Throw(Errc::kCorrupt, "mboxlist: truncated value for " + what_);
  }
  std::string_view v_;
  std::string what_;
  size_t pos_ = 0;
};

void AppendStr16(std::string* s, std::string_view v) {
  AppendU16(s, static_cast<uint16_t>(v.size()));
  s->append(v);
}
void AppendStr32(std::string* s, std::string_view v) {
  AppendU32(s, static_cast<uint32_t>(v.size()));
  s->append(v);
}

constexpr uint8_t kValueVersion = 1;
// user.db's flags byte (docs/store-format.md §3.1).
constexpr uint8_t kUserUntouchedCopy = 1;
constexpr uint8_t kUserHeldByPull = 2;
// folder.db key (outside the "user/" key space) of the last UIDVALIDITY handed out.
constexpr std::string_view kUidValidityKey = "#uidvalidity";
// folder.db key of the user rename generation (docs/store-format.md §3.3).
constexpr std::string_view kUserRenamesKey = "#user-renames";

uint64_t ReadUserRenames(Store::Db& db, DB_TXN* txn, bool for_update) {
  std::string v;
  if (!db.Get(db.folder(), txn, kUserRenamesKey, &v, for_update)) return 0;
  if (v.size() != 8) Throw(Errc::kCorrupt, "mboxlist: bad " + std::string(kUserRenamesKey) + " value");
  return GetU64(reinterpret_cast<const uint8_t*>(v.data()));
}

}  // namespace

std::string EncodeUser(const UserValue& u) {
  std::string s;
  AppendU8(&s, kValueVersion);
  AppendU8(&s, static_cast<uint8_t>(u.status.state));
  AppendStr16(&s, u.status.state == UserState::kMoved ? u.status.host : u.status.origin_store);
  AppendStr16(&s, u.partition);
  AppendU64(&s, static_cast<uint64_t>(u.created));
  const bool hold = u.status.state == UserState::kHold;
  const uint8_t flags = (hold && u.status.untouched_copy ? kUserUntouchedCopy : 0) |
                        (hold && u.status.held_by_pull ? kUserHeldByPull : 0);
  if (!u.renames.empty() || flags) {  // a flags byte needs the renames count before it (0 here)
    AppendU8(&s, static_cast<uint8_t>(u.renames.size() | (u.renames_truncated ? 0x80 : 0)));
    for (const UserRename& r : u.renames) {
      AppendU64(&s, r.generation);
      AppendStr16(&s, r.from);
    }
  }
  if (flags) AppendU8(&s, flags);
  return s;
}

// A new status over an old one: the origin store stays unless the new status names one or is a
// move (whose host takes its place), and unless the old one was a move (it had none).
static void ApplyStatus(UserValue* u, const UserStatus& status) {
  const bool keep_origin = status.state != UserState::kMoved && status.origin_store.empty() &&
                           u->status.state != UserState::kMoved;
  std::string origin = keep_origin ? std::move(u->status.origin_store) : std::string();
  u->status = status;  // untouched_copy as the new status says: a change by anyone else clears it
  if (keep_origin) u->status.origin_store = std::move(origin);
}

UserValue DecodeUser(std::string_view v, std::string_view user) {
  ValueReader r(v, "user " + std::string(user));
  if (r.U8() != kValueVersion) Throw(Errc::kCorrupt, "mboxlist: unknown user.db value version for " + std::string(user));
  UserValue u;
  uint8_t state = r.U8();
  if (state > 2) Throw(Errc::kCorrupt, "mboxlist: bad status for user " + std::string(user));
  u.status.state = static_cast<UserState>(state);
  (u.status.state == UserState::kMoved ? u.status.host : u.status.origin_store) = r.Str16();
  u.partition = r.Str16();
  u.created = static_cast<int64_t>(r.U64());
  if (!r.AtEnd()) {
    const uint8_t n = r.U8();
    u.renames_truncated = (n & 0x80) != 0;
    for (uint8_t i = 0; i < (n & 0x7f); ++i) {
      UserRename rename;
      rename.generation = r.U64();
      rename.from = r.Str16();
      u.renames.push_back(std::move(rename));
    }
    if (!r.AtEnd()) {
      const uint8_t flags = r.U8();
      u.status.untouched_copy = (flags & kUserUntouchedCopy) && u.status.state == UserState::kHold;
      u.status.held_by_pull = (flags & kUserHeldByPull) && u.status.state == UserState::kHold;
    }
  }
  return u;
}

uint64_t RaiseUserRenameGeneration(Store::Db& db, DB_TXN* txn) {
  uint64_t generation = ReadUserRenames(db, txn, true) + 1;
  std::string v;
  AppendU64(&v, generation);
  db.Put(db.folder(), txn, kUserRenamesKey, v);
  return generation;
}

std::string EncodeQuota(uint64_t limit, uint64_t used) {
  std::string s;
  AppendU8(&s, kValueVersion);
  AppendU64(&s, limit);
  AppendU64(&s, used);
  return s;
}

std::pair<uint64_t, uint64_t> DecodeQuota(std::string_view v, std::string_view user) {
  ValueReader r(v, "quota " + std::string(user));
  if (r.U8() != kValueVersion) Throw(Errc::kCorrupt, "mboxlist: unknown quota.db value version for " + std::string(user));
  uint64_t limit = r.U64();
  return {limit, r.U64()};
}

std::string EncodeFolder(const FolderValue& f) {
  std::string s;
  AppendU8(&s, kValueVersion);
  AppendU32(&s, f.uidvalidity);
  AppendU64(&s, static_cast<uint64_t>(f.created));
  AppendStr16(&s, f.partition);
  AppendStr32(&s, f.acl);
  if (!f.origin.empty() || !f.coverage.empty()) AppendStr16(&s, f.origin);
  if (!f.coverage.empty()) {
    AppendStr16(&s, f.coverage.store_id);
    AppendU32(&s, f.coverage.uidvalidity);
    AppendU64(&s, static_cast<uint64_t>(f.coverage.through));
  }
  return s;
}

FolderValue DecodeFolder(std::string_view v, std::string_view mailbox) {
  ValueReader r(v, "mailbox " + std::string(mailbox));
  if (r.U8() != kValueVersion) Throw(Errc::kCorrupt, "mboxlist: unknown folder.db value version for " + std::string(mailbox));
  FolderValue f;
  f.uidvalidity = r.U32();
  f.created = static_cast<int64_t>(r.U64());
  f.partition = r.Str16();
  f.acl = r.Str32();
  if (!r.AtEnd()) f.origin = r.Str16();
  if (!r.AtEnd()) {
    f.coverage.store_id = r.Str16();
    f.coverage.uidvalidity = r.U32();
    f.coverage.through = static_cast<int64_t>(r.U64());
  }
  return f;
}

namespace {

std::string MailboxKey(std::string_view user, std::string_view folder) {
  return "user/" + std::string(user) + "/" + std::string(folder);
}

}  // namespace

// IMAP's INBOX is case-insensitive; everything else is kept as given.
std::string NormalizeFolder(std::string_view folder) {
  std::string f(folder);
  size_t slash = f.find('/');
  std::string first = f.substr(0, slash);
  std::string upper = first;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper == "INBOX") f.replace(0, first.size(), "INBOX");
  return f;
}

std::vector<std::pair<std::string, std::string>> ParseAcl(std::string_view acl) {
  std::vector<std::string> words;
  size_t pos = 0;
  while (pos < acl.size()) {
    size_t end = acl.find(' ', pos);
    if (end == std::string_view::npos) end = acl.size();
    if (end > pos) words.emplace_back(acl.substr(pos, end - pos));
    pos = end + 1;
  }
  if (words.size() % 2) Throw(Errc::kInvalidArgument, "invalid ACL '" + ShownName(acl) + "': identifier/rights pairs expected");
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i < words.size(); i += 2) {
    // Identifiers become lright.db keys and rights are shown to IMAP clients: checked here, as
    // every name is, before they are stored.
    std::string_view id = words[i];
    if (id.starts_with('-')) id.remove_prefix(1);
    if (id.starts_with("group:")) id.remove_prefix(6);
    else if (id == "anyone" || id == "anonymous" || id == "authuser") id = "x";
    try {
      ValidateUserId(id);
    } catch (const Error& e) {
      Throw(Errc::kInvalidArgument, "invalid ACL identifier in '" + ShownName(acl) + "': " + e.what());
    }
    if (words[i + 1].find_first_not_of("lrswipkxteacd0123456789") != std::string::npos)
      Throw(Errc::kInvalidArgument, "invalid ACL rights '" + ShownName(words[i + 1]) + "' for " + ShownName(words[i]) +
                                        " (RFC 4314 letters lrswipkxteacd)");
    out.emplace_back(words[i], words[i + 1]);
  }
  return out;
}

void ValidateAcl(std::string_view acl) { ParseAcl(acl); }

bool IsUserFlagName(std::string_view name) {
  if (name.empty() || name.size() > index::kMaxUserFlagName) return false;
  for (unsigned char c : name)
    if (c <= 0x20 || c >= 0x7f || std::string_view("(){%*\"\\]").find(char(c)) != std::string_view::npos) return false;
  return true;
}

void ValidateUserFlagNames(const std::vector<std::string>& names) {
  if (names.size() > index::kMaxUserFlags)
    Throw(Errc::kInvalidArgument, std::to_string(names.size()) + " user flag names (at most " +
                                      std::to_string(index::kMaxUserFlags) + ")");
  std::set<std::string_view> seen;
  for (const std::string& name : names) {
    if (!IsUserFlagName(name))
      Throw(Errc::kInvalidArgument, "user flag name '" + ShownName(name) + "' is not an IMAP atom (RFC 3501 flag-keyword)");
    if (!seen.insert(name).second) Throw(Errc::kInvalidArgument, "user flag name '" + name + "' twice");
  }
}

namespace {

int64_t Now() { return static_cast<int64_t>(::time(nullptr)); }

// A command working in a store another user owns (the user its serve and deliveries run as)
// leaves directories, lock files and database logs of its own there, mode 0600/0700, that the
// owner cannot open: the owner's sessions then fail until somebody chowns them (security review
// #10). Refused before anything is made. The owner is the owner of the database environment
// (mboxlist/); root is refused as well where the top directory is another user's (for anyone
// else it may be root's: a mount point). helper-126: a top directory of root's let root into a
// store whose mboxlist/ was another user's; another user let in by an ACL was never refused.
// Partitions are not asked: one on a share that maps its owners (root_squash) would lock out
// root and the owner alike (helper-128). A read-only snapshot gets
// nothing written, so anyone who can read it may.
void RefuseAnotherUsersStore(const std::string& root) {
  const uid_t me = ::geteuid();
  struct stat st;
  if (::stat(root.c_str(), &st) != 0) return;
  std::vector<std::pair<std::string, uid_t>> owned;  // (what, its owner), the first one decides
  const std::string mboxlist = root + "/mboxlist";
  struct stat db;
  const bool has_db = ::stat(mboxlist.c_str(), &db) == 0;
  if (has_db) owned.emplace_back(mboxlist, db.st_uid);
  if (me == 0 && st.st_uid != 0) owned.emplace(owned.begin(), root, st.st_uid);
  const auto other = std::find_if(owned.begin(), owned.end(), [&](const auto& o) { return o.second != me; });
  if (other == owned.end()) return;
  struct statvfs fs;
  if (::statvfs(root.c_str(), &fs) == 0 && (fs.f_flag & ST_RDONLY)) return;
  const uid_t owner = other->second;
  const std::string login = LoginName(owner);
  const std::string as = login.empty() ? "'#" + std::to_string(owner) + "'" : login;
  const std::string whose = other->first == root ? "store " + root : "store " + root + ": " + other->first;
  Throw(Errc::kAuth, whose + " belongs to " + UserName(owner) + " and this command runs as " +
                         (me == 0 ? std::string("root") : UserName(me)) + ": what it made there (lock and user "
                         "directories, database logs) would be " + (me == 0 ? std::string("root's") : "this user's") +
                         ", which that user's serve and deliveries could not open. Run it as that user: sudo -u " +
                         as + " storemove ...");
}

// A store this user may not enter was told as missing ("no such directory", "not a message store
// ... run storemove init", "no database environment"), which sent administrators the wrong way
// once root was refused in other users' stores (helper-84).
void RefuseStoreThisUserCannotRead(const std::string& root) {
  for (const std::string& path : {root, root + "/mboxlist", root + "/partition"}) {
    if (::access(path.c_str(), R_OK | X_OK) == 0 || errno != EACCES) continue;
    struct stat st;
    const std::string owner = ::stat(path.c_str(), &st) == 0 ? " (it belongs to " + UserName(st.st_uid) + ")" : "";
    Throw(Errc::kAuth, "store " + root + ": " + path + " cannot be read by this user, " + UserName(::geteuid()) +
                           owner + ": run the command as the store's owner");
  }
}

}  // namespace

Store::Store(std::string root, StoreOptions options)
    : root_(std::move(root)), options_(options), trusted_(root_, /*store_layout=*/true) {}

Store::~Store() = default;

std::unique_ptr<Store> Store::Init(const std::string& root, const std::vector<std::string>& partitions,
                                   StoreOptions options) {
  std::vector<std::string> parts = partitions.empty() ? std::vector<std::string>{"primary"} : partitions;
  for (const auto& p : parts) ValidatePartitionName(p);
  RefuseAnotherUsersStore(root);
  MakeDirs(root);
  TrustedRoot trusted(root, /*store_layout=*/true);  // adding partitions to a store: no symlinks
  MakeDirs(root + "/config");
  MakeDirs(root + "/mboxlist", 0700);
  for (const auto& p : parts) {
    MakeDirs(root + "/partition/" + p + "/=user");
    CreateFlatRepositoryIfMissing(root + "/partition/" + p);
  }
  std::string id_path = root + "/config/store-id";
  if (!PathExists(id_path)) WriteFileAtomic(id_path, RandomToken() + RandomToken() + "\n");
  std::string groups = root + "/config/backup-groups.conf";
  if (!PathExists(groups))
    WriteFileAtomic(groups,
                    "# Backup groups: one NAME=REGEX per line (POSIX extended regex, full match on the user id).\n"
                    "# The predefined group 'user' holds every user in backup names (/primary/user); migrate\n"
                    "# moves only the groups defined here. Example:\n"
                    "# groupA=[a-l].*\n# groupB=[m-z].*\n# groupC=[0-9].*\n");
  std::unique_ptr<Store> store(new Store(root, options));
  store->db_ = std::make_unique<Db>(root + "/mboxlist", true);
  store->store_id_ = ReadFile(id_path);
  while (!store->store_id_.empty() && store->store_id_.back() == '\n') store->store_id_.pop_back();
  return store;
}

std::unique_ptr<Store> Store::Open(const std::string& root, StoreOptions options) {
  RefuseStoreThisUserCannotRead(root);
  if (!IsDirectory(root)) Throw(Errc::kNotFound, "store " + root + ": no such directory");
  if (!IsDirectory(root + "/mboxlist") || !IsDirectory(root + "/partition"))
    Throw(Errc::kNotFound, "store " + root + ": not a message store (no mboxlist/ or partition/; run storemove init)");
  RefuseAnotherUsersStore(root);
  std::unique_ptr<Store> store(new Store(root, options));
  store->db_ = std::make_unique<Db>(root + "/mboxlist", false, options.frees_space);
  std::string id_path = root + "/config/store-id";
  store->store_id_ = PathExists(id_path) ? ReadFile(id_path) : "";
  while (!store->store_id_.empty() && store->store_id_.back() == '\n') store->store_id_.pop_back();
  return store;
}

std::vector<std::string> Store::Partitions() const {
  std::vector<std::string> out;
  std::string dir = root_ + "/partition";
  DIR* d = ::opendir(dir.c_str());
  if (!d) ThrowErrno("opendir " + dir);
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (IsDirectory(dir + "/" + name + "/=user")) out.push_back(name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

bool Store::HasPartition(std::string_view name) const {
  return IsValidPartitionName(name) && IsDirectory(PartitionPath(name) + "/=user");
}

std::string Store::PartitionPath(std::string_view partition) const {
  ValidatePartitionName(partition);
  return root_ + "/partition/" + std::string(partition);
}

std::string Store::DefaultPartition() const {
  // Asked for every new user (a restore of many small users): "primary" is looked at first, the
  // partitions listed only without it.
  if (HasPartition("primary")) return "primary";
  std::vector<std::string> parts = Partitions();
  if (parts.empty()) Throw(Errc::kNotFound, "store " + root_ + ": no partitions");
  if (std::find(parts.begin(), parts.end(), "primary") != parts.end()) return "primary";
  return parts.front();
}

// --- users ---

void Store::RefuseIfMoved(std::string_view user, std::string_view what) {
  const std::optional<UserInfo> info = FindUser(user);
  if (!info || info->status.state != UserState::kMoved) return;
  const std::string name(user);
  Throw(Errc::kInvalidArgument, "user " + name + " is marked moved to " + info->status.host + " here: its mail lives "
                                    "there, and " + std::string(what) + " would split it between the two hosts (to "
                                    "bring the user back here: its mail there first, then storemove user " + name +
                                    " --status active --include-moved)");
}

std::optional<UserInfo> Store::FindUser(std::string_view user) {
  ValidateUserId(user);
  std::string uv, qv;
  bool found = false;
  db_->Txn([&](DB_TXN* txn) {
    found = db_->Get(db_->users(), txn, user, &uv);
    if (found && !db_->Get(db_->quota(), txn, user, &qv)) qv.clear();
  });
  if (!found) return std::nullopt;
  UserValue u = DecodeUser(uv, user);
  UserInfo info;
  info.user = std::string(user);
  info.partition = u.partition;
  info.status = u.status;
  info.created = u.created;
  info.renames = std::move(u.renames);
  info.renames_truncated = u.renames_truncated;
  if (!qv.empty()) std::tie(info.quota_limit, info.quota_used) = DecodeQuota(qv, user);
  return info;
}

namespace {

// Opens (creating) the user's gate file and locks it. The gate is held only from a delivery's
// status check to its commit, or for a status change: a wait is short unless a holder is stuck,
// and then it is bounded, cancellable and announced as `wait` says (Store::LockWait).
UniqueFd LockGate(const std::string& user_dir, std::string_view user, int how, const Store::LockWait& wait = {}) {
  MakeDirs(user_dir, 0700);
  const std::string path = user_dir + "/user.lck";
  UniqueFd fd = OpenFile(path, O_RDONLY | O_CREAT, 0600);
  if (::flock(fd.get(), how | LOCK_NB) == 0) return fd;
  if (errno != EWOULDBLOCK && errno != EINTR) ThrowErrno("lock " + path);
  const std::string name(user);
  if (!wait.on_wait && wait.timeout_seconds <= 0 && !wait.cancelled) {
    while (::flock(fd.get(), how) != 0) {
      if (errno != EINTR) ThrowErrno("lock " + path);
      ThrowIfInterrupted("waiting for the delivery gate " + path);
    }
    return fd;
  }
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      wait.timeout_seconds > 0 ? start + std::chrono::seconds(wait.timeout_seconds) : Clock::time_point::max();
  // Gates are held for moments (a delivery's commit): only a wait that lasts is announced, so a
  // hold under live delivery does not report every delivery it met.
  constexpr auto kAnnounceAfter = std::chrono::milliseconds(500);
  bool told = false;
  // A delivery (shared) waits only for an exclusive holder; anyone else may wait for either.
  const char* holder = how == LOCK_SH
                           ? "a status change: a migration's hold or switch, storemove user --status, or a quota recount"
                           : "a delivery between its status check and its commit, or a status change";
  // flock(2) has no timeout: asked again, first often, then every 200 ms (as LockUserForWriting).
  auto pause = std::chrono::milliseconds(5);
  while (::flock(fd.get(), how | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) ThrowErrno("lock " + path);
    ThrowIfInterrupted("waiting for the delivery gate " + path);
    if (wait.cancelled && wait.cancelled())
      Throw(Errc::kTempFail, "user " + name + ": gave up waiting for its delivery gate " + path + ": cancelled");
    if (!told && wait.on_wait && Clock::now() - start >= kAnnounceAfter) {
      told = true;
      wait.on_wait("waiting for user " + name + ": its delivery gate " + path + " is held (" + holder + ")");
    }
    if (Clock::now() >= deadline)
      Throw(Errc::kTempFail, "user " + name + ": its delivery gate " + path + " has been held for over " +
                                 std::to_string(wait.timeout_seconds) + " s (" + holder +
                                 ", stuck or stopped?); try again later");
    std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - Clock::now()));
    pause = std::min<std::chrono::milliseconds>(pause * 2, std::chrono::milliseconds(200));
  }
  // A wait that was said is said to be over, as a folder lock's (helper-148).
  if (told)
    wait.on_wait("waited " + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start).count()) +
                 " s for the delivery gate of user " + name + "; going on");
  return fd;
}

}  // namespace

// Every listed user's delivery gate, exclusively, in user-id order (duplicates once: a second
// flock of the same file through another descriptor would wait for ourselves); kNoUser naming the
// first unknown user (in list order) before any gate is taken.
std::vector<UniqueFd> Store::LockGates(const std::vector<std::string>& users, const LockWait& wait) {
  for (const std::string& user : users) ValidateUserId(user);
  std::set<std::string> distinct(users.begin(), users.end());
  std::map<std::string, std::string> partition;
  for (const std::string& user : users) {
    if (partition.count(user)) continue;
    std::optional<UserInfo> info = FindUser(user);
    if (!info) Throw(Errc::kNoUser, "no such user: " + user);
    partition[user] = info->partition;
  }
  EnsureDescriptors(distinct.size(), "holding the delivery gates of " + std::to_string(distinct.size()) + " users");
  std::vector<UniqueFd> gates;
  gates.reserve(distinct.size());
  // In user-id order, each waited for as `wait` says: the gates taken so far stay held (a
  // delivery to those users waits, then sees the new status), so nothing changes piecemeal.
  for (const std::string& user : distinct)
    gates.push_back(LockGate(PartitionPath(partition[user]) + "/" + FolderRelPath(user, "INBOX"), user, LOCK_EX, wait));
  return gates;
}

Store::UserGate::~UserGate() {
  if (fd_.valid()) ::flock(fd_.get(), LOCK_UN);
}

Store::UserGate Store::LockUserForDelivery(std::string_view user) { return LockUserForDelivery(user, LockWait{}); }

Store::UserGate Store::LockUserForDelivery(std::string_view user, const LockWait& wait) {
  std::optional<UserInfo> info = FindUser(user);
  if (!info) Throw(Errc::kNoUser, "no such user: " + std::string(user));
  return UserGate(LockGate(PartitionPath(info->partition) + "/" + FolderRelPath(user, "INBOX"), user, LOCK_SH, wait));
}

void Store::SetUserStatus(std::string_view user, const UserStatus& status) { SetUserStatus(user, status, LockWait{}); }

void Store::SetUserStatus(std::string_view user, const UserStatus& status, const LockWait& wait) {
  ValidateUserId(user);
  std::optional<UserInfo> info = FindUser(user);
  if (!info) Throw(Errc::kNoUser, "no such user: " + std::string(user));
  UniqueFd gate = LockGate(PartitionPath(info->partition) + "/" + FolderRelPath(user, "INBOX"), user, LOCK_EX, wait);
  db_->Txn(
      [&](DB_TXN* txn) {
        std::string v;
        if (!db_->Get(db_->users(), txn, user, &v, true)) Throw(Errc::kNoUser, "no such user: " + std::string(user));
        UserValue u = DecodeUser(v, user);
        ApplyStatus(&u, status);
        db_->Put(db_->users(), txn, user, EncodeUser(u));
      },
      true);
  ::flock(gate.get(), LOCK_UN);
}

std::vector<std::pair<std::string, UserStatus>> Store::SetUsersStatus(const std::vector<std::string>& users,
                                                                      const UserStatus& status, MovedUsers moved) {
  return SetUsersStatus(users, status, moved, LockWait{});
}

std::vector<std::pair<std::string, UserStatus>> Store::SetUsersStatus(const std::vector<std::string>& users,
                                                                      const UserStatus& status, MovedUsers moved,
                                                                      const LockWait& wait) {
  std::vector<UniqueFd> gates = LockGates(users, wait);
  std::vector<std::pair<std::string, UserStatus>> before;
  db_->Txn(
      [&](DB_TXN* txn) {
        before.clear();  // the transaction may run again after a deadlock
        // Re-checked in list order inside the transaction: a user deleted meanwhile aborts it
        // before anything is written, so the first unknown user is named and nobody changes.
        std::vector<std::pair<const std::string*, UserValue>> changed;
        changed.reserve(gates.size());
        for (const std::string& user : users) {
          std::string v;
          if (!db_->Get(db_->users(), txn, user, &v, true)) Throw(Errc::kNoUser, "no such user: " + user);
          changed.emplace_back(&user, DecodeUser(v, user));
          before.emplace_back(user, changed.back().second.status);
        }
        for (auto& [user, value] : changed) {
          if (moved == MovedUsers::kLeave && value.status.state == UserState::kMoved) continue;
          ApplyStatus(&value, status);
          db_->Put(db_->users(), txn, *user, EncodeUser(value));
        }
      },
      true);
  for (UniqueFd& gate : gates) ::flock(gate.get(), LOCK_UN);
  return before;
}

void Store::SwitchHeldUsers(const std::vector<std::string>& users, const UserStatus& status,
                            const std::function<void()>& between, const LockWait& wait) {
  std::vector<UniqueFd> gates = LockGates(users, wait);
  // Nobody can change a status without the gates: what this reads stays true until they go
  // (and the transaction below reads it again).
  auto refuse = [&](const std::string& user, const UserStatus& now) {
    Throw(Errc::kTempFail, "user " + user + " is no longer on hold (" + now.ToString() +
                               ": its status was changed during the hold); not switched, since the source may "
                               "have accepted mail the final pass did not carry; rerun");
  };
  for (const std::string& user : users) {
    std::optional<UserInfo> info = FindUser(user);
    if (!info) Throw(Errc::kNoUser, "no such user: " + user);
    if (info->status.state != UserState::kHold) refuse(user, info->status);
  }
  std::optional<std::pair<std::string, UserStatus>> changed;
  if (between) between();
  db_->Txn(
      [&](DB_TXN* txn) {
        changed.reset();  // the transaction may run again after a deadlock
        std::vector<std::pair<const std::string*, UserValue>> values;
        for (const std::string& user : users) {
          std::string v;
          if (!db_->Get(db_->users(), txn, user, &v, true)) Throw(Errc::kNoUser, "no such user: " + user);
          values.emplace_back(&user, DecodeUser(v, user));
          if (values.back().second.status.state != UserState::kHold) {
            changed.emplace(user, values.back().second.status);
            return;  // nothing written: the transaction commits no change
          }
        }
        for (auto& [user, value] : values) {
          ApplyStatus(&value, status);
          db_->Put(db_->users(), txn, *user, EncodeUser(value));
        }
      },
      true);
  if (changed) refuse(changed->first, changed->second);
  for (UniqueFd& gate : gates) ::flock(gate.get(), LOCK_UN);
}

// --- the per-user write lock (docs/store-format.md §6.9) ---

Store::UserWriteLock::UserWriteLock(Store* store, std::string user, UniqueFd fd)
    : store_(store), user_(std::move(user)), fd_(std::move(fd)) {}

Store::UserWriteLock::UserWriteLock(UserWriteLock&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)), user_(std::move(other.user_)), fd_(std::move(other.fd_)) {}

Store::UserWriteLock::~UserWriteLock() {
  if (!store_) return;
  fd_.reset();  // closing the only descriptor drops the flock
  store_->ReleaseUserWriteLock(user_);
}

void Store::ReleaseUserWriteLock(const std::string& user) {
  {
    std::lock_guard<std::mutex> lock(writers_mutex_);
    writers_.erase(user);
  }
  writer_released_.notify_all();
}

UniqueFd Store::OpenUserLockFile(std::string_view user) {
  // Outside the partitions: the lock must not depend on the user existing, on its partition
  // (a move changes it) or on its directory (a delete removes it).
  const std::string dir = root_ + "/lock/" + HashDir(user);
  MakeDirs(dir, 0700);
  return OpenFile(dir + "/" + std::string(user), O_RDONLY | O_CREAT, 0600);
}

bool Store::HoldsUserWriteLock(std::string_view user) {
  std::lock_guard<std::mutex> lock(writers_mutex_);
  auto it = writers_.find(user);
  return it != writers_.end() && it->second == std::this_thread::get_id();
}

Store::UserWriteLock Store::LockUserForWriting(std::string_view user,
                                               const std::function<void(const std::string&)>& on_wait) {
  return LockUserForWriting(user, LockWait{on_wait, 0, {}});
}

Store::UserWriteLock Store::LockUserForWriting(std::string_view user, const LockWait& wait) {
  ValidateUserId(user);
  const std::string name(user);
  bool told = false;
  const std::function<void(const std::string&)>& on_wait = wait.on_wait ? wait.on_wait : options_.on_wait;
  using Clock = std::chrono::steady_clock;
  const Clock::time_point asked = Clock::now();
  auto tell = [&](const std::string& why) {
    if (on_wait && !told) on_wait("waiting for user " + name + ": " + why);
    told = true;
  };
  // A wait that was said is said to be over (helper-66: a log showed the wait, then nothing).
  auto tell_over = [&] {
    if (on_wait && told)
      on_wait("waited " + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - asked).count()) +
              " s for user " + name + "; going on");
  };
  const bool bounded = wait.timeout_seconds > 0 || wait.cancelled;
  const Clock::time_point deadline =
      wait.timeout_seconds > 0 ? Clock::now() + std::chrono::seconds(wait.timeout_seconds) : Clock::time_point::max();
  // Between two looks at the clock and at `cancelled` while a bounded wait goes on.
  constexpr auto kSlice = std::chrono::milliseconds(200);
  auto give_up_if_due = [&](const char* who) {
    if (wait.cancelled && wait.cancelled())
      Throw(Errc::kTempFail, "user " + name + ": gave up waiting for " + who + " writing it: cancelled");
    if (Clock::now() >= deadline)
      Throw(Errc::kTempFail, "user " + name + ": " + who + " has been writing it for over " +
                                 std::to_string(wait.timeout_seconds) + " s; try again later");
  };
  {
    std::unique_lock<std::mutex> lock(writers_mutex_);
    auto it = writers_.find(name);
    if (it != writers_.end() && it->second == std::this_thread::get_id())
      Throw(Errc::kInvalidArgument, "user " + name + " is already write-locked by this thread");
    if (it != writers_.end()) tell("another session of this process is writing it");
    auto free = [&] { return !writers_.count(name); };
    if (!bounded) {
      writer_released_.wait(lock, free);
    } else {
      while (!writer_released_.wait_for(lock, kSlice, free)) give_up_if_due("another session of this process");
    }
    writers_.emplace(name, std::this_thread::get_id());
  }
  try {
    UniqueFd fd = OpenUserLockFile(name);
    const std::string lock_path = root_ + "/lock/" + HashDir(name) + "/" + name;  // for messages
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) ThrowErrno("lock " + lock_path);
      tell("another storemove process is writing it (restore, serve, import, moveuser, rename or delete)");
      if (!bounded) {
        while (::flock(fd.get(), LOCK_EX) != 0) {
          if (errno != EINTR) ThrowErrno("lock " + lock_path);
          ThrowIfInterrupted("waiting for user " + name);
        }
      } else {
        // flock(2) has no timeout: a bounded wait asks again, first often, then every slice.
        auto pause = std::chrono::milliseconds(5);
        while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
          if (errno != EWOULDBLOCK && errno != EINTR) ThrowErrno("lock " + lock_path);
          ThrowIfInterrupted("waiting for user " + name);
          give_up_if_due("another storemove process");
          std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - Clock::now()));
          pause = std::min<std::chrono::milliseconds>(pause * 2, kSlice);
        }
      }
    }
    tell_over();
    if (!wait.keeps_untouched_copy) ForgetUntouchedCopy(name);  // under the lock, before any write
    return UserWriteLock(this, name, std::move(fd));
  } catch (...) {
    ReleaseUserWriteLock(name);
    throw;
  }
}

// A writer other than its migrate's passes is about to write to a held copy: the copy may from
// now on hold mail of its own, which no pass may replace (helper-61: an import into a held copy
// was deleted with the folder the source had re-created). Durable before the writer writes.
void Store::ForgetUntouchedCopy(const std::string& user) {
  std::string v;
  bool found = false;
  db_->Txn([&](DB_TXN* txn) { found = db_->Get(db_->users(), txn, user, &v); });
  if (!found || !DecodeUser(v, user).status.untouched_copy) return;
  db_->Txn(
      [&](DB_TXN* txn) {
        std::string current;
        if (!db_->Get(db_->users(), txn, user, &current, true)) return;
        UserValue u = DecodeUser(current, user);
        if (!u.status.untouched_copy) return;
        u.status.untouched_copy = false;
        db_->Put(db_->users(), txn, user, EncodeUser(u));
      },
      true);
}

UniqueFd Store::ShareUserWriteLock(std::string_view user) {
  const std::string busy = "user " + std::string(user) +
                           " is being written by another storemove session (restore, serve, import, moveuser, rename or delete); "
                           "try again later";
  {
    std::lock_guard<std::mutex> lock(writers_mutex_);
    auto it = writers_.find(user);
    if (it != writers_.end() && it->second == std::this_thread::get_id()) return UniqueFd();
    if (it != writers_.end()) Throw(Errc::kTempFail, busy);
  }
  UniqueFd fd = OpenUserLockFile(user);
  // Never waits: a delivery must not sit behind a whole restore; the MTA retries (exit 75).
  while (::flock(fd.get(), LOCK_SH | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) Throw(Errc::kTempFail, busy);
    if (errno != EINTR) ThrowErrno("lock " + root_ + "/lock/" + HashDir(user) + "/" + std::string(user));
  }
  return fd;
}

void Store::SetQuotaLimit(std::string_view user, uint64_t limit) {
  ValidateUserId(user);
  db_->Txn([&](DB_TXN* txn) {
    std::string v;
    if (!db_->Get(db_->users(), txn, user, &v)) Throw(Errc::kNoUser, "no such user: " + std::string(user));
    uint64_t used = 0;
    if (db_->Get(db_->quota(), txn, user, &v, true)) used = DecodeQuota(v, user).second;
    db_->Put(db_->quota(), txn, user, EncodeQuota(limit, used));
  });
}

namespace {
void AddQuotaUsedIn(Store::Db& db, DB_TXN* txn, std::string_view user, int64_t delta) {
  std::string v;
  uint64_t limit = 0, used = 0;
  if (db.Get(db.quota(), txn, user, &v, true)) std::tie(limit, used) = DecodeQuota(v, user);
  used = delta < 0 && uint64_t(-delta) > used ? 0 : used + static_cast<uint64_t>(delta);
  db.Put(db.quota(), txn, user, EncodeQuota(limit, used));
}
}  // namespace

void Store::AddQuotaUsed(std::string_view user, int64_t delta) {
  if (delta == 0) return;
  db_->Txn([&](DB_TXN* txn) { AddQuotaUsedIn(*db_, txn, user, delta); });
}

namespace {
// RecomputeQuota's own bound on a folder lock while it lists the user's folders, for this thread
// only: serve's sessions share one Store, whose setting another session must not see changed
// (helper-147). -1: none (the store's).
thread_local int tls_listing_folder_wait = -1;

struct ListingFolderWait {
  explicit ListingFolderWait(int seconds) : was(tls_listing_folder_wait) { tls_listing_folder_wait = seconds; }
  ~ListingFolderWait() { tls_listing_folder_wait = was; }
  int was;
};
}  // namespace

uint64_t Store::RecomputeQuota(std::string_view user) {
  // Without limit, but never in silence (pull, a folder delete): a wait that lasts is said, as
  // the store's folder-lock waits are (helper-147 #3).
  LockWait wait;
  wait.on_wait = options_.on_wait;
  return RecomputeQuota(user, wait);
}

namespace {
// What is left of `wait`'s timeout since `start` (a second at least: asked once more), so that
// the waits of one call share its budget rather than each taking all of it (helper-145).
Store::LockWait WaitLeft(const Store::LockWait& wait, std::chrono::steady_clock::time_point start) {
  Store::LockWait left = wait;
  left.timeout_seconds = SecondsLeft(wait.timeout_seconds, std::chrono::steady_clock::now() - start);
  return left;
}
}  // namespace

uint64_t Store::RecomputeQuota(std::string_view user, const LockWait& wait, uint64_t* was) {
  // Deliveries wait on the gate while the folders are counted, so under it a folder lock is
  // waited for a second at most. One held longer (a rename copying the folder, a stopped
  // process) is waited for with the gate let go, as `wait` says, and the count starts again:
  // holding the gate meanwhile stopped every delivery to the user (helper-147).
  constexpr int kAttempts = 20;
  const auto start = std::chrono::steady_clock::now();
  uint64_t used = 0;
  std::vector<UniqueFd> gate;
  for (int attempt = 1;; ++attempt) {
    gate = LockGates({std::string(user)}, WaitLeft(wait, start));
    try {
      ListingFolderWait briefly(1);
      used = FolderBytes(user);
      break;  // the gate is still held: no delivery commits before the usage is written
    } catch (const Error& e) {
      if (e.code() != Errc::kTempFail || attempt == kAttempts) throw;
    }
    gate.clear();
    ListingFolderWait as_asked(wait.timeout_seconds > 0 ? WaitLeft(wait, start).timeout_seconds
                                                        : options_.folder_lock_wait_seconds);
    ListFolders(user);  // waits for the held lock; throws as the caller's wait says
  }
  db_->Txn([&](DB_TXN* txn) {
    std::string v;
    uint64_t limit = 0;
    uint64_t before = 0;
    if (db_->Get(db_->quota(), txn, user, &v, true)) std::tie(limit, before) = DecodeQuota(v, user);
    if (was) *was = before;
    db_->Put(db_->quota(), txn, user, EncodeQuota(limit, used));
  });
  return used;
}

std::pair<uint64_t, uint64_t> Store::RecountQuota(std::string_view user, const LockWait& wait) {
  // It writes no mail: a migration's untouched copy stays one (helper-145: the next pass refused
  // its folders).
  const auto start = std::chrono::steady_clock::now();
  LockWait keeping = wait;
  keeping.keeps_untouched_copy = true;
  UserWriteLock writers = LockUserForWriting(user, keeping);  // first, as restore takes both
  if (!FindUser(user)) Throw(Errc::kNoUser, "no such user: " + std::string(user));
  uint64_t was = 0;
  const uint64_t now = RecomputeQuota(user, WaitLeft(wait, start), &was);
  return {was, now};
}

void Store::ForEachUser(const std::function<void(const UserInfo&)>& fn) { ForEachUser(fn, {}); }

uint64_t Store::UserRenameGeneration() {
  uint64_t generation = 0;
  db_->Txn([&](DB_TXN* txn) { generation = ReadUserRenames(*db_, txn, false); });
  return generation;
}

void Store::ForEachUser(const std::function<void(const UserInfo&)>& fn,
                        const std::function<void(const UserScanBatch&)>& on_batch) {
  Db::BatchHooks hooks;
  UserScanBatch batch;
  if (on_batch) {
    hooks.before_read = [&] { batch.renames_before = UserRenameGeneration(); };
    hooks.after_read = [&](std::string_view after, bool from_start, std::string_view last, bool end) {
      batch.renames_after = UserRenameGeneration();
      batch.after = after;
      batch.from_start = from_start;
      batch.last = last;
      batch.end = end;
      on_batch(batch);
    };
  }
  db_->Scan(db_->users(), "", [&](std::string_view key, std::string_view value) {
    UserValue u = DecodeUser(value, key);
    UserInfo info;
    info.user = std::string(key);
    info.partition = u.partition;
    info.status = u.status;
    info.created = u.created;
    info.renames = std::move(u.renames);
    info.renames_truncated = u.renames_truncated;
    std::string qv;
    db_->Txn([&](DB_TXN* txn) {
      if (!db_->Get(db_->quota(), txn, key, &qv)) qv.clear();
    });
    if (!qv.empty()) std::tie(info.quota_limit, info.quota_used) = DecodeQuota(qv, key);
    fn(info);
    return true;
  }, hooks);
}

// --- folders ---

namespace {

// Fills the store.idx part of a FolderInfo (under the folder's shared lock).
void ReadIndexHeader(const std::string& dir, FolderInfo* info, const std::function<void(const std::string&)>& on_wait,
                     int timeout_seconds) {
  UniqueFd dfd = OpenFile(dir, O_RDONLY | O_DIRECTORY);
  LockFolderDirectory(dfd.get(), LOCK_SH, dir, on_wait, timeout_seconds);
  index::Contents c = index::ReadFolderIndex(dfd.get(), dir, info->Mailbox(), false);
  info->uidvalidity = c.header.uidvalidity;
  info->uidnext = c.header.uidnext;
  info->count = c.header.count;
  info->bytes = c.header.bytes;
  info->last_append = c.header.last_append;
  info->highest_modseq = c.header.highest_modseq;
  info->user_flag_names = std::move(c.user_flag_names);
}

}  // namespace

// A listing reads the record, then the index: a folder deleted or moved in between is skipped
// (its record is gone) rather than reported as damaged.
bool Store::ReadIndexHeaderUnlessDeleted(const std::string& dir, std::string_view key, FolderInfo* info) {
  const int folder_wait = tls_listing_folder_wait >= 0 ? tls_listing_folder_wait : options_.folder_lock_wait_seconds;
  for (int attempt = 1;; ++attempt) {
    try {
      ReadIndexHeader(dir, info, options_.on_wait, folder_wait);
      return true;
    } catch (const Error& e) {
      if (e.code() != Errc::kCorrupt && e.code() != Errc::kNotFound) throw;
      std::string v;
      bool still = false;
      db_->Txn([&](DB_TXN* txn) { still = db_->Get(db_->folder(), txn, key, &v); });
      if (!still || DecodeFolder(v, key).partition != info->partition) return false;
      // A folder renamed away and back while it was read has its index again; damage does not.
      if (attempt == 3) throw;
    }
  }
}

std::optional<FolderInfo> Store::FindFolder(std::string_view user, std::string_view folder, FolderDetail detail) {
  ValidateUserId(user);
  ValidateStoredFolderName(folder);
  std::string name = NormalizeFolder(folder);
  std::string key = MailboxKey(user, name), v;
  // A move to another partition commits the record before it removes the old index: an index
  // gone under a record read before the commit (ReadIndexHeaderUnlessDeleted: false when the
  // record is gone or names another partition now) is read again where the record now says.
  // Only a record that is gone means no such folder (a deliver's 66, which an MTA bounces).
  for (int reads = 0;; ++reads) {
    bool found = false;
    db_->Txn([&](DB_TXN* txn) { found = db_->Get(db_->folder(), txn, key, &v); });
    if (!found) return std::nullopt;
    FolderValue fv = DecodeFolder(v, key);
    FolderInfo info;
    info.user = std::string(user);
    info.folder = name;
    info.partition = fv.partition;
    info.created = fv.created;
    info.acl = fv.acl;
    info.origin = fv.origin;
  info.coverage = fv.coverage;
    if (detail == FolderDetail::kRecordOnly) return info;
    try {
      if (ReadIndexHeaderUnlessDeleted(PartitionPath(fv.partition) + "/" + FolderRelPath(user, name), key, &info))
        return info;
    } catch (const Error& e) {
      // Moved away and back while it was read (the record the same again) looks like a missing
      // index: read again; damage stays damage after every read.
      if ((e.code() != Errc::kCorrupt && e.code() != Errc::kNotFound) || reads >= 100) throw;
      continue;
    }
    if (reads >= 100) Throw(Errc::kTempFail, "mailbox " + key + " keeps moving between partitions; try again");
  }
}

// The FolderInfo of a folder.db record; false when the folder vanished while it was read.
bool Store::FolderFromRecord(std::string_view key, std::string_view value, FolderInfo* info, FolderDetail detail) {
  auto [user, folder] = ParseStoredMailboxName(key);
  FolderValue fv = DecodeFolder(value, key);
  info->user = user;
  info->folder = folder;
  info->partition = fv.partition;
  info->created = fv.created;
  info->acl = fv.acl;
  info->origin = fv.origin;
  info->coverage = fv.coverage;
  if (detail == FolderDetail::kRecordOnly) return true;
  return ReadIndexHeaderUnlessDeleted(PartitionPath(fv.partition) + "/" + FolderRelPath(user, folder), key, info);
}

// A user's folders as of one moment. The records are read in one transaction, so a rename
// commits wholly before or after the listing (a cursor that let go of each record could pass
// a folder's new name before the rename and its old one after: neither listed). An index gone
// from where its record led is a folder moved to another partition since (read where it is now),
// or renamed or deleted: then the user is listed again, since a new name may be missing.
// `start` is called with the number of folders before each listing (again when one is listed
// again), `each` with every folder of it. Each record is let go of once its folder is made, so
// a user of many folders is not held twice over (helper-162: ~1 KiB a folder in all).
void Store::VisitFolders(std::string_view user, FolderDetail detail, const std::function<void(size_t)>& start,
                         const std::function<void(FolderInfo&&)>& each) {
  ValidateUserId(user);
  const std::string prefix = "user/" + std::string(user) + "/";
  constexpr int kListings = 8;
  for (int listing = 1;; ++listing) {
    std::vector<std::pair<std::string, std::string>> records;
    db_->Txn([&](DB_TXN* txn) { records = db_->ReadRange(db_->folder(), txn, prefix); });
    start(records.size());
    bool gone = false;
    for (auto& record : records) {
      FolderInfo info;
      if (FolderFromRecord(record.first, record.second, &info, detail)) {
        each(std::move(info));
      } else if (std::optional<FolderInfo> now = FindFolder(user, info.folder, detail)) {
        each(std::move(*now));
      } else {
        gone = true;
      }
      std::pair<std::string, std::string>().swap(record);
    }
    if (!gone) return;
    if (listing == kListings)
      Throw(Errc::kTempFail, "the folders of user " + std::string(user) + " kept being renamed while listed (" +
                                 std::to_string(kListings) + " times); run again");
  }
}

std::vector<FolderInfo> Store::ListFolders(std::string_view user, FolderDetail detail) {
  std::vector<FolderInfo> out;
  VisitFolders(
      user, detail,
      [&](size_t folders) {
        out.clear();
        out.reserve(folders);
      },
      [&](FolderInfo&& info) { out.push_back(std::move(info)); });
  return out;
}

uint64_t Store::FolderBytes(std::string_view user) {
  uint64_t bytes = 0;
  VisitFolders(
      user, FolderDetail::kWithIndex, [&](size_t) { bytes = 0; }, [&](FolderInfo&& info) { bytes += info.bytes; });
  return bytes;
}

// User by user, each listed as ListFolders lists it; a user's folders are looked for after the
// last user's range ('0' follows '/'), so a user renamed meanwhile may be passed over or met
// twice (UserRenameGeneration tells).
void Store::ForEachFolder(const std::function<void(const FolderInfo&)>& fn) {
  std::string from = "user/";
  while (std::optional<std::string> key = db_->FirstKeyFrom(db_->folder(), from, "user/")) {
    const std::string user = ParseStoredMailboxName(*key).first;
    for (const FolderInfo& info : ListFolders(user)) fn(info);
    from = "user/" + user + "0";
  }
}

std::unique_ptr<Folder> Store::OpenFolder(std::string_view user, std::string_view folder) {
  ValidateUserId(user);
  ValidateStoredFolderName(folder);
  std::string name = NormalizeFolder(folder);
  std::string key = MailboxKey(user, name), v;
  bool found = false;
  db_->Txn([&](DB_TXN* txn) { found = db_->Get(db_->folder(), txn, key, &v); });
  if (!found) Throw(Errc::kNotFound, "no such mailbox: " + key);
  FolderValue fv = DecodeFolder(v, key);
  std::string path = PartitionPath(fv.partition) + "/" + FolderRelPath(user, name);
  UniqueFd dir = TryOpenAt(AT_FDCWD, path, O_RDONLY | O_DIRECTORY, 0, path);
  if (!dir.valid()) {
    // Renamed, moved or deleted between the record and its directory: no such mailbox (any
    // more). A directory missing where the record still leads is damage.
    std::string now;
    bool still = false;
    db_->Txn([&](DB_TXN* txn) { still = db_->Get(db_->folder(), txn, key, &now); });
    if (!still || DecodeFolder(now, key).partition != fv.partition) Throw(Errc::kNotFound, "no such mailbox: " + key);
    dir = TryOpenAt(AT_FDCWD, path, O_RDONLY | O_DIRECTORY, 0, path);  // renamed away and back meanwhile
    if (!dir.valid()) Throw(Errc::kCorrupt, "mailbox " + key + ": directory missing at " + path);
  }
  return std::unique_ptr<Folder>(new Folder(this, std::string(user), name, path, std::move(dir)));
}

void Store::HintFolderIndex(const FolderInfo& f) {
  ValidateUserId(f.user);  // the names OpenFolder would accept, no other
  ValidateStoredFolderName(f.folder);
  const std::string path = PartitionPath(f.partition) + "/" + FolderRelPath(f.user, NormalizeFolder(f.folder));
  UniqueFd idx = TryOpenAt(AT_FDCWD, path + "/store.idx", O_RDONLY, 0, path + "/store.idx");
  if (idx.valid()) ::posix_fadvise(idx.get(), 0, 0, POSIX_FADV_WILLNEED);
}

namespace {

// Writes a fresh, empty store.idx and store.exp into the folder directory `dir` at `path`
// (overwriting leftovers).
// `created`: for a new folder, now but not before the start of a backup that has begun
// (store/clock_floor.h), so that a later `backup -d` of that start carries it whole.
index::Header WriteEmptyFolderFiles(int dir, const std::string& path, uint32_t uidvalidity, bool sync,
                                    int64_t created, const std::vector<std::string>& user_flag_names = {}) {
  index::Contents c;
  c.header.uidvalidity = uidvalidity ? uidvalidity : static_cast<uint32_t>(std::max<int64_t>(Now(), 1));
  c.header.created = created;
  c.user_flag_names = user_flag_names;  // store.idx only: store.exp's records keep their own bits
  index::WriteNewAt(dir, "store.idx", c, sync, path + "/store.idx");
  index::Contents exp;
  exp.header = c.header;
  index::WriteNewAt(dir, "store.exp", exp, sync, path + "/store.exp");
  return c.header;
}

struct DirLock {
  DirLock(int fd, const std::string& path, const std::function<void(const std::string&)>& on_wait, int timeout_seconds)
      : fd(fd) {
    LockFolderDirectory(fd, LOCK_EX, path, on_wait, timeout_seconds);
  }
  ~DirLock() { ::flock(fd, LOCK_UN); }
  int fd;
};

}  // namespace

std::unique_ptr<Folder> Store::CreateFolder(std::string_view user, std::string_view folder, uint32_t uidvalidity,
                                           int64_t created) {
  ValidateUserId(user);
  ValidateFolderName(folder);
  std::string name = NormalizeFolder(folder);
  std::optional<UserInfo> info = FindUser(user);
  if (!info) info = CreateUser(user, {}, false);
  std::string key = MailboxKey(user, name), v;
  bool found = false;
  db_->Txn([&](DB_TXN* txn) { found = db_->Get(db_->folder(), txn, key, &v); });
  if (found) return OpenFolder(user, name);

  // Someone building this user's mailboxes unpublished (restore) may be filling this very
  // directory: create only while no such writer runs, and keep one from starting meanwhile.
  UniqueFd shared = ShareUserWriteLock(user);
  return MakeFolder(user, name, info->partition, uidvalidity, created, nullptr);
}

struct Store::NewUser {
  std::string_view user;
  const UserValue& value;
};

std::unique_ptr<Folder> Store::MakeFolder(std::string_view user, const std::string& name, const std::string& partition,
                                          uint32_t uidvalidity, int64_t created, const NewUser* new_user) {
  const std::string key = MailboxKey(user, name);
  const std::string path = PartitionPath(partition) + "/" + FolderRelPath(user, name);
  const bool made = MakeDirs(path, 0700);
  UniqueFd dir = OpenFile(path, O_RDONLY | O_DIRECTORY);
  {
    // Serialise creators of the same folder; the mboxlist record is the commit point, so
    // leftovers of a creation that crashed before it are simply overwritten.
    DirLock lock(dir.get(), path, options_.on_wait, options_.folder_lock_wait_seconds);
    std::string v;
    bool found = false;
    db_->Txn([&](DB_TXN* txn) { found = db_->Get(db_->folder(), txn, key, &v); });
    const bool sync = options_.durability == Durability::kBatch;
    FolderValue fv;
    if (!found) {  // else a creator that ran meanwhile made it; its index may hold mail already
      index::Header h = WriteEmptyFolderFiles(dir.get(), path, uidvalidity ? uidvalidity : NextUidValidity(), sync,
                                              created ? created : std::max<int64_t>(Now(), ReadClockFloor(root_)));
      if (sync) Fsync(dir.get(), path);
      fv = FolderValue{h.uidvalidity, h.created, partition, "", "", {}};
    }
    if (!found || new_user)
      db_->Txn(
          [&](DB_TXN* txn) {
            if (new_user && db_->PutNew(db_->users(), txn, new_user->user, EncodeUser(new_user->value)))
              db_->PutNew(db_->quota(), txn, new_user->user, EncodeQuota(0, 0));
            if (!found) db_->PutNew(db_->folder(), txn, key, EncodeFolder(fv));
          },
          sync);
  }
  std::unique_ptr<Folder> folder(new Folder(this, std::string(user), name, path, std::move(dir)));
  folder->swept_ = made;  // a directory just made holds no killed writer's temporaries: not listed
  return folder;
}

UserInfo Store::CreateUser(std::string_view user, std::string_view partition, bool with_inbox,
                           const UserStatus& status) {
  ValidateNewUserId(user);
  std::string part = partition.empty() ? DefaultPartition() : std::string(partition);
  if (!IsDirectory(PartitionPath(part) + "/=user"))
    Throw(Errc::kNotFound, "store " + root_ + ": no partition '" + part + "'");
  UserValue value;
  value.partition = part;
  value.created = Now();
  value.status = status;
  if (with_inbox && !FindUser(user)) {
    // A new user with its INBOX: the INBOX's files first, then the user, its quota and the
    // INBOX's record in one transaction. Two steps left a user without an INBOX when the second
    // failed or was killed, and its mail deferred as if a restore were building it (helper-131).
    UniqueFd shared = ShareUserWriteLock(user);  // as CreateFolder: no restore fills this directory
    // Looked up again under the lock: a restore, an import or a pull (which hold it exclusively)
    // may have made the user meanwhile, in another partition (helper-142: the INBOX went to this one).
    if (!FindUser(user)) {
      const NewUser record{user, value};
      MakeFolder(user, "INBOX", part, 0, 0, &record);
      return *FindUser(user);
    }
  }
  db_->Txn([&](DB_TXN* txn) {
    if (db_->PutNew(db_->users(), txn, user, EncodeUser(value))) db_->PutNew(db_->quota(), txn, user, EncodeQuota(0, 0));
  });
  if (with_inbox && !FindFolder(user, "INBOX")) CreateFolder(user, "INBOX");
  return *FindUser(user);
}

uint32_t Store::NextUidValidity() {
  // The current time, but strictly above every value handed out before: a mailbox deleted and
  // re-created within one second still gets a new UIDVALIDITY (RFC 3501 2.3.1.1).
  uint32_t out = 0;
  db_->Txn([&](DB_TXN* txn) {
    std::string v;
    uint32_t last = db_->Get(db_->folder(), txn, kUidValidityKey, &v, true) && v.size() == 4
                        ? GetU32(reinterpret_cast<const uint8_t*>(v.data()))
                        : 0;
    out = std::max<uint32_t>(static_cast<uint32_t>(std::max<int64_t>(Now(), 1)), last + 1);
    std::string nv;
    AppendU32(&nv, out);
    db_->Put(db_->folder(), txn, kUidValidityKey, nv);
  });
  return out;
}

std::unique_ptr<Folder> Store::CreateUnpublishedFolder(std::string_view user, std::string_view folder,
                                                       uint32_t uidvalidity,
                                                       const std::vector<std::string>& user_flag_names) {
  ValidateUserId(user);
  ValidateFolderName(folder);
  std::string name = NormalizeFolder(folder);
  if (!HoldsUserWriteLock(user))
    Throw(Errc::kInvalidArgument, "mailbox " + MailboxKey(user, name) +
                                      ": an unpublished folder needs the user's write lock (LockUserForWriting)");
  std::optional<UserInfo> info = FindUser(user);
  if (!info) info = CreateUser(user, {}, false);
  std::string path = PartitionPath(info->partition) + "/" + FolderRelPath(user, name);
  const bool made = MakeDirs(path, 0700);
  UniqueFd dir = OpenFile(path, O_RDONLY | O_DIRECTORY);
  {
    DirLock lock(dir.get(), path, options_.on_wait, options_.folder_lock_wait_seconds);
    // Checked under the directory lock: a creator that started before the write lock was taken
    // has either published (seen here) or not yet written anything.
    std::string v;
    bool found = false;
    const std::string key = MailboxKey(user, name);
    db_->Txn([&](DB_TXN* txn) { found = db_->Get(db_->folder(), txn, key, &v); });
    if (found) Throw(Errc::kExists, "mailbox " + key + " exists");
    WriteEmptyFolderFiles(dir.get(), path, uidvalidity ? uidvalidity : NextUidValidity(),
                          options_.durability == Durability::kBatch, std::max<int64_t>(Now(), ReadClockFloor(root_)),
                          user_flag_names);
  }
  std::unique_ptr<Folder> created(new Folder(this, std::string(user), name, path, std::move(dir)));
  created->unpublished_ = true;
  created->swept_ = made;  // as MakeFolder's
  return created;
}

void Store::PublishFolder(Folder& folder, std::string_view origin, const FolderCoverage& coverage) {
  const bool sync = options_.durability == Durability::kBatch;
  std::string key = MailboxKey(folder.user(), folder.folder());
  std::optional<UserInfo> info = FindUser(folder.user());
  if (!info) Throw(Errc::kNoUser, "no such user: " + folder.user());
  DirLock lock(folder.dir_.get(), folder.path(), options_.on_wait, options_.folder_lock_wait_seconds);
  std::string shown = folder.path() + "/store.idx";
  UniqueFd idx = OpenAt(folder.dir_.get(), "store.idx", O_RDWR, 0, shown);
  index::Header h = index::Read(idx.get(), shown, false).header;
  // The folder is made now, for `backup -d`: a full backup that began while it was being built
  // (unpublished, so not listed) and a dated one from that backup's start both left out the
  // batches committed before that start, created and stored earlier (helper-94).
  const int64_t created = std::max<int64_t>({h.created, Now(), ReadClockFloor(root_)});
  if (sync) Fsync(folder.dir_.get(), folder.path());
  FolderValue fv{h.uidvalidity, created, info->partition, "", std::string(origin), coverage};
  bool inserted = false;
  // Its bytes count from now on, with the record in one transaction (Folder::Commit left them out).
  db_->Txn(
      [&](DB_TXN* txn) {
        inserted = db_->PutNew(db_->folder(), txn, key, EncodeFolder(fv));
        if (inserted && h.bytes != 0) AddQuotaUsedIn(*db_, txn, folder.user(), static_cast<int64_t>(h.bytes));
      },
      sync);
  if (!inserted) Throw(Errc::kExists, "mailbox " + key + " was created while it was being restored");
  // A backup that began between the time read above and the commit raised the floor before it
  // listed folders; if its listing missed this one, that floor is visible now: the folder is
  // dated from it, so its dated backup carries the folder whole (helper-95).
  if (const int64_t floor = ReadClockFloor(root_); floor > fv.created) {
    fv.created = floor;
    db_->Txn([&](DB_TXN* txn) { db_->Put(db_->folder(), txn, key, EncodeFolder(fv)); }, sync);
  }
  // The index's copy, for a rebuild of folder.db from the indexes (written once published: a
  // folder refused above keeps its index as it was).
  if (h.created != fv.created) {
    h.created = fv.created;
    index::WriteHeader(idx.get(), h, shown);
    if (sync) Fsync(idx.get(), shown);
  }
  folder.unpublished_ = false;
}

void Store::SetCoverage(std::string_view user, std::string_view folder, const FolderCoverage& coverage) {
  ValidateUserId(user);
  ValidateStoredFolderName(folder);
  std::string key = MailboxKey(user, NormalizeFolder(folder));
  db_->Txn([&](DB_TXN* txn) {
    std::string v;
    if (!db_->Get(db_->folder(), txn, key, &v, true)) Throw(Errc::kNotFound, "no such mailbox: " + key);
    FolderValue fv = DecodeFolder(v, key);
    if (fv.coverage == coverage) return;
    fv.coverage = coverage;
    db_->Put(db_->folder(), txn, key, EncodeFolder(fv));
  });
}

void Store::SetAcl(std::string_view user, std::string_view folder, std::string_view acl) {
  ValidateUserId(user);
  ValidateStoredFolderName(folder);
  auto entries = ParseAcl(acl);
  std::string key = MailboxKey(user, NormalizeFolder(folder));
  db_->Txn([&](DB_TXN* txn) {
    std::string v;
    if (!db_->Get(db_->folder(), txn, key, &v, true)) Throw(Errc::kNotFound, "no such mailbox: " + key);
    FolderValue fv = DecodeFolder(v, key);
    for (const auto& [id, rights] : ParseAcl(fv.acl)) db_->Del(db_->lright(), txn, id + std::string(1, '\0') + key);
    fv.acl = std::string(acl);
    db_->Put(db_->folder(), txn, key, EncodeFolder(fv));
    for (const auto& [id, rights] : entries) db_->Put(db_->lright(), txn, id + std::string(1, '\0') + key, rights);
  });
}

// --- subscriptions, per-user data ---

void Store::Subscribe(std::string_view user, std::string_view mailbox) {
  ValidateUserId(user);
  ParseMailboxName(mailbox);  // validates
  std::string key = std::string(user) + std::string(1, '\0') + std::string(mailbox);
  db_->Txn([&](DB_TXN* txn) { db_->Put(db_->subscr(), txn, key, ""); });
}

void Store::Unsubscribe(std::string_view user, std::string_view mailbox) {
  ValidateUserId(user);
  std::string key = std::string(user) + std::string(1, '\0') + std::string(mailbox);
  db_->Txn([&](DB_TXN* txn) { db_->Del(db_->subscr(), txn, key); });
}

std::vector<std::string> Store::Subscriptions(std::string_view user) {
  ValidateUserId(user);
  std::vector<std::string> out;
  std::string prefix = std::string(user) + std::string(1, '\0');
  db_->Scan(db_->subscr(), prefix, [&](std::string_view key, std::string_view) {
    out.emplace_back(key.substr(prefix.size()));
    return true;
  });
  return out;
}

void Store::SetPerUser(std::string_view mailbox, std::string_view reader, std::string_view data) {
  auto [user, folder] = ParseMailboxName(mailbox);  // validates
  ValidateUserId(reader);
  // Keyed by the mailbox's name as stored ("inbox" is INBOX), which is what readers ask for.
  std::string key = "user/" + user + "/" + NormalizeFolder(folder) + std::string(1, '\0') + std::string(reader);
  db_->Txn([&](DB_TXN* txn) { db_->Put(db_->peruser(), txn, key, data); });
}

std::vector<std::pair<std::string, std::string>> Store::PerUser(std::string_view mailbox) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string prefix = std::string(mailbox) + std::string(1, '\0');
  db_->Scan(db_->peruser(), prefix, [&](std::string_view key, std::string_view value) {
    out.emplace_back(std::string(key.substr(prefix.size())), std::string(value));
    return true;
  });
  return out;
}

void Store::Checkpoint() { db_->Checkpoint(); }
bool Store::EnvironmentStuck() const { return db_ && (db_->wedged() || db_->recovered_elsewhere()); }

void Store::ReopenEnvironment() {
  // A wedged handle waits on a dead owner's mutex and stays registered: libdb refuses a second
  // handle of one process, and the next process's open recovers it.
  if (db_ && db_->wedged())
    Throw(Errc::kTempFail, "mboxlist " + root_ + "/mboxlist: stuck on a process that died inside it; a new "
                           "process recovers it");
  db_.reset();  // a recovered environment: libdb only lets go of its files and registry slot
  db_ = std::make_unique<Db>(root_ + "/mboxlist", false, options_.frees_space);
}

}  // namespace storemove::store
