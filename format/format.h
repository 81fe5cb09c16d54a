// The storemove backup stream: what `storemove backup` writes and `storemove restore` reads.
// docs/stream-format.md specifies every byte; this header is the C++ face of that document.
//
// The library is pure: no files, sockets or store knowledge. Bytes move through ByteSink and
// ByteSource; format/zstd_codec.h wraps them in zstd. Names in the records are checked only for
// length and NUL bytes here: whoever applies a stream to a store (restore) must validate them
// as hostile input (path components, "..", mailbox syntax) before using them.
#pragma once

#include <cstddef>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/digest.h"

namespace storemove::format {

// --- versions and limits (docs/stream-format.md §11) ---------------------------------
inline constexpr uint16_t kVersionMajor = 1;  // a reader refuses any other major
inline constexpr uint16_t kVersionMinor = 1;  // newer minors are read; unknown trailing fields skipped
// 1.1 added: folder modseq fields (incremental folders), the meta record, folder-end metas and
// summaries. A 1.0 stream still reads (those fields are zero).

inline constexpr size_t kMaxBodyChunk = size_t{1} << 20;          // body bytes per body record
inline constexpr size_t kMaxNameBytes = 1024;                      // every name-like string
inline constexpr size_t kMaxTextBytes = size_t{1} << 20;           // acl, per-user data
inline constexpr uint64_t kMaxMessageSize = uint64_t{1} << 40;     // 1 TiB
inline constexpr size_t kMaxSelection = size_t{1} << 20;           // names in the header
inline constexpr size_t kMaxSubscriptions = size_t{1} << 16;
inline constexpr size_t kMaxUserFlagNames = 64;                    // one per user_flags bit
inline constexpr size_t kMaxPerUser = size_t{1} << 16;
inline constexpr uint8_t kSystemFlagMask = 0x7f;                   // 7 system-flag bits
// A link naming one of the last kLinkCheckWindow contents has its digest and size checked against
// that content by the encoder and the decoder; an older one only for being a content of the stream.
inline constexpr uint64_t kLinkCheckWindow = uint64_t{1} << 17;

// --- byte plumbing -----------------------------------------------------------------------
class ByteSink {
 public:
  virtual ~ByteSink();
  virtual void Write(const void* data, size_t size) = 0;
  // Pushes buffered bytes downstream (a pipe, a socket); not called per record.
  virtual void Flush() {}
};

class ByteSource {
 public:
  virtual ~ByteSource();
  // Reads 1..size bytes into data; returns 0 only at the end of the input (or when size == 0).
  virtual size_t Read(void* data, size_t size) = 0;
  // False when a Read now would wait for a writer (an empty pipe whose writer is still there).
  // A source that cannot tell says true.
  virtual bool Ready() { return true; }
};

// Collects everything written in memory.
class StringSink final : public ByteSink {
 public:
  void Write(const void* data, size_t size) override;
  const std::string& data() const { return data_; }
  std::string Take() { return std::move(data_); }

 private:
  std::string data_;
};

// Reads from memory the caller keeps alive.
class StringSource final : public ByteSource {
 public:
  explicit StringSource(std::string_view data) : data_(data) {}
  size_t Read(void* data, size_t size) override;

