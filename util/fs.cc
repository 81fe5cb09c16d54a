#include "util/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <vector>

#include "util/descriptor_limit.h"
#include "util/error.h"
#include "util/printable.h"
#include "util/fault.h"
#include "util/fs_testing.h"

namespace storemove {

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) reset(o.release());
  return *this;
}
UniqueFd::~UniqueFd() { reset(); }
void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

namespace {

// --- resolving names beneath a directory without following symlinks ---

std::atomic<bool> g_no_openat2{false};

// Reading leaves the store as it was: with relatime (the usual mount option) the first read of a
// file whose atime is older than its mtime or than a day rewrites its inode, so a backup or verify
// of a store would dirty one inode per message on the source disk (docs/performance.md, "Reads
// that write"). O_NOATIME is refused (EPERM) to a process that neither owns the file nor has
// CAP_FOWNER: that file is then opened again without it. A store may hold a few files of
// another owner (restored by root, say) among the mail user's, so one refusal does not end the
// asking; a run of them does (a reader that owns none of the files stops paying a second open
// for each).
constexpr int kNoAtimeRefusalsBeforeGivingUp = 64;
std::atomic<int> g_noatime_refusals{0};  // in a row; reset by an open that got the flag

int WithNoAtime(int flags) {
  // Files only: a directory's atime changes only when it is listed, and a store root owned by
  // root (storemove run as the mail user) would refuse the flag for every directory above it.
  const bool reads_only = (flags & O_ACCMODE) == O_RDONLY && !(flags & (O_PATH | O_CREAT | O_TRUNC | O_DIRECTORY));
  return reads_only && g_noatime_refusals.load(std::memory_order_relaxed) < kNoAtimeRefusalsBeforeGivingUp
             ? flags | O_NOATIME
             : flags;
}

void NoAtimeGranted() {
  if (g_noatime_refusals.load(std::memory_order_relaxed) != 0) g_noatime_refusals.store(0, std::memory_order_relaxed);
}

void NoAtimeRefused() { g_noatime_refusals.fetch_add(1, std::memory_order_relaxed); }

std::vector<std::string> Components(std::string_view rel) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= rel.size()) {
    size_t end = rel.find('/', pos);
    if (end == std::string_view::npos) end = rel.size();
    if (end > pos && rel.substr(pos, end - pos) != ".") out.emplace_back(rel.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

// The path an fd names, for error messages only.
std::string FdPath(int dirfd) {
  if (dirfd == AT_FDCWD) return ".";
  char buf[4096];
  std::string link = "/proc/self/fd/" + std::to_string(dirfd);
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, size_t(n)) : "(fd " + std::to_string(dirfd) + ")";
}

// A symlink (or a ".." escape) was met resolving `rel` beneath `dirfd`: name the component.
[[noreturn]] void ThrowRefused(int dirfd, const std::string& rel) {
  std::string prefix;
  for (const std::string& c : Components(rel)) {
    if (c == "..") Throw(Errc::kCorrupt, JoinPath(FdPath(dirfd), rel) + ": leaves its directory; refused");
    prefix = prefix.empty() ? c : prefix + "/" + c;
    struct stat st;
    if (::fstatat(dirfd, prefix.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) break;
  }
  Throw(Errc::kCorrupt, JoinPath(FdPath(dirfd), prefix) + " is a symbolic link; refusing to follow it");
}

// A store's files are regular files and directories. O_NONBLOCK (kept, as tar does: it changes
// nothing for a regular file) makes a FIFO or device planted in their place open at once and read
// as empty or fail, so the caller reports a wrong size or a read error instead of waiting forever
// for a writer that never comes. Only for opens relative to a store's directory descriptor: a
// path the user names (`-f FIFO`, even below a store root) is opened as it is.
static int NeverWaitingToOpen(int flags) {
  return (flags & (O_PATH | O_DIRECTORY)) ? flags : flags | O_NONBLOCK | O_NOCTTY;
}

// openat(2) of `rel` beneath `dirfd` that never follows a symlink nor leaves the directory:
// the fd, or -errno.
int OpenBeneathOnce(int dirfd, const std::string& rel, int flags, mode_t mode) {
  const char* name = rel.empty() ? "." : rel.c_str();
  if (!g_no_openat2.load(std::memory_order_relaxed)) {
    struct open_how how {};
    how.flags = uint64_t(flags | O_CLOEXEC);
    how.mode = (flags & O_CREAT) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
    for (int tries = 0;; ++tries) {
      long fd = ::syscall(SYS_openat2, dirfd, name, &how, sizeof how);
      if (fd >= 0) return int(fd);
      int err = errno;
      if (err == EINTR || (err == EAGAIN && tries < 100)) continue;  // EAGAIN: a concurrent rename
      if (err != ENOSYS) return -err;
      g_no_openat2.store(true, std::memory_order_relaxed);  // kernel before 5.6
      break;
    }
  }
  // Component by component, each directory opened with O_NOFOLLOW.
  std::vector<std::string> parts = Components(rel);
  for (const std::string& c : parts)
    if (c == "..") return -EXDEV;
  if (parts.empty()) parts.emplace_back(".");
  int cur = dirfd;
  UniqueFd hold;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int fd = ::openat(cur, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -errno;
    hold.reset(fd);
    cur = fd;
  }
  int fd = ::openat(cur, parts.back().c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
  return fd >= 0 ? fd : -errno;
}

// OpenBeneathOnce, a read-only open without updating the file's atime where this process may.
int OpenBeneathRaw(int dirfd, const std::string& rel, int flags, mode_t mode) {
  const int quiet = WithNoAtime(flags);
  int fd = OpenBeneathOnce(dirfd, rel, quiet, mode);
  if (quiet == flags) return fd;
  if (fd != -EPERM) {
    if (fd >= 0) NoAtimeGranted();
    return fd;
  }
  fd = OpenBeneathOnce(dirfd, rel, flags, mode);
  if (fd != -EPERM) NoAtimeRefused();  // it was O_NOATIME
  return fd;
}

// As OpenBeneathRaw, but a symlink met throws; other failures are returned as -errno.
int OpenBeneath(int dirfd, const std::string& rel, int flags, mode_t mode) {
  int fd = OpenBeneathRaw(dirfd, rel, flags, mode);
  if (fd == -ELOOP || fd == -EXDEV || fd == -ENOTDIR) {
    // ENOTDIR: a symlink where a directory was wanted (O_PATH|O_NOFOLLOW), or a plain file.
    struct stat st;
    bool link = fd != -ENOTDIR;
    if (!link)
      for (std::string prefix; const std::string& c : Components(rel)) {
        prefix = prefix.empty() ? c : prefix + "/" + c;
        if (::fstatat(dirfd, prefix.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) break;
        if (S_ISLNK(st.st_mode)) link = true;
        if (!S_ISDIR(st.st_mode)) break;
      }
    if (link) ThrowRefused(dirfd, rel);
  }
  return fd;
}

// --- trusted roots ---

struct Root {
  uint64_t id;
  std::string path;  // without a trailing '/'
  std::shared_ptr<UniqueFd> fd;
  bool store_layout;
  // partition/<name> directories opened so far (a restore resolves a few paths per message;
  // reopening the partition each time doubled its system calls).
  std::map<std::string, std::shared_ptr<UniqueFd>, std::less<>> partitions;
};

std::shared_mutex g_roots_mutex;
std::vector<Root> g_roots;
uint64_t g_next_root = 1;

std::string TrimSlashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// Where a path is resolved from: beneath `dirfd` (a trusted root or one of its partitions) at
// `rel`, or, outside every trusted root, as a plain path (dirfd AT_FDCWD, rel = the path).
struct Resolved {
  std::shared_ptr<UniqueFd> root;
  std::shared_ptr<UniqueFd> partition;
  int dirfd = AT_FDCWD;
  std::string rel;
  bool trusted = false;
  int err = 0;  // the partition directory could not be opened
};

Resolved Resolve(const std::string& path) {
  Resolved r;
  const Root* best = nullptr;
  std::shared_lock<std::shared_mutex> lock(g_roots_mutex);
  for (const Root& root : g_roots) {
    const std::string& p = root.path;
    if (!path.starts_with(p)) continue;
    if (path.size() != p.size() && path[p.size()] != '/' && p != "/") continue;
    if (!best || p.size() >= best->path.size()) best = &root;
  }
  if (!best) {
    r.rel = path;
    return r;
  }
  r.trusted = true;
  r.root = best->fd;
  r.dirfd = best->fd->get();
  size_t at = best->path.size();
  while (at < path.size() && path[at] == '/') ++at;
  r.rel = path.substr(at);
  if (!best->store_layout || !r.rel.starts_with("partition/")) return r;
  // partition/<name> may be the operator's symlink to another disk: followed, nothing below.
  size_t start = std::string("partition/").size();
  while (start < r.rel.size() && r.rel[start] == '/') ++start;
  size_t end = r.rel.find('/', start);
  std::string name = r.rel.substr(start, end == std::string::npos ? std::string::npos : end - start);
  if (name.empty() || name == "." || name == "..") return r;
  std::string rest = end == std::string::npos ? "" : r.rel.substr(end + 1);
  if (auto known = best->partitions.find(name); known != best->partitions.end()) {
    r.partition = known->second;
    r.dirfd = r.partition->get();
    r.rel = std::move(rest);
    return r;
  }
  const uint64_t id = best->id;
  lock.unlock();
  int parts = OpenBeneath(r.dirfd, "partition", O_PATH | O_DIRECTORY, 0);
  if (parts == -ENOENT) return r;  // not there (yet): beneath the root, as any path
  if (parts < 0) {
    r.err = -parts;
    return r;
  }
  UniqueFd parts_fd(parts);
  int fd = ::openat(parts, name.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return r;
  if (fd < 0) {
    r.err = errno;
    return r;
  }
  r.partition = std::make_shared<UniqueFd>(fd);
  r.dirfd = fd;
  r.rel = std::move(rest);
  std::unique_lock<std::shared_mutex> write(g_roots_mutex);
  for (Root& root : g_roots)
    if (root.id == id) root.partitions.emplace(name, r.partition);
  return r;
}

// The directory an *at(2) call acts in, and the last component of its name.
struct Parent {
  Resolved base;
  UniqueFd hold;
  int fd = AT_FDCWD;
  std::string leaf;
  int err = 0;
};

Parent ResolveParent(int dirfd, const std::string& name) {
  Parent p;
  std::string rel = name;
  if (dirfd == AT_FDCWD) {
    p.base = Resolve(TrimSlashes(name));
    if (!p.base.trusted) {
      p.leaf = name;  // outside every trusted root: the plain path, as before
      return p;
    }
    if (p.base.err) {
      p.err = p.base.err;
      return p;
    }
    dirfd = p.base.dirfd;
    rel = p.base.rel;
  }
  rel = TrimSlashes(rel);
  size_t slash = rel.rfind('/');
  p.leaf = slash == std::string::npos ? rel : rel.substr(slash + 1);
  if (slash == std::string::npos || slash == 0) {
    p.fd = dirfd;
    if (slash == 0) p.err = EXDEV;  // an absolute name relative to a directory fd
    return p;
  }
  int fd = OpenBeneath(dirfd, rel.substr(0, slash), O_PATH | O_DIRECTORY, 0);
  if (fd < 0) {
    p.err = -fd;
    return p;
  }
  p.hold.reset(fd);
  p.fd = fd;
  return p;
}

}  // namespace

void UseOpenat2ForTesting(bool use) { g_no_openat2.store(!use, std::memory_order_relaxed); }

TrustedRoot::TrustedRoot(const std::string& root, bool store_layout) {
  std::string path = TrimSlashes(root);
  int fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);  // the root itself: as given
  if (fd < 0) ThrowErrno("open " + path);
  std::unique_lock<std::shared_mutex> lock(g_roots_mutex);
  id_ = g_next_root++;
  g_roots.push_back(Root{id_, path, std::make_shared<UniqueFd>(fd), store_layout, {}});
}

TrustedRoot& TrustedRoot::operator=(TrustedRoot&& o) noexcept {
  if (this != &o) {
    TrustedRoot gone(std::move(*this));
    id_ = std::exchange(o.id_, 0);
  }
  return *this;
}

TrustedRoot::~TrustedRoot() {
  if (!id_) return;
  std::unique_lock<std::shared_mutex> lock(g_roots_mutex);
  std::erase_if(g_roots, [&](const Root& r) { return r.id == id_; });
}

namespace {
std::atomic<bool> g_no_resolve_cached{false};
}  // namespace

int OpenIfCached(int dirfd, const std::string& name) {
  if (g_no_openat2.load(std::memory_order_relaxed) || g_no_resolve_cached.load(std::memory_order_relaxed))
    return -EAGAIN;
  struct open_how how {};
  how.flags = uint64_t(NeverWaitingToOpen(WithNoAtime(O_RDONLY)) | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_CACHED;
  long fd = ::syscall(SYS_openat2, dirfd, name.c_str(), &how, sizeof how);
  if (fd >= 0) {
    if (how.flags & O_NOATIME) NoAtimeGranted();
    return int(fd);
  }
  int err = errno;
  if (err == EPERM && (how.flags & O_NOATIME)) {  // not the owner: read as any reader does
    how.flags &= ~uint64_t(O_NOATIME);
    fd = ::syscall(SYS_openat2, dirfd, name.c_str(), &how, sizeof how);
    if (fd >= 0 || errno != EPERM) NoAtimeRefused();
    if (fd >= 0) return int(fd);
    err = errno;
  }
  if (err == EINVAL || err == ENOSYS) {  // a kernel before 5.12: never cached
    g_no_resolve_cached.store(true, std::memory_order_relaxed);
    return -EAGAIN;
  }
  return -err;
}

ssize_t PreadIfCached(int fd, void* data, size_t size, off_t offset) {
  struct iovec iov {data, size};
  for (;;) {
    ssize_t n = ::preadv2(fd, &iov, 1, offset, RWF_NOWAIT);
    if (n >= 0) return n;
    if (errno != EINTR) return -errno;
  }
}

bool OnMemoryFilesystem(int fd) {
  struct statfs fs;
  return ::fstatfs(fd, &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
}

bool PathOnMemoryFilesystem(const std::string& path) {
  UniqueFd fd = TryOpenAt(AT_FDCWD, path, O_RDONLY | O_DIRECTORY, 0, path);
  return fd.valid() && OnMemoryFilesystem(fd.get());
}

namespace {

[[noreturn]] void ThrowNoInodes(const std::string& what) {
  Throw(Errc::kIo, what + ": No space left on device: no free inodes on its filesystem (df -i; df -h may show free space)");
}

// ENOSPC making a file or a directory where blocks are left but no inodes: errno's words alone
// ("No space left on device") sent the administrator to df -h, which shows room (helper-158).
// `dirfd` (or, for AT_FDCWD, the directory of `name`) is on the filesystem that refused.
[[noreturn]] void ThrowMaking(const std::string& what, int err, int dirfd, const std::string& name) {
  if (err == ENOSPC) {
    struct statvfs v;
    int got;
    if (dirfd == AT_FDCWD) {
      const size_t slash = name.rfind('/');
      got = ::statvfs(slash == std::string::npos ? "." : slash == 0 ? "/" : name.substr(0, slash).c_str(), &v);
    } else {
      got = ::fstatvfs(dirfd, &v);
    }
    if (got == 0 && v.f_files != 0 && v.f_favail == 0) ThrowNoInodes(what);
  }
  ThrowErrno(what, err);
}

}  // namespace

void ThrowMakingErrno(const std::string& what, int err, const std::string& on) {
  struct statvfs v;
  if (err == ENOSPC && ::statvfs(on.c_str(), &v) == 0 && v.f_files != 0 && v.f_favail == 0) ThrowNoInodes(what);
  ThrowErrno(what, err);
}

int OpenAtOrErrno(int dirfd, const std::string& name, int flags) {
  return OpenBeneath(dirfd, name, dirfd == AT_FDCWD ? flags : NeverWaitingToOpen(flags), 0);
}

UniqueFd TryOpenAt(int dirfd, const std::string& name, int flags, mode_t mode, const std::string& shown) {
  if (flags & O_CREAT)
    if (int f = fault::Check(fault::Op::kCreate)) ThrowErrno("open " + shown, f);
  int fd;
  if (dirfd == AT_FDCWD) {
    Resolved r = Resolve(name);
    if (r.trusted) {
      fd = r.err ? -r.err : OpenBeneath(r.dirfd, r.rel, flags, mode);
    } else {
      int plain = ::open(name.c_str(), flags | O_CLOEXEC | O_NOFOLLOW, mode);
      fd = plain >= 0 ? plain : -errno;
      // ELOOP from O_NOFOLLOW reads as "Too many levels of symbolic links": say what it is.
      struct stat st;
      if (fd == -ELOOP && ::lstat(name.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
        Throw(Errc::kInvalidArgument, "open " + shown + ": a symbolic link, which is not followed here; give the file it names" +
                                          (name.starts_with("/dev/") || name.starts_with("/proc/")
                                               ? ((flags & O_ACCMODE) == O_RDONLY ? " (or - for standard input)" : " (or - for standard output)")
                                               : ""));
    }
  } else {
    fd = OpenBeneath(dirfd, name, NeverWaitingToOpen(flags), mode);
  }
  if (fd < 0) {
    if (fd == -ENOENT) return UniqueFd();
    if (flags & O_CREAT) ThrowMaking("open " + shown, -fd, dirfd, name);
    ThrowErrno("open " + shown, -fd);
  }
  return UniqueFd(fd);
}

UniqueFd CreateReplacingAt(int dirfd, const std::string& name, mode_t mode, const std::string& shown) {
  if (int f = fault::Check(fault::Op::kCreate)) ThrowErrno("open " + shown, f);
  int fd = OpenBeneath(dirfd, name, O_WRONLY | O_CREAT | O_EXCL, mode);
  if (fd == -EEXIST) {
    if (int err = UnlinkAt(dirfd, name); err != 0 && err != ENOENT) ThrowErrno("unlink " + shown, err);
    fd = OpenBeneath(dirfd, name, O_WRONLY | O_CREAT | O_EXCL, mode);
  }
  if (fd < 0) ThrowMaking("open " + shown, -fd, dirfd, name);
  return UniqueFd(fd);
}

UniqueFd OpenFile(const std::string& path, int flags, mode_t mode) {
  UniqueFd fd = TryOpenAt(AT_FDCWD, path, flags, mode, path);
  if (!fd.valid()) Throw(Errc::kNotFound, "open " + path + ": no such file or directory");
  return fd;
}

UniqueFd OpenAt(int dirfd, const std::string& name, int flags, mode_t mode, const std::string& shown) {
  UniqueFd fd = TryOpenAt(dirfd, name, flags, mode, shown);
  if (!fd.valid()) Throw(Errc::kNotFound, "open " + shown + ": no such file or directory");
  return fd;
}

UniqueFd OpenDirectory(const std::string& path) {
  return OpenFile(path, O_RDONLY | O_DIRECTORY);
}

int LinkAt(int olddirfd, const std::string& oldname, int newdirfd, const std::string& newname) {
  if (int f = fault::Check(fault::Op::kLink)) return f;
  Parent from = ResolveParent(olddirfd, oldname);
  if (from.err) return from.err;
  Parent to = ResolveParent(newdirfd, newname);
  if (to.err) return to.err;
  return ::linkat(from.fd, from.leaf.c_str(), to.fd, to.leaf.c_str(), 0) == 0 ? 0 : errno;
}

int RenameAt(int olddirfd, const std::string& oldname, int newdirfd, const std::string& newname, unsigned int flags) {
  if (int f = fault::Check(fault::Op::kRename)) return f;
  Parent from = ResolveParent(olddirfd, oldname);
  if (from.err) return from.err;
  Parent to = ResolveParent(newdirfd, newname);
  if (to.err) return to.err;
  int rc = flags ? ::renameat2(from.fd, from.leaf.c_str(), to.fd, to.leaf.c_str(), flags)
                 : ::renameat(from.fd, from.leaf.c_str(), to.fd, to.leaf.c_str());
  return rc == 0 ? 0 : errno;
}

int RenameReplacing(int olddirfd, const std::string& oldname, int newdirfd, const std::string& newname) {
  if (olddirfd == newdirfd && oldname == newname) return 0;  // the unlink below would take its only name
  int err = RenameAt(olddirfd, oldname, newdirfd, newname, RENAME_NOREPLACE);
  // EINVAL: a filesystem without the flag; ENOSYS, EPERM: a kernel or seccomp filter without renameat2.
  if (err != EEXIST && err != EINVAL && err != ENOSYS && err != EPERM) return err;
  if ((err = RenameAt(olddirfd, oldname, newdirfd, newname)) != 0) return err;
  UnlinkAt(olddirfd, oldname);  // ENOENT unless the rename did nothing
  return 0;
}

int UnlinkAt(int dirfd, const std::string& name, int flags) noexcept {
  // Never throws: it cleans up in destructors and catch blocks.
  try {
    Parent p = ResolveParent(dirfd, name);
    if (p.err) return p.err;
    return ::unlinkat(p.fd, p.leaf.c_str(), flags) == 0 ? 0 : errno;
  } catch (...) {
    return ELOOP;
  }
}

int StatNoFollow(const std::string& path, struct stat* st) {
  Parent p = ResolveParent(AT_FDCWD, path);
  if (p.err) return p.err;
  return ::fstatat(p.fd, p.leaf.empty() ? "." : p.leaf.c_str(), st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
}

int MkdirAt(int dirfd, const std::string& name, mode_t mode) {
  if (int f = fault::Check(fault::Op::kMkdir)) return f;
  Parent p = ResolveParent(dirfd, name);
  if (p.err) return p.err;
  return ::mkdirat(p.fd, p.leaf.c_str(), mode) == 0 ? 0 : errno;
}

namespace {

// An injected write failure; a short write first writes part of the data, as a filling disk does.
[[noreturn]] void InjectedWriteFailure(int f, int fd, const void* data, size_t size, off_t offset, bool positioned,
                                       const std::string& shown) {
  if (f == fault::kShortWrite) {
    // A full disk cuts short a write that allocates; it does not tear an overwrite of bytes
    // already in the file (store.idx's 64-byte header, rewritten in place, is one sector).
    struct stat st;
    bool overwrite = positioned && ::fstat(fd, &st) == 0 && offset + off_t(size) <= st.st_size;
    if (size > 1 && !overwrite) {
      ssize_t n = positioned ? ::pwrite(fd, data, size / 2, offset) : ::write(fd, data, size / 2);
      (void)n;
    }
    f = ENOSPC;
  }
  ThrowErrno("write " + shown, f);
}

}  // namespace

UniqueFd OpenAnonymousTemporary(std::string* dir) {
  const char* env = std::getenv("TMPDIR");
  *dir = env && *env ? env : "/tmp";
  int fd = ::open(dir->c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    std::string path = *dir + "/storemove-XXXXXX";
    fd = ::mkostemp(path.data(), O_CLOEXEC);
    if (fd >= 0) ::unlink(path.c_str());
  }
  return UniqueFd(fd);
}

void WriteAll(int fd, const void* data, size_t size, const std::string& shown) {
  if (int f = fault::Check(fault::Op::kWrite)) InjectedWriteFailure(f, fd, data, size, 0, false, shown);
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      ThrowErrno("write " + shown);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

std::string DescriptorShortfall(size_t count) {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) ThrowErrno("getrlimit");
  const rlim_t need = static_cast<rlim_t>(count) + 256;
  if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need) return {};
  return "needs " + std::to_string(need) + " open files; the limit is " + std::to_string(rl.rlim_max) + " (ulimit -n)";
}

namespace {
constexpr size_t kCompareBlock = 256 * 1024;
}  // namespace

bool SameFileContent(int fd_a, int fd_b) {
  struct stat sa, sb;
  if (::fstat(fd_a, &sa) != 0 || ::fstat(fd_b, &sb) != 0) ThrowErrno("stat message file");
  if (sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino) return true;
  if (sa.st_size != sb.st_size) return false;
  // Buffers the size of the file when it is small (most mail is), and not zero-filled: on
  // arrival this runs once per linked message, where two 256 KiB memsets cost more than the
  // comparison of a typical message.
  const size_t block = std::clamp<size_t>(size_t(sa.st_size), 1, kCompareBlock);
  std::unique_ptr<char[]> a(new char[block]), b(new char[block]);
  off_t off = 0;
  for (;;) {
    ssize_t na = ::pread(fd_a, a.get(), block, off);
    ssize_t nb = ::pread(fd_b, b.get(), block, off);
    if (na < 0 || nb < 0) ThrowErrno("read message file");
    if (na != nb || std::memcmp(a.get(), b.get(), size_t(na)) != 0) return false;
    if (na == 0) return true;
    off += na;
  }
}

void EnsureDescriptors(size_t count, std::string_view what) {
  const rlim_t need = static_cast<rlim_t>(count) + 256;
  rlim_t hard;
  if (RaiseDescriptorLimit(need, &hard)) return;
  if (hard != RLIM_INFINITY && hard < need)
    Throw(Errc::kInvalidArgument, std::string(what) + " needs " + std::to_string(need) + " open files; the limit is " +
                                      std::to_string(hard) + " (ulimit -n)");
  ThrowErrno("setrlimit RLIMIT_NOFILE");
}

void PwriteAll(int fd, const void* data, size_t size, off_t offset, const std::string& shown) {
  if (int f = fault::Check(fault::Op::kWrite)) InjectedWriteFailure(f, fd, data, size, offset, true, shown);
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::pwrite(fd, p, size, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      ThrowErrno("write " + shown);
    }
    p += n;
    size -= static_cast<size_t>(n);
    offset += n;
  }
}

void PreadAll(int fd, void* data, size_t size, off_t offset, const std::string& shown) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    ssize_t n = ::pread(fd, p, size, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      ThrowErrno("read " + shown);
    }
    if (n == 0) Throw(Errc::kCorrupt, shown + ": truncated (short read at byte " + std::to_string(offset) + ")");
    p += n;
    size -= static_cast<size_t>(n);
    offset += n;
  }
}

size_t ReadSome(int fd, void* data, size_t size, const std::string& shown) {
  for (;;) {
    ssize_t n = ::read(fd, data, size);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) ThrowErrno("read " + shown);
  }
}

std::string ReadFile(const std::string& path) {
  UniqueFd fd = OpenFile(path, O_RDONLY);
  std::string out;
  char buf[65536];
  for (;;) {
    size_t n = ReadSome(fd.get(), buf, sizeof buf, path);
    if (n == 0) break;
    out.append(buf, n);
  }
  return out;
}

void WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode) {
  WriteFileAtomicFrom(path, [&](const std::function<void(std::string_view)>& write) { write(data); }, mode);
}

void WriteFileAtomicFrom(const std::string& path,
                         const std::function<void(const std::function<void(std::string_view)>&)>& fill,
                         mode_t mode) {
  std::string tmp = path + ".tmp." + RandomToken();
  {
    UniqueFd fd = OpenFile(tmp, O_WRONLY | O_CREAT | O_EXCL, mode);
    try {
      // One write for content under 64 KiB (and for none), as before the pieces: the fault
      // sweeps count writes.
      constexpr size_t kBuffer = size_t{64} << 10;
      std::string buffer;
      bool wrote = false;
      auto flush = [&](std::string_view bytes) {
        WriteAll(fd.get(), bytes.data(), bytes.size(), tmp);
        wrote = true;
      };
      auto write = [&](std::string_view piece) {
        if (!buffer.empty() && buffer.size() + piece.size() > kBuffer) {
          flush(buffer);
          buffer.clear();
        }
        if (piece.size() >= kBuffer)
          flush(piece);
        else
          buffer.append(piece);
      };
      fill(write);
      if (!buffer.empty() || !wrote) flush(buffer);
      Fsync(fd.get(), tmp);
    } catch (...) {
      UnlinkPath(tmp);
      throw;
    }
  }
  if (int err = RenamePath(tmp, path)) {
    UnlinkPath(tmp);
    ThrowErrno("rename " + tmp + " to " + path, err);
  }
  auto slash = path.rfind('/');
  FsyncPath(slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash)));
}

