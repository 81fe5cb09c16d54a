// The receiving side: `storemove serve`. One thread per connection, each authenticating its
// peer (under the handshake deadline and caps, outside the session slots), then taking one of
// max_sessions slots and serving its operations one after another: restoring a stream,
// checking a manifest, setting statuses. During a stream a second thread does the socket I/O.
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <fcntl.h>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "format/zstd_codec.h"
#include "store/admin.h"
#include "store/dir_lock.h"
#include "store/sync.h"
#include "stream/net_conn.h"
#include "util/printable.h"

namespace storemove::stream::net {

namespace {

constexpr int kDrainSeconds = 5;
// How often a connection waiting for a session slot looks whether its client is still there.
constexpr std::chrono::milliseconds kSlotCheck{200};

// Lines about connections refused before they authenticated. Anyone who can connect causes
// them: one local user wrote ~1.4 MB/s of them to serve --log (security review #06). At most
// `limit` a window; the rest are counted by reason and summed up in one line when the window
// ends (the accept loop looks every 200 ms) or when the server stops. Authenticated sessions'
// lines do not go through here and are never held back.
class RefusedLines {
 public:
  using Clock = std::chrono::steady_clock;
  RefusedLines(ServeLog& log, int limit, std::chrono::milliseconds window) : log_(log), limit_(limit), window_(window) {}

  void Line(const std::string& reason, const std::string& text) {
    std::lock_guard<std::mutex> lock(mutex_);
    const Clock::time_point now = Clock::now();
    EndWindowIfOverLocked(now);
    if (lines_ == 0 && held_.empty()) start_ = now;
    if (lines_ < limit_) {
      ++lines_;
      log_.Line(LogPriority::kWarning, text);
      return;
    }
    auto it = std::find_if(held_.begin(), held_.end(), [&](const auto& r) { return r.first == reason; });
    if (it == held_.end()) held_.emplace_back(reason, 1);
    else ++it->second;
  }

  // The summary of a window that has ended; with `now_anyway`, of the one running (at stop).
  void Flush(bool now_anyway = false) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (now_anyway) EndWindowLocked();
    else EndWindowIfOverLocked(Clock::now());
  }

 private:
  void EndWindowIfOverLocked(Clock::time_point now) {
    if ((lines_ > 0 || !held_.empty()) && now - start_ >= window_) EndWindowLocked();
  }
  void EndWindowLocked() {
    if (!held_.empty()) {
      uint64_t total = 0;
      std::string reasons;
      for (const auto& [reason, n] : held_) {
        total += n;
        reasons += (reasons.empty() ? "" : ", ") + reason + ": " + std::to_string(n);
      }
      const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(window_).count();
      log_.Line(LogPriority::kWarning, "storemove serve: " + std::to_string(total) +
                                           " more refused connections in the last " +
                                           (seconds == 60 ? std::string("minute") : std::to_string(seconds) + " s") +
                                           " (" + reasons + "), not logged one by one");
    }
    lines_ = 0;
    held_.clear();
  }

  ServeLog& log_;
  const int limit_;
  const std::chrono::milliseconds window_;
  std::mutex mutex_;
  Clock::time_point start_;                              // under mutex_: of the window running
  int lines_ = 0;                                        // under mutex_: written in it
  std::vector<std::pair<std::string, uint64_t>> held_;   // under mutex_: held back, by reason
};

// The decoder's input during a stream. One thread does all of the connection's I/O (OpenSSL's
// SSL objects are not thread-safe): it reads frames as they arrive, queues DATA for the decoder
// (at most kMaxQueued bytes, then it stops reading: TCP flow control holds the sender) and
// answers each QUERY at once, however far behind the restore is. The client asks about folders
// ahead of their data, so its questions must not wait for the restore to reach them.
// DATA-END, an error, or Stop() ends the thread; the connection is then the caller's again.
class FramePump final : public format::ByteSource {
 public:
  // 4 MiB: with the 32 MiB zstd window a session stays under 64 MiB however far its restore
  // falls behind (16 MiB took it to 64-75 MiB, helper-53); the socket's 16 MiB buffers cover
  // the link's latency, this only smooths the restore's pauses.
  static constexpr size_t kMaxQueued = size_t{4} << 20;
  static constexpr std::chrono::milliseconds kPeerCheck{200};
  // Returns the ANSWER payload; null outside a restore (a QUERY is then a protocol error).
  using Answerer = std::function<std::string(const Query&)>;

  // `beat`: after DATA-END, while the caller still works (the restore applies what is queued
  // and in the socket's buffers, then syncs), a PROGRESS frame that often; zero for a client
  // that did not ask for them.
  FramePump(Connection& conn, Answerer answer, std::chrono::milliseconds beat = {})
      : conn_(conn), answer_(std::move(answer)), beat_(beat) {
    if (::pipe2(wake_, O_CLOEXEC) != 0) ThrowErrno("pipe");
    try {
      thread_ = std::thread([this] { Run(); });
    } catch (...) {
      ::close(wake_[0]);
      ::close(wake_[1]);
      throw;
    }
  }
  ~FramePump() {
    Stop();
    ::close(wake_[0]);
    ::close(wake_[1]);
  }
  FramePump(const FramePump&) = delete;
  FramePump& operator=(const FramePump&) = delete;

