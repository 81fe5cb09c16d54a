// UNIX mbox files (RFC 4155): `storemove import` reads them (Sun's imsimport), `storemove export`
// writes them (imsexport).
//
// Reading rules
//  * The file must begin with "From ", after an optional UTF-8 byte order mark (an empty file
//    holds no messages); otherwise kCorrupt "<file>: not an mbox (line 1 does not begin with "From ")".
//  * Lines end at LF; a CR before it is content (CRLF files keep their bytes exactly). A message
//    starts after its envelope line "From <sender> <date>" and runs to the next line that begins
//    with "From " or to the end of the file.
//  * An envelope line with a CR inside (not only before its LF), or without an LF within 64 KiB,
//    is kCorrupt "<file>: message N, its "From " line at byte B: ..." (B counted from 0): lines
//    that end in CR alone (an old Mac mbox, or one such message pasted into an LF file) cannot be
//    split into messages, and the whole file is refused.
//  * If that stretch ends with an empty line ("\n" or "\r\n" after a line end), the empty line is
//    the separator and is dropped; this holds at the end of the file too. Otherwise the stretch is
//    kept whole: no separator line before "From ", or a last message without final newline.
//  * Content-Length: if the header (which must end inside the stretch, within its first 1 MiB:
//    kMaxLengthHeader) has one and header + that
//    many bytes of the file ends exactly where the rule above would end a message at a later
//    "From " line or at the end of the file, the message ends there and the "From " lines it spans
//    are body (Sun's /var/mail). A Content-Length that lands anywhere else is ignored, so a count
//    that includes the separator or misses the final newline changes nothing.
//  * Unescaping, on every line: kMboxrd turns ">From ", ">>From "... into one '>' fewer; kMboxo
//    turns only ">From " into "From "; kMboxcl2 changes nothing.
//  * Envelope: the sender is the first word; the rest is read as a date (asctime, optionally with
//    a zone; RFC 5322 order works too), UTC when no zone is given, 0 when unreadable.
//
// Writing rules (mboxrd); reading the result back with kMboxrd returns every message byte-exactly
//  * "From <sender> <asctime, UTC>\n", the message with one more '>' on each /^>*From / line, "\n".
//    The sender's bytes <= ' ' and DEL become '_'; an empty sender is written as MAILER-DAEMON.
//  * A non-empty message that does not end in "\n" is written with "\n" added before the separator
//    and its envelope line ends in " no-final-newline"; the reader then removes that "\n" again.
//  * If a Content-Length header of an earlier message would point exactly at the end of this one
//    (so a reader would swallow the messages between), this message's envelope line is padded with
//    trailing spaces, which moves its end; the reader ignores trailing white space.
//
// The corpus's split files (shared/corpus/*/mbox beside messages/, from-mbox/ ...) match these
// rules except that they keep ">From " escapes and the last message keeps its separator line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "util/digest.h"
#include "util/fs.h"
#include "util/input_wait.h"

namespace storemove::interop {

// How quoted "From " lines are unescaped. kMboxcl2 (Sun's /var/mail, where Content-Length
// delimits messages): nothing is quoted, so every line is taken as it is (helper-73: a body's
// ">From " became "From " and no longer matched its Content-Length).
enum class MboxFlavor { kMboxrd, kMboxo, kMboxcl2 };

// A header longer than this has its Content-Length ignored: the reader need not hold more of a
// message than this to know where it ends.
constexpr size_t kMaxLengthHeader = 1 << 20;

struct MboxMessage {
  std::string envelope_sender;
  int64_t envelope_date = 0;  // from the "From " line, unix seconds; 0 if unparseable
  std::string bytes;          // the message exactly as stored (empty when streamed)
  bool streamed = false;      // the bytes went to Next's `large` sink instead of `bytes`
};

// Receives a large message's bytes, in order, in pieces of about a block.
using MboxSink = std::function<void(std::string_view)>;

// Streams messages from a file descriptor (which it does not own), reading in large blocks.
// Memory: a message up to `whole_limit` is held whole; a larger one is held whole only by the
// Next() without a sink, and otherwise streamed with a few blocks of memory. On a regular file a
// Content-Length pointing far ahead is checked with pread. On a pipe one that agrees with where
// the next "From " line (or the end) ends the message costs nothing; one that points past that
// line, further than `whole_limit` beyond what is buffered, has the bytes up to where it points
// copied to an unlinked temporary file in $TMPDIR (else /tmp) and read back from there: the
// disk holds the look-ahead (for a bogus count, up to the rest of the pipe), memory does not.
// Whether `line` (without its "\n") is an envelope line with a date: "From SENDER DATE", where
// DATE has the shape mbox writers give it (a month's name, a day, a time of day and a year, or an
// ISO 8601 date-time). Body text that nobody quoted ("From the desk of ...", "From 10:30 to 11:00
// we meet") has not: in a file whose first envelope line has one, only such lines begin a
// message (MboxReader).
bool LooksLikeEnvelopeLine(std::string_view line);

class MboxReader {
 public:
  static constexpr size_t kBlockSize = 256 << 10;
  static constexpr size_t kWholeLimit = 4 << 20;

