#include "interop/imap_client.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <limits>
#include <strings.h>

#include "interop/imap_reader.h"
#include "util/error.h"

namespace storemove::interop {

namespace {

std::string Upper(std::string s) {
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return s;
}

std::string Base64(std::string_view in) {
  static const char* kTable = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6) out.push_back(kTable[v >> shift & 63]);
  }
  if (i < in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    out.push_back(kTable[v >> 18 & 63]);
    out.push_back(kTable[v >> 12 & 63]);
    out.push_back(i + 1 < in.size() ? kTable[v >> 6 & 63] : '=');
    out.push_back('=');
  }
  return out;
}

// Howard Hinnant's days_from_civil: days since 1970-01-01 of a proleptic Gregorian date.
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool TryParseImapDate(std::string_view s, int64_t* out) {
  size_t i = 0;
  auto digits = [&](size_t n, int* v) {
    if (i + n > s.size()) return false;
    int x = 0;
    for (size_t k = 0; k < n; ++k) {
      const char c = s[i + k];
      if (c < '0' || c > '9') return false;
      x = x * 10 + (c - '0');
    }
    i += n;
    *v = x;
    return true;
  };
  auto expect = [&](char c) {
    if (i >= s.size() || s[i] != c) return false;
    ++i;
    return true;
  };
  int day = 0, year = 0, hour = 0, minute = 0, second = 0, zh = 0, zm = 0;
  if (!s.empty() && s[0] == ' ') ++i;  // date-day-fixed: SP DIGIT
  if (!digits(s.size() > i + 1 && s[i + 1] >= '0' && s[i + 1] <= '9' ? 2 : 1, &day)) return false;
  if (!expect('-') || i + 3 > s.size()) return false;
  static const char* kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
  unsigned month = 0;
  for (unsigned m = 0; m < 12 && month == 0; ++m) {
    bool same = true;
    for (size_t k = 0; k < 3; ++k) same = same && (s[i + k] | 0x20) == kMonths[m][k];
    if (same) month = m + 1;
  }
  if (month == 0) return false;
  i += 3;
  if (!expect('-') || !digits(4, &year) || !expect(' ') || !digits(2, &hour) || !expect(':') ||
      !digits(2, &minute) || !expect(':') || !digits(2, &second) || !expect(' '))
    return false;
  if (i >= s.size() || (s[i] != '+' && s[i] != '-')) return false;
  const int sign = s[i++] == '-' ? -1 : 1;
  if (!digits(2, &zh) || !digits(2, &zm) || i != s.size()) return false;
  if (day < 1 || day > 31 || year < 1 || hour > 23 || minute > 59 || second > 60 || zm > 59) return false;
  *out = DaysFromCivil(year, month, unsigned(day)) * 86400 + hour * 3600 + minute * 60 + second -
         sign * (zh * 3600 + zm * 60);
  return true;
}

// Restores a pointer member when a command ends, thrown out of or not.
template <class T>
class Collect {
 public:
  Collect(T*& slot, T* value) : slot_(slot) { slot_ = value; }
  ~Collect() { slot_ = nullptr; }
  Collect(const Collect&) = delete;
  Collect& operator=(const Collect&) = delete;

 private:
  T*& slot_;
};

}  // namespace

int64_t ParseImapDate(std::string_view text) {
  int64_t v = 0;
  if (!TryParseImapDate(text, &v)) Throw(Errc::kProtocol, "bad INTERNALDATE '" + ShownText(text) + "'");
  return v;
}

ImapClient::ImapClient(ImapChannel& channel, std::string shown)
    : channel_(channel), shown_(std::move(shown)), reader_(std::make_unique<ImapReader>(channel_, shown_)) {}

ImapClient::~ImapClient() = default;

uint64_t ImapClient::bytes_in() const { return reader_->bytes_in(); }

// --- sending ----------------------------------------------------------------------------------

