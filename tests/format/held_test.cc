// The held record (docs/stream-format.md §5 held): valid only in session streams, takes a
// content_id, counted with messages in folder-end and trailer, and refused everywhere else.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "format/format.h"
#include "tests/format/stream_testing.h"
#include "util/bytes.h"
#include "util/digest.h"
#include "util/error.h"

namespace storemove::format {
namespace {

using namespace testing;  // NOLINT: the helpers of stream_testing.h
using Event = Decoder::Event;

std::string CorruptError(std::string_view stream) {
  try {
    DecodeAll(stream);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kCorrupt) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "stream decoded without an error";
  return "";
}

::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

const std::string kSent = "Subject: sent\r\n\r\nbody one\r\n";
const std::string kHeldBody = "Subject: held\r\n\r\nthe receiver has this\r\n";

HeldRecord Held(uint32_t uid) {
  HeldRecord h;
  h.uid = uid;
  h.flags = 0x05;
  h.user_flags = 0x8000000000000001ull;
  h.internal_date = 1712345600;
  h.sent_date = -7;
  h.save_time = 1712345999;
  h.size = kHeldBody.size();
  h.header_size = 17;
  h.digest = DigestOf(kHeldBody);
  for (size_t i = 0; i < h.sha256.size(); ++i) h.sha256[i] = uint8_t(0xa0 + i);
  return h;
}

// joe/INBOX: message uid 1 (body), held uid 2, link uid 3 to the held content; folder-end.
std::string SessionStream(StreamKind kind = StreamKind::kSession) {
  StringSink sink;
  Encoder e(sink);
  StreamHeader header;
  header.kind = kind;
  e.WriteHeader(header);
  FolderRecord folder;
  folder.user = "joe";
  folder.folder = "INBOX";
  e.WriteFolder(folder);
  MessageRecord m;
  m.uid = 1;
  m.size = kSent.size();
  m.digest = DigestOf(kSent);
  e.BeginMessage(m);
  e.BodyChunk(kSent);
  e.EndMessage();
  uint64_t id = e.WriteHeld(Held(2));
  EXPECT_EQ(id, 2u);
  LinkRecord link = Held(3);
  link.content_id = id;
  e.WriteLink(link);
  e.EndFolder();
  e.Finish();
  return sink.Take();
}

TEST(FormatHeld, RoundTripInASessionStream) {
  Decoded d = DecodeAll(SessionStream());
  EXPECT_EQ(d.header.kind, StreamKind::kSession);
  ASSERT_EQ(d.held.size(), 1u);
  HeldRecord want = Held(2);
  want.content_id = 2;
  EXPECT_EQ(d.held[0], want);
  ASSERT_EQ(d.links.size(), 1u);
  EXPECT_EQ(d.links[0].content_id, 2u);
  // Held records count with messages: both introduce a content_id. Their bytes are in `bytes`,
  // not in body_bytes.
  ASSERT_EQ(d.folder_ends.size(), 1u);
  EXPECT_EQ(d.folder_ends[0], Ends(2, 1, kSent.size() + 2 * kHeldBody.size()));
  EXPECT_EQ(d.trailer.messages, 2u);
  EXPECT_EQ(d.trailer.links, 1u);
  EXPECT_EQ(d.trailer.body_bytes, kSent.size());
  std::vector<Event> events = {Event::kHeader, Event::kFolder, Event::kMessage,   Event::kBody,
                               Event::kMessageEnd, Event::kHeld, Event::kLink,    Event::kFolderEnd,
                               Event::kEnd};
  EXPECT_EQ(d.events, events);
}

TEST(FormatHeld, PayloadLayoutIsTheMessageFieldsThenSha256) {
  Framed f = Split(SessionStream());
  const Frame& frame = f.frames[FindFrame(f, kHeldType)];
  ASSERT_EQ(frame.payload.size(), 105u);
  const uint8_t* p = reinterpret_cast<const uint8_t*>(frame.payload.data());
  EXPECT_EQ(GetU64(p + 0), 2u);   // content_id
  EXPECT_EQ(GetU32(p + 8), 2u);   // uid
  EXPECT_EQ(p[12], 0x05);         // flags
  EXPECT_EQ(GetU64(p + 45), kHeldBody.size());
  EXPECT_EQ(0, std::memcmp(p + 57, DigestOf(kHeldBody).bytes.data(), 16));
  for (size_t i = 0; i < 32; ++i) EXPECT_EQ(p[73 + i], 0xa0 + i) << i;
}

TEST(FormatHeld, EncoderRefusesHeldOutsideASessionStream) {
  for (StreamKind kind : {StreamKind::kFull, StreamKind::kManifest}) {
    StringSink sink;
    Encoder e(sink);
    StreamHeader header;
    header.kind = kind;
    e.WriteHeader(header);
    e.WriteFolder({});
    try {
      e.WriteHeld(Held(1));
      ADD_FAILURE() << "held accepted in stream kind " << int(kind);
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), Errc::kInvalidArgument);
      EXPECT_TRUE(Contains(err.what(), "outside a session stream"));
    }
  }
}

TEST(FormatHeld, DecoderRefusesHeldOutsideASessionStream) {
  // The same records under a full-stream header: the held record is refused by the stream kind.
  Framed f = Split(SessionStream());
  f.frames[0].payload[0] = char(StreamKind::kFull);
  EXPECT_TRUE(Contains(CorruptError(Join(f)), "held record outside a session stream at record 5"));
  f.frames[0].payload[0] = char(StreamKind::kManifest);
  f.frames.erase(f.frames.begin() + FindFrame(f, kBodyType));
  EXPECT_TRUE(Contains(CorruptError(Join(f)), "held record outside a session stream"));
}

TEST(FormatHeld, MisplacedOrMalformedHeldRecordsAreRejected) {
  Framed f = Split(SessionStream());
  size_t held = FindFrame(f, kHeldType);
  {
    Framed g = f;  // before the folder
    g.frames.insert(g.frames.begin() + 1, g.frames[held]);
    g.frames.erase(g.frames.begin() + held + 1);
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "held record not allowed outside a folder"));
  }
  {
    Framed g = f;  // inside the open message
    std::swap(g.frames[held], g.frames[held - 1]);
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "held record not allowed inside message uid 1"));
  }
  {
    Framed g = f;
    g.frames[held].payload.resize(100);
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "bad held record: payload ends inside sha256"));
  }
  {
    Framed g = f;
    g.frames[held].payload += "x";
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "bad held record: 1 unexpected bytes after the last field"));
  }
  {
    Framed g = f;
    PutU64(reinterpret_cast<uint8_t*>(g.frames[held].payload.data()), 7);
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "held uid 2: content_id 7 out of sequence (expected 2)"));
  }
  {
    Framed g = f;  // folder-end counting the held record as a link
    std::string& end = g.frames[FindFrame(g, kFolderEndType)].payload;
    PutU64(reinterpret_cast<uint8_t*>(end.data()), 1);
    PutU64(reinterpret_cast<uint8_t*>(end.data()) + 8, 2);
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "folder-end of joe/INBOX counts 1 messages, 2 links"));
  }
  {
    Framed g = f;  // a held record's digest differs from what the link says
    g.frames[held].payload[57] ^= 1;
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "link uid 3: digest and size differ from those of content_id 2"));
  }
}

}  // namespace
}  // namespace storemove::format
