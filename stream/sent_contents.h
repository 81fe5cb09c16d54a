// Content already sent in a backup stream, by digest: where its first copy lives, so that a later
// message with the same digest can be proven equal and sent as a link. A cache of fixed size
// (4-way buckets, allocated once, 28 bytes an entry), so that backup's memory does not grow with
// the store: when a bucket is full its oldest content is forgotten. A later copy of forgotten
// content is sent as a body again and restore still single-instances it through the repository,
// so forgetting costs stream bytes, never correctness. Internal to stream/.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "util/digest.h"
#include "util/large_memory.h"

namespace storemove::stream {

class SentContents {
 public:
  struct Entry {
    Digest digest;
    uint32_t content_id = 0;  // 0 = empty slot (content ids start at 1)
    uint32_t folder = 0;      // index into the session's folder paths
    uint32_t uid = 0;
  };
  static constexpr size_t kWays = 4;
  // 2^18 entries = 7 MiB: every content of a 200,000-message store fits with few evictions.
  static constexpr size_t kDefaultCapacity = size_t{1} << 18;

  // `capacity`: a power of two, at least kWays.
  explicit SentContents(size_t capacity = kDefaultCapacity) : slots_(capacity), bucket_mask_(capacity / kWays - 1) {}

  const Entry* Find(const Digest& digest) const {
    const Entry* bucket = &slots_[Bucket(digest)];
    for (size_t i = 0; i < kWays; ++i)
      if (bucket[i].content_id != 0 && bucket[i].digest == digest) return &bucket[i];
    return nullptr;
  }

  // Keeps the first content for a digest; in a full bucket it replaces the oldest content.
  void Insert(const Digest& digest, uint32_t content_id, uint32_t folder, uint32_t uid) {
    Entry* bucket = &slots_[Bucket(digest)];
    Entry* victim = &bucket[0];
    for (size_t i = 0; i < kWays; ++i) {
      Entry& e = bucket[i];
      if (e.content_id == 0) {
        e = Entry{digest, content_id, folder, uid};
        ++size_;
        return;
      }
      if (e.digest == digest) return;
      if (e.content_id < victim->content_id) victim = &e;
    }
    *victim = Entry{digest, content_id, folder, uid};
    ++evicted_;
  }

  // Makes `digest` name this (newer) content: it was sent again because its first copy is too
  // old to link to.
  void Renew(const Digest& digest, uint32_t content_id, uint32_t folder, uint32_t uid) {
    Entry* bucket = &slots_[Bucket(digest)];
    for (size_t i = 0; i < kWays; ++i) {
      if (bucket[i].content_id != 0 && bucket[i].digest == digest) {
        bucket[i] = Entry{digest, content_id, folder, uid};
        return;
      }
    }
    Insert(digest, content_id, folder, uid);
  }

  size_t size() const { return size_; }        // entries held
  size_t evicted() const { return evicted_; }  // contents forgotten to make room
  size_t capacity() const { return slots_.size(); }

 private:
  size_t Bucket(const Digest& digest) const {
    uint64_t low, high;
    std::memcpy(&low, digest.bytes.data(), sizeof low);
    std::memcpy(&high, digest.bytes.data() + 8, sizeof high);
    return size_t((low ^ (high * 0x9e3779b97f4a7c15ull)) & bucket_mask_) * kWays;
  }

  LargeArray<Entry> slots_;  // zero bytes: empty entries
  size_t bucket_mask_;
  size_t size_ = 0;
  size_t evicted_ = 0;
};

}  // namespace storemove::stream