void ImapClient::AppendString(std::vector<std::string>* segments, std::string_view value) {
  bool quotable = value.size() <= 1024;
  for (char c : value)
    if (c == '\0') Throw(Errc::kInvalidArgument, shown_ + ": IMAP cannot carry a NUL byte in a string");
    else if (c == '\r' || c == '\n' || static_cast<unsigned char>(c) >= 0x80) quotable = false;
  if (quotable) {
    std::string& s = segments->back();
    s.push_back('"');
    for (char c : value) {
      if (c == '"' || c == '\\') s.push_back('\\');
      s.push_back(c);
    }
    s.push_back('"');
    return;
  }
  const bool plus = HasCapability("LITERAL+");
  segments->back() += "{" + std::to_string(value.size()) + (plus ? "+}\r\n" : "}\r\n");
  if (!plus) segments->emplace_back();  // the server's '+' comes first
  segments->back().append(value);
}

ImapClient::Got ImapClient::ReadFor(const std::string& tag, std::string* got_tag, Tagged* tagged) {
  progress_ = false;
  const Got got = ReadResponse(got_tag, tagged);
  const int64_t now = SteadyMs();
  if (got != Got::kUntagged || progress_) {
    last_progress_ms_ = now;
  } else if (progress_timeout_seconds_ > 0 && now - last_progress_ms_ > int64_t{progress_timeout_seconds_} * 1000) {
    auto it = in_flight_.find(tag);
    const std::string command = it != in_flight_.end() ? it->second : "a command";
    Throw(Errc::kTempFail, shown_ + ": " + command + " made no progress for " + std::to_string(progress_timeout_seconds_) +
                               " s, only untagged status lines and repeated FETCH or LIST responses (last status: '" +
                               ShownText(last_text_) + "')");
  }
  return got;
}

std::string ImapClient::Start(const std::vector<std::string>& segments, const std::string& name) {
  const std::string tag = "A" + std::to_string(next_tag_++);
  in_flight_[tag] = name;
  last_progress_ms_ = SteadyMs();
  for (size_t i = 0; i < segments.size(); ++i) {
    if (i > 0) {  // a literal or a SASL response: wait for the server's continuation request
      for (;;) {
        std::string got_tag;
        Tagged tagged;
        Got got;
        try {
          got = ReadFor(tag, &got_tag, &tagged);
        } catch (const Error& e) {
          FailedWaiting(e, tag);
        }
        if (got == Got::kContinuation) break;
        if (got == Got::kTagged) {
          completed_[got_tag] = tagged;
          if (got_tag == tag) return tag;  // refused before the rest was sent
        }
      }
    }
    std::string out = i == 0 ? tag + " " + segments[i] : segments[i];
    if (i + 1 == segments.size()) out += "\r\n";
    channel_.Write(out.data(), out.size());
  }
  return tag;
}

ImapClient::Tagged ImapClient::Wait(const std::string& tag) {
  for (;;) {
    if (auto it = completed_.find(tag); it != completed_.end()) {
      Tagged t = std::move(it->second);
      completed_.erase(it);
      return t;
    }
    std::string got_tag;
    Tagged tagged;
    Got got;
    try {
      got = ReadFor(tag, &got_tag, &tagged);
    } catch (const Error& e) {
      FailedWaiting(e, tag);
    }
    if (got == Got::kContinuation) reader_->Fail("continuation request the client did not ask for");
    if (got == Got::kTagged) completed_[got_tag] = std::move(tagged);
  }
}

void ImapClient::FailedWaiting(const Error& e, const std::string& tag) {
  const std::string what = e.what();
  if (what.starts_with(shown_)) throw;  // said already (a BYE, a refusal, a reply that breaks the protocol)
  auto it = in_flight_.find(tag);
  // A BYE the server did not follow with its close: the timeout that ends the wait says it (the
  // line was a bare timeout, helper-159 F6).
  const std::string bye =
      reader_->said_bye() ? " (after the server's untagged BYE " + ShownText(reader_->bye_text()) + ", without a close)" : "";
  Throw(e.code(), shown_ + ": waiting for the answer to " + (it != in_flight_.end() ? it->second : "a command") +
                      ": " + what + bye);
}

