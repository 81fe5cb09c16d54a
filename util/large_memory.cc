#include "util/large_memory.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>

namespace storemove {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kMappedFrom = size_t{1} << 20;  // smaller requests: malloc
constexpr size_t kHeader = 64;                   // AllocateSized's size field, keeps 64-byte alignment

size_t Rounded(size_t size) { return (size + 4095) & ~size_t{4095}; }

}  // namespace

void* AllocateLarge(size_t size) {
  if (size == 0) size = 1;
  const size_t length = Rounded(size);
  if (length < size) throw std::bad_alloc();
  // Over-map by a huge page and trim, so that the block starts on a huge-page boundary (kernels
  // before 6.7 do not align large anonymous mappings themselves).
  const size_t mapped = length + (length >= kHugePage ? kHugePage : 0);
  void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  auto start = reinterpret_cast<uintptr_t>(p);
  if (mapped != length) {
    const uintptr_t aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
    if (aligned > start) ::munmap(p, aligned - start);
    const uintptr_t end = start + mapped;
    if (end > aligned + length) ::munmap(reinterpret_cast<void*>(aligned + length), end - (aligned + length));
    start = aligned;
  }
  // Advice only: with THP off (or not built) the pages stay 4 KiB.
  if (length >= kHugePage) (void)::madvise(reinterpret_cast<void*>(start), length, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(start);
}

void FreeLarge(void* p, size_t size) noexcept {
  if (p) ::munmap(p, Rounded(size == 0 ? 1 : size));
}

void* AllocateSized(size_t size) noexcept {
  const size_t total = size + kHeader;
  if (total < size) return nullptr;
  char* block;
  if (total < kMappedFrom) {
    block = static_cast<char*>(std::aligned_alloc(kHeader, (total + kHeader - 1) & ~(kHeader - 1)));
    if (!block) return nullptr;
  } else {
    try {
      block = static_cast<char*>(AllocateLarge(total));
    } catch (const std::bad_alloc&) {
      return nullptr;
    }
  }
  std::memcpy(block, &total, sizeof total);
  return block + kHeader;
}

void FreeSized(void* p) noexcept {
  if (!p) return;
  char* block = static_cast<char*>(p) - kHeader;
  size_t total;
  std::memcpy(&total, block, sizeof total);
  if (total < kMappedFrom)
    std::free(block);
  else
    FreeLarge(block, total);
}

}  // namespace storemove