void Fsync(int fd, const std::string& shown) {
  if (int f = fault::Check(fault::Op::kFsync)) ThrowErrno("fsync " + shown, f);
  if (::fsync(fd) != 0) ThrowErrno("fsync " + shown);
}

void FsyncPath(const std::string& dir) {
  UniqueFd fd = OpenFile(dir, O_RDONLY | O_DIRECTORY);
  Fsync(fd.get(), dir);
}

namespace {

// The directory `path` names its entry in ("." for a bare name, "/" for a top-level one).
std::string ParentOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

// mkdir -p of `rel` beneath `dirfd`, one component at a time, never through a symlink.
bool MakeDirsBeneath(int dirfd, const std::string& rel, mode_t mode, const std::string& shown) {
  // Usually only the last level is missing: one mkdir, no walk.
  // A directory just made is no symlink (and every later use resolves it beneath the root again).
  int made = MkdirAt(dirfd, rel, mode);
  if (made == 0) return true;
  // The inodes are those of the filesystem of the new directory's parent, which may not be
  // dirfd's (a partition mounted beneath the store).
  if (made != EEXIST && made != ENOENT) ThrowMakingErrno("mkdir " + shown, made, ParentOf(shown));
  const std::vector<std::string> parts = Components(rel);
  // EEXIST: it must be a directory. ENOENT: a parent is missing; start below the deepest level
  // that exists (a new user's folder: its bucket directories usually exist), not at the top.
  size_t have = 0;  // leading levels that exist; cur is the last of them
  UniqueFd cur;
  if (made == ENOENT) {
    // rel's parent (the first parts.size() - 1 levels) is missing: try shorter prefixes.
    for (size_t k = parts.size() - 1; k-- > 1 && have == 0;) {
      std::string prefix = parts[0];
      for (size_t i = 1; i < k; ++i) prefix += "/" + parts[i];
      int fd = OpenBeneath(dirfd, prefix, O_PATH | O_DIRECTORY, 0);
      if (fd >= 0) {
        cur.reset(fd);
        have = k;
      } else if (fd != -ENOENT) {
        break;  // not a directory, a symlink, ...: the walk from the top names it
      }
    }
  } else {
    int fd = OpenBeneath(dirfd, rel, O_PATH | O_DIRECTORY, 0);
    if (fd >= 0) {
      ::close(fd);
      return false;
    }
  }
  std::string done;
  for (size_t i = 0; i < have; ++i) done = done.empty() ? parts[i] : done + "/" + parts[i];
  for (size_t i = have; i < parts.size(); ++i) {
    const std::string& c = parts[i];
    int at = cur.valid() ? cur.get() : dirfd;
    done = done.empty() ? c : done + "/" + c;
    if (int f = fault::Check(fault::Op::kMkdir)) ThrowErrno("mkdir " + shown + " (at " + done + ")", f);
    const bool created = ::mkdirat(at, c.c_str(), mode) == 0;
    if (!created && errno != EEXIST) {
      const int err = errno;
      ThrowMaking("mkdir " + shown + " (at " + done + ")", err, at, at == AT_FDCWD ? done : c);
    }
    if (created && i + 1 == parts.size()) return true;  // just made: no need to open it
    int next = OpenBeneath(at, c, O_PATH | O_DIRECTORY, 0);
    if (next == -ENOTDIR) Throw(Errc::kIo, "mkdir " + shown + ": " + done + " exists and is not a directory");
    if (next < 0) ThrowErrno("mkdir " + shown + " (open " + done + ")", -next);
    cur.reset(next);
  }
  return false;  // the last level was there already
}

}  // namespace

