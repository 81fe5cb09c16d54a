#include "relinker/relinker.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bitset>
#include <cctype>
#include <cerrno>
#include <map>
#include <memory>
#include <mutex>
#include <cstring>

#include "relinker/list_directory.h"
#include "store/message_owner.h"
#include "store/stale_temporaries.h"
#include "util/error.h"

namespace storemove::relinker {

bool SameContent(int fd_a, int fd_b) { return SameFileContent(fd_a, fd_b); }

bool SameContent(const std::string& path_a, const std::string& path_b) {
  UniqueFd a = OpenFile(path_a, O_RDONLY), b = OpenFile(path_b, O_RDONLY);
  return SameContent(a.get(), b.get());
}

IncomingMatcher::IncomingMatcher(UniqueFd existing, uint64_t expected_size)
    : fd_(std::move(existing)), size_(expected_size) {}

bool IncomingMatcher::Feed(const void* data, size_t size) {
  if (mismatched_) return false;
  if (matched_ + size > size_) {
    mismatched_ = true;
    return false;
  }
  buf_.resize(size);
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::pread(fd_.get(), buf_.data() + got, size - got, off_t(matched_ + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      ThrowErrno("read repository file");
    }
    if (n == 0) break;
    got += size_t(n);
  }
  if (got != size || std::memcmp(buf_.data(), data, size) != 0) {
    mismatched_ = true;
    return false;
  }
  matched_ += size;
  return true;
}

Repository::Repository(std::string partition_dir, RepositoryOptions options)
    : root_(partition_dir + "/=digest"), options_(options), layout_(store::ReadRepositoryLayout(partition_dir)) {}

std::string Repository::EntryPath(const Digest& digest) const {
  return store::RepositoryEntryPath(root_, layout_, digest);
}

namespace {

bool IsHexByteName(std::string_view name) {
  return name.size() == 2 && std::isxdigit(static_cast<unsigned char>(name[0])) &&
         std::isxdigit(static_cast<unsigned char>(name[1]));
}

}  // namespace

std::vector<std::string> Repository::BucketDirectories() const {
  std::vector<std::string> dirs;
  if (!PathExists(root_)) return dirs;
  for (const std::string& h1 : ListDirectory(root_)) {
    if (!IsHexByteName(h1)) continue;  // the marker, a temporary name
    const std::string dir = root_ + "/" + h1;
    if (layout_ == store::RepositoryLayout::kFlat) {
      dirs.push_back(dir);
      continue;
    }
    for (const std::string& h2 : ListDirectory(dir))
      if (IsHexByteName(h2)) dirs.push_back(dir + "/" + h2);
  }
  return dirs;
}

bool Repository::Empty() const {
  if (!PathExists(root_)) return true;
  for (const std::string& name : ListDirectory(root_))
    if (name != store::kFlatRepositoryMarker) return false;
  return true;
}

UniqueFd Repository::OpenEntry(const Digest& digest, uint64_t size) const {
  std::string path = EntryPath(digest);
  // O_NONBLOCK: a FIFO planted as an entry opens at once instead of waiting for a writer.
  UniqueFd fd = TryOpenAt(AT_FDCWD, path, O_RDONLY | O_NONBLOCK, 0, path);
  if (!fd.valid()) return fd;
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) ThrowErrno("stat " + path);
  // Refused as a symlink is: the repository is damaged, and no one is to link to or read it.
  if (!S_ISREG(st.st_mode)) Throw(Errc::kCorrupt, path + " is not a regular file; refusing to use it");
  if (uint64_t(st.st_size) != size) return UniqueFd();
  return fd;
}

namespace {

// Which of a repository's bucket directories (256 <h1> or 65,536 <h1>/<h2>) this process already knows to exist
// (8 KiB per repository), so that adding an entry is one link(2), not a failed link, mkdirs
// and a second link.
class KnownDirectories {
 public:
  static bool Known(const std::string& root, size_t index) {
    std::lock_guard<std::mutex> lock(mutex_);
    return bits_[root].test(index);
  }
  static void Mark(const std::string& root, size_t index) {
    std::lock_guard<std::mutex> lock(mutex_);
    bits_[root].set(index);
  }

