// `storemove serve` logging, run as a real process: the --log file is reopened on SIGHUP (what
// logrotate needs), standard error carries sd-daemon "<N>" priorities when JOURNAL_STREAM names
// it, and --log syslog goes through syslog(3). Waits are on the log's content (inotify on the
// file's directory, or the pipe), never on time.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"

namespace storemove {
namespace {

using storemove::testing::SlurpFile;
using storemove::testing::TempDir;
using Clock = std::chrono::steady_clock;
constexpr auto kPatience = std::chrono::seconds(30);

bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// `storemove serve --store STORE --insecure --listen 127.0.0.1:0 EXTRA...` with standard error on
// `err_fd` and `env` ("NAME=value") added to the environment.
class Serve {
 public:
  Serve(const std::string& store, const std::vector<std::string>& extra, int err_fd,
        const std::vector<std::string>& env = {}) {
    std::vector<std::string> args = {STOREMOVE_BIN, "serve",  "--store", store, "--insecure",
                                     "--listen",    "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      ::dup2(err_fd, 2);
      int devnull = ::open("/dev/null", O_RDWR);
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::unsetenv("JOURNAL_STREAM");
      for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~Serve() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  void Signal(int sig) { ::kill(pid_, sig); }
  // SIGTERM, then the exit status.
  int Stop() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
};

bool WaitForFile(const std::string& path, const std::string& part) {
  return storemove::testing::WaitForFile(path, part, kPatience);
}

// Reads the pipe into *text until it holds `part`.
bool WaitForPipe(int fd, std::string* text, const std::string& part) {
  const auto deadline = Clock::now() + kPatience;
  while (!Contains(*text, part)) {
    int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, left) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return Contains(*text, part);
    text->append(buf, size_t(n));
  }
  return true;
}

// The port serve logged ("listening on 127.0.0.1:PORT ...").
int PortIn(const std::string& log) {
  size_t at = log.find("listening on 127.0.0.1:");
  if (at == std::string::npos) return -1;
  return std::atoi(log.c_str() + at + std::string("listening on 127.0.0.1:").size());
}

// A connection that says nothing and goes: serve logs a line about it.
void ConnectAndHangUp(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ::close(fd);
}

TEST(ServeLog, SighupReopensTheLogFileAfterLogrotateRenamedIt) {
  TempDir tmp;
  store::Store::Init(tmp / "store", {"primary"});
  const std::string log = tmp / "serve.log", rotated = tmp / "serve.log.1";
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  Serve serve(tmp / "store", {"--log", log}, devnull);
  ::close(devnull);
  ASSERT_TRUE(WaitForFile(log, "listening on ")) << SlurpFile(log);
  struct stat st;
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u) << "the log names users and peers";
  const int port = PortIn(SlurpFile(log));
  ASSERT_GT(port, 0);

  ASSERT_EQ(::rename(log.c_str(), rotated.c_str()), 0);  // what logrotate does
  serve.Signal(SIGHUP);
  ASSERT_TRUE(WaitForFile(log, "storemove serve: log reopened")) << SlurpFile(rotated);
  ConnectAndHangUp(port);
  ASSERT_TRUE(WaitForFile(log, "from 127.0.0.1:")) << SlurpFile(log);
  EXPECT_EQ(serve.Stop(), 0);

  const std::string before = SlurpFile(rotated), after = SlurpFile(log);
  EXPECT_TRUE(Contains(before, "listening on ")) << before;
  EXPECT_FALSE(Contains(before, "log reopened")) << before;
  EXPECT_FALSE(Contains(before, "from 127.0.0.1:")) << "a line went to the rotated file:\n" << before;
  EXPECT_TRUE(Contains(after, "storemove serve: stopped")) << after;
  // Timestamped lines in a file: "2026-01-01T00:00:00Z storemove serve: ...".
  EXPECT_EQ(after.substr(19, 2), "Z ") << after;
}

TEST(ServeLog, SighupWithoutALogFileNeitherKillsNorStops) {
  TempDir tmp;
  store::Store::Init(tmp / "store", {"primary"});
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  Serve serve(tmp / "store", {}, fds[1]);
  ::close(fds[1]);
  std::string text;
  ASSERT_TRUE(WaitForPipe(fds[0], &text, "listening on ")) << text;
  serve.Signal(SIGHUP);
  ConnectAndHangUp(PortIn(text));
  ASSERT_TRUE(WaitForPipe(fds[0], &text, "from 127.0.0.1:")) << text;  // still serving
  EXPECT_EQ(serve.Stop(), 0);
  ::close(fds[0]);
}

// systemd sets JOURNAL_STREAM to the device and inode of the socket it gives as standard error.
TEST(ServeLog, UnderSystemdStandardErrorCarriesPriorityPrefixes) {
  TempDir tmp;
  store::Store::Init(tmp / "store", {"primary"});
  for (bool journal : {true, false}) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    struct stat st;
    ASSERT_EQ(::fstat(fds[1], &st), 0);
    const std::string env = "JOURNAL_STREAM=" + (journal ? std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino)
                                                         : std::string("1:1"));  // another stream: not ours
    Serve serve(tmp / "store", {}, fds[1], {env});
    ::close(fds[1]);
    std::string text;
    ASSERT_TRUE(WaitForPipe(fds[0], &text, "listening on ")) << text;
    ConnectAndHangUp(PortIn(text));
    ASSERT_TRUE(WaitForPipe(fds[0], &text, "from 127.0.0.1:")) << text;
    EXPECT_EQ(serve.Stop(), 0);
    ASSERT_TRUE(WaitForPipe(fds[0], &text, "storemove serve: stopped")) << text;
    ::close(fds[0]);
    if (journal) {
      EXPECT_EQ(text.rfind("<6>storemove serve: listening on ", 0), 0u) << text;
      // A session that fails is an error (<3>), whatever the reason.
      EXPECT_TRUE(Contains(text, "\n<3>session 1 from 127.0.0.1:")) << text;
      EXPECT_TRUE(Contains(text, "\n<5>storemove serve: stopped\n")) << text;
      EXPECT_FALSE(Contains(text, "Z storemove serve")) << "journald stamps lines itself:\n" << text;
    } else {
      EXPECT_FALSE(Contains(text, "<6>")) << text;
      EXPECT_TRUE(Contains(text, "Z storemove serve: stopped\n")) << text;
    }
  }
}

// There is no syslog daemon here: the test library that stands in for one (tests/support/
// cyrus_syslog.cc, preloaded) writes what storemove hands syslog(3) to a file.
TEST(ServeLog, LogSyslogSendsTheLinesToSyslog) {
  TempDir tmp;
  store::Store::Init(tmp / "store", {"primary"});
  const std::string file = tmp / "syslog";
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  Serve serve(tmp / "store", {"--log", "syslog"}, devnull,
              {"LD_PRELOAD=" CYRUS_SYSLOG_LIB, "STOREMOVE_SYSLOG_FILE=" + file,
               "ASAN_OPTIONS=verify_asan_link_order=0"});
  ::close(devnull);
  ASSERT_TRUE(WaitForFile(file, "storemove serve: listening on ")) << SlurpFile(file);
  EXPECT_EQ(serve.Stop(), 0);
  ASSERT_TRUE(WaitForFile(file, "storemove serve: stopped")) << SlurpFile(file);
  const std::string text = SlurpFile(file);
  EXPECT_EQ(text.rfind("storemove[", 0), 0u) << "ident storemove with the pid:\n" << text;
  EXPECT_FALSE(Contains(text, "Z storemove serve")) << "syslog stamps lines itself:\n" << text;
}

}  // namespace
}  // namespace storemove
