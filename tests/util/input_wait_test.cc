// WaitForInput (util/input_wait.h): what a stalled pipe's reader says, and when.
#include "util/input_wait.h"

#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "util/error.h"

namespace storemove {
namespace {

// The message of the --timeout failure on a pipe nobody writes to, `bytes` read before.
std::string StalledAfter(uint64_t bytes, std::vector<std::string>* notices) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  StallPolicy policy;
  policy.timeout_seconds = 2;
  policy.notice_seconds = 1;
  policy.notice = [notices](const std::string& line) { notices->push_back(line); };
  policy.holding = "; the user being restored stays locked for writing meanwhile";
  std::string what;
  try {
    WaitForInput(fds[0], "standard input", bytes, policy);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kTempFail);
    what = e.what();
  }
  ::close(fds[0]);
  ::close(fds[1]);
  return what;
}

TEST(InputWait, NothingIsSaidToBeHeldBeforeTheFirstByte) {
  std::vector<std::string> notices;
  const std::string before = StalledAfter(0, &notices);
  EXPECT_NE(before.find("no input for 2 s (after byte 0): the writer stalled; gave up"), std::string::npos) << before;
  EXPECT_EQ(before.find("stays locked"), std::string::npos) << before;
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].find("stays locked"), std::string::npos) << notices[0];
  notices.clear();
  const std::string after = StalledAfter(4096, &notices);
  EXPECT_NE(after.find("(after byte 4096): the writer stalled; the user being restored stays locked"),
            std::string::npos)
      << after;
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("stays locked"), std::string::npos) << notices[0];
}

// A trickle (under 1 KiB a second of waiting) is said once a window of waiting has passed,
// gives up at the timeout, and its end is said. Not a trickle: waiting that brought enough; a
// reader that did not wait (its bytes were there); the wait for the first byte; a stall (a wait
// of a window or more, WaitForInput's), also when what ends it comes in pieces (helper-168).
TEST(TrickleWatch, SaysATrickleGivesUpAtTheTimeoutAndSaysWhenItEnds) {
  using std::chrono::seconds;
  std::vector<std::string> notices;
  StallPolicy policy;
  policy.notice_seconds = 2;
  policy.notice = [&](const std::string& line) { notices.push_back(line); };
  policy.holding = "; the user being restored stays locked for writing meanwhile";

  TrickleWatch fast;
  uint64_t bytes = 0;
  for (int i = 0; i < 10; ++i) fast.Read(bytes += 4096, seconds(1), "standard input", policy);
  TrickleWatch busy_reader;
  for (int i = 0; i < 1000; ++i) busy_reader.Read(++bytes, seconds(0), "standard input", policy);
  TrickleWatch late_start;
  late_start.Read(bytes = 10, seconds(70), "standard input", policy);
  late_start.Read(bytes += 4096, seconds(1), "standard input", policy);
  late_start.Read(bytes += 4096, seconds(1), "standard input", policy);
  TrickleWatch bursts;  // 128 KiB after each stall, in 8 KiB pieces
  bursts.Read(bytes = 131072, seconds(0), "standard input", policy);
  for (int burst = 0; burst < 5; ++burst) {
    bursts.Read(bytes += 8192, seconds(200), "standard input", policy);
    for (int piece = 1; piece < 16; ++piece) bursts.Read(bytes += 8192, seconds(0), "standard input", policy);
  }
  EXPECT_TRUE(notices.empty());

  TrickleWatch watch;  // without a timeout: said once, never given up
  bytes = 0;
  for (int i = 0; i < 6; ++i) watch.Read(bytes += 10, seconds(1), "standard input", policy);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0], "input from standard input trickles: 20 bytes in 2 s (after byte 30); the user being "
                        "restored stays locked for writing meanwhile");
  watch.Read(bytes += 4096, seconds(1), "standard input", policy);
  ASSERT_EQ(notices.size(), 2u);
  EXPECT_EQ(notices[1], "input from standard input flows again after 4 s of trickle");

  policy.timeout_seconds = 4;
  TrickleWatch timed;
  bytes = 0;
  std::string what;
  try {
    for (int i = 0; i < 100; ++i) timed.Read(bytes += 1, seconds(1), "standard input", policy);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kTempFail);
    what = e.what();
  }
  EXPECT_EQ(bytes, 5u);  // the first byte's read starts the count: 4 s of waiting after it
  EXPECT_EQ(what, "standard input: 4 bytes in 4 s (after byte 5), under 1 KiB a second: the writer trickles; "
                  "the user being restored stays locked for writing meanwhile; gave up (--timeout); run the same "
                  "command again to complete it");
  // A trickle broken by stalls (each under the timeout) is still one trickle.
  TrickleWatch broken;
  bytes = 0;
  what.clear();
  try {
    for (int i = 0; i < 100; ++i) broken.Read(bytes += 1, seconds(i % 3 == 2 ? 3 : 1), "standard input", policy);
  } catch (const Error& e) {
    what = e.what();
  }
  EXPECT_NE(what.find("the writer trickles"), std::string::npos) << what;
}

}  // namespace
}  // namespace storemove
