// Memory for large, long-lived buffers and tables (zstd's window and match tables, backup's table
// of sent contents): mapped on its own and, where the kernel allows it, backed by 2 MiB
// transparent huge pages (madvise mode, the usual default). Such memory is filled page by page,
// and a first-touch page fault is costly on a virtualised host: with 4 KiB pages a 20,000-message
// backup took ~13,000 faults and a restore ~11,000 (docs/performance.md, "The pipe on tmpfs").
#pragma once

#include <cstddef>
#include <cstring>
#include <new>
#include <type_traits>

namespace storemove {

// Zero-filled, aligned for any type; throws std::bad_alloc. Free with FreeLarge(p, size).
void* AllocateLarge(size_t size);
void FreeLarge(void* p, size_t size) noexcept;

// For C libraries whose free knows only the pointer (zstd's ZSTD_customMem): the size is kept in
// front of the block; requests under 1 MiB go to malloc. nullptr on failure.
void* AllocateSized(size_t size) noexcept;
void FreeSized(void* p) noexcept;

// A fixed-size array of T in large memory, every element starting as all-zero bytes.
template <typename T>
class LargeArray {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>);

 public:
  explicit LargeArray(size_t n) : data_(static_cast<T*>(AllocateLarge(n * sizeof(T)))), size_(n) {}
  ~LargeArray() { FreeLarge(data_, size_ * sizeof(T)); }
  LargeArray(const LargeArray&) = delete;
  LargeArray& operator=(const LargeArray&) = delete;

  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  size_t size() const { return size_; }

 private:
  T* data_;
  size_t size_;
};

}  // namespace storemove
