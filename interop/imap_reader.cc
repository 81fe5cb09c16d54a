#include "interop/imap_reader.h"

#include <chrono>

#include "interop/imap_client.h"
#include "util/error.h"

namespace storemove::interop {

std::string ShownText(std::string_view text) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : text.substr(0, 200)) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  if (text.size() > 200) out += "...";
  return out;
}

// A byte of the stream for an error message: 'x', '\x01', or "end of line".
std::string ImapReader::Shown(char c) {
  if (c == '\r' || c == '\n') return "end of line";
  return "'" + ShownText(std::string(1, c)) + "'";
}

ImapReader::ImapReader(ImapChannel& channel, const std::string& shown)
    : channel_(channel), shown_(shown), buf_(kBufferSize) {}

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void ImapReader::BeginResponse(int grace_seconds) {
  pace_grace_ms_ = int64_t{grace_seconds} * 1000;
  response_started_ = pace_grace_ms_ > 0 && Buffered();  // else from the first byte the next read brings
  if (response_started_) {
    response_start_ms_ = SteadyMs();
    response_start_offset_ = offset();
  }
}

bool ImapReader::Fill() {
  if (eof_) return false;
  if (response_started_) {
    const int64_t elapsed = SteadyMs() - response_start_ms_;
    const uint64_t got = bytes_in_ - response_start_offset_;
    if (elapsed > pace_grace_ms_ + int64_t(got * 1000 / kMinPace))
      Throw(Errc::kTempFail, shown_ + ": one response has brought " + std::to_string(got) + " bytes in " +
                                 std::to_string(elapsed / 1000) + " s, slower than " + std::to_string(kMinPace) +
                                 " bytes a second after the first " + std::to_string(pace_grace_ms_ / 1000) +
                                 " s (a server trickling its answer), at byte " + std::to_string(bytes_in_));
  }
  pos_ = end_ = 0;
  const size_t n = channel_.Read(buf_.data(), buf_.size());
  if (n == 0) {
    eof_ = true;
    return false;
  }
  if (pace_grace_ms_ > 0 && !response_started_) {
    response_started_ = true;
    response_start_ms_ = SteadyMs();
    response_start_offset_ = bytes_in_;
  }
  end_ = n;
  bytes_in_ += n;
  return true;
}

void ImapReader::Fail(const std::string& what) const {
  Throw(Errc::kProtocol, shown_ + ": " + what + " at byte " + std::to_string(offset()));
}

void ImapReader::Closed(const std::string& where) const {
  if (bye_)
    Throw(Errc::kTempFail, shown_ + ": server said BYE (" + ShownText(*bye_) + ") and closed the connection");
  // A dropped connection is no fault in what the server sent: a rerun may get past it (kTempFail),
  // where a reply that breaks the grammar recurs every run (kProtocol, Fail).
  Throw(Errc::kTempFail, shown_ + ": connection closed by the server " + where + " at byte " + std::to_string(offset()));
}

void ImapReader::ClosedInLiteral(uint64_t got, uint64_t size) const {
  if (bye_) Closed("");
  Throw(Errc::kTempFail, shown_ + ": connection closed by the server in a literal after " + std::to_string(got) +
                             " of " + std::to_string(size) + " bytes at byte " + std::to_string(offset()));
}

char ImapReader::Next() {
  if (pos_ == end_ && !Fill()) Closed("in the middle of a response");
  const char c = buf_[pos_++];
  if (c == '\n') {
    line_ = 0;
  } else if (++line_ > kMaxLine) {
    Fail("response line longer than 1 MiB");
  }
  return c;
}

bool ImapReader::Accept(char c) {
  if (Peek() != static_cast<unsigned char>(c)) return false;
  Next();
  return true;
}

void ImapReader::Expect(char c, const char* where) {
  const int got = Peek();
  if (got == static_cast<unsigned char>(c)) {
    Next();
    return;
  }
  if (got < 0) Closed(where);
  Fail("expected " + Shown(c) + " " + where + ", got " + Shown(char(got)));
}

void ImapReader::Space(const char* where) {
  Expect(' ', where);
  while (Accept(' ')) {
  }
}

void ImapReader::EndOfLine(const char* where) {
  while (Accept(' ')) {  // trailing blanks some servers leave
  }
  Accept('\r');
  Expect('\n', where);
}

std::string ImapReader::Atom(const char* what, bool bracket) {
  std::string out;
  for (;;) {
    const int c = Peek();
    if (c < 0) Closed(std::string("in ") + what);
    if (c == ' ' || c == '(' || c == ')' || c == '"' || (c == ']' && !bracket) || c == '\r' || c == '\n') break;
    if (c < 0x20 || c == 0x7f) Fail(std::string("control character in ") + what);
    out.push_back(Next());
  }
  if (out.empty()) {
    const int c = Peek();
    Fail(std::string("expected ") + what + ", got " + Shown(char(c)));
  }
  return out;
}

