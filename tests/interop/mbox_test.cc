// MboxReader / MboxWriter: the reading rules on hand-made files, Content-Length handling, reads
// across block boundaries and through pipes, the writer's exact output, the corpus's mboxes
// against their split files, and a write/read round trip of every corpus message.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "interop/mbox.h"
#include "store/store.h"
#include "util/digest.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::interop {
namespace {

using storemove::testing::TempDir;
using namespace std::string_literals;

std::vector<MboxMessage> ReadFd(int fd, const std::string& shown, MboxFlavor flavor) {
  MboxReader reader(fd, shown, flavor);
  std::vector<MboxMessage> out;
  MboxMessage m;
  while (reader.Next(&m)) out.push_back(m);
  return out;
}

std::vector<std::string> Bytes(const std::vector<MboxMessage>& messages);

// The same through Next's sink, with every message of more than `whole_limit` bytes streamed
// and `block_size` bytes per read; the pieces are put together again.
std::vector<MboxMessage> ReadFdStreamed(int fd, const std::string& shown, MboxFlavor flavor, size_t whole_limit,
                                        size_t block_size) {
  MboxReader reader(fd, shown, flavor, whole_limit, block_size);
  std::vector<MboxMessage> out;
  MboxMessage m;
  std::string pieces;
  while (reader.Next(&m, [&](std::string_view piece) { pieces.append(piece); })) {
    if (m.streamed) {
      EXPECT_TRUE(m.bytes.empty());
      m.bytes = std::move(pieces);
      pieces.clear();
    } else {
      EXPECT_TRUE(pieces.empty());
    }
    out.push_back(m);
  }
  return out;
}

// What one way of reading gave: the messages, or the error it threw.
struct Outcome {
  std::vector<MboxMessage> messages;
  std::string error;  // "<errc> <what>"
};

Outcome Capture(const std::function<std::vector<MboxMessage>()>& read) {
  Outcome o;
  try {
    o.messages = read();
  } catch (const Error& e) {
    o.error = std::to_string(static_cast<int>(e.code())) + " " + e.what();
  }
  return o;
}

// Every file a test reads is read whole and also streamed: each message (whole-message limit 0),
// nearly each (1) or the longer ones (7), read 1, 3 or 7 bytes at a time, so that every boundary
// falls between two reads somewhere; files over 1 MiB only with reads of 4 KiB. The streamed
// reader must give the same messages, or the same error, as the one that holds messages whole.
struct StreamedWay {
  size_t whole_limit, block_size;
};
constexpr StreamedWay kSmallFileWays[] = {{0, 1}, {1, 3}, {7, 7}, {0, 4096}, {7, MboxReader::kBlockSize}};
constexpr StreamedWay kLargeFileWays[] = {{0, 4096}, {7, MboxReader::kBlockSize}};

std::vector<MboxMessage> ReadEveryWay(const std::function<UniqueFd()>& open, uint64_t size, const std::string& shown,
                                      MboxFlavor flavor) {
  const Outcome whole = Capture([&] { return ReadFd(open().get(), shown, flavor); });
  const auto check = [&](StreamedWay way) {
    const Outcome streamed =
        Capture([&] { return ReadFdStreamed(open().get(), shown, flavor, way.whole_limit, way.block_size); });
    const std::string label =
        "whole-message limit " + std::to_string(way.whole_limit) + ", reads of " + std::to_string(way.block_size);
    EXPECT_EQ(streamed.error, whole.error) << label;
    EXPECT_EQ(streamed.messages.size(), whole.messages.size()) << label;
    for (size_t i = 0; i < std::min(streamed.messages.size(), whole.messages.size()); ++i) {
      EXPECT_EQ(streamed.messages[i].bytes, whole.messages[i].bytes) << "message " << i << ", " << label;
      EXPECT_EQ(streamed.messages[i].envelope_sender, whole.messages[i].envelope_sender) << "message " << i;
      EXPECT_EQ(streamed.messages[i].envelope_date, whole.messages[i].envelope_date) << "message " << i;
    }
  };
  if (size <= (1 << 20)) {
    for (StreamedWay way : kSmallFileWays) check(way);
  } else {
    for (StreamedWay way : kLargeFileWays) check(way);
  }
  if (!whole.error.empty()) return ReadFd(open().get(), shown, flavor);  // throws it again
  return whole.messages;
}

std::vector<MboxMessage> ReadPath(const std::string& path, MboxFlavor flavor = MboxFlavor::kMboxrd) {
  return ReadEveryWay([&] { return OpenFile(path, O_RDONLY); }, std::filesystem::file_size(path), path, flavor);
}

void WriteText(const std::string& path, std::string_view text) {
  UniqueFd fd = OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC);
  WriteAll(fd.get(), text.data(), text.size(), path);
}

std::vector<MboxMessage> ReadThroughPipe(const std::string& text, MboxFlavor flavor = MboxFlavor::kMboxrd);

// A file, read every way; then the same bytes through a pipe, every way, which must agree.
std::vector<MboxMessage> ReadText(std::string_view text, MboxFlavor flavor = MboxFlavor::kMboxrd) {
  TempDir dir;
  WriteText(dir / "mbox", text);
  const Outcome from_file = Capture([&] { return ReadPath(dir / "mbox", flavor); });
  const Outcome from_pipe = Capture([&] { return ReadThroughPipe(std::string(text), flavor); });
  EXPECT_EQ(from_pipe.error, from_file.error) << "a pipe and a file";
  EXPECT_EQ(Bytes(from_pipe.messages), Bytes(from_file.messages)) << "a pipe and a file";
  return ReadPath(dir / "mbox", flavor);
}

// A pipe fed by a thread: no pread, short reads.
class FedPipe {
 public:
  explicit FedPipe(const std::string& text) {
    signal(SIGPIPE, SIG_IGN);
    int fds[2];
    if (pipe(fds) != 0) ThrowErrno("pipe");
    read_end_.reset(fds[0]);
    write_end_.reset(fds[1]);
    feeder_ = std::thread([this, &text] {
      try {
        WriteAll(write_end_.get(), text.data(), text.size(), "pipe");
      } catch (const Error&) {  // the reader stopped early; its own failure is what the test sees
      }
      write_end_.reset();
    });
  }
  ~FedPipe() {
    read_end_.reset();  // a reader that stopped early lets the feeder end
    feeder_.join();
  }
  int fd() const { return read_end_.get(); }

 private:
  UniqueFd read_end_, write_end_;
  std::thread feeder_;
};

std::vector<MboxMessage> ReadThroughPipe(const std::string& text, MboxFlavor flavor) {
  std::vector<std::unique_ptr<FedPipe>> pipes;
  return ReadEveryWay(
      [&] {
        pipes.push_back(std::make_unique<FedPipe>(text));
        return UniqueFd(::dup(pipes.back()->fd()));
      },
      text.size(), "pipe", flavor);
}

