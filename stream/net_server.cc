// The receiving side: `storemove serve`. One thread per connection, each authenticating its
// peer (under the handshake deadline and caps, outside the session slots), then taking one of
// max_sessions slots and restoring one stream (or checking a manifest, or setting a status)
// into the shared store.
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

using Clock = std::chrono::steady_clock;

// One accepted connection and the thread that serves it.
struct Slot {
  enum class State { kUnauthenticated, kWaiting, kSession, kDone };
  uint64_t id = 0;
  std::unique_ptr<Connection> conn;
  std::string address;         // the peer's host: the per-address cap counts these
  Clock::time_point deadline;  // for the handshake and the REQUEST, together
  std::thread thread;
  // Under Server::mutex_:
  State state = State::kUnauthenticated;
  std::string cut;  // why the server cut it off before it was authenticated ("" = it did not)
};

class Server {
 public:
  Server(store::Store& store, const ServeOptions& options, std::ostream& log)
      : store_(store), options_(options), tls_(options.credentials, TlsContext::Side::kServer), log_(log) {}

  void Run(const std::atomic<bool>* stop) {
    Endpoint bound;
    UniqueFd listener = ListenTcp(ParseEndpoint(options_.listen), &bound);
    log_.Line("storemove serve: listening on " + bound.ToString() + " (" + tls_.Describe() + ", store " +
              store_.root() + ", at most " + std::to_string(options_.max_sessions) + " sessions; handshakes within " +
              std::to_string(options_.handshake_timeout_seconds) + " s, at most " +
              std::to_string(options_.max_handshakes) + " at once, " +
              std::to_string(options_.max_handshakes_per_address) + " per address)");
    if (options_.on_listening) options_.on_listening(bound);
    std::list<std::unique_ptr<Slot>> slots;
    uint64_t next_id = 0;
    // Connections are accepted at once, whatever the sessions are doing: an unauthenticated one
    // costs a thread and a socket until its deadline, never a session slot.
    while (!(stop && stop->load())) {
      Reap(&slots);
      pollfd p{listener.get(), POLLIN, 0};
      if (::poll(&p, 1, CutOverdue(slots)) <= 0) continue;
      int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) {
          log_.Line("storemove serve: accept: " + std::string(std::strerror(errno)) + "; waiting for sessions to end");
          std::unique_lock<std::mutex> lock(mutex_);
          changed_.wait_for(lock, std::chrono::milliseconds(200));
        }
        continue;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto slot = std::make_unique<Slot>();
      slot->id = ++next_id;
      slot->address = PeerAddress(fd);
      slot->conn = std::make_unique<Connection>(UniqueFd(fd), PeerName(fd));
      slot->deadline = Clock::now() + std::chrono::seconds(options_.handshake_timeout_seconds);
      if (!AdmitUnauthenticated(slots, *slot)) continue;  // the slot's destructor closes the socket
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
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;  // sessions waiting for a slot give up
    }
    changed_.notify_all();
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
        done = (*it)->state == Slot::State::kDone;
      }
      if (!done) {
        ++it;
        continue;
      }
      (*it)->thread.join();
      it = slots->erase(it);
    }
  }

  // Under mutex_: shuts the connection down, so its thread's handshake or read fails at once.
  void Cut(Slot& slot, std::string why) {
    slot.cut = std::move(why);
    slot.conn->Abort();
  }

  static bool Pending(const Slot& s) { return s.state == Slot::State::kUnauthenticated && s.cut.empty(); }

  // Cuts off unauthenticated connections past their deadline; returns how long the accept loop
  // may wait before the next deadline (at most 200 ms, so a stop request is seen in time).
  int CutOverdue(std::list<std::unique_ptr<Slot>>& slots) {
    auto now = Clock::now();
    auto wait = std::chrono::milliseconds(200);
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& s : slots) {
      if (!Pending(*s)) continue;
      if (now >= s->deadline) {
        Cut(*s, "no REQUEST within " + std::to_string(options_.handshake_timeout_seconds) +
                    " s of connecting (--handshake-timeout)");
        continue;
      }
      auto left = std::chrono::ceil<std::chrono::milliseconds>(s->deadline - now);
      wait = std::min(wait, left);
    }
    return int(std::max<int64_t>(1, wait.count()));
  }

  // The caps on unauthenticated connections: false (and a log line) when the peer's address has
  // too many already; when the whole pool is full the oldest is dropped, so a flood of idle
  // connections delays a real client by at most its own handshake.
  bool AdmitUnauthenticated(std::list<std::unique_ptr<Slot>>& slots, const Slot& fresh) {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t total = 0, same = 0;
    Slot* oldest = nullptr;
    for (auto& s : slots) {
      if (!Pending(*s)) continue;
      ++total;
      same += s->address == fresh.address;
      if (!oldest) oldest = s.get();  // the list is in accept order
    }
    if (same >= size_t(options_.max_handshakes_per_address)) {
      log_.Line("session " + std::to_string(fresh.id) + " from " + fresh.conn->peer() + ": refused: " +
                std::to_string(same) + " unauthenticated connections from " + fresh.address +
                " already (--max-handshakes-per-address)");
      return false;
    }
    if (total >= size_t(options_.max_handshakes) && oldest)  // its thread logs the reason
      Cut(*oldest, "dropped to make room for a newer connection: " + std::to_string(total) +
                       " unauthenticated connections at once (--max-handshakes)");
    return true;
  }

  // An authenticated connection takes a session slot, waiting (at most the idle timeout) while
  // all are busy; its client's timeout applies meanwhile.
  void TakeSessionSlot(Slot& slot) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!slot.cut.empty()) Throw(Errc::kTempFail, slot.cut);
    slot.state = Slot::State::kWaiting;
    bool free = changed_.wait_for(lock, std::chrono::seconds(options_.idle_timeout_seconds),
                                  [&] { return stopping_ || sessions_ < options_.max_sessions; });
    if (stopping_) Throw(Errc::kInterrupted, "the server is stopping");
    if (!free)
      Throw(Errc::kTempFail, "no session slot free within " + std::to_string(options_.idle_timeout_seconds) + " s (" +
                                 std::to_string(options_.max_sessions) + " sessions running, --max-sessions)");
    ++sessions_;
    slot.state = Slot::State::kSession;
  }

  std::string CutReason(Slot& slot) {
    std::lock_guard<std::mutex> lock(mutex_);
    return slot.cut;
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
      TakeSessionSlot(slot);
      Serve(conn, who, request.payload, &op);
      conn.Close(0);
    } catch (const Error& e) {
      std::string cut = CutReason(slot);
      if (!cut.empty()) {
        log_.Line(who + ": cut off before authentication: " + cut);
      } else if (e.code() == Errc::kAuth) {
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
      if (slot.state == Slot::State::kSession) --sessions_;
      slot.state = Slot::State::kDone;
    }
    changed_.notify_all();
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
      // A client working for this very store (migrate --to pointing at the source's own server)
      // would restore the store into itself and then mark its users moved on their only copy.
      std::string source_id = request.value("source_store_id", std::string());
      if (!source_id.empty() && source_id == store_.store_id())
        Throw(Errc::kInvalidArgument, "this server serves the client's own store (store id " + source_id + ", " +
                                          store_.root() + "): refusing to " + *op +
                                          " a store into itself; give the destination server's address");
      if (*op == "restore") return ServeRestore(conn, who, request.at("restore"));
      if (*op == "verify") return ServeVerify(conn, who, request.at("verify"));
      if (*op == "set-status") return ServeSetStatus(conn, who, request);
    } catch (const nlohmann::json::exception& e) {
      Throw(Errc::kProtocol, std::string("bad REQUEST: ") + e.what());
    }
    Throw(Errc::kProtocol, "unknown operation '" + *op + "'");
  }

  void SendReady(Connection& conn) {
    WriteFrame(conn, FrameType::kReady,
               nlohmann::json{{"protocol", kProtocolVersion}, {"store_id", store_.store_id()}}.dump());
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
  std::condition_variable changed_;  // a session ended, or the server is stopping
  int sessions_ = 0;                 // under mutex_: slots taken
  bool stopping_ = false;            // under mutex_
};

}  // namespace

void Serve(store::Store& store, const ServeOptions& options, const std::atomic<bool>* stop, std::ostream& log) {
  ::signal(SIGPIPE, SIG_IGN);  // a vanished client becomes EPIPE on its session, not our death
  if (options.max_sessions < 1) Throw(Errc::kInvalidArgument, "--max-sessions must be at least 1");
  if (options.idle_timeout_seconds < 1) Throw(Errc::kInvalidArgument, "--idle-timeout must be at least 1 second");
  if (options.handshake_timeout_seconds < 1)
    Throw(Errc::kInvalidArgument, "--handshake-timeout must be at least 1 second");
  if (options.max_handshakes < 1) Throw(Errc::kInvalidArgument, "--max-handshakes must be at least 1");
  if (options.max_handshakes_per_address < 1)
    Throw(Errc::kInvalidArgument, "--max-handshakes-per-address must be at least 1");
  Server(store, options, log).Run(stop);
}

}  // namespace storemove::stream::net
