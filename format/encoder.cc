// Encoder: builds whole records in one buffer and hands it to the sink in large writes.
#include <algorithm>
#include <cstring>

#include "format/format.h"
#include "format/wire.h"
#include "util/bytes.h"
#include "util/error.h"

namespace storemove::format {

namespace {
// Buffered records reach the sink once they pass this size (and at Flush()/Finish()). 256 KiB,
// the compressor's chunk: 1 MiB kept ~0.75 MiB more of a backup's memory for no speed.
constexpr size_t kWriteThreshold = size_t{256} << 10;

[[noreturn]] void Invalid(const std::string& what) { Throw(Errc::kInvalidArgument, "stream encoder: " + what); }
}  // namespace

Encoder::Encoder(ByteSink& sink) : sink_(sink) {
  out_.reserve(kWriteThreshold + kMaxBodyChunk + 2 * wire::kFrameOverhead);
}

Encoder::~Encoder() = default;

void Encoder::Expect(State state, const char* call) {
  if (state_ == state) return;
  const char* where = "";
  switch (state_) {
    case State::kStart: where = "before WriteHeader()"; break;
    case State::kTop: where = "outside a folder"; break;
    case State::kInFolder: where = "inside a folder (EndFolder() missing?)"; break;
    case State::kInMessage: where = "inside a message (EndMessage() missing?)"; break;
    case State::kDone: where = "after Finish()"; break;
    case State::kFailed: where = "after an error"; break;
  }
  Invalid(std::string(call) + " not allowed " + where);
}

void Encoder::Fail(const std::string& what) {
  state_ = State::kFailed;
  Throw(Errc::kCorrupt, "stream encoder: " + what);
}

void Encoder::BeginRecord(uint8_t type) {
  record_start_ = out_.size();
  out_.push_back(static_cast<char>(type));
  out_.append(4, '\0');  // payload length, set by EndRecord()
}

void Encoder::EndRecord() {
  uint8_t* record = reinterpret_cast<uint8_t*>(out_.data()) + record_start_;
  size_t length = out_.size() - record_start_ - wire::kFrameHeaderSize;
  uint32_t limit = wire::MaxPayload(record[0]);
  if (length > limit) {
    const char* name = wire::RecordName(record[0]);
    out_.resize(record_start_);
    Invalid(std::string(name) + " record too large (" + std::to_string(length) + " > " + std::to_string(limit) +
            " bytes)");
  }
  PutU32(record + 1, static_cast<uint32_t>(length));
  AppendU32(&out_, Checksum32(record, wire::kFrameHeaderSize + length, static_cast<uint32_t>(index_)));
  ++index_;
  if (out_.size() >= kWriteThreshold) WriteOut();
}

// Hands whole buffered records to the sink (an open body record stays behind).
void Encoder::WriteOut() {
  size_t whole = state_ == State::kInMessage && chunk_left_ > 0 ? record_start_ : out_.size();
  if (whole == 0) return;
  stream_hasher_.Update(out_.data(), whole);
  try {
    sink_.Write(out_.data(), whole);
  } catch (...) {
    state_ = State::kFailed;
    throw;
  }
  flushed_ += whole;
  out_.erase(0, whole);
  record_start_ -= std::min(record_start_, whole);
}

void Encoder::WriteHeader(const StreamHeader& header) {
  if (state_ != State::kStart && state_ != State::kFailed) Invalid("WriteHeader() called twice");
  Expect(State::kStart, "WriteHeader()");
  if (header.version_major != kVersionMajor || header.version_minor != kVersionMinor)
    Invalid("can only write version " + std::to_string(kVersionMajor) + "." + std::to_string(kVersionMinor) +
            ", not " + std::to_string(header.version_major) + "." + std::to_string(header.version_minor));
  out_.append(reinterpret_cast<const char*>(wire::kMagic), sizeof wire::kMagic);
  AppendU16(&out_, kVersionMajor);
  AppendU16(&out_, kVersionMinor);
  BeginRecord(wire::kHeader);
  try {
    wire::AppendHeaderPayload(&out_, header);
    EndRecord();
  } catch (const Error&) {
    out_.clear();
    throw;
  }
  manifest_ = header.kind == StreamKind::kManifest;
  session_ = header.kind == StreamKind::kSession;
  state_ = State::kTop;
}

void Encoder::WriteUser(const UserRecord& user) {
  Expect(State::kTop, "WriteUser()");
  BeginRecord(wire::kUser);
  try {
    wire::AppendUserPayload(&out_, user);
  } catch (const Error&) {
    out_.resize(record_start_);
    throw;
  }
  EndRecord();
  ++totals_.users;
}

void Encoder::WriteFolder(const FolderRecord& folder) {
  Expect(State::kTop, "WriteFolder()");
  BeginRecord(wire::kFolder);
  try {
    wire::AppendFolderPayload(&out_, folder);
  } catch (const Error&) {
    out_.resize(record_start_);
    throw;
  }
  EndRecord();
  ++totals_.folders;
  folder_end_ = {};
  last_uid_ = 0;
  incremental_ = folder.since_modseq != 0;
  unchanged_ = folder.unchanged();
  state_ = State::kInFolder;
}

// An unchanged folder (since_modseq == modseq) carries no items, only its folder-end.
void Encoder::NotInUnchanged(const char* call) {
  if (unchanged_) Invalid(std::string(call) + " not allowed in an unchanged folder (since_modseq == modseq)");
}

void Encoder::CheckPerMessage(const MessageRecord& m, const char* what) {
  std::string where = std::string(what) + " uid " + std::to_string(m.uid) + ": ";
  if (m.uid == 0) Invalid(where + "uid 0 is not a UID");
  if (m.uid <= last_uid_)
    Invalid(where + "not above the previous uid " + std::to_string(last_uid_) + " of the folder");
  if (m.flags & ~kSystemFlagMask) Invalid(where + "flags " + std::to_string(m.flags) + " outside the 7 system-flag bits");
  if (m.size > kMaxMessageSize) Invalid(where + "size " + std::to_string(m.size) + " over the 1 TiB limit");
  if (m.header_size > m.size)
    Invalid(where + "header_size " + std::to_string(m.header_size) + " > size " + std::to_string(m.size));
}

// The content_id a message or held record takes; one given by the caller must be that one.
uint64_t Encoder::NextContentId(const MessageRecord& m, const char* what) {
  const uint64_t id = content_.count() + 1;
  if (m.content_id != 0 && m.content_id != id)
    Invalid(std::string(what) + " uid " + std::to_string(m.uid) + ": content_id " + std::to_string(m.content_id) +
            " given, but this message is content " + std::to_string(id));
  return id;
}

uint64_t Encoder::BeginMessage(const MessageRecord& message) {
  Expect(State::kInFolder, "BeginMessage()");
  NotInUnchanged("BeginMessage()");
  CheckPerMessage(message, "message");
  const uint64_t id = NextContentId(message, "message");
  message_ = message;
  message_.content_id = id;
  BeginRecord(wire::kMessage);
  wire::AppendMessagePayload(&out_, message_);
  EndRecord();
  content_.Add(message_.digest, message_.size);
  last_uid_ = message_.uid;
  ++folder_end_.messages;
  folder_end_.bytes += message_.size;
  ++totals_.messages;
  body_sent_ = 0;
  chunk_left_ = 0;
  body_hasher_.Reset();
  state_ = State::kInMessage;
  return id;
}

void Encoder::BodyChunk(const void* data, size_t size) {
  Expect(State::kInMessage, "BodyChunk()");
  if (manifest_) Invalid("BodyChunk() in a manifest stream");
  if (size > message_.size - body_sent_)
    Invalid("message uid " + std::to_string(message_.uid) + ": body longer than its size " +
            std::to_string(message_.size));
  body_hasher_.Update(data, size);
  totals_.body_bytes += size;
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    if (chunk_left_ == 0) {
      BeginRecord(wire::kBody);
      chunk_left_ = static_cast<size_t>(std::min<uint64_t>(kMaxBodyChunk, message_.size - body_sent_));
    }
    size_t take = std::min(size, chunk_left_);
    out_.append(p, take);
    p += take;
    size -= take;
    chunk_left_ -= take;
    body_sent_ += take;
    if (chunk_left_ == 0) EndRecord();
  }
}

