// MakeDirs beneath a trusted root (util/fs.h): it makes every missing level, starting below the
// deepest one that exists, and refuses a file or a symlink on the way by name.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/fs_testing.h"

namespace storemove {
namespace {

using testing::TempDir;
namespace fs = std::filesystem;

class MakeDirsBeneathRoot : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { UseOpenat2ForTesting(GetParam()); }
  void TearDown() override { UseOpenat2ForTesting(true); }
};

TEST_P(MakeDirsBeneathRoot, MakesEveryMissingLevel) {
  TempDir tmp;
  TrustedRoot root(tmp.path(), false);
  // True when the call made the last level (a store then knows nothing was left in it).
  EXPECT_TRUE(MakeDirs(tmp / "a", 0700));
  EXPECT_TRUE(MakeDirs(tmp / "a/b/c/d/e", 0700));  // three levels missing below an existing one
  EXPECT_TRUE(fs::is_directory(tmp / "a/b/c/d/e"));
  EXPECT_EQ(fs::status(tmp / "a/b/c").permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_FALSE(MakeDirs(tmp / "a/b/c/d/e", 0700));  // all there: nothing to do
  EXPECT_FALSE(MakeDirs(tmp / "a/b/c", 0700));
  EXPECT_TRUE(MakeDirs(tmp / "x/y/z", 0700));      // nothing below the root exists
  EXPECT_TRUE(fs::is_directory(tmp / "x/y/z"));
  EXPECT_TRUE(MakeDirs(tmp / "a/b/f", 0700));      // only the last level missing
  EXPECT_TRUE(fs::is_directory(tmp / "a/b/f"));
}

TEST_P(MakeDirsBeneathRoot, RefusesAFileOnTheWayByName) {
  TempDir tmp;
  TrustedRoot root(tmp.path(), false);
  MakeDirs(tmp / "a/b", 0700);
  std::ofstream(tmp / "a/b/file") << "x";
  for (const std::string rel : {"a/b/file", "a/b/file/c", "a/b/file/c/d"}) {
    try {
      MakeDirs(tmp / rel, 0700);
      ADD_FAILURE() << rel << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("a/b/file"), std::string::npos) << rel << ": " << e.what();
    }
  }
  EXPECT_FALSE(fs::exists(tmp / "a/b/file/c"));
}

TEST_P(MakeDirsBeneathRoot, RefusesASymlinkOnTheWay) {
  TempDir tmp, outside;
  TrustedRoot root(tmp.path(), false);
  MakeDirs(tmp / "a", 0700);
  fs::create_directory_symlink(outside.path(), tmp / "a/link");
  for (const std::string rel : {"a/link/c", "a/link/c/d/e"}) {
    EXPECT_THROW(MakeDirs(tmp / rel, 0700), Error) << rel;
  }
  EXPECT_TRUE(fs::is_empty(outside.path()));
}

INSTANTIATE_TEST_SUITE_P(Resolution, MakeDirsBeneathRoot, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Openat2" : "Walk"; });

}  // namespace
}  // namespace storemove
