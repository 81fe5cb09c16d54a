// Operator errors and damaged stores through the real binary: each ends with one readable line
// on stderr and a non-zero exit (never a signal), and leaves the store as it was.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"

namespace storemove::tools {
namespace {

using storemove::testing::CliResult;
using storemove::testing::RunCli;
using storemove::testing::TempDir;
namespace fs = std::filesystem;

bool IsOneErrorLine(const CliResult& r) {
  return r.err.starts_with("storemove: ") && r.err.back() == '\n' && r.err.find('\n') == r.err.size() - 1;
}

void FillWithRandomBytes(const std::string& path, size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = char(rng());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A damaged mboxlist database file: the store cannot be opened, and the CLI says which file,
// in one line, with a non-zero exit. Before, Db::Db destroyed itself and then read its
// destroyed members (a double free, or garbage in the message).
TEST(Operator, DamagedMboxlistDatabaseIsOneLineNamingTheFile) {
  for (const char* file : {"lright.db", "user.db", "folder.db"}) {
    for (uint32_t seed : {1u, 2u}) {
      TempDir tmp;
      const std::string root = tmp / "store";
      ASSERT_EQ(RunCli({"init", "--store", root}).status, 0);
      ASSERT_EQ(RunCli({"deliver", "--store", root, "--user", "joe", "--create"}, "Subject: x\r\n\r\nx\r\n").status, 0);
      const std::string path = root + "/mboxlist/" + file;
      FillWithRandomBytes(path, size_t(fs::file_size(path)), seed);
      CliResult r = RunCli({"list", "--store", root});
      EXPECT_NE(r.status, 0) << file << "\n" << r.Describe();
      EXPECT_LT(r.status, 128) << file << "\n" << r.Describe();
      EXPECT_TRUE(IsOneErrorLine(r)) << file << "\n" << r.Describe();
      EXPECT_NE(r.err.find(file), std::string::npos) << r.Describe();
    }
  }
}

// A database file that cannot be opened at all (here: a directory in its place).
TEST(Operator, UnopenableMboxlistDatabaseIsOneLine) {
  TempDir tmp;
  const std::string root = tmp / "store";
  ASSERT_EQ(RunCli({"init", "--store", root}).status, 0);
  fs::remove(root + "/mboxlist/subscr.db");
  fs::create_directory(root + "/mboxlist/subscr.db");
  CliResult r = RunCli({"list", "--store", root});
  EXPECT_NE(r.status, 0) << r.Describe();
  EXPECT_LT(r.status, 128) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("subscr.db"), std::string::npos) << r.Describe();
}

// init on a full filesystem: a 64 KiB tmpfs (root only; skipped otherwise).
TEST(Operator, InitOnAFullFilesystemIsOneLine) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tiny tmpfs";
  TempDir tmp;
  const std::string mnt = tmp / "tiny";
  fs::create_directory(mnt);
  if (std::system(("mount -t tmpfs -o size=64k tmpfs " + mnt + " 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here";
  CliResult r = RunCli({"init", "--store", mnt + "/store"});
  std::system(("umount " + mnt).c_str());
  EXPECT_NE(r.status, 0) << r.Describe();
  EXPECT_LT(r.status, 128) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
}

}  // namespace
}  // namespace storemove::tools
