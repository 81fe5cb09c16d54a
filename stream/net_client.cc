// The sending side: a Session connects, authenticates (hello/READY), then runs operations one
// after another on the connection: REQUEST/READY, the zstd-compressed stream in DATA frames with
// pipelined QUERYs (their ANSWERs queued as they come), then RESULT or ERROR.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "format/zstd_codec.h"
#include "stream/net_conn.h"

namespace storemove::stream::net {

namespace {

constexpr size_t kDataBuffer = 256 << 10;

std::string Hint(const Credentials& c, const std::string& what) {
  // A plain server answers a TLS client with a protocol_version alert (docs/transport.md §3); so
  // does a TLS peer that shares no protocol version with this one (an old OpenSSL, a policy).
  if (what.find("alert protocol version") != std::string::npos)
    return " (does the server run --insecure, plain TCP? if not, the two sides share no TLS version)";
  if (c.insecure) return " (does the server require --key or certificates?)";
  if (!c.key_file.empty()) return " (do both sides use the same key file?)";
  return " (is each side's certificate signed by the CA the other side trusts?)";
}

// Keeps a connection registered with the cancellation while it lives.
class Registration {
 public:
  Registration(Cancellation* cancel, Connection* conn) : cancel_(cancel), conn_(conn) {
    if (cancel_) cancel_->Add(conn_);
  }
  ~Registration() {
    if (cancel_) cancel_->Remove(conn_);
  }
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;

 private:
  Cancellation* cancel_;
  Connection* conn_;
};

// The stream's bytes as DATA frames. ANSWERs that arrive meanwhile go to the pipeline.
class DataSink final : public format::ByteSink {
 public:
  DataSink(Connection& conn, const std::string& from, QueryPipeline* pipeline)
      : conn_(conn), from_(from), pipeline_(pipeline) {
    buf_.reserve(kDataBuffer);
  }

  void Write(const void* data, size_t size) override {
    buf_.append(static_cast<const char*>(data), size);
    if (buf_.size() >= kDataBuffer) Send();
  }
  void Flush() override { Send(); }
  void Finish() {
    Send();
    WriteFrame(conn_, FrameType::kDataEnd, {});
  }

 private:
  // Reads what the server sent unasked-for so far: queued ANSWERs, or its ERROR (thrown: the
  // server stops a session early that way).
  void CheckServer() {
    while (conn_.Readable()) {
      Frame f = ReadFrame(conn_);
      if (!pipeline_ || !pipeline_->Take(f)) Unexpected(f, "nothing", from_);
    }
  }

  void Send() {
    if (buf_.empty()) return;
    CheckServer();
    try {
      for (size_t off = 0; off < buf_.size(); off += kMaxDataFrame)
        WriteFrame(conn_, FrameType::kData, std::string_view(buf_).substr(off, kMaxDataFrame));
    } catch (const Error&) {
      CheckServer();  // the server's reason, when it said why it stopped reading
      throw;
    }
    buf_.clear();
  }

  Connection& conn_;
  const std::string& from_;
  QueryPipeline* pipeline_;
  std::string buf_;
};

// Writes the backup into DATA frames; returns the backup's report.
SessionReport StreamBackup(DataSink& data, store::Store& source, const BackupOptions& options,
                           const ClientOptions& client) {
  SessionReport report;
  if (client.compress_level > 0) {
    format::ZstdCompressSink zsink(data, client.compress_level, client.threads);
    format::Encoder encoder(zsink);
    report = Backup(source, options, encoder);
    zsink.Finish();
  } else {
    format::Encoder encoder(data);
    report = Backup(source, options, encoder);
  }
  data.Finish();
  return report;
}

ClientOptions ForSource(const ClientOptions& client, const store::Store& source) {
  ClientOptions c = client;
  if (c.source_store_id.empty()) c.source_store_id = source.store_id();
  return c;
}

// `client_timeout`: how long this client waits without progress (--timeout), so that a server
// that must wait (for a user another session writes) gives up and says why before this client's
// own timeout would cut the session with a network error. Servers that do not know it ignore it.
nlohmann::json Request(const std::string& op, const std::string& source_store_id, int client_timeout) {
  nlohmann::json j = {{"protocol", kProtocolVersion}, {"op", op}};
  if (!source_store_id.empty()) j["source_store_id"] = source_store_id;
  if (client_timeout > 0) j["client_timeout"] = client_timeout;
  return j;
}

}  // namespace

Cancellation::Cancellation() {
  if (::pipe2(pipe_, O_CLOEXEC) != 0) ThrowErrno("pipe");
}

Cancellation::~Cancellation() {
  ::close(pipe_[0]);
  ::close(pipe_[1]);
}

void Cancellation::Cancel(const std::string& why) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (cancelled_) return;
  why_ = why;
  cancelled_ = true;
  // A cancelled stream is of no use to the server: the bytes still queued here are dropped
  // (helper-69: a destination applied a group's stream for 15 s after migrate had stopped it).
  for (Connection* c : conns_) c->Abort(/*discard_unsent=*/true);
  for (Cancellation* child : children_) child->Cancel(why);
  (void)!::write(pipe_[1], "x", 1);
  cv_.notify_all();
}