 private:
  std::string_view data_;
};

// --- records -----------------------------------------------------------------------------
enum class StreamKind : uint8_t {
  kFull = 0,      // records and message bodies
  kManifest = 1,  // every record but no body records (verify --manifest)
  kSession = 2,   // a full stream that may also carry held records; only inside a network
                  // session (storemove serve), never in a file or pipe
};

struct StreamHeader {
  // The encoder writes only the current version; the decoder reports what the stream says.
  uint16_t version_major = kVersionMajor;
  uint16_t version_minor = kVersionMinor;
  StreamKind kind = StreamKind::kFull;
  int64_t created = 0;  // unix seconds
  int64_t since = 0;    // incremental (-d): messages stored since this unix time; 0 = full
  std::string source_host;
  std::string store_id;
  std::vector<std::string> selection;  // the names asked for, as given
  friend bool operator==(const StreamHeader&, const StreamHeader&) = default;
};

struct UserRecord {
  std::string user;
  std::string partition;
  std::string status;  // "active" | "hold" | "moved:HOST" (not interpreted here)
  uint64_t quota_limit = 0;  // bytes, 0 = no limit
  uint64_t quota_used = 0;   // bytes
  int64_t created = 0;
  std::vector<std::string> subscriptions;  // mailbox names
  friend bool operator==(const UserRecord&, const UserRecord&) = default;
};

struct FolderRecord {
  std::string user;
  std::string folder;  // "INBOX", "Sent/2024"
  std::string partition;
  uint32_t uidvalidity = 0;
  uint32_t uidnext = 0;
  uint32_t count = 0;  // messages in the source folder (an incremental stream carries fewer)
  uint64_t bytes = 0;
  int64_t last_append = 0;
  int64_t created = 0;
  std::string acl;
  std::vector<std::string> user_flag_names;                 // at most kMaxUserFlagNames
  std::vector<std::pair<std::string, std::string>> peruser;  // (reader, data)
  // 1.1. modseq: the source folder's HIGHESTMODSEQ at the snapshot this block was written from.
  // since_modseq: 0 = a complete folder (as in 1.0); otherwise an incremental folder: messages
  // changed after since_modseq come as message/link/held records, every other message of the
  // folder as a meta record; since_modseq == modseq (unchanged) = no items at all, only the
  // folder-end (and its summary).
  uint64_t modseq = 0;
  uint64_t since_modseq = 0;
  bool unchanged() const { return since_modseq != 0 && since_modseq == modseq; }
  friend bool operator==(const FolderRecord&, const FolderRecord&) = default;
};

// One message of a folder. As a message record it carries the body (body records follow);
// as a link record (LinkRecord) it names content already sent earlier in the stream.
struct MessageRecord {
  // Stream-local identity of the content: the n-th message record of a stream has content_id n
  // (from 1). A link's content_id names that earlier message.
  uint64_t content_id = 0;
  uint32_t uid = 0;            // > 0, strictly increasing within a folder
  uint8_t flags = 0;           // system flags, kSystemFlagMask bits
  uint64_t user_flags = 0;     // bit i = folder's user_flag_names[i]
  int64_t internal_date = 0;   // unix seconds
  int64_t sent_date = 0;
  int64_t save_time = 0;
  uint64_t size = 0;           // body bytes, <= kMaxMessageSize
  uint32_t header_size = 0;    // <= size
  Digest digest;               // XXH3-128 of the body
  friend bool operator==(const MessageRecord&, const MessageRecord&) = default;
};
using LinkRecord = MessageRecord;

// A message of a session stream whose body the receiver said it already holds: the message's
// fields plus the SHA-256 of the sender's bytes, which the receiver checks against its own copy
// before linking (XXH3 alone proves nothing). Like a message record it takes the next content_id.
struct HeldRecord : MessageRecord {
  std::array<uint8_t, 32> sha256{};
  friend bool operator==(const HeldRecord&, const HeldRecord&) = default;
};

// 1.1: a message of an incremental folder that the receiver already holds, unchanged in
// content: only its fields (flags may have changed). No body, no content id (content_id = 0).
using MetaRecord = MessageRecord;

// 1.1: what the whole source folder looked like at the snapshot (store::FolderSummary): the
// receiver compares its own copy after applying the folder.
struct FolderSummaryField {
  uint32_t count = 0;
  uint32_t uidvalidity = 0;
  uint32_t uidnext = 0;
  uint64_t bytes = 0;
  Digest digest;
  friend bool operator==(const FolderSummaryField&, const FolderSummaryField&) = default;
};

struct FolderEnd {
  uint64_t messages = 0;  // message records in the folder (and held records, session streams)
  uint64_t links = 0;     // link records in the folder
  uint64_t bytes = 0;     // sum of `size` over both
  // 1.1: meta records in the folder (not counted above), and the optional summary.
  uint64_t metas = 0;
  bool has_summary = false;
  FolderSummaryField summary;
  friend bool operator==(const FolderEnd&, const FolderEnd&) = default;
};

struct Trailer {
  uint64_t records = 0;  // records before the trailer
  uint64_t users = 0;
  uint64_t folders = 0;
  uint64_t messages = 0;  // message records (and held records, session streams)
  uint64_t links = 0;
  uint64_t body_bytes = 0;  // bytes carried in body records
  Digest stream_digest;     // XXH3-128 of every stream byte before the trailer record
  friend bool operator==(const Trailer&, const Trailer&) = default;
};

// The 64-bit fingerprints of (digest, size) of a stream's last kLinkCheckWindow contents, by
// content_id, in a ring that grows to at most kLinkCheckWindow * 8 bytes: the encoder and the
// decoder check links exactly within the window (where a writer's links fall) without memory
// growing with the stream (docs/stream-format.md §7.4).
class RecentContents {
 public:
  uint64_t count() const { return count_; }  // content ids handed out so far
  void Add(const Digest& digest, uint64_t size);
  bool Known(uint64_t content_id) const { return content_id >= 1 && content_id <= count_; }
  // For a known content_id: false only when it is inside the window with another digest or size.
  bool Matches(uint64_t content_id, const Digest& digest, uint64_t size) const;