std::vector<std::string> Bytes(const std::vector<MboxMessage>& messages) {
  std::vector<std::string> out;
  for (const MboxMessage& m : messages) out.push_back(m.bytes);
  return out;
}

using Strings = std::vector<std::string>;

// --- reading rules ---------------------------------------------------------------------

TEST(MboxReaderTest, SplitsAtFromLinesAndDropsTheSeparatorLine) {
  const auto messages = ReadText(
      "From alice@example.com Sat Nov 28 10:00:00 2026\nSubject: 1\n\nbody one\n\n"
      "From bob@example.com Mon Jun  3 12:50:27 1996\nSubject: 2\n\nbody two\n\n\n");
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].bytes, "Subject: 1\n\nbody one\n");
  EXPECT_EQ(messages[0].envelope_sender, "alice@example.com");
  EXPECT_EQ(messages[0].envelope_date, 1795860000);
  // At the end of the file too, exactly one empty line is the separator.
  EXPECT_EQ(messages[1].bytes, "Subject: 2\n\nbody two\n\n");
  EXPECT_EQ(messages[1].envelope_sender, "bob@example.com");
  EXPECT_EQ(messages[1].envelope_date, 833806227);
}

TEST(MboxReaderTest, KeepsMessagesWithoutSeparatorOrFinalNewline) {
  EXPECT_EQ(Bytes(ReadText("From a\nS: 1\n\nx\nFrom b\nS: 2\n\ny")), (Strings{"S: 1\n\nx\n", "S: 2\n\ny"}));
  EXPECT_EQ(Bytes(ReadText("From a\nx\n \nFrom b\ny\n")), (Strings{"x\n \n", "y\n"}));  // " " is not empty
}

TEST(MboxReaderTest, EmptyMessagesAndEmptyFile) {
  EXPECT_EQ(Bytes(ReadText("From a\nFrom b\n\nFrom c\n")), (Strings{"", "", ""}));
  EXPECT_EQ(Bytes(ReadText("From a")), (Strings{""}));
  EXPECT_EQ(Bytes(ReadText("From a\n\r\n")), (Strings{""}));
  EXPECT_TRUE(ReadText("").empty());
}

TEST(MboxReaderTest, OnlyFromAndSpaceAtLineStartSeparates) {
  const auto messages = ReadText("From a\nS: 1\n\nsay From here\nFromage\nFROM x\n From y\n\tFrom z\n\rFrom w\n");
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].bytes, "S: 1\n\nsay From here\nFromage\nFROM x\n From y\n\tFrom z\n\rFrom w\n");
}

// An unquoted "From " line in a body ("From the desk of ...", "From Russia with love") split its
// message in two, and the line itself was lost as the second one's envelope line, exit 0
// (helper-133). Where the file's envelope lines have dates (its first has), a line without one
// is message text, as mutt and Dovecot read it; in a file whose first has none, every "From "
// line still begins a message.
TEST(MboxReaderTest, AFromLineWithoutADateIsTextWhereEnvelopesHaveDates) {
  const std::string first = "S: memo\n\nHi Bob,\n\nFrom the desk of the director: budget due Friday.\n\nAlice\n";
  const std::string text = "From alice@example.com Mon Mar  3 10:00:00 2003\n" + first +
                           "\nFrom carol@example.com Mon Mar  3 11:00:00 2003\nS: 2\n\nhello\n";
  EXPECT_EQ(Bytes(ReadText(text)), (Strings{first, "S: 2\n\nhello\n"}));
  EXPECT_EQ(Bytes(ReadText(text, MboxFlavor::kMboxo)), (Strings{first, "S: 2\n\nhello\n"}));
  // Counted, for import to say so.
  {
    TempDir dir;
    WriteText(dir / "mbox", text);
    UniqueFd fd = OpenFile(dir / "mbox", O_RDONLY);
    MboxReader reader(fd.get(), "mbox");
    MboxMessage m;
    while (reader.Next(&m)) {
    }
    EXPECT_EQ(reader.text_from_lines(), 1u);
  }
  // At a block's edge and in a message streamed in pieces (ReadText reads every way), and as
  // the first line of a body.
  const std::string big = "S: big\n\n" + std::string(MboxReader::kBlockSize - 40, 'x') + "\nFrom here on, a line\n";
  EXPECT_EQ(Bytes(ReadText("From a@b Mon Mar  3 10:00:00 2003\n" + big + "\nFrom a@b Mon Mar  3 10:00:00 2003\nS: 2\n")),
            (Strings{big, "S: 2\n"}));
  EXPECT_EQ(Bytes(ReadText("From a@b Mon Mar  3 10:00:00 2003\nFrom nobody in particular\nS: 1\n")),
            (Strings{"From nobody in particular\nS: 1\n"}));
  // Envelope lines without dates: each begins a message, as before.
  EXPECT_EQ(Bytes(ReadText("From a\nS: 1\n\nFrom the desk\n\nFrom b\nS: 2\n")), (Strings{"S: 1\n", "", "S: 2\n"}));
  // A Content-Length that ends at such a line does not end the message there either.
  const std::string body = "x\n\nFrom the desk\nmore\n";
  const std::string with_length = "From a@b Mon Mar  3 10:00:00 2003\nContent-Length: 3\nS: 1\n\n" + body;
  EXPECT_EQ(Bytes(ReadText(with_length)), (Strings{"Content-Length: 3\nS: 1\n\n" + body}));
}

