// Encoder/decoder round trips and everything the decoder must refuse.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <sstream>
#include <string>

#include "format/format.h"
#include "tests/format/stream_testing.h"
#include "util/bytes.h"
#include "util/digest.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::format {
namespace {

using namespace testing;  // NOLINT: the helpers of stream_testing.h
using Event = Decoder::Event;

::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

// Decodes to the end and returns the kCorrupt error's message; a stream that decodes, or any
// other error, fails the test.
std::string CorruptError(std::string_view stream) {
  try {
    DecodeAll(stream);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kCorrupt) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("stream: ", 0), 0u) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "stream decoded without an error";
  return "";
}

// Runs `call` and returns the kInvalidArgument message it throws.
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

// Message and link payload field offsets (docs/stream-format.md §message).
constexpr size_t kContentIdAt = 0, kUidAt = 8, kFlagsAt = 12, kSizeAt = 45, kHeaderSizeAt = 53, kDigestAt = 57;

// --- round trips -------------------------------------------------------------------------

TEST(FormatRoundTrip, EveryRecordTypeAndField) {
  Sample s = MakeSample();
  std::string stream = EncodeSample();
  Decoded d = DecodeAll(stream);

  EXPECT_EQ(d.header, s.header);
  EXPECT_EQ(d.users, s.users);
  EXPECT_EQ(d.folders, s.folders);
  EXPECT_EQ(d.messages, s.messages);
  EXPECT_EQ(d.bodies, s.bodies);
  EXPECT_EQ(d.links, s.links);
  uint64_t inbox_bytes = s.bodies[0].size() + s.bodies[1].size();
  uint64_t sent_bytes = s.links[0].size + s.bodies[3].size();
  std::vector<FolderEnd> ends = {Ends(3, 0, inbox_bytes), Ends(1, 1, sent_bytes), Ends(0, 0, 0)};
  EXPECT_EQ(d.folder_ends, ends);
  EXPECT_EQ(d.trailer.users, 2u);
  EXPECT_EQ(d.trailer.folders, 3u);
  EXPECT_EQ(d.trailer.messages, 4u);
  EXPECT_EQ(d.trailer.links, 1u);
  EXPECT_EQ(d.trailer.body_bytes, inbox_bytes + s.bodies[3].size());
  EXPECT_EQ(d.trailer.records, Split(stream).frames.size() - 1);
  EXPECT_EQ(d.trailer.stream_digest, DigestOf(stream.data(), FrameOffset(Split(stream), d.trailer.records)));

  std::vector<Event> events = {
      Event::kHeader,  Event::kUser,       Event::kFolder,     Event::kMessage, Event::kBody,
      Event::kMessageEnd, Event::kMessage, Event::kBody,       Event::kMessageEnd, Event::kMessage,
      Event::kMessageEnd, Event::kFolderEnd, Event::kFolder,   Event::kLink,    Event::kMessage,
      Event::kBody,    Event::kMessageEnd, Event::kFolderEnd,  Event::kUser,    Event::kFolder,
      Event::kFolderEnd, Event::kEnd};
  EXPECT_EQ(d.events, events);
}

TEST(FormatRoundTrip, ReadsThroughShortReads) {
  std::string stream = EncodeSample();
  Decoded whole = DecodeAll(stream);
  for (size_t step : {1, 3, 5, 4096}) {
    TrickleSource source(stream, step);
    Decoded d = DecodeAll(source);
    EXPECT_EQ(d.messages, whole.messages) << step;
    EXPECT_EQ(d.bodies, whole.bodies) << step;
    EXPECT_EQ(d.trailer, whole.trailer) << step;
  }
}

TEST(FormatRoundTrip, ManifestCarriesRecordsWithoutBodies) {
  Sample s = MakeSample(StreamKind::kManifest);
  Decoded d = DecodeAll(EncodeSample(StreamKind::kManifest));
  EXPECT_EQ(d.header.kind, StreamKind::kManifest);
  EXPECT_EQ(d.messages, s.messages);  // sizes and digests of the bodies left out
  EXPECT_EQ(d.links, s.links);
  EXPECT_EQ(d.body_events, 0u);
  EXPECT_EQ(d.trailer.body_bytes, 0u);
  EXPECT_EQ(d.trailer.messages, 4u);

  StringSink sink;
  Encoder e(sink);
  e.WriteHeader(s.header);
  e.WriteFolder(s.folders[0]);
  e.BeginMessage(s.messages[0]);
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.BodyChunk(s.bodies[0]); }), "manifest"));
}

