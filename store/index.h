// store.idx / store.exp: the per-folder index file (docs/store-format.md §store.idx).
// Internal to store/: callers hold the folder lock as documented on each function.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/fs.h"

namespace storemove::store::index {

constexpr char kMagic[8] = {'S', 'M', 'S', 'T', 'O', 'I', 'D', 'X'};
constexpr uint16_t kMajor = 1;
constexpr uint16_t kMinor = 1;  // what this code writes; 1.0 is read and upgraded on the first write
// Format 1.0 has a 64-byte header; 1.1 a 128-byte one (the 1.0 fields at the same offsets plus
// HIGHESTMODSEQ). HeaderSize(minor) says which; the user-flag names section follows the header.
constexpr uint16_t kHeaderSizeV10 = 64;
constexpr uint16_t kHeaderSize = 128;
constexpr uint16_t HeaderSize(uint16_t minor) { return minor == 0 ? kHeaderSizeV10 : kHeaderSize; }
constexpr uint16_t kRecordSize = 96;
constexpr uint32_t kDefaultRecordsOffset = 1024;
constexpr size_t kMaxUserFlags = 64;
constexpr size_t kMaxUserFlagName = 200;

struct Header {
  uint16_t major = kMajor;
  uint16_t minor = kMinor;
  uint32_t records_offset = kDefaultRecordsOffset;
  uint32_t uidvalidity = 0;
  uint32_t uidnext = 1;
  uint32_t count = 0;
  uint64_t bytes = 0;
  int64_t last_append = 0;
  int64_t created = 0;
  uint32_t flags = 0;
  uint64_t highest_modseq = 0;  // 1.1: raised by every change (docs/store-format.md §4.5); 0 in 1.0
};

struct Contents {
  Header header;
  std::vector<std::string> user_flag_names;
  std::vector<MessageMeta> records;  // file order (append order)
};

// Writes HeaderSize(h.minor) bytes: the 1.0 layout for minor 0, else the 1.1 layout.
void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]);
// `in` holds `size` bytes (64 or more); a 1.1 header needs all 128. Throws kCorrupt naming `shown`
// on a bad magic, version, size or checksum.
Header DecodeHeader(const uint8_t* in, size_t size, const std::string& shown);
// The record's modseq is written only for minor >= 1 (1.0 keeps those bytes reserved = 0).
void EncodeRecord(const MessageMeta& m, uint8_t out[kRecordSize], uint16_t minor = kMinor);
// A 1.0 record reads as modseq 0; a 1.1 record above `highest_modseq` is corrupt.
MessageMeta DecodeRecord(const uint8_t in[kRecordSize], const std::string& shown, uint32_t record_no,
                         const Header& header);

// Reads and validates the whole file (header, user-flag names, `count` records).
Contents Read(int fd, const std::string& shown, bool with_records = true);
// The same, but the records, in file order, go to `sink` a slice at a time instead of into
// Contents::records: a reader that spools them never holds them all.
using RecordSink = std::function<void(const MessageMeta* records, size_t n)>;
Contents Read(int fd, const std::string& shown, const RecordSink& sink);
// Reads the store.idx of the folder directory `dirfd` (shown as `dir`), which the caller has
// locked. A missing index is damage: kCorrupt naming `mailbox` and the path.
Contents ReadFolderIndex(int dirfd, const std::string& dir, const std::string& mailbox, bool with_records = true);
Contents ReadFolderIndex(int dirfd, const std::string& dir, const std::string& mailbox, const RecordSink& sink);
// Writes a complete new index file to `path` via temporary name + rename (atomic), in the
// format of contents.header.minor (the caller sets kMinor to upgrade).
void WriteNew(const std::string& path, const Contents& contents, bool sync);
// The same for `name` in the open directory `dirfd` (a folder's): no path walk from the root.
// `shown` is the file's full path, for messages.
void WriteNewAt(int dirfd, const std::string& name, const Contents& contents, bool sync, const std::string& shown);
// For a writer holding the folder's exclusive lock: opens `name` in `dirfd` for writing and
// reads its header; a 1.0 file is first rewritten as 1.1 (temp + rename, every record kept with
// modseq 0), so every write after this lands in a 1.1 file. `path` is the file's full path.
struct Opened {
  UniqueFd fd;
  Header header;
};
Opened OpenForWrite(int dirfd, const std::string& name, const std::string& path, bool sync);
// Appends records after the current `count` records, then rewrites the header with the new
// count: the header write is the commit point. `header` is updated in place.
void Append(int fd, Header* header, const std::vector<MessageMeta>& records, const std::string& shown, bool sync);
// Rewrites record number `pos` (file order) in place.
void RewriteRecord(int fd, const Header& header, uint32_t pos, const MessageMeta& m, const std::string& shown);
void WriteHeader(int fd, const Header& header, const std::string& shown);

}  // namespace storemove::store::index
