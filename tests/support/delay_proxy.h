// A TCP proxy that puts a round-trip time between two peers on one machine, for tests and
// benchmarks of the network transport (docs/transport.md §9): it listens, connects each
// accepted connection to a target, and forwards every chunk it reads in either direction
// rtt/2 after it read it (by timestamp, so chunks in flight overlap as on a long path). Real
// sockets, one reader and one writer thread per direction, no bandwidth cap.
//
// What it does not model: the TCP handshake to the target is not delayed (only bytes are), and
// it reads eagerly, so the in-flight amount is bounded by `window` (when given), not by the
// end points' TCP windows.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace storemove::testing {

struct DelayProxyOptions {
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 0;  // 0 = any free port (see port())
  std::string target_host = "127.0.0.1";
  uint16_t target_port = 0;
  int rtt_ms = 0;           // each direction is delayed by rtt_ms / 2
  size_t window = 0;        // per direction, bytes read but not yet forwarded at most; 0 = no bound
};

class DelayProxy {
 public:
  // Listening when constructed; storemove::Error (kIo) when it cannot bind.
  explicit DelayProxy(const DelayProxyOptions& options);
  ~DelayProxy();  // Stop()
  DelayProxy(const DelayProxy&) = delete;
  DelayProxy& operator=(const DelayProxy&) = delete;

  uint16_t port() const { return port_; }
  // Connections accepted so far.
  uint64_t connections() const { return connections_.load(); }
  // Closes the listener and every connection (both peers see the connection end) and joins all
  // threads. Idempotent.
  void Stop();

 private:
  class Link;
  void AcceptLoop();

  DelayProxyOptions options_;
  int listener_ = -1;
  int wake_[2] = {-1, -1};  // Stop() writes: the accept loop's poll returns
  uint16_t port_ = 0;
  std::atomic<uint64_t> connections_{0};
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;  // links_
  std::list<std::unique_ptr<Link>> links_;
  std::thread accept_thread_;
};

}  // namespace storemove::testing
