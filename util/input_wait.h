// Waiting for input on a pipe whose writer may stall (`ssh old storemove backup | restore`, an
// mbox piped into import over a hung link): a reader that holds a user meanwhile says so once,
// says when input resumes, and may give up. A regular file is always ready: it costs one poll(2).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace storemove {

struct StallPolicy {
  int notice_seconds = 0;   // 0: no notice
  int timeout_seconds = 0;  // 0: wait as long as it takes
  // Told "no input from SHOWN for N s (after byte B)HOLDING" once per stall, and "input from
  // SHOWN resumed after N s" when it ends.
  std::function<void(const std::string&)> notice;
  std::string holding;  // appended to the notice and the error: what the reader holds meanwhile
  bool active() const { return notice_seconds > 0 || timeout_seconds > 0; }
};

// Returns once `fd` has data, its end or an error to read. Throws kTempFail "SHOWN: no input for
// N s (after byte B): the writer stalled...; gave up (--timeout)..." after policy.timeout_seconds.
// `bytes` is how much was read from it so far, for the messages.
void WaitForInput(int fd, const std::string& shown, uint64_t bytes, const StallPolicy& policy);

}  // namespace storemove
