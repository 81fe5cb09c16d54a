// storemove-local: deliver and import without the network libraries. It must not load libssl or
// libcrypto (its whole point: a delivery's start-up), and must do exactly what storemove's own
// deliver and import do.
#include <cstdio>
#include <fstream>
#include <memory>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"

namespace storemove::tools {
namespace {

using storemove::testing::CliResult;
using storemove::testing::RunCli;
using storemove::testing::RunProgram;
using storemove::testing::SlurpFile;
using storemove::testing::TempDir;

const std::string kLocal = STOREMOVE_LOCAL_BIN;

// What the dynamic loader maps for `binary`, transitively (ldd).
std::string LoadedLibraries(const std::string& binary) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> p(::popen(("ldd " + binary + " 2>&1").c_str(), "r"), ::pclose);
  if (!p) return "popen failed";
  char buf[512];
  while (std::fgets(buf, sizeof buf, p.get())) out += buf;
  return out;
}

TEST(LocalBinary, LoadsNeitherLibsslNorLibcrypto) {
  const std::string local = LoadedLibraries(kLocal);
  ASSERT_NE(local.find("libdb-5.3"), std::string::npos) << local;  // ldd did list libraries
  EXPECT_EQ(local.find("libssl"), std::string::npos) << local;
  EXPECT_EQ(local.find("libcrypto"), std::string::npos) << local;
  EXPECT_EQ(local.find("libzstd"), std::string::npos) << local;
  // The full program does load them: the check above can tell the two apart.
  const std::string full = LoadedLibraries(STOREMOVE_BIN);
  EXPECT_NE(full.find("libcrypto"), std::string::npos) << full;
}

// Both binaries bind every symbol of their own at start (-z now): deliver's crash handler calls
// write(2) and _exit(2) through the PLT, and a first call there after libdb unmapped pages of a
// loaded library faulted inside ld.so, a second fault that ended the delivery by signal
// (helper-136), which Exim bounces.
TEST(LocalBinary, BothBinariesBindTheirSymbolsAtStart) {
  for (const std::string& binary : {kLocal, std::string(STOREMOVE_BIN)}) {
    std::string out;
    std::unique_ptr<FILE, int (*)(FILE*)> p(::popen(("readelf -d " + binary + " 2>&1").c_str(), "r"), ::pclose);
    ASSERT_TRUE(p);
    char buf[512];
    while (std::fgets(buf, sizeof buf, p.get())) out += buf;
    if (out.find("Dynamic section") == std::string::npos) GTEST_SKIP() << "no readelf here: " << out;
    EXPECT_NE(out.find("BIND_NOW"), std::string::npos) << binary << ":\n" << out;
  }
}

TEST(LocalBinary, DeliversAndImportsExactlyAsStoremoveDoes) {
  TempDir tmp;
  const std::string root = tmp / "store";
  ASSERT_EQ(RunCli({"init", "--store", root}).status, 0);
  const std::string message = "From: a@example.org\r\nSubject: local\r\n\r\nbody\r\n";
  CliResult full = RunCli({"deliver", "--store", root, "--user", "viafull", "--create", "--date", "1719828000"}, message);
  ASSERT_EQ(full.status, 0) << full.Describe();
  CliResult local =
      RunProgram(kLocal, {"deliver", "--store", root, "--user", "vialocal", "--create", "--date", "1719828000"}, message);
  ASSERT_EQ(local.status, 0) << local.Describe();
  EXPECT_EQ(local.out, std::regex_replace(full.out, std::regex("viafull"), "vialocal"));

  const std::string mbox = tmp / "in.mbox";
  std::ofstream(mbox, std::ios::binary) << "From a@example.org Mon Jul  1 10:00:00 2024\n"
                                           "Subject: one\n\nfirst\n\n"
                                           "From b@example.org Mon Jul  1 11:00:00 2024\n"
                                           "Subject: two\n\n>From the second\n";
  CliResult imported = RunProgram(kLocal, {"import", "--store", root, "-u", "vialocal", "-s", mbox, "-d", "Archive"});
  ASSERT_EQ(imported.status, 0) << imported.Describe();
  CliResult reference = RunCli({"import", "--store", root, "-u", "viafull", "-s", mbox, "-d", "Archive"});
  ASSERT_EQ(reference.status, 0) << reference.Describe();

  auto store = store::Store::Open(root);
  for (const char* folder : {"INBOX", "Archive"}) {
    auto a = store->OpenFolder("viafull", folder);
    auto b = store->OpenFolder("vialocal", folder);
    const store::FolderSnapshot sa = a->Snapshot(), sb = b->Snapshot();
    ASSERT_EQ(sa.messages.size(), sb.messages.size()) << folder;
    ASSERT_EQ(sa.messages.size(), std::string(folder) == "INBOX" ? 1u : 2u) << folder;
    for (size_t i = 0; i < sa.messages.size(); ++i)
      EXPECT_EQ(SlurpFile(b->MessagePath(sb.messages[i].uid)), SlurpFile(a->MessagePath(sa.messages[i].uid)))
          << folder << " message " << i;
  }
}

TEST(LocalBinary, OffersDeliverAndImportAloneAndFailsInOneLine) {
  CliResult help = RunProgram(kLocal, {"--help"});
  ASSERT_EQ(help.status, 0) << help.Describe();
  EXPECT_NE(help.out.find("deliver"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("import"), std::string::npos) << help.out;
  EXPECT_EQ(help.out.find("backup"), std::string::npos) << help.out;
  CliResult other = RunProgram(kLocal, {"backup", "--store", "/nonexistent", "-f", "-"});
  EXPECT_EQ(other.status, 64) << other.Describe();
  EXPECT_TRUE(other.err.starts_with("storemove-local: ")) << other.Describe();
  TempDir tmp;
  CliResult missing = RunProgram(kLocal, {"deliver", "--store", tmp / "none", "--user", "x"}, "Subject: x\r\n\r\nx\r\n");
  EXPECT_NE(missing.status, 0) << missing.Describe();
  EXPECT_TRUE(missing.err.starts_with("storemove-local: ") && missing.err.find('\n') == missing.err.size() - 1)
      << missing.Describe();
  CliResult version = RunProgram(kLocal, {"--version"});
  EXPECT_EQ(version.status, 0);
  EXPECT_EQ(version.out, RunCli({"--version"}).out);
}

}  // namespace
}  // namespace storemove::tools
