// mbox reading and writing; the rules are in interop/mbox.h.
#include "interop/mbox.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "store/store.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::interop {

using store::HeaderSize;
using store::SentDate;

namespace {

constexpr std::string_view kFrom = "From ";
constexpr std::string_view kNoFinalNewline = "no-final-newline";
constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";  // some editors save mbox files with one

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view TrimBlanks(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

// Length of the empty line that ends a message's stretch of the file (0 if none), from the
// stretch's last bytes (at least three when it is that long) and its length.
size_t SeparatorLen(std::string_view tail, uint64_t length) {
  if (tail.ends_with("\n\n") || (length == 1 && tail == "\n")) return 1;
  if (tail.ends_with("\n\r\n") || (length == 2 && tail == "\r\n")) return 2;
  return 0;
}

size_t SeparatorLen(std::string_view stretch) {
  return SeparatorLen(stretch.substr(stretch.size() - std::min<size_t>(3, stretch.size())), stretch.size());
}

// Whether HeaderSize(stretch) would find the header's blank line in these first bytes of a
// stretch; the bytes before `searched` (less two) were looked at before.
bool HeaderEnds(std::string_view first_bytes, size_t searched) {
  if (first_bytes.starts_with("\n") || first_bytes.starts_with("\r\n")) return true;
  const size_t from = searched >= 2 ? searched - 2 : 0;
  return first_bytes.find("\n\n", from) != std::string_view::npos ||
         first_bytes.find("\n\r\n", from) != std::string_view::npos;
}

// The header of a message's stretch of the file, when it ends inside the stretch and is not
// longer than kMaxLengthHeader; else empty.
std::string_view HeaderOf(std::string_view stretch) {
  const std::string_view header = stretch.substr(0, HeaderSize(stretch));
  if (SeparatorLen(header) == 0 || header.size() > kMaxLengthHeader) return {};
  return header;
}

// The value of the header's first field named `lower_name` (lower case), blanks trimmed.
std::optional<std::string_view> FieldValue(std::string_view header, std::string_view lower_name) {
  size_t pos = 0;
  while (pos < header.size()) {
    size_t eol = header.find('\n', pos);
    if (eol == std::string_view::npos) eol = header.size();
    std::string_view line = header.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.size() <= lower_name.size()) continue;
    bool match = true;
    for (size_t i = 0; i < lower_name.size() && match; ++i) {
      const char c = line[i];
      match = (c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) == lower_name[i];
    }
    if (!match) continue;
    std::string_view rest = TrimBlanks(line.substr(lower_name.size()));
    if (rest.empty() || rest[0] != ':') continue;
    return TrimBlanks(rest.substr(1));
  }
  return std::nullopt;
}

// Whether the header has the fields Dovecot writes into each message of an mbox it keeps (and
// UW-IMAP, which writes no Content-Length). Dovecot quotes no "From " line: its Content-Length
// delimits the message (helper-133: its ">From" lines lost a '>' when read as mboxrd).
bool HasImapServerFields(std::string_view header) {
  return FieldValue(header, "x-uid") || FieldValue(header, "x-imapbase") || FieldValue(header, "x-imap");
}

// Offset from the stretch's start where its Content-Length says the message ends: header size +
// the value. nullopt when the header does not end inside the stretch or has no usable value.
std::optional<uint64_t> ContentLengthEnd(std::string_view stretch) {
  const std::string_view header = HeaderOf(stretch);
  if (header.empty()) return std::nullopt;
  if (const auto digits = FieldValue(header, "content-length")) {
    // The first Content-Length field decides; 15 digits are far beyond any file and cannot overflow.
    if (digits->empty() || digits->size() > 15) return std::nullopt;
    uint64_t value = 0;
    for (char c : *digits) {
      if (c < '0' || c > '9') return std::nullopt;
      value = value * 10 + static_cast<uint64_t>(c - '0');
    }
    return header.size() + value;
  }
  return std::nullopt;
}

// Number of '>' that start the line at `line` when they are followed by "From ", else -1.
int QuotedFromDepth(std::string_view text, size_t line) {
  size_t k = line;
  while (k < text.size() && text[k] == '>') ++k;
  return text.substr(k).starts_with(kFrom) ? static_cast<int>(k - line) : -1;
}

// mboxrd quoting: one more '>' in front of every /^>*From / line.
void Escape(std::string_view in, std::string* out) {
  size_t copied = 0;
  for (size_t line = 0; line < in.size();) {
    if ((in[line] == '>' || in[line] == 'F') && QuotedFromDepth(in, line) >= 0) {
      out->append(in.data() + copied, line - copied);
      out->push_back('>');
      copied = line;
    }
    const size_t nl = in.find('\n', line);
    if (nl == std::string_view::npos) break;
    line = nl + 1;
  }
  out->append(in.data() + copied, in.size() - copied);
}

void Unescape(std::string_view in, MboxFlavor flavor, std::string* out) {
  if (flavor == MboxFlavor::kMboxcl2) {
    out->assign(in.data(), in.size());
    return;
  }
  out->clear();
  out->reserve(in.size());
  size_t copied = 0;
  for (size_t line = 0; line < in.size();) {
    if (in[line] == '>') {
      const int depth = QuotedFromDepth(in, line);
      if (depth == 1 || (depth > 1 && flavor == MboxFlavor::kMboxrd)) {
        out->append(in.data() + copied, line - copied);
        copied = line + 1;  // drops one '>'
      }
    }
    const size_t nl = in.find('\n', line);
    if (nl == std::string_view::npos) break;
    line = nl + 1;
  }
  out->append(in.data() + copied, in.size() - copied);
}

// Escape() or Unescape() for a message that arrives in pieces: the same result for any split of
// its bytes, with memory for one output block (a run of '>' at a line start is counted, not kept).
class QuotedFromLines {
 public:
  enum class Mode { kEscape, kUnescapeMboxrd, kUnescapeMboxo, kVerbatim };
  static Mode Unescaping(MboxFlavor flavor) {
    switch (flavor) {
      case MboxFlavor::kMboxrd: return Mode::kUnescapeMboxrd;
      case MboxFlavor::kMboxo: return Mode::kUnescapeMboxo;
      case MboxFlavor::kMboxcl2: return Mode::kVerbatim;
    }
    return Mode::kUnescapeMboxrd;
  }