TEST(FormatRoundTrip, LargeMessageInManyChunksWithoutHoldingIt) {
  constexpr uint64_t kSize = 5 * (uint64_t{1} << 20) + 123;
  constexpr size_t kPiece = 7777;
  Hasher hasher;
  for (uint64_t at = 0; at < kSize; at += kPiece) {
    std::string piece = PseudoRandom(11, at, std::min<uint64_t>(kPiece, kSize - at));
    hasher.Update(piece.data(), piece.size());
  }
  StringSink sink;
  Encoder e(sink);
  e.WriteHeader(StreamHeader{});
  FolderRecord folder;
  folder.user = "big";
  folder.folder = "INBOX";
  e.WriteFolder(folder);
  MessageRecord m;
  m.uid = 1;
  m.size = kSize;
  m.digest = hasher.Final();
  e.BeginMessage(m);
  for (uint64_t at = 0; at < kSize; at += kPiece)
    e.BodyChunk(PseudoRandom(11, at, std::min<uint64_t>(kPiece, kSize - at)));
  e.EndMessage();
  e.EndFolder();
  e.Finish();
  EXPECT_EQ(e.bytes(), sink.data().size());

  StringSource source(sink.data());
  ResetLargestAllocation();
  Decoder d(source);
  uint64_t offset = 0;
  size_t chunks = 0;
  Event event;
  while ((event = d.Next()) != Event::kEnd) {
    if (event != Event::kBody) continue;
    ++chunks;
    ASSERT_LE(d.body().size(), kMaxBodyChunk);
    ASSERT_EQ(d.body(), PseudoRandom(11, offset, d.body().size())) << "at " << offset;
    offset += d.body().size();
  }
  EXPECT_EQ(offset, kSize);
  EXPECT_EQ(chunks, 6u);  // five full chunks and the rest
  EXPECT_LT(LargestAllocation(), size_t{3} << 20) << "the decoder must not hold the whole 5 MiB message";
}

TEST(FormatRoundTrip, DecoderAcceptsAnyChunking) {
  Framed f = Split(EncodeSample());
  size_t body = FindFrame(f, kBodyType, 1);  // the 5 KB message in one body record
  std::string payload = f.frames[body].payload;
  f.frames[body].payload = payload.substr(0, 1);
  f.frames.insert(f.frames.begin() + body + 1, {kBodyType, payload.substr(1, 2000)});
  f.frames.insert(f.frames.begin() + body + 2, {kBodyType, payload.substr(2001)});
  Decoded d = DecodeAll(Join(f));
  EXPECT_EQ(d.bodies, MakeSample().bodies);
}

// The bytes of a minimal stream written from docs/stream-format.md alone.
TEST(FormatLayout, MinimalStreamMatchesTheDocument) {
  std::string doc("\x89SMV\r\n\x1a\n\x01\x00\x01\x00", 12);
  std::string header;
  AppendU8(&header, 1);          // kind: manifest
  AppendU64(&header, 1000);      // created
  AppendU64(&header, uint64_t(-5));  // since
  AppendU16(&header, 1);
  header += "h";                 // source_host
  AppendU16(&header, 2);
  header += "id";                // store_id
  AppendU32(&header, 1);
  AppendU16(&header, 3);
  header += "joe";               // selection
  size_t start = doc.size();
  AppendU8(&doc, 0x01);
  AppendU32(&doc, static_cast<uint32_t>(header.size()));
  doc += header;
  AppendU32(&doc, Checksum32(doc.data() + start, doc.size() - start, 0));
  Digest digest = DigestOf(doc);
  std::string trailer;
  AppendU64(&trailer, 1);  // records
  for (int i = 0; i < 5; ++i) AppendU64(&trailer, 0);
  trailer.append(reinterpret_cast<const char*>(digest.bytes.data()), 16);
  start = doc.size();
  AppendU8(&doc, 0x09);
  AppendU32(&doc, static_cast<uint32_t>(trailer.size()));
  doc += trailer;
  AppendU32(&doc, Checksum32(doc.data() + start, doc.size() - start, 1));

  StreamHeader h;
  h.kind = StreamKind::kManifest;
  h.created = 1000;
  h.since = -5;
  h.source_host = "h";
  h.store_id = "id";
  h.selection = {"joe"};
  StringSink sink;
  Encoder e(sink);
  e.WriteHeader(h);
  e.Finish();
  EXPECT_EQ(sink.data(), doc);
  EXPECT_EQ(DecodeAll(doc).header, h);
}

