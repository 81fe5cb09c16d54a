// Local wall-clock times (TZ) as instants, without mktime's guesses: a time a clock change repeats
// has two instants, one it skips has none, and mktime with tm_isdst -1 picks either or moves it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace storemove {

struct LocalDateTime {
  int year = 1970, month = 1, day = 1;  // month 1-12
  int hour = 0, minute = 0, second = 0;
};

// Whether year-month-day is a calendar date (2026-02-30 is not), whatever the zone.
bool IsCalendarDate(int year, int month, int day);

// Every instant (unix seconds) at which the local clock shows `at`, earliest first: none when a
// change of the clocks skips it (or it is no calendar date), two in an hour the clocks repeat.
std::vector<int64_t> LocalInstants(const LocalDateTime& at);

// The first instant at which the local clock shows `at` or, when a change of the clocks skips
// it, the instant of the jump past it (the clock never shows an earlier time after that).
// Its local time's date, when the clocks skipped the whole day, is a later day.
int64_t LocalClockReaches(const LocalDateTime& at);

// `t` as the local clock shows it, in `backup -d`'s form YYYYMMDD:HHMMSS. Read back (the earlier
// instant of an hour the clocks repeat) it is `t` or up to an hour before: never after.
std::string CompactLocalTime(int64_t t);

// "TZ Europe/Berlin", or "the system time zone" without TZ: where messages say the time was read.
std::string LocalZoneName();

}  // namespace storemove
