#include "util/input_wait.h"

#include <poll.h>

#include <cerrno>
#include <chrono>

#include "util/error.h"

namespace storemove {

void WaitForInput(int fd, const std::string& shown, uint64_t bytes, const StallPolicy& policy) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  bool told = false;
  // Before its first byte a reader holds nothing: "the user being restored stays locked" was said
  // of a pipe that had sent nothing yet (helper-70).
  const std::string& holding = bytes > 0 ? policy.holding : std::string();
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int rc = ::poll(&p, 1, 1000);  // a look at the clock every second while nothing comes
    if (rc < 0 && errno != EINTR) ThrowErrno("poll " + shown);
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start).count();
    if (rc > 0) {  // data, the end, or an error the read reports
      if (told && policy.notice) policy.notice("input from " + shown + " resumed after " + std::to_string(seconds) + " s");
      return;
    }
    if (policy.timeout_seconds > 0 && seconds >= policy.timeout_seconds)
      Throw(Errc::kTempFail, shown + ": no input for " + std::to_string(seconds) + " s (after byte " +
                                 std::to_string(bytes) + "): the writer stalled" + holding +
                                 "; gave up (--timeout); run the same command again to complete it");
    if (!told && policy.notice_seconds > 0 && seconds >= policy.notice_seconds) {
      told = true;
      if (policy.notice)
        policy.notice("no input from " + shown + " for " + std::to_string(seconds) + " s (after byte " +
                      std::to_string(bytes) + ")" + holding);
    }
  }
}

}  // namespace storemove