// What separates envelope lines from such text is a date the parser reads or a time of day:
// helper-135 saw SentDate's 0 for 1970-01-01T00:00:00Z, and dates it rejects (ISO 8601, a
// trailing id, Feb 30), merge a message into the one before.
TEST(MboxReaderTest, EnvelopeLinesWithOddDatesStillBeginMessages) {
  for (const std::string& envelope :
       {std::string("From MAILER-DAEMON Thu Jan  1 00:00:00 1970"), std::string("From a@b Thu, 01 Jan 1970 00:00:00 +0000"),
        std::string("From a@b 2024-01-01T00:00:00Z"), std::string("From a@b Mon Jan  1 10:00:00 2024 12345"),
        std::string("From a@b Sat Feb 30 10:00:00 2024"), std::string("From - Mon Jan 01 10:00 2024"),
        std::string("From 1234567890@xxx Mon Jan 01 00:00:00 +0000 2024"), std::string("From a@b Mon Jan  1 10:00:00 96")}) {
    const std::string text = "From a@b Mon Jan  1 10:00:00 2024\nS: 1\n\n" + envelope + "\nS: 2\n\n" +
                             "From a@b Mon Jan  1 11:00:00 2024\nS: 3\n";
    EXPECT_EQ(Bytes(ReadText(text)), (Strings{"S: 1\n", "S: 2\n", "S: 3\n"})) << envelope;
    EXPECT_TRUE(LooksLikeEnvelopeLine(envelope)) << envelope;
  }
  // Prose, with times of day too (helper-137: a time alone split "From 10:30 to 11:00 we meet").
  for (const std::string& text :
       {std::string("From the desk of the director"), std::string("From Russia with love"), std::string("From nobody"),
        std::string("From 2003 onward"), std::string("From: a@b"), std::string("From 10:30 to 11:00 we meet"),
        std::string("From 9:00 to 17:00 the office is closed"), std::string("From 5 Jan 2024 10:00 until end"),
        std::string("From 2024-01-01 10:00:00 the service was down"), std::string("From the log: 12:34:56 ERROR")})
    EXPECT_FALSE(LooksLikeEnvelopeLine(text)) << text;
  const std::string meeting = "S: 1\n\nhello\nFrom 10:30 to 11:00 we meet\nbye\n";
  EXPECT_EQ(Bytes(ReadText("From a@b Thu Nov 28 10:00:00 2026\n" + meeting + "\nFrom c@d Thu Nov 28 11:00:00 2026\nS: 2\n")),
            (Strings{meeting, "S: 2\n"}));
  // An exact Content-Length that points at such a line ends its message there (--mboxcl2 too).
  const std::string cl = "From a@b Mon Jan  1 10:00:00 2024\nContent-Length: 2\n\nx\n\n"
                         "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nContent-Length: 2\n\ny\n";
  EXPECT_EQ(ReadText(cl, MboxFlavor::kMboxcl2).size(), 2u);
}

// Dovecot keeps an mbox without quoting "From " lines: its Content-Length delimits each message,
// and each carries X-UID (the first X-IMAPbase too). Read as mboxrd, its ">From" lost a '>'
// (helper-133). Such a message is taken as written when its Content-Length holds.
TEST(MboxReaderTest, AMessageDovecotWroteIsReadAsWritten) {
  const std::string body = "From plain\n>From once\n>>From twice\nend\n";
  const auto dovecot = [&](std::string_view fields, size_t length) {
    return "From: a@x\nSubject: quoting\n" + std::string(fields) + "Content-Length: " + std::to_string(length) +
           "\n\n" + body;
  };
  const std::string first = dovecot("X-IMAPbase: 1796545710 0000000002 $Work\nX-UID: 1\nStatus: R\n", body.size());
  const std::string second = dovecot("X-UID: 2\n", body.size());
  const std::string envelope = "From x@vm  Fri Mar  5 09:00:00 2004\n";
  EXPECT_EQ(Bytes(ReadText(envelope + first + "\n" + envelope + second + "\n")), (Strings{first, second}));
  // Large, so that it is streamed (ReadText reads every way), from a file and a pipe.
  const std::string big_body = std::string(MboxReader::kBlockSize + 100, 'x') + "\n>From quoted\n";
  const std::string big = "X-UID: 3\nContent-Length: " + std::to_string(big_body.size()) + "\n\n" + big_body;
  EXPECT_EQ(Bytes(ReadText(envelope + big + "\n" + envelope + second)), (Strings{big, second}));

  // A "From " line of text inside a long header: streamed, the message lost its Content-Length
  // and was unquoted (fuzz).
  const std::string odd_header = "X-UID: 4\nX-A: 1\nFrom nobody in particular\nContent-Length: " +
                                 std::to_string(body.size()) + "\n\n" + body;
  EXPECT_EQ(Bytes(ReadText(envelope + odd_header + "\n" + envelope + second)), (Strings{odd_header, second}));

  // Unquoted as mboxrd, as before: no Dovecot fields; a Content-Length that does not hold; an
  // envelope line that ends in a blank (storemove's writer: MboxWriterTest below).
  const std::string unquoted = "From plain\nFrom once\n>From twice\nend\n";
  const auto as_mboxrd = [&](const std::string& message) {
    return message.substr(0, message.size() - body.size()) + unquoted;
  };
  const std::string plain = dovecot("", body.size());
  const std::string wrong = dovecot("X-UID: 2\n", body.size() - 1);
  EXPECT_EQ(Bytes(ReadText(envelope + plain + "\n" + envelope + wrong + "\n")),
            (Strings{as_mboxrd(plain), as_mboxrd(wrong)}));
  EXPECT_EQ(Bytes(ReadText("From x@vm Fri Mar  5 09:00:00 2004 \n" + second)), (Strings{as_mboxrd(second)}));
  // --mboxo as asked.
  EXPECT_EQ(Bytes(ReadText(envelope + second, MboxFlavor::kMboxo)),
            (Strings{second.substr(0, second.size() - body.size()) + "From plain\nFrom once\n>>From twice\nend\n"}));
}

TEST(MboxReaderTest, CrlfFileKeepsItsBytes) {
  const auto messages = ReadText(
      "From a@b Sat Nov 28 10:00:00 2026\r\nS: 1\r\n\r\nbody\r\n\r\n"
      "From c@d Sat Nov 28 10:00:00 2026\r\nS: 2\r\n\r\nlast\r\n");
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].bytes, "S: 1\r\n\r\nbody\r\n");
  EXPECT_EQ(messages[0].envelope_sender, "a@b");
  EXPECT_EQ(messages[0].envelope_date, 1795860000);
  EXPECT_EQ(messages[1].bytes, "S: 2\r\n\r\nlast\r\n");
}

TEST(MboxReaderTest, UnescapesPerFlavor) {
  const std::string text = "From a\nS: 1\n\n>From x\n>>From y\n>>>From z\n> From w\n>Fromage\nx >From v\n";
  EXPECT_EQ(ReadText(text, MboxFlavor::kMboxrd).at(0).bytes,
            "S: 1\n\nFrom x\n>From y\n>>From z\n> From w\n>Fromage\nx >From v\n");
  EXPECT_EQ(ReadText(text, MboxFlavor::kMboxo).at(0).bytes,
            "S: 1\n\nFrom x\n>>From y\n>>>From z\n> From w\n>Fromage\nx >From v\n");
  // mboxcl2 (Sun's /var/mail) quotes nothing: every line as it is (helper-73: a body's ">From "
  // lost its '>' and no longer matched its Content-Length).
  EXPECT_EQ(ReadText(text, MboxFlavor::kMboxcl2).at(0).bytes, text.substr(7));
  const std::string body = ">From the article you quoted\nFrom a line the count spans\n";
  const std::string cl2 = "From a\nContent-Length: " + std::to_string(body.size()) + "\n\n" + body + "\nFrom b\nS: 2\n\ny\n";
  const std::vector<MboxMessage> both = ReadText(cl2, MboxFlavor::kMboxcl2);
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[0].bytes, "Content-Length: " + std::to_string(body.size()) + "\n\n" + body);
  // Header lines too: the first line of a message may itself be an escaped envelope line.
  EXPECT_EQ(ReadText("From a\n>From b Sat Nov 28 10:00:00 2026\nS: 1\n\nx\n").at(0).bytes,
            "From b Sat Nov 28 10:00:00 2026\nS: 1\n\nx\n");
}