 private:
  std::vector<uint64_t> ring_;
  uint64_t count_ = 0;
};

// --- encoder -----------------------------------------------------------------------------
// Writes a stream to a sink, enforcing the same rules the decoder checks: misuse and invalid
// records throw kInvalidArgument, a body that does not hash to its record's digest throws
// kCorrupt. After any throw the encoder refuses further calls. Output is buffered and reaches
// the sink in large writes at record boundaries.
class Encoder {
 public:
  explicit Encoder(ByteSink& sink);
  ~Encoder();
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

  void WriteHeader(const StreamHeader& header);
  void WriteUser(const UserRecord& user);
  void WriteFolder(const FolderRecord& folder);  // opens a folder: messages and links, then EndFolder()
  // Starts a message; BodyChunk() calls must total exactly message.size bytes (none in a
  // manifest), then EndMessage(). Returns the content_id assigned (message.content_id must be
  // 0 or equal to it), which later links use.
  uint64_t BeginMessage(const MessageRecord& message);
  void BodyChunk(const void* data, size_t size);  // any size; cut into records of kMaxBodyChunk
  void BodyChunk(std::string_view bytes) { BodyChunk(bytes.data(), bytes.size()); }
  void EndMessage();  // checks the byte count and the digest
  // The link's content_id, digest and size must be those of an earlier message of this stream.
  void WriteLink(const LinkRecord& link);
  // Session streams only: a message whose body the receiver holds. Returns its content_id.
  uint64_t WriteHeld(const HeldRecord& held);
  // Incremental folders only (since_modseq != 0, not unchanged): a message the receiver holds.
  void WriteMeta(const MetaRecord& meta);
  void EndFolder();
  // Ends the folder with a summary of the whole source folder in its folder-end.
  void EndFolder(const FolderSummaryField& summary);
  void Finish();  // writes the trailer and flushes the sink (a zstd sink still needs its Finish())
  void Flush();   // hands buffered whole records to the sink and flushes it

  uint64_t records() const { return index_; }
  uint64_t bytes() const { return flushed_ + out_.size(); }

 private:
  enum class State { kStart, kTop, kInFolder, kInMessage, kDone, kFailed };
  void Expect(State state, const char* call);
  void BeginRecord(uint8_t type);
  void EndRecord();
  void WriteOut();
  uint64_t NextContentId(const MessageRecord& m, const char* what);
  void CheckPerMessage(const MessageRecord& m, const char* what);
  void NotInUnchanged(const char* call);
  void CloseFolder(const FolderSummaryField* summary);
  [[noreturn]] void Fail(const std::string& what);