void ImapClient::Refused(Errc code, const std::string& what, const Tagged& t) {
  Throw(code, shown_ + ": " + what + " refused: " + t.status + (t.text.empty() ? "" : " ") + ShownText(t.text));
}

// A refused login: RFC 5530's codes tell a server that cannot check credentials now (its
// directory down, too many sessions) from one that refuses them; only the latter needs a person.
Errc ImapClient::LoginRefusal(const Tagged& t) {
  for (const char* code : {"[UNAVAILABLE]", "[INUSE]", "[LIMIT]", "[SERVERBUG]"}) {
    if (t.text.size() >= std::strlen(code) && ::strncasecmp(t.text.c_str(), code, std::strlen(code)) == 0)
      return Errc::kTempFail;
  }
  return Errc::kAuth;
}

// A server's NO to a command is its failure to do it now (its storage, a lock, a limit): a rerun
// may get past it. BAD says the command broke the server's grammar, which recurs every run
// (kProtocol, permanent: a retry loop must stop, helper-100), unless it carries one of RFC 5530's
// codes for a passing state, or is Exchange Online's answer for a session it has not connected
// yet, which passes (helper-98).
void ImapClient::Check(const Tagged& t, const std::string& what) {
  if (t.status == "OK") return;
  if (t.status == "NO" || LoginRefusal(t) == Errc::kTempFail ||
      t.text.find("authenticated but not connected") != std::string::npos)
    Refused(Errc::kTempFail, what, t);
  Refused(Errc::kProtocol, what, t);
}

// --- reading ----------------------------------------------------------------------------------

ImapClient::Got ImapClient::ReadResponse(std::string* tag, Tagged* tagged) {
  ImapReader& r = *reader_;
  r.BeginResponse(progress_timeout_seconds_);
  if (r.Peek() < 0) r.Expect('*', "before the response to a command");  // reports the close
  if (r.Accept('+')) {
    r.Text();  // a SASL challenge or "go ahead": PLAIN needs neither
    return Got::kContinuation;
  }
  if (r.Accept('*')) {
    r.Space("after '*'");
    Untagged();
    return Got::kUntagged;
  }
  *tag = r.Atom("a tag");
  if (!in_flight_.count(*tag)) r.Fail("tagged response for tag '" + ShownText(*tag) + "' which is not in flight");
  r.Space("after a tag");
  tagged->status = Upper(r.Atom("a status"));
  if (tagged->status != "OK" && tagged->status != "NO" && tagged->status != "BAD")
    r.Fail("tagged response with status '" + ShownText(tagged->status) + "'");
  in_flight_.erase(*tag);
  StatusResponse(tagged->status);
  tagged->text = last_text_;
  return Got::kTagged;
}

void ImapClient::StatusResponse(const std::string& status) {
  ImapReader& r = *reader_;
  last_text_.clear();
  if (r.Accept(' ')) {
    while (r.Accept(' ')) {
    }
    if (r.Peek() == '[') last_text_ = ResponseCode() + " ";
    last_text_ += r.Text();
    while (!last_text_.empty() && last_text_.back() == ' ') last_text_.pop_back();
  } else {
    r.EndOfLine("after a status");
  }
  if (status == "BYE") r.set_bye(last_text_);
}