  // `block_size`: bytes asked for per read (tests make it tiny, to put every boundary between reads).
  MboxReader(int fd, std::string shown_name, MboxFlavor flavor = MboxFlavor::kMboxrd,
             size_t whole_limit = kWholeLimit, size_t block_size = kBlockSize);
  MboxReader(const MboxReader&) = delete;
  MboxReader& operator=(const MboxReader&) = delete;

  // Checks that the file begins like an mbox and that its first envelope line is readable,
  // without reading its first message; false for an empty file. Throws like Next(). Next() calls it.
  bool Start();
  // Fills *out with the next message; false at the end. Throws kCorrupt (not an mbox, or an
  // envelope line of CR-only line ends, naming the message's number and byte offset) or kIo.
  bool Next(MboxMessage* out);
  // The same, but a message whose stretch of the file exceeds `whole_limit` is passed to `large`
  // in pieces (out->streamed; out->bytes empty). `large` may throw; the reader is then unusable.
  bool Next(MboxMessage* out, const MboxSink& large);
  // A pipe whose writer stalls: said, and given up on, as `stall` says (util/input_wait.h).
  void set_stall_policy(StallPolicy stall) { stall_ = std::move(stall); }
  // Lines beginning "From " read as message text, not as a new message: in a file whose first
  // envelope line has a date, one that is no envelope line with a date (LooksLikeEnvelopeLine:
  // "From the desk of ...", an unquoted line of a body, as mutt and Dovecot read it).
  uint64_t text_from_lines() const { return text_from_lines_; }

 private:
  size_t ReadSource(char* data, size_t size);
  bool ReadBlock();
  bool FillTo(size_t end);
  void SpoolTo(uint64_t file_end);
  std::string SpoolName() const;
  std::string Peek(size_t index, size_t length);
  std::optional<size_t> ContentLengthBoundary(size_t start, size_t target);
  size_t EnvelopeEnd();
  bool EnvelopeAt(size_t index);
  void DropBefore(size_t index);
  bool Stream(MboxMessage* out, const MboxSink& sink, size_t start, size_t search, bool unterminated,
              std::optional<std::pair<size_t, size_t>> end_and_next);

  int fd_;
  std::string shown_;
  StallPolicy stall_;
  TrickleWatch trickle_;
  uint64_t source_bytes_ = 0;  // read from fd_ so far
  MboxFlavor flavor_;
  // The current message's envelope line allows reading it as written (Next(): Dovecot's files).
  bool may_be_verbatim_ = false;
  size_t whole_limit_;
  size_t block_size_;
  std::string buf_;
  size_t pos_ = 0;                // buf_ index of the next envelope line
  uint64_t buf_file_offset_ = 0;  // file offset of buf_[0]
  bool eof_ = false;         // buf_ holds the last byte of the file
  bool source_eof_ = false;  // fd_ has been read to its end (into buf_ or the spool)
  bool seekable_ = false;
  // A pipe's look-ahead: the file's bytes [spool_start_, spool_end_) at offset 0 of spool_.
  // Bytes past the end of buf_ that the spool holds are read from it before fd_.
  UniqueFd spool_;
  std::string spool_dir_;  // where spool_ was made, for its errors
  bool spool_for_dovecot_ = false;  // the spool is made for a Dovecot message's Content-Length (Stream)
  uint64_t spool_start_ = 0;
  uint64_t spool_end_ = 0;
  bool started_ = false;
  uint64_t envelopes_ = 0;  // "From " lines read so far: errors name the message by number
  // The first envelope line has a date: only "From " lines with one begin a message.
  bool dated_envelopes_ = false;
  uint64_t text_from_lines_ = 0;
};

// Appends messages to a file descriptor (which it does not own) in mboxrd format.
class MboxWriter {
 public:
  MboxWriter(int fd, std::string shown_name);
  MboxWriter(const MboxWriter&) = delete;
  MboxWriter& operator=(const MboxWriter&) = delete;

  // Writes one message; `date` (unix seconds) goes on the envelope line.
  void Write(std::string_view bytes, std::string_view envelope_sender, int64_t date);
  // The same for a message too large to hold, read from `in` (not owned; `in_shown` names it)
  // from offset 0 to its end, twice: first to measure and hash it (`check` gets its size and
  // digest and may throw: nothing is written before it returns), then to write it, a block at
  // a time; bytes that differ the second time are kCorrupt. The output is Write()'s exactly.
  void WriteFile(int in, const std::string& in_shown, std::string_view envelope_sender, int64_t date,
                 const std::function<void(uint64_t size, const Digest& digest)>& check);

 private:
  std::string Envelope(std::string_view envelope_sender, int64_t date, bool unterminated, uint64_t stretch_size,
                       std::string_view header);

  int fd_;
  std::string shown_;
  uint64_t offset_ = 0;                      // bytes written so far
  std::set<uint64_t> content_length_ends_;  // where earlier messages' Content-Length headers point
  std::string stretch_;                      // the escaped message being written
};

}  // namespace storemove::interop
