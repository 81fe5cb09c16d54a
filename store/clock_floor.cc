#include "store/clock_floor.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "util/fs.h"

namespace storemove::store {
namespace {

constexpr const char* kFloor = "/config/clock-floor";

int64_t Parse(const char* text, size_t size) {
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(text, text + size, value);
  if (ec != std::errc() || value < 0 || end == text || (end != text + size && *end != '\n')) return 0;
  return value;
}

}  // namespace

int64_t ReadClockFloor(const std::string& root) {
  const std::string path = root + kFloor;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return 0;
  char buf[32];
  ssize_t n;
  do n = ::read(fd, buf, sizeof buf); while (n < 0 && errno == EINTR);
  ::close(fd);
  return n > 0 ? Parse(buf, size_t(n)) : 0;
}

int64_t RaiseClockFloor(const std::string& root, int64_t now, std::string* why_not) {
  const std::string path = root + kFloor, lock_path = path + ".lock";
  auto failed = [&](const std::string& what, int err) {
    if (err != EROFS && why_not) *why_not = what + ": " + std::strerror(err);
    return std::max(now, ReadClockFloor(root));
  };
  // Read-only is enough for flock: a backup run by another user than the lock file's owner.
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (lock < 0) lock = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (lock < 0) return failed("open " + lock_path, errno);
  const UniqueFd held(lock);
  int rc;
  do rc = ::flock(lock, LOCK_EX); while (rc < 0 && errno == EINTR);
  if (rc < 0) return failed("lock " + lock_path, errno);
  const int64_t floor = ReadClockFloor(root);
  if (floor >= now) return floor;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return failed("create " + tmp, errno);
  const std::string text = std::to_string(now) + "\n";
  // Durable before the backup reads anything: a floor lost in a crash lets a clock behind slip again.
  const bool written = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
  const int write_errno = errno;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = written ? errno : write_errno;
    ::unlink(tmp.c_str());
    return failed("write " + path, err);
  }
  if (const int dir = ::open((root + "/config").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return now;
}

}  // namespace storemove::store