// The annotated dump in docs/stream-format.md §14 is what the encoder writes.
TEST(FormatLayout, DocumentExample) {
  // The source tree's path from CMake: __FILE__ may be relative (ccache's base_dir rewrites it).
  std::string doc_path = std::string(STOREMOVE_SOURCE_DIR) + "/docs/stream-format.md";
  std::string doc = ReadFile(doc_path);
  size_t section = doc.find("## 14. Worked example");
  ASSERT_NE(section, std::string::npos) << doc_path;
  size_t begin = doc.find("```\n", section) + 4, end = doc.find("```", begin);
  // Each dump line: an optional 6-digit offset, then byte pairs until the description.
  std::string bytes;
  std::istringstream lines(doc.substr(begin, end - begin));
  for (std::string line; std::getline(lines, line);) {
    std::istringstream tokens(line);
    std::string token;
    bool first = true;
    while (tokens >> token) {
      bool hex = token.find_first_not_of("0123456789abcdef") == std::string::npos;
      if (first && hex && token.size() == 6) {
        first = false;
        continue;
      }
      first = false;
      if (!hex || token.size() != 2) break;
      bytes.push_back(static_cast<char>(std::stoi(token, nullptr, 16)));
    }
  }
  ASSERT_EQ(bytes.size(), 404u);

  StringSink sink;
  Encoder e(sink);
  StreamHeader h;
  h.created = 1712345678;
  h.source_host = "old";
  h.store_id = "s1";
  h.selection = {"joe"};
  e.WriteHeader(h);
  FolderRecord f;
  f.user = "joe";
  f.folder = "INBOX";
  f.partition = "primary";
  f.uidvalidity = 7;
  f.uidnext = 2;
  f.count = 1;
  f.bytes = 3;
  f.modseq = 9;
  e.WriteFolder(f);
  MessageRecord m;
  m.uid = 1;
  m.flags = 0x04;
  m.internal_date = 1712345600;
  m.size = 3;
  m.digest = DigestOf("hi\n");
  e.BeginMessage(m);
  e.BodyChunk("hi\n");
  e.EndMessage();
  e.EndFolder();
  e.Finish();
  EXPECT_EQ(sink.data(), bytes);
  EXPECT_EQ(DecodeAll(bytes).bodies, std::vector<std::string>{"hi\n"});
}

// --- corruption --------------------------------------------------------------------------

TEST(FormatCorruption, TruncationAtEveryOffset) {
  std::string stream = EncodeSample();
  for (size_t n = 0; n < stream.size(); ++n) {
    std::string error = CorruptError(std::string_view(stream).substr(0, n));
    ASSERT_EQ(error.rfind("stream: truncated", 0), 0u) << "cut at " << n << ": " << error;
  }
}

TEST(FormatCorruption, EverySingleByteFlipIsDetected) {
  std::string stream = EncodeSample();
  for (size_t at = 0; at < stream.size(); ++at) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      std::string bad = stream;
      bad[at] = static_cast<char>(bad[at] ^ mask);
      ASSERT_FALSE(CorruptError(bad).empty()) << "flip " << int(mask) << " at " << at;
    }
  }
}

TEST(FormatCorruption, ReorderedRecordsAreDetected) {
  std::string stream = EncodeSample();
  Framed f = Split(stream);
  size_t joe = FindFrame(f, kUserType, 0), ann = FindFrame(f, kUserType, 1);
  auto raw = [&](size_t i) { return stream.substr(FrameOffset(f, i), 9 + f.frames[i].payload.size()); };

  // Moved bytes keep their checksums, which are seeded with the record index.
  std::string swapped = stream.substr(0, FrameOffset(f, joe)) + raw(ann) +
                        stream.substr(FrameOffset(f, joe + 1), FrameOffset(f, ann) - FrameOffset(f, joe + 1)) +
                        raw(joe) + stream.substr(FrameOffset(f, ann + 1));
  ASSERT_EQ(swapped.size(), stream.size());
  std::string error = CorruptError(swapped);
  EXPECT_TRUE(Contains(error, "user record checksum mismatch"));
  EXPECT_TRUE(Contains(error, "at record 1 (byte " + std::to_string(FrameOffset(f, joe)) + ")"));

  // A record repeated or dropped shifts every later index.
  EXPECT_TRUE(Contains(CorruptError(stream.substr(0, FrameOffset(f, joe + 1)) + raw(joe) +
                                    stream.substr(FrameOffset(f, joe + 1))),
                       "user record checksum mismatch (corrupt, reordered or missing records) at record 2"));
  EXPECT_TRUE(Contains(CorruptError(stream.substr(0, FrameOffset(f, joe)) + stream.substr(FrameOffset(f, joe + 1))),
                       "folder record checksum mismatch (corrupt, reordered or missing records) at record 1"));

  // Re-framed with fresh checksums, a legal reordering is still caught by the stream digest.
  Framed g = f;
  std::swap(g.frames[joe], g.frames[ann]);
  EXPECT_TRUE(Contains(CorruptError(Join(g, /*fix_trailer=*/false)), "stream digest mismatch"));

  // ...and an illegal one by the grammar.
  Framed h = f;
  size_t folder = FindFrame(h, kFolderType), message = FindFrame(h, kMessageType);
  std::swap(h.frames[folder], h.frames[message]);
  EXPECT_TRUE(Contains(CorruptError(Join(h)), "message record not allowed outside a folder at record 2"));
}

