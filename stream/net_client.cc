// The sending side of a network session: connect, authenticate, REQUEST/READY, then the
// zstd-compressed stream in DATA frames with QUERY/ANSWER round trips, then RESULT or ERROR.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>

#include <nlohmann/json.hpp>

#include "format/zstd_codec.h"
#include "stream/net_conn.h"

namespace storemove::stream::net {

namespace {

constexpr size_t kDataBuffer = 256 << 10;

std::string Hint(const Credentials& c) {
  if (c.insecure) return " (does the server require --key or certificates?)";
  if (!c.key_file.empty()) return " (do both sides use the same key file?)";
  return " (is each side's certificate signed by the CA the other side trusts?)";
}

// An authenticated connection with its session accepted (READY received).
class ClientSession {
 public:
  ClientSession(const Endpoint& to, const ClientOptions& options, const nlohmann::json& request)
      : tls_(options.credentials, TlsContext::Side::kClient),
        from_("server " + to.ToString()),
        conn_(ConnectTcp(to, options.timeout_seconds, options.cancel), to.ToString()),
        registration_(options.cancel, &conn_) {
    ::signal(SIGPIPE, SIG_IGN);  // a closed connection becomes EPIPE
    conn_.SetTimeout(options.timeout_seconds);
    Frame ready{FrameType::kError, {}};
    try {
      conn_.Connect(tls_, to.host);
      WriteFrame(conn_, FrameType::kRequest, request.dump());
      ready = ReadFrame(conn_);
    } catch (const Error& e) {
      // A TLS 1.3 server checks the client's certificate after our handshake has returned: its
      // refusal arrives as the failure of the first read (or write).
      if (options.cancel && options.cancel->cancelled()) Throw(Errc::kInterrupted, e.what());
      if (e.code() == Errc::kAuth || e.code() == Errc::kIo)
        Throw(Errc::kAuth, "authentication with " + to.ToString() + " failed: " + e.what() + Hint(options.credentials));
      throw;
    }
    if (ready.type != FrameType::kReady) Unexpected(ready, "READY", from_);
    conn_.set_authenticated();
  }

  Connection& conn() { return conn_; }
  const std::string& from() const { return from_; }

  // Fails with the server's ERROR when it has sent one (it stops a session early that way).
  void CheckServer() {
    if (!conn_.Readable()) return;
    Unexpected(ReadFrame(conn_), "nothing", from_);
  }

  Frame ReadReply(const char* expected, FrameType type) {
    Frame f = ReadFrame(conn_);
    if (f.type != type) Unexpected(f, expected, from_);
    return f;
  }

  void Close() { conn_.Close(0); }

 private:
  // Keeps the connection registered with the cancellation while the session lives.
  struct Registration {
    Registration(Cancellation* cancel, Connection* conn) : cancel_(cancel), conn_(conn) {
      if (cancel_) cancel_->Add(conn_);
    }
    ~Registration() {
      if (cancel_) cancel_->Remove(conn_);
    }
    Cancellation* cancel_;
    Connection* conn_;
  };

  TlsContext tls_;
  std::string from_;
  Connection conn_;
  Registration registration_;
};

// The stream's bytes as DATA frames.
class DataSink final : public format::ByteSink {
 public:
  explicit DataSink(ClientSession& session) : session_(session) { buf_.reserve(kDataBuffer); }

  void Write(const void* data, size_t size) override {
    buf_.append(static_cast<const char*>(data), size);
    if (buf_.size() >= kDataBuffer) Send();
  }
  void Flush() override { Send(); }
  void Finish() {
    Send();
    WriteFrame(session_.conn(), FrameType::kDataEnd, {});
  }

 private:
  void Send() {
    if (buf_.empty()) return;
    session_.CheckServer();
    try {
      for (size_t off = 0; off < buf_.size(); off += kMaxDataFrame)
        WriteFrame(session_.conn(), FrameType::kData, std::string_view(buf_).substr(off, kMaxDataFrame));
    } catch (const Error&) {
      session_.CheckServer();  // the server's reason, when it said why it stopped reading
      throw;
    }
    buf_.clear();
  }

