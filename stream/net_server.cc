// The receiving side: `storemove serve`. One thread per session (at most max_sessions; more
// connections wait in the listen queue), each authenticating its peer and then restoring one
// stream (or checking a manifest, or setting a status) into the shared store.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <list>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "format/zstd_codec.h"
#include "stream/net_conn.h"

namespace storemove::stream::net {

namespace {

constexpr int kDrainSeconds = 5;

class Logger {
 public:
  explicit Logger(std::ostream& out) : out_(out) {}
  void Line(const std::string& line) {
    std::time_t t = std::time(nullptr);
    std::tm tm;
    gmtime_r(&t, &tm);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    std::lock_guard<std::mutex> lock(mutex_);
    out_ << when << " " << line << "\n";
    out_.flush();
  }

 private:
  std::mutex mutex_;
  std::ostream& out_;
};

// The decoder's input: DATA frames, answering QUERY frames met on the way (the sender waits for
// the ANSWER, having flushed everything before its question). DATA-END is the end of input.
class SessionSource final : public format::ByteSource {
 public:
  SessionSource(Connection& conn, store::Store& store, const RestoreOptions* restore, Logger* verbose_log,
                std::string who)
      : conn_(conn), store_(store), restore_(restore), log_(verbose_log), who_(std::move(who)) {}

