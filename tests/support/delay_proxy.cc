#include "tests/support/delay_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>

#include "util/error.h"

namespace storemove::testing {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kChunk = 256 << 10;
constexpr int kBuffer = 16 << 20;  // as the transport's sockets (stream/net_conn.h)

void Tune(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // forward small frames at once
  int size = kBuffer;
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

// A connected (blocking) socket to host:port, or -1.
int ConnectTo(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* list = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list) != 0) return -1;
  int fd = -1;
  for (addrinfo* a = list; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    Tune(fd);  // before the SYN: the window scale
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(list);
  return fd;
}

}  // namespace

// One proxied connection: two directions, each a reader (stamps chunks) and a writer (forwards
// each chunk at its time).
class DelayProxy::Link {
 public:
  Link(int client, int target, const DelayProxyOptions& options)
      : client_(client), target_(target), delay_(std::chrono::microseconds(int64_t(options.rtt_ms) * 500)),
        window_(options.window) {
    up_.from = client_;
    up_.to = target_;
    down_.from = target_;
    down_.to = client_;
    for (Direction* d : {&up_, &down_}) {
      d->reader = std::thread([this, d] { Read(*d); });
      d->writer = std::thread([this, d] { Write(*d); });
    }
  }
  ~Link() {
    Close();
    for (Direction* d : {&up_, &down_}) {
      d->reader.join();
      d->writer.join();
    }
    ::close(client_);
    ::close(target_);
  }
  // Ends both directions at once: both peers see the connection end.
  void Close() {
    for (Direction* d : {&up_, &down_}) {
      std::lock_guard<std::mutex> lock(d->mutex);
      d->stop = true;
      d->cv.notify_all();
    }
    ::shutdown(client_, SHUT_RDWR);
    ::shutdown(target_, SHUT_RDWR);
  }
  bool done() const { return finished_.load() == 4; }

 private:
  struct Chunk {
    Clock::time_point due;
    std::string bytes;
  };
  struct Direction {
    int from = -1, to = -1;
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<Chunk> queue;
    size_t queued = 0;
    bool eof = false, stop = false;
    std::thread reader, writer;
  };

  void Read(Direction& d) {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(d.mutex);
        d.cv.wait(lock, [&] { return d.stop || window_ == 0 || d.queued < window_; });
        if (d.stop) break;
      }
      std::string buf(kChunk, '\0');
      ssize_t n = ::recv(d.from, buf.data(), buf.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // the end of this direction (or an error: treated as its end)
      buf.resize(size_t(n));
      std::lock_guard<std::mutex> lock(d.mutex);
      d.queued += buf.size();
      d.queue.push_back({Clock::now() + delay_, std::move(buf)});
      d.cv.notify_all();
    }
    {
      std::lock_guard<std::mutex> lock(d.mutex);
      d.eof = true;
      d.cv.notify_all();
    }
    ++finished_;
  }

  void Write(Direction& d) {
    for (;;) {
      Chunk chunk;
      {
        std::unique_lock<std::mutex> lock(d.mutex);
        d.cv.wait(lock, [&] { return d.stop || !d.queue.empty() || d.eof; });
        if (d.stop) break;
        if (d.queue.empty()) {  // everything before the end is delivered: pass the end on
          ::shutdown(d.to, SHUT_WR);
          break;
        }
        Clock::time_point due = d.queue.front().due;
        // Waiting for the chunk's time is the proxy's job, not a guess about another thread.
        if (d.cv.wait_until(lock, due, [&] { return d.stop; })) break;
        chunk = std::move(d.queue.front());
        d.queue.pop_front();
        d.queued -= chunk.bytes.size();
        d.cv.notify_all();  // the reader may be waiting for window space
      }
      bool failed = false;
      for (size_t off = 0; off < chunk.bytes.size() && !failed;) {
        ssize_t n = ::send(d.to, chunk.bytes.data() + off, chunk.bytes.size() - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) failed = true;
        else off += size_t(n);
      }
      if (failed) {  // the receiving peer is gone: so is the connection, both ways
        Close();
        break;
      }
    }
    ++finished_;
  }

  int client_, target_;
  Clock::duration delay_;
  size_t window_;
  Direction up_, down_;
  std::atomic<int> finished_{0};
};

DelayProxy::DelayProxy(const DelayProxyOptions& options) : options_(options) {
  if (::pipe2(wake_, O_CLOEXEC) != 0) ThrowErrno("pipe");
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* list = nullptr;
  int rc = ::getaddrinfo(options.listen_host.c_str(), std::to_string(options.listen_port).c_str(), &hints, &list);
  if (rc != 0) Throw(Errc::kIo, "delay proxy: resolve " + options.listen_host + ": " + ::gai_strerror(rc));
  std::string why = "no address";
  for (addrinfo* a = list; a && listener_ < 0; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    Tune(fd);  // accepted sockets inherit it
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
      why = std::strerror(errno);
      ::close(fd);
      continue;
    }
    listener_ = fd;
  }
  ::freeaddrinfo(list);
  if (listener_ < 0) {
    ::close(wake_[0]);
    ::close(wake_[1]);
    Throw(Errc::kIo, "delay proxy: listen on " + options.listen_host + ":" + std::to_string(options.listen_port) +
                         ": " + why);
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(listener_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                         : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

DelayProxy::~DelayProxy() {
  Stop();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void DelayProxy::AcceptLoop() {
  for (;;) {
    pollfd p[2] = {{listener_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    int target = ConnectTo(options_.target_host, options_.target_port);
    if (target < 0) {  // nobody at the target: the client sees its connection end
      ::close(client);
      continue;
    }
    int one = 1;
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = links_.begin(); it != links_.end();) it = (*it)->done() ? links_.erase(it) : std::next(it);
    links_.push_back(std::make_unique<Link>(client, target, options_));
    ++connections_;
  }
}

void DelayProxy::Stop() {
  if (stopping_.exchange(true)) return;
  (void)!::write(wake_[1], "x", 1);
  if (accept_thread_.joinable()) accept_thread_.join();
  ::close(listener_);
  std::list<std::unique_ptr<Link>> links;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    links.swap(links_);
  }
  for (auto& link : links) link->Close();
  links.clear();  // joins their threads
}

}  // namespace storemove::testing
