// Format 1.1 (docs/stream-format.md §5 folder, meta, folder-end; §7.12; §9): folder modseqs,
// incremental and unchanged folders, meta records, folder-end summaries, and 1.0 streams.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
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

constexpr uint8_t kMetaType = 0x0b;

::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

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

std::string InvalidArgument(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kInvalidArgument) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

uint8_t* Bytes(std::string& s, size_t offset = 0) { return reinterpret_cast<uint8_t*>(s.data()) + offset; }

MessageRecord Msg(uint32_t uid, const std::string& body, uint8_t flags = 0x04) {
  MessageRecord m;
  m.uid = uid;
  m.flags = flags;
  m.user_flags = uid & 3;
  m.internal_date = 1700000000 + uid;
  m.sent_date = 1690000000 + uid;
  m.save_time = 1700000100 + uid;
  m.size = body.size();
  m.header_size = 0;
  m.digest = DigestOf(body);
  return m;
}

FolderRecord Folder(const std::string& name, uint64_t modseq, uint64_t since) {
  FolderRecord f;
  f.user = "joe";
  f.folder = name;
  f.partition = "primary";
  f.uidvalidity = 42;
  f.uidnext = 9;
  f.count = 5;
  f.bytes = 100;
  f.user_flag_names = {"$Work", "$Late"};
  f.modseq = modseq;
  f.since_modseq = since;
  return f;
}

FolderSummaryField Summary(uint32_t count) {
  FolderSummaryField s;
  s.count = count;
  s.uidvalidity = 42;
  s.uidnext = 9;
  s.bytes = 1234567;
  s.digest = DigestOf("summary " + std::to_string(count));
  return s;
}

// The 1.1 sample: joe/INBOX incremental (meta 1, message 2, meta 3, link 5 to message 2, meta 7)
// with a summary; joe/Sent unchanged with a summary; joe/Drafts complete with a summary;
// joe/Old complete without one.
struct Sample11 {
  std::vector<FolderRecord> folders = {Folder("INBOX", 17, 11), Folder("Sent", 5, 5), Folder("Drafts", 3, 0),
                                       Folder("Old", 0, 0)};
  std::vector<MetaRecord> metas = {Msg(1, "one"), Msg(3, "three", 0x06), Msg(7, "seven", 0x00)};
  MessageRecord message = Msg(2, "two\r\n");
  std::vector<FolderEnd> ends;
};

std::string Encode11(Sample11* s) {
  StringSink sink;
  Encoder e(sink);
  StreamHeader h;
  h.created = 1;
  e.WriteHeader(h);
  e.WriteFolder(s->folders[0]);
  e.WriteMeta(s->metas[0]);
  s->message.content_id = e.BeginMessage(s->message);
  e.BodyChunk("two\r\n");
  e.EndMessage();
  e.WriteMeta(s->metas[1]);
  LinkRecord link = s->message;
  link.uid = 5;
  e.WriteLink(link);
  e.WriteMeta(s->metas[2]);
  e.EndFolder(Summary(5));
  e.WriteFolder(s->folders[1]);
  e.EndFolder(Summary(2));
  e.WriteFolder(s->folders[2]);
  e.EndFolder(Summary(0));
  e.WriteFolder(s->folders[3]);
  e.EndFolder();
  e.Finish();
  FolderEnd inbox;
  inbox.messages = 1;
  inbox.links = 1;
  inbox.bytes = 2 * s->message.size;
  inbox.metas = 3;
  inbox.has_summary = true;
  inbox.summary = Summary(5);
  FolderEnd sent;
  sent.has_summary = true;
  sent.summary = Summary(2);
  FolderEnd drafts;
  drafts.has_summary = true;
  drafts.summary = Summary(0);
  s->ends = {inbox, sent, drafts, FolderEnd{}};
  return sink.Take();
}

TEST(Format11, RoundTripOfEveryFolderKindMetaAndSummary) {
  Sample11 s;
  std::string stream = Encode11(&s);
  Decoded d = DecodeAll(stream);
  EXPECT_EQ(d.header.version_minor, 1);
  EXPECT_EQ(d.folders, s.folders);
  EXPECT_TRUE(d.folders[0].since_modseq != 0 && !d.folders[0].unchanged());
  EXPECT_TRUE(d.folders[1].unchanged());
  EXPECT_FALSE(d.folders[2].unchanged());
  EXPECT_EQ(d.metas, s.metas);
  EXPECT_EQ(d.messages, std::vector<MessageRecord>{s.message});
  EXPECT_EQ(d.folder_ends, s.ends);
  // Meta records are not messages: no content id, nothing in the trailer but the record count.
  EXPECT_EQ(d.trailer.messages, 1u);
  EXPECT_EQ(d.trailer.links, 1u);
  std::vector<Event> events = {Event::kHeader, Event::kFolder,     Event::kMeta,      Event::kMessage,
                               Event::kBody,   Event::kMessageEnd, Event::kMeta,      Event::kLink,
                               Event::kMeta,   Event::kFolderEnd,  Event::kFolder,    Event::kFolderEnd,
                               Event::kFolder, Event::kFolderEnd,  Event::kFolder,    Event::kFolderEnd,
                               Event::kEnd};
  EXPECT_EQ(d.events, events);
  for (size_t step : {1, 7}) {
    TrickleSource source(stream, step);
    EXPECT_EQ(DecodeAll(source).folder_ends, s.ends) << step;
  }
}

