// Deletion, rename and partition moves of mailboxes and users, and the verified-before-delete
// record (docs/store-format.md §3.5, §6.7, §6.8).
//
// Every operation here has one commit point, a Berkeley DB transaction over the mboxlist
// records; files are prepared before it (invisible: no record names them) or removed after it
// (invisible: no record names them any more). Folder directories are locked exclusively with the
// same flock(2) as Folder::Commit, so a delivery racing an operation either commits before it
// (and its message is moved or deleted with the folder) or waits and then fails because the
// folder's store.idx is gone, and the MTA retries. While this code holds a folder lock it never
// calls Store functions that take folder locks themselves (FindFolder, ListFolders, Snapshot):
// a second flock from this process on another descriptor of the same directory would wait
// forever.
#include "store/admin.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "store/dir_lock.h"
#include "store/index.h"
#include "store/mboxlist.h"
#include "store/names.h"
#include "store/repository_layout.h"
#include "store/message_owner.h"
#include "store/stale_temporaries.h"
#include "util/bytes.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/iso_time.h"
#include "util/read_block.h"

namespace storemove::store {

namespace {

const std::string kNul(1, '\0');
constexpr uint8_t kVerifiedVersion = 1;

int64_t Now() { return static_cast<int64_t>(::time(nullptr)); }

std::string MailboxKey(std::string_view user, std::string_view folder) {
  return "user/" + std::string(user) + "/" + std::string(folder);
}

std::string FolderPath(Store& store, std::string_view partition, std::string_view user, std::string_view folder) {
  return store.PartitionPath(partition) + "/" + FolderRelPath(user, folder);
}

// The directory that holds the user directory "=<userid>" (its hash directory).
std::string HashDirPath(Store& store, std::string_view partition, std::string_view user) {
  return store.PartitionPath(partition) + "/=user/" + HashDir(user);
}

std::string Parent(const std::string& path) { return path.substr(0, path.rfind('/')); }

// --- mboxlist helpers -------------------------------------------------------------------------

std::vector<std::pair<std::string, std::string>> ScanAll(Store::Db& db, DB* table, std::string_view prefix) {
  std::vector<std::pair<std::string, std::string>> out;
  db.Scan(table, prefix, [&](std::string_view key, std::string_view value) {
    out.emplace_back(std::string(key), std::string(value));
    return true;
  });
  return out;
}

std::vector<std::string> ScanKeys(Store::Db& db, DB* table, std::string_view prefix) {
  std::vector<std::string> out;
  for (auto& [key, value] : ScanAll(db, table, prefix)) out.push_back(std::move(key));
  return out;
}

// ACL identifiers that stand for `user`: the user and its negative-rights form (RFC 4314).
bool NamesUser(std::string_view identifier, std::string_view user) {
  return identifier == user || (identifier.size() == user.size() + 1 && identifier[0] == '-' &&
                                identifier.substr(1) == user);
}

// The ACL with `user`'s identifiers renamed to `new_user`, or dropped when `new_user` is empty.
std::string RewriteAcl(std::string_view acl, std::string_view user, std::string_view new_user) {
  std::string out;
  for (const auto& [id, rights] : ParseAcl(acl)) {
    std::string identifier = id;
    if (NamesUser(id, user)) {
      if (new_user.empty()) continue;
      identifier = (id[0] == '-' ? "-" : "") + std::string(new_user);
    }
    if (!out.empty()) out += ' ';
    out += identifier + ' ' + rights;
  }
  return out;
}

void DelLrights(Store::Db& db, DB_TXN* txn, std::string_view acl, const std::string& mailbox) {
  for (const auto& [id, rights] : ParseAcl(acl)) db.Del(db.lright(), txn, id + kNul + mailbox);
}

void PutLrights(Store::Db& db, DB_TXN* txn, std::string_view acl, const std::string& mailbox) {
  for (const auto& [id, rights] : ParseAcl(acl)) db.Put(db.lright(), txn, id + kNul + mailbox, rights);
}

// Mailboxes outside `user`'s own whose ACL names `user` (found through lright.db).
std::set<std::string> OtherMailboxesNaming(Store::Db& db, std::string_view user) {
  std::set<std::string> out;
  const std::string own = "user/" + std::string(user) + "/";
  for (const std::string& id : {std::string(user), "-" + std::string(user)}) {
    std::string prefix = id + kNul;
    for (const std::string& key : ScanKeys(db, db.lright(), prefix)) {
      std::string mailbox = key.substr(prefix.size());
      if (!mailbox.starts_with(own)) out.insert(mailbox);
    }
  }
  return out;
}

// peruser.db keys ("mailbox NUL reader") whose reader is `user`.
std::vector<std::string> PerUserKeysOfReader(Store::Db& db, std::string_view user) {
  std::vector<std::string> out;
  for (std::string& key : ScanKeys(db, db.peruser(), "")) {
    size_t nul = key.find('\0');
    if (nul != std::string::npos && std::string_view(key).substr(nul + 1) == user) out.push_back(std::move(key));
  }
  return out;
}

// Inside a transaction: rewrites (or strips) `user` in the ACLs of `mailboxes`.
void RewriteOtherAcls(Store::Db& db, DB_TXN* txn, const std::set<std::string>& mailboxes, std::string_view user,
                      std::string_view new_user) {
  for (const std::string& mailbox : mailboxes) {
    std::string v;
    if (!db.Get(db.folder(), txn, mailbox, &v, true)) continue;
    FolderValue fv = DecodeFolder(v, mailbox);
    std::string acl = RewriteAcl(fv.acl, user, new_user);
    if (acl == fv.acl) continue;
    DelLrights(db, txn, fv.acl, mailbox);
    fv.acl = acl;
    db.Put(db.folder(), txn, mailbox, EncodeFolder(fv));
    PutLrights(db, txn, fv.acl, mailbox);
  }
}

// --- folder directories ------------------------------------------------------------------------

// A folder directory held open under an exclusive flock(2), released when destroyed.
class LockedDir {
 public:
  // The folder lock every reader and writer takes (store/dir_lock.h): a wait that lasts is said.
  LockedDir(std::string path, UniqueFd fd, const Store& store) : path_(std::move(path)), fd_(std::move(fd)) {
    LockFolderDirectory(fd_.get(), LOCK_EX, path_, store.on_wait(), store.folder_lock_wait());
  }
  // nullptr when the directory does not exist.
  static std::unique_ptr<LockedDir> TryOpen(const std::string& path, const Store& store) {
    UniqueFd fd = TryOpenAt(AT_FDCWD, path, O_RDONLY | O_DIRECTORY, 0, path);
    if (!fd.valid()) return nullptr;
    return std::make_unique<LockedDir>(path, std::move(fd), store);
  }
  ~LockedDir() { ::flock(fd_.get(), LOCK_UN); }
  LockedDir(const LockedDir&) = delete;
  LockedDir& operator=(const LockedDir&) = delete;
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  UniqueFd fd_;
};

index::Contents ReadIndex(const LockedDir& dir, bool with_records) {
  const std::string shown = dir.path() + "/store.idx";
  UniqueFd idx = OpenAt(dir.fd(), "store.idx", O_RDONLY, 0, shown);
  return index::Read(idx.get(), shown, with_records);
}

void UnlinkIfPresent(int dirfd, const std::string& name, int flags, const std::string& shown) {
  int err = UnlinkAt(dirfd, name, flags);
  if (err != 0 && err != ENOENT && err != ENOTEMPTY && err != EEXIST) ThrowErrno("remove " + shown, err);
}

std::vector<std::string> DirEntries(int dirfd, const std::string& shown) {
  int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) ThrowErrno("dup " + shown);
  DIR* d = ::fdopendir(dup);
  if (!d) {
    int err = errno;
    ::close(dup);
    ThrowErrno("opendir " + shown, err);
  }
  ::rewinddir(d);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  ::closedir(d);
  return names;
}

// Removes a folder's own files under its lock, keeping sub-folder directories ("+..."). store.idx
// goes first: from then on every Folder handle still open on the directory (a delivery waiting
// for the lock) fails instead of committing into a folder nobody can see. Then store.exp, the
// bucket directories with their message files (unlinking a hard link only drops this name), and
// temporary files.
void RemoveFolderFiles(const LockedDir& dir) {
  const std::string& path = dir.path();
  UnlinkIfPresent(dir.fd(), "store.idx", 0, path + "/store.idx");
  UnlinkIfPresent(dir.fd(), "store.exp", 0, path + "/store.exp");
  for (const std::string& name : DirEntries(dir.fd(), path)) {
    if (name[0] == '+') continue;
    const std::string shown = path + "/" + name;
    struct stat st;
    if (::fstatat(dir.fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      ThrowErrno("stat " + shown);
    }
    if (S_ISDIR(st.st_mode)) {
      UniqueFd bucket = TryOpenAt(dir.fd(), name, O_RDONLY | O_DIRECTORY, 0, shown);
      if (!bucket.valid()) continue;
      for (const std::string& file : DirEntries(bucket.get(), shown))
        UnlinkIfPresent(bucket.get(), file, 0, shown + "/" + file);
      UnlinkIfPresent(dir.fd(), name, AT_REMOVEDIR, shown);
    } else {
      UnlinkIfPresent(dir.fd(), name, 0, shown);
    }
  }
}

// rmdir(2) `path` and then its parents while they are empty, stopping before `stop`.
void RemoveEmptyDirs(std::string path, const std::string& stop) {
  while (path.size() > stop.size() && path.starts_with(stop + "/")) {
    if (::rmdir(path.c_str()) != 0) return;  // not empty (sub-folders, a delivery's file) or gone
    path = Parent(path);
  }
}

// After a user left a partition (deleted, renamed or moved): its directory there may still hold
// the delivery gate user.lck when the user had no INBOX; remove it and the emptied directory.
void RemoveUserDirectory(Store& store, std::string_view partition, std::string_view user) {
  const std::string dir = FolderPath(store, partition, user, "INBOX");
  UnlinkIfPresent(AT_FDCWD, dir + "/user.lck", 0, dir + "/user.lck");
  RemoveEmptyDirs(dir, HashDirPath(store, partition, user));
}

// Whether the directory holds anything of a folder: an entry that is no sub-folder (`+…`) and
// not the delivery gate.
bool HoldsFolderFiles(const LockedDir& dir) {
  for (const std::string& name : DirEntries(dir.fd(), dir.path()))
    if (name[0] != '+' && name != "user.lck") return true;
  return false;
}

// The files of every folder directory at and below `path` (the user directory, or one folder's
// with its `+` sub-folders): what a deletion killed after its commit left there (§6.7). Only
// under the user's write lock, with none of the user's folders recorded at or below `path`:
// nothing can then create one (§6.9), so no directory there is anybody's work in progress.
// Returns the directories that held files.
size_t RemoveUnrecordedFolderFiles(Store& store, const std::string& path) {
  std::unique_ptr<LockedDir> dir = LockedDir::TryOpen(path, store);
  if (!dir) return 0;
  size_t swept = 0;
  for (const std::string& name : DirEntries(dir->fd(), path)) {
    struct stat st;
    if (name[0] != '+' || ::fstatat(dir->fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
      continue;
    swept += RemoveUnrecordedFolderFiles(store, path + "/" + name);
  }
  if (HoldsFolderFiles(*dir)) {
    ++swept;
    RemoveFolderFiles(*dir);
  }
  dir.reset();
  ::rmdir(path.c_str());  // emptied; or it still holds what was no folder's: left
  return swept;
}

// Runs the file removal that follows a deletion's commit. Its failure (a directory planted among
// the files, EIO) is no reason to hide that the deletion is done: the one line says so, and
// that a rerun removes the rest (RemoveLeftoversOfDeleted). Without it the command printed no
// "deleted" line for what it had deleted (helper-98).
template <class Remove>
void RemoveAfterCommit(const std::string& what, Remove&& remove) {
  try {
    remove();
  } catch (const Error& e) {
    Throw(Errc::kIo, what + " is deleted from the mailbox list, but not all of its files could be removed: " +
                         e.what() + "; once that is mended, storemove delete of it again removes them");
  }
}

// --- fingerprint ---------------------------------------------------------------------------------

// Feeds the byte sequence of docs/store-format.md §3.5, one folder at a time in name order.
class FingerprintBuilder {
 public:
  void AddFolder(std::string_view folder, const index::Header& h, const std::vector<std::string>& flag_names,
                 MessageList messages) {
    if (!messages.spooled()) {  // a spooled list is sorted already
      std::vector<MessageMeta>& v = messages.mutable_records();
      std::sort(v.begin(), v.end(), [](const MessageMeta& a, const MessageMeta& b) { return a.uid < b.uid; });
    }
    std::string s;
    AppendU32(&s, static_cast<uint32_t>(folder.size()));
    s.append(folder);
    AppendU32(&s, h.uidvalidity);
    AppendU32(&s, h.uidnext);
    AppendU32(&s, h.count);
    AppendU64(&s, h.bytes);
    AppendU32(&s, static_cast<uint32_t>(flag_names.size()));
    for (const std::string& name : flag_names) {
      AppendU32(&s, static_cast<uint32_t>(name.size()));
      s.append(name);
    }
    for (const MessageMeta& m : messages) {
      AppendU32(&s, m.uid);
      AppendU8(&s, m.flags);
      AppendU64(&s, m.user_flags);
      AppendU64(&s, m.size);
      s.append(reinterpret_cast<const char*>(m.digest.bytes.data()), m.digest.bytes.size());
      if (s.size() >= (1 << 16)) {  // hashed as it goes: a large folder's is not held
        hasher_.Update(s.data(), s.size());
        s.clear();
      }
    }
    hasher_.Update(s.data(), s.size());
    ++result_.folders;
    result_.messages += h.count;
    result_.bytes += h.bytes;
  }
  UserFingerprint Finish() {
    result_.digest = hasher_.Final();
    return result_;
  }

 private:
  Hasher hasher_;
  UserFingerprint result_;
};

}  // namespace

void AppendFingerprint(std::string* out, const UserFingerprint& f) {
  out->append(reinterpret_cast<const char*>(f.digest.bytes.data()), f.digest.bytes.size());
  AppendU32(out, f.folders);
  AppendU64(out, f.messages);
  AppendU64(out, f.bytes);
}

UserFingerprint ReadFingerprint(const uint8_t* p) {
  UserFingerprint f;
  std::copy(p, p + 16, f.digest.bytes.begin());
  f.folders = GetU32(p + 16);
  f.messages = GetU64(p + 20);
  f.bytes = GetU64(p + 28);
  return f;
}

namespace {

std::string EncodeVerified(const VerifiedInfo& v) {
  std::string s;
  AppendU8(&s, kVerifiedVersion);
  AppendU64(&s, static_cast<uint64_t>(v.verified_at));
  AppendFingerprint(&s, v.fingerprint);
  AppendU16(&s, static_cast<uint16_t>(v.destination.size()));
  s.append(v.destination);
  return s;
}

VerifiedInfo DecodeVerified(std::string_view v, std::string_view user) {
  constexpr size_t kFixed = 1 + 8 + kFingerprintSize + 2;
  auto bad = [&](const char* what) {
    Throw(Errc::kCorrupt, "mboxlist: " + std::string(what) + " verified.db value for " + std::string(user));
  };
  if (v.empty() || static_cast<uint8_t>(v[0]) != kVerifiedVersion) bad("unknown version of the");
  if (v.size() < kFixed) bad("truncated");
  const uint8_t* p = reinterpret_cast<const uint8_t*>(v.data());
  VerifiedInfo info;
  info.verified_at = static_cast<int64_t>(GetU64(p + 1));
  info.fingerprint = ReadFingerprint(p + 9);
  size_t n = GetU16(p + 9 + kFingerprintSize);
  if (v.size() != kFixed + n) bad("truncated");
  info.destination = std::string(v.substr(kFixed, n));
  return info;
}

// Throws kTempFail unless `now` matches the recorded verification.
void CheckVerified(std::string_view user, const std::optional<VerifiedInfo>& verified, const UserFingerprint& now) {
  if (!verified)
    Throw(Errc::kTempFail, "user " + std::string(user) +
                               " has not been verified at a destination (run storemove verify, or use --force)");
  if (verified->fingerprint != now)
    Throw(Errc::kTempFail, "user " + std::string(user) + " changed since it was verified at " +
                               verified->destination + " on " + IsoUtcTime(verified->verified_at) +
                               " (verify again, or use --force)");
}

// --- relocation: the common core of rename and partition moves -----------------------------------

// One folder of a rename or move.
struct Relocation {
  std::string src_user, src_folder, src_partition;
  std::string dst_user, dst_folder, dst_partition;
  std::string src_path, dst_path;
  std::unique_ptr<LockedDir> src, dst;
  FolderValue value;                  // the record, read under the lock
  index::Contents contents;           // the source store.idx, read under the lock
  std::vector<std::string> peruser;   // peruser.db keys of the source mailbox
  std::vector<std::string> placed;    // entries made in the destination directory
  std::set<std::string> buckets;      // bucket directories used in the destination
  std::string SrcKey() const { return MailboxKey(src_user, src_folder); }
  std::string DstKey() const { return MailboxKey(dst_user, dst_folder); }
};

// What changes about the user record itself (RenameUser, MoveUser).
struct UserChange {
  std::string old_user, new_user, partition;
};

// Copies a message file, checking its size and digest against the index record.
void CopyMessage(const Relocation& r, const MessageMeta& m, const std::string& rel, const std::string& tmp,
                 bool sync) {
  const std::string from = r.src_path + "/" + rel, to = r.dst_path + "/" + tmp;
  UniqueFd in = TryOpenAt(r.src->fd(), rel, O_RDONLY, 0, from);
  if (!in.valid()) Throw(Errc::kCorrupt, "mailbox " + r.SrcKey() + ": message file missing: " + from);
  UniqueFd out = OpenAt(r.dst->fd(), tmp, O_WRONLY | O_CREAT | O_EXCL, 0600, to);
  Hasher hasher;
  uint64_t size = 0;
  ReadBlock buf;
  while (size_t n = ReadSome(in.get(), buf.data(), buf.size(), from)) {
    hasher.Update(buf.data(), n);
    WriteAll(out.get(), buf.data(), n, to);
    size += n;
  }
  if (size != m.size || hasher.Final() != m.digest)
    Throw(Errc::kCorrupt, "mailbox " + r.SrcKey() + ": " + from + " does not match its store.idx record (UID " +
                              std::to_string(m.uid) + ")");
  if (sync) Fsync(out.get(), to);
}

// On a move to another filesystem: what keeps shared content shared. The messages that were one
// inode at the source become one inode again at the destination (same inode: same bytes), and
// a content the destination partition's repository already holds (docs/store-format.md §7) is
// linked to that entry once its bytes are compared; a content it lacks is copied and its copy
// becomes the entry, so the next user moved there links to it. Copying each file on its own
// made 400 separate copies of 1,200 messages that had 800 inodes (helper-67).
class CrossFilesystemSharing {
 public:
  CrossFilesystemSharing(Store& store, const std::string& dst_partition)
      : root_(store.PartitionPath(dst_partition) + "/=digest"),
        layout_(ReadRepositoryLayout(store.PartitionPath(dst_partition))) {}

  // Places at `tmp` in the destination a link to a file that holds the bytes of the source file
  // `src` (record `m`), if there is one: true when placed, false when the caller must copy.
  // `src_st`: the source file's stat.
  bool LinkExisting(const Relocation& r, const MessageMeta& m, const std::string& tmp, int src,
                    const struct stat& src_st) {
    auto placed = placed_.find({src_st.st_dev, src_st.st_ino});
    if (placed != placed_.end() && LinkAt(AT_FDCWD, placed->second, r.dst->fd(), tmp) == 0) {
      ++linked_;
      return true;
    }
    const std::string entry = RepositoryEntryPath(root_, layout_, m.digest);
    UniqueFd fd = TryOpenAt(AT_FDCWD, entry, O_RDONLY | O_NONBLOCK, 0, entry);
    struct stat es;
    // Only an entry as a new copy would be (this user's, 0600): the moved message becomes one
    // with it (docs/relinker.md "Owner and mode").
    if (!fd.valid() || ::fstat(fd.get(), &es) != 0 || !S_ISREG(es.st_mode) || uint64_t(es.st_size) != m.size ||
        !AsNewMessage(es) || !SameFileContent(fd.get(), src))
      return false;
    // Linked by name: checked to be the inode compared, or the copy is made after all.
    if (LinkAt(AT_FDCWD, entry, r.dst->fd(), tmp) != 0) return false;
    struct stat made;
    if (::fstatat(r.dst->fd(), tmp.c_str(), &made, AT_SYMLINK_NOFOLLOW) != 0 || made.st_ino != es.st_ino) {
      UnlinkAt(r.dst->fd(), tmp);
      return false;
    }
    ++linked_;
    return true;
  }

  // `rel` in the destination now holds the bytes of the source inode of `src`: later messages of
  // that inode link to it, and a copy becomes the repository entry for its digest if none is.
  void Placed(const Relocation& r, const MessageMeta& m, const std::string& rel, const struct stat& src_st,
              bool copied) {
    placed_.try_emplace({src_st.st_dev, src_st.st_ino}, r.dst_path + "/" + rel);
    if (!copied) return;
    const std::string entry = RepositoryEntryPath(root_, layout_, m.digest);
    int err = LinkAt(r.dst->fd(), rel, AT_FDCWD, entry);
    if (err == ENOENT) {
      MakeDirs(entry.substr(0, entry.rfind('/')), 0700);
      err = LinkAt(r.dst->fd(), rel, AT_FDCWD, entry);
    }
    // EEXIST: another content of the digest, or a writer was first.
    if (err != 0 && err != EEXIST && err != EMLINK) ThrowErrno("link " + r.dst_path + "/" + rel + " to " + entry, err);
    if (err == 0) made_.push_back(entry);
  }

  // After a failed move, whose copies are gone (Unstage): the repository entries this move made
  // that nothing else links to. Left, they filled the destination partition move after failed
  // move, until `relink -d` (helper-113: a 1 MiB partition full of 368 KiB of them, later moves
  // that would have fitted failing).
  void RemoveEntriesMade() noexcept {
    for (const std::string& entry : made_) {
      struct stat st;
      if (::lstat(entry.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1) ::unlink(entry.c_str());
    }
    made_.clear();
  }

  uint64_t linked() const { return linked_; }

 private:
  std::string root_;
  RepositoryLayout layout_;
  std::map<std::pair<dev_t, ino_t>, std::string> placed_;  // source inode -> a destination file of it
  std::vector<std::string> made_;  // repository entries this move made (Placed)
  uint64_t linked_ = 0;
};

// Makes the destination folder complete: every message file (a hard link on the same
// filesystem, else a link to the same content there or a verified copy: CrossFilesystemSharing),
// then store.idx and store.exp. No record names the destination yet, so none of this is visible.
void Stage(Relocation& r, bool sync, CrossFilesystemSharing& sharing) {
  struct stat src_st, dst_st;
  if (::fstat(r.src->fd(), &src_st) != 0) ThrowErrno("stat " + r.src_path);
  if (::fstat(r.dst->fd(), &dst_st) != 0) ThrowErrno("stat " + r.dst_path);
  const bool same_fs = src_st.st_dev == dst_st.st_dev;

  for (const MessageMeta& m : r.contents.records) {
    const std::string rel = MessageRelPath(m.uid);
    const std::string bucket = rel.substr(0, rel.find('/'));
    if (r.buckets.insert(bucket).second)
      if (int err = MkdirAt(r.dst->fd(), bucket, 0700); err != 0 && err != EEXIST)
        ThrowErrno("mkdir " + r.dst_path + "/" + bucket, err);
    const std::string tmp = NewTemporaryName();
    try {
      bool linked = false;
      if (same_fs) {
        int err = LinkAt(r.src->fd(), rel, r.dst->fd(), tmp);
        if (err == 0) {
          linked = true;
        } else if (err == ENOENT) {
          Throw(Errc::kCorrupt, "mailbox " + r.SrcKey() + ": message file missing: " + r.src_path + "/" + rel);
        } else if (err != EMLINK) {
          ThrowErrno("link " + r.src_path + "/" + rel + " to " + r.dst_path + "/" + tmp, err);
        }
      }
      UniqueFd src;
      struct stat src_st;
      bool copied = false;
      if (!linked) {
        src = TryOpenAt(r.src->fd(), rel, O_RDONLY, 0, r.src_path + "/" + rel);
        if (!src.valid()) Throw(Errc::kCorrupt, "mailbox " + r.SrcKey() + ": message file missing: " + r.src_path + "/" + rel);
        if (::fstat(src.get(), &src_st) != 0) ThrowErrno("stat " + r.src_path + "/" + rel);
        if (!sharing.LinkExisting(r, m, tmp, src.get(), src_st)) {
          CopyMessage(r, m, rel, tmp, sync);
          copied = true;
        }
      }
      // Replaces a leftover file of an earlier, interrupted operation, also one that is a link to
      // the same file (review: its tmp.* name stayed, as in Folder::Commit).
      if (int err = RenameReplacing(r.dst->fd(), tmp, r.dst->fd(), rel))
        ThrowErrno("rename " + r.dst_path + "/" + tmp + " to " + rel, err);
      if (src.valid()) sharing.Placed(r, m, rel, src_st, copied);
    } catch (...) {
      UnlinkAt(r.dst->fd(), tmp);
      throw;
    }
    r.placed.push_back(rel);
  }
  if (sync) {
    for (const std::string& b : r.buckets) {
      UniqueFd bfd = OpenAt(r.dst->fd(), b, O_RDONLY | O_DIRECTORY, 0, r.dst_path + "/" + b);
      Fsync(bfd.get(), r.dst_path + "/" + b);
    }
  }
  r.placed.push_back("store.idx");
  // A new file: written as 1.1 whatever the source was; modseqs (0 for a 1.0 source) kept.
  r.contents.header.minor = index::kMinor;
  index::WriteNewAt(r.dst->fd(), "store.idx", r.contents, sync, r.dst_path + "/store.idx");
  index::Contents exp;
  exp.header = r.contents.header;
  r.placed.push_back("store.exp");
  index::WriteNewAt(r.dst->fd(), "store.exp", exp, sync, r.dst_path + "/store.exp");
  if (sync) Fsync(r.dst->fd(), r.dst_path);
}

// Undoes Stage() after a failure before the commit point. Only what this operation placed is
// removed, under the destination lock, so a folder created meanwhile cannot be harmed.
void Unstage(Relocation& r) noexcept {
  if (!r.dst) return;
  for (const std::string& name : r.placed) UnlinkAt(r.dst->fd(), name);
  for (const std::string& b : r.buckets) UnlinkAt(r.dst->fd(), b, AT_REMOVEDIR);
}

// Moves `moves` (and the user record, when `user_change`) with one transaction as the commit
// point. See docs/store-format.md §6.8.
void Relocate(Store& store, std::vector<Relocation>& moves, const UserChange* user_change) {
  Store::Db& db = store.db();
  const bool sync = store.durability() == Durability::kBatch;
  std::set<std::string> src_paths;
  for (Relocation& r : moves) {
    r.src_path = FolderPath(store, r.src_partition, r.src_user, r.src_folder);
    r.dst_path = FolderPath(store, r.dst_partition, r.dst_user, r.dst_folder);
    src_paths.insert(r.src_path);
  }
  for (const Relocation& r : moves)  // one process locking one directory twice would wait forever
    if (src_paths.count(r.dst_path)) Throw(Errc::kExists, "mailbox " + r.DstKey() + " is one of those being moved");
  EnsureDescriptors(2 * moves.size(), "locking " + std::to_string(2 * moves.size()) + " folders at once");

  for (Relocation& r : moves) {
    r.src = LockedDir::TryOpen(r.src_path, store);
    if (!r.src) Throw(Errc::kCorrupt, "mailbox " + r.SrcKey() + ": directory missing at " + r.src_path);
    std::string v;
    bool found = false;
    db.Txn([&](DB_TXN* txn) { found = db.Get(db.folder(), txn, r.SrcKey(), &v); });
    if (!found) Throw(Errc::kTempFail, "mailbox " + r.SrcKey() + " was deleted meanwhile; nothing changed");
    r.value = DecodeFolder(v, r.SrcKey());
    if (r.value.partition != r.src_partition)
      Throw(Errc::kTempFail, "mailbox " + r.SrcKey() + " was moved meanwhile; nothing changed");
    r.contents = ReadIndex(*r.src, true);
    r.peruser = ScanKeys(db, db.peruser(), r.SrcKey() + kNul);
  }
  std::vector<std::string> subscriptions;
  std::vector<std::string> reader_keys;
  std::set<std::string> acl_refs;
  const bool renames_user = user_change && user_change->old_user != user_change->new_user;
  if (renames_user) {
    subscriptions = ScanKeys(db, db.subscr(), user_change->old_user + kNul);
    reader_keys = PerUserKeysOfReader(db, user_change->old_user);
    acl_refs = OtherMailboxesNaming(db, user_change->old_user);
  }
  // A user's own mailbox names move with the user: "user/joe/x" -> "user/jim/x".
  auto renamed_mailbox = [&](const std::string& mailbox) {
    std::string own = "user/" + user_change->old_user + "/";
    return mailbox.starts_with(own) ? "user/" + user_change->new_user + "/" + mailbox.substr(own.size()) : mailbox;
  };

  std::string old_partition;  // the user's, before the change
  std::map<std::string, CrossFilesystemSharing> sharing;  // by destination partition
  try {
    for (Relocation& r : moves) {
      MakeDirs(r.dst_path, 0700);
      r.dst = std::make_unique<LockedDir>(r.dst_path, OpenFile(r.dst_path, O_RDONLY | O_DIRECTORY), store);
      if (r.DstKey() != r.SrcKey()) {
        std::string v;
        bool found = false;
        db.Txn([&](DB_TXN* txn) { found = db.Get(db.folder(), txn, r.DstKey(), &v); });
        if (found) Throw(Errc::kExists, "mailbox " + r.DstKey() + " exists");
      }
    }
    for (Relocation& r : moves) {
      auto it = sharing.find(r.dst_partition);
      if (it == sharing.end()) it = sharing.try_emplace(r.dst_partition, store, r.dst_partition).first;
      Stage(r, sync, it->second);
    }
    // A marker in each source directory, before the commit: a writer that waited for a source's
    // lock and finds it asks the mboxlist whether the folder is still there (Folder's
    // OpenIndexForWrite), so that a kill between the commit and the removal below cannot have it
    // commit into a folder nobody can see. Removed with the files, or by the failure path.
    for (Relocation& r : moves) {
      const std::string shown = r.src_path + "/" + kMovingMarker;
      UniqueFd marker(::openat(r.src->fd(), kMovingMarker, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
      if (!marker.valid()) ThrowErrno("create " + shown);
      if (sync) {
        Fsync(marker.get(), shown);
        Fsync(r.src->fd(), r.src_path);
      }
    }
    db.Txn(
        [&](DB_TXN* txn) {
          for (const Relocation& r : moves) {
            const std::string src_key = r.SrcKey(), dst_key = r.DstKey();
            FolderValue fv = r.value;
            fv.partition = r.dst_partition;
            if (renames_user) fv.acl = RewriteAcl(fv.acl, user_change->old_user, user_change->new_user);
            DelLrights(db, txn, r.value.acl, src_key);
            if (dst_key != src_key) {
              // Renamed, it is no longer what a `restore -n` run made under that name (swapped
              // into place, it would be taken for that run's own and merged into).
              fv.origin.clear();
              db.Del(db.folder(), txn, src_key);
              if (!db.PutNew(db.folder(), txn, dst_key, EncodeFolder(fv)))
                Throw(Errc::kExists, "mailbox " + dst_key + " exists");
            } else {
              db.Put(db.folder(), txn, dst_key, EncodeFolder(fv));
            }
            PutLrights(db, txn, fv.acl, dst_key);
            for (const std::string& key : r.peruser) {
              std::string data;
              if (!db.Get(db.peruser(), txn, key, &data, true)) continue;
              db.Del(db.peruser(), txn, key);
              db.Put(db.peruser(), txn, dst_key + key.substr(src_key.size()), data);
            }
            if (!user_change && dst_key != src_key) {  // the owner's subscription follows the rename
              std::string sub = r.src_user + kNul + src_key, unused;
              if (db.Get(db.subscr(), txn, sub, &unused, true)) {
                db.Del(db.subscr(), txn, sub);
                db.Put(db.subscr(), txn, r.dst_user + kNul + dst_key, "");
              }
            }
          }
          if (!user_change) return;
          std::string v;
          if (!db.Get(db.users(), txn, user_change->old_user, &v, true))
            Throw(Errc::kTempFail, "user " + user_change->old_user + " was deleted meanwhile; nothing changed");
          UserValue u = DecodeUser(v, user_change->old_user);
          old_partition = u.partition;
          u.partition = user_change->partition;
          if (!renames_user) {
            db.Put(db.users(), txn, user_change->old_user, EncodeUser(u));
            return;
          }
          // Marked, so that a backup running meanwhile can tell whether its scan passed the user
          // over (stream/backup.cc, RenamedBehindTheScan).
          u.renames.push_back(UserRename{RaiseUserRenameGeneration(db, txn), user_change->old_user});
          if (u.renames.size() > kUserRenamesKept) {
            u.renames.erase(u.renames.begin());
            u.renames_truncated = true;
          }
          if (!db.PutNew(db.users(), txn, user_change->new_user, EncodeUser(u)))
            Throw(Errc::kExists, "user " + user_change->new_user + " exists");
          db.Del(db.users(), txn, user_change->old_user);
          if (db.Get(db.quota(), txn, user_change->old_user, &v, true)) {
            db.Del(db.quota(), txn, user_change->old_user);
            db.Put(db.quota(), txn, user_change->new_user, v);
          }
          db.Del(db.verified(), txn, user_change->old_user);  // it described the old name
          for (const std::string& key : subscriptions) {
            std::string mailbox = key.substr(user_change->old_user.size() + 1);
            db.Del(db.subscr(), txn, key);
            db.Put(db.subscr(), txn, user_change->new_user + kNul + renamed_mailbox(mailbox), "");
          }
          for (const std::string& key : reader_keys) {
            std::string data;
            if (!db.Get(db.peruser(), txn, key, &data, true)) continue;
            db.Del(db.peruser(), txn, key);
            db.Put(db.peruser(), txn, key.substr(0, key.find('\0')) + kNul + user_change->new_user, data);
          }
          RewriteOtherAcls(db, txn, acl_refs, user_change->old_user, user_change->new_user);
        },
        true);
  } catch (...) {
    for (Relocation& r : moves) {
      if (r.src) ::unlinkat(r.src->fd(), kMovingMarker, 0);
      Unstage(r);
      if (r.dst) RemoveEmptyDirs(r.dst_path, HashDirPath(store, r.dst_partition, r.dst_user));
    }
    for (auto& [partition, shared] : sharing) shared.RemoveEntriesMade();
    throw;
  }

  // Committed: the old files are invisible now. Children before parents, so that emptied
  // directories can go.
  for (auto r = moves.rbegin(); r != moves.rend(); ++r) {
    RemoveFolderFiles(*r->src);
    std::string stop = user_change ? HashDirPath(store, r->src_partition, r->src_user)
                                   : FolderPath(store, r->src_partition, r->src_user, "INBOX");
    RemoveEmptyDirs(r->src_path, stop);
  }
  if (user_change) {
    const bool left = renames_user ? !store.FindUser(user_change->old_user) : old_partition != user_change->partition;
    if (left) RemoveUserDirectory(store, old_partition, user_change->old_user);
  }
}

std::vector<Relocation> UserRelocations(Store& store, std::string_view user, std::string_view new_user,
                                        std::string_view partition) {
  Store::Db& db = store.db();
  std::vector<Relocation> moves;
  const std::string prefix = "user/" + std::string(user) + "/";
  for (const auto& [key, value] : ScanAll(db, db.folder(), prefix)) {
    FolderValue fv = DecodeFolder(value, key);
    Relocation r;
    r.src_user = std::string(user);
    r.src_folder = key.substr(prefix.size());
    r.src_partition = fv.partition;
    r.dst_user = std::string(new_user);
    r.dst_folder = r.src_folder;
    r.dst_partition = partition.empty() ? fv.partition : std::string(partition);
    if (r.src_user == r.dst_user && r.src_partition == r.dst_partition) continue;
    moves.push_back(std::move(r));
  }
  return moves;
}

void RequirePartition(Store& store, std::string_view partition) {
  ValidatePartitionName(partition);
  if (!IsDirectory(store.PartitionPath(partition) + "/=user"))
    Throw(Errc::kNotFound, "store " + store.root() + ": no partition '" + std::string(partition) + "'");
}

UserInfo RequireUser(Store& store, std::string_view user) {
  std::optional<UserInfo> info = store.FindUser(user);
  if (!info) Throw(Errc::kNotFound, "no such user: " + std::string(user));
  return *info;
}

}  // namespace

AdminTarget ParseAdminTarget(std::string_view name) {
  if (name.starts_with("user/") && name.find('/', 5) == std::string_view::npos) {
    ValidateUserId(name.substr(5));
    return {std::string(name.substr(5)), ""};
  }
  if (name.starts_with("user/")) {
    auto [user, folder] = ParseStoredMailboxName(name);
    return {user, NormalizeFolder(folder)};
  }
  ValidateUserId(name);  // a bare user id: no '/' can pass
  return {std::string(name), ""};
}

// --- verification record --------------------------------------------------------------------------

UserFingerprint FingerprintUser(Store& store, std::string_view user) {
  ValidateUserId(user);
  FingerprintBuilder builder;
  for (const FolderInfo& info : store.ListFolders(user)) {
    FolderSnapshot snap = store.OpenFolder(user, info.folder)->Snapshot();
    index::Header h;
    h.uidvalidity = snap.info.uidvalidity;
    h.uidnext = snap.info.uidnext;
    h.count = snap.info.count;
    h.bytes = snap.info.bytes;
    builder.AddFolder(snap.info.folder, h, snap.info.user_flag_names, std::move(snap.messages));
  }
  return builder.Finish();
}

void RecordVerified(Store& store, std::string_view user, std::string_view destination) {
  RequireUser(store, user);
  if (destination.size() > UINT16_MAX) Throw(Errc::kInvalidArgument, "verification destination longer than 65535 bytes");
  VerifiedInfo info{std::string(destination), Now(), FingerprintUser(store, user)};
  Store::Db& db = store.db();
  db.Txn([&](DB_TXN* txn) { db.Put(db.verified(), txn, user, EncodeVerified(info)); }, true);
}

void RecordVerified(Store& store, std::string_view user, std::string_view destination,
                    const UserFingerprint& before_comparison) {
  RequireUser(store, user);
  if (destination.size() > UINT16_MAX) Throw(Errc::kInvalidArgument, "verification destination longer than 65535 bytes");
  VerifiedInfo info{std::string(destination), Now(), FingerprintUser(store, user)};
  if (info.fingerprint != before_comparison)
    Throw(Errc::kTempFail, "user " + std::string(user) + " changed while it was being verified; verify again");
  Store::Db& db = store.db();
  db.Txn([&](DB_TXN* txn) { db.Put(db.verified(), txn, user, EncodeVerified(info)); }, true);
}

std::optional<VerifiedInfo> GetVerified(Store& store, std::string_view user) {
  ValidateUserId(user);
  Store::Db& db = store.db();
  std::string v;
  bool found = false;
  db.Txn([&](DB_TXN* txn) { found = db.Get(db.verified(), txn, user, &v); });
  if (!found) return std::nullopt;
  return DecodeVerified(v, user);
}

bool ForgetVerified(Store& store, std::string_view user) {
  ValidateUserId(user);
  Store::Db& db = store.db();
  std::string v;
  bool found = false;  // the common case costs a read, not a synced commit
  db.Txn([&](DB_TXN* txn) { found = db.Get(db.verified(), txn, user, &v); });
  if (!found) return false;
  db.Txn([&](DB_TXN* txn) { db.Del(db.verified(), txn, user); }, true);
  return true;
}

bool VerifiedAndUnchanged(Store& store, std::string_view user) {
  std::optional<VerifiedInfo> verified = GetVerified(store, user);
  return verified && verified->fingerprint == FingerprintUser(store, user);
}

void RequireVerifiedAndUnchanged(Store& store, std::string_view user) {
  std::optional<VerifiedInfo> verified = GetVerified(store, user);
  CheckVerified(user, verified, verified ? FingerprintUser(store, user) : UserFingerprint{});
}

// --- deletion ---------------------------------------------------------------------------------------

std::string DeleteFolder(Store& store, std::string_view user, std::string_view folder,
                         const Store::UserWriteLock* held) {
  ValidateUserId(user);
  ValidateStoredFolderName(folder);
  const std::string name = NormalizeFolder(folder);
  const std::string key = MailboxKey(user, name);
  if (name == "INBOX")
    Throw(Errc::kInvalidArgument, "mailbox " + key + ": the INBOX is not deleted on its own; delete the user " +
                                      std::string(user) + " instead");
  Store::Db& db = store.db();
  // No restore may be building this user's mailboxes unpublished while files go (§6.9).
  if (held && held->user() != user)
    Throw(Errc::kInvalidArgument, "DeleteFolder: the write lock held is " + held->user() + "'s, not " + std::string(user) + "'s");
  std::optional<Store::UserWriteLock> write_lock;
  if (!held) write_lock.emplace(store.LockUserForWriting(user));
  std::string v;
  bool found = false;
  db.Txn([&](DB_TXN* txn) { found = db.Get(db.folder(), txn, key, &v); });
  if (!found) Throw(Errc::kNotFound, "no such mailbox: " + key);
  const FolderValue fv = DecodeFolder(v, key);
  const std::string path = FolderPath(store, fv.partition, user, name);

  // Under the lock no delivery can commit, so the header's byte count is what the quota holds
  // for this folder and goes down in the same transaction as the record.
  std::unique_ptr<LockedDir> dir = LockedDir::TryOpen(path, store);
  uint64_t bytes = 0;
  bool bytes_known = false;
  if (dir) {
    try {
      bytes = ReadIndex(*dir, false).header.bytes;
      bytes_known = true;
    } catch (const Error& e) {
      if (e.code() != Errc::kCorrupt && e.code() != Errc::kNotFound) throw;
    }
  }
  std::vector<std::string> peruser = ScanKeys(db, db.peruser(), key + kNul);
  db.Txn(
      [&](DB_TXN* txn) {
        std::string current;
        if (!db.Get(db.folder(), txn, key, &current, true)) Throw(Errc::kNotFound, "no such mailbox: " + key);
        DelLrights(db, txn, DecodeFolder(current, key).acl, key);
        db.Del(db.folder(), txn, key);
        for (const std::string& k : peruser) db.Del(db.peruser(), txn, k);
        std::string q;
        if (bytes && db.Get(db.quota(), txn, user, &q, true)) {
          auto [limit, used] = DecodeQuota(q, user);
          db.Put(db.quota(), txn, user, EncodeQuota(limit, used > bytes ? used - bytes : 0));
        }
      },
      true);
  RemoveAfterCommit(key, [&] {
    if (!dir) return;
    RemoveFolderFiles(*dir);
    RemoveEmptyDirs(path, FolderPath(store, fv.partition, user, "INBOX"));
    dir.reset();
  });
  if (!bytes_known) store.RecomputeQuota(user);  // no readable index: count what is left instead
  return key;
}

std::vector<std::string> DeleteUser(Store& store, std::string_view user, DeleteUserOptions options) {
  ValidateUserId(user);
  RequireUser(store, user);  // no lock file is made for a name that is no user
  Store::UserWriteLock write_lock = store.LockUserForWriting(user);
  // Read under the lock: a status read before it could be one a migrate's switch (or a
  // concurrent delete) has changed since, and this deletion would act on the old one.
  const UserInfo info = RequireUser(store, user);
  Store::Db& db = store.db();

  // A user with mailboxes that is not moved gets its mail here (active) or has it queued for
  // here (hold): deleted, its record goes and that mail bounces as unknown (67), where a moved
  // user's record stays and defers it (helper-119, helper-120). Refused before anything changes,
  // after the verification's own refusals.
  // The records alone: a folder whose directory or index is damaged is named by the checks below.
  if (!options.force && info.status.state != UserState::kMoved &&
      !store.ListFolders(user, Store::FolderDetail::kRecordOnly).empty()) {
    RequireVerifiedAndUnchanged(store, user);
    const bool held = info.status.state == UserState::kHold;
    Throw(Errc::kTempFail, "user " + std::string(user) + " is " + (held ? "on hold" : "active") + " here: its mail " +
                               (held ? "is queued for here" : "is still delivered here") +
                               ", and would bounce as unknown once it is deleted. Send its mail to its new host "
                               "first (storemove user " + std::string(user) +
                               " --status moved:HOST keeps a record that defers late mail), or use --force" +
                               (held ? " (a delete --force that was interrupted leaves its user on hold: run it again)"
                                     : ""));
  }

  // Hold first: the MTA keeps new mail for the user queued instead of delivering (or, with
  // deliver --create, recreating folders) while the user is being deleted. A moved user refuses
  // delivery already, and keeps its status throughout: a kill -9 between a hold and the final
  // transaction would leave it on hold, its mail queued here instead of routed to its new host,
  // and a rerun of migrate would take it for a user not yet moved.
  const bool status_kept = info.status.state == UserState::kHold || info.status.state == UserState::kMoved;
  if (options.before_hold) options.before_hold();
  bool held_here = false;
  if (!status_kept) {
    // Not over a move made since the read (`user --status moved:HOST` takes no write lock): the
    // hold overwrote it, and the deletion then removed the record that defers late mail.
    const auto before = store.SetUsersStatus({std::string(user)}, UserStatus{UserState::kHold, ""},
                                             Store::MovedUsers::kLeave);
    held_here = before.at(0).second.state != UserState::kMoved;
  }
  if (options.before_folders) options.before_folders();

  struct Doomed {
    std::string key, folder, path;
    FolderValue value;
    std::unique_ptr<LockedDir> dir;
  };
  std::vector<Doomed> doomed;
  const std::string prefix = "user/" + std::string(user) + "/";
  try {
    for (auto& [key, value] : ScanAll(db, db.folder(), prefix)) {
      Doomed d;
      d.folder = key.substr(prefix.size());
      d.value = DecodeFolder(value, key);
      d.path = FolderPath(store, d.value.partition, user, d.folder);
      d.key = std::move(key);
      doomed.push_back(std::move(d));
    }
    EnsureDescriptors(doomed.size(), "locking " + std::to_string(doomed.size()) + " folders at once");
    // With every folder locked nothing can change, so the fingerprint compared with the
    // verification record is exactly what gets deleted.
    FingerprintBuilder builder;
    for (Doomed& d : doomed) {
      d.dir = LockedDir::TryOpen(d.path, store);
      if (options.force) continue;
      if (!d.dir) Throw(Errc::kCorrupt, "mailbox " + d.key + ": directory missing at " + d.path + " (use --force)");
      index::Contents c = ReadIndex(*d.dir, true);
      builder.AddFolder(d.folder, c.header, c.user_flag_names, std::move(c.records));
    }
    // No folder left (a moved user's record, or a rerun of a delete killed after its commit,
    // which removed the verification too): nothing the guard protects, and it refused the rerun
    // with 75 for ever (helper-98).
    if (!options.force && !doomed.empty()) CheckVerified(user, GetVerified(store, user), builder.Finish());

    std::vector<std::string> subscriptions = ScanKeys(db, db.subscr(), std::string(user) + kNul);
    std::vector<std::string> peruser = PerUserKeysOfReader(db, user);
    for (const Doomed& d : doomed) {
      std::vector<std::string> keys = ScanKeys(db, db.peruser(), d.key + kNul);
      peruser.insert(peruser.end(), keys.begin(), keys.end());
    }
    std::set<std::string> acl_refs = OtherMailboxesNaming(db, user);
    db.Txn(
        [&](DB_TXN* txn) {
          std::string v;
          if (!db.Get(db.users(), txn, user, &v, true)) Throw(Errc::kNotFound, "no such user: " + std::string(user));
          // The status as committed now: one that a process without the user's write lock set
          // (`storemove user --status`) since the read above counts.
          const UserStatus now = DecodeUser(v, user).status;
          if (now.state == UserState::kMoved) {
            // A migrated user keeps its forwarding answer: late mail is deferred (and routed to
            // the new host), not bounced as unknown (docs/store-format.md §6.7). The record stays
            // as it is.
          } else if (info.status.state == UserState::kMoved && !options.force) {
            // Taken back meanwhile (`user --status active --include-moved`): its mail comes here
            // again, and the guard above would have refused it (helper-124).
            Throw(Errc::kTempFail, "user " + std::string(user) + " was set " + now.ToString() +
                                       " while it was being deleted; nothing was deleted (its mail would bounce "
                                       "as unknown once its record is gone)");
          } else {
            db.Del(db.users(), txn, user);
          }
          db.Del(db.quota(), txn, user);
          db.Del(db.verified(), txn, user);
          for (const Doomed& d : doomed) {
            if (!db.Get(db.folder(), txn, d.key, &v, true)) continue;
            DelLrights(db, txn, DecodeFolder(v, d.key).acl, d.key);
            db.Del(db.folder(), txn, d.key);
          }
          for (const std::string& k : subscriptions) db.Del(db.subscr(), txn, k);
          for (const std::string& k : peruser) db.Del(db.peruser(), txn, k);
          RewriteOtherAcls(db, txn, acl_refs, user, "");
        },
        true);
  } catch (...) {
    doomed.clear();  // unlock before touching the user record again
    if (held_here) {
      try {
        // Only the hold this deletion set goes back: a status set since (moved by a migrate's
        // switch) stays.
        std::optional<UserInfo> now = store.FindUser(user);
        if (now && now->status.state == UserState::kHold) store.SetUserStatus(user, info.status);
      } catch (const Error&) {
        // the original failure is the one to report; the user stays on hold
      }
    }
    throw;
  }

  std::vector<std::string> deleted;
  RemoveAfterCommit("user " + std::string(user), [&] {
    for (auto d = doomed.rbegin(); d != doomed.rend(); ++d) {
      if (d->dir) {
        RemoveFolderFiles(*d->dir);
        RemoveEmptyDirs(d->path, HashDirPath(store, d->value.partition, user));
        d->dir.reset();
      }
      deleted.push_back(d->key);
    }
    // What an earlier run killed after its commit left, on any partition: no rerun found it, the
    // user's record being gone (helper-96). Still under the write lock, with no folder recorded.
    for (const std::string& partition : store.Partitions())
      RemoveUnrecordedFolderFiles(store, FolderPath(store, partition, user, "INBOX"));
    if (!store.FindUser(user)) RemoveUserDirectory(store, info.partition, user);  // unless created again
  });
  return deleted;
}

size_t RemoveLeftoversOfDeleted(Store& store, std::string_view user, std::string_view folder) {
  ValidateUserId(user);
  const std::string name = folder.empty() ? "" : NormalizeFolder(folder);
  if (!folder.empty()) ValidateStoredFolderName(folder);
  if (name == "INBOX") return 0;  // never deleted alone: its directory is the user's
  Store::UserWriteLock write_lock = store.LockUserForWriting(user);  // no creation of its folders meanwhile
  Store::Db& db = store.db();
  const std::string key = name.empty() ? "user/" + std::string(user) + "/" : MailboxKey(user, name);
  bool recorded = false;
  db.Scan(db.folder(), key, [&](std::string_view k, std::string_view) {
    // The whole user: any folder. One mailbox: itself only. Its sub-folders' files are in their
    // own `+` directories, which RemoveFolderFiles leaves (helper-99: a recorded Work/Sub kept
    // Work's leftovers for good).
    recorded = name.empty() || k == key;
    return !recorded;
  });
  if (recorded || (name.empty() && store.FindUser(user))) return 0;
  size_t swept = 0;
  for (const std::string& partition : store.Partitions()) {
    const std::string path = FolderPath(store, partition, user, name.empty() ? "INBOX" : name);
    if (name.empty()) {
      swept += RemoveUnrecordedFolderFiles(store, path);
      RemoveUserDirectory(store, partition, user);
      continue;
    }
    std::unique_ptr<LockedDir> dir = LockedDir::TryOpen(path, store);
    if (!dir || !HoldsFolderFiles(*dir)) continue;
    ++swept;
    RemoveFolderFiles(*dir);
    dir.reset();
    RemoveEmptyDirs(path, FolderPath(store, partition, user, "INBOX"));
  }
  return swept;
}

// --- rename and moves -------------------------------------------------------------------------------

std::vector<Renamed> RenameFolder(Store& store, std::string_view user, std::string_view old_folder,
                                  std::string_view new_folder) {
  ValidateUserId(user);
  ValidateStoredFolderName(old_folder);
  ValidateFolderName(new_folder);
  const std::string from = NormalizeFolder(old_folder), to = NormalizeFolder(new_folder);
  const std::string from_key = MailboxKey(user, from), to_key = MailboxKey(user, to);
  if (from == "INBOX")
    Throw(Errc::kInvalidArgument, "mailbox " + from_key +
                                      ": renaming the INBOX is refused (IMAP would move its messages into a new "
                                      "folder); to rename the user give user/" + std::string(user) + " as the name");
  if (from == to) Throw(Errc::kInvalidArgument, "mailbox " + from_key + ": old and new names are the same");
  if (to.starts_with(from + "/"))
    Throw(Errc::kInvalidArgument, "mailbox " + from_key + " cannot be renamed into itself (" + to_key + ")");
  Store::UserWriteLock write_lock = store.LockUserForWriting(user);  // no unpublished target under a restore
  const UserInfo info = RequireUser(store, user);
  // Its mailbox is live at its new host: a folder renamed here would not be renamed there, and a
  // later verify or a move back would meet two names (helper-75: accepted, exit 0).
  if (info.status.state == UserState::kMoved)
    Throw(Errc::kInvalidArgument, "user " + std::string(user) + " is marked moved to " + info.status.host +
                                      " here: its mail lives there, so rename its folders there");
  Store::Db& db = store.db();

  std::vector<Relocation> moves;
  for (const auto& [key, value] : ScanAll(db, db.folder(), from_key)) {
    if (key != from_key && !key.starts_with(from_key + "/")) continue;  // "Old2" is not a child of "Old"
    FolderValue fv = DecodeFolder(value, key);
    Relocation r;
    r.src_user = r.dst_user = std::string(user);
    r.src_folder = key.substr(("user/" + std::string(user) + "/").size());
    r.src_partition = r.dst_partition = fv.partition;
    r.dst_folder = to + r.src_folder.substr(from.size());
    ValidateFolderName(r.dst_folder);
    moves.push_back(std::move(r));
  }
  if (moves.empty() || moves.front().src_folder != from) Throw(Errc::kNotFound, "no such mailbox: " + from_key);
  for (const Relocation& r : moves) {
    std::string v;
    bool found = false;
    db.Txn([&](DB_TXN* txn) { found = db.Get(db.folder(), txn, r.DstKey(), &v); });
    if (found) Throw(Errc::kExists, "mailbox " + r.DstKey() + " exists");
  }
  Relocate(store, moves, nullptr);
  std::vector<Renamed> out;
  for (const Relocation& r : moves) out.push_back({r.SrcKey(), r.DstKey()});
  return out;
}

std::vector<Renamed> RenameUser(Store& store, std::string_view old_user, std::string_view new_user,
                                std::string_view partition) {
  ValidateUserId(old_user);
  ValidateNewUserId(new_user);
  if (!partition.empty()) RequirePartition(store, partition);
  if (old_user == new_user) Throw(Errc::kInvalidArgument, "user " + std::string(old_user) + ": old and new names are the same");
  // Both names, in name order so two renames never wait for each other in a cycle.
  Store::UserWriteLock first = store.LockUserForWriting(std::min(old_user, new_user));
  Store::UserWriteLock second = store.LockUserForWriting(std::max(old_user, new_user));
  UserInfo info = RequireUser(store, old_user);
  // Its record here answers deliveries with "moved to HOST" (deferred); renamed, mail to the old
  // name would bounce as an unknown user, and a restore of it would no longer be refused.
  if (info.status.state == UserState::kMoved)
    Throw(Errc::kInvalidArgument, "user " + std::string(old_user) + " is marked moved to " + info.status.host +
                                      " here: its mail lives there, so rename it there (renamed here, mail to " +
                                      std::string(old_user) + " would bounce instead of being deferred to " +
                                      info.status.host + ")");
  if (store.FindUser(new_user)) Throw(Errc::kExists, "user " + std::string(new_user) + " exists");
  std::vector<Relocation> moves = UserRelocations(store, old_user, new_user, partition);
  UserChange change{std::string(old_user), std::string(new_user), partition.empty() ? info.partition : std::string(partition)};
  Relocate(store, moves, &change);
  std::vector<Renamed> out;
  for (const Relocation& r : moves) out.push_back({r.SrcKey(), r.DstKey()});
  return out;
}

// A folder directory nothing leads to, and its sub-folders: children first, each under its
// folder lock with store.idx removed first (RemoveFolderFiles), so a writer that had it open
// fails (OpenIndexForWrite: no record leads here) instead of committing into it.
void RemoveUnreferencedFolderTree(Store& store, const std::string& path) {
  std::unique_ptr<LockedDir> dir = LockedDir::TryOpen(path, store);
  if (!dir) return;
  for (const std::string& name : DirEntries(dir->fd(), path)) {
    struct stat st;
    if (name[0] == '+' && ::fstatat(dir->fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
      RemoveUnreferencedFolderTree(store, path + "/" + name);
  }
  RemoveFolderFiles(*dir);
  UnlinkIfPresent(dir->fd(), "user.lck", 0, path + "/user.lck");
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT && errno != ENOTEMPTY) ThrowErrno("rmdir " + path);
}

bool MoveUser(Store& store, std::string_view user, std::string_view partition) {
  ValidateUserId(user);
  RequirePartition(store, partition);
  Store::UserWriteLock write_lock = store.LockUserForWriting(user);
  UserInfo info = RequireUser(store, user);
  std::vector<Relocation> moves = UserRelocations(store, user, user, partition);
  if (moves.empty() && info.partition == partition) {
    // Every folder is here. A move killed after its commit (§6.8, step 5) left the user's old
    // tree on another partition, where it kept its space and pinned that partition's repository
    // entries against `relink -d` for good (helper-68): the rerun removes it.
    struct stat here, there;
    const bool have_here = ::stat(FolderPath(store, partition, user, "INBOX").c_str(), &here) == 0;
    for (const std::string& other : store.Partitions()) {
      if (other == partition) continue;
      const std::string old_tree = FolderPath(store, other, user, "INBOX");
      if (::stat(old_tree.c_str(), &there) != 0 || !S_ISDIR(there.st_mode)) continue;
      // Two partition names that lead to one directory (a symbolic link) hold the user's live tree.
      if (have_here && here.st_dev == there.st_dev && here.st_ino == there.st_ino) continue;
      RemoveUnreferencedFolderTree(store, old_tree);
      RemoveEmptyDirs(Parent(old_tree), HashDirPath(store, other, user));
    }
    return false;
  }
  UserChange change{std::string(user), std::string(user), std::string(partition)};
  Relocate(store, moves, &change);
  return true;
}

}  // namespace storemove::store