std::string ImapClient::ResponseCode() {
  ImapReader& r = *reader_;
  r.Expect('[', "at a response code");
  const std::string code = Upper(r.Atom("a response code"));
  std::string args;
  if (r.Accept(' ')) {
    for (;;) {
      const int c = r.Peek();
      if (c == ']') break;
      if (c == '\r' || c == '\n') r.Fail("unterminated response code [" + ShownText(code) + "]");
      args.push_back(r.Next());
    }
  }
  r.Expect(']', "at the end of a response code");
  r.Accept(' ');
  auto number = [&] {
    uint64_t v = 0;
    bool ok = !args.empty() && args.size() <= 10;
    for (char c : args) ok = ok && c >= '0' && c <= '9' && (v = v * 10 + uint64_t(c - '0'), true);
    if (!ok || v > std::numeric_limits<uint32_t>::max())
      r.Fail("bad number in response code [" + code + " " + ShownText(args) + "]");
    return static_cast<uint32_t>(v);
  };
  if (code == "UIDVALIDITY") {
    status_.uidvalidity = number();
  } else if (code == "UIDNEXT") {
    status_.uidnext = number();
  } else if (code == "CAPABILITY") {
    caps_.clear();
    for (size_t i = 0; i < args.size();) {
      const size_t sp = std::min(args.find(' ', i), args.size());
      if (sp > i) caps_.insert(Upper(args.substr(i, sp - i)));
      i = sp + 1;
    }
    caps_known_ = true;
  }
  return "[" + code + (args.empty() ? "" : " " + args) + "]";
}

void ImapClient::Untagged() {
  ImapReader& r = *reader_;
  const std::string first = Upper(r.Atom("an untagged response"));
  if (first[0] >= '0' && first[0] <= '9') {
    uint64_t n = 0;
    for (char c : first) {
      if (c < '0' || c > '9' || n > std::numeric_limits<uint32_t>::max())
        r.Fail("bad message number '" + ShownText(first) + "'");
      n = n * 10 + uint64_t(c - '0');
    }
    if (n > std::numeric_limits<uint32_t>::max()) r.Fail("bad message number '" + ShownText(first) + "'");
    r.Space("after a message number");
    const std::string what = Upper(r.Atom("an untagged response"));
    if (what == "EXISTS") {
      status_.exists = static_cast<uint32_t>(n);
      status_.exists_sent = true;
      r.EndOfLine("after EXISTS");
    } else if (what == "FETCH") {
      r.Space("after FETCH");
      Fetch();
    } else if (what == "EXPUNGE") {
      if (status_.exists > 0) --status_.exists;
      ++status_.expunges;
      r.EndOfLine("after EXPUNGE");
    } else {
      r.SkipLine();  // RECENT and extensions: nothing this client needs
    }
    return;
  }
  if (first == "OK" || first == "NO" || first == "BAD" || first == "BYE" || first == "PREAUTH") {
    StatusResponse(first);
  } else if (first == "CAPABILITY") {
    caps_.clear();
    while (r.Peek() == ' ') {
      r.Space("in CAPABILITY");
      if (r.Peek() == '\r' || r.Peek() == '\n') break;
      caps_.insert(Upper(r.Atom("a capability")));
    }
    r.EndOfLine("after CAPABILITY");
    caps_known_ = true;
  } else if ((first == "LIST" || first == "LSUB") && folders_ != nullptr) {
    ListLine(first == "LSUB");
  } else {
    r.SkipLine();  // FLAGS, SEARCH, STATUS, ENABLED, ID, NAMESPACE, ...
  }
}

