// A real Cyrus IMAP server for tests (moveuser against a second server family besides Dovecot),
// started with a throw-away configuration in a temporary directory: Cyrus `master` runs one imapd
// per connection on 127.0.0.1 on a free port, with every database, spool partition and socket in
// that directory. Users and the administrator authenticate with plaintext passwords from a sasldb
// written there (the file saslpasswd2 makes); the administrator (imapd.conf `admins`) may log in
// for any user with AUTHENTICATE PLAIN's authorization identity. Namespace as a modern site has it (the 3.x
// defaults, set explicitly): altnamespace (folders beside INBOX: "Sent", not "INBOX.Sent") and
// unixhierarchysep ('/' separator: "Projects/2024"). Start() also creates each user's INBOX.
//
// Packaging (docs/moveuser.md, "Test servers: Cyrus"): Debian's cyrus-imapd conflicts with
// dovecot-imapd, so master comes from cyrus-common and imapd from the cyrus-imapd .deb unpacked
// under /opt/storemove-test/cyrus-imapd by scripts/install-deps. Cyrus refuses to run as root: as
// root the master switches to the `cyrus` account, which then owns the directory; as anyone else,
// Cyrus runs as that user (imapd.conf cyrus_user). Cyrus logs only to syslog, absent here: a
// preloaded library (cyrus_syslog.cc) writes its messages to a file, which Log() shows.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

namespace storemove::testing {

class CyrusServer {
 public:
  static constexpr const char* kMaster = "/usr/lib/cyrus/bin/master";
  static constexpr const char* kImapd = "/opt/storemove-test/cyrus-imapd/usr/lib/cyrus/bin/imapd";

  struct Options {
    std::map<std::string, std::string> users;  // user -> plaintext password; each gets an empty INBOX
    std::string admin = "admin";               // in `admins`: logs in for any user
    std::string admin_password = "admin-secret";
    std::string tls_cert, tls_key;             // PEM files: STARTTLS offered; "" for no TLS
  };

  // Whether Cyrus can run here; `why` says what is missing (for GTEST_SKIP).
  static bool Available(std::string* why);

  CyrusServer() = default;
  ~CyrusServer() { Stop(); }
  CyrusServer(const CyrusServer&) = delete;
  CyrusServer& operator=(const CyrusServer&) = delete;

  // Writes the configuration and the sasldb, starts master, waits (bounded) until it accepts
  // connections and creates the users' INBOXes as the administrator. Throws storemove::Error with
  // the master's log or the server's answer when something fails.
  void Start(const Options& options);
  int port() const { return port_; }
  // SIGTERM (master stops its imapds), a bounded wait, then SIGKILL to its process group; removes
  // the temporary directory unless CYRUS_TEST_KEEP is set. Idempotent.
  void Stop();
  // The end of the master's standard error and of Cyrus's syslog messages, on one line (for
  // failure messages).
  std::string Log() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace storemove::testing
