#include "stream/transport.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "util/error.h"
#include "util/foreign_link.h"

namespace storemove::stream {

size_t OutputBufferFor(int fd) {
  struct stat st;
  if (::fstat(fd, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) return size_t{128} << 10;
  return size_t{1} << 20;
}

FdSink::FdSink(int fd, std::string shown, size_t buffer)
    : fd_(fd), shown_(std::move(shown)), cap_(buffer ? buffer : OutputBufferFor(fd)) {
  buf_.reserve(cap_);
}

FdSink::~FdSink() = default;  // unflushed bytes are dropped: a failed session must not look complete

void FdSink::Write(const void* data, size_t size) {
  if (buf_.size() + size > cap_) {
    Flush();
    if (size >= cap_) {
      WriteAll(fd_, data, size, shown_);
      bytes_ += size;
      return;
    }
  }
  buf_.append(static_cast<const char*>(data), size);
}

void FdSink::Flush() {
  if (buf_.empty()) return;
  WriteAll(fd_, buf_.data(), buf_.size(), shown_);
  bytes_ += buf_.size();
  buf_.clear();
}

FdSource::FdSource(int fd, std::string shown, StallPolicy stall) : fd_(fd), shown_(std::move(shown)) {
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) stall_ = std::move(stall);
}

size_t FdSource::Read(void* data, size_t size) {
  const bool watched = stall_.active();
  const auto start = watched ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  if (watched) WaitForInput(fd_, shown_, bytes_, stall_);
  const size_t n = ReadSome(fd_, data, size, shown_);
  bytes_ += n;
  if (watched && n != 0) trickle_.Read(bytes_, std::chrono::steady_clock::now() - start, shown_, stall_);
  return n;
}

bool FdSource::Ready() {
  pollfd p{fd_, POLLIN, 0};
  int rc;
  while ((rc = ::poll(&p, 1, 0)) < 0 && errno == EINTR) {
  }
  return rc != 0;  // an error shows in the Read that follows
}

namespace {

// A 64 KiB pipe makes the two ends of `backup | restore` take turns instead of running at the
// same time; 1 MiB (the default pipe-max-size) lets each run ahead of the other.
UniqueFd WidenPipe(UniqueFd fd) {
  struct stat st;
  if (::fstat(fd.get(), &st) == 0 && S_ISFIFO(st.st_mode)) (void)::fcntl(fd.get(), F_SETPIPE_SZ, 1 << 20);
  return fd;
}

}  // namespace

UniqueFd OpenOutput(const std::string& path) {
  if (path == "-") return WidenPipe(UniqueFd(::dup(STDOUT_FILENO)));
  RefuseForeignLink(path, "output file");  // a FIFO another user made, to read the mail from
  // Links are followed here, RefuseForeignLink having let only this user's and root's through:
  // /dev/stdout and a shell's >(...) are links (helper-84: refused, exit 64).
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) ThrowErrno("open " + path);
  return UniqueFd(fd);
}

UniqueFd OpenInput(const std::string& path) {
  if (path == "-") return WidenPipe(UniqueFd(::dup(STDIN_FILENO)));
  RefuseForeignLink(path, "input file");  // a stream another user's link or FIFO leads to
  // Links are followed, as for the output: a shell's <(...) is /dev/fd/N, a link, and a
  // latest.zst naming the newest backup is common (helper-169: both refused, exit 64).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) Throw(Errc::kNotFound, "open " + path + ": no such file or directory");
  if (fd < 0) ThrowErrno("open " + path);
  return WidenPipe(UniqueFd(fd));
}

}  // namespace storemove::stream
