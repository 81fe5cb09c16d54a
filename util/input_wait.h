// Waiting for input on a pipe whose writer may stall (`ssh old storemove backup | restore`, an
// mbox piped into import over a hung link): a reader that holds a user meanwhile says so once,
// says when input resumes, and may give up. A regular file is always ready: it costs one poll(2).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace storemove {

struct StallPolicy {
  int notice_seconds = 0;   // 0: no notice
  int timeout_seconds = 0;  // 0: wait as long as it takes
  // Told "no input from SHOWN for N s (after byte B)HOLDING" once per stall, and "input from
  // SHOWN resumed after N s" when it ends.
  std::function<void(const std::string&)> notice;
  std::string holding;  // appended to the notice and the error: what the reader holds meanwhile
  // The give-up's words after "gave up": the option that set the timeout, and what to do.
  std::string gave_up = "(--timeout); run the same command again to complete it";
  bool active() const { return notice_seconds > 0 || timeout_seconds > 0; }
};

// Returns once `fd` has data, its end or an error to read. Throws kTempFail "SHOWN: no input for
// N s (after byte B): the writer stalled...; gave up (--timeout)..." after policy.timeout_seconds.
// `bytes` is how much was read from it so far, for the messages.
void WaitForInput(int fd, const std::string& shown, uint64_t bytes, const StallPolicy& policy);

// WaitForInput returns at each byte, so a writer that sends a few now and then never stalls to
// it: a link that all but died, or a peer that keeps the reader's locks on purpose (helper-159).
// Told after each read how long it waited for its bytes (the poll and the read: a reader busy
// elsewhere, waiting for a lock say, is not a slow writer) and the bytes read so far, this says
// so once such a stretch has lasted a window of waiting (policy.notice_seconds), says when it
// ends, and throws kTempFail as a stall does once it has lasted policy.timeout_seconds. A
// trickle is under kBytesPerSecond of waiting on average. Not counted: the wait for the first
// byte, and a wait of a window or more, a stall, which WaitForInput says and gives up on (a
// writer that sends big chunks far apart, a backup's 128 KiB at a time, trickles nothing;
// helper-168).
class TrickleWatch {
 public:
  static constexpr uint64_t kBytesPerSecond = 1024;
  using Duration = std::chrono::steady_clock::duration;
  void Read(uint64_t bytes, Duration waited, const std::string& shown, const StallPolicy& policy);

 private:
  bool started_ = false;       // the first byte has come
  Duration window_waited_{};
  uint64_t window_bytes_ = 0;  // the bytes read before the window
  std::optional<Duration> slow_waited_;  // waited in the slow windows in a row so far
  uint64_t slow_bytes_ = 0;              // the bytes read before the first of them
};

}  // namespace storemove