void Cancellation::AddChild(Cancellation* child) {
  std::lock_guard<std::mutex> lock(mutex_);
  children_.insert(child);
  if (cancelled_) child->Cancel(why_);
}

void Cancellation::RemoveChild(Cancellation* child) {
  std::lock_guard<std::mutex> lock(mutex_);
  children_.erase(child);
}

void CheckClientCredentials(const Credentials& credentials) {
  TlsContext check(credentials, TlsContext::Side::kClient);
}

std::string Cancellation::why() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return why_;
}

bool Cancellation::WaitFor(int64_t ms) {
  std::unique_lock<std::mutex> lock(mutex_);
  return cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return cancelled_.load(); });
}

void Cancellation::Add(Connection* conn) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (cancelled_) Throw(Errc::kInterrupted, why_);
  conns_.insert(conn);
}

void Cancellation::Remove(Connection* conn) {
  std::lock_guard<std::mutex> lock(mutex_);
  conns_.erase(conn);
}

// --- the session -------------------------------------------------------------------------------

class Session::Impl {
 public:
  Impl(const Endpoint& to, const ClientOptions& client)
      : client_(client),
        tls_(client.credentials, TlsContext::Side::kClient),
        from_("server " + to.ToString()),
        conn_(ConnectTcp(to, client.timeout_seconds, client.cancel, &buffers_), to.ToString()),
        registration_(client.cancel, &conn_) {
    ::signal(SIGPIPE, SIG_IGN);  // a closed connection becomes EPIPE
    conn_.SetTimeout(client.timeout_seconds);
    // "hello" asks for nothing but READY: the server has then authenticated us (a TLS 1.3
    // server refuses a client certificate after our handshake has returned, at our first read).
    Frame ready{FrameType::kError, {}};
    bool key_proven = false;  // the TLS handshake with the pre-shared key completed: the server knows it
    bool asked = false;       // "hello" written: what follows is the server's answer, or its silence
    try {
      conn_.Connect(tls_, to.host);
      if (conn_.tls()) Answered();  // its handshake came back (plain TCP has none: the first frame is the answer)
      key_proven = tls_.psk();
      nlohmann::json hello = Request("hello", client_.source_store_id, client_.timeout_seconds);
      hello["progress"] = true;  // PROGRESS while the server has no session slot for us yet
      WriteFrame(conn_, FrameType::kRequest, hello.dump());
      asked = true;
      ready = ReadFrame(conn_);
      Answered();
      for (bool told = false; ready.type == FrameType::kProgress; ready = ReadFrame(conn_))
        if (!told && client.on_waiting_for_slot) {
          told = true;
          client.on_waiting_for_slot();
        }
    } catch (const Error& e) {
      if (!conn_.timed_out()) Answered();  // it closed or reset, or refused us: a server acted
      if (client.cancel && client.cancel->cancelled()) Throw(Errc::kInterrupted, CutOff(e));
      // Silence from the start: the kernel took the connection and nothing behind it answered.
      if (!asked && conn_.timed_out() && !conn_.trickled())
        Throw(Errc::kTempFail, "server " + to.ToString() + " took the connection but did not answer within " +
                                   std::to_string(client.timeout_seconds) +
                                   " s: it is stopped or hung, or a proxy holds the connection with nothing behind it (" +
                                   e.what() + ")");
      // Silence after the handshake: the server holds an authenticated connection without a
      // word while all its session slots are busy (transport.md §5), and our timeout ran out.
      if (asked && e.code() == Errc::kTempFail)
        Throw(Errc::kTempFail, "server " + to.ToString() + " sent no READY within " +
                                   std::to_string(client.timeout_seconds) +
                                   " s: all its session slots are likely busy (its --max-sessions), this connection "
                                   "waiting for one; or it is stuck (" + e.what() + ")");
      // A server that proved our key and then closes before READY stopped or dropped us; it did
      // not refuse us (that would be an ERROR frame; the key is proven): a temporary failure,
      // which migrate retries.
      if (key_proven && (e.code() == Errc::kIo || e.code() == Errc::kAuth))
        Throw(Errc::kTempFail, "server " + to.ToString() + " closed the connection after the TLS handshake, before "
                                   "READY (it stopped or dropped it): " + e.what());
      // Plain TCP: a TLS server answers our REQUEST with an ERROR (read below, not thrown here),
      // so a connection that just ends was a server stopping or dropping it.
      if (client.credentials.insecure && (e.code() == Errc::kIo || e.code() == Errc::kAuth))
        Throw(Errc::kTempFail, "server " + to.ToString() + " closed the connection before READY (it stopped, or "
                                   "dropped it at its handshake limits): " + e.what());
      if (e.code() == Errc::kAuth || e.code() == Errc::kIo)
        Throw(Errc::kAuth, "authentication with " + to.ToString() + " failed: " + e.what() + Hint(client.credentials, e.what()));
      throw;
    }
    if (ready.type != FrameType::kReady) Unexpected(ready, "READY", from_);
    conn_.set_authenticated();
    // Its store id, which migrate's switch record keeps; a READY without one (or no JSON) names none.
    try {
      const nlohmann::json j = ParseFrameJson(ready.payload, "READY frame");
      auto id = j.is_object() ? j.find("store_id") : j.end();
      if (j.is_object() && id != j.end() && id->is_string()) server_store_id_ = id->get<std::string>();
    } catch (const Error&) {
    }
  }