void Encoder::EndMessage() {
  Expect(State::kInMessage, "EndMessage()");
  if (!manifest_) {
    if (body_sent_ != message_.size)
      Invalid("message uid " + std::to_string(message_.uid) + ": EndMessage() after " + std::to_string(body_sent_) +
              " of " + std::to_string(message_.size) + " body bytes");
    Digest actual = body_hasher_.Final();
    if (actual != message_.digest)
      Fail("message uid " + std::to_string(message_.uid) + ": body hashes to " + actual.Hex() +
           ", not to its record's digest " + message_.digest.Hex());
  }
  BeginRecord(wire::kMessageEnd);
  EndRecord();
  state_ = State::kInFolder;
}

void Encoder::WriteLink(const LinkRecord& link) {
  Expect(State::kInFolder, "WriteLink()");
  NotInUnchanged("WriteLink()");
  CheckPerMessage(link, "link");
  if (!content_.Known(link.content_id))
    Invalid("link uid " + std::to_string(link.uid) + ": unknown content_id " + std::to_string(link.content_id));
  if (!content_.Matches(link.content_id, link.digest, link.size))
    Invalid("link uid " + std::to_string(link.uid) + ": digest and size differ from those of content_id " +
            std::to_string(link.content_id));
  BeginRecord(wire::kLink);
  wire::AppendMessagePayload(&out_, link);
  EndRecord();
  last_uid_ = link.uid;
  ++folder_end_.links;
  folder_end_.bytes += link.size;
  ++totals_.links;
}

