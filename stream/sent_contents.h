// Content already sent in a backup stream, by digest: where its first copy lives, so that a later
// message with the same digest can be proven equal and sent as a link. A cache of fixed size
// (4-way buckets, allocated once, 16 bytes an entry), so that backup's memory does not grow with
// the store: when a bucket is full its oldest content is forgotten. A later copy of forgotten
// content is sent as a body again and restore still single-instances it through the repository,
// so forgetting costs stream bytes, never correctness.
//
// An entry keeps 32 bits of its digest (a tag), not all 128: the 16-byte entry is 3 MiB less
// than a whole digest's 28, which keeps a backup under 64 MiB. Find therefore names content
// whose digest is probably, not surely, the one asked for (bucket and tag: 48 bits; a chance of
// about 2^-30 for a lookup of new content in a full bucket). The caller proves the two the same
// file or the same bytes before it links, as it must anyway, and the encoder checks each link's
// digest; a false match costs one comparison and the message is sent as a body. Internal to
// stream/.
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
    uint32_t tag = 0;         // 32 bits of the digest (Tag)
    uint32_t content_id = 0;  // 0 = empty slot (content ids start at 1)
    uint32_t folder = 0;      // index into the session's folder paths
    uint32_t uid = 0;
  };
  static constexpr size_t kWays = 4;
  // 2^18 entries = 4 MiB: every content of a 200,000-message store fits with few evictions.
  static constexpr size_t kDefaultCapacity = size_t{1} << 18;

  // `capacity`: a power of two, at least kWays.
  explicit SentContents(size_t capacity = kDefaultCapacity) : slots_(capacity), bucket_mask_(capacity / kWays - 1) {}

  // Content sent with this digest, probably (see above): the caller proves it equal.
  const Entry* Find(const Digest& digest) const {
    const Entry* bucket = &slots_[Bucket(digest)];
    const uint32_t tag = Tag(digest);
    for (size_t i = 0; i < kWays; ++i)
      if (bucket[i].content_id != 0 && bucket[i].tag == tag) return &bucket[i];
    return nullptr;
  }

  // Keeps the first content for a digest; in a full bucket it replaces the oldest content.
  void Insert(const Digest& digest, uint32_t content_id, uint32_t folder, uint32_t uid) {
    Entry* bucket = &slots_[Bucket(digest)];
    const uint32_t tag = Tag(digest);
    Entry* victim = &bucket[0];
    for (size_t i = 0; i < kWays; ++i) {
      Entry& e = bucket[i];
      if (e.content_id == 0) {
        e = Entry{tag, content_id, folder, uid};
        ++size_;
        return;
      }
      if (e.tag == tag) return;
      if (e.content_id < victim->content_id) victim = &e;
    }
    *victim = Entry{tag, content_id, folder, uid};
    ++evicted_;
  }

  // Makes `digest` name this (newer) content: it was sent again because its first copy is too
  // old to link to.
  void Renew(const Digest& digest, uint32_t content_id, uint32_t folder, uint32_t uid) {
    Entry* bucket = &slots_[Bucket(digest)];
    const uint32_t tag = Tag(digest);
    for (size_t i = 0; i < kWays; ++i) {
      if (bucket[i].content_id != 0 && bucket[i].tag == tag) {
        bucket[i] = Entry{tag, content_id, folder, uid};
        return;
      }
    }
    Insert(digest, content_id, folder, uid);
  }

  size_t size() const { return size_; }        // entries held
  size_t evicted() const { return evicted_; }  // contents forgotten to make room
  size_t capacity() const { return slots_.size(); }

 private:
  // The bucket takes the low bits of a mix of the whole digest, the tag its high 32 bits: for a
  // digest of uniform bits the two are independent.
  static uint64_t Mix(const Digest& digest) {
    uint64_t low, high;
    std::memcpy(&low, digest.bytes.data(), sizeof low);
    std::memcpy(&high, digest.bytes.data() + 8, sizeof high);
    return low ^ (high * 0x9e3779b97f4a7c15ull);
  }
  size_t Bucket(const Digest& digest) const { return size_t(Mix(digest) & bucket_mask_) * kWays; }
  static uint32_t Tag(const Digest& digest) { return static_cast<uint32_t>(Mix(digest) >> 32); }

  static_assert(sizeof(Entry) == 16);
  LargeArray<Entry> slots_;  // zero bytes: empty entries
  size_t bucket_mask_;
  size_t size_ = 0;
  size_t evicted_ = 0;
};

}  // namespace storemove::stream
