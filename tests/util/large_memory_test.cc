// Large memory (util/large_memory.h): zero-filled, huge-page aligned where it is mapped, and the
// sized form frees what it allocated on either path.
#include "util/large_memory.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace storemove {
namespace {

// Bytes of `p`'s mapping backed by huge pages, from /proc/self/smaps; -1 when not found.
long AnonHugeKiB(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto addr = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo, hi;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find('-')) {
      inside = lo <= addr && addr < hi;
      continue;
    }
    long kib;
    if (inside && std::sscanf(line.c_str(), "AnonHugePages: %ld kB", &kib) == 1) return kib;
  }
  return -1;
}

bool HugePagesOnRequest() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  std::getline(f, mode);
  return mode.find("[madvise]") != std::string::npos || mode.find("[always]") != std::string::npos;
}

TEST(LargeMemory, ZeroFilledAlignedAndBackedByHugePagesWhenTheKernelAllows) {
  const size_t size = size_t{8} << 20;
  auto* p = static_cast<unsigned char*>(AllocateLarge(size));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (size_t{2} << 20), 0u);
  for (size_t i = 0; i < size; i += 4096) ASSERT_EQ(p[i], 0) << i;
  std::memset(p, 0xab, size);
  EXPECT_EQ(p[size - 1], 0xab);
  if (HugePagesOnRequest()) {
    EXPECT_GT(AnonHugeKiB(p), 0) << "no huge page behind an 8 MiB block";
  }
  FreeLarge(p, size);
}

TEST(LargeMemory, SizedBlocksOfEveryKindAreUsableAndFreed) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{4000}, (size_t{1} << 20) - 64, size_t{1} << 20, size_t{33} << 20}) {
    auto* p = static_cast<unsigned char*>(AllocateSized(size));
    ASSERT_NE(p, nullptr) << size;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u) << size;
    if (size) {
      std::memset(p, 0x5a, size);
      EXPECT_EQ(p[size - 1], 0x5a);
    }
    FreeSized(p);
  }
  FreeSized(nullptr);
  EXPECT_EQ(AllocateSized(SIZE_MAX - 8), nullptr);
}

TEST(LargeMemory, ArrayStartsZeroed) {
  struct Entry {
    uint64_t a = 0;
    uint32_t b = 0;
  };
  LargeArray<Entry> array(size_t{1} << 16);
  ASSERT_EQ(array.size(), size_t{1} << 16);
  for (size_t i = 0; i < array.size(); ++i) ASSERT_TRUE(array[i].a == 0 && array[i].b == 0) << i;
  array[array.size() - 1].b = 7;
  EXPECT_EQ(array[array.size() - 1].b, 7u);
}

}  // namespace
}  // namespace storemove
