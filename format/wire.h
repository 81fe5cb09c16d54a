// Internal to format/: the byte layout of docs/stream-format.md (prelude, record framing and
// every record payload), shared by the encoder and the decoder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "format/format.h"

namespace storemove::format::wire {

// "\x89SMV\r\n\x1a\n": a high byte and line-ending bytes catch 7-bit and text-mode mangling;
// distinct from the zstd frame magic 28 B5 2F FD so the two are told apart by the first bytes.
inline constexpr uint8_t kMagic[8] = {0x89, 'S', 'M', 'V', '\r', '\n', 0x1a, '\n'};
inline constexpr size_t kPreludeSize = 12;      // magic, major u16, minor u16
inline constexpr size_t kFrameHeaderSize = 5;   // type u8, payload length u32
inline constexpr size_t kFrameCheckSize = 4;    // XXH32 of header + payload, seeded with the index
inline constexpr size_t kFrameOverhead = kFrameHeaderSize + kFrameCheckSize;

enum RecordType : uint8_t {
  kHeader = 0x01,
  kUser = 0x02,
  kFolder = 0x03,
  kMessage = 0x04,
  kBody = 0x05,
  kMessageEnd = 0x06,
  kLink = 0x07,
  kFolderEnd = 0x08,
  kTrailer = 0x09,
  kHeld = 0x0a,  // session streams only
  kMeta = 0x0b,  // 1.1: incremental folders only
};

// Name used in error messages ("folder-end"), nullptr for an unknown type.
const char* RecordName(uint8_t type);
// Largest payload a record of this type may declare (docs/stream-format.md §11).
uint32_t MaxPayload(uint8_t type);

inline constexpr size_t kMessagePayloadSize = 73;    // message and link records, version 1.0
inline constexpr size_t kHeldPayloadSize = kMessagePayloadSize + 32;  // + sha256
inline constexpr size_t kFolderEndPayloadSize = 24;      // version 1.0
inline constexpr size_t kSummarySize = 36;               // 1.1 folder-end summary fields
inline constexpr size_t kTrailerPayloadSize = 64;
inline constexpr size_t kTrailerDigestOffset = 48;

// What the decoder and the encoder both remember of each content_id: a 64-bit fingerprint of
// (digest, size), enough to catch a link that names the wrong content at 8 bytes per message.
uint64_t ContentFingerprint(const Digest& digest, uint64_t size);

// --- encoding: appends a payload; throws kInvalidArgument ("stream encoder: ...") for a value
// the format cannot carry (too long, NUL byte, too many entries).
void AppendHeaderPayload(std::string* out, const StreamHeader& h);
void AppendUserPayload(std::string* out, const UserRecord& u);
void AppendFolderPayload(std::string* out, const FolderRecord& f);
void AppendMessagePayload(std::string* out, const MessageRecord& m);  // also links
void AppendHeldPayload(std::string* out, const HeldRecord& h);
void AppendFolderEndPayload(std::string* out, const FolderEnd& e);
void AppendTrailerPayload(std::string* out, const Trailer& t);

// --- decoding: parses a payload whose frame checksum is already verified. Throws PayloadError
// (the decoder adds the record position). `skip_unknown_tail` is set for a newer minor version:
// bytes after the known fields are then ignored instead of rejected.
struct PayloadError {
  std::string what;
};
void ParseHeaderPayload(const uint8_t* p, size_t n, bool skip_unknown_tail, StreamHeader* h);
void ParseUserPayload(const uint8_t* p, size_t n, bool skip_unknown_tail, UserRecord* u);
// `minor`: the stream's minor version; fields added after it are absent from the payload (zero).
void ParseFolderPayload(const uint8_t* p, size_t n, uint16_t minor, bool skip_unknown_tail, FolderRecord* f);
void ParseMessagePayload(const uint8_t* p, size_t n, bool skip_unknown_tail, MessageRecord* m);
void ParseHeldPayload(const uint8_t* p, size_t n, bool skip_unknown_tail, HeldRecord* h);
void ParseMessageEndPayload(const uint8_t* p, size_t n, bool skip_unknown_tail);
void ParseFolderEndPayload(const uint8_t* p, size_t n, uint16_t minor, bool skip_unknown_tail, FolderEnd* e);
void ParseTrailerPayload(const uint8_t* p, size_t n, bool skip_unknown_tail, Trailer* t);

}  // namespace storemove::format::wire