  QuotedFromLines(Mode mode, const MboxSink& sink, size_t block) : mode_(mode), sink_(sink), block_(block) {}

  void Feed(std::string_view in) {
    if (mode_ == Mode::kVerbatim) {
      Append(in);
      return;
    }
    for (size_t i = 0; i < in.size();) {
      if (state_ == State::kLineStart) {
        // Escaping looks at /^>*From / lines, unescaping at /^>+From / ones.
        if (in[i] == '>' || (in[i] == 'F' && mode_ == Mode::kEscape)) {
          state_ = State::kQuotes;
          quotes_ = 0;
          from_ = 0;
        } else {
          state_ = State::kInLine;
        }
      }
      if (state_ == State::kQuotes) {
        for (; i < in.size(); ++i) {
          const char c = in[i];
          if (from_ == 0 && c == '>') {
            ++quotes_;
          } else if (c == kFrom[from_]) {
            if (++from_ == kFrom.size()) {
              ++i;
              Decide();
              break;
            }
          } else {
            Decide();  // c is not consumed: it belongs to the rest of the line
            break;
          }
        }
        continue;
      }
      const void* nl = std::memchr(in.data() + i, '\n', in.size() - i);
      const size_t stop = nl ? static_cast<size_t>(static_cast<const char*>(nl) - in.data()) + 1 : in.size();
      Append(in.substr(i, stop - i));
      i = stop;
      if (nl) state_ = State::kLineStart;
    }
  }

  void Finish() {
    if (state_ == State::kQuotes) Decide();
    Flush();
  }

 private:
  enum class State { kLineStart, kQuotes, kInLine };

  // The '>' run and the part of "From " after it are known: one '>' more (escaping) or fewer
  // (unescaping, where the flavor does) if they make a quoted "From " line.
  void Decide() {
    uint64_t keep = quotes_;
    if (from_ == kFrom.size()) {
      if (mode_ == Mode::kEscape) {
        ++keep;
      } else if (quotes_ == 1 || mode_ == Mode::kUnescapeMboxrd) {
        --keep;
      }
    }
    while (keep > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(keep, block_));
      out_.append(n, '>');
      keep -= n;
      if (out_.size() >= block_) Flush();
    }
    Append(kFrom.substr(0, from_));
    state_ = State::kInLine;
  }

  void Append(std::string_view bytes) {
    out_.append(bytes);
    if (out_.size() >= block_) Flush();
  }

  void Flush() {
    if (out_.empty()) return;
    sink_(out_);
    out_.clear();
  }

  Mode mode_;
  const MboxSink& sink_;
  size_t block_;  // output is passed on in pieces of about this size
  State state_ = State::kLineStart;
  uint64_t quotes_ = 0;  // '>' at the start of the current line
  size_t from_ = 0;      // bytes of "From " matched after them
  std::string out_;
};

// The parts of an envelope line without its "\n": "From SENDER DATE [no-final-newline]".
struct EnvelopeParts {
  std::string_view sender;
  std::string_view date;
  bool unterminated = false;  // the writer's no-final-newline mark
};

EnvelopeParts SplitEnvelope(std::string_view line) {
  EnvelopeParts parts;
  line = TrimBlanks(line.substr(kFrom.size()));
  if (line.size() > kNoFinalNewline.size() && line.ends_with(kNoFinalNewline) &&
      IsBlank(line[line.size() - kNoFinalNewline.size() - 1])) {
    parts.unterminated = true;
    line = TrimBlanks(line.substr(0, line.size() - kNoFinalNewline.size()));
  }
  size_t sender_end = 0;
  if (line.starts_with('"')) {  // quoted local part: "john doe"@example.com
    // An unclosed quote is an ordinary character; taking the whole line would swallow the date.
    const size_t quote = line.find('"', 1);
    if (quote != std::string_view::npos) sender_end = quote + 1;
  }
  while (sender_end < line.size() && !IsBlank(line[sender_end])) ++sender_end;
  parts.sender = line.substr(0, sender_end);
  parts.date = TrimBlanks(line.substr(sender_end));
  return parts;
}

