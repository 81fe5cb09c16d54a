// storemove serve: the receiving end of backup --to (docs/transport.md). Restores each session's
// stream into the store; SIGINT or SIGTERM stops it cleanly (running sessions are cut off, an
// open folder stays unpublished, a rerun of their backups completes them); SIGHUP reopens the
// --log file (after logrotate renamed it).
#include <signal.h>

#include <atomic>
#include <memory>

#include "stream/net.h"
#include "tools/commands.h"
#include "util/error.h"

namespace storemove::tools {
namespace {

std::atomic<bool> g_stop{false};

std::atomic<stream::net::ServeLog*> g_log{nullptr};

extern "C" void OnStopSignal(int) { g_stop.store(true); }
extern "C" void OnHangup(int) {
  if (stream::net::ServeLog* log = g_log.load()) log->RequestReopen();
}

struct ServeCliOptions {
  std::string store_dir;
  stream::net::ServeOptions serve;
  std::string log_file;
};

int RunServe(ServeCliOptions& o) {
  auto store = OpenStore(o.store_dir);
  std::unique_ptr<stream::net::ServeLog> log = stream::net::ServeLog::Open(o.log_file);
  g_log.store(log.get());
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  sa.sa_handler = OnHangup;
  ::sigaction(SIGHUP, &sa, nullptr);
  stream::net::Serve(*store, o.serve, &g_stop, *log);
  ::signal(SIGHUP, SIG_IGN);  // the log goes away with this function
  g_log.store(nullptr);
  return 0;
}

}  // namespace

void AddServeCommand(CLI::App& root, Action* chosen) {
  auto o = std::make_shared<ServeCliOptions>();
  CLI::App* c = root.add_subcommand("serve", "receive backups sent with backup --to and restore them into a store");
  AddStoreOption(c, &o->store_dir);
  c->add_option("--listen", o->serve.listen, "address to listen on (port 0: any free port, logged)")
      ->required()
      ->type_name("HOST:PORT");
  c->add_option("--key", o->serve.credentials.key_file, "pre-shared key file (storemove keygen)")->type_name("FILE");
  c->add_option("--cert", o->serve.credentials.cert_file, "server certificate (PEM)")->type_name("FILE");
  c->add_option("--cert-key", o->serve.credentials.cert_key_file, "its private key (PEM; mode 0600)")->type_name("FILE");
  c->add_option("--ca", o->serve.credentials.ca_file, "CA that signs client certificates")->type_name("FILE");
  c->add_flag("--insecure", o->serve.credentials.insecure, "plain TCP, no authentication (trusted links only)");
  c->add_option("--max-sessions", o->serve.max_sessions,
                "sessions at once; more authenticated clients wait for a slot (default 16)");
  c->add_option("--idle-timeout", o->serve.idle_timeout_seconds,
                "seconds a peer may send nothing (or not read) before its session is dropped (default 120)");
  c->add_option("--handshake-timeout", o->serve.handshake_timeout_seconds,
                "seconds from connecting to the end of the handshake and of a REQUEST's header, however the bytes trickle in "
                "(default 10)");
  c->add_option("--max-handshakes", o->serve.max_handshakes,
                "unauthenticated connections at once; a new one drops the oldest (default 64)");
  c->add_option("--max-handshakes-per-address", o->serve.max_handshakes_per_address,
                "unauthenticated connections from one address; more are closed at once (default 16)");
  c->add_option("--max-waiting", o->serve.max_waiting,
                "authenticated connections waiting for a session slot; more are told to try again (default 256)");
  c->add_flag("-v,--verbose", o->serve.verbose, "also log every QUERY answered (one line per folder)");
  c->add_option("--log", o->log_file,
                "append the log to FILE (reopened on SIGHUP) or, with 'syslog', send it to syslog(3); default "
                "standard error, with <N> priority prefixes when systemd's journal reads it")
      ->type_name("FILE|syslog");
  c->callback([o, chosen] { *chosen = [o] { return RunServe(*o); }; });
}

}  // namespace storemove::tools
