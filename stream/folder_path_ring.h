// The paths of the folders a backup wrote last, by folder index, in fixed memory. The table of
// sent contents (sent_contents.h) names a content's first copy by folder index and uid, and a
// link is proven by opening that copy, so its folder's path must still be known. A path is kept
// until `count` newer folders, or `bytes` of newer paths, have pushed it out: the bytes live in
// one arena allocated at start, not in a string each (~2.2 MB for 16,384 strings on the heap,
// 1.25 MiB here). A content whose path is gone is sent again as a body, as one the table forgot.
// Internal to stream/.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>

namespace storemove::stream {

class FolderPathRing {
 public:
  // `count` >= 1 paths, in an arena of `bytes` >= 1.
  // Neither is written to before it is used: memory is taken as paths come (a small backup's
  // is small).
  FolderPathRing(uint32_t count, size_t bytes)
      : arena_(new char[bytes]), arena_size_(bytes), slots_(new Slot[count]), count_(count) {}

  // Keeps `path` as the next folder's; returns that folder's index (0, 1, ...).
  uint32_t Add(std::string_view path) {
    Slot& slot = slots_[added_ % count_];
    if (path.size() > arena_size_) {  // never kept
      slot = Slot{written_, path.size()};
      return added_++;
    }
    size_t at = written_ % arena_size_;
    if (at + path.size() > arena_size_) {  // no room before the end: starts again at 0
      written_ += arena_size_ - at;
      at = 0;
    }
    if (!path.empty()) std::memcpy(arena_.get() + at, path.data(), path.size());
    slot = Slot{written_, path.size()};
    written_ += path.size();
    return added_++;
  }

  // The path of folder `index`, or nullopt when it was pushed out (or never added).
  std::optional<std::string_view> Find(uint32_t index) const {
    if (index >= added_ || added_ - index > count_) return std::nullopt;
    const Slot& slot = slots_[index % count_];
    // Intact while less than one arena's bytes were written from its start on.
    if (slot.length > arena_size_ || written_ - slot.start > arena_size_) return std::nullopt;
    return std::string_view(arena_.get() + slot.start % arena_size_, slot.length);
  }

  uint32_t added() const { return added_; }

 private:
  struct Slot {
    uint64_t start;  // in bytes ever written, so that an overwritten path is told
    uint64_t length;
  };
  std::unique_ptr<char[]> arena_;
  size_t arena_size_;
  std::unique_ptr<Slot[]> slots_;  // read only below added_
  uint32_t count_;
  uint64_t written_ = 0;
  uint32_t added_ = 0;
};

}  // namespace storemove::stream
