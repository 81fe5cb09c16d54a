// Record payload layouts (docs/stream-format.md §5), both directions.
#include <cstring>

#include "format/wire.h"
#include "util/bytes.h"
#include "util/error.h"

namespace storemove::format::wire {

const char* RecordName(uint8_t type) {
  switch (type) {
    case kHeader: return "header";
    case kUser: return "user";
    case kFolder: return "folder";
    case kMessage: return "message";
    case kBody: return "body";
    case kMessageEnd: return "message-end";
    case kLink: return "link";
    case kFolderEnd: return "folder-end";
    case kTrailer: return "trailer";
    case kHeld: return "held";
    case kMeta: return "meta";
  }
  return nullptr;
}

uint32_t MaxPayload(uint8_t type) {
  switch (type) {
    case kHeader:
    case kUser:
    case kFolder: return uint32_t{1} << 24;  // 16 MiB: long lists of names
    case kBody: return uint32_t(kMaxBodyChunk);
    default: return 4096;  // fixed-size records, with room for fields a newer minor adds
  }
}

uint64_t ContentFingerprint(const Digest& digest, uint64_t size) {
  return GetU64(digest.bytes.data()) ^ GetU64(digest.bytes.data() + 8) * 0x9E3779B97F4A7C15ull ^
         size * 0xC2B2AE3D27D4EB4Full;
}

}  // namespace storemove::format::wire

namespace storemove::format {

void RecentContents::Add(const Digest& digest, uint64_t size) {
  const uint64_t fingerprint = wire::ContentFingerprint(digest, size);
  if (ring_.size() < kLinkCheckWindow)
    ring_.push_back(fingerprint);
  else
    ring_[count_ % kLinkCheckWindow] = fingerprint;
  ++count_;
}

bool RecentContents::Matches(uint64_t content_id, const Digest& digest, uint64_t size) const {
  if (count_ - content_id >= kLinkCheckWindow) return true;  // older than the window: not checked
  return ring_[(content_id - 1) % kLinkCheckWindow] == wire::ContentFingerprint(digest, size);
}

}  // namespace storemove::format

namespace storemove::format::wire {

// --- encoding ------------------------------------------------------------------------------
namespace {

class Writer {
 public:
  Writer(std::string* out, const char* record) : out_(out), record_(record) {}
  void U8(uint8_t v) { AppendU8(out_, v); }
  void U16(uint16_t v) { AppendU16(out_, v); }
  void U32(uint32_t v) { AppendU32(out_, v); }
  void U64(uint64_t v) { AppendU64(out_, v); }
  void I64(int64_t v) { AppendU64(out_, static_cast<uint64_t>(v)); }
  void Bytes(const void* p, size_t n) { out_->append(static_cast<const char*>(p), n); }

  void Name(std::string_view s, const char* field) {
    Check(s, kMaxNameBytes, field);
    U16(static_cast<uint16_t>(s.size()));
    Bytes(s.data(), s.size());
  }
  void Text(std::string_view s, const char* field) {
    Check(s, kMaxTextBytes, field);
    U32(static_cast<uint32_t>(s.size()));
    Bytes(s.data(), s.size());
  }
  void NameList(const std::vector<std::string>& list, size_t max, const char* field) {
    Count(list.size(), max, field);
    for (const std::string& s : list) Name(s, field);
  }
  void Count(size_t n, size_t max, const char* field) {
    if (n > max)
      Fail(std::string("too many ") + field + " entries (" + std::to_string(n) + " > " + std::to_string(max) + ")");
    U32(static_cast<uint32_t>(n));
  }
  [[noreturn]] void Fail(const std::string& what) const {
    Throw(Errc::kInvalidArgument, std::string("stream encoder: ") + record_ + " record: " + what);
  }