void ImapClient::ListLine(bool lsub) {
  ImapReader& r = *reader_;
  r.Space("after LIST");
  r.Expect('(', "at LIST attributes");
  bool selectable = true;
  for (;;) {
    while (r.Accept(' ')) {
    }
    if (r.Accept(')')) break;
    const std::string attribute = Upper(r.Atom("a mailbox attribute"));
    if (attribute == "\\NOSELECT" || attribute == "\\NONEXISTENT") selectable = false;
  }
  r.Space("after LIST attributes");
  char delimiter = 0;
  if (const std::optional<std::string> d = r.NString("the LIST delimiter")) {
    if (d->size() != 1) r.Fail("LIST delimiter '" + ShownText(*d) + "' is not one character");
    delimiter = (*d)[0];
  }
  r.Space("after the LIST delimiter");
  std::string name = r.AString("a mailbox name");
  if (r.Peek() == ' ') {
    r.SkipLine();  // LIST-EXTENDED data
  } else {
    r.EndOfLine("after a mailbox name");
  }
  // Progress is a folder not listed before (or a subscription not marked before): a server that
  // repeats its entries for ever is no progress, and the command fails after --timeout
  // (helper-51: it kept moveuser silent past the timeout).
  std::vector<ImapFolder>& folders = *folders_;
  if (lsub) {
    if (auto it = folder_index_.find(name); it != folder_index_.end() && !folders[it->second].subscribed) {
      folders[it->second].subscribed = true;
      progress_ = true;
    }
    return;
  }
  if (folder_index_.count(name)) return;  // listed twice
  folder_name_bytes_ += name.size();
  if (folders.size() >= kMaxFolders || folder_name_bytes_ > kMaxFolderNameBytes)
    Throw(Errc::kProtocol, shown_ + ": LIST: more than " + std::to_string(kMaxFolders) + " folders or " +
                               std::to_string(kMaxFolderNameBytes >> 20) + " MiB of folder names (a server repeating "
                               "or inventing entries)");
  progress_ = true;
  ImapFolder f;
  std::optional<std::string> path = TryDecodeModifiedUtf7(name);
  // The server's own name, which no retry changes (raw UTF-8, broken modified UTF-7): the user
  // fails for good, not as a temporary failure a retry loop would repeat (helper-51).
  if (!path)
    Throw(Errc::kInvalidArgument, shown_ + ": LIST: mailbox name '" + ShownText(name) + "' is not modified UTF-7");
  f.path = std::move(*path);
  if (delimiter != 0 && delimiter != '/') std::replace(f.path.begin(), f.path.end(), delimiter, '/');
  // INBOX is case-insensitive (RFC 3501 §5.1): one spelling for the store.
  if (f.path.size() >= 5 && Upper(f.path.substr(0, 5)) == "INBOX" && (f.path.size() == 5 || f.path[5] == '/'))
    f.path.replace(0, 5, "INBOX");
  f.name = std::move(name);
  f.delimiter = delimiter;
  f.selectable = selectable;
  folder_index_[f.name] = folders.size();
  folders.push_back(std::move(f));
}