// Envelope line without its "\n": sender, date and the writer's no-final-newline mark.
bool ParseEnvelope(std::string_view line, MboxMessage* out) {
  const EnvelopeParts parts = SplitEnvelope(line);
  out->envelope_sender.assign(parts.sender);
  out->envelope_date = parts.date.empty() ? 0 : SentDate("Date: " + std::string(parts.date) + "\n");
  return parts.unterminated;
}

// asctime layout in UTC, e.g. "Thu Nov 28 10:00:00 2026" (locale-free).
std::string Asctime(int64_t t) {
  static constexpr const char* kDays[] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};  // from 1970-01-01
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  int64_t days = t / 86400;
  int64_t secs = t % 86400;
  if (secs < 0) {
    secs += 86400;
    --days;
  }
  // H. Hinnant's civil_from_days.
  const int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  const int month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  const long long year = yoe + era * 400 + (month <= 2);
  const int weekday = static_cast<int>(((days % 7) + 7) % 7);
  char text[64];
  std::snprintf(text, sizeof text, "%s %s %2d %02d:%02d:%02d %lld", kDays[weekday], kMonths[month - 1], day,
                static_cast<int>(secs / 3600), static_cast<int>(secs / 60 % 60), static_cast<int>(secs % 60), year);
  return text;
}

std::string SafeSender(std::string_view sender) {
  if (sender.empty()) return "MAILER-DAEMON";
  std::string out(sender);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= ' ' || u == 0x7f) c = '_';
  }
  return out;
}

}  // namespace

bool LooksLikeEnvelopeLine(std::string_view line) {
  if (!line.starts_with(kFrom)) return false;
  const std::string_view date = SplitEnvelope(line).date;
  // The shape of a date as mbox writers put it (asctime, RFC 5322, with or without a zone, a
  // trailing id): a month's name, a day, a time of day h:mm and a year; or an ISO 8601 date-time.
  // mutt's is_from asks as much. Not the date parser alone: it rejects forms writers use
  // (helper-135: ISO 8601, Feb 30, a trailing id merged messages) and its 0 is also 1970-01-01;
  // nor a time alone: prose has those ("From 10:30 to 11:00 we meet", helper-137).
  static constexpr std::string_view kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                                 "jul", "aug", "sep", "oct", "nov", "dec"};
  bool month = false, time = false;
  int short_numbers = 0, years = 0;
  for (size_t pos = 0; pos < date.size();) {
    const size_t start = date.find_first_not_of(" \t", pos);
    if (start == std::string_view::npos) break;
    size_t end = date.find_first_of(" \t", start);
    if (end == std::string_view::npos) end = date.size();
    std::string_view token = date.substr(start, end - start);
    pos = end;
    while (!token.empty() && token.back() == ',') token.remove_suffix(1);
    const auto all = [&](size_t from, size_t to, auto test) {
      for (size_t k = from; k < to; ++k)
        if (!test(static_cast<unsigned char>(token[k]))) return false;
      return from < to;
    };
    const auto digits = [&](size_t from, size_t to) { return to <= token.size() && all(from, to, ::isdigit); };
    if (token.size() >= 16 && digits(0, 4) && token[4] == '-' && digits(5, 7) && token[7] == '-' && digits(8, 10) &&
        token[10] == 'T' && digits(11, 13) && token[13] == ':' && digits(14, 16))
      return true;  // 2024-01-01T10:00...
    if (all(0, token.size(), ::isdigit)) {
      if (token.size() <= 2) ++short_numbers;
      if (token.size() == 4) ++years;
      continue;
    }
    const size_t colon = token.find(':');
    if (colon != std::string_view::npos && colon >= 1 && colon <= 2 && digits(0, colon) && digits(colon + 1, colon + 3) &&
        (token.size() == colon + 3 || token[colon + 3] == ':')) {
      time = true;
      continue;
    }
    if (token.size() >= 3 && token.size() <= 9 && all(0, token.size(), ::isalpha)) {
      std::string lower(token.substr(0, 3));
      for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
      for (const std::string_view m : kMonths) month = month || lower == m;
    }
  }
  return month && time && ((short_numbers >= 1 && years >= 1) || short_numbers >= 2);
}

// --- MboxReader --------------------------------------------------------------------------

MboxReader::MboxReader(int fd, std::string shown_name, MboxFlavor flavor, size_t whole_limit, size_t block_size)
    : fd_(fd), shown_(std::move(shown_name)), flavor_(flavor), whole_limit_(whole_limit),
      block_size_(std::max<size_t>(block_size, 1)) {
  struct stat st;
  if (fstat(fd_, &st) == 0 && S_ISREG(st.st_mode)) {
    const off_t here = lseek(fd_, 0, SEEK_CUR);
    if (here >= 0) {
      seekable_ = true;
      buf_file_offset_ = static_cast<uint64_t>(here);
    }
  }
}