TEST(FormatCorruption, AbsurdLengthRejectedBeforeAllocating) {
  std::string stream = EncodeSample();
  std::string bad = stream;
  PutU32(Bytes(bad, 12 + 1), 0xFFFFFFF0u);  // the header record's length
  ResetLargestAllocation();
  EXPECT_TRUE(Contains(CorruptError(bad), "header record length 4294967280 over the limit of 16777216 at record 0"));
  EXPECT_LT(LargestAllocation(), size_t{1} << 20);

  // Within the limit but far beyond the input: the buffer grows only with bytes that arrive.
  bad = stream;
  PutU32(Bytes(bad, 12 + 1), 16u << 20);
  ResetLargestAllocation();
  EXPECT_TRUE(Contains(CorruptError(bad), "truncated in a header record"));
  EXPECT_LT(LargestAllocation(), size_t{1} << 20);

  Framed f = Split(stream);
  bad = stream;
  PutU32(Bytes(bad, FrameOffset(f, FindFrame(f, kBodyType)) + 1), uint32_t(kMaxBodyChunk + 1));
  EXPECT_TRUE(Contains(CorruptError(bad), "body record length 1048577 over the limit of 1048576"));
  bad = stream;
  PutU32(Bytes(bad, FrameOffset(f, FindFrame(f, kMessageType)) + 1), 4097);
  EXPECT_TRUE(Contains(CorruptError(bad), "message record length 4097 over the limit of 4096"));
}

// --- versions ----------------------------------------------------------------------------

TEST(FormatVersion, NewerMinorWithTrailingFieldsIsRead) {
  Framed f = Split(EncodeSample());
  for (Frame& frame : f.frames)
    if (frame.type != kBodyType) frame.payload += std::string("\x01\x00future", 8);
  Framed newer = f;
  PutU16(Bytes(newer.prelude, 10), kVersionMinor + 1);
  Decoded d = DecodeAll(Join(newer));
  Sample s = MakeSample();
  EXPECT_EQ(d.header.version_minor, kVersionMinor + 1);
  d.header.version_minor = kVersionMinor;
  EXPECT_EQ(d.header, s.header);
  EXPECT_EQ(d.users, s.users);
  EXPECT_EQ(d.folders, s.folders);
  EXPECT_EQ(d.messages, s.messages);
  EXPECT_EQ(d.bodies, s.bodies);
  EXPECT_EQ(d.links, s.links);
  EXPECT_EQ(d.trailer.messages, 4u);

  // The same bytes claiming the current minor are wrong: there is nothing to skip.
  EXPECT_TRUE(Contains(CorruptError(Join(f)), "bad header record: 8 unexpected bytes after the last field at record 0"));
}

TEST(FormatVersion, OtherMajorRefused) {
  std::string stream = EncodeSample();
  for (uint16_t major : {0, 2, 0xffff}) {
    std::string bad = stream;
    PutU16(Bytes(bad, 8), major);
    EXPECT_TRUE(Contains(CorruptError(bad), "stream: unsupported major version " + std::to_string(major)));
  }
}

TEST(FormatVersion, BadMagicRefused) {
  EXPECT_TRUE(Contains(CorruptError("From: joe@example.com\n\nhello\n"), "bad magic: not a storemove stream"));
  EXPECT_TRUE(Contains(CorruptError(std::string("\x28\xb5\x2f\xfd\x00\x00\x00\x00\x00\x00\x00\x00", 12)),
                       "zstd-compressed input was not decompressed"));
  EXPECT_TRUE(Contains(CorruptError(""), "stream: truncated: empty input at byte 0 (no stream at all: did the backup writing it fail?"));
}

// --- hostile fields ----------------------------------------------------------------------

TEST(FormatHostile, NulInAStringIsRejected) {
  Sample s = MakeSample();
  StringSink sink;
  Encoder e(sink);
  e.WriteHeader(s.header);
  UserRecord user = s.users[0];
  user.user = std::string("jo\0e", 4);
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteUser(user); }), "user record: user contains a NUL byte"));
  FolderRecord folder = s.folders[0];
  folder.peruser[0].second += '\0';
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteFolder(folder); }), "peruser data contains a NUL byte"));
  folder = s.folders[0];
  folder.acl = std::string("a\0b", 3);
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteFolder(folder); }), "acl contains a NUL byte"));
  // A rejected record leaves nothing behind.
  e.WriteUser(s.users[1]);
  e.Finish();
  EXPECT_EQ(DecodeAll(sink.data()).users, std::vector<UserRecord>{s.users[1]});

  StringSink other;
  Encoder e2(other);
  StreamHeader header = s.header;
  header.selection.push_back(std::string("\0", 1));
  EXPECT_TRUE(Contains(InvalidArgument([&] { e2.WriteHeader(header); }), "selection contains a NUL byte"));

  Framed f = Split(EncodeSample());
  Framed g = f;
  g.frames[FindFrame(g, kUserType)].payload[24 + 2 + 1] = '\0';  // "joe" -> "j\0e"
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "bad user record: user contains a NUL byte at record 1"));
  g = f;
  g.frames[FindFrame(g, kFolderType)].payload[36 + 2 + 3 + 2] = '\0';  // folder "INBOX"
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "bad folder record: folder contains a NUL byte"));
}

