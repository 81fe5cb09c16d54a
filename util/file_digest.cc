#include "util/file_digest.h"

#include <unistd.h>

#include <cerrno>

#include "util/error.h"
#include "util/read_block.h"

namespace storemove {

Digest DigestOfFile(int fd, const std::string& shown, uint64_t* size) {
  Hasher hasher;
  ReadBlock buf;
  uint64_t total = 0;
  for (off_t off = 0;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowErrno("read " + shown);
    if (n == 0) break;
    hasher.Update(buf.data(), size_t(n));
    total += uint64_t(n);
    off += n;
  }
  if (size) *size = total;
  return hasher.Final();
}

}  // namespace storemove
