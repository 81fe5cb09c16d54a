// IsoUtcTime: four-digit years, or the number where ISO 8601 has no four-digit year.
#include "util/iso_time.h"

#include <gtest/gtest.h>

namespace storemove {
namespace {

TEST(IsoUtcTime, FourDigitYearsAndTheNumberBeyondThem) {
  EXPECT_EQ(IsoUtcTime(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(IsoUtcTime(1700000000), "2023-11-14T22:13:20Z");
  EXPECT_EQ(IsoUtcTime(-62167219200), "0000-01-01T00:00:00Z");  // strftime's %Y wrote "0-01-01"
  EXPECT_EQ(IsoUtcTime(-61851600000), "0010-01-01T00:00:00Z");
  EXPECT_EQ(IsoUtcTime(253402300799), "9999-12-31T23:59:59Z");
  EXPECT_EQ(IsoUtcTime(253402300800), "253402300800");
  EXPECT_EQ(IsoUtcTime(-62167219201), "-62167219201");
}

}  // namespace
}  // namespace storemove
