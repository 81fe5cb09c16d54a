// Replaces global operator new for this test binary to record the largest single request, so
// tests can prove a hostile length is rejected before anything is allocated for it.
#include <atomic>
#include <cstdlib>
#include <new>

#include "tests/format/stream_testing.h"

namespace {
std::atomic<size_t> g_largest{0};
}

namespace storemove::format::testing {
void ResetLargestAllocation() { g_largest.store(0); }
size_t LargestAllocation() { return g_largest.load(); }
}  // namespace storemove::format::testing

void* operator new(size_t size) {
  size_t seen = g_largest.load(std::memory_order_relaxed);
  while (size > seen && !g_largest.compare_exchange_weak(seen, size, std::memory_order_relaxed)) {
  }
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