TEST(FormatHostile, OverlongStringsAndListsAreRejected) {
  Sample s = MakeSample();
  StringSink sink;
  Encoder e(sink);
  e.WriteHeader(s.header);
  UserRecord user = s.users[0];
  user.user = std::string(kMaxNameBytes + 1, 'x');
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteUser(user); }), "user too long (1025 > 1024 bytes)"));
  user.user = std::string(kMaxNameBytes, 'x');
  e.WriteUser(user);
  FolderRecord folder = s.folders[0];
  folder.user_flag_names.assign(kMaxUserFlagNames + 1, "f");
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteFolder(folder); }), "too many user_flag_name entries (65 > 64)"));
  folder.user_flag_names.assign(kMaxUserFlagNames, "f");
  folder.acl = std::string(kMaxTextBytes + 1, 'a');
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteFolder(folder); }), "acl too long"));
  folder.acl = "joe lr";
  e.WriteFolder(folder);
  e.EndFolder();
  e.Finish();
  Decoded d = DecodeAll(sink.data());
  EXPECT_EQ(d.users[0].user.size(), kMaxNameBytes);
  EXPECT_EQ(d.folders[0].user_flag_names.size(), kMaxUserFlagNames);

  Framed f = Split(EncodeSample());
  size_t joe = FindFrame(f, kUserType);
  Framed g = f;
  PutU16(Bytes(g.frames[joe].payload, 24), 2000);
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "bad user record: user too long (2000 > 1024 bytes)"));
  // joe's subscription count follows "joe", "primary" and "active".
  size_t count_at = 24 + (2 + 3) + (2 + 7) + (2 + 6);
  ASSERT_EQ(GetU32(Bytes(g.frames[joe].payload, count_at)), 3u);
  g = f;
  PutU32(Bytes(g.frames[joe].payload, count_at), 0xFFFFFFFFu);
  ResetLargestAllocation();
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "too many subscription entries (4294967295 > 65536)"));
  g = f;
  PutU32(Bytes(g.frames[joe].payload, count_at), 60000);
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "subscription count 60000 exceeds the payload"));
  EXPECT_LT(LargestAllocation(), size_t{1} << 20);
  g = f;
  PutU32(Bytes(g.frames[joe].payload, count_at), 4);  // one more than present
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "bad user record: payload ends inside subscription"));
}

TEST(FormatHostile, LinkToUnknownContentIsRejected) {
  Sample s = MakeSample();
  StringSink sink;
  Encoder e(sink);
  e.WriteHeader(s.header);
  e.WriteFolder(s.folders[0]);
  LinkRecord link = s.links[0];
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteLink(link); }), "unknown content_id 1"));
  e.BeginMessage(s.messages[0]);
  e.BodyChunk(s.bodies[0]);
  e.EndMessage();
  link.uid = 10;
  link.content_id = 0;
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteLink(link); }), "unknown content_id 0"));
  link.content_id = 1;
  link.size += 1;
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteLink(link); }), "digest and size differ"));
  link.size -= 1;
  e.WriteLink(link);

  Framed f = Split(EncodeSample());
  size_t at = FindFrame(f, kLinkType);
  Framed g = f;
  PutU64(Bytes(g.frames[at].payload, kContentIdAt), 99);
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "link uid 1 names unknown content_id 99"));
  g = f;
  PutU64(Bytes(g.frames[at].payload, kContentIdAt), 0);
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "names unknown content_id 0"));
  g = f;
  PutU64(Bytes(g.frames[at].payload, kContentIdAt), 2);  // exists, but other content
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "link uid 1: digest and size differ from those of content_id 2"));
}

TEST(FormatLinks, RecentContentsChecksOnlyTheWindowAndStaysBounded) {
  RecentContents r;
  auto digest = [](uint64_t i) { return DigestOf(&i, sizeof i); };
  const uint64_t n = kLinkCheckWindow + 10;
  for (uint64_t i = 1; i <= n; ++i) r.Add(digest(i), i);
  EXPECT_EQ(r.count(), n);
  EXPECT_FALSE(r.Known(0));
  EXPECT_FALSE(r.Known(n + 1));
  EXPECT_TRUE(r.Known(1));
  // Inside the window (the last kLinkCheckWindow ids): exact.
  const uint64_t oldest_checked = n - kLinkCheckWindow + 1;
  for (uint64_t id : {oldest_checked, n / 2, n}) {
    EXPECT_TRUE(r.Matches(id, digest(id), id)) << id;
    EXPECT_FALSE(r.Matches(id, digest(id + 1), id)) << id;
    EXPECT_FALSE(r.Matches(id, digest(id), id + 1)) << id;
  }
  // Older: only known, not checked.
  EXPECT_TRUE(r.Matches(oldest_checked - 1, digest(0), 0));
  EXPECT_TRUE(r.Matches(1, digest(0), 0));
}

