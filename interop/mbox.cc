// mbox reading and writing; the rules are in interop/mbox.h.
#include "interop/mbox.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

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

// Offset from the stretch's start where its Content-Length says the message ends: header size +
// the value. nullopt when the header does not end inside the stretch or has no usable value.
std::optional<uint64_t> ContentLengthEnd(std::string_view stretch) {
  const std::string_view header = stretch.substr(0, HeaderSize(stretch));
  if (SeparatorLen(header) == 0) return std::nullopt;
  constexpr std::string_view kName = "content-length";
  size_t pos = 0;
  while (pos < header.size()) {
    size_t eol = header.find('\n', pos);
    if (eol == std::string_view::npos) eol = header.size();
    std::string_view line = header.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.size() <= kName.size()) continue;
    bool match = true;
    for (size_t i = 0; i < kName.size() && match; ++i) {
      const char c = line[i];
      match = (c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) == kName[i];
    }
    if (!match) continue;
    std::string_view rest = TrimBlanks(line.substr(kName.size()));
    if (rest.empty() || rest[0] != ':') continue;
    const std::string_view digits = TrimBlanks(rest.substr(1));
    // The first Content-Length field decides; 15 digits are far beyond any file and cannot overflow.
    if (digits.empty() || digits.size() > 15) return std::nullopt;
    uint64_t value = 0;
    for (char c : digits) {
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

// Envelope line without its "\n": sender, date and the writer's no-final-newline mark.
bool ParseEnvelope(std::string_view line, MboxMessage* out) {
  line = TrimBlanks(line.substr(kFrom.size()));
  bool unterminated = false;
  if (line.size() > kNoFinalNewline.size() && line.ends_with(kNoFinalNewline) &&
      IsBlank(line[line.size() - kNoFinalNewline.size() - 1])) {
    unterminated = true;
    line = TrimBlanks(line.substr(0, line.size() - kNoFinalNewline.size()));
  }
  size_t sender_end = 0;
  if (line.starts_with('"')) {  // quoted local part: "john doe"@example.com
    // An unclosed quote is an ordinary character; taking the whole line would swallow the date.
    const size_t quote = line.find('"', 1);
    if (quote != std::string_view::npos) sender_end = quote + 1;
  }
  while (sender_end < line.size() && !IsBlank(line[sender_end])) ++sender_end;
  out->envelope_sender.assign(line.substr(0, sender_end));
  const std::string_view date = TrimBlanks(line.substr(sender_end));
  out->envelope_date = date.empty() ? 0 : SentDate("Date: " + std::string(date) + "\n");
  return unterminated;
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

// --- MboxReader --------------------------------------------------------------------------

MboxReader::MboxReader(int fd, std::string shown_name, MboxFlavor flavor)
    : fd_(fd), shown_(std::move(shown_name)), flavor_(flavor) {
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
  buf_.resize(old + kBlockSize);
  const size_t n = ReadSome(fd_, buf_.data() + old, kBlockSize, shown_);
  buf_.resize(old + n);
  eof_ = n == 0;
  return n > 0;
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
      FillTo(index + length);
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
    const bool is_boundary = after.empty() || (after == kFrom && before.back() == '\n');
    if (is_boundary && boundary - SeparatorLen(before, boundary - start) == target) return boundary;
  }
  return std::nullopt;
}

bool MboxReader::Next(MboxMessage* out) {
  if (pos_ >= kBlockSize) {  // drop consumed bytes once they amount to a block
    buf_.erase(0, pos_);
    buf_file_offset_ += pos_;
    pos_ = 0;
  }
  if (!started_) {
    FillTo(kUtf8Bom.size() + kFrom.size());
    if (std::string_view(buf_).starts_with(kUtf8Bom)) pos_ = kUtf8Bom.size();
  }
  FillTo(pos_ + kFrom.size());
  if (pos_ == buf_.size()) return false;
  if (!started_) {
    if (std::string_view(buf_).substr(pos_, kFrom.size()) != kFrom) {
      Throw(Errc::kCorrupt, shown_ + ": not an mbox (line 1 does not begin with \"From \")");
    }
    started_ = true;
  }

  // The envelope line. Real ones are under a hundred bytes; one that runs on is a file whose
  // lines do not end in LF (an old Mac mbox ends them in CR alone), which would otherwise come in
  // as one empty message.
  constexpr size_t kMaxEnvelopeLine = 64 << 10;
  size_t newline = buf_.find('\n', pos_);
  while (newline == std::string::npos && buf_.size() - pos_ <= kMaxEnvelopeLine) {
    const size_t searched = buf_.size();
    if (!ReadBlock()) break;
    newline = buf_.find('\n', searched);
  }
  const size_t envelope_end = newline == std::string::npos ? buf_.size() : newline;
  {
    std::string_view line(buf_.data() + pos_, std::min(envelope_end - pos_, kMaxEnvelopeLine + 1));
    if (line.ends_with('\r')) line.remove_suffix(1);
    // One such message in the middle of an LF file cannot be split safely either; the position
    // lets the administrator find and fix that one message.
    if (line.size() > kMaxEnvelopeLine || line.find('\r') != std::string_view::npos)
      Throw(Errc::kCorrupt, shown_ + ": message " + std::to_string(envelopes_ + 1) + ", its \"From \" line at byte " +
                                std::to_string(buf_file_offset_ + pos_) + ": a \"From \" line " +
                                (line.size() > kMaxEnvelopeLine ? "without a line end in 64 KiB" : "with a CR inside") +
                                " (lines that end in CR alone, as in an old Mac mbox? convert them to LF first)");
  }
  ++envelopes_;
  const bool unterminated = ParseEnvelope(std::string_view(buf_).substr(pos_, envelope_end - pos_), out);
  const size_t start = newline == std::string::npos ? buf_.size() : newline + 1;

  // The next line that begins with "From ", searched from the envelope's own newline so that a
  // "From " line right after it ends an empty message.
  size_t boundary = buf_.size();
  if (newline != std::string::npos) {
    size_t search = newline;
    for (;;) {
      const size_t hit = buf_.find("\nFrom ", search);
      if (hit != std::string::npos) {
        boundary = hit + 1;
        break;
      }
      const size_t searched = buf_.size();
      if (!ReadBlock()) {
        boundary = buf_.size();
        break;
      }
      search = std::max(search, searched >= kFrom.size() ? searched - kFrom.size() : 0);
    }
  }

  size_t end = boundary - SeparatorLen(std::string_view(buf_).substr(start, boundary - start));
  if (const auto length_end = ContentLengthEnd(std::string_view(buf_).substr(start, boundary - start))) {
    const size_t target = start + *length_end;
    if (target != end) {
      if (const auto next = ContentLengthBoundary(start, target)) {
        FillTo(*next);
        end = target;
        boundary = *next;
      }
    }
  }

  Unescape(std::string_view(buf_).substr(start, end - start), flavor_, &out->bytes);
  if (unterminated && out->bytes.ends_with('\n')) out->bytes.pop_back();
  pos_ = boundary;
  return true;
}

// --- MboxWriter --------------------------------------------------------------------------

MboxWriter::MboxWriter(int fd, std::string shown_name) : fd_(fd), shown_(std::move(shown_name)) {}

void MboxWriter::Write(std::string_view bytes, std::string_view envelope_sender, int64_t date) {
  const bool unterminated = !bytes.empty() && bytes.back() != '\n';
  stretch_.clear();
  Escape(bytes, &stretch_);
  if (unterminated) stretch_.push_back('\n');
  stretch_.push_back('\n');  // the separator line

  std::string envelope = "From " + SafeSender(envelope_sender) + " " + Asctime(date);
  if (unterminated) envelope += " " + std::string(kNoFinalNewline);
  // Where the reader will end this message: the stretch minus its separator.
  content_length_ends_.erase(content_length_ends_.begin(), content_length_ends_.lower_bound(offset_));
  uint64_t end = offset_ + envelope.size() + 1 + stretch_.size() - 1;
  while (content_length_ends_.contains(end)) {
    envelope.push_back(' ');
    ++end;
  }
  envelope.push_back('\n');
  if (const auto length_end = ContentLengthEnd(stretch_)) {
    const uint64_t target = offset_ + envelope.size() + *length_end;
    if (target > end) content_length_ends_.insert(target);
  }

  WriteAll(fd_, envelope.data(), envelope.size(), shown_);
  WriteAll(fd_, stretch_.data(), stretch_.size(), shown_);
  offset_ += envelope.size() + stretch_.size();
}

}  // namespace storemove::interop