  ~Impl() {
    try {
      conn_.Close(0);  // the server takes the end of the connection as the end of the session
    } catch (...) {
    }
  }

  SessionReport Restore(store::Store& source, const BackupOptions& options, const RestoreOptions& remote) {
    if (options.manifest) Throw(Errc::kInvalidArgument, "a manifest cannot be restored remotely (use VerifyRemote)");
    nlohmann::json request = Request("restore", SourceId(source), client_.timeout_seconds);
    request["progress"] = true;  // PROGRESS frames while the server applies the stream
    request["restore"] = {{"partition", remote.partition},
                          {"user_map", remote.user_map},
                          {"continue_on_error", remote.continue_on_error},
                          {"skip_existing_check", remote.skip_existing_check},
                          {"mirror", remote.mirror},
                          {"keep_status", remote.keep_status},
                          {"strict_summaries", remote.strict_summaries}};
    if (remote.allow_gap) request["restore"]["allow_gap"] = true;
    if (remote.copy_on_hold) {
      request["restore"]["copy_on_hold"] = true;
      request["restore"]["copy_users"] = remote.copy_users;
      request["restore"]["adopt"] = remote.adopt;
    }
    return Operation([&] {
      const Frame ready = Begin(request);
      // A server before 2026-12-05 takes the request and leaves out what it does not know: its
      // copies would be live during the passes (helper-85). Nothing is sent to it.
      if (remote.copy_on_hold && !Confirms(ready, "copy_on_hold"))
        Throw(Errc::kInvalidArgument, from_ + " did not confirm that it keeps migrate's copies on hold: it runs a storemove "
                                       "older than 2026-12-05; upgrade it first (docs/migration.md \"Upgrading a "
                                       "fleet\"); nothing was sent");
      uint64_t wire_before = conn_.bytes_out();
      QueryPipeline pipeline(conn_, from_);
      DataSink data(conn_, from_, &pipeline);
      BackupOptions session_options = options;
      session_options.oracle = &pipeline;
      SessionReport report = StreamBackup(data, source, session_options, client_);
      SessionReport remote_report = ReportFromJson(ReadReply(FrameType::kResult, &pipeline).payload);
      report.stream_bytes = conn_.bytes_out() - wire_before;
      report.skipped = remote_report.skipped;
      report.linked = remote_report.linked;
      report.flags_updated = remote_report.flags_updated;
      report.expunged = remote_report.expunged;
      report.unsettled = remote_report.unsettled;
      // The server's kind of error when it had the only ones (a gap in a dated chain: 66).
      if (report.errors == 0) report.first_error = remote_report.first_error;
      report.errors += remote_report.errors;
      report.notes = std::move(remote_report.notes);
      for (const std::string& line : remote_report.error_lines) report.error_lines.push_back(from_ + ": " + line);
      return report;
    });
  }

