// A real Dovecot IMAP server for tests, started with a throw-away configuration in a temporary
// directory (after tests/tools/dovecot_test.py, whose docstring explains the choices): it listens
// on 127.0.0.1 on a free port, serves each user's Maildir++ at <mail_root>/<user> (listescape,
// '/' separator), authenticates passwd-file users with plaintext passwords and, optionally, a
// master user who logs in as any of them with AUTHENTICATE PLAIN's authorization identity (or
// "user*master"). Running as root, the mail tree is handed to `nobody` (Dovecot never lets a mail
// process run as root). The destructor stops it.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

namespace storemove::testing {

class DovecotServer {
 public:
  static constexpr const char* kBinary = "/usr/sbin/dovecot";

  struct Options {
    std::string mail_root;                     // Maildir++ of user u: <mail_root>/<u> (filled before Start)
    std::map<std::string, std::string> users;  // user -> plaintext password
    std::string master_user;                   // "" for none, else e.g. "admin"
    std::string master_password;
    std::string tls_cert, tls_key;             // PEM files: ssl = yes (STARTTLS); "" for no TLS
    char separator = '/';                      // the namespace's hierarchy separator ('.' as on many old servers)
  };

  // Whether Dovecot can run here; `why` says what is missing (for GTEST_SKIP).
  static bool Available(std::string* why);

  DovecotServer() = default;
  ~DovecotServer() { Stop(); }
  DovecotServer(const DovecotServer&) = delete;
  DovecotServer& operator=(const DovecotServer&) = delete;

  // Writes the configuration, starts Dovecot and waits (bounded) until it accepts connections.
  // Throws storemove::Error with Dovecot's log when it does not come up.
  void Start(const Options& options);
  int port() const { return port_; }
  // SIGTERM, a bounded wait, then SIGKILL to its process group; removes the temporary directory
  // unless DOVECOT_TEST_KEEP is set. Idempotent.
  void Stop();
  // The end of Dovecot's log (for failure messages).
  std::string Log() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace storemove::testing
