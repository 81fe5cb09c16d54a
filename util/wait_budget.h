// One time budget shared by several waits (a folder lock, then a user's delivery gate, ...), so
// that a command told to wait N seconds returns within about N, not N per lock (helper-145).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace storemove {

// What is left of a budget of `seconds` after `spent`: 0 (no limit) stays 0; otherwise at least
// a second, so that what was waited for is asked once more rather than given up untried.
inline int SecondsLeft(int seconds, std::chrono::steady_clock::duration spent) {
  if (seconds <= 0) return seconds;
  const int64_t left = seconds - std::chrono::duration_cast<std::chrono::seconds>(spent).count();
  return static_cast<int>(std::max<int64_t>(1, left));
}

}  // namespace storemove