  VerifyReport Verify(store::Store& source, const BackupOptions& options) {
    nlohmann::json request = Request("verify", SourceId(source), client_.timeout_seconds);
    request["progress"] = true;
    request["verify"] = {{"names", options.names}, {"check_bytes", true}};
    std::string json = Operation([&] {
      Begin(request);
      DataSink data(conn_, from_, nullptr);
      BackupOptions manifest = options;
      manifest.manifest = true;
      manifest.oracle = nullptr;
      StreamBackup(data, source, manifest, client_);
      return ReadReply(FrameType::kResult, nullptr).payload;
    });
    VerifyReport report;
    try {
      nlohmann::json j = ParseFrameJson(json, "RESULT frame of " + from_);
      report.users = j.at("users").get<uint64_t>();
      report.folders = j.at("folders").get<uint64_t>();
      report.messages = j.at("messages").get<uint64_t>();
      report.bytes = j.at("bytes").get<uint64_t>();
      report.differences = j.at("differences").get<std::vector<std::string>>();
      report.switched_users = j.value("switched_users", uint64_t{0});  // servers before 2026-12-04: none
    } catch (const nlohmann::json::exception& e) {
      Throw(Errc::kProtocol, "RESULT frame of " + from_ + ": " + e.what());
    }
    return report;
  }

  void SetStatuses(const std::vector<std::pair<std::string, store::UserStatus>>& statuses) {
    if (statuses.empty()) return;
    nlohmann::json request = Request("set-status", client_.source_store_id, client_.timeout_seconds);
    nlohmann::json list = nlohmann::json::array();
    for (const auto& [user, status] : statuses) list.push_back({{"user", user}, {"status", status.ToString()}});
    request["statuses"] = std::move(list);
    Operation([&] {
      CheckBetweenOperations();
      WriteFrame(conn_, FrameType::kRequest, request.dump());
      // One round trip: RESULT, or ERROR (then nothing was changed and the session goes on).
      Frame f = ReadFrame(conn_);
      if (f.type == FrameType::kError) Refused(f);
      if (f.type != FrameType::kResult) Unexpected(f, "RESULT", from_);
      return 0;
    });
  }

  std::vector<std::pair<std::string, std::string>> RemoveFolders(const std::vector<std::string>& mailboxes) {
    std::vector<std::pair<std::string, std::string>> kept;
    if (mailboxes.empty()) return kept;
    nlohmann::json request = Request("remove-folders", client_.source_store_id, client_.timeout_seconds);
    request["mailboxes"] = mailboxes;
    const std::string json = Operation([&] {
      CheckBetweenOperations();
      WriteFrame(conn_, FrameType::kRequest, request.dump());
      Frame f = ReadFrame(conn_);
      if (f.type == FrameType::kError) Refused(f);
      if (f.type != FrameType::kResult) Unexpected(f, "RESULT", from_);
      return f.payload;
    });
    try {
      nlohmann::json j = ParseFrameJson(json, "RESULT frame of " + from_);
      for (const nlohmann::json& k : j.at("kept"))
        kept.emplace_back(k.at("mailbox").get<std::string>(), k.at("why").get<std::string>());
    } catch (const nlohmann::json::exception& e) {
      Throw(Errc::kProtocol, "RESULT frame of " + from_ + ": " + e.what());
    }
    return kept;
  }

  uint64_t bytes_out() const { return conn_.bytes_out(); }
  const std::string& server_store_id() const { return server_store_id_; }
  const std::string& peer() const { return from_; }
  const SocketBuffers& buffers() const { return buffers_; }

 private:
  // A failure after our cancellation aborted the connection is a consequence of the cut, not
  // something the server did: said so, instead of the symptom ("closed the connection").
  std::string CutOff(const Error& e) const {
    return conn_.aborted() ? "this side ended its session with " + from_ : e.what();
  }

  void Answered() {
    if (answered_) return;
    answered_ = true;
    if (client_.on_answered) client_.on_answered();
  }

  // An ERROR that answers a REQUEST before anything else: the server refused the operation and
  // still waits for the next one; the session stays usable.
  [[noreturn]] void Refused(const Frame& f) {
    refused_ = true;
    ThrowErrorFrame(f, from_);
  }

  // Runs one operation. A failure in its middle leaves the connection in an unknown state: the
  // session is then broken and later operations fail at once with the same reason.
  template <typename Fn>
  std::invoke_result_t<Fn> Operation(Fn fn) {
    if (!broken_.empty()) Throw(Errc::kIo, "session with " + from_ + " unusable after an earlier failure: " + broken_);
    refused_ = false;
    try {
      return fn();
    } catch (const Error& e) {
      if (!refused_) broken_ = e.what();
      if (client_.cancel && client_.cancel->cancelled()) Throw(Errc::kInterrupted, CutOff(e));
      throw;
    }
  }