TEST(FormatLinks, EncoderAndDecoderCheckLinksInsideTheWindow) {
  StringSink sink;
  Encoder e(sink);
  e.WriteHeader({});
  FolderRecord f;
  f.user = "u";
  f.folder = "INBOX";
  f.uidvalidity = 1;
  f.uidnext = 1;
  e.WriteFolder(f);
  MessageRecord m;
  const uint64_t n = kLinkCheckWindow + 1;
  for (uint64_t i = 1; i <= n; ++i) {
    m.uid = static_cast<uint32_t>(i);
    m.size = sizeof i;
    m.digest = DigestOf(&i, sizeof i);
    e.BeginMessage(m);
    e.BodyChunk(&i, sizeof i);
    e.EndMessage();
  }
  LinkRecord link;
  link.size = 8;
  link.uid = static_cast<uint32_t>(n + 1);
  link.content_id = 2;  // the oldest content inside the window: checked
  link.digest = DigestOf("other");
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteLink(link); }), "digest and size differ"));
  uint64_t two = 2;
  link.digest = DigestOf(&two, sizeof two);
  e.WriteLink(link);
  link.uid += 1;
  link.content_id = 1;  // older than the window: the writer's word is taken
  link.digest = DigestOf("other");
  e.WriteLink(link);
  e.EndFolder();
  e.Finish();
  Decoded d = DecodeAll(sink.data());
  ASSERT_EQ(d.links.size(), 2u);
  EXPECT_EQ(d.links[1].content_id, 1u);

  // The same link made to name content 3 (inside the window) with content 1's digest: refused.
  Framed framed = Split(sink.data());
  size_t at = FindFrame(framed, kLinkType, 0);
  PutU64(Bytes(framed.frames[at].payload, kContentIdAt), 3);
  EXPECT_TRUE(Contains(CorruptError(Join(framed)), "digest and size differ from those of content_id 3"));
}

TEST(FormatHostile, DigestMismatchIsRejected) {
  Sample s = MakeSample();
  StringSink sink;
  Encoder e(sink);
  e.WriteHeader(s.header);
  e.WriteFolder(s.folders[0]);
  MessageRecord m = s.messages[0];
  m.digest = DigestOf("something else");
  e.BeginMessage(m);
  e.BodyChunk(s.bodies[0]);
  try {
    e.EndMessage();
    ADD_FAILURE() << "wrong digest accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), Errc::kCorrupt);
    EXPECT_TRUE(Contains(error.what(), "not to its record's digest"));
  }
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.EndFolder(); }), "after an error"));

  Framed f = Split(EncodeSample());
  f.frames[FindFrame(f, kMessageType)].payload[kDigestAt + 3] ^= 0x10;
  EXPECT_TRUE(Contains(CorruptError(Join(f)), "body of message uid 3 does not match its digest"));
}

TEST(FormatHostile, BodyLongerOrShorterThanSizeIsRejected) {
  Sample s = MakeSample();
  StringSink sink;
  Encoder e(sink);
  e.WriteHeader(s.header);
  e.WriteFolder(s.folders[0]);
  e.BeginMessage(s.messages[0]);
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.BodyChunk(s.bodies[0] + "x"); }), "body longer than its size"));
  e.BodyChunk(s.bodies[0].substr(0, 5));
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.EndMessage(); }), "EndMessage() after 5 of"));
  e.BodyChunk(s.bodies[0].substr(5));
  e.EndMessage();

  Framed f = Split(EncodeSample());
  size_t at = FindFrame(f, kMessageType);
  uint64_t size = GetU64(Bytes(f.frames[at].payload, kSizeAt));
  Framed g = f;
  PutU64(Bytes(g.frames[at].payload, kSizeAt), size + 1);
  EXPECT_TRUE(Contains(CorruptError(Join(g)),
                       "body of message uid 3 shorter than its size (" + std::to_string(size) + " of " +
                           std::to_string(size + 1) + " bytes)"));
  g = f;
  PutU64(Bytes(g.frames[at].payload, kSizeAt), size - 1);
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "body of message uid 3 longer than its size"));
  g = f;
  g.frames.erase(g.frames.begin() + FindFrame(g, kBodyType, 1));  // the 5 KB message's only chunk
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "body of message uid 5 shorter than its size (0 of"));
}

// --- grammar and counts ------------------------------------------------------------------