  size_t Read(void* data, size_t size) override {
    while (pos_ == chunk_.size()) {
      if (ended_) return 0;
      Frame f = ReadFrame(conn_);
      switch (f.type) {
        case FrameType::kData:
          if (f.payload.empty()) Throw(Errc::kProtocol, conn_.peer() + " sent an empty DATA frame");
          chunk_ = std::move(f.payload);
          pos_ = 0;
          break;
        case FrameType::kDataEnd: ended_ = true; return 0;
        case FrameType::kQuery:
          if (!restore_) Throw(Errc::kProtocol, conn_.peer() + " sent QUERY outside a restore session");
          Answer(DecodeQuery(f.payload));
          break;
        default: Unexpected(f, "DATA, QUERY or DATA-END", conn_.peer());
      }
    }
    size_t n = std::min(size, chunk_.size() - pos_);
    std::memcpy(data, chunk_.data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  // Which contents the repository of the user's (future) partition holds. Only a hint: restore
  // proves every held record's bytes before linking.
  void Answer(const Query& q) {
    std::vector<bool> have(q.contents.size(), false);
    auto mapped = restore_->user_map.find(q.user);
    std::string user = mapped == restore_->user_map.end() ? q.user : mapped->second;
    bool valid = true;
    try {
      store::ValidateUserId(user);
    } catch (const Error&) {
      valid = false;  // restore refuses this user anyway
    }
    size_t held = 0;
    if (valid) {
      relinker::Repository repository(store_.PartitionPath(RestorePartition(store_, *restore_, user, q.partition)),
                                      restore_->repository);
      for (size_t i = 0; i < q.contents.size(); ++i) {
        have[i] = repository.OpenEntry(q.contents[i].first, q.contents[i].second).valid();
        held += have[i];
      }
    }
    WriteFrame(conn_, FrameType::kAnswer, EncodeAnswer(have));
    if (log_)
      log_->Line(who_ + ": QUERY user " + user + ": " + std::to_string(q.contents.size()) + " contents, " +
                 std::to_string(held) + " held here");
  }

  Connection& conn_;
  store::Store& store_;
  const RestoreOptions* restore_;
  Logger* log_;
  std::string who_;
  std::string chunk_;
  size_t pos_ = 0;
  bool ended_ = false;
};

struct Slot {
  uint64_t id = 0;
  std::unique_ptr<Connection> conn;
  std::thread thread;
  bool done = false;  // under Server::mutex_
};

class Server {
 public:
  Server(store::Store& store, const ServeOptions& options, std::ostream& log)
      : store_(store), options_(options), tls_(options.credentials, TlsContext::Side::kServer), log_(log) {}

  void Run(const std::atomic<bool>* stop) {
    Endpoint bound;
    UniqueFd listener = ListenTcp(ParseEndpoint(options_.listen), &bound);
    log_.Line("storemove serve: listening on " + bound.ToString() + " (" + tls_.Describe() + ", store " +
              store_.root() + ", at most " + std::to_string(options_.max_sessions) + " sessions)");
    if (options_.on_listening) options_.on_listening(bound);
    std::list<std::unique_ptr<Slot>> slots;
    uint64_t next_id = 0;
    while (!(stop && stop->load())) {
      Reap(&slots);
      if (slots.size() >= size_t(options_.max_sessions)) {
        std::unique_lock<std::mutex> lock(mutex_);
        ended_.wait_for(lock, std::chrono::milliseconds(200));
        continue;
      }
      pollfd p{listener.get(), POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) {
          log_.Line("storemove serve: accept: " + std::string(std::strerror(errno)) + "; waiting for sessions to end");
          std::unique_lock<std::mutex> lock(mutex_);
          ended_.wait_for(lock, std::chrono::milliseconds(200));
        }
        continue;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto slot = std::make_unique<Slot>();
      slot->id = ++next_id;
      slot->conn = std::make_unique<Connection>(UniqueFd(fd), PeerName(fd));
      Slot* s = slot.get();
      try {
        slot->thread = std::thread([this, s] { RunSession(*s); });
      } catch (const std::system_error& e) {
        log_.Line("session " + std::to_string(s->id) + " from " + s->conn->peer() + ": no thread: " + e.what());
        continue;
      }
      slots.push_back(std::move(slot));
    }
    listener.reset();
    if (!slots.empty())
      log_.Line("storemove serve: stopping; cutting off " + std::to_string(slots.size()) + " running session(s)");
    for (auto& s : slots) s->conn->Abort();
    for (auto& s : slots) s->thread.join();
    log_.Line("storemove serve: stopped");
  }

 private:
  void Reap(std::list<std::unique_ptr<Slot>>* slots) {
    for (auto it = slots->begin(); it != slots->end();) {
      bool done;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        done = (*it)->done;
      }
      if (!done) {
        ++it;
        continue;
      }
      (*it)->thread.join();
      it = slots->erase(it);
    }
  }

  void RunSession(Slot& slot) {
    Connection& conn = *slot.conn;
    const std::string who = "session " + std::to_string(slot.id) + " from " + conn.peer();
    std::string op = "session";
    try {
      conn.SetTimeout(options_.idle_timeout_seconds);
      conn.Accept(tls_);
      conn.set_authenticated();  // (a no-op handshake with --insecure)
      Frame request = ReadFrame(conn);
      if (request.type != FrameType::kRequest) Unexpected(request, "REQUEST", conn.peer());
      Serve(conn, who, request.payload, &op);
      conn.Close(0);
    } catch (const Error& e) {
      if (e.code() == Errc::kAuth) {
        log_.Line(who + ": authentication failed: " + e.what());
      } else if (!conn.authenticated()) {
        log_.Line(who + ": refused before authentication: " + e.what());
      } else {
        log_.Line(who + ": " + op + " failed: " + e.what());
        try {
          WriteErrorFrame(conn, e.code(), e.what());
        } catch (const Error&) {
          // the peer is gone; the log has the reason
        }
      }
      CloseQuietly(conn);
    } catch (const std::exception& e) {
      log_.Line(who + ": " + op + " failed: internal error: " + e.what());
      try {
        WriteErrorFrame(conn, Errc::kIo, std::string("internal error: ") + e.what());
      } catch (const Error&) {
      }
      CloseQuietly(conn);
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      slot.done = true;
    }
    ended_.notify_all();
  }

  static void CloseQuietly(Connection& conn) {
    try {
      conn.Close(kDrainSeconds);
    } catch (...) {
    }
  }

  // One authenticated session's request: READY, the work, RESULT (errors throw to the caller,
  // which logs them and sends ERROR).
  void Serve(Connection& conn, const std::string& who, const std::string& payload, std::string* op) {
    nlohmann::json request;
    try {
      request = nlohmann::json::parse(payload);
      if (request.at("protocol").get<uint32_t>() != kProtocolVersion)
        Throw(Errc::kProtocol, "protocol version " + request.at("protocol").dump() + " not supported (this server speaks " +
                                   std::to_string(kProtocolVersion) + ")");
      *op = request.at("op").get<std::string>();
      if (*op == "restore") return ServeRestore(conn, who, request.at("restore"));
      if (*op == "verify") return ServeVerify(conn, who, request.at("verify"));
      if (*op == "set-status") return ServeSetStatus(conn, who, request);
    } catch (const nlohmann::json::exception& e) {
      Throw(Errc::kProtocol, std::string("bad REQUEST: ") + e.what());
    }
    Throw(Errc::kProtocol, "unknown operation '" + *op + "'");
  }

  void SendReady(Connection& conn) {
    WriteFrame(conn, FrameType::kReady, nlohmann::json{{"protocol", kProtocolVersion}}.dump());
  }

  void Sync() {
    // Success is reported only once the restored messages are on stable storage (as restore does).
    UniqueFd root = OpenDirectory(store_.root());
    if (::syncfs(root.get()) != 0) ThrowErrno("syncfs " + store_.root());
  }

  void ServeRestore(Connection& conn, const std::string& who, const nlohmann::json& j) {
    RestoreOptions options;
    options.partition = j.at("partition").get<std::string>();
    options.user_map = j.at("user_map").get<std::map<std::string, std::string>>();
    options.continue_on_error = j.at("continue_on_error").get<bool>();
    options.skip_existing_check = j.at("skip_existing_check").get<bool>();
    options.mirror = j.value("mirror", false);
    options.keep_status = j.value("keep_status", false);
    options.accept_held = true;  // the peer proved it holds the key (TLS PSK)
    if (!options.partition.empty()) {
      auto parts = store_.Partitions();
      if (std::find(parts.begin(), parts.end(), options.partition) == parts.end())
        Throw(Errc::kNotFound, "no partition '" + options.partition + "' in this store");
    }
    for (const auto& [from, to] : options.user_map) {
      store::ValidateUserId(from);
      store::ValidateUserId(to);
    }
    log_.Line(who + ": restore started (" + tls_.Describe() + ")");
    options.on_wait = [this, who](const std::string& why) { log_.Line(who + ": " + why); };
    SendReady(conn);
    SessionSource source(conn, store_, &options, options_.verbose ? &log_ : nullptr, who);
    format::DecompressingSource input(source);
    format::Decoder decoder(input);
    SessionReport report = Restore(&store_, decoder, options);
    report.stream_bytes = conn.bytes_in();
    Sync();
    WriteFrame(conn, FrameType::kResult, ReportToJson(report));
    log_.Line(who + ": " + report.Summary("restore"));
    for (const std::string& line : report.error_lines) log_.Line(who + ": error: " + line);
  }

  void ServeVerify(Connection& conn, const std::string& who, const nlohmann::json& j) {
    VerifyOptions options;
    options.names = j.at("names").get<std::vector<std::string>>();
    options.check_bytes = j.at("check_bytes").get<bool>();
    SendReady(conn);
    SessionSource source(conn, store_, nullptr, nullptr, who);
    format::DecompressingSource input(source);
    format::Decoder decoder(input);
    VerifyReport report = VerifyManifest(store_, decoder, options);
    WriteFrame(conn, FrameType::kResult, report.Json());
    log_.Line(who + ": verify: " + std::to_string(report.messages) + " messages, " +
              std::to_string(report.differences.size()) + " differences");
  }

  void ServeSetStatus(Connection& conn, const std::string& who, const nlohmann::json& j) {
    std::string user = j.at("user").get<std::string>();
    store::ValidateUserId(user);
    store::UserStatus status = store::UserStatus::Parse(j.at("status").get<std::string>());
    SendReady(conn);
    store_.SetUserStatus(user, status);
    WriteFrame(conn, FrameType::kResult, "{}");
    log_.Line(who + ": status of " + user + " set to " + status.ToString());
  }

  store::Store& store_;
  const ServeOptions& options_;
  TlsContext tls_;
  Logger log_;
  std::mutex mutex_;
  std::condition_variable ended_;  // a session ended
};

}  // namespace

void Serve(store::Store& store, const ServeOptions& options, const std::atomic<bool>* stop, std::ostream& log) {
  ::signal(SIGPIPE, SIG_IGN);  // a vanished client becomes EPIPE on its session, not our death
  if (options.max_sessions < 1) Throw(Errc::kInvalidArgument, "--max-sessions must be at least 1");
  if (options.idle_timeout_seconds < 1) Throw(Errc::kInvalidArgument, "--idle-timeout must be at least 1 second");
  Server(store, options, log).Run(stop);
}

}  // namespace storemove::stream::net