  ClientSession& session_;
  std::string buf_;
};

// Asks the server which contents it holds (the stream is flushed by the caller).
class ServerOracle final : public ContentOracle {
 public:
  explicit ServerOracle(ClientSession& session) : session_(session) {}
  uint64_t Ask(const std::string& user, const std::string& partition,
               const std::vector<std::pair<Digest, uint64_t>>& contents) override {
    WriteFrame(session_.conn(), FrameType::kQuery, EncodeQuery({user, partition, contents}));
    asked_ = contents.size();
    return ++tickets_;
  }
  std::vector<bool> Answer(uint64_t) override {
    return DecodeAnswer(session_.ReadReply("ANSWER", FrameType::kAnswer).payload, asked_);
  }

 private:
  ClientSession& session_;
  uint64_t tickets_ = 0;
  size_t asked_ = 0;
};

// Writes the backup into the session's DATA frames; returns the backup's report.
SessionReport StreamBackup(ClientSession& session, store::Store& source, const BackupOptions& given,
                           const ClientOptions& client) {
  // h11-format: this client's ServerOracle reads one ANSWER per Ask and DataSink fails on an
  // unread ANSWER, so questions go one at a time (asked and answered before the folder's data,
  // without a flush) until the pipelined client and server of h11-net replace this.
  BackupOptions options = given;
  if (options.query_ahead == 0) options.query_ahead = 1;
  DataSink data(session);
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

nlohmann::json Request(const std::string& op, const ClientOptions& client) {
  nlohmann::json j = {{"protocol", kProtocolVersion}, {"op", op}};
  if (!client.source_store_id.empty()) j["source_store_id"] = client.source_store_id;
  return j;
}

ClientOptions ForSource(const ClientOptions& client, const store::Store& source) {
  ClientOptions c = client;
  if (c.source_store_id.empty()) c.source_store_id = source.store_id();
  return c;
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
  for (Connection* c : conns_) c->Abort();
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

SessionReport SendBackup(store::Store& source, const BackupOptions& options, const Endpoint& to,
                         const ClientOptions& given, const RestoreOptions& remote_restore) {
  if (options.manifest) Throw(Errc::kInvalidArgument, "a manifest cannot be restored remotely (use VerifyRemote)");
  const ClientOptions client = ForSource(given, source);
  nlohmann::json request = Request("restore", client);
  request["restore"] = {{"partition", remote_restore.partition},
                        {"user_map", remote_restore.user_map},
                        {"continue_on_error", remote_restore.continue_on_error},
                        {"skip_existing_check", remote_restore.skip_existing_check},
                        {"mirror", remote_restore.mirror},
                        {"keep_status", remote_restore.keep_status}};
  ClientSession session(to, client, request);
  ServerOracle oracle(session);
  BackupOptions session_options = options;
  session_options.oracle = &oracle;
  SessionReport report = StreamBackup(session, source, session_options, client);
  SessionReport remote = ReportFromJson(session.ReadReply("RESULT", FrameType::kResult).payload);
  report.stream_bytes = session.conn().bytes_out();
  report.skipped = remote.skipped;
  report.linked = remote.linked;
  report.expunged = remote.expunged;
  report.errors += remote.errors;
  for (const std::string& line : remote.error_lines) report.error_lines.push_back(session.from() + ": " + line);
  session.Close();
  return report;
}

VerifyReport VerifyRemote(store::Store& source, const BackupOptions& options, const Endpoint& to,
                          const ClientOptions& given) {
  const ClientOptions client = ForSource(given, source);
  nlohmann::json request = Request("verify", client);
  request["verify"] = {{"names", options.names}, {"check_bytes", true}};
  ClientSession session(to, client, request);
  BackupOptions manifest = options;
  manifest.manifest = true;
  manifest.oracle = nullptr;
  StreamBackup(session, source, manifest, client);
  std::string json = session.ReadReply("RESULT", FrameType::kResult).payload;
  session.Close();
  VerifyReport report;
  try {
    nlohmann::json j = nlohmann::json::parse(json);
    report.users = j.at("users").get<uint64_t>();
    report.folders = j.at("folders").get<uint64_t>();
    report.messages = j.at("messages").get<uint64_t>();
    report.bytes = j.at("bytes").get<uint64_t>();
    report.differences = j.at("differences").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    Throw(Errc::kProtocol, "RESULT frame of " + session.from() + ": " + e.what());
  }
  return report;
}

void SetRemoteStatus(const Endpoint& to, const ClientOptions& client, const std::string& user,
                     const store::UserStatus& status) {
  nlohmann::json request = Request("set-status", client);
  request["user"] = user;
  request["status"] = status.ToString();
  ClientSession session(to, client, request);
  session.ReadReply("RESULT", FrameType::kResult);
  session.Close();
}

}  // namespace storemove::stream::net
