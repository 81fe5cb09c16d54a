// Thin, error-checked wrappers over the POSIX calls storemove uses. Every failure throws
// storemove::Error naming the path. Paths from untrusted input must be validated by the
// caller.
//
// No symlink below a store is ever followed, so a planted one cannot redirect a read or a write
// out of the store: a name relative to a directory fd is resolved beneath that directory without
// following any symlink (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or a component-by-component
// O_NOFOLLOW walk on kernels without openat2), and a path below a registered TrustedRoot (every
// open Store registers its root) is resolved the same way beneath that root. Meeting a symlink
// throws kCorrupt "<path> is a symbolic link; refusing to follow it". Paths outside every
// trusted root (stream files, export output) only get O_NOFOLLOW on their last component.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace storemove {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// open(2) with O_CLOEXEC|O_NOFOLLOW added; throws on failure ("open <path>: <reason>").
UniqueFd OpenFile(const std::string& path, int flags, mode_t mode = 0644);
// openat(2) relative to dirfd; `shown` is the path used in error messages.
UniqueFd OpenAt(int dirfd, const std::string& name, int flags, mode_t mode, const std::string& shown);
// Opens a directory (O_DIRECTORY|O_RDONLY); throws kNotFound if missing.
UniqueFd OpenDirectory(const std::string& path);
// openat(2) of `name` beneath dirfd as TryOpenAt does it, but a failure is returned as -errno
// (-ENOENT: it does not exist) for the caller to act on; only a symlink met throws.
int OpenAtOrErrno(int dirfd, const std::string& name, int flags);
// Returns an invalid fd instead of throwing when the entry does not exist.
UniqueFd TryOpenAt(int dirfd, const std::string& name, int flags, mode_t mode, const std::string& shown);
// Creates `name` beneath dirfd, write-only, with O_CREAT|O_EXCL. A name that exists already (the
// leftover of an interrupted run: a file, a hard link shared with other mailboxes, a symlink) is
// unlinked, never opened or truncated, and the create retried: one system call when the name is
// free, where an unlink first would cost two. Throws naming `shown`.
UniqueFd CreateReplacingAt(int dirfd, const std::string& name, mode_t mode, const std::string& shown);
// Opens `name` beneath dirfd read-only only if every component of the path is in the kernel's
// lookup cache (openat2 RESOLVE_CACHED): the fd, or -errno, where -EAGAIN means "would have
// to wait for the disk" (or a kernel without RESOLVE_CACHED). Any failure is for the caller to
// retry with TryOpenAt, which names the error; symlinks are refused the same way (-ELOOP/-EXDEV).
int OpenIfCached(int dirfd, const std::string& name);
// preadv2(RWF_NOWAIT): bytes read from the page cache without waiting for the disk; -EAGAIN when
// the data is not all in memory, -EOPNOTSUPP when the filesystem cannot say (tmpfs), other
// failures as -errno.
ssize_t PreadIfCached(int fd, void* data, size_t size, off_t offset);
// Whether fd's filesystem keeps everything in memory (tmpfs, ramfs): reads never wait for a disk.
bool OnMemoryFilesystem(int fd);
// The same for a path; false when it cannot be opened (the caller's own open will say why).
bool PathOnMemoryFilesystem(const std::string& path);

// An entry of a directory listing: its name and its S_IFMT type bits, never followed through a link.
struct DirEntry {
  std::string name;
  mode_t type;
};
// The entries of the directory `dirfd` (not . and ..), in the order readdir gives them; `shown`
// names it in errors (EMFILE, a stat or readdir failure).
std::vector<DirEntry> ListDirectoryAt(int dirfd, const std::string& shown);
// The same, one entry at a time, for a directory too large to list in memory (a Maildir cur/).
void ForEachDirectoryEntry(int dirfd, const std::string& shown, const std::function<void(DirEntry&)>& each);

// A new, empty, already unlinked file for the process's own scratch data, in $TMPDIR (else
// /tmp), which *dir is set to: O_TMPFILE, or a named file unlinked at once where the
// filesystem lacks it. Invalid with errno set when it cannot be made.
UniqueFd OpenAnonymousTemporary(std::string* dir);

void WriteAll(int fd, const void* data, size_t size, const std::string& shown);
void PwriteAll(int fd, const void* data, size_t size, off_t offset, const std::string& shown);
// Reads exactly `size` bytes at `offset`; throws kCorrupt("<shown>: short read") on EOF.
void PreadAll(int fd, void* data, size_t size, off_t offset, const std::string& shown);
// Reads up to size bytes, returns bytes read (0 at EOF), retrying EINTR.
size_t ReadSome(int fd, void* data, size_t size, const std::string& shown);

