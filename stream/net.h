// storemove's network transport (docs/transport.md): a backup sent over an authenticated TCP
// connection (TLS 1.3 with a pre-shared key or mutual certificates, or plain TCP with
// --insecure) to `storemove serve`, which restores it with the usual restore semantics. The
// sender skips content the receiver already holds (QUERY/ANSWER, then held records).
#pragma once

#include <array>
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <set>
#include <string>

#include "store/store.h"
#include "stream/serve_log.h"
#include "stream/stream.h"

namespace storemove::stream::net {

struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;  // "host:port", "[::1]:port"
};
// "host:port", "[::1]:port"; kInvalidArgument naming the text otherwise.
Endpoint ParseEndpoint(const std::string& text);

struct Credentials {
  std::string key_file;                           // TLS 1.3 external PSK from this file (storemove keygen)
  std::string cert_file, cert_key_file, ca_file;  // or mutual certificates
  bool insecure = false;                          // plain TCP (tests, trusted links)
};

class Connection;

// Cuts a client's sessions off from another thread (migrate's signal watcher): reads and writes
// of sessions running under it fail at once, and new sessions throw kInterrupted.
class Cancellation {
 public:
  Cancellation();
  ~Cancellation();
  Cancellation(const Cancellation&) = delete;
  Cancellation& operator=(const Cancellation&) = delete;
  void Cancel(const std::string& why);
  bool cancelled() const { return cancelled_.load(); }
  std::string why() const;
  // Waits up to `ms` milliseconds; true (at once) when cancelled.
  bool WaitFor(int64_t ms);
  int fd() const { return pipe_[0]; }  // readable once cancelled, for poll(2)
  // Sessions register their connection while they run; Add throws kInterrupted once cancelled.
  void Add(Connection* conn);
  void Remove(Connection* conn);
  // A child is cancelled with this one (at once if this one already is), until removed.
  void AddChild(Cancellation* child);
  void RemoveChild(Cancellation* child);

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::set<Connection*> conns_;
  std::set<Cancellation*> children_;
  std::atomic<bool> cancelled_{false};
  std::string why_;
  int pipe_[2] = {-1, -1};
};

struct ClientOptions {
  Credentials credentials;
  Cancellation* cancel = nullptr;  // optional: lets another thread cut the sessions off
  // The store id (Store::store_id) of the store this client works for: a server serving that
  // same store refuses the session before changing anything. SendBackup and VerifyRemote set it
  // from their source; "" = unknown.
  std::string source_store_id;
  int timeout_seconds = 60;  // connect, and any read or write that makes no progress
  int compress_level = 1;    // zstd level of the DATA stream, 0 = none
  int threads = 0;           // zstd worker threads
  // Called by a Session once the server answered: its TLS handshake came back, a frame came,
  // or it closed or reset the connection. Not for a connection the kernel took that then stayed
  // silent until the timeout (a stopped or hung server, a proxy with nothing behind it that
  // holds connections): migrate takes that destination for down, like one refusing connections,
  // so that every group does not spend its own attempts and timeouts finding it out.
  std::function<void()> on_answered;
  // Called once when the server says (PROGRESS before READY) that this connection waits for one
  // of its session slots (all --max-sessions busy): the session waits as long as the server
  // keeps saying so, instead of taking the silence for a dead server.
  std::function<void()> on_waiting_for_slot;
};

// Backs up `options` of `source` to the server, which restores it; returns the combined report
// (the server's restore report merged into the client's: messages, links, held, bytes raw and
// on the wire, skipped, linked, errors with the server's error lines). options.oracle is set
// by the session (content the server holds is sent as held records). Throws kAuth when the
// server refuses the credentials, kIo/kTempFail on network failures and timeouts, and the
// server's error category when the server stops the session.
SessionReport SendBackup(store::Store& source, const BackupOptions& options, const Endpoint& to,
                         const ClientOptions& client, const RestoreOptions& remote_restore = {});
// Sends a manifest of `options` of `source`; the server checks its store against it (stream::VerifyManifest).
VerifyReport VerifyRemote(store::Store& source, const BackupOptions& options, const Endpoint& to,
                          const ClientOptions& client);
// Loads client credentials as a session would (key file and its mode, certificates): kAuth or
// kInvalidArgument before anything is sent, for callers that must not retry such errors.
void CheckClientCredentials(const Credentials& credentials);
// Sets a user's status on the server's store.
void SetRemoteStatus(const Endpoint& to, const ClientOptions& client, const std::string& user,
                     const store::UserStatus& status);