void ImapClient::Fetch() {
  ImapReader& r = *reader_;
  r.Expect('(', "at the start of FETCH data");
  ImapMessage m;
  bool has_uid = false, had_body = false;
  uint64_t body_size = 0;
  while (r.Accept(' ')) {
  }
  while (!r.Accept(')')) {
    // The item name, with its [section] and <origin> when it has them.
    std::string item;
    for (;;) {
      const int c = r.Peek();
      if (c < 0 || c == ' ' || c == '(' || c == ')' || c == '\r' || c == '\n') break;
      item.push_back(r.Next());
      if (c == '[') {
        while (r.Peek() != ']') {
          if (r.Peek() == '\r' || r.Peek() == '\n') r.Fail("unterminated '[' in a FETCH item name");
          item.push_back(r.Next());
        }
        item.push_back(r.Next());
      }
    }
    if (item.empty()) r.Fail("expected a FETCH item name");
    item = Upper(std::move(item));
    r.Space("after a FETCH item name");
    // An item twice with another value: a second UID in the response of a body would file it
    // under the other message (helper-112: two messages' bytes swapped, exit 0), a second FLAGS or
    // size would replace the first. The same value again is harmless.
    std::optional<ImapMessage> before;
    if ((item == "UID" && has_uid) || (item == "FLAGS" && m.has_flags) || (item == "INTERNALDATE" && m.has_date) ||
        (item == "RFC822.SIZE" && m.has_size))
      before = m;
    if (item == "UID") {
      m.uid = static_cast<uint32_t>(r.Number("a UID", std::numeric_limits<uint32_t>::max()));
      if (m.uid == 0) r.Fail("UID 0 in a FETCH response (UIDs start at 1)");
      has_uid = true;
    } else if (item == "FLAGS") {
      r.Expect('(', "at FLAGS");
      m.flags.clear();
      m.has_flags = true;
      for (;;) {
        while (r.Accept(' ')) {
        }
        if (r.Accept(')')) break;
        // Bounded: a listing keeps every message's flags until the folder is done.
        if (m.flags.size() == kMaxFlags) r.Fail("more than " + std::to_string(kMaxFlags) + " flags on one message");
        m.flags.push_back(r.Atom("a flag"));
      }
    } else if (item == "INTERNALDATE") {
      if (const std::optional<std::string> date = r.NString("INTERNALDATE")) {
        int64_t v = 0;
        try {
          v = ParseImapDate(*date);
        } catch (const Error& e) {
          r.Fail(e.what());
        }
        m.internal_date = v;
        m.has_date = true;
      }
    } else if (item == "RFC822.SIZE") {
      m.size = r.Number("RFC822.SIZE", std::numeric_limits<int64_t>::max());
      m.has_size = true;
    } else if (item.starts_with("BODY[]<")) {
      // Only the whole body is asked for: a part of it stored as the message would be an altered one.
      r.Fail("a partial body (" + ShownText(item) + ") where the whole BODY[] was asked for");
    } else if (item == "BODY[]") {
      if (had_body) r.Fail("two BODY[] items in one FETCH response");
      if (sink_ == nullptr) {
        r.SkipValue(1);
      } else if (r.Peek() == '{') {
        const uint64_t n = r.LiteralHeader("BODY[]");
        sink_->BodyBegin(n);
        r.Literal(n, [&](const char* p, size_t k) { sink_->BodyData(p, k); });
        had_body = true;
        body_size = n;
      } else if (r.Peek() == '"') {
        const std::string body = r.Quoted("BODY[]");
        sink_->BodyBegin(body.size());
        sink_->BodyData(body.data(), body.size());
        had_body = true;
        body_size = body.size();
      } else {
        r.NString("BODY[]");  // NIL: the server has no body for it
        m.nil_body = true;
      }
    } else {
      r.SkipValue(1);  // MODSEQ, ENVELOPE, ...: not asked for, not needed
    }
    if (before && (before->uid != m.uid || before->flags != m.flags || before->internal_date != m.internal_date ||
                   before->size != m.size))
      r.Fail(item + " twice in one FETCH response, with another value");
    if (r.Peek() == ')') continue;
    r.Space("between FETCH items");
  }
  r.EndOfLine("after FETCH data");
  progress_ = false;  // an unsolicited flag update is not the command's progress
  if (!has_uid) {
    if (had_body) r.Fail("FETCH response with BODY[] but no UID");
    return;  // an unsolicited flag update
  }
  // RFC822.SIZE is the size of the message's bytes, BODY[] those bytes: a body of another length
  // was cut short or padded on the way, or the server (Exchange) reports sizes inexact. Refused
  // unless allowed, as imapsync does (its --allowsizemismatch).
  if (had_body && m.has_size && body_size != m.size && !size_mismatch_allowed_)
    r.Fail("UID " + std::to_string(m.uid) + ": BODY[] has " + std::to_string(body_size) + " bytes where RFC822.SIZE says " +
           std::to_string(m.size) + " (a server reporting sizes inexact, as Exchange does: --allow-size-mismatch)");
  progress_ = sink_ == nullptr || sink_->Message(m, had_body);
}

// --- commands ---------------------------------------------------------------------------------

void ImapClient::ReadGreeting() {
  ImapReader& r = *reader_;
  // A response like any other: a greeting trickled a byte every 4 s was taken after 256 s,
  // with --timeout 5 (helper-159).
  r.BeginResponse(progress_timeout_seconds_);
  try {
    r.Expect('*', "before the greeting");
  } catch (const Error& e) {  // a server that accepts and says nothing: named, as a command is
    if (std::string(e.what()).starts_with(shown_)) throw;
    Throw(e.code(), shown_ + ": waiting for the greeting: " + e.what());
  }
  r.Space("after '*'");
  const std::string status = Upper(r.Atom("the greeting"));
  if (status != "OK" && status != "PREAUTH" && status != "BYE")
    r.Fail("expected a greeting (* OK, * PREAUTH or * BYE), got '" + ShownText(status) + "'");
  StatusResponse(status);
  if (status == "BYE") Throw(Errc::kTempFail, shown_ + ": server refused the connection: BYE " + ShownText(last_text_));
  preauthenticated_ = status == "PREAUTH";
  greeting_text_ = last_text_;
}

