// The streaming tokenizer under interop::ImapClient: bytes of an IMAP server's responses read in
// large blocks from an ImapChannel and taken apart one token at a time (atoms, numbers, quoted
// strings with escapes, literals {n} and {n+}, NIL, lists), so no response is ever held whole.
// Literals can be streamed out in slices of the read buffer (message bodies) or skipped.
// Limits (a hostile or broken server must not make the client allocate without bound): lines over
// 1 MiB outside literals, literals over 4 GiB, stored strings over 1 MiB, nesting deeper than 64.
// Errors: kProtocol "<shown>: what at byte N" (N counts the server's bytes); when the server said
// BYE and then closed, kTempFail naming its text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace storemove::interop {

class ImapChannel;

class ImapReader {
 public:
  static constexpr size_t kBufferSize = 256 << 10;  // reads of up to this much: few syscalls per body
  static constexpr size_t kMaxLine = 1 << 20;
  static constexpr uint64_t kMaxLiteral = uint64_t(4) << 30;
  static constexpr size_t kMaxString = 1 << 20;
  static constexpr int kMaxDepth = 64;

  ImapReader(ImapChannel& channel, const std::string& shown);

  int Peek() {  // the next byte, or -1 when the server closed
    if (pos_ == end_ && !Fill()) return -1;
    return static_cast<unsigned char>(buf_[pos_]);
  }
  char Next();                         // consumes one byte of a line; closed -> error
  void Expect(char c, const char* where);
  bool Accept(char c);                 // consumes c if it is next
  void Space(const char* where);       // one or more SP
  void EndOfLine(const char* where);   // CRLF (a bare LF is accepted)
  // 1+ bytes up to SP ( ) " CR LF, and ']' unless `bracket` (an astring may hold ']', RFC 3501
  // ASTRING-CHAR; a flag, a code or a tag may not).
  std::string Atom(const char* what, bool bracket = false);
  uint64_t Number(const char* what, uint64_t max);
  std::string Text();                  // the rest of the line, then its CRLF
  // astring / nstring / string: atom (astring only), NIL (nstring only), "quoted" or {n} literal.
  std::string AString(const char* what);
  std::optional<std::string> NString(const char* what);
  std::string Quoted(const char* what);  // after the opening '"' was seen (not consumed)
  uint64_t LiteralHeader(const char* what);  // "{n}" or "{n+}" then CRLF; n checked
  // Hands the next n bytes (a literal's contents) to f(const char*, size_t) in slices of the
  // read buffer.
  template <class F>
  void Literal(uint64_t n, F&& f) {
    uint64_t left = n;
    while (left > 0) {
      if (pos_ == end_ && !Fill()) ClosedInLiteral(n - left, n);
      const size_t k = left < end_ - pos_ ? size_t(left) : end_ - pos_;
      f(buf_.data() + pos_, k);
      pos_ += k;
      left -= k;
    }
  }
  void SkipValue(int depth);  // any value: list, string, literal, NIL, atom/number
  void SkipLine();            // the rest of an unknown response, literals and lists included

  [[noreturn]] void Fail(const std::string& what) const;
  bool Buffered() const { return pos_ != end_; }
  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t offset() const { return bytes_in_ - (end_ - pos_); }
  // A response must keep a pace once its first byte is in: at most `grace_seconds` plus a second
  // for every kMinPace bytes it has brought, or kTempFail. The read timeout bounds silence only,
  // and a server trickling one byte every few seconds would otherwise hold a body for days.
  // 0: no limit. Called before each response.
  void BeginResponse(int grace_seconds);
  static constexpr uint64_t kMinPace = 1024;  // bytes a second
  // The text of an untagged BYE: a close that follows is the server's decision, not a broken stream.
  void set_bye(std::string text) { bye_ = std::move(text); }
  bool said_bye() const { return bye_.has_value(); }
  const std::string& bye_text() const { return *bye_; }  // when said_bye()

 private:
  bool Fill();
  static std::string Shown(char c);
  [[noreturn]] void Closed(const std::string& where) const;
  [[noreturn]] void ClosedInLiteral(uint64_t got, uint64_t size) const;

  ImapChannel& channel_;
  const std::string& shown_;
  std::vector<char> buf_;
  size_t pos_ = 0, end_ = 0;
  uint64_t bytes_in_ = 0;
  size_t line_ = 0;  // bytes of the current line so far, literals not counted
  bool eof_ = false;
  std::optional<std::string> bye_;
  int64_t pace_grace_ms_ = 0;         // 0: the response's pace is not checked
  bool response_started_ = false;     // its first byte is in
  int64_t response_start_ms_ = 0;
  uint64_t response_start_offset_ = 0;
};

// Milliseconds of the monotonic clock: the client's timeouts and the reader's pace.
int64_t SteadyMs();

// The server's text for an error message: at most 200 bytes, non-printable bytes as \xNN.
std::string ShownText(std::string_view text);

}  // namespace storemove::interop
