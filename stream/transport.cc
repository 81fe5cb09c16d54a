#include "stream/transport.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/error.h"

namespace storemove::stream {

FdSink::FdSink(int fd, std::string shown, size_t buffer) : fd_(fd), shown_(std::move(shown)), cap_(buffer) {
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

size_t FdSource::Read(void* data, size_t size) {
  size_t n = ReadSome(fd_, data, size, shown_);
  bytes_ += n;
  return n;
}

UniqueFd OpenOutput(const std::string& path) {
  if (path == "-") return UniqueFd(::dup(STDOUT_FILENO));
  return OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
}

UniqueFd OpenInput(const std::string& path) {
  if (path == "-") return UniqueFd(::dup(STDIN_FILENO));
  return OpenFile(path, O_RDONLY);
}

}  // namespace storemove::stream
