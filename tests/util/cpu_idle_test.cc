// The idle meter: /proc/stat's first line read right, and a real reading in range.
#include "util/cpu_idle.h"

#include <gtest/gtest.h>

#include <chrono>

namespace storemove {
namespace {

TEST(CpuIdleMeter, ParsesTheFirstLineOfProcStat) {
  CpuIdleMeter::Sample s;
  // user nice system idle iowait irq softirq steal guest guest_nice
  ASSERT_TRUE(CpuIdleMeter::Parse("cpu  100 5 50 800 40 3 2 0 7 1\ncpu0 1 2 3\n", &s));
  EXPECT_EQ(s.idle, 840u) << "idle and iowait";
  EXPECT_EQ(s.total, 1000u) << "guest time is inside user and nice already";
  ASSERT_TRUE(CpuIdleMeter::Parse("cpu  1 2 3 4 5", &s)) << "an old kernel's five fields";
  EXPECT_EQ(s.idle, 9u);
  EXPECT_EQ(s.total, 15u);
}

TEST(CpuIdleMeter, RefusesWhatIsNotIt) {
  CpuIdleMeter::Sample s;
  EXPECT_FALSE(CpuIdleMeter::Parse("", &s));
  EXPECT_FALSE(CpuIdleMeter::Parse("cpu0 1 2 3 4 5 6", &s)) << "one processor's line";
  EXPECT_FALSE(CpuIdleMeter::Parse("cpu  1 2 x 4 5", &s));
  EXPECT_FALSE(CpuIdleMeter::Parse("cpu  1 2 3", &s)) << "too few fields";
  EXPECT_FALSE(CpuIdleMeter::Parse("cpu  99999999999999999999999 1 2 3 4", &s)) << "out of range";
}

// On this machine: a share between 0 and 1 once the clock has ticked (10 ms), after a busy
// loop; -1 only when nothing was counted between two looks.
TEST(CpuIdleMeter, ReadsThisMachine) {
  CpuIdleMeter meter;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
  volatile uint64_t spin = 0;
  while (std::chrono::steady_clock::now() < until) spin = spin + 1;
  const double share = meter.IdleShareSinceLast();
  EXPECT_GE(share, 0.0);
  EXPECT_LE(share, 1.0);
}

}  // namespace
}  // namespace storemove
