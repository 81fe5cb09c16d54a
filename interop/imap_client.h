// An IMAP4rev1 (RFC 3501) client for pulling mailboxes out of another server (storemove moveuser):
// log in (LOGIN, AUTHENTICATE PLAIN, a master user's PLAIN with authorization identity), list
// folders, EXAMINE, and UID FETCH metadata and whole messages. It speaks over an abstract byte
// channel (stream/ provides TCP and TLS; interop/ opens no sockets) and parses responses as a stream
// (interop/imap_reader.h): a message body is handed to the sink in slices of the read buffer as it
// arrives, so memory stays bounded whatever the message size. Why not libetpan: docs/moveuser.md.
// Every failure is a storemove::Error with one line "<shown>: what, where"; the server's own text
// is quoted trimmed and with control characters escaped, a password never.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "interop/modified_utf7.h"
#include "util/error.h"

namespace storemove::interop {

class ImapReader;

// The client's byte channel: a TCP socket, maybe under TLS.
class ImapChannel {
 public:
  virtual ~ImapChannel() = default;
  virtual size_t Read(void* data, size_t size) = 0;  // 1..size bytes; 0 when the peer closed; throws on timeout/errors
  virtual void Write(const void* data, size_t size) = 0;
  virtual void StartTls() = 0;  // called after the server accepted STARTTLS: do the TLS handshake now
};

struct ImapFolder {
  std::string name;        // as the server spells it (modified UTF-7, its delimiter), for EXAMINE
  std::string path;        // UTF-8 (mUTF-7 decoded), components joined by '/' whatever the server's delimiter
  char delimiter = 0;      // 0 when the server says NIL
  bool selectable = true;  // false for \Noselect or \NonExistent
  bool subscribed = false; // listed by LSUB "" "*"
};

struct ImapMailboxStatus {
  uint32_t uidvalidity = 0, uidnext = 0, exists = 0;
  bool exists_sent = false;  // an EXISTS came (EXAMINE requires one: RFC 3501 §6.3.2)
  uint64_t expunges = 0;     // EXPUNGE responses since the EXAMINE
};

struct ImapMessage {               // one FETCH response, complete
  uint32_t uid = 0;
  std::vector<std::string> flags;  // as sent: "\\Seen", "\\Answered", "$Forwarded", "custom"
  int64_t internal_date = 0;       // unix seconds (INTERNALDATE with its zone applied)
  uint64_t size = 0;               // RFC822.SIZE
  bool has_flags = false, has_date = false, has_size = false;  // which of the three the response had
  bool nil_body = false;  // BODY[] NIL: the server says it has no body for the message
};

class ImapFetchSink {
 public:
  virtual ~ImapFetchSink() = default;
  virtual void BodyBegin(uint64_t size) = 0;                 // a BODY[] literal of `size` bytes starts
  virtual void BodyData(const char* data, size_t size) = 0;  // its bytes, in order, in chunks
  // The FETCH response is complete (items may come in any order, so metadata arrive here, after the
  // body). had_body: a BODY[] literal was part of it. Unsolicited FETCHes (flag updates without
  // UID) are not passed on; a FETCH carrying a body but no UID is a protocol error. Returns whether
  // the response was the command's progress (a body, a message not listed before): a server
  // repeating the same flag update forever must not hold a command open (set_progress_timeout).
  virtual bool Message(const ImapMessage& message, bool had_body) = 0;
};

class ImapClient {
 public:
  // `shown` names the server in errors: "imap://127.0.0.1:1143".
  ImapClient(ImapChannel& channel, std::string shown);
  ~ImapClient();
  ImapClient(const ImapClient&) = delete;
  ImapClient& operator=(const ImapClient&) = delete;

