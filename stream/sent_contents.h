// Content already sent in a backup stream, by digest: where its first copy lives, so that a later
// message with the same digest can be proven equal byte for byte and sent as a link. One flat
// open-addressing array of 28-byte entries (no per-entry allocation): this table is backup's
// only memory that grows with the store. Internal to stream/.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "util/digest.h"

namespace storemove::stream {

class SentContents {
 public:
  struct Entry {
    Digest digest;
    uint32_t content_id = 0;  // 0 = empty slot (content ids start at 1)
    uint32_t folder = 0;      // index into the session's folder paths
    uint32_t uid = 0;
  };

  const Entry* Find(const Digest& digest) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = Home(digest);; i = (i + 1) & (slots_.size() - 1)) {
      const Entry& e = slots_[i];
      if (e.content_id == 0) return nullptr;
      if (e.digest == digest) return &e;
    }
  }

  // Keeps the first content for a digest.
  void Insert(const Digest& digest, uint32_t content_id, uint32_t folder, uint32_t uid) {
    if ((count_ + 1) * 10 > slots_.size() * 9) Grow();  // load factor <= 0.9: probes stay short for random keys
    if (Place(Entry{digest, content_id, folder, uid})) ++count_;
  }

  size_t size() const { return count_; }

 private:
  size_t Home(const Digest& digest) const {
    uint64_t h;
    std::memcpy(&h, digest.bytes.data(), sizeof h);
    return size_t(h) & (slots_.size() - 1);
  }

  bool Place(const Entry& entry) {
    for (size_t i = Home(entry.digest);; i = (i + 1) & (slots_.size() - 1)) {
      Entry& e = slots_[i];
      if (e.content_id == 0) {
        e = entry;
        return true;
      }
      if (e.digest == entry.digest) return false;
    }
  }

  void Grow() {
    std::vector<Entry> old = std::move(slots_);
    slots_.assign(old.empty() ? 1024 : old.size() * 2, Entry{});
    for (const Entry& e : old)
      if (e.content_id) Place(e);
  }

  std::vector<Entry> slots_;  // size is a power of two
  size_t count_ = 0;
};

}  // namespace storemove::stream
