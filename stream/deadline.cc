#include "stream/deadline.h"

#include <cctype>
#include <ctime>
#include <vector>

#include "util/error.h"
#include "util/local_time.h"
#include "util/printable.h"

namespace storemove::stream {
namespace {

[[noreturn]] void Bad(std::string_view text, const std::string& why) {
  Throw(Errc::kInvalidArgument, "--deadline '" + EscapeControls(text) + "': " + why +
                                    " (give +DURATION such as +90m or +2h30m, HH:MM or YYYY-MM-DDTHH:MM in local time, or @SECONDS)");
}

// Digits at `*pos` of exactly `width` characters, as a number.
bool Number(std::string_view s, size_t* pos, size_t width, int* out) {
  if (*pos + width > s.size()) return false;
  int n = 0;
  for (size_t i = 0; i < width; ++i) {
    char c = s[*pos + i];
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    n = n * 10 + (c - '0');
  }
  *pos += width;
  *out = n;
  return true;
}

bool Expect(std::string_view s, size_t* pos, char c) {
  if (*pos >= s.size() || s[*pos] != c) return false;
  ++*pos;
  return true;
}

WallClock::time_point ParseDuration(std::string_view text, WallClock::time_point now) {
  std::string_view s = text.substr(1);
  if (s.empty()) Bad(text, "no duration after '+'");
  int64_t seconds = 0;
  char last_unit = 0;
  for (size_t pos = 0; pos < s.size();) {
    int64_t n = 0;
    size_t digits = 0;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
      if (++digits > 6) Bad(text, "a number too large");
      n = n * 10 + (s[pos++] - '0');
    }
    if (digits == 0 || pos == s.size()) Bad(text, "each number needs a unit h, m or s after it");
    const char unit = s[pos++];
    // In order, each once: "2h30m", not "30m2h" or "1h1h".
    const std::string_view order = "hms";
    if (order.find(unit) == std::string_view::npos) Bad(text, std::string("unknown unit '") + unit + "'");
    if (last_unit && order.find(unit) <= order.find(last_unit)) Bad(text, "units out of order or repeated");
    last_unit = unit;
    seconds += n * (unit == 'h' ? 3600 : unit == 'm' ? 60 : 1);
  }
  if (seconds <= 0) Bad(text, "a duration of zero");
  if (seconds > 366LL * 86400) Bad(text, "more than a year away");
  return now + std::chrono::seconds(seconds);
}

// Why a local date and time has no instant: no such date, or a change of the clocks skips it.
std::string NoSuchLocalTime(const LocalDateTime& at) {
  if (!IsCalendarDate(at.year, at.month, at.day)) return "no such date";
  return "no such local time in " + LocalZoneName() + ": the clocks moved forward";
}

}  // namespace

WallClock::time_point ParseDeadline(std::string_view text, WallClock::time_point now) {
  if (text.empty()) Bad(text, "empty");
  if (text.front() == '+') return ParseDuration(text, now);
  if (text.front() == '@') {
    // Seconds since the epoch, as date(1) reads them: what `storemove plan --deadline` writes
    // into its job lines (no time zone to differ between hosts). A job started after it is
    // planned may find it passed: that is the window's end, not a mistake.
    if (text.size() < 2 || text.size() > 13) Bad(text, "not @SECONDS");
    int64_t seconds = 0;
    for (char c : text.substr(1)) {
      if (!std::isdigit(static_cast<unsigned char>(c))) Bad(text, "not @SECONDS");
      seconds = seconds * 10 + (c - '0');
    }
    return WallClock::from_time_t(static_cast<std::time_t>(seconds));
  }
  size_t pos = 0;
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  const bool dated = text.size() > 4 && text[4] == '-';
  if (dated) {
    if (!Number(text, &pos, 4, &year) || !Expect(text, &pos, '-') || !Number(text, &pos, 2, &month) ||
        !Expect(text, &pos, '-') || !Number(text, &pos, 2, &day) ||
        !(Expect(text, &pos, 'T') || Expect(text, &pos, ' ')))
      Bad(text, "not a date and time");
  }
  if (!Number(text, &pos, 2, &hour) || !Expect(text, &pos, ':') || !Number(text, &pos, 2, &minute))
    Bad(text, "not a time");
  if (pos < text.size() && (!Expect(text, &pos, ':') || !Number(text, &pos, 2, &second)))
    Bad(text, "not a time");
  if (pos != text.size()) Bad(text, "unexpected text after the time");
  if (hour > 23 || minute > 59 || second > 59) Bad(text, "no such time of day");
  if (dated) {
    // In an hour the clocks repeat, the first of its instants still ahead.
    const std::vector<int64_t> instants = LocalInstants({year, month, day, hour, minute, second});
    if (instants.empty()) Bad(text, NoSuchLocalTime({year, month, day, hour, minute, second}));
    for (int64_t t : instants)
      if (WallClock::from_time_t(static_cast<std::time_t>(t)) > now) return WallClock::from_time_t(static_cast<std::time_t>(t));
    Bad(text, "already passed");
  }
  // The next instant the local clock shows that time: today's, or tomorrow's once today's has
  // passed; in an hour the clocks repeat, the first still ahead. On a day the clocks skip it
  // (02:30 when they jump from 02:00 to 03:00), the moment of the jump: the clock is past it then,
  // and a window that ends every night at HH:MM still ends that night.
  const std::time_t now_t = WallClock::to_time_t(now);
  std::tm today{};
  ::tzset();  // localtime_r need not read TZ again (a test changes it)
  localtime_r(&now_t, &today);
  for (int days = 0; days < 3; ++days) {
    std::tm date{};
    date.tm_year = today.tm_year;
    date.tm_mon = today.tm_mon;
    date.tm_mday = today.tm_mday + days;
    date.tm_hour = 12;
    const std::time_t noon = ::timegm(&date);  // normalises the day (the month, the year)
    gmtime_r(&noon, &date);
    const LocalDateTime at{date.tm_year + 1900, date.tm_mon + 1, date.tm_mday, hour, minute, second};
    std::vector<int64_t> instants = LocalInstants(at);
    if (instants.empty()) instants.push_back(LocalClockReaches(at));
    for (int64_t t : instants)
      if (WallClock::from_time_t(static_cast<std::time_t>(t)) > now) return WallClock::from_time_t(static_cast<std::time_t>(t));
  }
  Bad(text, "no such local time");
}

std::string DeadlineText(WallClock::time_point when) {
  std::time_t t = WallClock::to_time_t(when);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", &tm);
  return buf;
}

}  // namespace storemove::stream
