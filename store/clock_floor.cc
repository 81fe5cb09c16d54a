#include "store/clock_floor.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>

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

// The value as written, 0 when absent, unreadable or not a regular file.
int64_t ReadRaw(const std::string& root) {
  const std::string path = root + kFloor;
  // Non-blocking and a regular file only: a FIFO planted here hung every delivery (helper-91).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return 0;
  const UniqueFd held(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
  char buf[32];
  ssize_t n;
  do n = ::read(fd, buf, sizeof buf); while (n < 0 && errno == EINTR);
  return n > 0 ? Parse(buf, size_t(n)) : 0;
}

// A floor more than a day ahead of the reader's clock is no backup's start but a wrong clock's (a
// backup run under `faketime +1y`, a garbage value): trusted, it would date every later message a
// year ahead (helper-91). Ignored, and set back by the next backup.
constexpr int64_t kMostAhead = 86400;
bool Insane(int64_t floor, int64_t now) { return floor > now + kMostAhead; }

}  // namespace

int64_t ReadClockFloor(const std::string& root) {
  const int64_t floor = ReadRaw(root);
  return Insane(floor, ::time(nullptr)) ? 0 : floor;
}

int64_t RaiseClockFloor(const std::string& root, int64_t now, std::string* note) {
  const std::string path = root + kFloor, lock_path = path + ".lock";
  auto failed = [&](const std::string& what, int err) {
    if (err != EROFS && note)
      *note = "the backup's start was not recorded in the store (" + what + ": " + std::strerror(err) +
              "): a message committed during it by a host whose clock is behind could be missed by a later "
              "backup -d of this one's start";
    return std::max(now, ReadClockFloor(root));
  };
  // A store made by hand or by an older tool may lack config/ (Store::Open does not need it).
  if (::mkdir((root + "/config").c_str(), 0755) != 0 && errno == EROFS)
    return failed("mkdir " + root + "/config", EROFS);
  // Read-only is enough for flock: a backup run by another user than the lock file's owner.
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
  if (lock < 0 && errno == EROFS) return failed("open " + lock_path, EROFS);  // nothing commits there
  if (lock < 0) lock = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (lock < 0) return failed("open " + lock_path, errno);
  const UniqueFd held(lock);
  int rc;
  do rc = ::flock(lock, LOCK_EX); while (rc < 0 && errno == EINTR);
  if (rc < 0) return failed("lock " + lock_path, errno);
  const int64_t raw = ReadRaw(root);
  if (Insane(raw, now) && note)
    *note = "the store's clock floor (" + root + kFloor + ") was " + std::to_string(raw) +
            ", more than a day ahead of this host's clock: set back to now (a backup run under a wrong clock?)";
  const int64_t floor = Insane(raw, now) ? 0 : raw;
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