bool MboxReader::ReadBlock() {
  if (eof_) return false;
  const size_t old = buf_.size();
  const uint64_t cursor = buf_file_offset_ + old;
  size_t n = 0;
  if (cursor < spool_end_) {
    n = static_cast<size_t>(std::min<uint64_t>(block_size_, spool_end_ - cursor));
    buf_.resize(old + n);
    PreadAll(spool_.get(), buf_.data() + old, n, static_cast<off_t>(cursor - spool_start_), SpoolName());
  } else if (!source_eof_) {
    buf_.resize(old + block_size_);
    n = ReadSource(buf_.data() + old, block_size_);
    buf_.resize(old + n);
    source_eof_ = n == 0;
  }
  eof_ = n == 0;
  return n > 0;
}

size_t MboxReader::ReadSource(char* data, size_t size) {
  const bool watched = stall_.active() && !seekable_;  // a file never stalls
  const auto start = watched ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  if (watched) WaitForInput(fd_, shown_, source_bytes_, stall_);
  const size_t n = ReadSome(fd_, data, size, shown_);
  source_bytes_ += n;
  if (watched && n != 0) trickle_.Read(source_bytes_, std::chrono::steady_clock::now() - start, shown_, stall_);
  return n;
}

std::string MboxReader::SpoolName() const {
  return shown_ + ": its look-ahead in a temporary file in " + spool_dir_ + " (TMPDIR)";
}

// Copies fd_'s bytes up to file offset `file_end` (fewer at its end) into the spool, which then
// holds every byte from the end of buf_ on that it has read: ReadBlock takes them from there.
void MboxReader::SpoolTo(uint64_t file_end) {
  const uint64_t cursor = buf_file_offset_ + buf_.size();
  if (!spool_.valid()) {
    std::string dir;
    UniqueFd fd = OpenAnonymousTemporary(&dir);
    if (!fd.valid())
      ThrowErrno(shown_ + ": a temporary file in " + dir + " (TMPDIR) to check a Content-Length that " +
                 (spool_for_dovecot_ ? "decides whether a message Dovecot wrote (X-UID) is read as written"
                                     : "points past the next \"From \" line"));
    spool_ = std::move(fd);
    spool_dir_ = dir;
  }
  if (spool_end_ <= cursor) {  // what it held has been read back: start it again, empty
    if (::ftruncate(spool_.get(), 0) != 0) ThrowErrno("truncate " + SpoolName());
    spool_start_ = spool_end_ = cursor;
  }
  std::string block(block_size_, '\0');
  while (spool_end_ < file_end && !source_eof_) {
    const size_t n = ReadSource(block.data(), block.size());
    source_eof_ = n == 0;
    PwriteAll(spool_.get(), block.data(), n, static_cast<off_t>(spool_end_ - spool_start_), SpoolName());
    spool_end_ += n;
  }
}

bool MboxReader::FillTo(size_t end) {
  while (buf_.size() < end && ReadBlock()) {
  }
  return buf_.size() >= end;
}

// Bytes at buf_ index `index`, which may lie beyond what is buffered; fewer at the end of the file.
std::string MboxReader::Peek(size_t index, size_t length) {
  if (index + length > buf_.size() && !eof_) {
    if (!seekable_) {
      if (index + length <= buf_.size() + whole_limit_) {
        FillTo(index + length);
      } else {
        // Far ahead on a pipe: through the spool, which ReadBlock reads back later.
        const uint64_t from = buf_file_offset_ + index;
        SpoolTo(from + length);
        std::string out = index < buf_.size() ? buf_.substr(index, length) : std::string();
        const uint64_t spooled_from = from + out.size();
        const uint64_t spooled_to = std::min<uint64_t>(from + length, spool_end_);
        if (spooled_from < spooled_to) {
          const size_t n = static_cast<size_t>(spooled_to - spooled_from);
          out.resize(out.size() + n);
          PreadAll(spool_.get(), out.data() + out.size() - n, n, static_cast<off_t>(spooled_from - spool_start_),
                   SpoolName());
        }
        return out;
      }
    } else {
      std::string out(length, '\0');
      size_t got = 0;
      while (got < length) {
        const ssize_t n = pread(fd_, out.data() + got, length - got,
                                static_cast<off_t>(buf_file_offset_ + index + got));
        if (n < 0) {
          if (errno == EINTR) continue;
          ThrowErrno("read " + shown_);
        }
        if (n == 0) break;
        got += static_cast<size_t>(n);
      }
      out.resize(got);
      return out;
    }
  }
  if (index >= buf_.size()) return {};
  return buf_.substr(index, length);
}

// If a Content-Length pointing at buf_ index `target` (message stretch starting at `start`) ends
// a message the way line scanning would at some "From " line or at the end of the file, returns
// where that "From " line (or the end) is.
std::optional<size_t> MboxReader::ContentLengthBoundary(size_t start, size_t target) {
  // The separator before a boundary is at most two bytes, so the boundary is within two bytes.
  for (size_t boundary = target; boundary <= target + 2; ++boundary) {
    const size_t before_start = boundary >= start + 3 ? boundary - 3 : start;
    const std::string before = Peek(before_start, boundary - before_start);
    if (before.size() != boundary - before_start || before.empty()) return std::nullopt;  // beyond the end
    const std::string after = Peek(boundary, kFrom.size());
    const bool is_boundary = after.empty() || (after == kFrom && before.back() == '\n' && EnvelopeAt(boundary));
    if (is_boundary && boundary - SeparatorLen(before, boundary - start) == target) return boundary;
  }
  return std::nullopt;
}

