// Byte transports for a session: files, pipes and (later) sockets, as format::ByteSink/Source.
#pragma once

#include <functional>
#include <string>

#include "format/format.h"
#include "util/fs.h"

namespace storemove::stream {

// Buffered writer to a file descriptor (file, pipe or socket).
class FdSink final : public format::ByteSink {
 public:
  // `buffer` 0: OutputBufferFor(fd).
  FdSink(int fd, std::string shown, size_t buffer = 0);
  ~FdSink() override;
  void Write(const void* data, size_t size) override;
  void Flush() override;
  uint64_t bytes() const { return bytes_; }

 private:
  int fd_;
  std::string shown_;
  std::string buf_;
  size_t cap_;
  uint64_t bytes_ = 0;
};

// What a reader of a pipe does when its writer stalls (`ssh old storemove backup | restore`
// whose link hangs): a restore meanwhile holds the user it is writing, so it says so once after
// notice_seconds, says when input resumes, and gives up after timeout_seconds (kTempFail).
struct StallPolicy {
  int notice_seconds = 0;   // 0: no notice
  int timeout_seconds = 0;  // 0: wait as long as it takes
  // Told "no input from SHOWN for N s (after stream byte B)" once per stall, and "input from
  // SHOWN resumed after N s" when it ends.
  std::function<void(const std::string&)> notice;
  std::string holding;  // appended to the notice and the error: what the reader holds meanwhile
};

class FdSource final : public format::ByteSource {
 public:
  FdSource(int fd, std::string shown, StallPolicy stall = {})
      : fd_(fd), shown_(std::move(shown)), stall_(std::move(stall)) {}
  size_t Read(void* data, size_t size) override;
  bool Ready() override;  // poll(2): a file always is; a pipe or socket when it has data or ended
  uint64_t bytes() const { return bytes_; }

 private:
  void WaitForInput();
  int fd_;
  std::string shown_;
  StallPolicy stall_;
  uint64_t bytes_ = 0;
};

// Bytes to gather before each write(2) to `fd`: 1 MiB for a file; 128 KiB for a pipe or socket,
// whose reader should get data while the writer goes on (a 1 MiB write into a 1 MiB pipe returns
// only once the reader has drained nearly all of it, so the two ends took turns: measured on
// `backup | restore`, docs/performance.md).
size_t OutputBufferFor(int fd);

// "-" is standard output/input; anything else a file (created 0600, truncated).
UniqueFd OpenOutput(const std::string& path);
UniqueFd OpenInput(const std::string& path);

}  // namespace storemove::stream