  // The decoder's thread. Once the connection has failed (the client died or went away before
  // DATA-END), what is still queued is dropped: the restore stops where it is, as the client saw
  // it stop, rather than going on with a stream nobody is sending any more (a session waiting
  // for the user's write lock used to apply it long after its client had given up).
  size_t Read(void* data, size_t size) override {
    // Within a chunk too: a DATA frame of held records is thousands of messages to prove, and a
    // stopping server (or a client gone) should not wait for them (helper-74: 7.5 s to stop).
    if (failed_.load(std::memory_order_relaxed)) {
      std::lock_guard<std::mutex> lock(mutex_);
      std::rethrow_exception(error_);
    }
    if (pos_ == chunk_.size()) {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return !queue_.empty() || ended_ || error_; });
      if (error_) std::rethrow_exception(error_);
      if (queue_.empty()) return 0;  // DATA-END
      chunk_ = std::move(queue_.front());
      queue_.pop_front();
      queued_ -= chunk_.size();
      pos_ = 0;
      cv_.notify_all();
    }
    size_t n = std::min(size, chunk_.size() - pos_);
    std::memcpy(data, chunk_.data() + pos_, n);
    pos_ += n;
    return n;
  }

  // Once the decoder is done: lets the I/O thread read on to DATA-END (what the stream had
  // beyond its end is dropped), so the next REQUEST starts at a frame boundary. Rethrows a
  // failure of the I/O thread. Its PROGRESS frames go on until Stop(); after Finish() the
  // connection is the caller's again.
  void Drain() {
    std::unique_lock<std::mutex> lock(mutex_);
    discard_ = true;
    queue_.clear();
    queued_ = 0;
    cv_.notify_all();
    cv_.wait(lock, [&] { return ended_ || error_; });
    if (!ended_) std::rethrow_exception(error_);
  }
  void Finish() {
    Drain();
    Stop();
  }

  // The decoder's thread, while the restore waits (for a user's write lock): rethrows the I/O
  // thread's failure, so that a session whose client is gone stops waiting, with the reason.
  void RethrowIfFailed() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_) std::rethrow_exception(error_);
  }

  // Stops the I/O thread at its next frame boundary and joins it.
  void Stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    (void)!::write(wake_[1], "x", 1);
    thread_.join();
  }

 private:
  void Run() {
    try {
      while (conn_.WaitReadable(wake_[0])) {
        Frame f = ReadFrame(conn_);
        switch (f.type) {
          case FrameType::kData: {
            if (f.payload.empty()) Throw(Errc::kProtocol, conn_.peer() + " sent an empty DATA frame");
            std::unique_lock<std::mutex> lock(mutex_);
            // While the queue is full nothing is read: the client's death would go unnoticed
            // until the restore had drained it. The socket is asked about its peer meanwhile.
            while (!cv_.wait_for(lock, kPeerCheck, [&] { return stop_ || discard_ || queued_ < kMaxQueued; }))
              if (conn_.PeerClosed())
                Throw(Errc::kIo, conn_.peer() + " closed the connection before DATA-END (the client stopped or was "
                                                "killed); the restore stops where it is");
            if (stop_) return;
            if (discard_) break;
            queued_ += f.payload.size();
            queue_.push_back(std::move(f.payload));
            cv_.notify_all();
            break;
          }
          case FrameType::kQuery:
            if (!answer_) Throw(Errc::kProtocol, conn_.peer() + " sent QUERY outside a restore session");
            WriteFrame(conn_, FrameType::kAnswer, answer_(DecodeQuery(f.payload)));
            break;
          case FrameType::kDataEnd: {
            std::unique_lock<std::mutex> lock(mutex_);
            ended_ = true;
            cv_.notify_all();
            // The client now only waits for RESULT, under its --timeout: what is queued here
            // and in the socket's buffers (a rerun's held records: hundreds of thousands of
            // messages to prove) can take longer to apply than that (helper-74: timed out,
            // "without progress", while the restore went on and succeeded).
            // The stream is complete: a client gone now does not stop its restore (its RESULT
            // write fails later, as before), the beat just ends.
            try {
              while (beat_.count() > 0 && !cv_.wait_for(lock, beat_, [&] { return stop_; })) {
                lock.unlock();
                WriteFrame(conn_, FrameType::kProgress, {});
                lock.lock();
              }
            } catch (const Error&) {
            }
            return;
          }
          default: Unexpected(f, "DATA, QUERY or DATA-END", conn_.peer());
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
      cv_.notify_all();
    }
  }

  Connection& conn_;
  Answerer answer_;
  const std::chrono::milliseconds beat_;
  int wake_[2] = {-1, -1};  // written by Stop(): the I/O thread's wait between frames ends
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;  // queue, ended_, error_, stop_, discard_ changed
  std::deque<std::string> queue_;
  size_t queued_ = 0;
  bool ended_ = false, stop_ = false, discard_ = false;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};  // error_ is set: read without the lock on every Read
  // The decoder thread's current chunk (not shared).
  std::string chunk_;
  size_t pos_ = 0;
};

using Clock = std::chrono::steady_clock;

// An operation completed (and logged so) whose RESULT its client did not stay to read: the
// session ends without a second, "failed", line.
struct ClientGoneAfterResult {};

// One accepted connection and the thread that serves it.
struct Slot {
  // kClosing: failed and answered; its slot is free while its connection drains (kDrainSeconds).
  enum class State { kUnauthenticated, kWaiting, kSession, kClosing, kDone };
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
 private:
  // One large REQUEST at a time (see Serve); a stopping server ends the wait. (A flag under
  // mutex_ rather than a timed_mutex: ThreadSanitizer does not see timed locks taken.)
  static constexpr size_t kLargeRequestBytes = 256 * 1024;
  static constexpr size_t kEarlyRequestBytes = 4096;  // read before the slot: a hello is ~200 bytes
  class LargeTurn {
   public:
    LargeTurn() = default;
    explicit LargeTurn(Server* server) : server_(server) {}
    LargeTurn(LargeTurn&& other) noexcept : server_(std::exchange(other.server_, nullptr)) {}
    LargeTurn& operator=(LargeTurn&& other) noexcept {
      if (this != &other) {
        Release();
        server_ = std::exchange(other.server_, nullptr);
      }
      return *this;
    }
    ~LargeTurn() { Release(); }

   private:
    void Release() {
      if (!server_) return;
      std::lock_guard<std::mutex> lock(server_->mutex_);
      server_->large_turn_taken_ = false;
      server_->changed_.notify_all();
      server_ = nullptr;
    }
    Server* server_ = nullptr;
  };
 public:
  Server(store::Store& store, const ServeOptions& options, ServeLog& log)
      : store_(store),
        options_(options),
        tls_(options.credentials, TlsContext::Side::kServer),
        log_(log),
        refused_(log, options.refused_log_lines, options.refused_log_window) {}