  void ReadGreeting();                    // * OK / * PREAUTH; BYE -> Errc::kTempFail
  // The greeting was PREAUTH: the connection is logged in already (a tunnel's server run as the
  // user). Its text, for a check of whom it says it logged in.
  bool preauthenticated() const { return preauthenticated_; }
  const std::string& greeting_text() const { return greeting_text_; }
  std::set<std::string> Capabilities();   // upper-cased; asks CAPABILITY when not known (after TLS/login it asks again)
  bool HasCapability(std::string_view cap);
  void StartTls();                        // STARTTLS, then channel.StartTls(); kAuth if not offered/refused
  // Authenticates `user`: AUTHENTICATE PLAIN (SASL-IR if offered, else with the continuation) when
  // the server offers AUTH=PLAIN, else LOGIN (quoted or literal strings). NO -> Errc::kAuth naming
  // the user, never the password.
  void Login(const std::string& user, const std::string& password);
  // An administrator acting for `user`: AUTHENTICATE PLAIN with authorization identity `user` and
  // authentication identity `admin` (Dovecot master users, Cyrus admins). kAuth when refused or
  // when the server offers no AUTH=PLAIN.
  void LoginAs(const std::string& user, const std::string& admin, const std::string& admin_password);
  std::vector<ImapFolder> ListFolders();               // LIST "" "*" then LSUB "" "*"
  // LIST "" <name>: the folder of exactly that name, if the server still lists it.
  std::optional<ImapFolder> ListOne(const std::string& name);
  ImapMailboxStatus Examine(const std::string& name);
  // The examined folder's message count as the server last said (EXISTS responses update it).
  uint32_t exists() const { return status_.exists; }  // EXAMINE (read-only), UIDVALIDITY/UIDNEXT/EXISTS; NO -> kNotFound
  // EXPUNGE responses in the examined folder so far (each also lowers exists()): what a listing
  // may leave out of the count it began with.
  uint64_t expunges() const { return status_.expunges; }
  // UID FETCH first_uid:* (UID FLAGS INTERNALDATE RFC822.SIZE): metadata only. Note a server answers
  // "n:*" with the last message even when its UID is below n; pass it on, the caller filters.
  void FetchMeta(uint32_t first_uid, ImapFetchSink& sink);
  // UID FETCH of these UIDs with (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[]): the set is
  // written compactly (1:500,502), split into commands of at most kFetchUids UIDs and
  // kFetchSetChars characters, and up to kFetchInFlight commands are pipelined.
  void FetchBodies(const std::vector<uint32_t>& uids, ImapFetchSink& sink);
  // UID FETCH 1:* with bodies, as FetchBodies: every message of a folder in one command and one
  // round trip (a folder new at the destination needs no metadata pass first).
  void FetchAll(ImapFetchSink& sink);
  void Logout();  // LOGOUT, reads the BYE and the tagged OK; never throws (the session is over anyway)
  uint64_t bytes_in() const;
  // A command gets no more than `seconds` without progress (its tagged answer, a continuation, a
  // FETCH response the sink counts as progress, a LIST response); untagged status lines ("* OK
  // still here") and repeated flag updates are not, so a server or proxy that keeps the
  // connection alive without answering fails the command
  // (Errc::kTempFail naming it) instead of holding it forever. The channel's own timeout covers
  // silence. 0 (the default): no such limit.
  void set_progress_timeout(int seconds) { progress_timeout_seconds_ = seconds; }
  // A BODY[] of another length than its RFC822.SIZE is refused (kProtocol) unless allowed.
  void set_size_mismatch_allowed(bool allowed) { size_mismatch_allowed_ = allowed; }

  static constexpr size_t kMaxFlags = 1000;  // flags and keywords of one message (a store keeps 64 keywords a folder)
  // A user's folders as LIST gives them: more, or more bytes of names, is a server repeating or
  // inventing entries (a flood grew memory to 2.3 GB: helper-51).
  static constexpr size_t kMaxFolders = 100000;
  static constexpr size_t kMaxFolderNameBytes = size_t{16} << 20;
  static constexpr size_t kFetchUids = 1000;
  static constexpr size_t kFetchSetChars = 7000;  // a command line stays under 8 KiB (RFC 7162 §4)
  static constexpr size_t kFetchInFlight = 4;

 private:
  struct Tagged {
    std::string status;  // "OK", "NO" or "BAD"
    std::string text;    // "[CODE args] text" as the server sent it
  };
  enum class Got { kContinuation, kUntagged, kTagged };

  std::string Start(const std::vector<std::string>& segments, const std::string& name);
  Tagged Wait(const std::string& tag);
  // A failure on the way (a timeout, a reset) while waiting for `tag`: said with the server and
  // the command, as the server's own refusals are.
  [[noreturn]] void FailedWaiting(const Error& e, const std::string& tag);
  Got ReadResponse(std::string* tag, Tagged* tagged);
  static Errc LoginRefusal(const Tagged& t);
  // ReadResponse for the command `tag`, which fails if the command makes no progress in time.
  Got ReadFor(const std::string& tag, std::string* got_tag, Tagged* tagged);
  void Untagged();
  void StatusResponse(const std::string& status);
  std::string ResponseCode();
  void Fetch();
  void ListLine(bool lsub);
  void Authenticate(const std::string& authzid, const std::string& authcid, const std::string& password,
                    const std::string& who);
  void Check(const Tagged& t, const std::string& what);
  void AppendString(std::vector<std::string>* segments, std::string_view value);
  [[noreturn]] void Refused(Errc code, const std::string& what, const Tagged& t);

  ImapChannel& channel_;
  std::string shown_;
  std::unique_ptr<ImapReader> reader_;
  uint64_t next_tag_ = 1;
  std::map<std::string, std::string> in_flight_;  // tag -> command name
  std::map<std::string, Tagged> completed_;       // pipelined commands answered out of order
  std::set<std::string> caps_;
  bool caps_known_ = false;
  // What the command in progress collects from untagged responses.
  ImapFetchSink* sink_ = nullptr;
  std::vector<ImapFolder>* folders_ = nullptr;
  std::map<std::string, size_t> folder_index_;  // name -> index in *folders_
  size_t folder_name_bytes_ = 0;                 // of the names in folder_index_
  std::string last_text_;  // of the last status response read
  bool preauthenticated_ = false;
  std::string greeting_text_;
  int progress_timeout_seconds_ = 0;
  bool size_mismatch_allowed_ = false;
  bool progress_ = false;        // the last untagged response was data a command asked for
  int64_t last_progress_ms_ = 0; // steady clock, when the command in progress last made some
  ImapMailboxStatus status_;
};

// INTERNALDATE "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be space-padded) -> unix seconds, without
// locale or time zone database. Throws kProtocol naming the text when it does not parse.
int64_t ParseImapDate(std::string_view text);

}  // namespace storemove::interop
