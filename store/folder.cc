// Folder: reading snapshots and committing messages under the folder lock.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <cstring>
#include <cerrno>
#include <ctime>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "store/message_owner.h"
#include "store/stale_temporaries.h"
#include "store/clock_floor.h"
#include "store/dir_lock.h"
#include "store/index.h"
#include "store/mboxlist.h"
#include "util/error.h"
#include "util/interrupt.h"

namespace storemove::store {

namespace {

// Whether the folder behind `folder` was renamed, moved or deleted since it was opened
// (store/admin.cc removes the old directory's files after its commit point): its directory lost
// its index, and the mailbox's record is gone, or lies in another partition, or its path now
// leads to another directory. An index missing where the record still leads is damage.
// Whether the mailbox's record no longer leads to the folder's directory (gone, another
// partition, another directory now under that name).
bool RecordLeadsElsewhere(Store& store, const Folder& folder) {
  std::optional<FolderInfo> now = store.FindFolder(folder.user(), folder.folder(), Store::FolderDetail::kRecordOnly);
  if (!now || !folder.path().starts_with(store.PartitionPath(now->partition) + "/")) return true;
  struct stat held, named;
  return ::fstat(folder.dir_fd(), &held) != 0 || ::stat(folder.path().c_str(), &named) != 0 ||
         held.st_ino != named.st_ino || held.st_dev != named.st_dev;
}

bool MovedAway(Store& store, const Folder& folder) {
  if (::faccessat(folder.dir_fd(), "store.idx", F_OK, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT) return false;
  return RecordLeadsElsewhere(store, folder);
}

// Opens store.idx for a write under the folder's lock. A folder renamed or deleted meanwhile is a
// temporary failure (deliver exits 75: the MTA keeps the message and retries under the new name),
// not a damaged store or a missing mailbox (65, 66: the MTA would bounce it).
index::Opened OpenIndexForWrite(Store& store, const Folder& folder, bool sync) {
  const std::string shown = folder.path() + "/store.idx";
  const auto moved = [&] {
    Throw(Errc::kTempFail, "mailbox " + folder.Mailbox() + " was renamed or deleted meanwhile; nothing written (try again)");
  };
  index::Opened opened;
  try {
    opened = index::OpenForWrite(folder.dir_fd(), "store.idx", shown, sync);
  } catch (const Error&) {
    if (MovedAway(store, folder)) moved();
    throw;
  }
  // The index is still there but no record may lead to it: a rename or move killed between its
  // commit and the removal of the old files (§6.8) leaves its marker. A writer that waited for
  // the lock would otherwise commit into a folder nobody can see, and its mail would be lost
  // for good. Without the marker (every other write) the mboxlist is not asked.
  if (!folder.unpublished() && ::faccessat(folder.dir_fd(), kMovingMarker, F_OK, AT_SYMLINK_NOFOLLOW) == 0 &&
      RecordLeadsElsewhere(store, folder))
    moved();
  return opened;
}

}  // namespace

// flock(2) on the folder directory: shared for readers of store.idx, exclusive for writers.
class Folder::Lock {
 public:
  Lock(int fd, bool exclusive, const std::string& shown, const Store& store) : fd_(fd) {
    LockFolderDirectory(fd_, exclusive ? LOCK_EX : LOCK_SH, shown, store.on_wait(), store.folder_lock_wait());
  }
  ~Lock() { ::flock(fd_, LOCK_UN); }
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

