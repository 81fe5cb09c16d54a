#include "util/file_digest.h"

#include "util/read_block.h"

namespace storemove {

Digest DigestOfFile(int fd, const std::string& shown, uint64_t* size) {
  Hasher hasher;
  uint64_t total = 0;
  ReadWholeFile(fd, shown, [&](const char* data, size_t n) {
    hasher.Update(data, n);
    total += n;
  });
  if (size) *size = total;
  return hasher.Final();
}

}  // namespace storemove
