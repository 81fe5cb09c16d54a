// The live progress line and its ETA, computed from figures: no clock, no terminal, no timing.
#include <gtest/gtest.h>

#include "stream/progress.h"

namespace storemove::stream {
namespace {

TEST(Progress, EstimateIsWhatIsLeftAtTheRateSoFar) {
  EXPECT_DOUBLE_EQ(*EstimateSecondsLeft(25, 100, 10), 30);
  EXPECT_DOUBLE_EQ(*EstimateSecondsLeft(100, 100, 10), 0);
  EXPECT_DOUBLE_EQ(*EstimateSecondsLeft(1, 1'000'000, 0.5), 999'999 * 0.5);
  EXPECT_FALSE(EstimateSecondsLeft(0, 100, 10));    // nothing done: no rate yet
  EXPECT_FALSE(EstimateSecondsLeft(10, 0, 10));     // no total
  EXPECT_FALSE(EstimateSecondsLeft(10, 100, 0));    // no time elapsed
  EXPECT_FALSE(EstimateSecondsLeft(101, 100, 10));  // the total was an underestimate
}

TEST(Progress, Durations) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(7.4), "7s");
  EXPECT_EQ(FormatDuration(59.6), "1m00s");
  EXPECT_EQ(FormatDuration(185), "3m05s");
  EXPECT_EQ(FormatDuration(3600), "1h00m");
  EXPECT_EQ(FormatDuration(7380), "2h03m");
  EXPECT_EQ(FormatDuration(-3), "0s");
}

TEST(Progress, LineWithoutATotalShowsTheRateOnly) {
  ProgressFigures f;
  f.label = "restore";
  f.messages = 1200;
  f.bytes = 4 << 20;
  f.seconds = 2;
  EXPECT_EQ(FormatProgressLine(f), "restore: 1200 messages, 4.0 MiB, 2.0 MiB/s");
}

TEST(Progress, LineWithABytesTotalShowsPercentAndEta) {
  ProgressFigures f;
  f.label = "verify";
  f.messages = 10;
  f.bytes = 1 << 20;
  f.total_bytes = 4 << 20;
  f.seconds = 10;
  EXPECT_EQ(FormatProgressLine(f), "verify: 10 messages, 1.0 MiB, 102.4 KiB/s, 25%, ETA 30s");
  f.wire_bytes = 512;
  EXPECT_EQ(FormatProgressLine(f), "verify: 10 messages, 1.0 MiB, 102.4 KiB/s, 512 B on the wire, 25%, ETA 30s");
}

TEST(Progress, LineWithAMessagesTotal) {  // gen: the number of deliveries is known, not their bytes
  ProgressFigures f;
  f.label = "gen";
  f.messages = 300;
  f.total_messages = 1200;
  f.bytes = 3000;
  f.seconds = 60;
  EXPECT_EQ(FormatProgressLine(f), "gen: 300 messages, 2.9 KiB, 50 B/s, 25%, ETA 3m00s");
}

TEST(Progress, LineWithTheInputFileAsTotal) {  // restore -f FILE: the file's size and offset
  ProgressFigures f;
  f.label = "restore";
  f.messages = 5;
  f.bytes = 5000;
  f.input_bytes = 750;
  f.total_input_bytes = 1000;
  f.seconds = 30;
  EXPECT_EQ(FormatProgressLine(f), "restore: 5 messages, 4.9 KiB, 167 B/s, 75%, ETA 10s");
  // Bytes take precedence over the input when both are known.
  f.total_bytes = 10000;
  EXPECT_EQ(FormatProgressLine(f), "restore: 5 messages, 4.9 KiB, 167 B/s, 50%, ETA 30s");
}

TEST(Progress, NoEtaBeforeAnythingIsDoneOrPastTheTotal) {
  ProgressFigures f;
  f.label = "relink primary link 2/3";
  f.total_messages = 100;
  f.seconds = 1;
  EXPECT_EQ(FormatProgressLine(f), "relink primary link 2/3: 0 messages, 0 B, 0 B/s");
  f.messages = 150;
  EXPECT_EQ(FormatProgressLine(f), "relink primary link 2/3: 150 messages, 0 B, 0 B/s");
}

}  // namespace
}  // namespace storemove::stream
