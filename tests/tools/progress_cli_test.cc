// The live progress line through the real binary: drawn on a terminal (a pty) or with -v, with a
// percentage and ETA when the total is known (restore from a regular file, verify, gen), the rate
// only from a pipe, and nothing on a non-terminal without -v. No timing: the first figures are
// drawn at once, whatever the speed.
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <tuple>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"

namespace storemove::tools {
namespace {

using storemove::testing::CliResult;
using storemove::testing::RunCli;
using storemove::testing::TempDir;

class ProgressCli : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = tmp_ / "src";
    CliResult r = RunCli({"gen", "--store", src_, "--users", "3", "--messages-per-user", "20"});
    ASSERT_EQ(r.status, 0) << r.Describe();
    r = RunCli({"backup", "--store", src_, "-f", stream_});
    ASSERT_EQ(r.status, 0) << r.Describe();
  }
  std::string Fresh(const std::string& name) {
    std::string dir = tmp_ / name;
    EXPECT_EQ(RunCli({"init", "--store", dir}).status, 0);
    return dir;
  }
  TempDir tmp_;
  std::string src_;
  std::string stream_ = tmp_ / "s.zst";
};

// Everything the child writes to its terminal, until it exits.
std::pair<int, std::string> RunOnPty(const std::vector<std::string>& args) {
  std::vector<std::string> storage = {STOREMOVE_BIN};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  if (pid < 0) return {-1, "forkpty failed"};
  if (pid == 0) {
    ::unsetenv("STOREMOVE_STORE");
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(master, buf, sizeof buf);
    if (n > 0) out.append(buf, size_t(n));
    else if (n < 0 && errno == EINTR) continue;
    else break;  // EIO once the child is gone and its side closed
  }
  ::close(master);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

TEST_F(ProgressCli, RestoreFromAFileShowsPercentAndEta) {
  CliResult r = RunCli({"restore", "--store", Fresh("dst"), "-f", stream_, "-v"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find("\rrestore: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("%, ETA "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\r\033[K"), std::string::npos) << r.err;  // cleared before the summary
}

TEST_F(ProgressCli, RestoreFromAPipeShowsTheRateWithoutEta) {
  const std::string dst = Fresh("dst");
  const std::string command = "cat '" + stream_ + "' | '" STOREMOVE_BIN "' restore --store '" + dst +
                              "' -f - -v 2>&1 >/dev/null";
  FILE* p = ::popen(command.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string err;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) err.append(buf, n);
  ASSERT_EQ(::pclose(p), 0) << err;
  EXPECT_NE(err.find("\rrestore: "), std::string::npos) << err;
  EXPECT_NE(err.find("/s"), std::string::npos) << err;
  EXPECT_EQ(err.find("ETA"), std::string::npos) << err;
}

TEST_F(ProgressCli, QuietOnANonTerminalWithoutVerbose) {
  CliResult r = RunCli({"restore", "--store", Fresh("dst"), "-f", stream_});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << r.err;
  r = RunCli({"verify", "--store", tmp_ / "dst", "--source", src_});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << r.err;
}

TEST_F(ProgressCli, TerminalGetsTheLineWithoutVerbose) {
  auto [status, out] = RunOnPty({"restore", "--store", Fresh("dst"), "-f", stream_});
  ASSERT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\rrestore: "), std::string::npos) << out;
  EXPECT_NE(out.find("ETA "), std::string::npos) << out;
  std::tie(status, out) = RunOnPty({"verify", "--store", tmp_ / "dst", "--source", src_});
  ASSERT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\rverify: "), std::string::npos) << out;
  EXPECT_NE(out.find("ETA "), std::string::npos) << out;
}

TEST_F(ProgressCli, VerifyRelinkAndGenWithVerbose) {
  const std::string dst = Fresh("dst");
  ASSERT_EQ(RunCli({"restore", "--store", dst, "-f", stream_}).status, 0);
  CliResult r = RunCli({"verify", "--store", dst, "--source", src_, "-v"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find("\rverify: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("%, ETA "), std::string::npos) << r.err;
  r = RunCli({"relink", "--store", dst, "-v"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  for (const char* pass : {"\rrelink primary survey 1/3: ", "\rrelink primary link 2/3: ",
                           "\rrelink primary survey 3/3: "})
    EXPECT_NE(r.err.find(pass), std::string::npos) << pass << r.err;
  r = RunCli({"gen", "--store", tmp_ / "gen", "--users", "2", "--messages-per-user", "5", "-v"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find("\rgen: 1 messages, "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("%, ETA "), std::string::npos) << r.err;
}

}  // namespace
}  // namespace storemove::tools
