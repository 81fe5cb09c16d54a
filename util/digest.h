// XXH3-128 content digests, the identity of a message's bytes everywhere in storemove.
// A digest match alone never proves two messages equal (xxHash is not collision
// resistant); callers compare bytes before linking.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace storemove {

struct Digest {
  std::array<uint8_t, 16> bytes{};  // canonical (big-endian) XXH128 representation

  std::string Hex() const;
  static bool FromHex(std::string_view hex, Digest* out);
  bool IsZero() const;
  friend bool operator==(const Digest&, const Digest&) = default;
  friend auto operator<=>(const Digest&, const Digest&) = default;
};

struct DigestHash {
  size_t operator()(const Digest& d) const;
};

// Incremental hasher; feed chunks, then Final().
class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void Reset();
  void Update(const void* data, size_t size);
  Digest Final() const;

 private:
  void* state_;  // XXH3_state_t*
};

Digest DigestOf(const void* data, size_t size);
inline Digest DigestOf(std::string_view s) { return DigestOf(s.data(), s.size()); }

// XXH32 used for small structure checksums (store.idx headers and records, stream records).
uint32_t Checksum32(const void* data, size_t size, uint32_t seed = 0);

}  // namespace storemove
