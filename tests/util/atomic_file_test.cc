// WriteFileAtomicFrom (util/fs.h): a file made of pieces as they come, never held whole, that
// appears whole or not at all.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "tests/support/temp_dir.h"
#include "util/fs.h"

namespace storemove {
namespace {

using testing::TempDir;
namespace fs = std::filesystem;

size_t FilesIn(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++n;
  return n;
}

TEST(WriteFileAtomicFrom, PiecesOfEverySizeMakeTheFile) {
  TempDir tmp;
  const std::string path = tmp / "members";
  // Small pieces, pieces across the 64 KiB buffer, one larger than it, and an empty one.
  const std::string pieces[] = {"head\n", std::string(100 << 10, 'x'), "abc", "", std::string(70 << 10, 'y'),
                                std::string(60 << 10, 'z'), "tail\n"};
  std::string expected;
  for (const std::string& piece : pieces) expected += piece;
  WriteFileAtomicFrom(
      path,
      [&](const std::function<void(std::string_view)>& write) {
        for (const std::string& piece : pieces) write(piece);
      },
      0600);
  EXPECT_EQ(ReadFile(path), expected);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(FilesIn(tmp.path()), 1u);  // no temporary left

  WriteFileAtomicFrom(path, [](const std::function<void(std::string_view)>&) {});  // nothing: an empty file
  EXPECT_EQ(ReadFile(path), "");
}

TEST(WriteFileAtomicFrom, AFailureWhileFillingLeavesTheOldFileAndNoTemporary) {
  TempDir tmp;
  const std::string path = tmp / "members";
  WriteFileAtomic(path, "old\n", 0600);
  EXPECT_THROW(WriteFileAtomicFrom(
                   path,
                   [](const std::function<void(std::string_view)>& write) {
                     write(std::string(200 << 10, 'n'));  // already written to the temporary
                     throw std::runtime_error("the source failed");
                   },
                   0600),
               std::runtime_error);
  EXPECT_EQ(ReadFile(path), "old\n");
  EXPECT_EQ(FilesIn(tmp.path()), 1u);
}

}  // namespace
}  // namespace storemove