TEST(FormatGrammar, RecordsOutOfPlaceAreRejected) {
  Framed f = Split(EncodeSample());
  auto without = [&](uint8_t type, int nth) {
    Framed g = f;
    g.frames.erase(g.frames.begin() + FindFrame(g, type, nth));
    return Join(g);
  };
  auto moved = [&](size_t from, size_t to) {
    Framed g = f;
    Frame frame = g.frames[from];
    g.frames.erase(g.frames.begin() + from);
    g.frames.insert(g.frames.begin() + to, frame);
    return Join(g);
  };
  EXPECT_TRUE(Contains(CorruptError(without(kHeaderType, 0)), "user record not allowed before the header at record 0"));
  {
    Framed g = f;
    g.frames.insert(g.frames.begin() + 1, g.frames[0]);
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "header record not allowed after the header at record 1"));
  }
  size_t ann = FindFrame(f, kUserType, 1);
  EXPECT_TRUE(Contains(CorruptError(moved(ann, FindFrame(f, kMessageType))),
                       "user record not allowed inside folder joe/INBOX (folder-end missing)"));
  EXPECT_TRUE(Contains(CorruptError(without(kMessageEndType, 0)),
                       "message record not allowed inside message uid 3 (message-end missing)"));
  size_t body = FindFrame(f, kBodyType);
  EXPECT_TRUE(Contains(CorruptError(moved(body, body + 1)), "body of message uid 3 shorter than its size"));
  EXPECT_TRUE(Contains(CorruptError(moved(body, FindFrame(f, kMessageType))),
                       "body record not allowed outside a message"));
  EXPECT_TRUE(Contains(CorruptError(without(kFolderEndType, 2)),
                       "trailer record not allowed inside folder ann@example.com/INBOX (folder-end missing)"));
  EXPECT_TRUE(Contains(CorruptError(without(kFolderType, 0)), "message record not allowed outside a folder"));
  {
    Framed g = f;
    g.frames.insert(g.frames.begin() + 3, {0x0c, "x"});
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "unknown record type 0x0c at record 3"));
    g.frames[3].type = 0x0b;  // meta (1.1): known, but only in an incremental folder
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "meta record in folder joe/INBOX, which is not incremental at record 3"));
    g.frames[3].type = 0x00;
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "unknown record type 0x00"));
  }
  {
    Framed g = f;
    g.frames.insert(g.frames.begin() + body, {kBodyType, ""});
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "empty body record"));
  }
  {
    Framed g = Split(EncodeSample(StreamKind::kManifest));
    g.frames.insert(g.frames.begin() + FindFrame(g, kMessageType) + 1, {kBodyType, "x"});
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "body record in a manifest stream"));
  }
  {
    Framed g = f;
    g.frames[0].payload[0] = 7;
    EXPECT_TRUE(Contains(CorruptError(Join(g)), "bad header record: unknown stream kind 7"));
  }
}

TEST(FormatGrammar, MessageFieldsAreChecked) {
  Framed f = Split(EncodeSample());
  size_t second = FindFrame(f, kMessageType, 1);  // uid 5, content 2
  auto edited = [&](size_t at, const std::function<void(std::string&)>& edit) {
    Framed g = f;
    edit(g.frames[at].payload);
    return Join(g);
  };
  EXPECT_TRUE(Contains(CorruptError(edited(second, [](std::string& p) { PutU64(Bytes(p, kContentIdAt), 5); })),
                       "message uid 5: content_id 5 out of sequence (expected 2)"));
  EXPECT_TRUE(Contains(CorruptError(edited(second, [](std::string& p) { PutU32(Bytes(p, kUidAt), 3); })),
                       "message uid 3: not above the previous uid 3 of the folder"));
  EXPECT_TRUE(Contains(CorruptError(edited(second, [](std::string& p) { PutU32(Bytes(p, kUidAt), 0); })),
                       "uid 0 is not a UID"));
  EXPECT_TRUE(Contains(CorruptError(edited(second, [](std::string& p) { p[kFlagsAt] = char(0x80); })),
                       "flags 128 outside the 7 system-flag bits"));
  EXPECT_TRUE(Contains(CorruptError(edited(second, [](std::string& p) {
                         PutU32(Bytes(p, kHeaderSizeAt), uint32_t(GetU64(Bytes(p, kSizeAt)) + 1));
                       })),
                       "header_size 5022 > size 5021"));
  EXPECT_TRUE(Contains(CorruptError(edited(second, [](std::string& p) { PutU64(Bytes(p, kSizeAt), (1ull << 40) + 1); })),
                       "over the 1 TiB limit"));
  EXPECT_TRUE(Contains(CorruptError(edited(FindFrame(f, kLinkType), [](std::string& p) { p[kFlagsAt] = char(0xff); })),
                       "link uid 1: flags 255 outside"));
  EXPECT_TRUE(Contains(CorruptError(edited(second, [](std::string& p) { p.pop_back(); })),
                       "bad message record: payload ends inside the fixed fields"));
}

TEST(FormatGrammar, CountsAndTheStreamDigestAreChecked) {
  Framed f = Split(EncodeSample());
  Framed g = f;
  PutU64(Bytes(g.frames[FindFrame(g, kFolderEndType)].payload, 0), 2);
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "folder-end of joe/INBOX counts 2 messages, 0 links"));
  g = f;
  g.frames.erase(g.frames.begin() + FindFrame(g, kLinkType));
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "folder-end of joe/Sent/2024 counts 1 messages, 1 links"));
  size_t trailer = f.frames.size() - 1;
  g = f;
  PutU64(Bytes(g.frames[trailer].payload, 8), 3);  // users
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "trailer counts 3 users, the stream carried 2"));
  g = f;
  PutU64(Bytes(g.frames[trailer].payload, 40), 1);  // body_bytes
  EXPECT_TRUE(Contains(CorruptError(Join(g)), "trailer counts 1 body_bytes"));
  g = f;
  PutU64(Bytes(g.frames[FindFrame(g, kUserType)].payload, 0), 1);  // joe's quota_limit
  EXPECT_TRUE(Contains(CorruptError(Join(g, /*fix_trailer=*/false)), "stream digest mismatch"));
  g = f;
  g.prelude[11] = 1;  // minor version 256: readable, but not what the trailer's digest covered
  EXPECT_TRUE(Contains(CorruptError(Join(g, /*fix_trailer=*/false)), "stream digest mismatch"));

  std::string stream = EncodeSample();
  EXPECT_TRUE(Contains(CorruptError(stream + "x"), "data after the trailer at byte " + std::to_string(stream.size())));
  EXPECT_TRUE(Contains(CorruptError(stream + stream), "data after the trailer"));
}