bool MboxReader::Start() {
  if (!started_) {
    FillTo(kUtf8Bom.size() + kFrom.size());
    if (std::string_view(buf_).starts_with(kUtf8Bom)) pos_ = kUtf8Bom.size();
    FillTo(pos_ + kFrom.size());
    if (pos_ == buf_.size()) return false;
    if (std::string_view(buf_).substr(pos_, kFrom.size()) != kFrom) {
      Throw(Errc::kCorrupt, shown_ + ": not an mbox (line 1 does not begin with \"From \")");
    }
    started_ = true;
    const size_t envelope_end = EnvelopeEnd();
    dated_envelopes_ = LooksLikeEnvelopeLine(std::string_view(buf_).substr(pos_, envelope_end - pos_));
  }
  return true;
}

// Whether the "From " line at buf_ index `index` begins a message. In a file whose envelope lines
// have dates (its first one has), only a line with a date does, as mutt and Dovecot read an mbox:
// an unquoted "From " line of a body ("From the desk of ...") split its message in two and was
// lost as an envelope line (helper-133). Where the first has none, every "From " line does (a
// file without dates would otherwise be one message). A line with a CR inside stays a message's
// start, for EnvelopeEnd to refuse (lines that end in CR alone).
bool MboxReader::EnvelopeAt(size_t index) {
  if (!dated_envelopes_) return true;
  constexpr size_t kLongestDatedEnvelope = 1024;
  std::string line = Peek(index, kLongestDatedEnvelope);
  if (const size_t newline = line.find('\n'); newline != std::string::npos) line.resize(newline);
  if (line.ends_with('\r')) line.pop_back();
  if (line.find('\r') != std::string::npos) return true;
  return LooksLikeEnvelopeLine(line);
}

// The envelope line at pos_ ends at the returned index (its '\n', or buf_.size() at the end of
// the file). Real ones are under a hundred bytes; one that runs on is a file whose lines do not
// end in LF (an old Mac mbox ends them in CR alone), which would otherwise come in as one empty
// message.
size_t MboxReader::EnvelopeEnd() {
  constexpr size_t kMaxEnvelopeLine = 64 << 10;
  size_t newline = buf_.find('\n', pos_);
  while (newline == std::string::npos && buf_.size() - pos_ <= kMaxEnvelopeLine) {
    const size_t searched = buf_.size();
    if (!ReadBlock()) break;
    newline = buf_.find('\n', searched);
  }
  const size_t envelope_end = newline == std::string::npos ? buf_.size() : newline;
  std::string_view line(buf_.data() + pos_, std::min(envelope_end - pos_, kMaxEnvelopeLine + 1));
  if (line.ends_with('\r')) line.remove_suffix(1);
  // One such message in the middle of an LF file cannot be split safely either; the position
  // lets the administrator find and fix that one message.
  if (line.size() > kMaxEnvelopeLine || line.find('\r') != std::string_view::npos)
    Throw(Errc::kCorrupt, shown_ + ": message " + std::to_string(envelopes_ + 1) + ", its \"From \" line at byte " +
                              std::to_string(buf_file_offset_ + pos_) + ": a \"From \" line " +
                              (line.size() > kMaxEnvelopeLine ? "without a line end in 64 KiB" : "with a CR inside") +
                              " (lines that end in CR alone, as in an old Mac mbox? convert them to LF first)");
  return envelope_end;
}

bool MboxReader::Next(MboxMessage* out) { return Next(out, nullptr); }