bool MakeDirs(const std::string& path, mode_t mode) {
  if (path.empty()) return false;
  Resolved r = Resolve(TrimSlashes(path));
  if (r.trusted) {
    if (r.err) ThrowErrno("mkdir " + path, r.err);
    return !r.rel.empty() && MakeDirsBeneath(r.dirfd, r.rel, mode, path);
  }
  // Usually only the last level is missing: one mkdir, no walk from the root.
  if (::mkdir(path.c_str(), mode) == 0) return true;
  if (errno == EEXIST && IsDirectory(path)) return false;
  bool made = false;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    std::string part = path.substr(0, pos);
    if (part.empty()) continue;
    if (::mkdir(part.c_str(), mode) == 0)
      made = pos == std::string::npos;
    else if (const int err = errno; err != EEXIST)
      ThrowMakingErrno("mkdir " + part, err, ParentOf(part));
  }
  if (!IsDirectory(path)) Throw(Errc::kIo, "mkdir " + path + ": exists and is not a directory");
  return made;
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

std::string JoinPath(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  std::string out(a);
  if (out.back() != '/') out.push_back('/');
  out.append(b.substr(b.starts_with('/') ? 1 : 0));
  return out;
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string RandomToken() {
  static thread_local std::mt19937_64 rng{std::random_device{}() ^ (uint64_t(::getpid()) << 32)};
  static const char* kHex = "0123456789abcdef";
  uint64_t v = rng();
  std::string out(12, '0');
  for (char& c : out) {
    c = kHex[v & 15];
    v >>= 4;
  }
  return out;
}

std::vector<DirEntry> ListDirectoryAt(int dirfd, const std::string& shown) {
  std::vector<DirEntry> out;
  ForEachDirectoryEntry(dirfd, shown, [&](DirEntry& entry) { out.push_back(std::move(entry)); });
  return out;
}

void ForEachDirectoryEntry(int dirfd, const std::string& shown, const std::function<void(DirEntry&)>& each) {
  const int copy = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) ThrowErrno("opendir " + shown);  // EMFILE, not fdopendir(-1)'s "Bad file descriptor"
  DIR* dir = ::fdopendir(copy);
  if (dir == nullptr) {
    const int err = errno;
    ::close(copy);
    ThrowErrno("opendir " + shown, err);
  }
  ::rewinddir(dir);
  // Closed however `each` leaves (it may throw).
  std::unique_ptr<DIR, int (*)(DIR*)> closer(dir, ::closedir);
  errno = 0;
  while (const struct dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    mode_t type = DTTOIF(entry->d_type);
    if (entry->d_type == DT_UNKNOWN) {
      struct stat st;
      if (::fstatat(dirfd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        const int stat_err = errno;
        ThrowErrno("stat " + JoinPath(shown, EscapeControls(name)), stat_err);
      }
      type = st.st_mode & S_IFMT;
    }
    DirEntry item{std::string(name), type};
    each(item);
    errno = 0;
  }
  const int err = errno;
  if (err != 0) ThrowErrno("readdir " + shown, err);
}

}  // namespace storemove