  // Returns false when it stopped because the store's environment is stuck (see Serve).
  bool Run(const std::atomic<bool>* stop) {
    Endpoint bound;
    SocketBuffers buffers;
    UniqueFd listener = ListenTcp(ParseEndpoint(options_.listen), &bound, &buffers);
    log_.Info("storemove serve: listening on " + bound.ToString() + " (" + tls_.Describe() + ", store " +
              store_.root() + ", at most " + std::to_string(options_.max_sessions) + " sessions; handshakes within " +
              std::to_string(options_.handshake_timeout_seconds) + " s, at most " +
              std::to_string(options_.max_handshakes) + " at once, " +
              std::to_string(options_.max_handshakes_per_address) + " per address; at most " +
              std::to_string(options_.max_waiting) + " waiting for a slot)");
    log_.Info("storemove serve: " + buffers.Describe());
    if (options_.on_listening) options_.on_listening(bound);
    std::list<std::unique_ptr<Slot>> slots;
    uint64_t next_id = 0;
    // Connections are accepted at once, whatever the sessions are doing: an unauthenticated one
    // costs a thread and a socket until its deadline, never a session slot.
    bool stuck = false;
    while (!(stop && stop->load())) {
      if (store_.EnvironmentStuck()) {
        stuck = true;
        log_.Line(LogPriority::kError, "storemove serve: the mboxlist environment of " + store_.root() +
                                           " is stuck on a process that died inside it, or another process recovered it "
                                           "under this one; stopping, so that a restart (which opens it again) serves "
                                           "again");
        break;
      }
      log_.ReopenIfRequested();  // at most 200 ms after SIGHUP (the poll below wakes that often), even when idle
      refused_.Flush();          // and a refusals' window's summary at most 200 ms after it ends
      Reap(&slots);
      pollfd p{listener.get(), POLLIN, 0};
      if (::poll(&p, 1, CutOverdue(slots)) <= 0) continue;
      sockaddr_storage peer{};
      socklen_t peer_len = sizeof peer;
      int fd = ::accept4(listener.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) {
          log_.Line(LogPriority::kError, "storemove serve: accept: " + std::string(std::strerror(errno)) + "; waiting for sessions to end");
          std::unique_lock<std::mutex> lock(mutex_);
          changed_.wait_for(lock, std::chrono::milliseconds(200));
        }
        continue;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      int waiting_buffer = kWaitingReceiveBuffer;  // until the session has a slot (net_conn.h)
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &waiting_buffer, sizeof waiting_buffer);
      auto slot = std::make_unique<Slot>();
      slot->id = ++next_id;
      // From accept(): a peer that reset its connection at once has no getpeername, and was
      // logged as "?" (all such peers one address for --max-handshakes-per-address; helper-58).
      const Endpoint from = EndpointOf(reinterpret_cast<const sockaddr*>(&peer));
      slot->address = from.host;
      slot->conn = std::make_unique<Connection>(UniqueFd(fd), from.ToString());
      slot->deadline = Clock::now() + std::chrono::seconds(options_.handshake_timeout_seconds);
      if (!AdmitUnauthenticated(slots, *slot)) continue;  // the slot's destructor closes the socket
      Slot* s = slot.get();
      try {
        slot->thread = std::thread([this, s] { RunSession(*s); });
      } catch (const std::system_error& e) {
        log_.Line(LogPriority::kError, "session " + std::to_string(s->id) + " from " + s->conn->peer() + ": no thread: " + e.what());
        continue;
      }
      slots.push_back(std::move(slot));
    }
    listener.reset();
    // Counted as they are at the stop, in its critical section: a session that ended since the
    // last Reap is not cut, and one waiting for a slot is answered instead (helper-132: "cutting
    // off 8" for 4); counted after it, a waiting one that had woken already counted as running.
    size_t running = 0, waiting_for_a_slot = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;  // sessions waiting for a slot give up
      for (const auto& s : slots) {
        if (s->state == Slot::State::kWaiting) {
          ++waiting_for_a_slot;
        } else if (s->state != Slot::State::kDone) {
          ++running;
        }
      }
    }
    changed_.notify_all();
    if (running || waiting_for_a_slot)
      log_.Line(LogPriority::kNotice, "storemove serve: stopping; cutting off " + std::to_string(running) +
                                          " running session(s)" +
                                          (waiting_for_a_slot ? "; telling " + std::to_string(waiting_for_a_slot) +
                                                                    " waiting for a slot to try again later"
                                                              : ""));
    // A connection waiting for a session slot is not cut: its thread wakes (stopping_) and
    // answers ERROR kTempFail first, so a client (a migrate) retries once the server is back
    // instead of taking a closed connection for a refused authentication.
    for (auto& s : slots) {
      bool waiting;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        waiting = s->state == Slot::State::kWaiting;
      }
      if (!waiting) s->conn->Abort();
    }
    for (auto& s : slots) s->thread.join();
    refused_.Flush(true);
    log_.Line(LogPriority::kNotice, "storemove serve: stopped");
    return !stuck;
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
      refused_.Line("too many from one address", "session " + std::to_string(fresh.id) + " from " + fresh.conn->peer() +
                                                      ": refused: " + std::to_string(same) +
                                                      " unauthenticated connections from " + fresh.address +
                                                      " already (--max-handshakes-per-address)");
      return false;
    }
    if (total >= size_t(options_.max_handshakes) && oldest)  // its thread logs the reason
      Cut(*oldest, "dropped to make room for a newer connection: " + std::to_string(total) +
                       " unauthenticated connections at once (--max-handshakes)");
    return true;
  }

  // The PROGRESS interval a hello asks for while it waits for a slot (0: none asked, or not a
  // hello; such a REQUEST is served as before, whatever its bytes).
  static std::chrono::milliseconds HelloBeat(const std::string& payload) {
    try {
      nlohmann::json request = ParseFrameJson(payload, "REQUEST", FrameJsonSinks{});
      auto op = request.find("op");
      if (op == request.end() || !op->is_string() || op->get<std::string>() != "hello") return {};
      return BeatFor(request);
    } catch (...) {
      return {};
    }
  }

  // An authenticated connection takes a session slot, waiting while all are busy: at most the
  // idle timeout, its client's timeout applying meanwhile; or, when its hello asked for progress
  // (beat > 0), as long as its client stays, with a PROGRESS frame every beat.
  void TakeSessionSlot(Slot& slot, std::chrono::milliseconds beat) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!slot.cut.empty()) Throw(Errc::kTempFail, slot.cut);
    if (sessions_ >= options_.max_sessions && waiting_ >= options_.max_waiting) {
      // A waiter whose client has gone frees its place as soon as it looks: wake them to look
      // now rather than refuse this one for a connection that is already dead.
      changed_.notify_all();
      changed_.wait_for(lock, kSlotCheck, [&] {
        return stopping_ || sessions_ < options_.max_sessions || waiting_ < options_.max_waiting;
      });
    }
    if (sessions_ >= options_.max_sessions && waiting_ >= options_.max_waiting)
      Throw(Errc::kTempFail, "all " + std::to_string(options_.max_sessions) + " session slots are busy and " +
                                 std::to_string(waiting_) + " connections already wait for one (--max-waiting); try again later");
    slot.state = Slot::State::kWaiting;
    if (options_.on_waiting_for_slot && sessions_ >= options_.max_sessions) options_.on_waiting_for_slot();
    ++waiting_;
    // A client that gives up (its timeout) is noticed within kSlotCheck, not when a slot comes
    // free: it stops counting against --max-waiting, and a slot never goes to a dead connection.
    const auto began = Clock::now();
    const bool beating = beat.count() > 0;
    const auto deadline = beating ? Clock::time_point::max() : began + std::chrono::seconds(options_.idle_timeout_seconds);
    auto next_beat = began + beat;
    bool free = false, gone = false;
    for (;;) {
      free = stopping_ || sessions_ < options_.max_sessions;
      gone = slot.conn->PeerClosed();
      if (free || gone || Clock::now() >= deadline) break;
      if (beating && Clock::now() >= next_beat) {
        // Written without the lock: a client slow to read must not hold up the other waiters.
        lock.unlock();
        try {
          WriteFrame(*slot.conn, FrameType::kProgress, {});
        } catch (const Error&) {
          gone = true;
        }
        lock.lock();
        if (gone) break;
        next_beat = Clock::now() + beat;
        continue;
      }
      auto until = Clock::now() + kSlotCheck;
      if (beating) until = std::min(until, next_beat);
      else until = std::min(until, deadline);
      changed_.wait_until(lock, until);
    }
    --waiting_;
    changed_.notify_all();  // a connection refused for want of a waiting place may look again
    if (stopping_) Throw(Errc::kTempFail, "the server is stopping; try again once it is back");
    if (gone)
      Throw(Errc::kIo, "its client closed the connection while it waited " +
                           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - began).count()) +
                           " s for a session slot (" + std::to_string(options_.max_sessions) +
                           " sessions running, --max-sessions)");
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
      // A REQUEST's payload of more than 4 KiB (up to 16 MiB) is read only once a slot is taken,
      // so connections waiting for one (up to --max-waiting) hold no more than 4 KiB each.
      FrameHeader head = ReadFrameHeader(conn);
      if (head.type != FrameType::kRequest) Unexpected(ReadFramePayload(conn, head), "REQUEST", conn.peer());
      // A small REQUEST (a hello) is read before the wait for a slot: one that asks for progress
      // hears PROGRESS while it waits, so its client does not take the wait for a dead server
      // (helper-79: migrate groups beyond --max-sessions timed out and failed instead of waiting).
      std::optional<Frame> early;
      std::chrono::milliseconds beat{0};
      if (head.length <= kEarlyRequestBytes) {
        early = ReadFramePayload(conn, head);
        if (options_.progress_while_waiting_for_slot) beat = HelloBeat(early->payload);
      }
      TakeSessionSlot(slot, beat);
      conn.SetReceiveBuffer(kSocketBuffer);
      // A large REQUEST (a set-status of many users) is read, parsed and served one at a time:
      // 16 clients sending 16 MiB each took a server to 2.7 GiB and kept it parsing for minutes
      // after SIGTERM (helper-70). Until its turn its bytes wait in the socket.
      LargeTurn large;
      if (head.length > kLargeRequestBytes) large = TakeLargeTurn(who, conn);
      Frame request = early ? std::move(*early) : ReadFramePayload(conn, head);
      // Version 2: after each operation the connection waits for the next REQUEST, under the
      // idle timeout, until the client closes it.
      int ops = 0;
      while (Serve(conn, who, request.payload, &op, std::move(large))) {
        if (op != "hello") ++ops;  // the session's opening is no operation of it (helper-132)
        op = "session";
        std::optional<FrameHeader> next;
        try {
          next = ReadFrameHeaderOrEnd(conn);
        } catch (const Error& e) {
          if (e.code() != Errc::kTempFail) throw;
          // A session whose client went silent after its hello (a dead waiter that got its
          // slot) ran no operation: "after its last operation" misled (helper-170).
          Throw(Errc::kTempFail, "idle for " + std::to_string(options_.idle_timeout_seconds) + " s after " +
                                     (ops == 0 ? "its hello, before any operation" : "its last operation") +
                                     " (--idle-timeout); closed");
        }
        if (!next) {
          log_.Info(who + ": session ended after " + std::to_string(ops) + " operation(s)");
          break;
        }
        if (next->type != FrameType::kRequest) Unexpected(ReadFramePayload(conn, *next), "REQUEST", conn.peer());
        if (next->length > kLargeRequestBytes) large = TakeLargeTurn(who, conn);
        request = ReadFramePayload(conn, *next);
      }
      conn.Close(0);
    } catch (const Error& e) {
      std::string cut = CutReason(slot);
      if (!cut.empty()) {
        refused_.Line("cut off before authentication", who + ": cut off before authentication: " + cut);
      } else if (e.code() == Errc::kAuth && !conn.authenticated()) {
        refused_.Line("authentication failed", who + ": authentication failed: " + e.what());
      } else if (e.code() == Errc::kAuth) {
        log_.Line(LogPriority::kWarning, who + ": authentication failed: " + e.what());
      } else if (!conn.authenticated()) {
        refused_.Line("refused before authentication", who + ": refused before authentication: " + e.what());
      } else {
        log_.Line(LogPriority::kError, who + ": " + op + " failed: " + e.what());
        try {
          WriteErrorFrame(conn, e.code(), e.what());
        } catch (const Error&) {
          // the peer is gone; the log has the reason
        }
      }
      ReleaseSlot(slot);
      CloseQuietly(conn);
    } catch (const ClientGoneAfterResult&) {
      ReleaseSlot(slot);
      CloseQuietly(conn);
    } catch (const std::exception& e) {
      log_.Line(LogPriority::kError, who + ": " + op + " failed: internal error: " + e.what());
      try {
        WriteErrorFrame(conn, Errc::kIo, std::string("internal error: ") + e.what());
      } catch (const Error&) {
      }
      ReleaseSlot(slot);
      CloseQuietly(conn);
    }
    ReleaseSlot(slot, Slot::State::kDone);
  }

  // The session's work is over (failed and answered): its slot goes to the next connection
  // while this one drains for up to kDrainSeconds (it held the slot 5 s more; helper-58).
  // kDone once its thread is about to end (Reap may join it then).
  void ReleaseSlot(Slot& slot, Slot::State next = Slot::State::kClosing) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (slot.state == Slot::State::kSession) --sessions_;
      slot.state = next;
    }
    changed_.notify_all();
  }

  static void CloseQuietly(Connection& conn) {
    try {
      conn.Close(kDrainSeconds);
    } catch (...) {
    }
  }

  // One REQUEST: READY, the work, RESULT (failures throw to the caller, which logs them, sends
  // ERROR and closes). Returns whether the connection carries further operations (protocol 2).
  // In protocol 2, a failure before READY (a refused operation: nothing was read or changed)
  // is answered with ERROR and the session goes on.
  // `large`: held when the REQUEST is large; kept while a set-status is served, released after
  // the parse for any other operation.
  bool Serve(Connection& conn, const std::string& who, const std::string& payload, std::string* op,
             LargeTurn large) {
    uint32_t version = 0;
    bool began = false;  // READY sent: from here a failure ends the connection
    try {
      try {
        // Its statuses are kept out of the JSON tree (FrameJsonSinks). Each session thread
        // allocates from its own malloc arena, which keeps what a parse freed: given back before
        // the next large REQUEST's turn, or each thread kept one parse's worth.
        struct TrimAfter {
          bool large;
          ~TrimAfter() {
            if (large) ::malloc_trim(0);
          }
        } trim{payload.size() > kLargeRequestBytes};
        std::vector<std::pair<std::string, std::string>> statuses;
        FrameJsonSinks sinks;
        sinks.statuses = &statuses;
        sinks.cancelled = [this] { return Stopping(); };
        nlohmann::json request = ParseFrameJson(payload, "bad REQUEST", sinks);
        // Compared as sent: a conversion first would make 2^32 + 2 version 2, 1e100 version 0.
        const nlohmann::json& asked = request.at("protocol");
        if (!asked.is_number_unsigned() || asked.get<uint64_t>() < kOldestProtocolVersion ||
            asked.get<uint64_t>() > kProtocolVersion)
          Throw(Errc::kProtocol, "protocol version " + asked.dump().substr(0, 40) + " not supported (this server speaks " +
                                     std::to_string(kOldestProtocolVersion) + " to " +
                                     std::to_string(kProtocolVersion) + ")");
        version = uint32_t(asked.get<uint64_t>());
        const std::string asked_op = request.at("op").get<std::string>();
        *op = ShownName(asked_op, 64);  // as logged and answered: a peer's bytes, escaped
        // Only a set-status keeps what it parsed (its list) while it is served; a restore with a
        // large user map runs for hours and would hold up every other large REQUEST.
        if (asked_op != "set-status") large = LargeTurn();
        // A client working for this very store (migrate --to pointing at the source's own server)
        // would restore the store into itself and then mark its users moved on their only copy.
        std::string source_id = request.value("source_store_id", std::string());
        if (!source_id.empty() && source_id == store_.store_id())
          Throw(Errc::kInvalidArgument, "this server serves the client's own store (store id " + source_id + ", " +
                                            store_.root() + "): refusing to " +
                                            (*op == "hello" ? std::string("open a session") : *op) +
                                            " for a store into itself (this is the client's store, or a copy of it made with "
                                            "cp -a or rsync, config/store-id and all); give the destination server's address");
        if (*op == "hello" && version >= 2) {
          SendReady(conn);  // the session is open; operations follow
          return true;
        }
        const int lock_wait = LockWaitFor(request);
        const std::chrono::milliseconds beat = BeatFor(request);
        // A folder's lock (a stopped process's, a rename copying the folder) is waited for as a
        // user's write lock is: said in the log, bounded, ended by a stop (helper-170: no bound,
        // a word on serve's stderr only, and a stop that waited 4 min 45 s for the holder).
        const std::string logged_op = *op;
        store::FolderLockWait folder_wait(
            lock_wait, [this, who, logged_op](const std::string& why) { log_.Info(who + ": " + logged_op + ": " + why); },
            [this] { return Stopping(); });
        if (*op == "restore") ServeRestore(conn, who, request.at("restore"), source_id, lock_wait, beat, &began);
        else if (*op == "verify") ServeVerify(conn, who, request.at("verify"), beat, &began);
        else if (*op == "set-status") ServeSetStatus(conn, who, request, std::move(statuses), version, lock_wait, &began);
        else if (*op == "remove-folders" && version >= 2) ServeRemoveFolders(conn, who, request, source_id, lock_wait);
        else Throw(Errc::kProtocol, "unknown operation '" + *op + "'");
      } catch (const nlohmann::json::exception& e) {
        Throw(Errc::kProtocol, std::string("bad REQUEST: ") + e.what());
      }
    } catch (const Error& e) {
      if (version < 2 || began) throw;
      log_.Line(LogPriority::kWarning, who + ": " + *op + " refused: " + e.what());
      WriteErrorFrame(conn, e.code(), e.what());
      return true;
    }
    return version >= 2;
  }

  // How long an operation may wait for a user another writer holds (restore's write lock,
  // set-status's delivery gate): the idle timeout, but no longer than half the client's own
  // timeout when its REQUEST says it (`client_timeout`), so that the client hears the reason
  // ("user U: another session of this process has been writing it for over N s") while it still
  // listens, instead of timing out on a silent connection and blaming the network (helper-66).
  int LockWaitFor(const nlohmann::json& request) const {
    int wait = options_.idle_timeout_seconds;
    auto it = request.find("client_timeout");
    if (it == request.end()) return wait;
    if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 || it->get<uint64_t>() > 86400 * 365)
      Throw(Errc::kProtocol, "bad REQUEST: client_timeout must be a whole number of seconds from 1 to 31536000");
    return std::min<int>(wait, std::max<int>(1, int(it->get<uint64_t>() / 2)));
  }

  // How often a client that asked for PROGRESS frames hears one while its stream is applied: a
  // third of its timeout (20 s when it does not say it). None for clients that did not ask: they
  // would take the frame for a protocol error. (client_timeout is checked by LockWaitFor.)
  static std::chrono::milliseconds BeatFor(const nlohmann::json& request) {
    auto it = request.find("progress");
    if (it == request.end() || !it->is_boolean() || !it->get<bool>()) return std::chrono::milliseconds{0};
    auto timeout = request.find("client_timeout");
    if (timeout == request.end() || !timeout->is_number_unsigned()) return std::chrono::milliseconds{20000};
    return std::chrono::milliseconds{std::clamp<uint64_t>(timeout->get<uint64_t>() * 1000 / 3, 200, 300000)};
  }

  // `holds_copies`: a migrate's restore, whose copies this server keeps on hold; said in READY
  // so that the client can tell a server that ignores the request (one before 2026-12-05).
  void SendReady(Connection& conn, bool* began = nullptr, bool holds_copies = false) {
    if (began) *began = true;
    nlohmann::json ready{{"protocol", kProtocolVersion}, {"store_id", store_.store_id()}};
    if (holds_copies) ready["copy_on_hold"] = true;
    WriteFrame(conn, FrameType::kReady, ready.dump());
  }

  // Which contents the repository of the user's (future) partition holds: the ANSWER to a
  // QUERY, given by the I/O thread as soon as the QUERY arrives. Only a hint: restore proves
  // every held record's bytes before linking.
  std::string AnswerQuery(const RestoreOptions& restore, const std::string& who, const Query& q) {
    std::vector<bool> have(q.contents.size(), false);
    auto mapped = restore.user_map.find(q.user);
    std::string user = mapped == restore.user_map.end() ? q.user : mapped->second;
    bool valid = true;
    try {
      store::ValidateUserId(user);
    } catch (const Error&) {
      valid = false;  // restore refuses this user anyway
    }
    size_t held = 0;
    if (valid) {
      relinker::Repository repository(store_.PartitionPath(RestorePartition(store_, restore, user, q.partition)),
                                      restore.repository);
      for (size_t i = 0; i < q.contents.size(); ++i) {
        have[i] = repository.OpenEntry(q.contents[i].first, q.contents[i].second).valid();
        held += have[i];
      }
    }
    if (options_.verbose)
      log_.Line(LogPriority::kDebug, who + ": QUERY user " + user + ": " + std::to_string(q.contents.size()) + " contents, " +
                std::to_string(held) + " held here");
    return EncodeAnswer(have);
  }

  void ServeRestore(Connection& conn, const std::string& who, const nlohmann::json& j, const std::string& source_id,
                    int lock_wait, std::chrono::milliseconds beat, bool* began) {
    RestoreOptions options;
    options.partition = j.at("partition").get<std::string>();
    options.user_map = j.at("user_map").get<std::map<std::string, std::string>>();
    options.continue_on_error = j.at("continue_on_error").get<bool>();
    options.skip_existing_check = j.at("skip_existing_check").get<bool>();
    options.mirror = j.value("mirror", false);
    options.keep_status = j.value("keep_status", false);
    options.strict_summaries = j.value("strict_summaries", false);
    options.allow_gap = j.value("allow_gap", false);
    options.copy_on_hold = j.value("copy_on_hold", false);
    options.copy_users = j.value("copy_users", std::vector<std::string>());
    // The store a copy comes from is the one the client says it works for; an id a user.db
    // record cannot hold (u16 length) is no store id.
    if (source_id.size() > 256) Throw(Errc::kProtocol, "bad REQUEST: source_store_id longer than 256 bytes");
    options.copy_source = source_id;
    options.adopt = j.value("adopt", std::set<std::string>());
    options.accept_held = true;  // the peer proved it holds the key (TLS PSK)
    // Only migrate mirrors, and this server keeps a migrate's copies on hold when asked. A client
    // that mirrors without asking (a storemove before 2026-12-03) would have its copies live here
    // during the passes: mail delivered to them is split from the source's, and the next pass
    // fails on it (helper-85). Refused before READY: nothing written. Not kProtocol: a version is
    // configuration, which migrate does not retry.
    if (options.mirror && !options.copy_on_hold)
      Throw(Errc::kInvalidArgument,
            "a migrate pass from a client that does not keep its copies here on hold (a storemove older than this "
            "server): upgrade the client (docs/migration.md \"Upgrading a fleet\"); nothing written");
    if (!options.partition.empty()) {
      auto parts = store_.Partitions();
      if (std::find(parts.begin(), parts.end(), options.partition) == parts.end())
        Throw(Errc::kNotFound, "no partition '" + options.partition + "' in this store");
    }
    // As restore -m: two stream users mapped to one name are refused before READY, not after
    // the first one's mail was written under it.
    CheckUserMap(options.user_map);
    // A migrate's pass over users live here is refused before READY: nothing written, the
    // session goes on.
    CheckCopiesOnHold(store_, options);
    log_.Info(who + ": restore started (" + tls_.Describe() + ")");
    // Success is reported only once the restored messages are on stable storage (as restore
    // does); opened now to hear of every write-back error of this session's writes.
    store::StoreSync sync(store_);
    options.on_wait = [this, who](const std::string& why) { log_.Info(who + ": " + why); };
    // A user held by another writer (a local restore, rename or delete) is waited for as long
    // as a silent peer is, and not beyond a stop request: the session says why and the client
    // (a migrate) retries later.
    // Nor once its client is gone: the wait then ends with the connection's failure. Nor beyond
    // half the client's timeout (LockWaitFor).
    options.lock_timeout_seconds = lock_wait;
    FramePump* running_pump = nullptr;
    options.lock_cancelled = [this, &running_pump] {
      if (running_pump) running_pump->RethrowIfFailed();
      std::lock_guard<std::mutex> lock(mutex_);
      return stopping_;
    };
    // Its folder lock waits end with the client's connection too (an inner scope).
    store::FolderLockWait folder_wait(lock_wait, options.on_wait, options.lock_cancelled);
    uint64_t bytes_before = conn.bytes_in();
    SendReady(conn, began, options.copy_on_hold);
    SessionReport report;
    // A client that sends a byte now and then (small TLS records, or a link that all but died)
    // kept its slot and its user locked for ever, each byte restarting the idle timeout
    // (helper-170): said once it has lasted half the idle timeout, given up at the idle timeout.
    StallPolicy trickle;
    trickle.notice_seconds = std::max(1, options_.idle_timeout_seconds / 2);
    trickle.timeout_seconds = options_.idle_timeout_seconds;
    trickle.notice = [this, who](const std::string& line) { log_.Info(who + ": " + line); };
    trickle.holding = "; the session keeps its slot and the users it restores locked meanwhile";
    trickle.gave_up = "(--idle-timeout); the client's rerun completes the restore";
    conn.WatchTrickle(std::move(trickle));
    struct Unwatch {
      Connection& conn;
      ~Unwatch() { conn.WatchTrickle({}); }  // after the pump's thread, its reader, has ended
    } unwatch{conn};
    {
      FramePump pump(conn, [&](const Query& q) { return AnswerQuery(options, who, q); }, beat);
      running_pump = &pump;
      // Cleared before the pump goes, also when Restore throws: the folder lock scope above
      // outlives this block and asks lock_cancelled.
      struct ClearPump {
        FramePump*& pump;
        ~ClearPump() { pump = nullptr; }
      } clear_pump{running_pump};
      format::DecompressingSource input(pump);
      format::Decoder decoder(input);
      report = Restore(&store_, decoder, options);
      pump.Drain();
      running_pump = nullptr;
      if (options_.after_stream_applied) options_.after_stream_applied();
      sync.Sync();  // on a disk this may take long too: still under PROGRESS frames
      pump.Stop();
    }
    report.stream_bytes = conn.bytes_in() - bytes_before;
    // The restore is complete and on disk: said first, so that a client gone before its RESULT
    // does not make the log call it failed (helper-77: "restore failed: ... Broken pipe" for a
    // stream applied in full).
    log_.Line(report.errors ? LogPriority::kError : LogPriority::kInfo, who + ": " + report.Summary("restore"));
    for (const std::string& line : report.notes) log_.Info(who + ": note: " + line);
    for (const std::string& line : report.error_lines) log_.Line(LogPriority::kError, who + ": error: " + line);
    try {
      WriteFrame(conn, FrameType::kResult, ReportToJson(report));
    } catch (const Error& e) {
      const bool stopping = Stopping();
      // A stop of the server cuts every session: it was not the client that went (helper-132).
      log_.Line(LogPriority::kWarning,
                who + ": the restore above is complete and on disk, but " +
                    (stopping ? std::string("the server's stop cut the connection") : "its client was gone") +
                    " before its RESULT (" + e.what() + "); its rerun finds it present");
      throw ClientGoneAfterResult{};
    }
  }

  void ServeVerify(Connection& conn, const std::string& who, const nlohmann::json& j, std::chrono::milliseconds beat,
                   bool* began) {
    VerifyOptions options;
    options.names = j.at("names").get<std::vector<std::string>>();
    options.check_bytes = j.at("check_bytes").get<bool>();
    SendReady(conn, began);
    VerifyReport report;
    {
      FramePump pump(conn, nullptr, beat);
      format::DecompressingSource input(pump);
      format::Decoder decoder(input);
      report = VerifyManifest(store_, decoder, options);
      pump.Finish();
    }
    WriteFrame(conn, FrameType::kResult, report.Json());
    log_.Info(who + ": verify: " + std::to_string(report.messages) + " messages, " +
              std::to_string(report.differences.size()) + " differences");
  }

  // Protocol 1: {"user","status"}, READY, RESULT. Protocol 2: {"statuses":[{"user","status"}...]},
  // RESULT at once: one round trip for a whole group (migrate's hold and switch). Every user is
  // checked before any is changed, so an unknown one changes nothing.
  // `listed`: the REQUEST's "statuses", kept out of its tree by ParseFrameJson.
  void ServeSetStatus(Connection& conn, const std::string& who, const nlohmann::json& j,
                      std::vector<std::pair<std::string, std::string>> listed, uint32_t version, int lock_wait,
                      bool* began) {
    std::vector<std::pair<std::string, store::UserStatus>> statuses;
    if (j.contains("statuses")) {
      statuses.reserve(listed.size());
      for (auto& [user, status] : listed) statuses.emplace_back(std::move(user), store::UserStatus::Parse(status));
      listed = {};
    } else {
      statuses.emplace_back(j.at("user").get<std::string>(), store::UserStatus::Parse(j.at("status").get<std::string>()));
    }
    // Checked up front too: with several distinct statuses there is one transaction per status.
    for (const auto& [user, status] : statuses) {
      store::ValidateUserId(user);
      if (!store_.FindUser(user)) Throw(Errc::kNoUser, "no such user: " + user + " (no status was changed)");
    }
    // A client that gave up while this REQUEST waited or was read (its timeout) has taken its
    // reply for a failure and may have undone its side (migrate puts its users back to active):
    // applied now, the users would be active here and there (helper-170).
    if (conn.PeerClosed())
      Throw(Errc::kTempFail, "its client closed the connection before the status change was applied; nothing changed");
    if (version < 2) SendReady(conn, began);
    SetStatuses(statuses, lock_wait);
    WriteFrame(conn, FrameType::kResult, nlohmann::json{{"set", statuses.size()}}.dump());
    if (statuses.empty())  // our client never sends one; another peer may
      log_.Info(who + ": set-status with an empty list; nothing changed");
    else if (statuses.size() == 1)
      log_.Info(who + ": status of " + statuses[0].first + " set to " + statuses[0].second.ToString());
    else
      log_.Info(who + ": status of " + std::to_string(statuses.size()) + " users set (" + statuses[0].first + ": " +
                statuses[0].second.ToString() + ", ...)");
  }

  bool Stopping() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stopping_;
  }

  // A status change's or a folder removal's wait for a user: said once in the log (prefixed by
  // the operation), not beyond the REQUEST's lock wait or a stop request.
  store::Store::LockWait OperationWait(const char* op, int lock_wait) {
    store::Store::LockWait wait;
    wait.on_wait = [this, op](const std::string& why) { log_.Info(std::string(op) + ": " + why); };
    wait.timeout_seconds = lock_wait;
    wait.cancelled = [this] { return Stopping(); };
    return wait;
  }

  // One large REQUEST at a time (see LargeTurn). The wait ends with a stop, with its client
  // closing the connection, and after the idle timeout: it had no bound but a stop, and a
  // set-status whose client had long given up (and put its users back to active at the source)
  // was applied once its turn came, leaving 8,000 users active on both sides (helper-170).
  LargeTurn TakeLargeTurn(const std::string& who, Connection& conn) {
    std::unique_lock<std::mutex> lock(mutex_);
    bool said = false;
    const auto began = Clock::now();
    const auto waited = [&] {
      return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - began).count());
    };
    while (large_turn_taken_) {
      if (stopping_) Throw(Errc::kTempFail, "the server is stopping; try again once it is back");
      if (conn.PeerClosed())
        Throw(Errc::kTempFail, "its client closed the connection while its large REQUEST waited " + waited() +
                                   " s for another to be served; nothing done");
      if (Clock::now() - began >= std::chrono::seconds(options_.idle_timeout_seconds))
        Throw(Errc::kTempFail, "its large REQUEST waited " + waited() +
                                   " s (--idle-timeout) for another large REQUEST to be served; nothing done; try "
                                   "again later");
      if (!said) {
        lock.unlock();
        log_.Info(who + ": a large REQUEST waits for another to be served first");
        lock.lock();
        said = true;
        continue;
      }
      changed_.wait_for(lock, std::chrono::milliseconds(200));
    }
    large_turn_taken_ = true;
    return LargeTurn(this);
  }

  // Migrate's final pass, its users held at the source: the mailboxes its passes copied here that
  // the source no longer has (renamed or deleted meanwhile). Each is removed only from an
  // untouched copy of the requesting store's migration (on hold, made by its passes, nothing
  // else has written to it since), under the user's write lock, which keeps it untouched; any
  // other is kept and the reason said. docs/transport.md §1.
  void ServeRemoveFolders(Connection& conn, const std::string& who, const nlohmann::json& j,
                          const std::string& source_id, int lock_wait) {
    if (source_id.empty()) Throw(Errc::kInvalidArgument, "remove-folders names no source store");
    struct Named {
      std::string mailbox, user, folder;
    };
    std::vector<Named> mailboxes;  // all checked before any is touched
    for (const nlohmann::json& m : j.at("mailboxes")) {
      const std::string mailbox = m.get<std::string>();
      auto [user, folder] = store::ParseMailboxName(mailbox);
      store::ValidateUserId(user);
      store::ValidateFolderName(folder);
      mailboxes.push_back({mailbox, user, folder});
    }
    store::Store::LockWait wait = OperationWait("remove-folders", lock_wait);
    wait.keeps_untouched_copy = true;
    nlohmann::json removed = nlohmann::json::array(), kept = nlohmann::json::array();
    for (const auto& [mailbox, user, folder] : mailboxes) {
      std::string why;
      store::Store::UserWriteLock lock = store_.LockUserForWriting(user, wait);
      const std::optional<store::UserInfo> u = store_.FindUser(user);
      if (!u) {
        why = "no such user here";
      } else if (u->status.state != store::UserState::kHold || u->status.origin_store != source_id ||
                 !u->status.untouched_copy) {
        why = "the user here (status " + u->status.ToString() +
              ") is not a copy only this source's migration has written to: it may hold mail of its own";
      } else if (::strcasecmp(folder.c_str(), "INBOX") == 0) {
        why = "an INBOX is not removed on its own";
      } else if (store_.FindFolder(user, folder, store::Store::FolderDetail::kRecordOnly)) {
        store::DeleteFolder(store_, user, folder, &lock);
        removed.push_back(mailbox);
        log_.Info(who + ": removed " + mailbox + " (no longer at the source)");
        continue;
      } else {
        removed.push_back(mailbox);  // gone already (a retried request)
        continue;
      }
      kept.push_back({{"mailbox", mailbox}, {"why", why}});
    }
    WriteFrame(conn, FrameType::kResult, nlohmann::json{{"removed", removed}, {"kept", kept}}.dump());
  }

  // One Store::SetUsersStatus (one transaction under every user's delivery gate) per distinct
  // status: migrate's hold and switch give all of a group one status, so one transaction.
  void SetStatuses(const std::vector<std::pair<std::string, store::UserStatus>>& statuses, int lock_wait) {
    std::vector<std::pair<store::UserStatus, std::vector<std::string>>> groups;
    for (const auto& entry : statuses) {  // (clang 14 cannot capture a structured binding)
      auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == entry.second; });
      if (it == groups.end()) it = groups.insert(groups.end(), {entry.second, {}});
      it->second.push_back(entry.first);
    }
    // A delivery stuck holding a user's gate is waited for as a restore waits for a user's
    // writer: said once in the log, not beyond the idle timeout or a stop request.
    const store::Store::LockWait wait = OperationWait("set-status", lock_wait);
    for (const auto& [status, users] : groups) store_.SetUsersStatus(users, status, store::Store::MovedUsers::kChange, wait);
  }

  store::Store& store_;
  const ServeOptions& options_;
  TlsContext tls_;
  ServeLog& log_;
  RefusedLines refused_;
  std::mutex mutex_;
  std::condition_variable changed_;  // a session ended, or the server is stopping
  int sessions_ = 0;                 // under mutex_: slots taken
  int waiting_ = 0;                  // under mutex_: connections waiting for a slot
  bool stopping_ = false;            // under mutex_
  bool large_turn_taken_ = false;    // under mutex_: a REQUEST over kLargeRequestBytes is being parsed or served
};

}  // namespace