bool MboxReader::Next(MboxMessage* out, const MboxSink& large) {
  out->streamed = false;
  if (pos_ >= block_size_) DropBefore(pos_);  // drop consumed bytes once they amount to a block
  if (!Start()) return false;
  FillTo(pos_ + kFrom.size());
  if (pos_ == buf_.size()) return false;

  const size_t envelope_end = EnvelopeEnd();
  ++envelopes_;
  std::string_view envelope_line = std::string_view(buf_).substr(pos_, envelope_end - pos_);
  const bool unterminated = ParseEnvelope(envelope_line, out);
  if (envelope_line.ends_with('\r')) envelope_line.remove_suffix(1);
  // storemove's writer ends its envelope line with a blank where a message would otherwise look
  // like one written by Dovecot (MboxWriter::Envelope), and marks an unterminated one.
  may_be_verbatim_ = flavor_ == MboxFlavor::kMboxrd && !unterminated && !envelope_line.ends_with(' ') &&
                     !envelope_line.ends_with('\t');
  const bool has_newline = envelope_end < buf_.size();
  const size_t start = has_newline ? envelope_end + 1 : buf_.size();

  // The next line that begins with "From ", searched from the envelope's own newline so that a
  // "From " line right after it ends an empty message.
  size_t boundary = buf_.size();
  if (has_newline) {
    size_t search = envelope_end;
    for (;;) {
      size_t hit;
      while ((hit = buf_.find("\nFrom ", search)) != std::string::npos && !EnvelopeAt(hit + 1)) {
        ++text_from_lines_;
        search = hit + 1;
      }
      if (hit != std::string::npos) {
        boundary = hit + 1;
        break;
      }
      if (large && buf_.size() - start > whole_limit_) return Stream(out, large, start, search, unterminated, {});
      const size_t searched = buf_.size();
      if (!ReadBlock()) {
        boundary = buf_.size();
        break;
      }
      search = std::max(search, searched >= kFrom.size() ? searched - kFrom.size() : 0);
    }
  }

  size_t end = boundary - SeparatorLen(std::string_view(buf_).substr(start, boundary - start));
  bool length_holds = false;
  if (const auto length_end = ContentLengthEnd(std::string_view(buf_).substr(start, boundary - start))) {
    const size_t target = start + *length_end;
    length_holds = target == end;
    if (target != end) {
      if (const auto next = ContentLengthBoundary(start, target)) {
        if (large && *next - start > whole_limit_)
          return Stream(out, large, start, boundary - 1, unterminated, std::make_pair(target, *next));
        FillTo(*next);
        end = target;
        boundary = *next;
        length_holds = true;
      }
    }
  }
  if (large && boundary - start > whole_limit_) return Stream(out, large, start, boundary - 1, unterminated, {});

  const std::string_view stretch = std::string_view(buf_).substr(start, boundary - start);
  const bool verbatim = length_holds && may_be_verbatim_ && HasImapServerFields(HeaderOf(stretch));
  Unescape(std::string_view(buf_).substr(start, end - start), verbatim ? MboxFlavor::kMboxcl2 : flavor_,
           &out->bytes);
  if (unterminated && out->bytes.ends_with('\n')) out->bytes.pop_back();
  pos_ = boundary;
  return true;
}

void MboxReader::DropBefore(size_t index) {
  buf_.erase(0, index);
  buf_file_offset_ += index;
  pos_ = pos_ > index ? pos_ - index : 0;
}

