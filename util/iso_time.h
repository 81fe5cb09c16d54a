// UTC times as ISO 8601 ("2024-07-01T10:00:00Z"), the one way reports, logs and listings show them.
#pragma once

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

namespace storemove {

// A time outside the years ISO 8601 writes with four digits (0000-9999; a stream may carry any
// number) is shown as its number: strftime's %Y wrote year 0 as "0-01-01T...".
inline std::string IsoUtcTime(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  char buf[40];
  if (gmtime_r(&t, &tm) == nullptr || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
    return std::to_string(unix_seconds);
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

}  // namespace storemove