// --- decoder and encoder behaviour -------------------------------------------------------

TEST(FormatDecoder, RepeatsEndAndRefusesAfterAnError) {
  std::string stream = EncodeSample();
  StringSource source(stream);
  Decoder d(source);
  while (d.Next() != Event::kEnd) {
  }
  EXPECT_EQ(d.Next(), Event::kEnd);
  EXPECT_EQ(d.records(), Split(stream).frames.size());
  EXPECT_EQ(d.bytes(), stream.size());

  std::string bad = stream;
  bad[bad.size() / 2] ^= 1;
  StringSource bad_source(bad);
  Decoder failing(bad_source);
  EXPECT_THROW(
      {
        while (failing.Next() != Event::kEnd) {
        }
      },
      Error);
  try {
    failing.Next();
    ADD_FAILURE() << "Next() after an error returned";
  } catch (const Error& e) {
    EXPECT_TRUE(Contains(e.what(), "decoder used after an error"));
  }
}

TEST(FormatEncoder, MisuseIsRejectedWithoutDamagingTheStream) {
  Sample s = MakeSample();
  StringSink sink;
  Encoder e(sink);
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteUser(s.users[0]); }), "WriteUser() not allowed before WriteHeader()"));
  StreamHeader newer = s.header;
  newer.version_minor = kVersionMinor + 1;
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteHeader(newer); }), "can only write version 1.1"));
  e.WriteHeader(s.header);
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteHeader(s.header); }), "WriteHeader() called twice"));
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.BeginMessage(s.messages[0]); }), "outside a folder"));
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.EndFolder(); }), "outside a folder"));
  e.WriteUser(s.users[0]);
  e.WriteFolder(s.folders[0]);
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.Finish(); }), "Finish() not allowed inside a folder"));
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.BodyChunk("x"); }), "BodyChunk() not allowed inside a folder"));
  MessageRecord m = s.messages[0];
  m.content_id = 2;
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.BeginMessage(m); }), "content_id 2 given, but this message is content 1"));
  m = s.messages[0];
  m.flags = 0x80;
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.BeginMessage(m); }), "outside the 7 system-flag bits"));
  m = s.messages[0];
  m.header_size = static_cast<uint32_t>(m.size + 1);
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.BeginMessage(m); }), "header_size"));
  m = s.messages[0];
  m.uid = 0;
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.BeginMessage(m); }), "uid 0 is not a UID"));
  EXPECT_EQ(e.BeginMessage(s.messages[0]), 1u);
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteUser(s.users[0]); }), "inside a message"));
  e.BodyChunk(s.bodies[0]);
  e.EndMessage();
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.BeginMessage(s.messages[0]); }), "not above the previous uid 3"));
  e.EndFolder();
  e.Finish();
  EXPECT_TRUE(Contains(InvalidArgument([&] { e.WriteUser(s.users[0]); }), "after Finish()"));

  Decoded d = DecodeAll(sink.data());
  EXPECT_EQ(d.users.size(), 1u);
  EXPECT_EQ(d.messages, std::vector<MessageRecord>{s.messages[0]});
  EXPECT_EQ(e.bytes(), sink.data().size());
  EXPECT_EQ(e.records(), Split(sink.data()).frames.size());
}

// Counts the whole records at the start of `bytes`; -1 if they do not end exactly at its end.
long WholeRecords(std::string_view bytes) {
  size_t pos = 12;
  long n = 0;
  while (pos + 5 <= bytes.size()) {
    pos += 9 + size_t{GetU32(reinterpret_cast<const uint8_t*>(bytes.data()) + pos + 1)};
    ++n;
  }
  return pos == bytes.size() ? n : -1;
}

TEST(FormatEncoder, FlushHandsOverWholeRecordsOnly) {
  Sample s = MakeSample();
  StringSink sink;
  Encoder e(sink);
  e.WriteHeader(s.header);
  e.WriteUser(s.users[0]);
  EXPECT_EQ(sink.data().size(), 0u) << "records are buffered, not written one by one";
  e.Flush();
  EXPECT_EQ(WholeRecords(sink.data()), 2);
  e.WriteFolder(s.folders[0]);
  MessageRecord first = s.messages[1];
  first.content_id = 0;
  e.BeginMessage(first);
  e.BodyChunk(s.bodies[1].substr(0, 100));  // the body record is still open
  e.Flush();
  EXPECT_EQ(WholeRecords(sink.data()), 4);
  e.BodyChunk(s.bodies[1].substr(100));
  e.EndMessage();
  e.EndFolder();
  e.Finish();
  Decoded d = DecodeAll(sink.data());
  EXPECT_EQ(d.bodies, std::vector<std::string>{s.bodies[1]});
}

}  // namespace
}  // namespace storemove::format