// The bytes of the 1.1 fields, as docs/stream-format.md lays them out.
TEST(Format11, LayoutMatchesTheDocument) {
  Sample11 s;
  Framed f = Split(Encode11(&s));
  EXPECT_EQ(GetU16(Bytes(f.prelude, 10)), 1);
  const std::string& folder = f.frames[FindFrame(f, kFolderType)].payload;
  ASSERT_GE(folder.size(), 16u);
  EXPECT_EQ(GetU64(reinterpret_cast<const uint8_t*>(folder.data()) + folder.size() - 16), 17u);  // modseq
  EXPECT_EQ(GetU64(reinterpret_cast<const uint8_t*>(folder.data()) + folder.size() - 8), 11u);   // since_modseq
  std::string meta = f.frames[FindFrame(f, kMetaType)].payload;
  ASSERT_EQ(meta.size(), 73u);
  EXPECT_EQ(GetU64(Bytes(meta, 0)), 0u);  // content_id
  EXPECT_EQ(GetU32(Bytes(meta, 8)), 1u);  // uid
  EXPECT_EQ(std::memcmp(Bytes(meta, 57), s.metas[0].digest.bytes.data(), 16), 0);
  std::string end = f.frames[FindFrame(f, kFolderEndType)].payload;
  ASSERT_EQ(end.size(), 69u);
  EXPECT_EQ(GetU64(Bytes(end, 0)), 1u);   // messages
  EXPECT_EQ(GetU64(Bytes(end, 8)), 1u);   // links
  EXPECT_EQ(GetU64(Bytes(end, 24)), 3u);  // metas
  EXPECT_EQ(end[32], 1);                  // has_summary
  FolderSummaryField sum = Summary(5);
  EXPECT_EQ(GetU32(Bytes(end, 33)), sum.count);
  EXPECT_EQ(GetU32(Bytes(end, 37)), sum.uidvalidity);
  EXPECT_EQ(GetU32(Bytes(end, 41)), sum.uidnext);
  EXPECT_EQ(GetU64(Bytes(end, 45)), sum.bytes);
  EXPECT_EQ(std::memcmp(Bytes(end, 53), sum.digest.bytes.data(), 16), 0);
  std::string none = f.frames[FindFrame(f, kFolderEndType, 3)].payload;  // joe/Old: no summary
  EXPECT_EQ(none, std::string(69, '\0'));
}

// A 1.0 stream (minor 0, no 1.1 fields) reads with zeros; 1.1 fields in a 1.0 stream are
// unexpected bytes, and a 1.1 stream without them ends too early.
TEST(Format11, VersionOneZeroStreamsStillRead) {
  Framed f = Split(EncodeSample());
  Framed old = f;
  PutU16(Bytes(old.prelude, 10), 0);
  for (Frame& frame : old.frames) {
    if (frame.type == kFolderType) frame.payload.resize(frame.payload.size() - 16);
    if (frame.type == kFolderEndType) frame.payload.resize(24);
  }
  Decoded d = DecodeAll(Join(old));
  Decoded now = DecodeAll(EncodeSample());
  EXPECT_EQ(d.header.version_minor, 0);
  EXPECT_EQ(d.folders, now.folders);  // the sample's folders have modseq 0 and since 0
  EXPECT_EQ(d.folder_ends, now.folder_ends);
  EXPECT_EQ(d.messages, now.messages);

  Framed bad = f;
  PutU16(Bytes(bad.prelude, 10), 0);  // 1.1 payloads claiming 1.0
  EXPECT_TRUE(Contains(CorruptError(Join(bad)), "bad folder record: 16 unexpected bytes after the last field"));
  bad = old;
  PutU16(Bytes(bad.prelude, 10), 1);  // 1.0 payloads claiming 1.1
  EXPECT_TRUE(Contains(CorruptError(Join(bad)), "bad folder record: payload ends inside modseq"));
  bad = f;
  for (Frame& frame : bad.frames)
    if (frame.type == kFolderEndType) frame.payload.resize(40);
  EXPECT_TRUE(Contains(CorruptError(Join(bad)), "bad folder-end record: payload ends inside summary"));
}

