// Internal to stream/net*.cc: sockets, TLS contexts, one connection, and the session frames
// of docs/transport.md.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <functional>
#include <utility>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "stream/net.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/input_wait.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;

namespace storemove::stream::net {

// --- TLS contexts ------------------------------------------------------------------------------
// One side's TLS configuration, from Credentials (null context with --insecure).
class TlsContext {
 public:
  enum class Side { kClient, kServer };
  // Checks the credentials (exactly one kind; key file mode 0600 or stricter) and loads them.
  TlsContext(const Credentials& credentials, Side side);
  // A client of a mail server (moveuser): the server's certificate is checked against `ca_file`,
  // or the system's trusted CAs when it is empty, and its name against the host connected to;
  // TLS 1.2 or later (what IMAP servers offer); no client certificate.
  static std::unique_ptr<TlsContext> ForMailServer(const std::string& ca_file);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  SSL_CTX* get() const { return ctx_; }
  bool psk() const { return psk_; }
  bool mail_server() const { return mail_server_; }
  std::string Describe() const;  // "pre-shared key", "mutual certificates", "plain TCP (--insecure)"

 private:
  TlsContext() = default;
  void Load(const Credentials& credentials, Side side);
  SSL_CTX* ctx_ = nullptr;
  bool psk_ = false;
  bool mail_server_ = false;
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
  // True when the peer has closed its side or the connection is broken (a reset), whatever is
  // still unread: the server's I/O thread asks while it reads nothing (its queue is full).
  bool PeerClosed();
  // Waits until Readable() (true) or `wake_fd` becomes readable (false); kTempFail after the
  // timeout without either. The server's I/O thread waits here between frames.
  bool WaitReadable(int wake_fd);
  // Orderly end: TLS close_notify and TCP FIN, then reads and discards what the peer still sends
  // (at most `drain_seconds`), so a frame we sent is not destroyed by a reset.
  void Close(int drain_seconds);
  // From another thread: makes blocked reads and writes of this connection fail at once. With
  // discard_unsent, the close that follows resets the connection (SO_LINGER 0): what is still
  // in our send buffer is dropped rather than delivered, so a peer across a slow link stops
  // applying a cancelled stream when the cancel comes, not seconds of buffered data later.
  void Abort(bool discard_unsent = false);
  // SO_RCVBUF(FORCE) of the socket: what the peer may have in flight to us, in kernel memory.
  void SetReceiveBuffer(int bytes);
  // From now on the reads (of one thread) tell a peer that sends under 1 KiB a second of
  // waiting and give up on it, as util/input_wait.h's TrickleWatch does for a pipe: the waits
  // of Read and WaitReadable count, the first data's does not. An inactive policy stops it.
  void WatchTrickle(StallPolicy policy);

  const std::string& peer() const { return peer_; }
  bool tls() const { return ssl_ != nullptr; }
  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t bytes_out() const { return bytes_out_; }
  // Failures before this is set are reported as authentication failures (kAuth), except, on
  // the client's side, a connection closed without a TLS alert: kTempFail (see FailTls).
  void set_authenticated() { authenticated_ = true; }
  bool authenticated() const { return authenticated_; }
  // A read, write or handshake ran out of the timeout without progress (the kTempFail it threw):
  // the peer was silent, which a client tells apart from a peer that closed or reset.
  bool timed_out() const { return timed_out_; }
  // ... because a TLS record came slower than its pace (net.cc, RecordPace): not silence.
  bool trickled() const { return trickled_; }
  // Abort() was called: what failed since is this side's doing, not the peer's ("closed the
  // connection" blamed the server for a session our deadline had cut, helper-79 #8).
  bool aborted() const { return aborted_; }

