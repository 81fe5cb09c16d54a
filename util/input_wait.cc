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
                                 std::to_string(bytes) + "): the writer stalled" + holding + "; gave up " +
                                 policy.gave_up);
    if (!told && policy.notice_seconds > 0 && seconds >= policy.notice_seconds) {
      told = true;
      if (policy.notice)
        policy.notice("no input from " + shown + " for " + std::to_string(seconds) + " s (after byte " +
                      std::to_string(bytes) + ")" + holding);
    }
  }
}

void TrickleWatch::Read(uint64_t bytes, Duration waited, const std::string& shown, const StallPolicy& policy) {
  const int window = policy.notice_seconds > 0 ? policy.notice_seconds : policy.timeout_seconds;
  if (window <= 0) return;
  const auto seconds = [](Duration d) { return std::chrono::duration_cast<std::chrono::seconds>(d).count(); };
  if (!started_) {  // the wait for a stream to begin is WaitForInput's, and nothing is held yet
    started_ = true;
    window_bytes_ = bytes;
    return;
  }
  if (seconds(waited) < window) window_waited_ += waited;  // else a stall: its bytes count, its wait not
  const int64_t elapsed = seconds(window_waited_);
  if (elapsed < window) return;
  const std::string& holding = policy.holding;
  const uint64_t got = bytes - window_bytes_;
  if (got < kBytesPerSecond * static_cast<uint64_t>(elapsed)) {
    if (!slow_waited_) {
      slow_waited_ = Duration{};
      slow_bytes_ = window_bytes_;
      if (policy.notice)
        policy.notice("input from " + shown + " trickles: " + std::to_string(got) + " bytes in " +
                      std::to_string(elapsed) + " s (after byte " + std::to_string(bytes) + ")" + holding);
    }
    *slow_waited_ += window_waited_;
    const int64_t slow_for = seconds(*slow_waited_);
    if (policy.timeout_seconds > 0 && slow_for >= policy.timeout_seconds)
      Throw(Errc::kTempFail, shown + ": " + std::to_string(bytes - slow_bytes_) + " bytes in " +
                                 std::to_string(slow_for) + " s (after byte " + std::to_string(bytes) +
                                 "), under 1 KiB a second: the writer trickles" + holding + "; gave up " +
                                 policy.gave_up);
  } else if (slow_waited_) {
    if (policy.notice)
      policy.notice("input from " + shown + " flows again after " + std::to_string(seconds(*slow_waited_)) +
                    " s of trickle");
    slow_waited_.reset();
  }
  window_waited_ = Duration{};
  window_bytes_ = bytes;
}

}  // namespace storemove