 private:
  static inline std::mutex mutex_;
  static inline std::map<std::string, std::bitset<65536>> bits_;
};

}  // namespace

bool Repository::AddIfMissing(const Digest& digest, const std::string& file) {
  if (options_.max_links) {  // the limit a test sets, as the filesystem's EMLINK would
    struct stat st;
    if (::lstat(file.c_str(), &st) == 0 && uint64_t(st.st_nlink) >= options_.max_links) return false;
  }
  std::string entry = EntryPath(digest);
  size_t dir_index = layout_ == store::RepositoryLayout::kFlat ? size_t(digest.bytes[0])
                                                                 : size_t(digest.bytes[0]) << 8 | digest.bytes[1];
  if (!KnownDirectories::Known(root_, dir_index)) {
    MakeDirs(entry.substr(0, entry.rfind('/')), 0700);
    KnownDirectories::Mark(root_, dir_index);
  }
  int err = LinkPath(file, entry);
  if (err == 0) return true;
  if (err == EEXIST || err == EMLINK) return false;
  if (err != ENOENT) ThrowMakingErrno("link " + file + " to " + entry, err, file);
  MakeDirs(entry.substr(0, entry.rfind('/')), 0700);
  err = LinkPath(file, entry);
  if (err == 0) return true;
  if (err != EEXIST && err != EMLINK) ThrowMakingErrno("link " + file + " to " + entry, err, file);
  return false;
}

bool Repository::AddIfMissing(const Digest& digest, int dirfd, const std::string& name, const std::string& shown) {
  const std::string entry = EntryPath(digest);
  const std::string bucket = entry.substr(0, entry.rfind('/'));
  if (layout_ != store::RepositoryLayout::kFlat) {
    // 65,536 buckets: too many to keep open; the entry's directory is walked to from the root.
    if (!KnownDirectories::Known(root_, size_t(digest.bytes[0]) << 8 | digest.bytes[1])) return AddIfMissing(digest, shown);
    int err = LinkAt(dirfd, name, AT_FDCWD, entry);
    if (err == 0) return true;
    if (err == EEXIST || err == EMLINK) return false;
    return AddIfMissing(digest, shown);  // the bucket went missing, or an error to name
  }
  const size_t index = digest.bytes[0];
  if (bucket_fds_.empty()) {
    bucket_fds_.resize(256);
    // 256 open directories beside a restore's own descriptors need a limit of ~300: a default
    // one (raised to the hard limit at start) has room; under `ulimit -n 256` restore failed
    // half-way with EMFILE (helper-123), so there each link opens its bucket and closes it.
    struct rlimit files;
    keep_buckets_open_ =
        ::getrlimit(RLIMIT_NOFILE, &files) != 0 || files.rlim_cur == RLIM_INFINITY || files.rlim_cur >= 1024;
  }
  const std::string leaf = entry.substr(entry.rfind('/') + 1);
  for (int attempt = 0; attempt < 2; ++attempt) {
    UniqueFd& fd = bucket_fds_[index];
    if (!fd.valid()) {
      if (attempt > 0 || !KnownDirectories::Known(root_, index)) {
        MakeDirs(bucket, 0700);
        KnownDirectories::Mark(root_, index);
      }
      fd = TryOpenAt(AT_FDCWD, bucket, O_PATH | O_DIRECTORY, 0, bucket);
      // Known to this process but removed since (an operator's rm, a store made again at the
      // same path): the next attempt makes it.
      if (!fd.valid() && attempt == 0) continue;
      if (!fd.valid()) Throw(Errc::kNotFound, "open " + bucket + ": no such file or directory");
    }
    int err = LinkAt(dirfd, name, fd.get(), leaf);
    if (!keep_buckets_open_) fd.reset();
    if (err == 0) return true;
    if (err == EEXIST || err == EMLINK) return false;
    if (err != ENOENT || attempt > 0) ThrowMakingErrno("link " + shown + " to " + entry, err, shown);
    fd.reset();  // the bucket was removed meanwhile (or the file is gone: the next attempt names it)
  }
  return false;  // not reached
}