// Lines that begin like a quoted "From " line and then are not one, for the streamed reader's
// line-start state (ReadText also streams them a byte at a time).
TEST(MboxReaderTest, UnescapesOnlyWholeQuotedFromLines) {
  const std::string body =
      ">Fr>om a\n>F>From b\n>>>\n>\n>>\n\n>From\n>Fro\r\n>>>>>>>>>>From c\n>From \n>>From";
  const std::string text = "From a\n" + body;
  EXPECT_EQ(ReadText(text, MboxFlavor::kMboxrd).at(0).bytes,
            ">Fr>om a\n>F>From b\n>>>\n>\n>>\n\n>From\n>Fro\r\n>>>>>>>>>From c\nFrom \n>>From");
  EXPECT_EQ(ReadText(text, MboxFlavor::kMboxo).at(0).bytes,
            ">Fr>om a\n>F>From b\n>>>\n>\n>>\n\n>From\n>Fro\r\n>>>>>>>>>>From c\nFrom \n>>From");
  // A run of '>' longer than a read and than the output block.
  const std::string quotes(3 * MboxReader::kBlockSize, '>');
  EXPECT_EQ(ReadText("From a\n" + quotes + "From x\n").at(0).bytes, quotes.substr(1) + "From x\n");
  EXPECT_EQ(ReadText("From a\n" + quotes + "Frox\n").at(0).bytes, quotes + "Frox\n");
}

TEST(MboxReaderTest, EnvelopeLines) {
  auto first = [](const std::string& envelope) { return ReadText(envelope + "\nS: 1\n\nx\n").at(0); };
  MboxMessage m = first("From user@example.com Sat Nov 28 22:00:00 PST 2026");
  EXPECT_EQ(m.envelope_sender, "user@example.com");
  EXPECT_EQ(m.envelope_date, 1795932000);
  m = first("From \"john doe\"@x.org  Mon Jun  3 12:50:27 1996 remote from x");
  EXPECT_EQ(m.envelope_sender, "\"john doe\"@x.org");
  EXPECT_EQ(m.envelope_date, 833806227);
  m = first("From a Sat, 28 Nov 2026 10:00:00 +0000");  // RFC 5322 order
  EXPECT_EQ(m.envelope_date, 1795860000);
  m = first("From - ");
  EXPECT_EQ(m.envelope_sender, "-");
  EXPECT_EQ(m.envelope_date, 0);
  m = first("From 1844347792267117879@xxx");
  EXPECT_EQ(m.envelope_sender, "1844347792267117879@xxx");
  EXPECT_EQ(m.envelope_date, 0);
  m = first("From ");
  EXPECT_EQ(m.envelope_sender, "");
  EXPECT_EQ(m.bytes, "S: 1\n\nx\n");
}

TEST(MboxReaderTest, SkipsAUtf8ByteOrderMark) {
  EXPECT_EQ(Bytes(ReadText("\xEF\xBB\xBF" "From a\nS: 1\n\nx\n")), (Strings{"S: 1\n\nx\n"}));
  EXPECT_TRUE(ReadText("\xEF\xBB\xBF").empty());
}

TEST(MboxReaderTest, NotAnMboxNamesTheFile) {
  TempDir dir;
  for (const std::string& text :
       {"Subject: hi\n\nbody\n"s, "Fro"s, "\nFrom a\n"s, ">From a\n"s, "from a\n"s, "\xEF\xBB\xBFx\n"s}) {
    WriteText(dir / "not-mbox", text);
    try {
      ReadPath(dir / "not-mbox");
      ADD_FAILURE() << "accepted " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kCorrupt);
      EXPECT_NE(std::string(e.what()).find(dir / "not-mbox"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("not an mbox"), std::string::npos) << e.what();
    }
  }
}

// One message with CR-only line ends in an LF file (an old Mac client's) refuses the file, and the
// error says where: the message's number and the byte offset of its "From " line, also past the
// first block (consumed bytes dropped) and through a pipe.
TEST(MboxReaderTest, ACrOnlyMessageInsideAnLfFileIsNamedByNumberAndOffset) {
  const std::string big = "From a Mon Jul  1 10:00:00 2024\nS: 1\n\n" + std::string(MboxReader::kBlockSize, 'x') + "\n\n";
  const std::string second = "From a Mon Jul  1 10:00:00 2024\nS: 2\n\ny\n\n";
  const std::string mac = "From a Mon Jul  1 10:00:00 2024\rS: mac\r\rbody\r\n\n";
  const std::string text = big + second + mac + "From a Mon Jul  1 10:00:00 2024\nS: 4\n\nz\n";
  const std::string where = "message 3, its \"From \" line at byte " + std::to_string(big.size() + second.size()) + ": ";
  TempDir dir;
  WriteText(dir / "mixed", text);
  for (bool pipe : {false, true}) {
    try {
      pipe ? ReadThroughPipe(text) : ReadPath(dir / "mixed");
      ADD_FAILURE() << "accepted a CR-only message";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kCorrupt);
      EXPECT_NE(std::string(e.what()).find((pipe ? "pipe"s : dir / "mixed") + ": " + where + "a \"From \" line with a CR"),
                std::string::npos)
          << e.what();
    }
  }
}

// A boundary "\nFrom " placed across the first block edge at every offset, read from a file and
// through a pipe.
TEST(MboxReaderTest, BoundaryAcrossBlockEdges) {
  const std::string envelope = "From a Sat Nov 28 10:00:00 2026\n";
  for (size_t shift = 0; shift < 10; ++shift) {  // "\nFrom " starts 6 bytes before the edge .. 3 after
    const size_t body_size = MboxReader::kBlockSize - envelope.size() - 6 + shift;
    std::string first = "S: 1\n\n" + std::string(body_size - 6 - 1, 'x') + "\n";
    const std::string text = envelope + first + "\n" + envelope + "S: 2\n\ny\n";
    const Strings expected{first, "S: 2\n\ny\n"};
    EXPECT_EQ(Bytes(ReadText(text)), expected) << shift;
    EXPECT_EQ(Bytes(ReadThroughPipe(text)), expected) << shift;
  }
}

TEST(MboxReaderTest, ManyMessagesLargerThanABlockThroughAPipe) {
  std::string text;
  Strings expected;
  for (int i = 0; i < 40; ++i) {
    const std::string body(static_cast<size_t>(i) * 23456, static_cast<char>('a' + i % 26));
    const std::string m = "S: " + std::to_string(i) + "\n\n" + body + "\n";
    text += "From x Sat Nov 28 10:00:00 2026\n" + m + "\n";
    expected.push_back(m);
  }
  EXPECT_EQ(Bytes(ReadThroughPipe(text)), expected);
  EXPECT_EQ(Bytes(ReadText(text)), expected);
}