  // The server ends an idle session (its --idle-timeout) with ERROR and a close: say so instead
  // of failing on the write of the next REQUEST.
  void CheckBetweenOperations() {
    if (!conn_.Readable()) return;
    std::optional<Frame> f = ReadFrameOrEnd(conn_);
    if (!f) Throw(Errc::kIo, from_ + " closed the session");
    Unexpected(*f, "nothing", from_);
  }

  // REQUEST, then READY (returned); an ERROR instead means the operation was refused (nothing
  // happened).
  Frame Begin(const nlohmann::json& request) {
    CheckBetweenOperations();
    WriteFrame(conn_, FrameType::kRequest, request.dump());
    Frame f = ReadFrame(conn_);
    if (f.type == FrameType::kError) Refused(f);
    if (f.type != FrameType::kReady) Unexpected(f, "READY", from_);
    return f;
  }

  // Whether a READY says `field` is true; a READY that is no JSON object says nothing. Parsed
  // as every frame's JSON is (bounded nesting: a peer's bytes).
  static bool Confirms(const Frame& ready, const char* field) {
    const nlohmann::json j = ParseFrameJson(ready.payload, "READY frame");
    if (!j.is_object()) return false;
    auto it = j.find(field);
    return it != j.end() && it->is_boolean() && it->get<bool>();
  }

  // The reply of type `type`; ANSWERs still on the way before it go to `pipeline`, PROGRESS
  // frames (the server still applying the stream) only restart the timeout's count.
  Frame ReadReply(FrameType type, QueryPipeline* pipeline) {
    for (;;) {
      Frame f = ReadFrame(conn_);
      if (pipeline && pipeline->Take(f)) continue;
      if (f.type == FrameType::kProgress) continue;
      if (f.type != type) Unexpected(f, FrameName(type), from_);
      return f;
    }
  }

  std::string SourceId(const store::Store& source) const {
    return client_.source_store_id.empty() ? source.store_id() : client_.source_store_id;
  }

  const ClientOptions client_;
  TlsContext tls_;
  std::string from_;
  SocketBuffers buffers_;
  Connection conn_;
  Registration registration_;
  std::string broken_;  // why the session cannot be used any more ("" = it can)
  std::string server_store_id_;  // what the server's READY said, as it said it
  bool refused_ = false;
  bool answered_ = false;  // on_answered was called
};

Session::Session(const Endpoint& to, const ClientOptions& client) : impl_(std::make_unique<Impl>(to, client)) {}
Session::~Session() = default;

SessionReport Session::Restore(store::Store& source, const BackupOptions& options, const RestoreOptions& remote) {
  return impl_->Restore(source, options, remote);
}

VerifyReport Session::Verify(store::Store& source, const BackupOptions& options) {
  return impl_->Verify(source, options);
}

void Session::SetStatuses(const std::vector<std::pair<std::string, store::UserStatus>>& statuses) {
  impl_->SetStatuses(statuses);
}

std::vector<std::pair<std::string, std::string>> Session::RemoveFolders(const std::vector<std::string>& mailboxes) {
  return impl_->RemoveFolders(mailboxes);
}

uint64_t Session::bytes_out() const { return impl_->bytes_out(); }
const std::string& Session::peer() const { return impl_->peer(); }
const std::string& Session::server_store_id() const { return impl_->server_store_id(); }
std::string Session::socket_buffers() const { return impl_->buffers().Describe(); }

// --- one-shot helpers: a session with one operation ------------------------------------------------

SessionReport SendBackup(store::Store& source, const BackupOptions& options, const Endpoint& to,
                         const ClientOptions& given, const RestoreOptions& remote_restore) {
  if (options.manifest) Throw(Errc::kInvalidArgument, "a manifest cannot be restored remotely (use VerifyRemote)");
  Session session(to, ForSource(given, source));
  return session.Restore(source, options, remote_restore);
}

VerifyReport VerifyRemote(store::Store& source, const BackupOptions& options, const Endpoint& to,
                          const ClientOptions& given) {
  Session session(to, ForSource(given, source));
  return session.Verify(source, options);
}

void SetRemoteStatus(const Endpoint& to, const ClientOptions& client, const std::string& user,
                     const store::UserStatus& status) {
  Session session(to, client);
  session.SetStatuses({{user, status}});
}

}  // namespace storemove::stream::net