void Repository::Replace(const Digest& digest, const std::string& file) {
  std::string entry = EntryPath(digest);
  MakeDirs(entry.substr(0, entry.rfind('/')), 0700);
  std::string tmp = entry + ".tmp." + RandomToken();
  if (int err = LinkPath(file, tmp)) ThrowMakingErrno("link " + file + " to " + tmp, err, file);
  if (int err = RenameReplacing(AT_FDCWD, tmp, AT_FDCWD, entry)) {  // an entry of that very file: no tmp left
    UnlinkPath(tmp);
    ThrowErrno("rename " + tmp + " to " + entry, err);
  }
}

bool Repository::LinkToEntry(const Digest& digest, int entry, int folder_dirfd, int dirfd, const std::string& name,
                             const std::string& shown) const {
  struct stat es, fs;
  if (::fstat(entry, &es) != 0) ThrowErrno("stat " + EntryPath(digest));
  if (::fstatat(dirfd, name.c_str(), &fs, AT_SYMLINK_NOFOLLOW) != 0) ThrowErrno("stat " + shown);
  if (es.st_dev == fs.st_dev && es.st_ino == fs.st_ino) return false;
  if (!store::SameOwnerAndMode(es, fs)) return false;
  if (options_.max_links && uint64_t(es.st_nlink) >= options_.max_links) return false;
  // A name the stale-temporary sweeps know (tmp.<pid>.<token>), where they look, should a kill
  // leave it.
  const std::string temp = store::NewTemporaryName();
  const std::string entry_path = EntryPath(digest);
  if (int err = LinkAt(AT_FDCWD, entry_path, folder_dirfd, temp)) {
    if (err == EMLINK || err == ENOENT || err == EXDEV) return false;
    ThrowErrno("link " + entry_path + " beside " + shown, err);
  }
  struct stat made;
  if (::fstatat(folder_dirfd, temp.c_str(), &made, AT_SYMLINK_NOFOLLOW) != 0 || made.st_dev != es.st_dev ||
      made.st_ino != es.st_ino) {
    ::unlinkat(folder_dirfd, temp.c_str(), 0);  // the entry was replaced since it was compared
    return false;
  }
  // The entry is another session's new file, which that session syncs only at its end: written
  // out before the rename, so a power cut cannot leave `name` naming a file with no data where it
  // held a complete message. No device flush: free when the data is written already.
  if (::sync_file_range(entry, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) !=
          0 &&
      errno != ESPIPE && errno != EINVAL) {
    const int err = errno;
    ::unlinkat(folder_dirfd, temp.c_str(), 0);
    ThrowErrno("write " + entry_path + " back", err);
  }
  if (options_.before_link_rename) options_.before_link_rename();
  if (int err = RenameAt(folder_dirfd, temp, dirfd, name)) {
    ::unlinkat(folder_dirfd, temp.c_str(), 0);
    ThrowErrno("replace " + shown + " by a link to " + entry_path, err);
  }
  return true;
}

std::optional<store::StagedMessage> Repository::StageLink(store::Folder& folder, const std::string& existing,
                                                           const store::MessageMeta& meta) const {
  struct stat st;
  UniqueFd fd = TryOpenAt(AT_FDCWD, existing, O_PATH, 0, existing);
  if (fd.valid() && ::fstat(fd.get(), &st) == 0) {
    if (options_.max_links && uint64_t(st.st_nlink) >= options_.max_links) return std::nullopt;
    if (!store::AsNewMessage(st)) return std::nullopt;
  }
  return folder.StageLink(existing, meta);
}

}  // namespace storemove::relinker