 private:
  void Check(std::string_view s, size_t max, const char* field) const {
    if (s.size() > max)
      Fail(std::string(field) + " too long (" + std::to_string(s.size()) + " > " + std::to_string(max) + " bytes)");
    if (s.find('\0') != std::string_view::npos) Fail(std::string(field) + " contains a NUL byte");
  }
  std::string* out_;
  const char* record_;
};

}  // namespace

void AppendHeaderPayload(std::string* out, const StreamHeader& h) {
  Writer w(out, "header");
  if (h.kind != StreamKind::kFull && h.kind != StreamKind::kManifest && h.kind != StreamKind::kSession)
    w.Fail("unknown stream kind " + std::to_string(int(h.kind)));
  w.U8(static_cast<uint8_t>(h.kind));
  w.I64(h.created);
  w.I64(h.since);
  w.Name(h.source_host, "source_host");
  w.Name(h.store_id, "store_id");
  w.NameList(h.selection, kMaxSelection, "selection");
}

void AppendUserPayload(std::string* out, const UserRecord& u) {
  Writer w(out, "user");
  w.U64(u.quota_limit);
  w.U64(u.quota_used);
  w.I64(u.created);
  w.Name(u.user, "user");
  w.Name(u.partition, "partition");
  w.Name(u.status, "status");
  w.NameList(u.subscriptions, kMaxSubscriptions, "subscription");
}

void AppendFolderPayload(std::string* out, const FolderRecord& f) {
  Writer w(out, "folder");
  if (f.since_modseq > f.modseq)
    w.Fail("since_modseq " + std::to_string(f.since_modseq) + " above modseq " + std::to_string(f.modseq));
  w.U32(f.uidvalidity);
  w.U32(f.uidnext);
  w.U32(f.count);
  w.U64(f.bytes);
  w.I64(f.last_append);
  w.I64(f.created);
  w.Name(f.user, "user");
  w.Name(f.folder, "folder");
  w.Name(f.partition, "partition");
  w.Text(f.acl, "acl");
  w.NameList(f.user_flag_names, kMaxUserFlagNames, "user_flag_name");
  w.Count(f.peruser.size(), kMaxPerUser, "peruser");
  for (const auto& [reader, data] : f.peruser) {
    w.Name(reader, "peruser reader");
    w.Text(data, "peruser data");
  }
  w.U64(f.modseq);  // 1.1
  w.U64(f.since_modseq);
}

void AppendMessagePayload(std::string* out, const MessageRecord& m) {
  uint8_t b[kMessagePayloadSize];
  PutU64(b + 0, m.content_id);
  PutU32(b + 8, m.uid);
  b[12] = m.flags;
  PutU64(b + 13, m.user_flags);
  PutU64(b + 21, static_cast<uint64_t>(m.internal_date));
  PutU64(b + 29, static_cast<uint64_t>(m.sent_date));
  PutU64(b + 37, static_cast<uint64_t>(m.save_time));
  PutU64(b + 45, m.size);
  PutU32(b + 53, m.header_size);
  std::memcpy(b + 57, m.digest.bytes.data(), 16);
  out->append(reinterpret_cast<const char*>(b), sizeof b);
}

void AppendHeldPayload(std::string* out, const HeldRecord& h) {
  AppendMessagePayload(out, h);
  out->append(reinterpret_cast<const char*>(h.sha256.data()), h.sha256.size());
}

void AppendFolderEndPayload(std::string* out, const FolderEnd& e) {
  AppendU64(out, e.messages);
  AppendU64(out, e.links);
  AppendU64(out, e.bytes);
  // 1.1: metas, then the summary flag and the summary (all zero without one: a fixed layout).
  AppendU64(out, e.metas);
  AppendU8(out, e.has_summary ? 1 : 0);
  const FolderSummaryField none;
  const FolderSummaryField& s = e.has_summary ? e.summary : none;
  AppendU32(out, s.count);
  AppendU32(out, s.uidvalidity);
  AppendU32(out, s.uidnext);
  AppendU64(out, s.bytes);
  out->append(reinterpret_cast<const char*>(s.digest.bytes.data()), 16);
}

void AppendTrailerPayload(std::string* out, const Trailer& t) {
  AppendU64(out, t.records);
  AppendU64(out, t.users);
  AppendU64(out, t.folders);
  AppendU64(out, t.messages);
  AppendU64(out, t.links);
  AppendU64(out, t.body_bytes);
  out->append(reinterpret_cast<const char*>(t.stream_digest.bytes.data()), 16);
}

// --- decoding ------------------------------------------------------------------------------
namespace {

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}