std::string ReadFile(const std::string& path);
// Writes a whole file through a temporary name + fsync + rename in the same directory.
void WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode = 0644);
// The same for content made as it is written: `fill` calls its argument with each piece, so that
// a large file is never held whole.
void WriteFileAtomicFrom(const std::string& path,
                         const std::function<void(const std::function<void(std::string_view)>&)>& fill,
                         mode_t mode = 0644);
// Makes sure `count` more descriptors fit under RLIMIT_NOFILE (raising the soft limit up to the
// hard one) for a caller that holds one per locked folder or user; kInvalidArgument naming
// `what` when the hard limit is too low.
void EnsureDescriptors(size_t count, std::string_view what);
// True when the two open files hold exactly the same bytes: the same inode, or sizes equal and
// then the contents compared in blocks. (relinker::SameContent; store's moves use it too.)
bool SameFileContent(int fd_a, int fd_b);
// The same check without raising or throwing: empty when `count` more descriptors fit under the
// hard limit, else "needs N open files; the limit is M (ulimit -n)" (for a plan that warns).
std::string DescriptorShortfall(size_t count);

void Fsync(int fd, const std::string& shown);
void FsyncPath(const std::string& dir);

// mkdir -p; existing directories are fine. True when this call made the last level (so nothing a
// killed process left can be in it), false when it was there.
bool MakeDirs(const std::string& path, mode_t mode = 0755);
bool PathExists(const std::string& path);
bool IsDirectory(const std::string& path);
// Whether two paths name one file or directory (st_dev and st_ino, links followed): one store
// reached through a symlink, `a/../a` or a bind mount is still one store. False when either
// cannot be stat'ed (the caller's own open says why).
bool SameFile(const std::string& a, const std::string& b);

// While it lives, paths below `root` are resolved beneath it without following symlinks. With
// `store_layout`, the entry partition/<name> may itself be a symlink (the operator's way to put a
// partition on another disk); nothing below it may. The root path itself is trusted as given.
class TrustedRoot {
 public:
  TrustedRoot() = default;
  TrustedRoot(const std::string& root, bool store_layout);
  TrustedRoot(TrustedRoot&& o) noexcept : id_(std::exchange(o.id_, 0)) {}
  TrustedRoot& operator=(TrustedRoot&& o) noexcept;
  TrustedRoot(const TrustedRoot&) = delete;
  TrustedRoot& operator=(const TrustedRoot&) = delete;
  ~TrustedRoot();

 private:
  uint64_t id_ = 0;
};

// *at(2) calls whose names are resolved as above (dirfd AT_FDCWD: a path, trusted root or not).
// They return 0 or the errno (the caller decides what is expected: EEXIST, ENOENT, EMLINK, ...);
// only a symlink met on the way throws. A missing parent directory gives ENOENT.
int LinkAt(int olddirfd, const std::string& oldname, int newdirfd, const std::string& newname);
// ThrowErrno for a call that made a file, directory or link on the filesystem of `on` (an
// existing path there): an ENOSPC where no inodes are left (tmpfs counts each link) says so.
[[noreturn]] void ThrowMakingErrno(const std::string& what, int err, const std::string& on);
int RenameAt(int olddirfd, const std::string& oldname, int newdirfd, const std::string& newname,
             unsigned int flags = 0);  // flags: renameat2's (RENAME_EXCHANGE, RENAME_NOREPLACE)
// Renames a temporary name onto `newname`, replacing what is there, and never leaves the
// temporary name behind: rename(2) onto another link of the same inode does nothing and succeeds
// (a rerun's link to the file a killed run's leftover already links to), so the name is taken
// with RENAME_NOREPLACE first and, when something was there, the temporary unlinked after the
// plain rename. One call when nothing is there, as a plain rename.
int RenameReplacing(int olddirfd, const std::string& oldname, int newdirfd, const std::string& newname);
// Never throws (it cleans up in destructors): a symlink on the way gives ELOOP.
int UnlinkAt(int dirfd, const std::string& name, int flags = 0) noexcept;
int MkdirAt(int dirfd, const std::string& name, mode_t mode);
// lstat(2) of a path, resolved as above; 0 or the errno.
int StatNoFollow(const std::string& path, struct stat* st);
// Path forms of the above (AT_FDCWD).
inline int LinkPath(const std::string& from, const std::string& to) { return LinkAt(AT_FDCWD, from, AT_FDCWD, to); }
inline int RenamePath(const std::string& from, const std::string& to) { return RenameAt(AT_FDCWD, from, AT_FDCWD, to); }
inline int UnlinkPath(const std::string& path) noexcept { return UnlinkAt(AT_FDCWD, path); }

// Joins with a single '/'.
std::string JoinPath(std::string_view a, std::string_view b);
// The directory a path's last name is in: "a/b" -> "a", "/b" -> "/", "b" -> ".".
std::string DirectoryOf(const std::string& path);

// A short random hex token for temporary names.
std::string RandomToken();

}  // namespace storemove