std::set<std::string> ImapClient::Capabilities() {
  if (!caps_known_) {
    Check(Wait(Start({"CAPABILITY"}, "CAPABILITY")), "CAPABILITY");
    if (!caps_known_) Throw(Errc::kProtocol, shown_ + ": no CAPABILITY in the response to CAPABILITY");
  }
  return caps_;
}

bool ImapClient::HasCapability(std::string_view cap) {
  Capabilities();
  return caps_.count(Upper(std::string(cap))) > 0;
}

void ImapClient::StartTls() {
  if (!HasCapability("STARTTLS")) Throw(Errc::kAuth, shown_ + ": server does not offer STARTTLS");
  const Tagged t = Wait(Start({"STARTTLS"}, "STARTTLS"));
  if (t.status != "OK") Refused(Errc::kAuth, "STARTTLS", t);
  // Bytes after the OK arrived in plaintext and would be read as if from inside TLS (the
  // STARTTLS command injection of CVE-2011-0411, server side): refuse them.
  if (reader_->Buffered()) reader_->Fail("data after the STARTTLS response, before TLS");
  channel_.StartTls();
  caps_.clear();  // what was said in plaintext is not to be trusted (RFC 3501 §6.2.1)
  caps_known_ = false;
}

void ImapClient::Authenticate(const std::string& authzid, const std::string& authcid, const std::string& password,
                              const std::string& who) {
  std::string raw = authzid;
  raw.push_back('\0');
  raw += authcid;
  raw.push_back('\0');
  raw += password;
  std::vector<std::string> segments;
  if (HasCapability("SASL-IR")) {
    segments = {"AUTHENTICATE PLAIN " + Base64(raw)};
  } else {
    segments = {"AUTHENTICATE PLAIN\r\n", Base64(raw)};
  }
  caps_.clear();
  caps_known_ = false;
  const Tagged t = Wait(Start(segments, "AUTHENTICATE"));
  if (t.status == "NO") Refused(LoginRefusal(t), who, t);
  if (t.status != "OK") Refused(Errc::kProtocol, who, t);
}

void ImapClient::Login(const std::string& user, const std::string& password) {
  const std::string who = "login as '" + ShownText(user) + "'";
  if (HasCapability("AUTH=PLAIN")) return Authenticate("", user, password, who);
  if (HasCapability("LOGINDISABLED"))
    Throw(Errc::kAuth, shown_ + ": cannot log in as '" + ShownText(user) +
                           "': the server disables LOGIN (LOGINDISABLED) and offers no AUTH=PLAIN");
  std::vector<std::string> segments = {"LOGIN "};
  AppendString(&segments, user);
  segments.back() += " ";
  AppendString(&segments, password);
  caps_.clear();
  caps_known_ = false;
  const Tagged t = Wait(Start(segments, "LOGIN"));
  if (t.status == "NO") Refused(LoginRefusal(t), who, t);
  if (t.status != "OK") Refused(Errc::kProtocol, who, t);
}

void ImapClient::LoginAs(const std::string& user, const std::string& admin, const std::string& admin_password) {
  const std::string who = "login of '" + ShownText(admin) + "' as '" + ShownText(user) + "'";
  if (!HasCapability("AUTH=PLAIN"))
    Throw(Errc::kAuth, shown_ + ": " + who + " needs AUTH=PLAIN, which the server does not offer");
  Authenticate(user, admin, admin_password, who);
}