  const uint8_t* Take(size_t k, const char* field) {
    if (n_ - pos_ < k) Fail(std::string("payload ends inside ") + field);
    const uint8_t* at = p_ + pos_;
    pos_ += k;
    return at;
  }
  uint8_t U8(const char* field) { return *Take(1, field); }
  uint16_t U16(const char* field) { return GetU16(Take(2, field)); }
  uint32_t U32(const char* field) { return GetU32(Take(4, field)); }
  uint64_t U64(const char* field) { return GetU64(Take(8, field)); }
  int64_t I64(const char* field) { return static_cast<int64_t>(U64(field)); }

  void Name(const char* field, std::string* out) { String(U16(field), kMaxNameBytes, field, out); }
  void Text(const char* field, std::string* out) { String(U32(field), kMaxTextBytes, field, out); }

  // A u32 count, bounded by `max` and by what the rest of the payload can hold (each entry
  // takes at least `min_entry` bytes), so a hostile count never drives an allocation.
  size_t Count(size_t max, size_t min_entry, const char* field) {
    uint32_t count = U32(field);
    if (count > max)
      Fail(std::string("too many ") + field + " entries (" + std::to_string(count) + " > " + std::to_string(max) + ")");
    if (count > (n_ - pos_) / min_entry)
      Fail(std::string(field) + " count " + std::to_string(count) + " exceeds the payload");
    return count;
  }
  void NameList(size_t max, const char* field, std::vector<std::string>* out) {
    size_t count = Count(max, 2, field);
    out->resize(count);
    for (std::string& s : *out) Name(field, &s);
  }

  void End(bool skip_unknown_tail) const {
    if (pos_ != n_ && !skip_unknown_tail)
      Fail(std::to_string(n_ - pos_) + " unexpected bytes after the last field");
  }

  [[noreturn]] static void Fail(const std::string& what) { throw PayloadError{what}; }

 private:
  void String(size_t len, size_t max, const char* field, std::string* out) {
    if (len > max)
      Fail(std::string(field) + " too long (" + std::to_string(len) + " > " + std::to_string(max) + " bytes)");
    const uint8_t* s = Take(len, field);
    if (std::memchr(s, 0, len)) Fail(std::string(field) + " contains a NUL byte");
    out->assign(reinterpret_cast<const char*>(s), len);
  }
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

}  // namespace

void ParseHeaderPayload(const uint8_t* p, size_t n, bool skip_unknown_tail, StreamHeader* h) {
  Reader r(p, n);
  uint8_t kind = r.U8("kind");
  if (kind > uint8_t(StreamKind::kSession)) Reader::Fail("unknown stream kind " + std::to_string(kind));
  h->kind = static_cast<StreamKind>(kind);
  h->created = r.I64("created");
  h->since = r.I64("since");
  r.Name("source_host", &h->source_host);
  r.Name("store_id", &h->store_id);
  r.NameList(kMaxSelection, "selection", &h->selection);
  r.End(skip_unknown_tail);
}

void ParseUserPayload(const uint8_t* p, size_t n, bool skip_unknown_tail, UserRecord* u) {
  Reader r(p, n);
  u->quota_limit = r.U64("quota_limit");
  u->quota_used = r.U64("quota_used");
  u->created = r.I64("created");
  r.Name("user", &u->user);
  r.Name("partition", &u->partition);
  r.Name("status", &u->status);
  r.NameList(kMaxSubscriptions, "subscription", &u->subscriptions);
  r.End(skip_unknown_tail);
}

