// store.idx / store.exp: the per-folder index file (docs/store-format.md §store.idx).
// Internal to store/: callers hold the folder lock as documented on each function.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/store.h"

namespace storemove::store::index {

constexpr char kMagic[8] = {'S', 'M', 'S', 'T', 'O', 'I', 'D', 'X'};
constexpr uint16_t kMajor = 1;
constexpr uint16_t kMinor = 0;
constexpr uint16_t kHeaderSize = 64;
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
};

struct Contents {
  Header header;
  std::vector<std::string> user_flag_names;
  std::vector<MessageMeta> records;  // file order (append order)
};

void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]);
// Throws kCorrupt naming `shown` on a bad magic, version, or checksum.
Header DecodeHeader(const uint8_t in[kHeaderSize], const std::string& shown);
void EncodeRecord(const MessageMeta& m, uint8_t out[kRecordSize]);
MessageMeta DecodeRecord(const uint8_t in[kRecordSize], const std::string& shown, uint32_t record_no);

// Reads and validates the whole file (header, user-flag names, `count` records).
Contents Read(int fd, const std::string& shown, bool with_records = true);
// Writes a complete new index file to `path` via temporary name + rename (atomic).
void WriteNew(const std::string& path, const Contents& contents, bool sync);
// Appends records after the current `count` records, then rewrites the header with the new
// count: the header write is the commit point. `header` is updated in place.
void Append(int fd, Header* header, const std::vector<MessageMeta>& records, const std::string& shown, bool sync);
// Rewrites record number `pos` (file order) in place.
void RewriteRecord(int fd, const Header& header, uint32_t pos, const MessageMeta& m, const std::string& shown);
void WriteHeader(int fd, const Header& header, const std::string& shown);

}  // namespace storemove::store::index
