// Fills a real IMAP server for tests over a plain loopback connection (Cyrus or Dovecot alike):
// log in as a user or as an administrator/master user for them, CREATE, SUBSCRIBE and APPEND with
// flags, keywords and INTERNALDATE. A careful line-based exchange, not a client: every command waits
// for its tagged answer and anything but OK throws storemove::Error quoting the server's line.
// Untagged responses are returned (literals inline) for the few raw checks tests make.
//
// Mailbox names go on the wire as given: the caller writes modified UTF-7 ("Entw&APw-rfe") and the
// server's separator. Messages go as given too: Cyrus refuses bare LF ("Message contains bare
// newlines") and NUL, so callers pass CRLF text, as real clients do.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace storemove::testing {

// RFC 4648 base64, as SASL PLAIN sends its credentials.
std::string Base64(const std::string& in);

class ImapFiller {
 public:
  // Connects to 127.0.0.1:port and reads the greeting (10 s receive timeout per read).
  explicit ImapFiller(int port);
  ~ImapFiller();
  ImapFiller(const ImapFiller&) = delete;
  ImapFiller& operator=(const ImapFiller&) = delete;

  void Login(const std::string& user, const std::string& password);  // LOGIN "user" "password"
  // AUTHENTICATE PLAIN with authorization identity `user` and authentication identity `admin`.
  void LoginAs(const std::string& user, const std::string& admin, const std::string& admin_password);
  void Create(const std::string& mailbox);
  void Subscribe(const std::string& mailbox);
  // APPEND mailbox (flags) "dd-Mon-yyyy hh:mm:ss +0000" {n}: LITERAL+ when the server offers it,
  // else waits for the continuation. `date` is unix seconds (UTC).
  void Append(const std::string& mailbox, const std::vector<std::string>& flags, int64_t date,
              const std::string& message);
  // Sends "<tag> <command>" and returns the untagged responses ("* ..." without "* ", literals
  // inline); throws unless the tagged answer is OK.
  std::vector<std::string> Command(const std::string& command);
  void Logout();  // LOGOUT; never throws

  const std::vector<std::string>& capabilities() const { return caps_; }

  static std::string Quote(const std::string& s);           // "..." with \ and " escaped
  static std::string InternalDate(int64_t unix_seconds);  // "dd-Mon-yyyy hh:mm:ss +0000"

 private:
  std::string ReadLine();  // one response line, literals inline, without CRLF
  void Send(const std::string& bytes);
  std::string NextTag();
  std::vector<std::string> Finish(const std::string& tag, const std::string& what);
  bool HasCapability(const std::string& cap) const;

  int fd_ = -1;
  int port_;
  uint64_t next_tag_ = 1;
  std::string buffer_;
  std::vector<std::string> caps_;  // upper-cased, from the greeting or the login answer
};

}  // namespace storemove::testing