// Next() for a message too large to hold: its bytes go to `sink` as the file is read. Offsets
// are kept from the file's start, since consumed bytes leave the buffer on the way. `search` is
// where the search for the next "From " line goes on; `end_and_next`, when the message's end
// is known already (a Content-Length that holds), its end and the next envelope line.
bool MboxReader::Stream(MboxMessage* out, const MboxSink& sink, size_t start, size_t search, bool unterminated,
                        std::optional<std::pair<size_t, size_t>> end_and_next) {
  out->streamed = true;
  out->bytes.clear();
  const uint64_t start_at = buf_file_offset_ + start;
  const auto at = [&](uint64_t offset) { return static_cast<size_t>(offset - buf_file_offset_); };

  // Where the message ends, if a Content-Length says so: its header lies in the first
  // kMaxLengthHeader bytes (and two more, to see its blank line) or not at all.
  std::optional<uint64_t> end_at, next_at;
  // On a pipe, where the reader cannot look ahead and come back, a Content-Length is checked
  // only once the next "From " line (or the end) is found, and only if it points beyond: one
  // that agrees with that line (Sun's /var/mail) costs no memory.
  std::optional<uint64_t> pipe_length_end;
  // A message Dovecot wrote is taken as it is when its Content-Length holds (Next()); on a pipe
  // that is then checked before its first byte is passed on, through the spool if far.
  bool imap_server_fields = false;
  if (end_and_next) {
    end_at = buf_file_offset_ + end_and_next->first;
    next_at = buf_file_offset_ + end_and_next->second;
    imap_server_fields = may_be_verbatim_ && HasImapServerFields(HeaderOf(std::string_view(buf_).substr(start)));
  } else {
    size_t hit = std::string::npos;
    size_t header_searched = start;  // the header's blank line is not before this, less two bytes
    // Up to the next envelope line, as Next() looks for the Content-Length: a "From " line of
    // text in a long header ended the stretch looked at here, and the streamed message lost the
    // Content-Length (and Dovecot's fields) the whole one had (fuzz).
    size_t look = search;
    for (;;) {
      while ((hit = buf_.find("\nFrom ", look)) != std::string::npos && !EnvelopeAt(hit + 1)) look = hit + 1;
      if (hit != std::string::npos || buf_.size() - start >= kMaxLengthHeader + 2) break;
      if (HeaderEnds(std::string_view(buf_).substr(start), header_searched - start)) break;
      header_searched = buf_.size();
      const size_t searched = buf_.size();
      if (!ReadBlock()) break;
      search = std::max(search, searched >= kFrom.size() ? searched - kFrom.size() : 0);
      look = std::max(look, search);
    }
    const size_t seen_end = hit != std::string::npos ? hit + 1 : buf_.size();
    const std::string_view seen = std::string_view(buf_).substr(start, seen_end - start);
    imap_server_fields = may_be_verbatim_ && HasImapServerFields(HeaderOf(seen));
    if (const auto length_end = ContentLengthEnd(seen)) {
      spool_for_dovecot_ = imap_server_fields;
      if (!seekable_ && !imap_server_fields) {
        pipe_length_end = start_at + *length_end;
      } else if (const auto next = ContentLengthBoundary(start, start + *length_end)) {
        end_at = start_at + *length_end;
        next_at = buf_file_offset_ + *next;
      }
    }
  }

  const bool verbatim = imap_server_fields && end_at;
  QuotedFromLines unescaper(QuotedFromLines::Unescaping(verbatim ? MboxFlavor::kMboxcl2 : flavor_), sink,
                            block_size_);
  uint64_t sent_at = start_at;  // the bytes before this offset went to the unescaper
  // Sends the buffered bytes up to `offset` and drops what has been sent once it fills a block.
  const auto send_to = [&](uint64_t offset) {
    if (offset > sent_at) {
      unescaper.Feed(std::string_view(buf_).substr(at(sent_at), static_cast<size_t>(offset - sent_at)));
      sent_at = offset;
    }
    if (const size_t sent = at(sent_at); sent >= block_size_) {
      DropBefore(sent);
      search -= std::min(search, sent);
    }
  };

  // Sends the message up to `stop`, which lies at or before a boundary checked already, reading
  // on as needed; then stops before the next envelope line at `next`.
  const auto send_through = [&](uint64_t stop, uint64_t next) {
    while (sent_at < stop) {
      send_to(std::min<uint64_t>(stop, buf_file_offset_ + buf_.size()));
      if (sent_at < stop && !ReadBlock())
        Throw(Errc::kCorrupt, shown_ + ": message " + std::to_string(envelopes_) + ": the file ends at byte " +
                                  std::to_string(buf_file_offset_ + buf_.size()) +
                                  ", before the end its Content-Length gives (byte " + std::to_string(stop) +
                                  "); was it changed while read?");
    }
    unescaper.Finish();
    FillTo(at(next));
    pos_ = at(next);
    return true;
  };

  if (end_at) {
    uint64_t stop = *end_at;
    if (unterminated && stop > start_at && Peek(at(stop - 1), 1) == "\n") --stop;
    return send_through(stop, *next_at);
  }

  uint64_t boundary_at = 0;
  for (;;) {
    size_t hit;
    while ((hit = buf_.find("\nFrom ", search)) != std::string::npos && !EnvelopeAt(hit + 1)) {
      ++text_from_lines_;
      search = hit + 1;
    }
    if (hit != std::string::npos) {
      boundary_at = buf_file_offset_ + hit + 1;
      break;
    }
    // A later "From " line's "\n" is at most 5 bytes back, and the separator and final newline
    // before it take 3 more: bytes before the last 8 belong to this message whatever comes.
    if (buf_.size() > 8) send_to(buf_file_offset_ + buf_.size() - 8);
    const size_t searched = buf_.size();
    if (!ReadBlock()) {
      boundary_at = buf_file_offset_ + buf_.size();
      break;
    }
    search = std::max(search, searched >= kFrom.size() ? searched - kFrom.size() : 0);
  }
  const uint64_t tail_at = std::max(start_at, boundary_at >= 3 ? boundary_at - 3 : 0);
  uint64_t stop = boundary_at - SeparatorLen(std::string_view(buf_).substr(at(tail_at), at(boundary_at) - at(tail_at)),
                                             boundary_at - start_at);
  // A pipe's Content-Length pointing past that line: the bytes up to where it points are read
  // ahead now (into memory, or through the spool when far: interop/mbox.h), to see whether the
  // message ends there. Nothing from 4 bytes before that line on has been sent or dropped, and
  // the message's start only matters to ContentLengthBoundary for a stretch of under 3 bytes.
  if (pipe_length_end && *pipe_length_end > stop) {
    const size_t start_index = start_at >= buf_file_offset_ ? at(start_at) : 0;
    if (const auto next = ContentLengthBoundary(start_index, at(*pipe_length_end))) {
      stop = *pipe_length_end;
      boundary_at = buf_file_offset_ + *next;
    }
  }
  if (unterminated && stop > start_at && Peek(at(stop - 1), 1) == "\n") --stop;
  return send_through(stop, boundary_at);
}

// --- MboxWriter --------------------------------------------------------------------------

MboxWriter::MboxWriter(int fd, std::string shown_name) : fd_(fd), shown_(std::move(shown_name)) {}