uint64_t Encoder::WriteHeld(const HeldRecord& held) {
  Expect(State::kInFolder, "WriteHeld()");
  if (!session_) Invalid("WriteHeld() outside a session stream");
  NotInUnchanged("WriteHeld()");
  CheckPerMessage(held, "held");
  const uint64_t id = NextContentId(held, "held");
  HeldRecord record = held;
  record.content_id = id;
  BeginRecord(wire::kHeld);
  wire::AppendHeldPayload(&out_, record);
  EndRecord();
  content_.Add(record.digest, record.size);
  last_uid_ = record.uid;
  ++folder_end_.messages;  // held records count with messages: both introduce a content_id
  folder_end_.bytes += record.size;
  ++totals_.messages;
  return id;
}

void Encoder::WriteMeta(const MetaRecord& meta) {
  Expect(State::kInFolder, "WriteMeta()");
  if (!incremental_) Invalid("WriteMeta() outside an incremental folder (since_modseq 0)");
  NotInUnchanged("WriteMeta()");
  CheckPerMessage(meta, "meta");
  if (meta.content_id != 0)
    Invalid("meta uid " + std::to_string(meta.uid) + ": content_id " + std::to_string(meta.content_id) +
            " given; a meta record carries no content (0)");
  BeginRecord(wire::kMeta);
  wire::AppendMessagePayload(&out_, meta);
  EndRecord();
  last_uid_ = meta.uid;
  ++folder_end_.metas;
}

void Encoder::EndFolder() {
  Expect(State::kInFolder, "EndFolder()");
  CloseFolder(nullptr);
}

void Encoder::EndFolder(const FolderSummaryField& summary) {
  Expect(State::kInFolder, "EndFolder()");
  CloseFolder(&summary);
}

void Encoder::CloseFolder(const FolderSummaryField* summary) {
  folder_end_.has_summary = summary != nullptr;
  folder_end_.summary = summary ? *summary : FolderSummaryField{};
  BeginRecord(wire::kFolderEnd);
  wire::AppendFolderEndPayload(&out_, folder_end_);
  EndRecord();
  state_ = State::kTop;
}

void Encoder::Flush() {
  if (state_ == State::kFailed) Invalid("Flush() not allowed after an error");
  WriteOut();
  sink_.Flush();
}

void Encoder::Finish() {
  Expect(State::kTop, "Finish()");
  WriteOut();  // the stream digest covers everything before the trailer
  totals_.records = index_;
  totals_.stream_digest = stream_hasher_.Final();
  BeginRecord(wire::kTrailer);
  wire::AppendTrailerPayload(&out_, totals_);
  EndRecord();
  state_ = State::kDone;
  try {
    sink_.Write(out_.data(), out_.size());
    sink_.Flush();
  } catch (...) {
    state_ = State::kFailed;
    throw;
  }
  flushed_ += out_.size();
  out_.clear();
}

}  // namespace storemove::format
