// DistinctCounter (relinker/distinct_count.h): the same count and weight whether the values stay
// in memory or go to sorted runs in $TMPDIR, and memory kept when the spool cannot be made.
#include "relinker/distinct_count.h"

#include <cstdlib>
#include <map>
#include <random>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace storemove::relinker {
namespace {

struct Expected {
  std::map<std::array<uint64_t, 3>, uint64_t> weights;
  uint64_t weight() const {
    uint64_t n = 0;
    for (const auto& [key, w] : weights) n += w;
    return n;
  }
};

// `count` values drawn from `range` keys, each key always with the same weight.
void AddRandom(DistinctCounter& counter, Expected& expected, size_t count, uint64_t range, uint64_t seed) {
  std::mt19937_64 random(seed);
  for (size_t i = 0; i < count; ++i) {
    const uint64_t k = random() % range;
    DistinctCounter::Value v{{k * 0x9e3779b97f4a7c15ULL, ~k, k % 7}, k % 1000 + 1};
    counter.Add(v);
    expected.weights[v.key] = v.weight;
  }
}

TEST(DistinctCounter, RunsOnDiskCountWhatMemoryCounts) {
  for (const uint64_t range : {uint64_t{10}, uint64_t{5000}, uint64_t{1} << 40}) {
    DistinctCounter spooled(64), in_memory(1 << 20);
    Expected expected, same;
    AddRandom(spooled, expected, 20000, range, range);
    AddRandom(in_memory, same, 20000, range, range);
    if (range > 1000) {
      EXPECT_GT(spooled.runs(), 10u) << "range " << range;
    }
    EXPECT_EQ(in_memory.runs(), 0u);
    const DistinctCounter::Result a = spooled.Count(), b = in_memory.Count();
    EXPECT_EQ(a.distinct, expected.weights.size()) << "range " << range;
    EXPECT_EQ(a.weight, expected.weight()) << "range " << range;
    EXPECT_EQ(b.distinct, a.distinct);
    EXPECT_EQ(b.weight, a.weight);
  }
}

TEST(DistinctCounter, MostlyRepeatsStayInMemory) {
  DistinctCounter counter(64);
  Expected expected;
  AddRandom(counter, expected, 100000, 20, 1);  // 20 keys: every full buffer shrinks to ≤ 20
  EXPECT_EQ(counter.runs(), 0u);
  EXPECT_EQ(counter.Count().distinct, 20u);
}

TEST(DistinctCounter, NothingAddedCountsNothing) {
  DistinctCounter counter(4);
  const DistinctCounter::Result r = counter.Count();
  EXPECT_EQ(r.distinct, 0u);
  EXPECT_EQ(r.weight, 0u);
}

TEST(DistinctCounter, AnUnusableTmpdirKeepsTheValuesInMemory) {
  storemove::testing::TempDir dir;
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old ? old : "";
  ::setenv("TMPDIR", (dir / "missing/deeper").c_str(), 1);
  DistinctCounter counter(64);
  Expected expected;
  AddRandom(counter, expected, 5000, uint64_t{1} << 40, 9);
  if (old) ::setenv("TMPDIR", saved.c_str(), 1);
  else ::unsetenv("TMPDIR");
  EXPECT_EQ(counter.runs(), 0u);
  const DistinctCounter::Result r = counter.Count();
  EXPECT_EQ(r.distinct, expected.weights.size());
  EXPECT_EQ(r.weight, expected.weight());
}

}  // namespace
}  // namespace storemove::relinker