void ParseFolderPayload(const uint8_t* p, size_t n, uint16_t minor, bool skip_unknown_tail, FolderRecord* f) {
  Reader r(p, n);
  f->uidvalidity = r.U32("uidvalidity");
  f->uidnext = r.U32("uidnext");
  f->count = r.U32("count");
  f->bytes = r.U64("bytes");
  f->last_append = r.I64("last_append");
  f->created = r.I64("created");
  r.Name("user", &f->user);
  r.Name("folder", &f->folder);
  r.Name("partition", &f->partition);
  r.Text("acl", &f->acl);
  r.NameList(kMaxUserFlagNames, "user_flag_name", &f->user_flag_names);
  f->peruser.resize(r.Count(kMaxPerUser, 2 + 4, "peruser"));
  for (auto& [reader, data] : f->peruser) {
    r.Name("peruser reader", &reader);
    r.Text("peruser data", &data);
  }
  f->modseq = minor >= 1 ? r.U64("modseq") : 0;
  f->since_modseq = minor >= 1 ? r.U64("since_modseq") : 0;
  r.End(skip_unknown_tail);
  if (f->since_modseq > f->modseq)
    Reader::Fail("since_modseq " + std::to_string(f->since_modseq) + " above modseq " + std::to_string(f->modseq));
}

void ParseMessagePayload(const uint8_t* p, size_t n, bool skip_unknown_tail, MessageRecord* m) {
  Reader r(p, n);
  const uint8_t* b = r.Take(kMessagePayloadSize, "the fixed fields");
  m->content_id = GetU64(b + 0);
  m->uid = GetU32(b + 8);
  m->flags = b[12];
  m->user_flags = GetU64(b + 13);
  m->internal_date = static_cast<int64_t>(GetU64(b + 21));
  m->sent_date = static_cast<int64_t>(GetU64(b + 29));
  m->save_time = static_cast<int64_t>(GetU64(b + 37));
  m->size = GetU64(b + 45);
  m->header_size = GetU32(b + 53);
  std::memcpy(m->digest.bytes.data(), b + 57, 16);
  r.End(skip_unknown_tail);
}

void ParseHeldPayload(const uint8_t* p, size_t n, bool skip_unknown_tail, HeldRecord* h) {
  Reader r(p, n);
  r.Take(kMessagePayloadSize, "the fixed fields");
  std::memcpy(h->sha256.data(), r.Take(h->sha256.size(), "sha256"), h->sha256.size());
  ParseMessagePayload(p, kMessagePayloadSize, false, h);
  r.End(skip_unknown_tail);
}

void ParseMessageEndPayload(const uint8_t* p, size_t n, bool skip_unknown_tail) {
  Reader(p, n).End(skip_unknown_tail);
}

void ParseFolderEndPayload(const uint8_t* p, size_t n, uint16_t minor, bool skip_unknown_tail, FolderEnd* e) {
  Reader r(p, n);
  e->messages = r.U64("messages");
  e->links = r.U64("links");
  e->bytes = r.U64("bytes");
  e->metas = 0;
  e->has_summary = false;
  e->summary = {};
  if (minor >= 1) {
    e->metas = r.U64("metas");
    uint8_t flag = r.U8("has_summary");
    if (flag > 1) Reader::Fail("has_summary " + std::to_string(flag) + " is neither 0 nor 1");
    e->has_summary = flag == 1;
    FolderSummaryField& s = e->summary;
    s.count = r.U32("summary count");
    s.uidvalidity = r.U32("summary uidvalidity");
    s.uidnext = r.U32("summary uidnext");
    s.bytes = r.U64("summary bytes");
    std::memcpy(s.digest.bytes.data(), r.Take(16, "summary digest"), 16);
    // Without a summary its fields are zero, so every folder-end has one encoding.
    if (!e->has_summary && s != FolderSummaryField{}) Reader::Fail("summary fields set but has_summary is 0");
  }
  r.End(skip_unknown_tail);
}

void ParseTrailerPayload(const uint8_t* p, size_t n, bool skip_unknown_tail, Trailer* t) {
  Reader r(p, n);
  t->records = r.U64("records");
  t->users = r.U64("users");
  t->folders = r.U64("folders");
  t->messages = r.U64("messages");
  t->links = r.U64("links");
  t->body_bytes = r.U64("body_bytes");
  std::memcpy(t->stream_digest.bytes.data(), r.Take(16, "stream_digest"), 16);
  r.End(skip_unknown_tail);
}

}  // namespace storemove::format::wire
