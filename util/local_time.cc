#include "util/local_time.h"

#include <algorithm>
#include <cstdlib>
#include <ctime>

namespace storemove {
namespace {

// `at` read as if it were UTC: the local clock's reading, in seconds.
int64_t AsUtc(const LocalDateTime& at) {
  std::tm tm{};
  tm.tm_year = at.year - 1900;
  tm.tm_mon = at.month - 1;
  tm.tm_mday = at.day;
  tm.tm_hour = at.hour;
  tm.tm_min = at.minute;
  tm.tm_sec = at.second;
  return static_cast<int64_t>(::timegm(&tm));
}

// What the local clock shows at `t`, as AsUtc counts it; false if localtime cannot say.
bool LocalReading(int64_t t, int64_t* reading, long* offset) {
  const std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  if (::localtime_r(&tt, &tm) == nullptr) return false;
  *offset = tm.tm_gmtoff;
  *reading = t + tm.tm_gmtoff;
  return true;
}

}  // namespace

bool IsCalendarDate(int year, int month, int day) {
  if (month < 1 || month > 12 || day < 1) return false;
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return day <= kDays[month - 1] + (month == 2 && leap ? 1 : 0);
}

std::vector<int64_t> LocalInstants(const LocalDateTime& at) {
  ::tzset();  // localtime_r need not read TZ again (a test changes it)
  std::vector<int64_t> found;
  if (!IsCalendarDate(at.year, at.month, at.day) || at.hour < 0 || at.hour > 23 || at.minute < 0 || at.minute > 59 ||
      at.second < 0 || at.second > 59)
    return found;
  const int64_t wanted = AsUtc(at);
  // Every offset from UTC in force within a day and a half either side (no zone is more than
  // 14 hours from UTC, and none changes its clocks twice within an hour): each gives the one
  // instant that could show `at` under it, which counts if the clock then does show it.
  std::vector<long> offsets;
  for (int64_t probe = wanted - 36 * 3600; probe <= wanted + 36 * 3600; probe += 1800) {
    int64_t reading;
    long offset;
    if (LocalReading(probe, &reading, &offset) && std::find(offsets.begin(), offsets.end(), offset) == offsets.end())
      offsets.push_back(offset);
  }
  for (long offset : offsets) {
    const int64_t t = wanted - offset;
    int64_t reading;
    long actual;
    if (LocalReading(t, &reading, &actual) && reading == wanted && std::find(found.begin(), found.end(), t) == found.end())
      found.push_back(t);
  }
  std::sort(found.begin(), found.end());
  return found;
}

int64_t LocalClockReaches(const LocalDateTime& at) {
  const std::vector<int64_t> instants = LocalInstants(at);
  if (!instants.empty()) return instants.front();
  // Skipped: the clock reads before `at` 15 hours before it read as UTC and after it 13 hours
  // after (offsets are -12 to +14 hours); between them is the jump over it.
  const int64_t wanted = AsUtc(at);
  int64_t before = wanted - 15 * 3600, after = wanted + 13 * 3600;  // reading(before) < wanted <= reading(after)
  while (after - before > 1) {
    const int64_t mid = before + (after - before) / 2;
    int64_t reading;
    long offset;
    if (!LocalReading(mid, &reading, &offset)) break;
    (reading < wanted ? before : after) = mid;
  }
  return after;
}

std::string LocalZoneName() {
  const char* tz = std::getenv("TZ");
  if (tz != nullptr && *tz != '\0') return std::string("TZ ") + (*tz == ':' ? tz + 1 : tz);
  return "the system time zone";
}

std::string CompactLocalTime(int64_t t) {
  ::tzset();
  const std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  if (::localtime_r(&tt, &tm) == nullptr) return "?";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d:%H%M%S", &tm);
  return buf;
}

}  // namespace storemove
