// UTC times as ISO 8601 ("2024-07-01T10:00:00Z"), the one way reports, logs and listings show them.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>

namespace storemove {

// A time gmtime cannot represent (far outside the years a message can carry) is shown as its number.
inline std::string IsoUtcTime(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  char buf[40];
  if (gmtime_r(&t, &tm) == nullptr || strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    return std::to_string(unix_seconds);
  return buf;
}

}  // namespace storemove
