// WaitForInput (util/input_wait.h): what a stalled pipe's reader says, and when.
#include "util/input_wait.h"

#include <unistd.h>

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

}  // namespace
}  // namespace storemove
