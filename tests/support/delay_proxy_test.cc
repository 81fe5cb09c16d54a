// The delay proxy with real sockets: an echo server behind it, round trips that take at least
// the RTT, bytes intact in both directions, the end of a direction passed on, the window bound,
// Stop() ending open connections, and the CLI.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/delay_proxy.h"

namespace storemove::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kGuardSeconds = 60;

int Listen(uint16_t* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  EXPECT_EQ(::listen(fd, 16), 0);
  socklen_t len = sizeof sa;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  *port = ntohs(sa.sin_port);
  return fd;
}

int Connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{kGuardSeconds, 0};  // a hung proxy fails the test instead of hanging it
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Echoes every connection until its peer ends it, then ends its side. Accepts until destroyed.
class EchoServer {
 public:
  EchoServer() : listener_(Listen(&port_)) {
    thread_ = std::thread([this] {
      for (;;) {
        int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;  // shut down by the destructor
        ++accepted_;
        echoes_.emplace_back([fd] {
          std::vector<char> buf(1 << 16);
          for (;;) {
            ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
            if (n <= 0) break;
            for (ssize_t off = 0; off < n;) {
              ssize_t w = ::send(fd, buf.data() + off, size_t(n - off), MSG_NOSIGNAL);
              if (w <= 0) break;
              off += w;
            }
          }
          ::shutdown(fd, SHUT_WR);
          ::close(fd);
        });
      }
    });
  }
  ~EchoServer() {
    ::shutdown(listener_, SHUT_RDWR);
    thread_.join();
    for (auto& t : echoes_) t.join();
    ::close(listener_);
  }
  uint16_t port() const { return port_; }
  int accepted() const { return accepted_.load(); }

 private:
  uint16_t port_ = 0;
  int listener_;
  std::atomic<int> accepted_{0};
  std::vector<std::thread> echoes_;
  std::thread thread_;
};

DelayProxyOptions To(uint16_t port, int rtt_ms) {
  DelayProxyOptions o;
  o.target_port = port;
  o.rtt_ms = rtt_ms;
  return o;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = char(rng());
  return s;
}

// Sends `data` and reads the echo back at the same time (the proxy and the echo server buffer
// less than all of it), then ends the sending side; returns what came back before the end.
std::string EchoThrough(int fd, const std::string& data) {
  std::thread writer([&] {
    for (size_t off = 0; off < data.size();) {
      ssize_t n = ::send(fd, data.data() + off, std::min<size_t>(data.size() - off, 100000), MSG_NOSIGNAL);
      if (n <= 0) break;
      off += size_t(n);
    }
    ::shutdown(fd, SHUT_WR);
  });
  std::string back;
  std::vector<char> buf(1 << 16);
  for (;;) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    back.append(buf.data(), size_t(n));
  }
  writer.join();
  return back;
}

class DelayProxyRtt : public ::testing::TestWithParam<int> {};

TEST_P(DelayProxyRtt, ARoundTripTakesAtLeastTheRttAndBytesArriveIntact) {
  const int rtt = GetParam();
  EchoServer echo;
  DelayProxy proxy(To(echo.port(), rtt));
  int fd = Connect(proxy.port());
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 3; ++i) {  // one byte there and back: one RTT each
    auto start = Clock::now();
    ASSERT_EQ(::send(fd, "x", 1, MSG_NOSIGNAL), 1);
    char c = 0;
    ASSERT_EQ(::recv(fd, &c, 1, 0), 1);
    EXPECT_EQ(c, 'x');
    EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(rtt)) << "round trip " << i;
  }
  // 8 MiB both ways at once; the end of the client's direction reaches the echo server, whose
  // end comes back after its last byte.
  std::string data = RandomBytes(8 << 20, uint32_t(rtt) + 1);
  std::string back = EchoThrough(fd, data);
  EXPECT_EQ(back.size(), data.size());
  EXPECT_TRUE(back == data) << "bytes altered";
  ::close(fd);
  EXPECT_EQ(proxy.connections(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Rtt, DelayProxyRtt, ::testing::Values(0, 20, 100),
                         [](const auto& info) { return std::to_string(info.param) + "ms"; });

TEST(DelayProxy, TheWindowBoundsBytesInFlight) {
  // 4 MiB through a 512 KiB window, 20 ms RTT: each direction forwards at most 512 KiB per
  // 10 ms, so the 4 MiB cannot arrive in less than 8 of those (a bound, not a speed).
  EchoServer echo;
  DelayProxyOptions o = To(echo.port(), 20);
  o.window = 512 << 10;
  DelayProxy proxy(o);
  int fd = Connect(proxy.port());
  ASSERT_GE(fd, 0);
  std::string data = RandomBytes(4 << 20, 3);
  auto start = Clock::now();
  std::string back = EchoThrough(fd, data);
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(8 * 10));
  EXPECT_TRUE(back == data);
  ::close(fd);
}

TEST(DelayProxy, StopEndsOpenConnectionsAndTheListener) {
  EchoServer echo;
  DelayProxy proxy(To(echo.port(), 100));
  int fd = Connect(proxy.port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::send(fd, "x", 1, MSG_NOSIGNAL), 1);  // in flight when the proxy stops
  auto start = Clock::now();
  proxy.Stop();
  char c;
  ssize_t n = ::recv(fd, &c, 1, 0);
  EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << n << " " << errno;
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(kGuardSeconds));
  ::close(fd);
  int again = Connect(proxy.port());
  EXPECT_LT(again, 0) << "the listener still accepts after Stop()";
  if (again >= 0) ::close(again);
  proxy.Stop();  // idempotent
}

TEST(DelayProxy, NothingAtTheTargetEndsTheClientsConnection) {
  uint16_t port = 0;
  ::close(Listen(&port));  // a port with nobody listening
  DelayProxy proxy(To(port, 0));
  int fd = Connect(proxy.port());
  ASSERT_GE(fd, 0);
  char c;
  ssize_t n = ::recv(fd, &c, 1, 0);
  EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << n;
  ::close(fd);
}

TEST(DelayProxy, CliPrintsItsPortAndForwardsUntilSigterm) {
  EchoServer echo;
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    std::string to = "127.0.0.1:" + std::to_string(echo.port());
    ::execl(DELAY_PROXY_BIN, "delay-proxy", "--listen", "127.0.0.1:0", "--to", to.c_str(), "--rtt-ms", "20",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  std::string line;
  char c;
  pollfd p{out[0], POLLIN, 0};
  while (::poll(&p, 1, kGuardSeconds * 1000) > 0 && ::read(out[0], &c, 1) == 1 && c != '\n') line += c;
  ::close(out[0]);
  ASSERT_FALSE(line.empty()) << "delay-proxy printed no port";
  int fd = Connect(uint16_t(std::stoul(line)));
  ASSERT_GE(fd, 0);
  auto start = Clock::now();
  ASSERT_EQ(::send(fd, "y", 1, MSG_NOSIGNAL), 1);
  ASSERT_EQ(::recv(fd, &c, 1, 0), 1);
  EXPECT_EQ(c, 'y');
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(20));
  ::kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ssize_t n = ::recv(fd, &c, 1, 0);
  EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET));
  ::close(fd);
}

}  // namespace
}  // namespace storemove::testing