// The envelope line, "\n" included, of a message whose stretch (the escaped message, the "\n"
// an unterminated one gets, the separator) takes `stretch_size` bytes, and whose Content-Length
// points `length_end` bytes past the envelope line; it records where that points. `header` is
// the escaped message's header (HeaderOf), or empty.
std::string MboxWriter::Envelope(std::string_view envelope_sender, int64_t date, bool unterminated,
                                 uint64_t stretch_size, std::string_view header) {
  const std::optional<uint64_t> length_end = ContentLengthEnd(header);
  // A year of other than four digits would not pass LooksLikeEnvelopeLine: the message would
  // merge into the one before it on reading. Such a date is shown as the epoch, which is also
  // what an unreadable date reads as.
  constexpr int64_t kYear1000 = -30610224000, kYear10000 = 253402300800;
  const int64_t shown_date = date >= kYear1000 && date < kYear10000 ? date : 0;
  std::string envelope = "From " + SafeSender(envelope_sender) + " " + Asctime(shown_date);
  if (unterminated) envelope += " " + std::string(kNoFinalNewline);
  // A message with Dovecot's fields and a Content-Length that holds is read as written, without
  // unquoting (MboxReader::Next); a blank at the end of the line tells the reader this one is quoted.
  if (length_end && HasImapServerFields(header)) envelope.push_back(' ');
  // Where the reader will end this message: the stretch minus its separator.
  content_length_ends_.erase(content_length_ends_.begin(), content_length_ends_.lower_bound(offset_));
  uint64_t end = offset_ + envelope.size() + 1 + stretch_size - 1;
  while (content_length_ends_.contains(end)) {
    envelope.push_back(' ');
    ++end;
  }
  envelope.push_back('\n');
  if (length_end) {
    const uint64_t target = offset_ + envelope.size() + *length_end;
    if (target > end) content_length_ends_.insert(target);
  }
  return envelope;
}

void MboxWriter::Write(std::string_view bytes, std::string_view envelope_sender, int64_t date) {
  const bool unterminated = !bytes.empty() && bytes.back() != '\n';
  stretch_.clear();
  Escape(bytes, &stretch_);
  if (unterminated) stretch_.push_back('\n');
  stretch_.push_back('\n');  // the separator line
  const std::string envelope =
      Envelope(envelope_sender, date, unterminated, stretch_.size(), HeaderOf(stretch_));
  WriteAll(fd_, envelope.data(), envelope.size(), shown_);
  WriteAll(fd_, stretch_.data(), stretch_.size(), shown_);
  offset_ += envelope.size() + stretch_.size();
}

namespace {

constexpr size_t kWriteBlock = 256 << 10;

// Reads `fd` from offset 0 to its end in blocks, handing each to `take`; returns the size read.
uint64_t ReadFromStart(int fd, const std::string& shown, std::string* block,
                       const std::function<void(std::string_view)>& take) {
  block->resize(kWriteBlock);
  uint64_t at = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, block->data(), block->size(), static_cast<off_t>(at));
    if (n < 0) {
      if (errno == EINTR) continue;
      ThrowErrno("read " + shown);
    }
    if (n == 0) return at;
    take(std::string_view(block->data(), static_cast<size_t>(n)));
    at += static_cast<uint64_t>(n);
  }
}

}  // namespace

void MboxWriter::WriteFile(int in, const std::string& in_shown, std::string_view envelope_sender, int64_t date,
                           const std::function<void(uint64_t size, const Digest& digest)>& check) {
  std::string block;
  // First reading: the escaped size, the stretch's first bytes (its Content-Length, within
  // kMaxLengthHeader), the last byte, the digest.
  Hasher hasher;
  uint64_t escaped_size = 0;
  std::string head;
  char last = '\n';
  const MboxSink measure = [&](std::string_view piece) {
    escaped_size += piece.size();
    if (head.size() < kMaxLengthHeader + 2)
      head.append(piece.substr(0, std::min(piece.size(), kMaxLengthHeader + 2 - head.size())));
  };
  QuotedFromLines measurer(QuotedFromLines::Mode::kEscape, measure, kWriteBlock);
  const uint64_t size = ReadFromStart(in, in_shown, &block, [&](std::string_view raw) {
    hasher.Update(raw.data(), raw.size());
    measurer.Feed(raw);
    last = raw.back();
  });
  measurer.Finish();
  const Digest digest = hasher.Final();
  check(size, digest);

  const bool unterminated = size > 0 && last != '\n';
  const uint64_t stretch_size = escaped_size + (unterminated ? 1 : 0) + 1;
  if (head.size() == escaped_size) {  // the whole stretch is at hand: its end may end the header
    if (unterminated) head.push_back('\n');
    head.push_back('\n');
  }
  const std::string envelope = Envelope(envelope_sender, date, unterminated, stretch_size, HeaderOf(head));
  head.clear();
  head.shrink_to_fit();

  // Second reading: the bytes written.
  WriteAll(fd_, envelope.data(), envelope.size(), shown_);
  Hasher again;
  uint64_t written = 0;
  const MboxSink write = [&](std::string_view piece) {
    WriteAll(fd_, piece.data(), piece.size(), shown_);
    written += piece.size();
  };
  QuotedFromLines escaper(QuotedFromLines::Mode::kEscape, write, kWriteBlock);
  const uint64_t size_again = ReadFromStart(in, in_shown, &block, [&](std::string_view raw) {
    again.Update(raw.data(), raw.size());
    escaper.Feed(raw);
  });
  escaper.Finish();
  if (size_again != size || written != escaped_size || again.Final() != digest)
    Throw(Errc::kCorrupt, in_shown + ": changed while being written to " + shown_ + " (" + std::to_string(size) +
                              " bytes, then " + std::to_string(size_again) + (size_again == size ? " other" : "") +
                              " bytes)");
  const std::string_view tail = unterminated ? "\n\n" : "\n";
  WriteAll(fd_, tail.data(), tail.size(), shown_);
  offset_ += envelope.size() + stretch_size;
}

}  // namespace storemove::interop
