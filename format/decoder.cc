// Decoder: a pull parser that trusts nothing. Each record is checked in this order: type known,
// length within the type's limit (before any buffer grows for it), present in full, frame
// checksum, position in the grammar, payload fields, and what the record says against what the
// stream carried.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "format/format.h"
#include "format/wire.h"
#include "util/bytes.h"
#include "util/error.h"

namespace storemove::format {

namespace {
constexpr size_t kInitialBuffer = size_t{64} << 10;
// Reads ask for at most this much beyond the record being completed, so the tail moved to the
// buffer front before a large record stays small.
constexpr size_t kReadAhead = size_t{64} << 10;
constexpr uint8_t kZstdMagic[4] = {0x28, 0xb5, 0x2f, 0xfd};

[[noreturn]] void Corrupt(const std::string& what) { Throw(Errc::kCorrupt, "stream: " + what); }

std::string N(uint64_t v) { return std::to_string(v); }
}  // namespace

Decoder::Decoder(ByteSource& source)
    : source_(source), buf_(new uint8_t[kInitialBuffer]), capacity_(kInitialBuffer) {}

Decoder::~Decoder() = default;

void Decoder::Fail(const std::string& what) const {
  Corrupt(what + " at record " + N(index_) + " (byte " + N(record_offset_) + ")");
}

// Makes `need` bytes available at buf_[begin_]; false when the input ends first. The buffer
// grows only when it is full of input already read, so a hostile length costs at most twice
// the bytes actually supplied.
bool Decoder::Fill(size_t need) {
  if (end_ - begin_ >= need) return true;
  if (eof_) return false;
  if (capacity_ - begin_ < need) {
    std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  while (end_ - begin_ < need) {
    if (end_ == capacity_) {
      std::unique_ptr<uint8_t[]> bigger(new uint8_t[capacity_ * 2]);
      std::memcpy(bigger.get(), buf_.get() + begin_, end_ - begin_);
      buf_ = std::move(bigger);
      capacity_ *= 2;
      end_ -= begin_;
      begin_ = 0;
    }
    size_t want = std::min(capacity_ - end_, std::max(need - (end_ - begin_), kReadAhead));
    size_t got = source_.Read(buf_.get() + end_, want);
    if (got == 0) {
      eof_ = true;
      return false;
    }
    end_ += got;
  }
  return true;
}

void Decoder::ReadPrelude() {
  bool complete = Fill(wire::kPreludeSize);
  const uint8_t* p = buf_.get() + begin_;
  size_t have = std::min(end_ - begin_, wire::kPreludeSize);
  if (std::memcmp(p, wire::kMagic, std::min(have, sizeof wire::kMagic)) != 0) {
    if (have >= 4 && std::memcmp(p, kZstdMagic, 4) == 0)
      Corrupt("bad magic: zstd-compressed input was not decompressed at byte 0");
    Corrupt("bad magic: not a storemove stream at byte 0");
  }
  if (!complete) {
    if (have == 0) Corrupt("truncated: empty input at byte 0 (no stream at all: did the backup writing it fail? its own error says why)");
    Corrupt("truncated in the prelude (" + N(have) + " of " + N(wire::kPreludeSize) + " bytes) at byte 0");
  }
  uint16_t major = GetU16(p + 8), minor = GetU16(p + 10);
  if (major != kVersionMajor)
    Corrupt("unsupported major version " + N(major) + "." + N(minor) + " (this reader reads " + N(kVersionMajor) +
            ".x) at byte 8");
  header_.version_major = major;
  header_.version_minor = minor;
  newer_minor_ = minor > kVersionMinor;
  stream_hasher_.Update(p, wire::kPreludeSize);
  begin_ += wire::kPreludeSize;
  offset_ += wire::kPreludeSize;
}

void Decoder::ReadRecord() {
  record_offset_ = offset_;
  if (!Fill(wire::kFrameHeaderSize)) {
    if (end_ == begin_) Fail("truncated before the trailer");
    Fail("truncated in a record header (" + N(end_ - begin_) + " of " + N(wire::kFrameHeaderSize) + " bytes)");
  }
  const uint8_t* p = buf_.get() + begin_;
  type_ = p[0];
  const char* name = wire::RecordName(type_);
  if (!name) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", type_);
    Fail(std::string("unknown record type ") + hex);
  }
  uint32_t length = GetU32(p + 1);
  if (length > wire::MaxPayload(type_))
    Fail(std::string(name) + " record length " + N(length) + " over the limit of " + N(wire::MaxPayload(type_)));
  size_t total = length + wire::kFrameOverhead;
  if (!Fill(total))
    Fail(std::string("truncated in a ") + name + " record (" + N(end_ - begin_) + " of " + N(total) + " bytes)");
  p = buf_.get() + begin_;
  size_t checked = wire::kFrameHeaderSize + length;
  if (Checksum32(p, checked, static_cast<uint32_t>(index_)) != GetU32(p + checked))
    Fail(std::string(name) + " record checksum mismatch (corrupt, reordered or missing records)");
  if (type_ != wire::kTrailer) stream_hasher_.Update(p, total);
  payload_ = p + wire::kFrameHeaderSize;
  payload_size_ = length;
  begin_ += total;
  offset_ += total;
}

void Decoder::Misplaced() const {
  std::string where;
  if (state_ == State::kStart)
    where = "before the header";
  else if (type_ == wire::kHeader)
    where = "after the header";
  else if ((type_ == wire::kBody || type_ == wire::kMessageEnd) && state_ != State::kInMessage)
    where = "outside a message";
  else if (state_ == State::kTop)
    where = "outside a folder";
  else if (state_ == State::kInFolder)
    where = "inside folder " + folder_.user + "/" + folder_.folder + " (folder-end missing)";
  else
    where = "inside message uid " + N(message_.uid) + " (message-end missing)";
  Fail(std::string(wire::RecordName(type_)) + " record not allowed " + where);
}

// A message or held record: the next content_id of the stream, counted in its folder.
void Decoder::CountNewContent(const MessageRecord& m, const char* what) {
  if (m.content_id != content_.count() + 1)
    Fail(std::string(what) + " uid " + N(m.uid) + ": content_id " + N(m.content_id) + " out of sequence (expected " +
         N(content_.count() + 1) + ")");
  content_.Add(m.digest, m.size);
  last_uid_ = m.uid;
  ++folder_seen_.messages;
  folder_seen_.bytes += m.size;
  ++seen_.messages;
}

void Decoder::CheckPerMessage(const MessageRecord& m, const char* what) {
  std::string where = std::string(what) + " uid " + N(m.uid) + ": ";
  if (m.uid == 0) Fail(where + "uid 0 is not a UID");
  if (m.uid <= last_uid_) Fail(where + "not above the previous uid " + N(last_uid_) + " of the folder");
  if (m.flags & ~kSystemFlagMask) Fail(where + "flags " + N(m.flags) + " outside the 7 system-flag bits");
  if (m.size > kMaxMessageSize) Fail(where + "size " + N(m.size) + " over the 1 TiB limit");
  if (m.header_size > m.size) Fail(where + "header_size " + N(m.header_size) + " > size " + N(m.size));
}

// An unchanged folder (since_modseq == modseq) carries no items (docs/stream-format.md §7.12).
void Decoder::NotInUnchanged() const {
  if (folder_.unchanged())
    Fail(std::string(wire::RecordName(type_)) + " record in unchanged folder " + folder_.user + "/" + folder_.folder +
         " (since_modseq == modseq: no items)");
}

Decoder::Event Decoder::Next() {
  if (state_ == State::kDone) return Event::kEnd;
  if (state_ == State::kFailed) Corrupt("decoder used after an error");
  try {
    Event event = Step();
    ++index_;
    return event;
  } catch (const wire::PayloadError& e) {
    state_ = State::kFailed;
    Fail(std::string("bad ") + wire::RecordName(type_) + " record: " + e.what);
  } catch (...) {
    state_ = State::kFailed;
    throw;
  }
}

Decoder::Event Decoder::Step() {
  if (state_ == State::kStart) ReadPrelude();
  ReadRecord();
  const bool manifest = header_.kind == StreamKind::kManifest;
  switch (type_) {
    case wire::kHeader:
      if (state_ != State::kStart) Misplaced();
      wire::ParseHeaderPayload(payload_, payload_size_, newer_minor_, &header_);
      state_ = State::kTop;
      return Event::kHeader;

    case wire::kUser:
      if (state_ != State::kTop) Misplaced();
      wire::ParseUserPayload(payload_, payload_size_, newer_minor_, &user_);
      ++seen_.users;
      return Event::kUser;

    case wire::kFolder:
      if (state_ != State::kTop) Misplaced();
      wire::ParseFolderPayload(payload_, payload_size_, header_.version_minor, newer_minor_, &folder_);
      ++seen_.folders;
      folder_seen_ = {};
      last_uid_ = 0;
      state_ = State::kInFolder;
      return Event::kFolder;

    case wire::kMessage:
      if (state_ != State::kInFolder) Misplaced();
      NotInUnchanged();
      wire::ParseMessagePayload(payload_, payload_size_, newer_minor_, &message_);
      CheckPerMessage(message_, "message");
      CountNewContent(message_, "message");
      body_seen_ = 0;
      body_hasher_.Reset();
      body_ = {};
      state_ = State::kInMessage;
      return Event::kMessage;

    case wire::kBody:
      if (state_ != State::kInMessage) Misplaced();
      if (manifest) Fail("body record in a manifest stream");
      if (payload_size_ == 0) Fail("empty body record");
      if (payload_size_ > message_.size - body_seen_)
        Fail("body of message uid " + N(message_.uid) + " longer than its size " + N(message_.size));
      body_hasher_.Update(payload_, payload_size_);
      body_seen_ += payload_size_;
      seen_.body_bytes += payload_size_;
      body_ = std::string_view(reinterpret_cast<const char*>(payload_), payload_size_);
      return Event::kBody;

    case wire::kMessageEnd:
      if (state_ != State::kInMessage) Misplaced();
      wire::ParseMessageEndPayload(payload_, payload_size_, newer_minor_);
      if (!manifest) {
        if (body_seen_ != message_.size)
          Fail("body of message uid " + N(message_.uid) + " shorter than its size (" + N(body_seen_) + " of " +
               N(message_.size) + " bytes)");
        Digest actual = body_hasher_.Final();
        if (actual != message_.digest)
          Fail("body of message uid " + N(message_.uid) + " does not match its digest (hashes to " + actual.Hex() +
               ", record says " + message_.digest.Hex() + ")");
      }
      body_ = {};
      state_ = State::kInFolder;
      return Event::kMessageEnd;

    case wire::kLink:
      if (state_ != State::kInFolder) Misplaced();
      NotInUnchanged();
      wire::ParseMessagePayload(payload_, payload_size_, newer_minor_, &link_);
      CheckPerMessage(link_, "link");
      if (!content_.Known(link_.content_id))
        Fail("link uid " + N(link_.uid) + " names unknown content_id " + N(link_.content_id));
      if (!content_.Matches(link_.content_id, link_.digest, link_.size))
        Fail("link uid " + N(link_.uid) + ": digest and size differ from those of content_id " + N(link_.content_id));
      last_uid_ = link_.uid;
      ++folder_seen_.links;
      folder_seen_.bytes += link_.size;
      ++seen_.links;
      return Event::kLink;

    case wire::kHeld:
      if (header_.kind != StreamKind::kSession && state_ != State::kStart)
        Fail("held record outside a session stream");
      if (state_ != State::kInFolder) Misplaced();
      NotInUnchanged();
      wire::ParseHeldPayload(payload_, payload_size_, newer_minor_, &held_);
      CheckPerMessage(held_, "held");
      CountNewContent(held_, "held");  // held records count with messages (docs/stream-format.md §5)
      return Event::kHeld;

    case wire::kMeta:
      if (state_ != State::kInFolder) Misplaced();
      if (folder_.since_modseq == 0)
        Fail("meta record in folder " + folder_.user + "/" + folder_.folder + ", which is not incremental");
      NotInUnchanged();
      wire::ParseMessagePayload(payload_, payload_size_, newer_minor_, &meta_);
      CheckPerMessage(meta_, "meta");
      if (meta_.content_id != 0) Fail("meta uid " + N(meta_.uid) + ": content_id " + N(meta_.content_id) + " is not 0");
      last_uid_ = meta_.uid;
      ++folder_seen_.metas;
      return Event::kMeta;

    case wire::kFolderEnd:
      if (state_ != State::kInFolder) Misplaced();
      wire::ParseFolderEndPayload(payload_, payload_size_, header_.version_minor, newer_minor_, &folder_end_);
      if (folder_end_.messages != folder_seen_.messages || folder_end_.links != folder_seen_.links ||
          folder_end_.bytes != folder_seen_.bytes || folder_end_.metas != folder_seen_.metas)
        Fail("folder-end of " + folder_.user + "/" + folder_.folder + " counts " + N(folder_end_.messages) +
             " messages, " + N(folder_end_.links) + " links, " + N(folder_end_.bytes) + " bytes, " +
             N(folder_end_.metas) + " metas; the stream carried " + N(folder_seen_.messages) + ", " +
             N(folder_seen_.links) + ", " + N(folder_seen_.bytes) + ", " + N(folder_seen_.metas));
      state_ = State::kTop;
      return Event::kFolderEnd;

    case wire::kTrailer: {
      if (state_ != State::kTop) Misplaced();
      wire::ParseTrailerPayload(payload_, payload_size_, newer_minor_, &trailer_);
      seen_.records = index_;
      const std::pair<const char*, uint64_t Trailer::*> counts[] = {
          {"records", &Trailer::records},   {"users", &Trailer::users}, {"folders", &Trailer::folders},
          {"messages", &Trailer::messages}, {"links", &Trailer::links}, {"body_bytes", &Trailer::body_bytes},
      };
      for (const auto& [name, field] : counts)
        if (trailer_.*field != seen_.*field)
          Fail(std::string("trailer counts ") + N(trailer_.*field) + " " + name + ", the stream carried " +
               N(seen_.*field));
      seen_.stream_digest = stream_hasher_.Final();
      if (trailer_.stream_digest != seen_.stream_digest)
        Fail("stream digest mismatch (trailer says " + trailer_.stream_digest.Hex() + ", stream hashes to " +
             seen_.stream_digest.Hex() + ")");
      if (Fill(1)) Corrupt("data after the trailer at byte " + N(offset_));
      state_ = State::kDone;
      return Event::kEnd;
    }
  }
  Fail("unreachable record type");  // ReadRecord() admits known types only
}

}  // namespace storemove::format