uint64_t ImapReader::Number(const char* what, uint64_t max) {
  const std::string atom = Atom(what);
  uint64_t v = 0;
  for (char c : atom) {
    if (c < '0' || c > '9') Fail(std::string("expected ") + what + ", got '" + ShownText(atom) + "'");
    if (v > (max - uint64_t(c - '0')) / 10) Fail(std::string(what) + " " + ShownText(atom) + " out of range");
    v = v * 10 + uint64_t(c - '0');
  }
  return v;
}

std::string ImapReader::Text() {
  std::string out;
  for (;;) {
    const char c = Next();
    if (c == '\n') break;
    out.push_back(c);
  }
  if (!out.empty() && out.back() == '\r') out.pop_back();
  return out;
}

std::string ImapReader::Quoted(const char* what) {
  Expect('"', what);
  std::string out;
  for (;;) {
    const int c = Peek();
    if (c < 0) Closed(std::string("in ") + what);
    if (c == '\r' || c == '\n') Fail(std::string("unterminated quoted string in ") + what);
    Next();
    if (c == '"') return out;
    if (c == '\\') {
      const int e = Peek();
      if (e == '\r' || e == '\n') Fail(std::string("unterminated quoted string in ") + what);
      out.push_back(Next());
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
}

uint64_t ImapReader::LiteralHeader(const char* what) {
  Expect('{', what);
  uint64_t n = 0;
  size_t digits = 0;
  for (; Peek() >= '0' && Peek() <= '9'; ++digits) {
    const char c = Next();
    if (digits >= 12) Fail(std::string("literal size in ") + what + " over 4 GiB");
    n = n * 10 + uint64_t(c - '0');
  }
  if (digits == 0 && Peek() < 0) Closed(std::string("in a literal size in ") + what);  // a drop, no bad reply
  if (digits == 0) Fail(std::string("bad literal size in ") + what);
  if (n > kMaxLiteral) Fail("literal of " + std::to_string(n) + " bytes in " + what + " is over 4 GiB");
  Accept('+');
  Expect('}', "after a literal size");
  Accept('\r');
  Expect('\n', "after a literal size");
  return n;
}

std::string ImapReader::AString(const char* what) {
  const int c = Peek();
  if (c == '"') return Quoted(what);
  if (c == '{') {
    const uint64_t n = LiteralHeader(what);
    if (n > kMaxString) Fail("literal of " + std::to_string(n) + " bytes in " + what + " is over 1 MiB");
    std::string out;
    out.reserve(size_t(n));
    Literal(n, [&](const char* p, size_t k) { out.append(p, k); });
    return out;
  }
  return Atom(what, true);
}

std::optional<std::string> ImapReader::NString(const char* what) {
  const int c = Peek();
  if (c != '"' && c != '{') {
    const std::string atom = Atom(what);
    if (atom.size() == 3 && (atom[0] | 0x20) == 'n' && (atom[1] | 0x20) == 'i' && (atom[2] | 0x20) == 'l')
      return std::nullopt;
    Fail(std::string("expected a string or NIL as ") + what + ", got '" + ShownText(atom) + "'");
  }
  return AString(what);
}

void ImapReader::SkipValue(int depth) {
  const int c = Peek();
  if (c == '(') {
    if (depth >= kMaxDepth) Fail("lists nested deeper than 64");
    Next();
    while (Peek() == ' ') Next();
    while (!Accept(')')) {
      SkipValue(depth + 1);
      if (Peek() == ')') continue;
      Space("between list items");
    }
  } else if (c == '"') {
    Quoted("a string");
  } else if (c == '{') {
    Literal(LiteralHeader("a literal"), [](const char*, size_t) {});
  } else {
    // An atom, possibly with a [section] carrying spaces and lists (BODY[HEADER.FIELDS (A B)]).
    for (;;) {
      const int d = Peek();
      if (d < 0) Closed("in a value");
      if (d == ' ' || d == '(' || d == ')' || d == '"' || d == '\r' || d == '\n') break;
      Next();
      if (d == '[') {
        while (Peek() != ']') {
          if (Peek() == '\r' || Peek() == '\n') Fail("unterminated '[' in a value");
          Next();
        }
        Next();
      }
    }
  }
}

void ImapReader::SkipLine() {
  int depth = 0;
  for (;;) {
    const int c = Peek();
    if (c < 0) Closed("in the middle of a response");
    if (c == '\n') {
      Next();
      return;
    }
    if (c == '"') {
      Quoted("a string");
    } else if (c == '{') {
      // A literal only when "{n}" or "{n+}" ends the line; otherwise just text.
      Next();
      uint64_t n = 0;
      size_t digits = 0;
      while (Peek() >= '0' && Peek() <= '9' && digits < 12) {
        n = n * 10 + uint64_t(Next() - '0');
        ++digits;
      }
      if (digits == 0) continue;
      Accept('+');
      if (!Accept('}')) continue;
      Accept('\r');
      if (!Accept('\n')) continue;
      if (n > kMaxLiteral) Fail("literal of " + std::to_string(n) + " bytes is over 4 GiB");
      line_ = 0;
      Literal(n, [](const char*, size_t) {});
    } else if (c == '(') {
      if (++depth > kMaxDepth) Fail("lists nested deeper than 64");
      Next();
    } else {
      if (c == ')' && depth > 0) --depth;
      Next();
    }
  }
}

}  // namespace storemove::interop
