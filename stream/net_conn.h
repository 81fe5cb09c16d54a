// Internal to stream/net*.cc: sockets, TLS contexts, one connection, and the session frames
// of docs/transport.md.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "stream/net.h"
#include "util/error.h"
#include "util/fs.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace storemove::stream::net {

// --- TLS contexts ------------------------------------------------------------------------------
// One side's TLS configuration, from Credentials (null context with --insecure).
class TlsContext {
 public:
  enum class Side { kClient, kServer };
  // Checks the credentials (exactly one kind; key file mode 0600 or stricter) and loads them.
  TlsContext(const Credentials& credentials, Side side);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  SSL_CTX* get() const { return ctx_; }
  bool psk() const { return psk_; }
  std::string Describe() const;  // "pre-shared key", "mutual certificates", "plain TCP (--insecure)"

 private:
  SSL_CTX* ctx_ = nullptr;
  bool psk_ = false;
  std::string key_;  // the 32-byte PSK
};

// --- a connection ------------------------------------------------------------------------------
// A connected TCP socket, optionally under TLS. Reads and writes that make no progress for the
// timeout throw kTempFail; a peer that closes makes Read() return 0. Counts application bytes.
class Connection {
 public:
  Connection(UniqueFd fd, std::string peer);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void SetTimeout(int seconds);
  // TLS handshakes; a failure throws kAuth naming the reason.
  void Connect(const TlsContext& tls, const std::string& host);
  void Accept(const TlsContext& tls);

  size_t Read(void* data, size_t size);  // 1..size; 0 once the peer has closed
  void ReadExact(void* data, size_t size, const char* what);  // kProtocol if the peer closes first
  void WriteAll(const void* data, size_t size);
  // True when a read would not block (bytes or the peer's close are waiting).
  bool Readable();
  // Orderly end: TLS close_notify and TCP FIN, then reads and discards what the peer still sends
  // (at most `drain_seconds`), so a frame we sent is not destroyed by a reset.
  void Close(int drain_seconds);
  // From another thread: makes blocked reads and writes of this connection fail at once.
  void Abort();

  const std::string& peer() const { return peer_; }
  bool tls() const { return ssl_ != nullptr; }
  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t bytes_out() const { return bytes_out_; }
  // Failures before this is set are reported as authentication failures (kAuth).
  void set_authenticated() { authenticated_ = true; }
  bool authenticated() const { return authenticated_; }

 private:
  [[noreturn]] void FailTls(const char* call, int ret);
  size_t ReadRaw(void* data, size_t size);
  UniqueFd fd_;
  std::mutex abort_mutex_;  // fd_ is closed only under it, so Abort() never hits a reused fd
  SSL* ssl_ = nullptr;
  std::string peer_;
  int timeout_seconds_ = 60;
  bool authenticated_ = false;
  bool psk_ = false;
  std::string in_;  // read-ahead, consumed from in_pos_
  size_t in_pos_ = 0;
  uint64_t bytes_in_ = 0, bytes_out_ = 0;
};

// TCP connect with a timeout; kIo naming the endpoint on failure, kInterrupted when `cancel`
// (optional) is cancelled meanwhile.
UniqueFd ConnectTcp(const Endpoint& to, int timeout_seconds, const Cancellation* cancel = nullptr);
// Bound, listening socket; the bound address (port 0 resolved) in *bound.
UniqueFd ListenTcp(const Endpoint& at, Endpoint* bound);
std::string PeerName(int fd);     // "host:port"
std::string PeerAddress(int fd);  // the host alone (the per-address cap of serve)

// --- frames ----------------------------------------------------------------------------------
// [type u8][length u32 little-endian][payload], docs/transport.md §2.
enum class FrameType : uint8_t {
  kRequest = 0x01,
  kReady = 0x02,
  kData = 0x03,
  kDataEnd = 0x04,
  kQuery = 0x05,
  kAnswer = 0x06,
  kResult = 0x07,
  kError = 0x08,
};
inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kMaxDataFrame = size_t{1} << 20;
const char* FrameName(FrameType type);
uint32_t MaxFramePayload(FrameType type);

struct Frame {
  FrameType type;
  std::string payload;
};
void WriteFrame(Connection& conn, FrameType type, std::string_view payload);
// Reads one frame; kProtocol for an unknown type or a length over the type's limit (checked
// before anything is allocated), kAuth for TLS bytes on a plain connection.
Frame ReadFrame(Connection& conn);

// ERROR frames: u8 error category (Errc) and one line of text.
void WriteErrorFrame(Connection& conn, Errc code, const std::string& message);
[[noreturn]] void ThrowErrorFrame(const Frame& frame, const std::string& from);
[[noreturn]] void Unexpected(const Frame& frame, const char* expected, const std::string& from);

// QUERY and ANSWER payloads.
struct Query {
  std::string user, partition;
  std::vector<std::pair<Digest, uint64_t>> contents;
};
std::string EncodeQuery(const Query& query);
Query DecodeQuery(std::string_view payload);  // kProtocol when malformed
std::string EncodeAnswer(const std::vector<bool>& have);
std::vector<bool> DecodeAnswer(std::string_view payload, size_t expected);

// RESULT payloads (JSON) for a restore session.
std::string ReportToJson(const SessionReport& report);
SessionReport ReportFromJson(std::string_view json);

}  // namespace storemove::stream::net