  ByteSink& sink_;
  State state_ = State::kStart;
  bool manifest_ = false;
  bool session_ = false;
  std::string out_;          // whole records not yet handed to the sink (+ the open record)
  size_t record_start_ = 0;  // offset in out_ of the open record
  uint64_t index_ = 0;       // records completed
  uint64_t flushed_ = 0;     // bytes handed to the sink
  Hasher stream_hasher_;     // over every byte handed to the sink before the trailer
  Hasher body_hasher_;
  MessageRecord message_;    // the open message
  uint64_t body_sent_ = 0;
  size_t chunk_left_ = 0;    // bytes still to put in the open body record
  uint32_t last_uid_ = 0;
  FolderEnd folder_end_;
  bool incremental_ = false;  // the open folder has since_modseq != 0
  bool unchanged_ = false;    // ... and since_modseq == modseq: no items
  Trailer totals_;
  RecentContents content_;
};

// --- decoder -----------------------------------------------------------------------------
// A pull parser that validates everything docs/stream-format.md requires (framing, checksums,
// limits, grammar, body sizes and digests, links, folder and trailer counts) and throws
// Error(kCorrupt, "stream: <what> at record N (byte X)") on the first violation. After a throw
// every Next() throws. Body bytes are handed out as views into the decoder's buffer.
class Decoder {
 public:
  enum class Event { kHeader, kUser, kFolder, kMessage, kBody, kMessageEnd, kLink, kHeld, kMeta, kFolderEnd, kEnd };

  explicit Decoder(ByteSource& source);
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // kEnd once the trailer has been verified and the input has ended; repeats kEnd after that.
  Event Next();

  const StreamHeader& header() const { return header_; }
  const UserRecord& user() const { return user_; }        // after kUser
  const FolderRecord& folder() const { return folder_; }  // the open folder, from kFolder to kFolderEnd
  const MessageRecord& message() const { return message_; }  // from kMessage to kMessageEnd
  const LinkRecord& link() const { return link_; }           // after kLink
  const HeldRecord& held() const { return held_; }           // after kHeld
  const MetaRecord& meta() const { return meta_; }           // after kMeta
  std::string_view body() const { return body_; }  // after kBody, valid until the next Next()
  const FolderEnd& folder_end() const { return folder_end_; }  // after kFolderEnd
  const Trailer& trailer() const { return trailer_; }          // after kEnd

  uint64_t records() const { return index_; }  // records read
  uint64_t bytes() const { return offset_; }   // stream bytes consumed (after decompression)

 private:
  enum class State { kStart, kTop, kInFolder, kInMessage, kDone, kFailed };
  Event Step();
  void ReadPrelude();
  void ReadRecord();
  bool Fill(size_t need);
  void CountNewContent(const MessageRecord& m, const char* what);
  void CheckPerMessage(const MessageRecord& m, const char* what);
  void NotInUnchanged() const;
  [[noreturn]] void Fail(const std::string& what) const;
  [[noreturn]] void Misplaced() const;

  ByteSource& source_;
  std::unique_ptr<uint8_t[]> buf_;  // not a vector: growing must not zero-fill
  size_t capacity_;
  size_t begin_ = 0, end_ = 0;  // unconsumed input is buf_[begin_, end_)
  bool eof_ = false;
  uint64_t offset_ = 0;         // stream offset of buf_[begin_]
  uint64_t index_ = 0;          // records consumed

  // The record being processed.
  uint8_t type_ = 0;
  const uint8_t* payload_ = nullptr;
  size_t payload_size_ = 0;
  uint64_t record_offset_ = 0;

  State state_ = State::kStart;
  bool newer_minor_ = false;
  StreamHeader header_;
  UserRecord user_;
  FolderRecord folder_;
  MessageRecord message_;
  LinkRecord link_;
  HeldRecord held_;
  MetaRecord meta_;
  std::string_view body_;
  FolderEnd folder_end_;
  Trailer trailer_;

  Hasher stream_hasher_;
  Hasher body_hasher_;
  uint64_t body_seen_ = 0;
  uint32_t last_uid_ = 0;
  FolderEnd folder_seen_;
  Trailer seen_;
  RecentContents content_;
};

}  // namespace storemove::format
