// Local wall-clock times as instants: one, two in an hour the clocks repeat, none in one they
// skip; the same in every zone (mktime with tm_isdst -1 picks the later instant in some).
#include "util/local_time.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <ctime>
#include <string>

#include "tests/support/time_zone.h"

namespace storemove {
namespace {

using storemove::testing::Zone;

TEST(LocalTime, AnOrdinaryTimeHasOneInstant) {
  Zone zone("Europe/Berlin");
  EXPECT_EQ(LocalInstants({2026, 12, 5, 8, 0, 0}), std::vector<int64_t>{1796454000});  // 07:00Z
  Zone utc("UTC");
  EXPECT_EQ(LocalInstants({1970, 1, 1, 0, 0, 0}), std::vector<int64_t>{0});
}

// 2026-10-25 02:30 in Berlin is 00:30Z (CEST) and 01:30Z (CET); in New York 2026-11-01 01:30 is
// 05:30Z (EDT) and 06:30Z (EST): both, earliest first, in either zone.
TEST(LocalTime, AnHourTheClocksRepeatHasTwoInstantsEarliestFirst) {
  {
    Zone zone("Europe/Berlin");
    EXPECT_EQ(LocalInstants({2026, 10, 25, 2, 30, 0}), (std::vector<int64_t>{1792888200, 1792891800}));
  }
  Zone zone("America/New_York");
  EXPECT_EQ(LocalInstants({2026, 11, 1, 1, 30, 0}), (std::vector<int64_t>{1793511000, 1793514600}));
}

TEST(LocalTime, ATimeTheClocksSkipHasNoneAndIsReachedAtTheJump) {
  Zone zone("America/New_York");
  EXPECT_TRUE(LocalInstants({2026, 3, 8, 2, 30, 0}).empty());
  EXPECT_EQ(LocalClockReaches({2026, 3, 8, 2, 30, 0}), 1772953200);  // 07:00Z: 01:59:59 EST -> 03:00 EDT
  EXPECT_EQ(LocalClockReaches({2026, 3, 8, 3, 30, 0}), 1772955000);  // after the jump: as shown
}

// Samoa skipped 2011-12-30 (UTC-10 to UTC+14); Moscow repeated 2014-10-26 01:00-02:00 with no
// daylight-saving time on either side (UTC+4 to UTC+3), which tm_isdst cannot tell apart.
TEST(LocalTime, ChangesOfTheZoneItselfCount) {
  {
    Zone zone("Pacific/Apia");
    EXPECT_TRUE(LocalInstants({2011, 12, 30, 0, 0, 0}).empty());
    EXPECT_TRUE(LocalInstants({2011, 12, 30, 12, 0, 0}).empty());
    EXPECT_EQ(LocalClockReaches({2011, 12, 30, 0, 0, 0}), 1325239200);  // 2011-12-31 00:00 +14
  }
  Zone zone("Europe/Moscow");
  EXPECT_EQ(LocalInstants({2014, 10, 26, 1, 30, 0}), (std::vector<int64_t>{1414272600, 1414276200}));
}

TEST(LocalTime, NoCalendarDateHasNoInstant) {
  Zone zone("UTC");
  EXPECT_FALSE(IsCalendarDate(2026, 2, 29));
  EXPECT_TRUE(IsCalendarDate(2024, 2, 29));
  EXPECT_FALSE(IsCalendarDate(1900, 2, 29));
  EXPECT_TRUE(IsCalendarDate(2000, 2, 29));
  EXPECT_TRUE(LocalInstants({2026, 2, 30, 0, 0, 0}).empty());
  EXPECT_TRUE(LocalInstants({2026, 4, 31, 0, 0, 0}).empty());
}

TEST(LocalTime, TheZoneIsNamedByItsTz) {
  Zone zone("Europe/Berlin");
  EXPECT_EQ(LocalZoneName(), "TZ Europe/Berlin");
}

}  // namespace
}  // namespace storemove