void Serve(store::Store& store, const ServeOptions& options, const std::atomic<bool>* stop, ServeLog& log) {
  ::signal(SIGPIPE, SIG_IGN);  // a vanished client becomes EPIPE on its session, not our death
  // Blocks of 4 MiB and more (a large REQUEST's bytes, a set-status's list) mapped apart and
  // unmapped when freed: glibc's sliding threshold otherwise serves them from the session
  // thread's arena after the first free, where each thread kept one (helper-70: 4 clients of
  // 16 MiB, 166 MiB). Smaller blocks as before: no system call per message buffer.
  ::mallopt(M_MMAP_THRESHOLD, 4 << 20);
  if (options.max_sessions < 1) Throw(Errc::kInvalidArgument, "--max-sessions must be at least 1");
  if (options.idle_timeout_seconds < 1) Throw(Errc::kInvalidArgument, "--idle-timeout must be at least 1 second");
  if (options.handshake_timeout_seconds < 1)
    Throw(Errc::kInvalidArgument, "--handshake-timeout must be at least 1 second");
  if (options.max_handshakes < 1) Throw(Errc::kInvalidArgument, "--max-handshakes must be at least 1");
  if (options.max_handshakes_per_address < 1)
    Throw(Errc::kInvalidArgument, "--max-handshakes-per-address must be at least 1");
  if (options.max_waiting < 1) Throw(Errc::kInvalidArgument, "--max-waiting must be at least 1");
  // Every later session would fail: better to end, with a status a supervisor restarts on
  // (the systemd unit's Restart=on-failure), than to refuse work until someone notices.
  if (!Server(store, options, log).Run(stop))
    Throw(Errc::kTempFail, "serve: the mboxlist environment of " + store.root() +
                               " is stuck on a process that died inside it, or another process recovered it under "
                               "this one; start serve again (opening it works again)");
}

void Serve(store::Store& store, const ServeOptions& options, const std::atomic<bool>* stop, std::ostream& log) {
  ServeLog to_stream(log);
  Serve(store, options, stop, to_stream);
}

}  // namespace storemove::stream::net
