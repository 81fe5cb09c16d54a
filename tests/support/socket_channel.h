// An interop::ImapChannel over a connected socket for tests: plain read/send on a descriptor (a
// socketpair end or a loopback TCP connection), no TLS. max_read caps each Read so tests can cut
// the server's stream at every byte boundary; a receive timeout turns a stuck script into a
// failure instead of a hang.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "interop/imap_client.h"
#include "util/error.h"

namespace storemove::testing {

class SocketChannel : public interop::ImapChannel {
 public:
  explicit SocketChannel(int fd, size_t max_read = size_t(1) << 30) : fd_(fd), max_read_(max_read) {
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  // Connects to 127.0.0.1:port, from `source` (another loopback address keeps a server's per-IP
  // penalties for failed logins apart).
  static int Connect(int port, const char* source = "127.0.0.1") {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) ThrowErrno("socket");
    sockaddr_in from{};
    from.sin_family = AF_INET;
    ::inet_pton(AF_INET, source, &from.sin_addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) {
      const int err = errno;
      ::close(fd);
      ThrowErrno(std::string("bind to ") + source, err);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      const int err = errno;
      ::close(fd);
      ThrowErrno("connect to 127.0.0.1:" + std::to_string(port), err);
    }
    return fd;
  }
  ~SocketChannel() override { ::close(fd_); }
  SocketChannel(const SocketChannel&) = delete;
  SocketChannel& operator=(const SocketChannel&) = delete;

  size_t Read(void* data, size_t size) override {
    for (;;) {
      const ssize_t n = ::recv(fd_, data, size < max_read_ ? size : max_read_, 0);
      if (n >= 0) return size_t(n);
      if (errno != EINTR) ThrowErrno("test channel recv");
    }
  }
  void Write(const void* data, size_t size) override {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::send(fd_, p, size, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) ThrowErrno("test channel send");
      p += n;
      size -= size_t(n);
    }
  }
  void StartTls() override { ++tls_started; }

  int tls_started = 0;

 private:
  int fd_;
  size_t max_read_;
};

}  // namespace storemove::testing