 private:
  [[noreturn]] void ThrowTimedOut(const std::string& what);
  bool TlsInterrupted(int ret);  // a signal, not the timeout: call again (see net.cc)
  // The pace of TLS reads (net.cc, PacedTlsRead): a record must come whole within the timeout
  // plus a second for every KiB it may hold. Set around SSL_read and the handshakes.
  friend long PacedTlsRead(BIO*, int, const char*, size_t, int, long, int, size_t*);
  class RecordPace;
  bool BeforeTlsRead();
  void PaceTlsReads();
  [[noreturn]] void FailTls(const char* call, int ret);
  int PeekFirstByte();
  size_t ReadRaw(void* data, size_t size);
  UniqueFd fd_;
  std::mutex abort_mutex_;  // fd_ is closed only under it, so Abort() never hits a reused fd
  SSL* ssl_ = nullptr;
  std::string peer_;
  int timeout_seconds_ = 60;
  bool authenticated_ = false;
  bool timed_out_ = false;
  std::atomic<bool> aborted_{false};
  bool psk_ = false;
  bool client_ = false;  // Connect()ed: we asked to be authenticated
  bool mail_server_ = false;  // Connect()ed to an IMAP server (TlsContext::ForMailServer)
  bool pacing_ = false;        // inside SSL_read or a handshake: BeforeTlsRead keeps the record's pace
  bool paced_out_ = false;     // a record came slower than that (FailTls says so)
  bool read_until_deadline_ = false;  // the last socket read's timeout was the record's deadline
  bool trickled_ = false;
  bool timeout_lowered_ = false;  // SO_RCVTIMEO set below timeout_seconds_ for a record's rest
  std::chrono::steady_clock::time_point record_deadline_;
  std::string in_;  // read-ahead, consumed from in_pos_
  size_t in_pos_ = 0;
  uint64_t bytes_in_ = 0, bytes_out_ = 0;
  StallPolicy trickle_policy_;  // WatchTrickle's; inactive: not watched
  TrickleWatch trickle_;
  std::chrono::steady_clock::duration waited_unread_{};  // WaitReadable's waits since the last data
};

// Socket buffers sized for a 100 ms x 1 Gbit/s path (12.5 MB in flight), docs/transport.md §5:
// asked for with SO_SNDBUFFORCE/SO_RCVBUFFORCE (root, CAP_NET_ADMIN), else with SO_SNDBUF/
// SO_RCVBUF (capped by net.core.wmem_max/rmem_max). Set before connect/listen, so the window
// scale negotiated in the SYN covers them (accepted sockets inherit the listener's).
inline constexpr int kSocketBuffer = 16 << 20;
// A server's accepted socket until its session has a slot: enough for a TLS handshake and a
// REQUEST's header. A waiting peer cannot park 16 MiB of REQUEST (or junk) in kernel memory per
// connection; the window scale, fixed by the listener's buffer at the SYN, stays, so raising the
// buffer to kSocketBuffer once the slot is taken gives the session the whole window.
inline constexpr int kWaitingReceiveBuffer = 64 << 10;
struct SocketBuffers {
  int send = 0, receive = 0;  // as the kernel reports them (twice what was granted, for bookkeeping)
  bool forced = false;        // the FORCE variants worked
  // "send 32 MiB, receive 32 MiB (forced)" or "... (capped by net.core.wmem_max/rmem_max ...)"
  std::string Describe() const;
};
SocketBuffers SetSocketBuffers(int fd, int bytes = kSocketBuffer);

// TCP connect with a timeout; kIo naming the endpoint on failure, kInterrupted when `cancel`
// (optional) is cancelled meanwhile. The socket buffers obtained in *buffers (optional).
UniqueFd ConnectTcp(const Endpoint& to, int timeout_seconds, const Cancellation* cancel = nullptr,
                    SocketBuffers* buffers = nullptr);
// Bound, listening socket; the bound address (port 0 resolved) in *bound, its buffers in *buffers.
UniqueFd ListenTcp(const Endpoint& at, Endpoint* bound, SocketBuffers* buffers = nullptr);
// The address accept() gave (a peer that reset its connection at once has no getpeername).
Endpoint EndpointOf(const sockaddr* sa);
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
  // Server to a client that asked for it ("progress": true): "still working", while the stream
  // is in and the restore or verify still applies it (transport.md §5). No payload.
  kProgress = 0x09,
};
// Version 2: a connection carries several operations (docs/transport.md §1); version 1 requests
// (one operation, then close) are still served.
inline constexpr uint32_t kProtocolVersion = 2;
inline constexpr uint32_t kOldestProtocolVersion = 1;
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
// The same in two steps: the header (type and length, checked as above), then the payload.
struct FrameHeader {
  FrameType type;
  uint32_t length;
};
FrameHeader ReadFrameHeader(Connection& conn);
Frame ReadFramePayload(Connection& conn, const FrameHeader& header);
// As ReadFrame, but nullopt when the peer closes the connection before the frame's first byte
// (the end of a session between two operations).
std::optional<Frame> ReadFrameOrEnd(Connection& conn);
// Its header alone (the payload is then read with ReadFramePayload).
std::optional<FrameHeader> ReadFrameHeaderOrEnd(Connection& conn);

