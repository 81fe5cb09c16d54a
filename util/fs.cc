#include "util/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <random>

#include "util/error.h"

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

UniqueFd OpenFile(const std::string& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) Throw(Errc::kNotFound, "open " + path + ": no such file or directory");
    ThrowErrno("open " + path, err);
  }
  return UniqueFd(fd);
}

UniqueFd TryOpenAt(int dirfd, const std::string& name, int flags, mode_t mode, const std::string& shown) {
  int fd = ::openat(dirfd, name.c_str(), flags | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    if (errno == ENOENT) return UniqueFd();
    ThrowErrno("open " + shown);
  }
  return UniqueFd(fd);
}

UniqueFd OpenAt(int dirfd, const std::string& name, int flags, mode_t mode, const std::string& shown) {
  UniqueFd fd = TryOpenAt(dirfd, name, flags, mode, shown);
  if (!fd.valid()) Throw(Errc::kNotFound, "open " + shown + ": no such file or directory");
  return fd;
}

UniqueFd OpenDirectory(const std::string& path) {
  return OpenFile(path, O_RDONLY | O_DIRECTORY);
}

void WriteAll(int fd, const void* data, size_t size, const std::string& shown) {
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

void PwriteAll(int fd, const void* data, size_t size, off_t offset, const std::string& shown) {
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
  std::string tmp = path + ".tmp." + RandomToken();
  {
    UniqueFd fd = OpenFile(tmp, O_WRONLY | O_CREAT | O_EXCL, mode);
    try {
      WriteAll(fd.get(), data.data(), data.size(), tmp);
      Fsync(fd.get(), tmp);
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    ThrowErrno("rename " + tmp + " to " + path, err);
  }
  auto slash = path.rfind('/');
  FsyncPath(slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash)));
}

void Fsync(int fd, const std::string& shown) {
  if (::fsync(fd) != 0) ThrowErrno("fsync " + shown);
}

void FsyncPath(const std::string& dir) {
  UniqueFd fd = OpenFile(dir, O_RDONLY | O_DIRECTORY);
  Fsync(fd.get(), dir);
}

void MakeDirs(const std::string& path, mode_t mode) {
  if (path.empty()) return;
  // Usually only the last level is missing: one mkdir, no walk from the root.
  if (::mkdir(path.c_str(), mode) == 0) return;
  if (errno == EEXIST && IsDirectory(path)) return;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    std::string part = path.substr(0, pos);
    if (part.empty()) continue;
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) ThrowErrno("mkdir " + part);
  }
  if (!IsDirectory(path)) Throw(Errc::kIo, "mkdir " + path + ": exists and is not a directory");
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string JoinPath(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  std::string out(a);
  if (out.back() != '/') out.push_back('/');
  out.append(b.substr(b.starts_with('/') ? 1 : 0));
  return out;
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

}  // namespace storemove
