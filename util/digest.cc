#include "util/digest.h"

#include <cstring>
#include <new>

// libxxhash picks the widest vector unit at run time (AVX-512/AVX2 over the SSE2 baseline that
// an inline, -march-less build would use): ~2x on the bodies every side hashes.
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#else
#include <xxhash.h>
#endif

namespace storemove {

std::string Digest::Hex() const {
  static const char* kHex = "0123456789abcdef";
  std::string out(32, '0');
  for (size_t i = 0; i < 16; ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 15];
  }
  return out;
}

static int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool Digest::FromHex(std::string_view hex, Digest* out) {
  if (hex.size() != 32) return false;
  for (size_t i = 0; i < 16; ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

bool Digest::IsZero() const {
  for (uint8_t b : bytes)
    if (b) return false;
  return true;
}

size_t DigestHash::operator()(const Digest& d) const {
  size_t h;
  std::memcpy(&h, d.bytes.data(), sizeof h);
  return h;
}

static Digest FromHash(XXH128_hash_t h) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  Digest d;
  std::memcpy(d.bytes.data(), c.digest, 16);
  return d;
}

Hasher::Hasher() : state_(XXH3_createState()) {
  if (!state_) throw std::bad_alloc();
  Reset();
}
Hasher::~Hasher() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }
void Hasher::Reset() { XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_)); }
void Hasher::Update(const void* data, size_t size) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data, size);
}
Digest Hasher::Final() const { return FromHash(XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_))); }

Digest DigestOf(const void* data, size_t size) { return FromHash(XXH3_128bits(data, size)); }

uint32_t Checksum32(const void* data, size_t size, uint32_t seed) { return XXH32(data, size, seed); }

}  // namespace storemove