 private:
  int fd_;
};

namespace {
constexpr size_t kKeptHeaderBytes = 64 * 1024;  // enough for any sane Date: header position
}

Folder::Folder(Store* store, std::string user, std::string folder, std::string path, UniqueFd dir)
    : store_(store), user_(std::move(user)), folder_(std::move(folder)), path_(std::move(path)), dir_(std::move(dir)) {}

Folder::~Folder() = default;

std::string Folder::MessagePath(uint32_t uid) const { return path_ + "/" + MessageRelPath(uid); }

UniqueFd Folder::OpenMessageFile(uint32_t uid) const {
  return TryOpenAt(dir_.get(), MessageRelPath(uid), O_RDONLY, 0, MessagePath(uid));
}

UniqueFd Folder::OpenMessage(uint32_t uid) const {
  UniqueFd fd = OpenMessageFile(uid);
  if (fd.valid()) return fd;
  // Missing: expunged since the caller's snapshot, or lost. Only the index can tell (an expunge
  // drops the record before the file, under the exclusive lock).
  const std::string shown = path_ + "/store.idx";
  bool listed = false;
  {
    Lock lock(dir_.get(), false, path_, *store_);
    UniqueFd idx = TryOpenAt(dir_.get(), "store.idx", O_RDONLY, 0, shown);
    if (!idx.valid()) return fd;  // the folder itself was deleted meanwhile
    for (const MessageMeta& m : index::Read(idx.get(), shown).records) listed = listed || m.uid == uid;
    if (listed) fd = OpenMessageFile(uid);  // a commit may have just renamed it into place
  }
  if (listed && !fd.valid())
    Throw(Errc::kCorrupt, "mailbox " + Mailbox() + ": UID " + std::to_string(uid) + " is in store.idx but its file " +
                              MessagePath(uid) + " is missing (damaged store)");
  return fd;
}

FolderSnapshot Folder::Snapshot() {
  FolderSnapshot snap;
  // The record only: the index's counters come from the full read below, under the same lock.
  std::optional<FolderInfo> info = store_->FindFolder(user_, folder_, Store::FolderDetail::kRecordOnly);
  if (!info) Throw(Errc::kNotFound, "mailbox " + Mailbox() + " no longer exists");
  index::Contents c;
  MessageListBuilder records(store_->snapshot_records_in_memory());
  {
    Lock lock(dir_.get(), false, path_, *store_);
    try {
      c = index::ReadFolderIndex(dir_.get(), path_, Mailbox(),
                                 [&records](const MessageMeta* r, size_t n) { records.Add(r, n); });
    } catch (const Error&) {
      if (MovedAway(*store_, *this))
        Throw(Errc::kNotFound, "mailbox " + Mailbox() + " no longer exists (renamed or deleted meanwhile)");
      throw;
    }
  }
  snap.info = std::move(*info);
  snap.info.uidvalidity = c.header.uidvalidity;
  snap.info.uidnext = c.header.uidnext;
  snap.info.count = c.header.count;
  snap.info.bytes = c.header.bytes;
  snap.info.last_append = c.header.last_append;
  snap.info.highest_modseq = c.header.highest_modseq;
  snap.info.user_flag_names = std::move(c.user_flag_names);
  snap.messages = records.Finish();  // sorted by UID
  return snap;
}

int Folder::MessageDirFd(uint32_t uid, std::string* name) const {
  const std::string rel = MessageRelPath(uid);
  const size_t slash = rel.find('/');
  *name = rel.substr(slash + 1);
  std::string_view bucket(rel.data(), slash);
  if (!open_bucket_fd_.valid() || open_bucket_ != bucket) {
    open_bucket_fd_.reset();  // closed first: a failed open below must not leave the old one in use
    open_bucket_fd_ = OpenAt(dir_.get(), std::string(bucket), O_PATH | O_DIRECTORY, 0, path_ + "/" + std::string(bucket));
    open_bucket_ = bucket;
  }
  return open_bucket_fd_.get();
}

std::unique_ptr<MessageWriter> Folder::NewMessage() {
  std::string name = NewTemporaryName();
  UniqueFd fd = OpenAt(dir_.get(), name, O_WRONLY | O_CREAT | O_EXCL, kMessageFileMode, path_ + "/" + name);
  return std::unique_ptr<MessageWriter>(new MessageWriter(this, std::move(name), std::move(fd)));
}

std::unique_ptr<MessageWriter> Folder::NewMessage(uint32_t known_uid) {
  if (!unpublished_ || known_uid == 0) return NewMessage();
  std::string rel = MessageRelPath(known_uid);
  std::string bucket = rel.substr(0, rel.find('/'));
  if (buckets_made_.insert(bucket).second)
    if (int err = MkdirAt(dir_.get(), bucket, 0700); err != 0 && err != EEXIST) ThrowErrno("mkdir " + path_ + "/" + bucket, err);
  // A leftover of an earlier, interrupted restore of this folder may be a hard link to the
  // repository and to other mailboxes' messages: its name is dropped, never written through.
  std::string name;
  const int bucket_fd = MessageDirFd(known_uid, &name);
  UniqueFd fd = CreateReplacingAt(bucket_fd, name, kMessageFileMode, path_ + "/" + rel);
  return std::unique_ptr<MessageWriter>(new MessageWriter(this, std::move(rel), std::move(fd)));
}

std::optional<StagedMessage> Folder::StageLink(const std::string& existing_path, MessageMeta meta) {
  std::string name = NewTemporaryName();
  if (int err = LinkAt(AT_FDCWD, existing_path, dir_.get(), name)) {
    // ENOENT: the file went away after the caller proved it (a repository entry `relink -d`
    // purged meanwhile); the caller's copy of the bytes still serves.
    if (err == EMLINK || err == EXDEV || (err == ENOENT && !PathExists(existing_path))) return std::nullopt;
    ThrowMakingErrno("link " + existing_path + " to " + path_ + "/" + name, err, path_);
  }
  return StagedMessage{name, meta};
}

bool Folder::RepairMissingFile(StagedMessage& staged, const struct stat* damaged) {
  std::vector<StagedMessage> doomed{staged};
  const std::string shown = path_ + "/store.idx";
  const std::string rel = MessageRelPath(staged.meta.uid);
  {
    Lock lock(dir_.get(), true, path_, *store_);
    UniqueFd idx = OpenAt(dir_.get(), "store.idx", O_RDONLY, 0, shown);
    bool listed = false;
    for (const MessageMeta& m : index::Read(idx.get(), shown).records)
      listed = listed || (m.uid == staged.meta.uid && m.digest == staged.meta.digest && m.size == staged.meta.size);
    struct stat st;
    const int err = StatNoFollow(path_ + "/" + rel, &st);
    const bool replaceable = err == ENOENT || (damaged && err == 0 && st.st_dev == damaged->st_dev &&
                                               st.st_ino == damaged->st_ino);
    if (listed && replaceable) {
      std::string bucket = rel.substr(0, rel.find('/'));
      if (int err = MkdirAt(dir_.get(), bucket, 0700); err != 0 && err != EEXIST) ThrowErrno("mkdir " + path_ + "/" + bucket, err);
      if (store_->durability() == Durability::kBatch) {
        UniqueFd f = OpenAt(dir_.get(), staged.temp_name, O_RDONLY, 0, path_ + "/" + staged.temp_name);
        Fsync(f.get(), path_ + "/" + staged.temp_name);
      }
      if (int err = RenameReplacing(dir_.get(), staged.temp_name, dir_.get(), rel); err != 0) {
        // Not left behind for every rerun to add one more (helper-157).
        const std::string temp = staged.temp_name;
        Discard(doomed);
        staged.temp_name.clear();
        // kIo, as the failed rename was: damage here is not a corrupt stream, and restore -c y
        // goes on with the other folders (kCorrupt stopped the whole restore, helper-157's scen4).
        if (err == EISDIR)
          Throw(Errc::kIo, path_ + "/" + rel + " is a directory where the file of message UID " +
                                    std::to_string(staged.meta.uid) + " belongs (damage): remove it, then run again");
        ThrowErrno("rename " + path_ + "/" + temp + " to " + rel, err);
      }
      staged.temp_name.clear();
      return true;
    }
  }
  Discard(doomed);
  staged.temp_name.clear();
  return false;
}

namespace {

// The UIDs store.idx lists, read at most once per commit, and only when a file is found at a new
// message's final name (a killed commit's leftover, or damage).
struct ListedUids {
  std::optional<std::unordered_set<uint32_t>> uids;
  uint32_t highest = 0;
};

// Gives a committed message file its final name `rel` in the folder directory `dirfd` (`path`,
// `mailbox`), whose index `idx` (header `header`) the caller holds locked. A file already there
// is one a killed commit left without its record, replaced as before, or the message of a
// listed record: a UIDNEXT not above every listed UID (a damaged index) handed out its UID, and
// replacing the file would lose that message (helper-107). Then nothing of the commit stays (the
// files it named, `placed`, are removed; the caller's Discard removes the rest), UIDNEXT goes
// above every listed UID (a header write: the index's commit point, nothing else changed but the
// modseq that says the folder changed), and it throws kTempFail, so that the next commit succeeds.
int PlaceMessageFile(int dirfd, const std::string& path, const std::string& mailbox, int idx, index::Header* header,
                     bool sync, const std::string& temp, const std::string& rel, uint32_t uid,
                     const std::vector<std::string>& placed, ListedUids& listed) {
  int err = RenameAt(dirfd, temp, dirfd, rel, RENAME_NOREPLACE);
  // No renameat2 flags (EINVAL: a filesystem such as NFS; ENOSYS, EPERM: a kernel or seccomp
  // filter): the name is looked up instead; every final name is made under the folder's lock.
  const bool unsupported = err == EINVAL || err == ENOSYS || err == EPERM;
  if (unsupported) {
    struct stat st;
    const int looked = ::fstatat(dirfd, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
    if (looked == ENOENT) return RenameReplacing(dirfd, temp, dirfd, rel);
    if (looked != 0) return looked;  // not known to be absent: nothing replaced
  } else if (err != EEXIST) {
    return err;
  }
  const std::string shown = path + "/store.idx";
  if (!listed.uids) {
    listed.uids.emplace();
    index::Read(idx, shown, [&](const MessageMeta* records, size_t n) {
      for (size_t i = 0; i < n; ++i) {
        listed.uids->insert(records[i].uid);
        listed.highest = std::max(listed.highest, records[i].uid);
      }
    });
  }
  if (!listed.uids->count(uid)) return RenameReplacing(dirfd, temp, dirfd, rel);  // a leftover
  for (const std::string& name : placed) UnlinkAt(dirfd, name);
  const uint32_t was = header->uidnext;
  if (listed.highest == UINT32_MAX)
    Throw(Errc::kCorrupt, "mailbox " + mailbox + ": " + shown + " lists UID " + std::to_string(uid) +
                              " and its UIDNEXT is " + std::to_string(was) + " (a damaged index); nothing was added");
  header->uidnext = listed.highest + 1;
  ++header->highest_modseq;
  index::WriteHeader(idx, *header, shown);
  if (sync) Fsync(idx, shown);
  Throw(Errc::kTempFail, "mailbox " + mailbox + ": " + shown + " lists UID " + std::to_string(uid) +
                             " but its UIDNEXT was " + std::to_string(was) +
                             " (a damaged index): the message of that UID was kept, nothing was added, and UIDNEXT "
                             "is now " + std::to_string(listed.highest + 1) + "; run again");
}

}  // namespace

void Folder::Discard(std::vector<StagedMessage>& batch) {
  for (const StagedMessage& s : batch) UnlinkAt(dir_.get(), s.temp_name);
  batch.clear();
}

std::vector<uint32_t> Folder::Commit(std::vector<StagedMessage>& batch) {
  std::vector<uint32_t> uids;
  if (batch.empty()) return uids;
  const bool sync = store_->durability() == Durability::kBatch;
  const std::string shown = path_ + "/store.idx";
  if (!swept_) {
    // What a killed writer left here (its rerun's first commit): no lock needed, the pid decides.
    swept_ = true;
    RemoveTemporariesOfGoneWriters(dir_.get());
  }
  uint64_t added_bytes = 0;
  try {
    Lock lock(dir_.get(), true, path_, *store_);
    // Reopen under the lock: an expunge in another process may have replaced the file.
    index::Opened opened = OpenIndexForWrite(*store_, *this, sync);
    const UniqueFd& idx = opened.fd;
    index::Header header = opened.header;
    const uint64_t modseq = header.highest_modseq + 1;  // one bump per batch (§4.5)

    std::unordered_set<uint32_t> present;
    bool need_present = std::any_of(batch.begin(), batch.end(),
                                    [&](const StagedMessage& s) { return s.meta.uid && s.meta.uid < header.uidnext; });
    if (need_present)
      for (const MessageMeta& m : index::Read(idx.get(), shown).records) present.insert(m.uid);

    // Decide every UID before touching anything, so a conflict leaves the folder unchanged.
    std::vector<MessageMeta> records;
    records.reserve(batch.size());
    uint32_t next = header.uidnext;
    // The time the record becomes visible, under the lock a backup's snapshot takes too: a
    // message committed after a full backup's snapshot of this folder is saved at or after that
    // backup's start, so `backup -d START` takes it (a time taken before the body arrived, or
    // before waiting for the lock, could be earlier, and the message in neither backup).
    // Never before the start of a backup that has begun (store/clock_floor.h): a clock stepped
    // back, or a host whose clock runs behind the backup's, would put it in neither backup.
    // A restored message keeps its save time, but its stored-at time is this commit's, by the
    // same rule: `backup -d` takes it in the first dated backup begun before it was committed.
    const int64_t committed_at = std::max<int64_t>(::time(nullptr), ReadClockFloor(store_->root()));
    for (const StagedMessage& s : batch) {
      MessageMeta m = s.meta;
      if (m.save_time == 0) m.save_time = committed_at;
      if (m.stored_at == 0) m.stored_at = committed_at;
      m.modseq = modseq;  // the store's own sequence, never the requester's
      if (m.uid == 0) m.uid = next;
      if (!present.insert(m.uid).second)
        Throw(Errc::kExists, "mailbox " + Mailbox() + ": UID " + std::to_string(m.uid) + " already present");
      if (m.uid == UINT32_MAX) Throw(Errc::kInvalidArgument, "mailbox " + Mailbox() + ": UID space exhausted");
      next = std::max(next, m.uid + 1);
      records.push_back(m);
    }

    std::unordered_set<std::string> buckets;
    std::vector<std::string> placed;  // final names this commit gave its files (none listed)
    ListedUids listed;
    for (size_t i = 0; i < batch.size(); ++i) {
      std::string rel = MessageRelPath(records[i].uid);
      std::string bucket = rel.substr(0, rel.find('/'));
      // The bucket MessageDirFd holds open exists (its files were written through it).
      if (buckets.insert(bucket).second && !(bucket == open_bucket_ && open_bucket_fd_.valid()))
        if (int err = MkdirAt(dir_.get(), bucket, 0700); err != 0 && err != EEXIST) ThrowErrno("mkdir " + path_ + "/" + bucket, err);
      // Files become reachable under their final name before the index names them.
      if (batch[i].temp_name != rel) {
        if (int err = PlaceMessageFile(dir_.get(), path_, Mailbox(), idx.get(), &header, sync, batch[i].temp_name, rel,
                                       records[i].uid, placed, listed))
          ThrowErrno("rename " + path_ + "/" + batch[i].temp_name + " to " + rel, err);
        placed.push_back(rel);
      }
      batch[i].temp_name.clear();
    }
    if (sync) {
      for (const std::string& b : buckets) {
        UniqueFd bfd = OpenAt(dir_.get(), b, O_RDONLY | O_DIRECTORY, 0, path_ + "/" + b);
        Fsync(bfd.get(), path_ + "/" + b);
      }
    }
    for (const MessageMeta& m : records) {
      header.bytes += m.size;
      header.last_append = std::max(header.last_append, m.save_time);
      added_bytes += m.size;
    }
    header.uidnext = next;
    header.highest_modseq = modseq;  // written with the new count: the same commit point
    index::Append(idx.get(), &header, records, shown, sync);
    Store::Db::NoteCommitted();
    known_uidnext_ = std::max(known_uidnext_, next);
    for (const MessageMeta& m : records) uids.push_back(m.uid);
  } catch (...) {
    Discard(batch);  // drops what was not renamed; renamed files without records are overwritten later
    throw;
  }
  batch.clear();
  // The messages are committed (the index append above): a failing quota update must not make
  // the caller believe otherwise (deliver would exit non-zero and the MTA deliver it twice).
  // Usage left short is corrected by Store::RecomputeQuota (run by `user --recount-quota` and by
  // every restore of a user that was there before it).
  // An unpublished folder's bytes count once it is published (PublishFolder): a killed import's
  // leftover, which nobody sees, counted against the user's quota (helper-119).
  if (unpublished_) return uids;
  try {
    store_->AddQuotaUsed(user_, static_cast<int64_t>(added_bytes));
  } catch (const Error& e) {
    if (e.code() != Errc::kTempFail && e.code() != Errc::kDatabase) throw;
  }
  return uids;
}

void Folder::SetFlags(uint32_t uid, uint8_t flags, uint64_t user_flags) {
  SetFlags(std::vector<FlagChange>{{uid, flags, user_flags}});
}

size_t Folder::SetFlags(const std::vector<FlagChange>& changes) {
  for (const FlagChange& change : changes)
    if (change.flags & ~kAllSystemFlags) Throw(Errc::kInvalidArgument, "invalid system flags");
  if (changes.empty()) return 0;
  const std::string shown = path_ + "/store.idx";
  const bool sync = store_->durability() == Durability::kBatch;
  Lock lock(dir_.get(), true, path_, *store_);
  index::Opened opened = OpenIndexForWrite(*store_, *this, sync);
  const int idx = opened.fd.get();
  index::Contents c = index::Read(idx, shown);
  // Records are in append order, nearly always UID order (§4): a binary search then, else a map.
  const bool in_uid_order =
      std::is_sorted(c.records.begin(), c.records.end(), [](const MessageMeta& a, const MessageMeta& b) {
        return a.uid < b.uid;
      });
  std::unordered_map<uint32_t, uint32_t> position_of;
  if (!in_uid_order)
    for (uint32_t i = 0; i < c.records.size(); ++i) position_of.emplace(c.records[i].uid, i);
  auto find = [&](uint32_t uid) -> std::optional<uint32_t> {
    if (!in_uid_order) {
      auto it = position_of.find(uid);
      return it == position_of.end() ? std::nullopt : std::optional<uint32_t>(it->second);
    }
    auto it = std::lower_bound(c.records.begin(), c.records.end(), uid,
                               [](const MessageMeta& m, uint32_t u) { return m.uid < u; });
    if (it == c.records.end() || it->uid != uid) return std::nullopt;
    return static_cast<uint32_t>(it - c.records.begin());
  };
  std::vector<uint32_t> changed;
  for (const FlagChange& change : changes) {
    std::optional<uint32_t> i = find(change.uid);
    if (!i) Throw(Errc::kNotFound, "mailbox " + Mailbox() + ": no message with UID " + std::to_string(change.uid));
    MessageMeta& m = c.records[*i];
    if (m.flags == change.flags && m.user_flags == change.user_flags) continue;  // no change, no new modseq
    m.flags = change.flags;
    m.user_flags = change.user_flags;
    m.modseq = ++c.header.highest_modseq;
    changed.push_back(*i);
  }
  if (changed.empty()) return 0;
  // HIGHESTMODSEQ first, then the records: a crash between leaves H raised over unchanged
  // records (a pass sees a change that is not there, harmless), never a record above H.
  index::WriteHeader(idx, c.header, shown);
  if (sync) Fsync(idx, shown);
  std::sort(changed.begin(), changed.end());
  changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
  for (uint32_t i : changed) index::RewriteRecord(idx, c.header, i, c.records[i], shown);
  if (sync) Fsync(idx, shown);
  return changed.size();
}

void Folder::SetUserFlagNames(const std::vector<std::string>& names) {
  const std::string shown = path_ + "/store.idx";
  Lock lock(dir_.get(), true, path_, *store_);
  UniqueFd idx = OpenAt(dir_.get(), "store.idx", O_RDONLY, 0, shown);
  index::Contents c = index::Read(idx.get(), shown);
  if (c.user_flag_names == names) return;
  const uint64_t modseq = c.header.highest_modseq + 1;
  // A record whose set bits now mean other names has changed as far as a reader can tell:
  // it gets the new modseq, so an incremental pass carries it.
  for (MessageMeta& m : c.records)
    for (size_t bit = 0; bit < 64; ++bit) {
      if (!(m.user_flags >> bit & 1)) continue;
      const std::string* before = bit < c.user_flag_names.size() ? &c.user_flag_names[bit] : nullptr;
      const std::string* after = bit < names.size() ? &names[bit] : nullptr;
      if (!before || !after || *before != *after) {
        m.modseq = modseq;
        break;
      }
    }
  c.user_flag_names = names;
  c.header.minor = index::kMinor;  // the rewrite is also the upgrade of a 1.0 file
  c.header.highest_modseq = modseq;
  index::WriteNewAt(dir_.get(), "store.idx", c, store_->durability() == Durability::kBatch, shown);
}

void Folder::RaiseUidNext(uint32_t uidnext) {
  if (uidnext <= known_uidnext_) return;  // already there: no lock, no read
  const std::string shown = path_ + "/store.idx";
  Lock lock(dir_.get(), true, path_, *store_);
  UniqueFd idx = TryOpenAt(dir_.get(), "store.idx", O_RDWR, 0, shown);
  if (!idx.valid()) idx = OpenIndexForWrite(*store_, *this, false).fd;  // says why it is gone
  index::Header header = index::Read(idx.get(), shown, false).header;
  known_uidnext_ = std::max(known_uidnext_, header.uidnext);
  if (header.uidnext >= uidnext) return;  // no change: no upgrade, no bump
  if (header.minor == 0) {  // a 1.0 file is upgraded first
    index::Opened opened = OpenIndexForWrite(*store_, *this, store_->durability() == Durability::kBatch);
    idx = std::move(opened.fd);
    header = opened.header;
  }
  header.uidnext = uidnext;
  ++header.highest_modseq;
  index::WriteHeader(idx.get(), header, shown);
  known_uidnext_ = uidnext;
}

void Folder::Expunge(const std::vector<uint32_t>& uids) {
  if (uids.empty()) return;
  const bool sync = store_->durability() == Durability::kBatch;
  const std::string shown = path_ + "/store.idx";
  const std::string exp_shown = path_ + "/store.exp";
  std::unordered_set<uint32_t> doomed(uids.begin(), uids.end());
  uint64_t freed = 0;
  std::vector<MessageMeta> removed;
  {
    Lock lock(dir_.get(), true, path_, *store_);
    UniqueFd idx = OpenAt(dir_.get(), "store.idx", O_RDONLY, 0, shown);
    index::Contents c = index::Read(idx.get(), shown);
    index::Contents keep;
    keep.header = c.header;
    keep.header.minor = index::kMinor;  // the rewrite is also the upgrade of a 1.0 file
    keep.header.highest_modseq = c.header.highest_modseq + 1;
    keep.user_flag_names = c.user_flag_names;
    keep.header.bytes = 0;
    for (const MessageMeta& m : c.records) {
      if (doomed.count(m.uid)) {
        removed.push_back(m);
        freed += m.size;
      } else {
        keep.records.push_back(m);
        keep.header.bytes += m.size;
      }
    }
    if (removed.empty()) return;
    // 1. remember what is being expunged, 2. drop the records, 3. remove the files, 4. forget.
    index::Opened exp_opened = index::OpenForWrite(dir_.get(), "store.exp", exp_shown, sync);
    const UniqueFd& exp = exp_opened.fd;
    index::Header exp_header = exp_opened.header;
    // The expunged records keep their modseqs; store.exp's own H must cover them (§4.5).
    exp_header.highest_modseq = std::max(exp_header.highest_modseq, c.header.highest_modseq);
    index::Append(exp.get(), &exp_header, removed, exp_shown, sync);
    index::WriteNewAt(dir_.get(), "store.idx", keep, sync, shown);
    for (const MessageMeta& m : removed) UnlinkAt(dir_.get(), MessageRelPath(m.uid));
    exp_header.count = 0;
    index::WriteHeader(exp.get(), exp_header, exp_shown);
    if (::ftruncate(exp.get(), exp_header.records_offset) != 0) ThrowErrno("truncate " + exp_shown);
  }
  if (!unpublished_) store_->AddQuotaUsed(user_, -static_cast<int64_t>(freed));
}

// --- MessageWriter ---------------------------------------------------------------------

MessageWriter::MessageWriter(Folder* folder, std::string temp_name, UniqueFd fd)
    : folder_(folder), temp_name_(std::move(temp_name)), fd_(std::move(fd)) {
  tail_ = 1;  // at the start of a line
}

MessageWriter::~MessageWriter() {
  if (!finished_) UnlinkAt(folder_->dir_.get(), temp_name_);
}

void MessageWriter::Write(const void* data, size_t size) {
  if (finished_) Throw(Errc::kInvalidArgument, "message already finished");
  const char* p = static_cast<const char*>(data);
  if (!header_done_) {
    // Find the blank line ending the header, a line at a time (memchr, not a byte loop: every
    // restored and delivered header passes here). tail_: 1 = at a line start, 2 = a line start
    // and '\r', 0 = inside a line; it carries over between calls.
    for (size_t i = 0; i < size;) {
      const char* nl = static_cast<const char*>(std::memchr(p + i, '\n', size - i));
      const size_t end = nl ? static_cast<size_t>(nl - p) : size;  // [i, end): bytes before the '\n'
      if (end > i) tail_ = (tail_ == 1 && end - i == 1 && p[i] == '\r') ? 2 : 0;
      if (!nl) break;
      if (tail_ != 0) {
        header_done_ = true;
        header_size_ = static_cast<uint32_t>(size_ + end + 1);
        if (header_.size() < kKeptHeaderBytes) header_.append(p, std::min(end + 1, kKeptHeaderBytes - header_.size()));
        break;
      }
      tail_ = 1;
      i = end + 1;
    }
    if (!header_done_ && header_.size() < kKeptHeaderBytes)
      header_.append(p, std::min(size, kKeptHeaderBytes - header_.size()));
  }
  hasher_.Update(p, size);
  size_ += size;
  WriteAll(fd_.get(), p, size, folder_->path_ + "/" + temp_name_);
}

StagedMessage MessageWriter::Finish(MessageMeta meta) {
  if (finished_) Throw(Errc::kInvalidArgument, "message already finished");
  const std::string shown = folder_->path_ + "/" + temp_name_;
  if (folder_->store_->durability() == Durability::kBatch) Fsync(fd_.get(), shown);
  if (::close(fd_.release()) != 0) ThrowErrno("close " + shown);
  if (size_ > UINT32_MAX && !header_done_) header_size_ = UINT32_MAX;
  meta.size = size_;
  meta.header_size = header_done_ ? header_size_ : static_cast<uint32_t>(std::min<uint64_t>(size_, UINT32_MAX));
  meta.digest = hasher_.Final();
  if (meta.sent_date == 0) meta.sent_date = SentDate(header_);
  // A save time of 0 is taken at the commit, under the folder's lock (see Commit).
  if (meta.internal_date == 0) meta.internal_date = ::time(nullptr);
  finished_ = true;
  return StagedMessage{temp_name_, meta};
}

}  // namespace storemove::store
