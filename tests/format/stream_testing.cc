#include "tests/format/stream_testing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "util/bytes.h"
#include "util/digest.h"

namespace storemove::format::testing {

Decoded DecodeAll(ByteSource& source) {
  Decoded d;
  Decoder decoder(source);
  for (;;) {
    Decoder::Event event = decoder.Next();
    d.events.push_back(event);
    switch (event) {
      case Decoder::Event::kHeader: d.header = decoder.header(); break;
      case Decoder::Event::kUser: d.users.push_back(decoder.user()); break;
      case Decoder::Event::kFolder: d.folders.push_back(decoder.folder()); break;
      case Decoder::Event::kMessage:
        d.messages.push_back(decoder.message());
        d.bodies.emplace_back();
        break;
      case Decoder::Event::kBody:
        d.bodies.back() += decoder.body();
        ++d.body_events;
        d.largest_body_event = std::max(d.largest_body_event, decoder.body().size());
        break;
      case Decoder::Event::kMessageEnd: break;
      case Decoder::Event::kLink: d.links.push_back(decoder.link()); break;
      case Decoder::Event::kHeld: d.held.push_back(decoder.held()); break;
      case Decoder::Event::kMeta: d.metas.push_back(decoder.meta()); break;
      case Decoder::Event::kFolderEnd: d.folder_ends.push_back(decoder.folder_end()); break;
      case Decoder::Event::kEnd:
        d.trailer = decoder.trailer();
        return d;
    }
  }
}

Decoded DecodeAll(std::string_view stream) {
  StringSource source(stream);
  return DecodeAll(source);
}

namespace {

MessageRecord Message(uint32_t uid, std::string_view body, uint8_t flags, uint64_t user_flags) {
  MessageRecord m;
  m.uid = uid;
  m.flags = flags;
  m.user_flags = user_flags;
  m.internal_date = 1700000000 + uid;
  m.sent_date = 1699990000 + uid;
  m.save_time = -86400 - uid;  // negative times survive (dates before 1970)
  m.size = body.size();
  m.header_size = static_cast<uint32_t>(std::min<size_t>(body.size(), 12));
  m.digest = DigestOf(body);
  return m;
}

}  // namespace

Sample MakeSample(StreamKind kind) {
  Sample s;
  s.header.kind = kind;
  s.header.created = 1712345678;
  s.header.since = 1700000000;
  s.header.source_host = "old-store.example.com";
  s.header.store_id = "0f1e2d3c4b5a6978";
  s.header.selection = {"/primary/groupA", "user/joe", "ann@example.com"};

  UserRecord joe;
  joe.user = "joe";
  joe.partition = "primary";
  joe.status = "active";
  joe.quota_limit = 1000000000;
  joe.quota_used = 123456;
  joe.created = 1600000000;
  joe.subscriptions = {"user/joe/INBOX", "user/joe/Sent/2024", "user/ann@example.com/INBOX"};
  UserRecord ann;
  ann.user = "ann@example.com";
  ann.partition = "secondary";
  ann.status = "moved:new-store.example.com";
  ann.quota_limit = 7;
  ann.quota_used = 5;
  ann.created = -1;
  ann.subscriptions = {"user/ann@example.com/INBOX"};
  s.users = {joe, ann};

  FolderRecord inbox;
  inbox.user = "joe";
  inbox.folder = "INBOX";
  inbox.partition = "primary";
  inbox.uidvalidity = 1234567890;
  inbox.uidnext = 0xfffffff0;
  inbox.count = 3;
  inbox.bytes = 4242;
  inbox.last_append = 1711111111;
  inbox.created = 1600000001;
  inbox.acl = "joe lrswipkxtea anyone lr";
  inbox.user_flag_names = {"$Junk", "$Forwarded", "Important"};
  inbox.peruser = {{"ann@example.com", "seen 1:3,7"}, {"bob", ""}};
  FolderRecord sent = inbox;
  sent.folder = "Sent/2024";
  sent.uidvalidity = 99;
  sent.uidnext = 3;
  sent.count = 2;
  sent.acl = "";
  sent.user_flag_names = {};
  sent.peruser = {};
  FolderRecord ann_inbox;
  ann_inbox.user = "ann@example.com";
  ann_inbox.folder = "INBOX";
  ann_inbox.partition = "secondary";
  ann_inbox.uidvalidity = 1;
  ann_inbox.uidnext = 1;
  s.folders = {inbox, sent, ann_inbox};

  std::string small = "From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n";
  std::string large = "From: b@example.com\n\n" + PseudoRandom(7, 0, 5000);
  std::string other = "Subject: sent\n\nthe one in Sent\n";
  s.bodies = {small, large, std::string(), other};
  s.messages = {Message(3, small, 0x05, 0x5), Message(5, large, 0x7f, 1ull << 63), Message(9, "", 0x40, 0),
                Message(2, other, 0x02, 0)};
  for (size_t i = 0; i < s.messages.size(); ++i) s.messages[i].content_id = i + 1;
  LinkRecord link = Message(1, small, 0x10, 0x2);
  link.content_id = 1;
  s.links = {link};
  return s;
}

void WriteSample(const Sample& s, Encoder& e) {
  auto message = [&](size_t i) {
    EXPECT_EQ(e.BeginMessage(s.messages[i]), s.messages[i].content_id);
    if (s.header.kind == StreamKind::kFull) {
      // Uneven pieces, so the encoder's own chunking is exercised.
      std::string_view body = s.bodies[i];
      for (size_t at = 0; at < body.size(); at += 777) e.BodyChunk(body.substr(at, 777));
    }
    e.EndMessage();
  };
  e.WriteHeader(s.header);
  e.WriteUser(s.users[0]);
  e.WriteFolder(s.folders[0]);
  message(0);
  message(1);
  message(2);
  e.EndFolder();
  e.WriteFolder(s.folders[1]);
  e.WriteLink(s.links[0]);
  message(3);
  e.EndFolder();
  e.WriteUser(s.users[1]);
  e.WriteFolder(s.folders[2]);
  e.EndFolder();
  e.Finish();
}

std::string EncodeSample(StreamKind kind) {
  StringSink sink;
  Encoder encoder(sink);
  WriteSample(MakeSample(kind), encoder);
  return sink.Take();
}

Framed Split(std::string_view stream) {
  Framed f;
  f.prelude = std::string(stream.substr(0, 12));
  size_t pos = 12;
  while (pos < stream.size()) {
    const auto* p = reinterpret_cast<const uint8_t*>(stream.data()) + pos;
    uint32_t length = GetU32(p + 1);
    f.frames.push_back({p[0], std::string(stream.substr(pos + 5, length))});
    pos += 9 + size_t{length};
  }
  EXPECT_EQ(pos, stream.size()) << "stream does not split into whole records";
  return f;
}

std::string Join(const Framed& framed, bool fix_trailer) {
  std::string out = framed.prelude;
  for (size_t i = 0; i < framed.frames.size(); ++i) {
    Frame frame = framed.frames[i];
    if (frame.type == kTrailerType && fix_trailer && frame.payload.size() >= 64) {
      PutU64(reinterpret_cast<uint8_t*>(frame.payload.data()), i);
      Digest digest = DigestOf(out);
      std::memcpy(frame.payload.data() + 48, digest.bytes.data(), 16);
    }
    size_t start = out.size();
    AppendU8(&out, frame.type);
    AppendU32(&out, static_cast<uint32_t>(frame.payload.size()));
    out += frame.payload;
    AppendU32(&out, Checksum32(out.data() + start, out.size() - start, static_cast<uint32_t>(i)));
  }
  return out;
}

size_t FindFrame(const Framed& framed, uint8_t type, int nth) {
  for (size_t i = 0; i < framed.frames.size(); ++i)
    if (framed.frames[i].type == type && nth-- == 0) return i;
  ADD_FAILURE() << "no frame of type " << int(type);
  return 0;
}

size_t FrameOffset(const Framed& framed, size_t i) {
  size_t offset = framed.prelude.size();
  for (size_t k = 0; k < i; ++k) offset += 9 + framed.frames[k].payload.size();
  return offset;
}

size_t TrickleSource::Read(void* data, size_t size) {
  size_t n = std::min({size, step_, data_.size()});
  if (n == 0) return 0;
  std::memcpy(data, data_.data(), n);
  data_.remove_prefix(n);
  return n;
}

std::string PseudoRandom(uint64_t seed, uint64_t offset, size_t size) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    uint64_t at = offset + i;
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + (at >> 3) + 1;  // splitmix64 of the 8-byte block
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    out[i] = static_cast<char>(z >> (8 * (at & 7)));
  }
  return out;
}

}  // namespace storemove::format::testing