// --- Content-Length ----------------------------------------------------------------------

std::string WithLength(const std::string& body, long delta, const std::string& eol = "\n") {
  return "Content-Length: " + std::to_string(static_cast<long>(body.size()) + delta) + eol + "S: 1" + eol + eol + body;
}

TEST(MboxContentLengthTest, SkipsUnescapedFromLinesWhenExact) {
  const std::string body = "line1\nFrom inner@x Sat Nov 28 10:00:00 2026\nline3\n";
  const std::string text = "From a\n" + WithLength(body, 0) + "\nFrom b\nS: 2\n\nb\n";
  const Strings expected{WithLength(body, 0), "S: 2\n\nb\n"};
  EXPECT_EQ(Bytes(ReadText(text)), expected);
  EXPECT_EQ(Bytes(ReadThroughPipe(text)), expected);
  // Without a separator line before the next "From ", and up to the end of the file.
  EXPECT_EQ(Bytes(ReadText("From a\n" + WithLength(body, 0) + "From b\nS: 2\n\nb\n")), expected);
  EXPECT_EQ(Bytes(ReadText("From a\n" + WithLength(body, 0))), (Strings{WithLength(body, 0)}));
  EXPECT_EQ(Bytes(ReadText("From a\n" + WithLength(body, 0) + "\n")), (Strings{WithLength(body, 0)}));
  // A body without final newline, exactly counted, at the end of the file.
  const std::string cut = "x\nFrom y\nz";
  EXPECT_EQ(Bytes(ReadText("From a\n" + WithLength(cut, 0))), (Strings{WithLength(cut, 0)}));
  // Before a "From " line such a body needs a newline that line scanning keeps, so the count is
  // one short of where scanning would end, and it is ignored.
  EXPECT_EQ(ReadText("From a\n" + WithLength(cut, 0) + "\n\nFrom b\nS: 2\n\nb\n").size(), 3u);
}

// On a pipe a count pointing far past the next "From " line is checked through a temporary
// file; where none can be made the reader says so, naming the directory and TMPDIR.
TEST(MboxContentLengthTest, APipeLookAheadWithoutATemporaryDirectoryIsAClearError) {
  const std::string body = "line1\nFrom inner@x Sat Nov 28 10:00:00 2026\n" + std::string(64, 'x') + "\n";
  const std::string text = "From a\n" + WithLength(body, 0) + "\nFrom b\nS: 2\n\nb\n";
  TempDir dir;
  const std::string missing = dir / "no-such-directory";
  ::setenv("TMPDIR", missing.c_str(), 1);
  FedPipe pipe(text);
  try {
    ReadFdStreamed(pipe.fd(), "pipe", MboxFlavor::kMboxrd, 0, 16);
    ADD_FAILURE() << "read without a temporary file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kIo) << e.what();
    EXPECT_NE(std::string(e.what()).find("pipe: a temporary file in " + missing + " (TMPDIR)"), std::string::npos)
        << e.what();
  }
  // A message Dovecot wrote, streamed from a pipe, has its Content-Length checked before its first
  // byte is passed on, even one that agrees with the next "From " line; the error says why
  // (helper-139: it claimed the count pointed past that line).
  const std::string dovecot = "X-UID: 1\nContent-Length: 40\n\n" + std::string(39, 'x') + "\n";
  const std::string dovecot_file = "From a Sat Nov 28 10:00:00 2026\n" + dovecot + "\nFrom b Sat Nov 28 10:00:00 2026\nS: 2\n";
  FedPipe dovecot_pipe(dovecot_file);  // keeps a reference
  try {
    ReadFdStreamed(dovecot_pipe.fd(), "pipe", MboxFlavor::kMboxrd, 0, 16);
    ADD_FAILURE() << "read without a temporary file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kIo) << e.what();
    EXPECT_NE(std::string(e.what()).find("to check a Content-Length that decides whether a message Dovecot wrote "
                                         "(X-UID) is read as written"),
              std::string::npos)
        << e.what();
  }
  ::unsetenv("TMPDIR");
}

TEST(MboxContentLengthTest, CrlfFile) {
  const std::string body = "line1\r\nFrom inner\r\nline3\r\n";
  const std::string text = "From a\r\n" + WithLength(body, 0, "\r\n") + "\r\nFrom b\r\nS: 2\r\n\r\nb\r\n";
  EXPECT_EQ(Bytes(ReadText(text)), (Strings{WithLength(body, 0, "\r\n"), "S: 2\r\n\r\nb\r\n"}));
}

TEST(MboxContentLengthTest, WrongValuesFallBackToLineScanning) {
  const std::string body = "line1\nFrom inner\nline3\n";
  for (long delta : {-1L, 1L, 2L, -7L, 1000L}) {
    const std::string text = "From a\n" + WithLength(body, delta) + "\nFrom b\nS: 2\n\nb\n";
    const auto messages = ReadText(text);
    ASSERT_EQ(messages.size(), 3u) << delta;
    EXPECT_EQ(messages[0].bytes, WithLength(body, delta).substr(0, WithLength(body, delta).find("From inner")))
        << delta;
    EXPECT_EQ(messages[1].bytes, "line3\n") << delta;
  }
  // Not digits, or absurdly large: ignored (and no huge allocation).
  for (const std::string& value : {"12abc"s, "999999999999999"s, "9999999999999999999999"s, ""s}) {
    const auto messages = ReadText("From a\nContent-Length: " + value + "\n\nx\nFrom inner\ny\n");
    EXPECT_EQ(messages.size(), 2u) << value;
  }
  // Only a header field counts, and only when the header ends before the next "From ".
  EXPECT_EQ(ReadText("From a\nS: 1\n\nContent-Length: 2\n\nab\nFrom inner\ny\n").size(), 2u);
  EXPECT_EQ(ReadText("From a\nContent-Length: 0\nFrom b\n\n").size(), 2u);
}

TEST(MboxContentLengthTest, LargeMessageSpanningBlocks) {
  std::string body;
  for (int i = 0; body.size() < 3 * MboxReader::kBlockSize; ++i) {
    body += "From line " + std::to_string(i) + " inside the body\n" + std::string(1000, 'q') + "\n";
  }
  const std::string text = "From a\n" + WithLength(body, 0) + "\nFrom b\nS: 2\n\nb\n";
  const Strings expected{WithLength(body, 0), "S: 2\n\nb\n"};
  EXPECT_EQ(Bytes(ReadText(text)), expected);
  EXPECT_EQ(Bytes(ReadThroughPipe(text)), expected);
}

// --- writer ----------------------------------------------------------------------------

