// migrate --deadline's times: durations, the next HH:MM, a dated local time; and what is refused.
#include "stream/deadline.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <ctime>
#include <string>

#include "tests/support/time_zone.h"
#include "util/error.h"

namespace storemove::stream {
namespace {

// A local time (whatever the test machine's zone) as a time point.
WallClock::time_point Local(int year, int month, int day, int hour, int minute, int second = 0) {
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  tm.tm_isdst = -1;
  return WallClock::from_time_t(std::mktime(&tm));
}

using storemove::testing::Zone;

WallClock::time_point Utc(int64_t seconds) { return WallClock::from_time_t(static_cast<std::time_t>(seconds)); }

TEST(Deadline, DurationsCountFromNow) {
  const auto now = Local(2026, 12, 3, 23, 0);
  EXPECT_EQ(ParseDeadline("+90m", now), now + std::chrono::minutes(90));
  EXPECT_EQ(ParseDeadline("+2h30m", now), now + std::chrono::minutes(150));
  EXPECT_EQ(ParseDeadline("+1h0m5s", now), now + std::chrono::seconds(3605));
  EXPECT_EQ(ParseDeadline("+45s", now), now + std::chrono::seconds(45));
}

TEST(Deadline, ATimeOfDayIsTheNextOne) {
  const auto now = Local(2026, 12, 3, 23, 0);
  EXPECT_EQ(ParseDeadline("23:30", now), Local(2026, 12, 3, 23, 30));
  EXPECT_EQ(ParseDeadline("06:00", now), Local(2026, 12, 4, 6, 0));  // tomorrow morning
  EXPECT_EQ(ParseDeadline("23:00", now), Local(2026, 12, 4, 23, 0));  // now is not after now
  EXPECT_EQ(ParseDeadline("23:00:01", now), Local(2026, 12, 3, 23, 0, 1));
  EXPECT_EQ(ParseDeadline("00:15", Local(2026, 12, 31, 22, 0)), Local(2027, 1, 1, 0, 15));  // the year turns
}

TEST(Deadline, ADatedLocalTime) {
  const auto now = Local(2026, 12, 3, 23, 0);
  EXPECT_EQ(ParseDeadline("2026-12-04T06:00", now), Local(2026, 12, 4, 6, 0));
  EXPECT_EQ(ParseDeadline("2026-12-04 06:00:30", now), Local(2026, 12, 4, 6, 0, 30));
  EXPECT_EQ(ParseDeadline("2027-02-28T00:00", now), Local(2027, 2, 28, 0, 0));
}

TEST(Deadline, WhatIsNoDeadlineIsRefusedNamingIt) {
  const auto now = Local(2026, 12, 3, 23, 0);
  for (const char* bad : {"", "+", "+5", "+0m", "+1x", "+m", "+30m2h", "+1h1h", "+9999999h", "+400d", "24:00", "12:60",
                          "7:00", "12:00:60", "12:00pm", "2026-02-29T10:00", "2026-12-32T10:00", "2026-13-01T10:00",
                          "2026-12-03T22:59", "2026-12-03T23:00", "2026/12/04 06:00", "tomorrow", "+1h 30m"}) {
    try {
      ParseDeadline(bad, now);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument) << bad;
      EXPECT_NE(std::string(e.what()).find(std::string("--deadline '") + bad + "'"), std::string::npos) << e.what();
    }
  }
}

// Berlin, Saturday 2027-03-27 23:00 CET: tomorrow's 02:30 does not exist (02:00 CET -> 03:00
// CEST). The next such time was taken on Monday, 27.5 hours away; now the jump ends the window
// (01:00Z, 03:00 CEST), the moment the clock passes 02:30. The night after is as asked.
TEST(Deadline, ATimeOfDayTheClocksSkipIsTheMomentOfTheJump) {
  Zone zone("Europe/Berlin");
  const auto now = Utc(1806184800);  // 2027-03-27T22:00:00Z
  EXPECT_EQ(ParseDeadline("02:30", now), Utc(1806195600));  // 2027-03-28T01:00:00Z
  EXPECT_EQ(ParseDeadline("02:30", Utc(1806195600)), Utc(1806280200));  // 2027-03-29 02:30 CEST, 00:30Z
  EXPECT_EQ(ParseDeadline("03:00", now), Utc(1806195600));
}

// Berlin, 2026-10-25 at 02:10 CEST (00:10Z): 02:30 is shown at 00:30Z (CEST) and again at 01:30Z
// (CET). The next one is 20 minutes away, not 80; past it, the second one is next.
TEST(Deadline, ATimeOfDayTheClocksRepeatIsItsFirstInstantAhead) {
  Zone zone("Europe/Berlin");
  EXPECT_EQ(ParseDeadline("02:30", Utc(1792887000)), Utc(1792888200));  // 00:10Z -> 00:30Z
  EXPECT_EQ(ParseDeadline("02:30", Utc(1792889400)), Utc(1792891800));  // 00:50Z (02:50 CEST) -> 01:30Z
  EXPECT_EQ(ParseDeadline("2026-10-25T02:30", Utc(1792887000)), Utc(1792888200));
  EXPECT_EQ(ParseDeadline("2026-10-25T02:30", Utc(1792889400)), Utc(1792891800));
}

// The dated form names a time the clocks skip: refused, saying why and in which zone.
TEST(Deadline, ADatedTimeTheClocksSkipIsRefusedNamingTheZone) {
  Zone zone("America/New_York");
  try {
    ParseDeadline("2027-03-14T02:30", Utc(1764820800));
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("no such local time in TZ America/New_York: the clocks moved forward"),
              std::string::npos)
        << e.what();
  }
}

TEST(Deadline, SecondsSinceTheEpochArePlansAndMayHavePassed) {
  const auto now = Local(2026, 12, 3, 23, 0);
  EXPECT_EQ(ParseDeadline("@1764820800", now), WallClock::from_time_t(1764820800));
  EXPECT_EQ(ParseDeadline("@1", now), WallClock::from_time_t(1));  // passed: the job came too late
  for (const char* bad : {"@", "@-5", "@12x", "@99999999999999"}) EXPECT_THROW(ParseDeadline(bad, now), Error) << bad;
}

TEST(Deadline, IsNamedInLocalTime) {
  EXPECT_EQ(DeadlineText(Local(2026, 12, 4, 6, 0)).substr(0, 19), "2026-12-04 06:00:00");
}

}  // namespace
}  // namespace storemove::stream