TEST(Format11, EncoderRefusesWhatTheFormatForbids) {
  Sample11 s;
  StringSink sink;
  Encoder e(sink);
  e.WriteHeader(StreamHeader{});
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteMeta(s.metas[0]); }), "WriteMeta() not allowed outside a folder"));
  FolderRecord backwards = Folder("X", 3, 4);
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteFolder(backwards); }), "since_modseq 4 above modseq 3"));
  e.WriteFolder(Folder("Complete", 3, 0));
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteMeta(s.metas[0]); }), "WriteMeta() outside an incremental folder"));
  e.EndFolder();
  e.WriteFolder(Folder("Unchanged", 3, 3));
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteMeta(s.metas[0]); }), "not allowed in an unchanged folder"));
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.BeginMessage(s.message); }), "not allowed in an unchanged folder"));
  e.EndFolder(Summary(1));
  e.WriteFolder(Folder("Incremental", 3, 2));
  MetaRecord with_id = s.metas[0];
  with_id.content_id = 1;
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteMeta(with_id); }), "a meta record carries no content"));
  e.WriteMeta(s.metas[1]);  // uid 3
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteMeta(s.metas[0]); }), "not above the previous uid 3"));
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.BeginMessage(s.message); }), "not above the previous uid 3"));
  e.EndFolder();
  e.Finish();  // what was refused left no trace: the stream decodes
  Decoded d = DecodeAll(sink.data());
  EXPECT_EQ(d.metas.size(), 1u);
  EXPECT_EQ(d.folders.size(), 3u);
}

TEST(Format11, DecoderRefusesWhatTheFormatForbids) {
  Sample11 s;
  const Framed f = Split(Encode11(&s));
  const size_t inbox = FindFrame(f, kFolderType), sent = FindFrame(f, kFolderType, 1);
  const size_t complete = FindFrame(f, kFolderType, 2);
  const size_t meta = FindFrame(f, kMetaType);
  const size_t end = FindFrame(f, kFolderEndType);
  auto edited = [&](const std::function<void(Framed&)>& edit) {
    Framed g = f;
    edit(g);
    return CorruptError(Join(g));
  };
  auto at_end = [](Framed& g, size_t i, size_t back) {  // bytes from the end of a folder payload
    return Bytes(g.frames[i].payload, g.frames[i].payload.size() - back);
  };
  EXPECT_TRUE(Contains(edited([&](Framed& g) { PutU64(at_end(g, inbox, 8), 18); }),
                       "bad folder record: since_modseq 18 above modseq 17 at record 1"));
  EXPECT_TRUE(Contains(edited([&](Framed& g) { PutU64(Bytes(g.frames[meta].payload, 0), 1); }),
                       "meta uid 1: content_id 1 is not 0"));
  EXPECT_TRUE(Contains(edited([&](Framed& g) { PutU32(Bytes(g.frames[meta + 4].payload, 8), 2); }),
                       "meta uid 2: not above the previous uid 2 of the folder"));
  EXPECT_TRUE(Contains(edited([&](Framed& g) { PutU64(at_end(g, inbox, 8), 0); }),
                       "meta record in folder joe/INBOX, which is not incremental"));
  // An unchanged folder holds nothing: a meta or message moved into joe/Sent is refused.
  EXPECT_TRUE(Contains(edited([&](Framed& g) { g.frames.insert(g.frames.begin() + sent + 1, g.frames[meta]); }),
                       "meta record in unchanged folder joe/Sent (since_modseq == modseq: no items)"));
  EXPECT_TRUE(Contains(edited([&](Framed& g) { g.frames.insert(g.frames.begin() + sent + 1, g.frames[meta + 5]); }),
                       "link record in unchanged folder joe/Sent"));
  // A complete folder may not hold meta records either.
  EXPECT_TRUE(Contains(edited([&](Framed& g) { g.frames.insert(g.frames.begin() + complete + 1, g.frames[meta]); }),
                       "meta record in folder joe/Drafts, which is not incremental"));
  EXPECT_TRUE(Contains(edited([&](Framed& g) {
                         // joe/INBOX made unchanged: its first item is refused.
                         PutU64(at_end(g, inbox, 16), 11);
                       }),
                       "meta record in unchanged folder joe/INBOX"));
  EXPECT_TRUE(Contains(edited([&](Framed& g) { PutU64(Bytes(g.frames[end].payload, 24), 2); }),
                       "folder-end of joe/INBOX counts 1 messages, 1 links, 10 bytes, 2 metas; the stream carried 1, 1, "
                       "10, 3"));
  EXPECT_TRUE(Contains(edited([&](Framed& g) { g.frames[end].payload[32] = 2; }),
                       "bad folder-end record: has_summary 2 is neither 0 nor 1"));
  EXPECT_TRUE(Contains(edited([&](Framed& g) { g.frames[end].payload[32] = 0; }),
                       "bad folder-end record: summary fields set but has_summary is 0"));
  EXPECT_TRUE(Contains(edited([&](Framed& g) { g.frames.erase(g.frames.begin() + meta); }),
                       "folder-end of joe/INBOX counts"));
}

// Single-byte damage and truncation anywhere in a 1.1 stream are caught.
TEST(Format11, EveryFlipAndCutIsDetected) {
  Sample11 s;
  std::string stream = Encode11(&s);
  for (size_t n = 0; n < stream.size(); ++n)
    ASSERT_EQ(CorruptError(std::string_view(stream).substr(0, n)).rfind("stream: truncated", 0), 0u) << n;
  for (size_t at = 0; at < stream.size(); ++at) {
    std::string bad = stream;
    bad[at] = static_cast<char>(bad[at] ^ 0x01);
    ASSERT_FALSE(CorruptError(bad).empty()) << at;
  }
}

}  // namespace
}  // namespace storemove::format