// An MboxWriter whose every message is also written with WriteFile (from a memory file) to a
// second output: when it goes, the two outputs must be equal, byte for byte, and WriteFile's
// check must have seen each message's size and digest.
class BothWaysWriter {
 public:
  BothWaysWriter(int fd, const std::string& shown)
      : fd_(fd), out_(::memfd_create("file-way", MFD_CLOEXEC)), in_(::memfd_create("message", MFD_CLOEXEC)),
        writer_(fd, shown), file_writer_(out_.get(), "file-way") {
    start_ = ::lseek(fd, 0, SEEK_CUR);
  }
  ~BothWaysWriter() {
    const off_t end = ::lseek(fd_, 0, SEEK_CUR);
    std::string bytes(static_cast<size_t>(end - start_), '\0');
    PreadAll(fd_, bytes.data(), bytes.size(), start_, "out");
    EXPECT_TRUE(bytes == ReadFromMemory(out_.get())) << "Write() and WriteFile() wrote different mboxes";
  }
  void Write(std::string_view bytes, std::string_view sender, int64_t date) {
    writer_.Write(bytes, sender, date);
    EXPECT_EQ(::ftruncate(in_.get(), 0), 0);
    if (!bytes.empty()) {
      EXPECT_EQ(::pwrite(in_.get(), bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    }
    bool checked = false;
    file_writer_.WriteFile(in_.get(), "message", sender, date, [&](uint64_t size, const Digest& digest) {
      EXPECT_EQ(size, bytes.size());
      EXPECT_TRUE(digest == DigestOf(bytes));
      checked = true;
    });
    EXPECT_TRUE(checked);
  }

 private:
  static std::string ReadFromMemory(int fd) {
    const off_t size = ::lseek(fd, 0, SEEK_END);
    std::string bytes(static_cast<size_t>(size), '\0');
    PreadAll(fd, bytes.data(), bytes.size(), 0, "file-way");
    return bytes;
  }
  int fd_;
  off_t start_ = 0;
  UniqueFd out_, in_;
  MboxWriter writer_, file_writer_;
};

std::string WriteToString(const std::vector<std::pair<std::string, std::string>>& messages, int64_t date = 0) {
  TempDir dir;
  {
    UniqueFd fd = OpenFile(dir / "out", O_RDWR | O_CREAT | O_TRUNC);
    BothWaysWriter writer(fd.get(), dir / "out");
    for (const auto& [bytes, sender] : messages) writer.Write(bytes, sender, date);
  }
  return ReadFile(dir / "out");
}

TEST(MboxWriterTest, ExactOutput) {
  EXPECT_EQ(WriteToString({{"S: 1\n\nbody\n", "a@b"}}, 1795860000),
            "From a@b Sat Nov 28 10:00:00 2026\nS: 1\n\nbody\n\n");
  EXPECT_EQ(WriteToString({{"x\n", "a"}}, 833806227), "From a Mon Jun  3 12:50:27 1996\nx\n\n");
  EXPECT_EQ(WriteToString({{"x\n", "a"}}, -1), "From a Wed Dec 31 23:59:59 1969\nx\n\n");
  EXPECT_EQ(WriteToString({{"x\n", ""}, {"y\n", "a b\tc\r"}}),
            "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nx\n\nFrom a_b_c_ Thu Jan  1 00:00:00 1970\ny\n\n");
  EXPECT_EQ(WriteToString({{"From x\n>From y\nFromage\n a\n>>From z", "s"}}),
            "From s Thu Jan  1 00:00:00 1970 no-final-newline\n>From x\n>>From y\nFromage\n a\n>>>From z\n\n");
  EXPECT_EQ(WriteToString({{"", "s"}}), "From s Thu Jan  1 00:00:00 1970\n\n");
}

// A sender that opens a quote it never closes is an ordinary word: the date after it is still
// read, and what the writer makes of it reads back the same (found by fuzz_mbox).
TEST(MboxReaderTest, UnterminatedQuoteInSenderDoesNotSwallowTheDate) {
  MboxMessage m = ReadText("From \"joe@x.org Mon Jun  3 12:50:27 1996\nS: 1\n\nx\n").at(0);
  EXPECT_EQ(m.envelope_sender, "\"joe@x.org");
  EXPECT_EQ(m.envelope_date, 833806227);
  m = ReadText(WriteToString({{"x\n", "\"a b"}}, 833806227)).at(0);
  EXPECT_EQ(m.envelope_sender, "\"a_b");
  EXPECT_EQ(m.envelope_date, 833806227);
}

TEST(MboxWriterTest, EnvelopeDateReadsBack) {
  TempDir dir;
  const std::vector<int64_t> dates = {0, 1795860000, 833806227, -1, 951782400, 4102444799};
  {
    UniqueFd fd = OpenFile(dir / "out", O_WRONLY | O_CREAT | O_TRUNC);
    MboxWriter writer(fd.get(), dir / "out");
    for (int64_t date : dates) writer.Write("x\n", "someone@example.com", date);
  }
  const auto messages = ReadPath(dir / "out");
  ASSERT_EQ(messages.size(), dates.size());
  for (size_t i = 0; i < dates.size(); ++i) {
    EXPECT_EQ(messages[i].envelope_date, dates[i]);
    EXPECT_EQ(messages[i].envelope_sender, "someone@example.com");
  }
}

// A date whose year is not four digits long (fuzz: year 224 after a message dated 0) is written
// as the epoch: written as it is, its envelope line lost its shape and the message merged.
TEST(MboxWriterTest, DatesOutsideFourDigitYearsAreWrittenAsTheEpoch) {
  TempDir dir;
  const std::vector<int64_t> dates = {0, -55116316800 /* 224-06-01 */, -62135596800 /* 0001-01-01 */,
                                      253402300800 /* 10000-01-01 */, -30610224000 /* 1000-01-01 */,
                                      253402300799, std::numeric_limits<int64_t>::min()};
  {
    UniqueFd fd = OpenFile(dir / "out", O_WRONLY | O_CREAT | O_TRUNC);
    MboxWriter writer(fd.get(), dir / "out");
    for (int64_t date : dates) writer.Write("x\n", "someone@example.com", date);
  }
  const auto messages = ReadPath(dir / "out");
  ASSERT_EQ(messages.size(), dates.size());
  const std::vector<int64_t> expected = {0, 0, 0, 0, -30610224000, 253402300799, 0};
  for (size_t i = 0; i < dates.size(); ++i) EXPECT_EQ(messages[i].envelope_date, expected[i]) << "message " << i;
}

// A message with Dovecot's fields whose Content-Length holds once quoted (it was off by the '>'
// quoting adds) is not read back as written: the writer ends its envelope line with a blank.
TEST(MboxWriterTest, MessagesWithDovecotsFieldsReadBackQuotedOrNot) {
  TempDir dir;
  const std::string body = "From plain\n>From once\nend\n";
  const Strings messages = {
      "X-UID: 1\nContent-Length: " + std::to_string(body.size()) + "\n\n" + body,      // holds before quoting
      "X-UID: 2\nContent-Length: " + std::to_string(body.size() + 2) + "\n\n" + body,  // holds after
      "X-IMAPbase: 1 2\nContent-Length: 4\n\nend\n",                                 // holds either way
  };
  {
    UniqueFd fd = OpenFile(dir / "out", O_RDWR | O_CREAT | O_TRUNC);
    BothWaysWriter writer(fd.get(), dir / "out");
    for (const std::string& m : messages) writer.Write(m, "s", 1795860000);
  }
  EXPECT_EQ(Bytes(ReadPath(dir / "out")), messages);
}

const Strings& EdgeMessages() {
  static const Strings kEdges = {
      "", "\n", "\r\n", "\n\n", "\r\n\r\n", "\n\r\n", "abc", "abc\r", "abc\n\r", "\r", "\0"s, "a\0b\n"s,
      "S: 1\n\nbody\n", "S: 1\n\nbody\n\n", "S: 1\n\nbody", "S: 1\n\nbody\n\n\n",
      "S: 1\r\n\r\nbody\r\n", "S: 1\r\n\r\nbody\r\n\r\n", "S: 1\r\n\r\nbody", "S: 1\r\n\r\nbody\r",
      "From x\n", "From x", ">From x", ">>From x\n", "x\nFrom y\n\n", "x\n>From y\n>>From z\n>>>From w",
      "\nFrom x\n", "From \n\nFrom \n", "no-final-newline", "S: no-final-newline\n\nend no-final-newline",
      "Content-Length: 0\n\nx\n", "Content-Length: 1\n\nx\n", "Content-Length: 3\n\nx\n",
      "Content-Length: 2\n\nx", "Content-Length: 5\n\nx\nFrom y\n", "S: 1\n\n" + std::string(300000, 'z'),
  };
  return kEdges;
}

TEST(MboxWriterTest, RoundTripOfEdgeCases) {
  TempDir dir;
  const Strings& edges = EdgeMessages();
  // Every edge case after every other, so each one also meets each neighbour.
  Strings written;
  {
    UniqueFd fd = OpenFile(dir / "out", O_RDWR | O_CREAT | O_TRUNC);
    BothWaysWriter writer(fd.get(), dir / "out");
    for (const std::string& a : edges) {
      for (const std::string& b : edges) {
        for (const std::string* m : {&a, &b}) {
          writer.Write(*m, "s", 1795860000);
          written.push_back(*m);
        }
      }
    }
  }
  const auto read = ReadPath(dir / "out");
  ASSERT_EQ(read.size(), written.size());
  for (size_t i = 0; i < written.size(); ++i) ASSERT_EQ(read[i].bytes, written[i]) << "message " << i;
}

// A Content-Length that happens to point at the end of a later message must not make the reader
// swallow the messages between: the writer pads that later envelope line.
TEST(MboxWriterTest, ContentLengthPointingAtALaterMessageEnd) {
  const std::string b = "S: b\n\nB body\nFrom inside b\n";
  const std::string c = "S: c\n\nC body\n";
  // Also with a message that is all header: its blank line is the separator the writer adds.
  for (const bool header_only : {false, true}) {
    SCOPED_TRACE(header_only ? "header only" : "with a body");
    auto a_with = [&](uint64_t length) {
      char digits[16];
      std::snprintf(digits, sizeof digits, "%08llu", static_cast<unsigned long long>(length));
      return "Content-Length: " + std::string(digits) + (header_only ? "\n" : "\n\nA body\n");
    };
    // Layout without any padding: every envelope line has the same length.
    const std::string plain = WriteToString({{a_with(0), "s"}, {b, "s"}, {c, "s"}});
    const size_t envelope = plain.find('\n') + 1;
    const uint64_t body_a = envelope + (header_only ? a_with(0).size() + 1 : store::HeaderSize(a_with(0)));
    const uint64_t end_c = plain.size() - 1;  // before the final separator
    const std::string a = a_with(end_c - body_a);

    const std::string guarded = WriteToString({{a, "s"}, {b, "s"}, {c, "s"}});
    EXPECT_EQ(Bytes(ReadText(guarded)), (Strings{a, b, c}));
    // The guard is what made the difference: the same file without the padding reads as one message.
    std::string naive = guarded;
    const size_t padded = naive.rfind(" 1970 \n");
    ASSERT_NE(padded, std::string::npos) << guarded;
    naive.erase(padded + 5, 1);
    EXPECT_EQ(ReadText(naive).size(), 1u);
  }
}

// --- corpus --------------------------------------------------------------------------------

struct CorpusFile {
  std::string source;  // corpus sub-directory
  std::string rel;     // path inside it
  std::string path;    // absolute
};

std::vector<CorpusFile> ManifestFiles() {
  std::vector<CorpusFile> files;
  for (const auto& source : std::filesystem::directory_iterator(STOREMOVE_CORPUS)) {
    std::ifstream manifest(source.path() / "MANIFEST.tsv");
    if (!manifest) continue;
    std::string line;
    std::getline(manifest, line);  // column names
    while (std::getline(manifest, line)) {
      CorpusFile f;
      f.source = source.path().filename().string();
      f.rel = line.substr(0, line.find('\t'));
      f.path = (source.path() / f.rel).string();
      files.push_back(std::move(f));
    }
  }
  std::sort(files.begin(), files.end(), [](const CorpusFile& x, const CorpusFile& y) { return x.path < y.path; });
  return files;
}

#define REQUIRE_CORPUS()                                                                            \
  if (!std::filesystem::is_directory(STOREMOVE_CORPUS)) GTEST_SKIP() << "corpus absent: " << STOREMOVE_CORPUS

// What a reader following mbox.h makes of a split file: mboxrd quoting removed (the splitter kept
// ">From " lines as they were in the mbox), and for the last message of an mbox the separator
// line the splitter kept.
std::string ExpectedFromSplit(std::string split, bool last) {
  std::string out;
  size_t line = 0;
  while (line < split.size()) {
    size_t nl = split.find('\n', line);
    nl = nl == std::string::npos ? split.size() : nl + 1;
    std::string_view text = std::string_view(split).substr(line, nl - line);
    const size_t quotes = text.find_first_not_of('>');
    if (quotes != 0 && quotes != std::string_view::npos && text.substr(quotes).starts_with("From ")) {
      text.remove_prefix(1);
    }
    out.append(text);
    line = nl;
  }
  if (last) {
    if (out.ends_with("\n\n") || out == "\n") out.pop_back();
    else if (out.ends_with("\n\r\n") || out == "\r\n") out.resize(out.size() - 2);
  }
  return out;
}

TEST(MboxCorpusTest, MboxesMatchTheirSplitFiles) {
  REQUIRE_CORPUS();
  // source -> directory of the split files
  const std::map<std::string, std::string> split_dirs = {{"gnu-mailutils-spool", "messages"},
                                                         {"dovecot-imaptest-mboxes", "messages"},
                                                         {"enron-mbox-derived", "messages"},
                                                         {"mimekit-testdata", "from-mbox"},
                                                         {"spamassassin-testdata", "from-nice-mbox"}};
  std::map<std::string, Strings> splits;  // mbox path -> its split files, in order
  for (const CorpusFile& f : ManifestFiles()) {
    const auto dir = split_dirs.find(f.source);
    if (dir == split_dirs.end() || !f.rel.starts_with(dir->second + "/")) continue;
    // <dir>/<mbox>.NNNN.eml or <dir>/<mbox>/<mbox>.NNNN.eml; other files there are single messages.
    const std::string name = std::filesystem::path(f.rel).filename().string();
    if (name.size() < 10 || !name.ends_with(".eml") || name[name.size() - 9] != '.' ||
        name.find_first_not_of("0123456789", name.size() - 8) != name.size() - 4) {
      continue;
    }
    const std::string mbox =
        std::string(STOREMOVE_CORPUS) + "/" + f.source + "/mbox/" + name.substr(0, name.size() - 9);
    ASSERT_TRUE(std::filesystem::is_regular_file(mbox)) << f.rel;
    splits[mbox].push_back(f.path);
  }
  ASSERT_GE(splits.size(), 60u);
  size_t messages = 0, unescaped = 0, dated = 0;
  for (auto& [mbox, files] : splits) {
    std::sort(files.begin(), files.end());
    const auto read = ReadPath(mbox);
    ASSERT_EQ(read.size(), files.size()) << mbox;
    for (size_t i = 0; i < files.size(); ++i) {
      const std::string split = ReadFile(files[i]);
      const std::string expected = ExpectedFromSplit(split, i + 1 == files.size());
      ASSERT_EQ(read[i].bytes, expected) << files[i];
      if (expected.size() < split.size() && i + 1 < files.size()) ++unescaped;
      if (read[i].envelope_date != 0) ++dated;
      ++messages;
    }
  }
  EXPECT_EQ(messages, 6693u);
  EXPECT_GT(unescaped, 10u);  // enron and mimekit have ">From " lines
  EXPECT_GT(dated, 6000u);    // almost every envelope line carries an asctime date
}

TEST(MboxCorpusTest, EveryMboxFileParses) {
  REQUIRE_CORPUS();
  size_t files = 0, not_mbox = 0, messages = 0;
  for (const auto& source : std::filesystem::directory_iterator(STOREMOVE_CORPUS)) {
    if (!std::filesystem::is_directory(source.path() / "mbox")) continue;
    for (const auto& entry : std::filesystem::directory_iterator(source.path() / "mbox")) {
      if (!entry.is_regular_file()) continue;
      const std::string path = entry.path().string();
      std::string text = ReadFile(path);
      if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);  // mimekit's unmunged.mbox.txt
      ++files;
      if (!text.empty() && !text.starts_with("From ")) {
        // neomutt's skeletons include plain text files named *.mbox
        try {
          ReadPath(path);
          ADD_FAILURE() << "accepted " << path;
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), Errc::kCorrupt) << path;
          EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
        }
        ++not_mbox;
        continue;
      }
      size_t from_lines = text.starts_with("From ") ? 1 : 0;
      for (size_t p = text.find("\nFrom "); p != std::string::npos; p = text.find("\nFrom ", p + 1)) ++from_lines;
      const auto read = ReadPath(path);
      // No corpus mbox has a Content-Length that spans a "From " line.
      EXPECT_EQ(read.size(), from_lines) << path;
      messages += read.size();
    }
  }
  EXPECT_GE(files, 75u);
  EXPECT_EQ(not_mbox, 3u);
  EXPECT_EQ(messages, 6698u);
}

