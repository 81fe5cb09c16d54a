// Helpers shared by the format tests: a sample stream using every record type and field, a
// decoder that collects everything, and a re-framer that edits a stream at the record level.
// The re-framer follows docs/stream-format.md on its own (it does not use format/ internals),
// so it also checks that the document describes the bytes the encoder writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "format/format.h"

namespace storemove::format::testing {

// Record types as docs/stream-format.md numbers them.
enum : uint8_t {
  kHeaderType = 1, kUserType, kFolderType, kMessageType, kBodyType, kMessageEndType, kLinkType,
  kFolderEndType, kTrailerType, kHeldType,
};

// Everything a stream held, in order.
struct Decoded {
  std::vector<Decoder::Event> events;
  StreamHeader header;
  std::vector<UserRecord> users;
  std::vector<FolderRecord> folders;
  std::vector<MessageRecord> messages;
  std::vector<std::string> bodies;  // one per message, chunks joined
  std::vector<LinkRecord> links;
  std::vector<HeldRecord> held;
  std::vector<MetaRecord> metas;
  std::vector<FolderEnd> folder_ends;
  Trailer trailer;
  size_t body_events = 0;
  size_t largest_body_event = 0;
};
// A 1.0-style folder-end: counts only, no metas or summary.
inline FolderEnd Ends(uint64_t messages, uint64_t links, uint64_t bytes) {
  FolderEnd e;
  e.messages = messages;
  e.links = links;
  e.bytes = bytes;
  return e;
}

Decoded DecodeAll(ByteSource& source);
Decoded DecodeAll(std::string_view stream);

// The sample: 2 users, 3 folders (one empty), 4 messages (one empty body, one of several
// kilobytes), 1 link; every field non-default.
struct Sample {
  StreamHeader header;
  std::vector<UserRecord> users;
  std::vector<FolderRecord> folders;
  std::vector<MessageRecord> messages;  // content_id filled as the encoder assigns them
  std::vector<std::string> bodies;
  std::vector<LinkRecord> links;
};
Sample MakeSample(StreamKind kind = StreamKind::kFull);
// Writes the sample: joe, joe/INBOX (3 messages), joe/Sent/2024 (link, message), ann, ann/INBOX.
void WriteSample(const Sample& sample, Encoder& encoder);
std::string EncodeSample(StreamKind kind = StreamKind::kFull);

// Record-level view of an uncompressed stream.
struct Frame {
  uint8_t type;
  std::string payload;
};
struct Framed {
  std::string prelude;  // magic + version
  std::vector<Frame> frames;
};
Framed Split(std::string_view stream);
// Re-frames: each record's checksum is recomputed for its (new) index; with fix_trailer the
// trailer's record count and stream digest are recomputed too, so only the edit is wrong.
std::string Join(const Framed& framed, bool fix_trailer = true);
// Index of the nth frame (from 0) of a type; fails the test when absent.
size_t FindFrame(const Framed& framed, uint8_t type, int nth = 0);
// Byte offset of frame i in Join()'s output.
size_t FrameOffset(const Framed& framed, size_t i);

// Reads at most `step` bytes per call, to exercise every refill path of a reader.
class TrickleSource final : public ByteSource {
 public:
  TrickleSource(std::string_view data, size_t step) : data_(data), step_(step) {}
  size_t Read(void* data, size_t size) override;

 private:
  std::string_view data_;
  size_t step_;
};

// Deterministic pseudo-random bytes: byte i of stream `seed` is the same however it is cut.
std::string PseudoRandom(uint64_t seed, uint64_t offset, size_t size);

// Largest single operator-new request since the last reset (alloc_tracker.cc).
void ResetLargestAllocation();
size_t LargestAllocation();

}  // namespace storemove::format::testing