std::vector<ImapFolder> ImapClient::ListFolders() {
  std::vector<ImapFolder> folders;
  folder_index_.clear();
  folder_name_bytes_ = 0;
  Collect<std::vector<ImapFolder>> collect(folders_, &folders);
  Check(Wait(Start({"LIST \"\" \"*\""}, "LIST")), "LIST \"\" \"*\"");
  Check(Wait(Start({"LSUB \"\" \"*\""}, "LSUB")), "LSUB \"\" \"*\"");
  folder_index_.clear();
  return folders;
}

std::optional<ImapFolder> ImapClient::ListOne(const std::string& name) {
  std::vector<ImapFolder> folders;
  folder_index_.clear();
  folder_name_bytes_ = 0;
  Collect<std::vector<ImapFolder>> collect(folders_, &folders);
  std::vector<std::string> segments = {"LIST \"\" "};
  AppendString(&segments, name);
  Check(Wait(Start(segments, "LIST")), "LIST '" + ShownText(name) + "'");
  folder_index_.clear();
  // '*' and '%' in the name are wildcards: only the exact name counts.
  for (ImapFolder& f : folders)
    if (f.name == name) return std::move(f);
  return std::nullopt;
}

ImapMailboxStatus ImapClient::Examine(const std::string& name) {
  std::vector<std::string> segments = {"EXAMINE "};
  AppendString(&segments, name);
  status_ = ImapMailboxStatus{};
  const Tagged t = Wait(Start(segments, "EXAMINE"));
  const std::string what = "EXAMINE '" + ShownText(name) + "'";
  if (t.status == "NO") Refused(Errc::kNotFound, what, t);
  Check(t, what);
  if (status_.uidvalidity == 0) Throw(Errc::kProtocol, shown_ + ": no UIDVALIDITY in the response to " + what);
  // Without it the folder would look empty and be copied so.
  if (!status_.exists_sent) Throw(Errc::kProtocol, shown_ + ": no EXISTS in the response to " + what);
  return status_;
}

void ImapClient::FetchMeta(uint32_t first_uid, ImapFetchSink& sink) {
  Collect<ImapFetchSink> collect(sink_, &sink);
  Check(Wait(Start({"UID FETCH " + std::to_string(first_uid) + ":* (UID FLAGS INTERNALDATE RFC822.SIZE)"},
                   "UID FETCH")),
        "UID FETCH");
}

void ImapClient::FetchBodies(const std::vector<uint32_t>& uids, ImapFetchSink& sink) {
  std::vector<uint32_t> sorted = uids;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  // Compact sets (1:500,502), each of at most kFetchUids UIDs and about kFetchSetChars characters.
  std::vector<std::string> sets;
  std::string set;
  size_t count = 0;
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1 && count + (j + 1 - i) < kFetchUids) ++j;
    if (!set.empty()) set.push_back(',');
    set += std::to_string(sorted[i]);
    if (j > i) set += ":" + std::to_string(sorted[j]);
    count += j - i + 1;
    i = j + 1;
    if (count >= kFetchUids || set.size() + 22 > kFetchSetChars || i == sorted.size()) {
      sets.push_back(std::move(set));
      set.clear();
      count = 0;
    }
  }
  Collect<ImapFetchSink> collect(sink_, &sink);
  std::deque<std::string> tags;
  for (size_t next = 0; next < sets.size() || !tags.empty();) {
    while (tags.size() < kFetchInFlight && next < sets.size())
      tags.push_back(Start({"UID FETCH " + sets[next++] + " (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])"},
                           "UID FETCH"));
    const Tagged t = Wait(tags.front());
    tags.pop_front();
    Check(t, "UID FETCH");
  }
}

void ImapClient::FetchAll(ImapFetchSink& sink) {
  Collect<ImapFetchSink> collect(sink_, &sink);
  Check(Wait(Start({"UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])"}, "UID FETCH")), "UID FETCH");
}

void ImapClient::Logout() {
  try {
    Wait(Start({"LOGOUT"}, "LOGOUT"));
  } catch (const Error&) {
    // The server closed first, or said BYE and closed before its OK: the session is over either way.
  }
}

}  // namespace storemove::interop