// Single messages that begin with an envelope line are one-message mboxes.
TEST(MboxCorpusTest, MessagesWithEnvelopeLinesReadAsMboxes) {
  REQUIRE_CORPUS();
  size_t checked = 0;
  for (const CorpusFile& f : ManifestFiles()) {
    const std::string text = ReadFile(f.path);
    if (!text.starts_with("From ")) continue;
    const auto read = ReadPath(f.path);
    ASSERT_GE(read.size(), 1u) << f.path;
    const size_t sender = text.find_first_not_of(" \t", 5);  // "From  : John Doe" has two spaces
    EXPECT_EQ(read[0].envelope_sender, text.substr(sender, text.find_first_of(" \t\r\n", sender) - sender)) << f.path;
    ++checked;
  }
  EXPECT_GT(checked, 50u);
}

TEST(MboxCorpusTest, RoundTripOfEveryMessage) {
  REQUIRE_CORPUS();
  const std::vector<CorpusFile> files = ManifestFiles();
  ASSERT_GT(files.size(), 10000u);
  TempDir dir;
  const std::string out = dir / "all.mbox";
  size_t unterminated = 0, crlf = 0, nul = 0, from_lines = 0, quoted = 0;
  {
    UniqueFd fd = OpenFile(out, O_RDWR | O_CREAT | O_TRUNC);
    BothWaysWriter writer(fd.get(), out);
    int64_t date = 1000000000;
    for (const CorpusFile& f : files) {
      const std::string bytes = ReadFile(f.path);
      writer.Write(bytes, f.source + "@corpus.example", date);
      date += 3607;
      if (!bytes.empty() && bytes.back() != '\n') ++unterminated;
      if (bytes.find("\r\n") != std::string::npos) ++crlf;
      if (bytes.find('\0') != std::string::npos) ++nul;
      if (bytes.starts_with("From ") || bytes.find("\nFrom ") != std::string::npos) ++from_lines;
      if (bytes.find("\n>From ") != std::string::npos || bytes.find("\n>>From ") != std::string::npos) ++quoted;
    }
    for (const std::string& edge : EdgeMessages()) writer.Write(edge, "edge", date);
  }
  // The corpus must really contain the hard cases this test is meant to cover.
  EXPECT_GT(unterminated, 0u);
  EXPECT_GT(crlf, 100u);
  EXPECT_GT(nul, 0u);
  EXPECT_GT(from_lines, 50u);
  EXPECT_GT(quoted, 5u);

  UniqueFd fd = OpenFile(out, O_RDONLY);
  MboxReader reader(fd.get(), out);
  MboxMessage m;
  int64_t date = 1000000000;
  for (const CorpusFile& f : files) {
    ASSERT_TRUE(reader.Next(&m)) << "missing " << f.path;
    ASSERT_EQ(m.bytes, ReadFile(f.path)) << f.path;
    ASSERT_EQ(m.envelope_sender, f.source + "@corpus.example");
    ASSERT_EQ(m.envelope_date, date);
    date += 3607;
  }
  for (const std::string& edge : EdgeMessages()) {
    ASSERT_TRUE(reader.Next(&m));
    ASSERT_EQ(m.bytes, edge);
  }
  EXPECT_FALSE(reader.Next(&m));
}

}  // namespace
}  // namespace storemove::interop
