// The adaptive level's decisions, from made-up windows: where the time went decides, alone.
#include "format/adaptive_level.h"

#include <gtest/gtest.h>

namespace storemove::format {
namespace {

// {wall, writer waited, output waited, compressing, idle share}
constexpr AdaptiveLevel::Window kWriterWaits{1.0, 0.5, 0.0, 0.9};  // the compressor holds the writer back
constexpr AdaptiveLevel::Window kOutputWaits{1.0, 0.6, 0.45, 0.2};  // a slow output holds both back
constexpr AdaptiveLevel::Window kOutputTakesAll{1.0, 0.9, 0.9, 0.05};  // a very slow one
constexpr AdaptiveLevel::Window kBalanced{1.0, 0.05, 0.1, 0.5};    // neither
// An output in memory at the lowest level: writing takes as long as compressing, and both
// keep the writer waiting. Compressing harder would cost more than the writing it saves.
constexpr AdaptiveLevel::Window kCheapOutput{1.0, 0.5, 0.5, 0.4};
// A link that takes the bytes about as fast as level 1 makes them: both wait in turn.
constexpr AdaptiveLevel::Window kLinkAtPace{1.0, 0.7, 0.35, 0.6};
// The compressor holds the writer back a little, while the output takes some time too: a slow
// link whose buffers took a burst looks like this for a window.
constexpr AdaptiveLevel::Window kWriterWaitsAndOutputTakes{1.0, 0.15, 0.1, 0.3};

TEST(AdaptiveLevel, StartsAtTheGivenLevelOrTheNextRungUp) {
  EXPECT_EQ(AdaptiveLevel(1).level(), 1);
  EXPECT_EQ(AdaptiveLevel(2).level(), 3);
  EXPECT_EQ(AdaptiveLevel(-100).level(), -50);
  EXPECT_EQ(AdaptiveLevel(19).level(), 9);
}

TEST(AdaptiveLevel, AWriterWaitingForTheCompressorLowersTheLevelAtOnceDownToTheFloor) {
  AdaptiveLevel adaptive(1);
  EXPECT_EQ(adaptive.Next(kWriterWaits), -3);
  EXPECT_EQ(adaptive.Next(kWriterWaits), -10);
  EXPECT_EQ(adaptive.Next(kWriterWaits), -50);
  EXPECT_EQ(adaptive.Next(kWriterWaits), -50) << "the lowest rung holds";
  EXPECT_EQ(adaptive.lowest(), -50);
  EXPECT_EQ(adaptive.highest(), 1);
  EXPECT_EQ(adaptive.changes(), 3u);
}

TEST(AdaptiveLevel, AWriterWaitingWhileTheOutputTakesTimeLowersTheLevelOnlyAfterTwoWindows) {
  AdaptiveLevel adaptive(1);
  EXPECT_EQ(adaptive.Next(kWriterWaitsAndOutputTakes), 1);
  EXPECT_EQ(adaptive.Next(kWriterWaitsAndOutputTakes), -3);
  EXPECT_EQ(adaptive.Next(kWriterWaitsAndOutputTakes), -3);
  EXPECT_EQ(adaptive.Next(kBalanced), -3);
  EXPECT_EQ(adaptive.Next(kWriterWaitsAndOutputTakes), -3) << "the count starts again after another window";
  EXPECT_EQ(adaptive.Next(kWriterWaitsAndOutputTakes), -10);
}

// Processors that are never idle while the output takes little: the compressor's cycles come
// out of the reads beside it, though the writer does not wait; at once when the machine has
// less than 10 % idle, after two windows under 25 %.
TEST(AdaptiveLevel, BusyProcessorsLowerTheLevel) {
  AdaptiveLevel adaptive(1);
  const AdaptiveLevel::Window saturated{1.0, 0.0, 0.02, 0.3, 0.05};
  const AdaptiveLevel::Window busy{1.0, 0.0, 0.08, 0.3, 0.2};
  const AdaptiveLevel::Window idle{1.0, 0.0, 0.02, 0.3, 0.5};
  EXPECT_EQ(adaptive.Next(saturated), -3);
  EXPECT_EQ(adaptive.Next(busy), -3);
  EXPECT_EQ(adaptive.Next(busy), -10);
  EXPECT_EQ(adaptive.Next(idle), -10);
  EXPECT_EQ(adaptive.Next(idle), -10) << "idle processors: the level stays";
  const AdaptiveLevel::Window busy_but_output_heavy{1.0, 0.0, 0.2, 0.3, 0.05};
  EXPECT_EQ(adaptive.Next(busy_but_output_heavy), -10);
  EXPECT_EQ(adaptive.Next(busy_but_output_heavy), -10) << "an output that takes its time: not the compressor";
}

TEST(AdaptiveLevel, ASlowOutputRaisesTheLevelOnlyAfterItHasLasted) {
  AdaptiveLevel adaptive(1);
  EXPECT_EQ(adaptive.Next(kOutputWaits), 1);
  EXPECT_EQ(adaptive.Next(kOutputWaits), 1);
  EXPECT_EQ(adaptive.Next(kOutputWaits), 3) << "third output-bound window in a row";
  EXPECT_EQ(adaptive.Next(kOutputWaits), 3) << "the count starts again after a change";
  EXPECT_EQ(adaptive.Next(kOutputWaits), 3);
  EXPECT_EQ(adaptive.Next(kBalanced), 3) << "a window that is not output-bound";
  EXPECT_EQ(adaptive.Next(kOutputWaits), 3);
  EXPECT_EQ(adaptive.Next(kOutputWaits), 3) << "...starts the count again";
  EXPECT_EQ(adaptive.Next(kOutputWaits), 6);
  for (int i = 0; i < 30; ++i) adaptive.Next(kOutputWaits);
  EXPECT_EQ(adaptive.level(), 9) << "the highest rung holds";
  EXPECT_EQ(adaptive.highest(), 9);
  EXPECT_EQ(adaptive.lowest(), 1);
}

TEST(AdaptiveLevel, ABalancedOrEmptyWindowKeepsTheLevel) {
  AdaptiveLevel adaptive(3);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(adaptive.Next(kBalanced), 3);
  EXPECT_EQ(adaptive.Next({0.0, 0.0, 0.0}), 3);
  EXPECT_EQ(adaptive.changes(), 0u);
}

TEST(AdaptiveLevel, AnOutputThatCostsLessThanTwiceTheCompressingNeverRaisesIt) {
  AdaptiveLevel adaptive(-50);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(adaptive.Next(kCheapOutput), -50);
  AdaptiveLevel at_one(1);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(at_one.Next(kCheapOutput), 1) << "nor lowers it: writing takes longer";
  for (int i = 0; i < 10; ++i) EXPECT_EQ(at_one.Next(kLinkAtPace), 1) << "nor a link at the compressor's pace";
}

TEST(AdaptiveLevel, AnOutputThatTakesNearlyAllTheTimeRaisesTheLevelAtOnce) {
  AdaptiveLevel adaptive(-50);
  EXPECT_EQ(adaptive.Next(kOutputTakesAll), -10);
  EXPECT_EQ(adaptive.Next(kOutputTakesAll), -3);
  EXPECT_EQ(adaptive.Next(kOutputWaits), -3) << "less than that: three windows in a row";
}

// A level too high for the compressor, reached while the output was slow, comes down again as
// soon as the writer waits on it.
TEST(AdaptiveLevel, GoesBackDownWhenTheRaisedLevelHoldsTheWriterBack) {
  AdaptiveLevel adaptive(1);
  for (int i = 0; i < 3; ++i) adaptive.Next(kOutputWaits);
  ASSERT_EQ(adaptive.level(), 3);
  EXPECT_EQ(adaptive.Next(kWriterWaits), 1);
  EXPECT_EQ(adaptive.changes(), 2u);
}

}  // namespace
}  // namespace storemove::format
