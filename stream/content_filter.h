// The contents a restore session has written, as a Bloom filter of their digests: fixed size
// (1 MiB, allocated once), no false negatives. A restore into a store whose repository was empty
// at the start skips the repository look-up per message, which only this session could have
// filled; the filter says when to look after all - a sender may send the same content twice (a
// backup's table of sent contents is bounded and forgets). A false positive costs one look-up.
// Internal to stream/.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "util/digest.h"

namespace storemove::stream {

class ContentFilter {
 public:
  static constexpr unsigned kBitsLog2 = 23;  // 8 Mi bits: ~2 % false positives at 1 M contents
  static constexpr unsigned kProbes = 4;

  ContentFilter() : words_((size_t{1} << kBitsLog2) / 64, 0) {}

  void Add(const Digest& digest) {
    for (unsigned i = 0; i < kProbes; ++i) {
      const uint64_t bit = Probe(digest, i);
      words_[bit / 64] |= uint64_t{1} << (bit % 64);
    }
  }

  bool MayContain(const Digest& digest) const {
    for (unsigned i = 0; i < kProbes; ++i) {
      const uint64_t bit = Probe(digest, i);
      if (!(words_[bit / 64] & (uint64_t{1} << (bit % 64)))) return false;
    }
    return true;
  }

 private:
  // The digest is a uniform hash already: probe i takes its own 32 bits of it.
  static uint64_t Probe(const Digest& digest, unsigned i) {
    uint32_t part;
    std::memcpy(&part, digest.bytes.data() + 4 * i, sizeof part);
    return part & ((uint64_t{1} << kBitsLog2) - 1);
  }

  std::vector<uint64_t> words_;
};

}  // namespace storemove::stream