// One authenticated connection to `serve` that carries several operations one after another
// (docs/transport.md): migrate keeps one per group for all its passes and its switch, so the
// TLS handshake is paid once and the switch costs one round trip.
class Session {
 public:
  // Connects and authenticates; kAuth, kIo, kTempFail, kInterrupted as SendBackup.
  Session(const Endpoint& to, const ClientOptions& client);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  // As SendBackup, on this connection (the source's store id goes with the request).
  SessionReport Restore(store::Store& source, const BackupOptions& options, const RestoreOptions& remote);
  // As VerifyRemote, on this connection.
  VerifyReport Verify(store::Store& source, const BackupOptions& options);
  // Sets every user's status in one request and one round trip (on the server one
  // Store::SetUsersStatus transaction per distinct status); kNoUser naming the first unknown user
  // (then none is changed, and the session stays usable). An operation refused before it began
  // (ERROR instead of READY) leaves the session usable too; any other failure breaks it: later
  // operations throw kIo naming the first failure.
  void SetStatuses(const std::vector<std::pair<std::string, store::UserStatus>>& statuses);
  // Migrate's final pass: removes these mailboxes ("user/U/F") from the server's copies, each
  // only where the user is an untouched copy of this source's migration (on hold, written by
  // nothing else). Returns those kept, each with why; the others are gone. A server without the
  // operation refuses it (kProtocol; the session stays usable).
  std::vector<std::pair<std::string, std::string>> RemoveFolders(const std::vector<std::string>& mailboxes);
  uint64_t bytes_out() const;  // bytes written on the wire so far
  const std::string& peer() const;  // "server HOST:PORT"
  // The store id the server's READY gave (a peer's bytes, up to the frame's 4 KiB); empty if none.
  const std::string& server_store_id() const;
  // The socket buffers obtained, one line ("socket buffers: send 32.0 MiB, ...").
  std::string socket_buffers() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

struct ServeOptions {
  std::string listen;  // "host:port"; port 0 picks a free port (see on_listening)
  Credentials credentials;
  int max_sessions = 16;  // sessions running at once; more authenticated ones wait for a slot
  int idle_timeout_seconds = 120;  // a peer silent (or not reading) this long is dropped
  // Before its REQUEST is read a connection is unauthenticated: it holds no session slot, must
  // finish the TLS handshake and send its REQUEST within handshake_timeout_seconds in total
  // (bytes trickling in do not extend it), and counts towards two caps: max_handshakes at once
  // (a new connection beyond it drops the oldest unauthenticated one) and
  // max_handshakes_per_address from one peer address (more are closed at once).
  int handshake_timeout_seconds = 10;
  int max_handshakes = 64;
  int max_handshakes_per_address = 16;
  // Authenticated connections waiting for a session slot (each holds a thread until a slot frees
  // or idle_timeout_seconds pass; one whose hello asked for progress, until a slot frees or its
  // client leaves, and it hears PROGRESS meanwhile); one more is told to try again later (kTempFail).
  int max_waiting = 256;
  // Log lines about connections refused before they authenticated (failed handshakes, handshake
  // timeouts, the caps above): at most refused_log_lines a window, then one line counting the
  // rest when the window ends. Anyone who can connect causes them (security review #06).
  int refused_log_lines = 20;
  std::chrono::milliseconds refused_log_window{std::chrono::minutes(1)};
  // Tests: false answers a hello that asks for progress as servers before 2026-12-05 did (silence
  // while it waits for a slot), to test a new client against an old server.
  bool progress_while_waiting_for_slot = true;
  bool verbose = false;            // also log every QUERY answered (one line per folder)
  std::function<void(const Endpoint&)> on_listening;  // called once, with the bound address
  std::function<void()> on_waiting_for_slot;  // tests: an authenticated connection waits for a session slot
  // Tests: a restore session's stream is applied (DATA-END read), before its sync and RESULT: a
  // slow server, whose client hears PROGRESS frames meanwhile.
  std::function<void()> after_stream_applied;
};

// Accepts sessions until *stop becomes true (checked at least every 200 ms). Each session runs in
// its own thread; the Store's per-user write lock keeps one user from being restored by two sessions at once.
// On stop, running sessions are cut off (an open folder stays unpublished) and joined. One line
// per event goes to `log`, which the accept loop also asks to reopen its file when requested
// (ServeLog::RequestReopen, SIGHUP). Ignores SIGPIPE for the process. When the store's mboxlist
// environment gets stuck (store::Store::EnvironmentStuck: a process died inside it), it stops
// the same way within 200 ms and throws kTempFail: only a new open recovers the environment.
void Serve(store::Store& store, const ServeOptions& options, const std::atomic<bool>* stop, ServeLog& log);
// The same with timestamped lines to `log` (tests, in-process servers).
void Serve(store::Store& store, const ServeOptions& options, const std::atomic<bool>* stop, std::ostream& log);

// Writes a new random 32-byte key, hex-encoded, to `path` with mode 0600; kExists if it exists.
void WriteKeyFile(const std::string& path);

// SHA-256, the proof a held record carries (XXH3 is not collision resistant).
using Sha256Digest = std::array<uint8_t, 32>;
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t size);
  Sha256Digest Final();

 private:
  void* ctx_;  // EVP_MD_CTX*
};
// SHA-256 of a whole file read with pread from offset 0; `shown` names it in errors.
Sha256Digest Sha256OfFile(int fd, const std::string& shown);

}  // namespace storemove::stream::net