// The JSON of a REQUEST or RESULT frame, parsed with bounds: nesting at most kMaxFrameJsonDepth
// and at most one value per 8 bytes of text (plus 1024). nlohmann builds the whole tree, at tens
// of bytes per value: without them, 16 MiB of "[[[[..." or "[[],[],..." cost a server
// hundreds of MiB per connection. kProtocol "<what>: ..." beyond them or when not JSON.
inline constexpr int kMaxFrameJsonDepth = 16;
struct FrameJsonSinks {
  // A set-status of half a million users is ~580,000 small objects: as a tree, ~350 MiB (helper-70).
  // Given, the {"user": S, "status": S} objects of a top-level "statuses" array go here instead
  // (64 bytes each; "statuses" stays in the tree, empty); another element is kProtocol.
  std::vector<std::pair<std::string, std::string>>* statuses = nullptr;
  // Asked every 4,096 values: true ends the parse with kTempFail (a stopping server).
  std::function<bool()> cancelled;
};
nlohmann::json ParseFrameJson(std::string_view text, const std::string& what, const FrameJsonSinks& sinks = {});

// ERROR frames: u8 error category (Errc) and one line of text.
void WriteErrorFrame(Connection& conn, Errc code, const std::string& message);
// An error kind as the wire codes it (ERROR frames' first byte, a RESULT's "first_error"): its
// Errc value; kProtocol for a value that is none.
Errc ErrcFromWire(uint64_t code);
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

// The client's side of pipelined QUERYs (docs/transport.md §4): Ask writes a QUERY at once and
// returns; ANSWERs come back in the order asked and are queued as they are read, whether by
// Answer, by the DATA writer noticing them (Take) or by the wait for RESULT. At most
// `max_outstanding` questions are unanswered: Ask reads an ANSWER first when that many are.
inline constexpr size_t kMaxOutstandingQueries = 256;
class QueryPipeline final : public ContentOracle {
 public:
  QueryPipeline(Connection& conn, std::string from, size_t max_outstanding = kMaxOutstandingQueries);
  uint64_t Ask(const std::string& user, const std::string& partition,
               const std::vector<std::pair<Digest, uint64_t>>& contents) override;
  std::vector<bool> Answer(uint64_t ticket) override;
  // A frame read by someone else: an ANSWER is queued for the oldest unanswered question
  // (true); anything else is left to the caller (false). kProtocol for an ANSWER nobody asked for.
  bool Take(const Frame& frame);
  size_t outstanding() const { return pending_.size(); }  // asked, ANSWER not read yet

 private:
  void ReadOne();  // blocks for the next frame, which must be an ANSWER (or ERROR: thrown)
  Connection& conn_;
  std::string from_;
  size_t max_outstanding_;
  uint64_t next_ticket_ = 1;
  std::deque<std::pair<uint64_t, size_t>> pending_;      // (ticket, contents asked), in order
  std::map<uint64_t, std::vector<bool>> answered_;       // read, not yet taken by Answer
};

// RESULT payloads (JSON) for a restore session.
std::string ReportToJson(const SessionReport& report);
SessionReport ReportFromJson(std::string_view json);

}  // namespace storemove::stream::net
