// The wire form of stored bytes: what an IMAP server that keeps bare LFs sends (interop/imap_wire_form.h).
#include "interop/imap_wire_form.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "tests/support/temp_dir.h"
#include "util/fs.h"

namespace storemove::interop {
namespace {

TEST(WireForm, BareLfsBecomeCrLfAndNulBecomes0x80) {
  const WireForm wire = WireFormOf(std::string("a\nb\r\nc\rd\0e\n", 11));
  const std::string want("a\r\nb\r\nc\rd\x80" "e\r\n", 13);
  EXPECT_EQ(wire.size, want.size());
  EXPECT_EQ(wire.digest, DigestOf(want));
  EXPECT_EQ(WireFormOf("x\r\n").digest, DigestOf("x\r\n"));  // CRLF already: the same bytes
  EXPECT_EQ(WireFormOf("").size, 0u);
}

// A file read in blocks gives what the bytes in memory give, a CR ending one read block and
// its LF opening the next included (that LF is no bare LF), and large enough to fill the
// converter's output buffer many times.
TEST(WireForm, AFileIsReadInBlocksWithoutSplittingCrLf) {
  std::string bytes;
  for (int i = 0; bytes.size() < (256u << 10) - 1; ++i) bytes += "line " + std::to_string(i) + "\n";
  bytes.resize((256u << 10) - 1);
  bytes += "\r\nnext\nlast";
  bytes += std::string(600000, '\n');
  storemove::testing::TempDir dir;
  const std::string path = dir / "m";
  WriteFileAtomic(path, bytes, 0600);
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  const WireForm from_file = WireFormOfFile(fd.get(), path);
  const WireForm from_memory = WireFormOf(bytes);
  EXPECT_EQ(from_file.size, from_memory.size);
  EXPECT_EQ(from_file.digest, from_memory.digest);
  std::string want;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] == '\n' && (i == 0 || bytes[i - 1] != '\r')) want += '\r';
    want += bytes[i];
  }
  EXPECT_EQ(from_file.size, want.size());
  EXPECT_EQ(from_file.digest, DigestOf(want));
}

}  // namespace
}  // namespace storemove::interop
