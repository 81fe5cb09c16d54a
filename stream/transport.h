// Byte transports for a session: files, pipes and (later) sockets, as format::ByteSink/Source.
#pragma once

#include <string>

#include "format/format.h"
#include "util/fs.h"
#include "util/input_wait.h"

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
  const std::string& name() const { return shown_; }  // the file, or "standard input"

 private:
  int fd_;
  std::string shown_;
  std::string buf_;
  size_t cap_;
  uint64_t bytes_ = 0;
};

class FdSource final : public format::ByteSource {
 public:
  // `stall` applies to a pipe, FIFO or socket; a regular file never stalls and is read without
  // a poll(2) before each read.
  FdSource(int fd, std::string shown, StallPolicy stall = {});
  size_t Read(void* data, size_t size) override;
  bool Ready() override;  // poll(2): a file always is; a pipe or socket when it has data or ended
  uint64_t bytes() const { return bytes_; }
  const std::string& name() const { return shown_; }  // the file, or "standard input"

 private:
  int fd_;
  std::string shown_;
  StallPolicy stall_;
  TrickleWatch trickle_;
  uint64_t bytes_ = 0;
};

// Bytes to gather before each write(2) to `fd`: 1 MiB for a file; 128 KiB for a pipe or socket,
// whose reader should get data while the writer goes on (a 1 MiB write into a 1 MiB pipe returns
// only once the reader has drained nearly all of it, so the two ends took turns: measured on
// `backup | restore`, docs/performance.md).
size_t OutputBufferFor(int fd);

// "-" is standard output/input; anything else a file (created 0600, truncated). Symbolic links
// are followed (/dev/stdout, a shell's >(...) and <(...)) unless another user than this one or
// root owns one on the way, or the FIFO at its end (kAuth): util/foreign_link.h.
UniqueFd OpenOutput(const std::string& path);
UniqueFd OpenInput(const std::string& path);

}  // namespace storemove::stream
