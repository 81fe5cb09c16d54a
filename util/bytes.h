// Little-endian fixed-width encoding helpers shared by store.idx and the stream format.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace storemove {

inline void PutU16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v); p[1] = uint8_t(v >> 8); }
inline void PutU32(uint8_t* p, uint32_t v) { for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i)); }
inline void PutU64(uint8_t* p, uint64_t v) { for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i)); }
inline uint16_t GetU16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
inline uint32_t GetU32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t GetU64(const uint8_t* p) { return uint64_t(GetU32(p)) | uint64_t(GetU32(p + 4)) << 32; }

inline void AppendU8(std::string* s, uint8_t v) { s->push_back(char(v)); }
inline void AppendU16(std::string* s, uint16_t v) { uint8_t b[2]; PutU16(b, v); s->append(reinterpret_cast<char*>(b), 2); }
inline void AppendU32(std::string* s, uint32_t v) { uint8_t b[4]; PutU32(b, v); s->append(reinterpret_cast<char*>(b), 4); }
inline void AppendU64(std::string* s, uint64_t v) { uint8_t b[8]; PutU64(b, v); s->append(reinterpret_cast<char*>(b), 8); }

}  // namespace storemove
