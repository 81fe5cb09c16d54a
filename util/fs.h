// Thin, error-checked wrappers over the POSIX calls storemove uses. Every failure throws
// storemove::Error naming the path. Paths from untrusted input must be validated by the
// caller; these helpers add O_NOFOLLOW/O_CLOEXEC so a planted symlink cannot redirect a write.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

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
// Returns an invalid fd instead of throwing when the entry does not exist.
UniqueFd TryOpenAt(int dirfd, const std::string& name, int flags, mode_t mode, const std::string& shown);

void WriteAll(int fd, const void* data, size_t size, const std::string& shown);
void PwriteAll(int fd, const void* data, size_t size, off_t offset, const std::string& shown);
// Reads exactly `size` bytes at `offset`; throws kCorrupt("<shown>: short read") on EOF.
void PreadAll(int fd, void* data, size_t size, off_t offset, const std::string& shown);
// Reads up to size bytes, returns bytes read (0 at EOF), retrying EINTR.
size_t ReadSome(int fd, void* data, size_t size, const std::string& shown);

std::string ReadFile(const std::string& path);
// Writes a whole file through a temporary name + fsync + rename in the same directory.
void WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode = 0644);

void Fsync(int fd, const std::string& shown);
void FsyncPath(const std::string& dir);

// mkdir -p; existing directories are fine.
void MakeDirs(const std::string& path, mode_t mode = 0755);
bool PathExists(const std::string& path);
bool IsDirectory(const std::string& path);

// Joins with a single '/'.
std::string JoinPath(std::string_view a, std::string_view b);

// A short random hex token for temporary names.
std::string RandomToken();

}  // namespace storemove
