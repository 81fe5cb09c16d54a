// util/sectioned_list.h: each section's items in the order added, sections read in order (some
// passed over), in memory and through the sorter's runs on disk; misuse refused.
#include "util/sectioned_list.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "util/error.h"

namespace storemove {
namespace {

using Sections = std::vector<std::vector<std::string>>;

// Items spread at random over `sections` sections, each item naming its place in the order added.
Sections Fill(SectionedList& list, size_t sections, size_t items, unsigned seed) {
  std::mt19937 random(seed);
  Sections expected(sections);
  for (size_t i = 0; i < items; ++i) {
    const size_t s = random() % sections;
    std::string item = "item-" + std::to_string(i) + std::string(random() % 30, 'x');
    list.Add(s, item);
    expected[s].push_back(item);
  }
  return expected;
}

std::vector<std::string> ReadSection(SectionedList& list, size_t section) {
  std::vector<std::string> out;
  list.Read(section, [&](std::string_view item) { out.emplace_back(item); });
  return out;
}

TEST(SectionedList, EachSectionGivesItsItemsInTheOrderAdded) {
  for (size_t budget : {size_t{4} << 20, size_t{256}}) {  // in memory; many runs on disk
    SectionedList list(7, budget);
    const Sections expected = Fill(list, 7, 5000, 1);
    for (size_t s = 0; s < 7; ++s) {
      EXPECT_EQ(list.count(s), expected[s].size()) << s;
      EXPECT_EQ(ReadSection(list, s), expected[s]) << "section " << s << ", budget " << budget;
    }
  }
}

TEST(SectionedList, SectionsPassedOverAndEmptyOnesAreSkipped) {
  SectionedList list(300, 512);  // past 255: the key's second byte counts
  list.Add(299, "last");
  list.Add(3, "a");
  list.Add(256, "b");
  list.Add(3, "c");
  list.Add(1, "skipped");
  EXPECT_EQ(ReadSection(list, 2), std::vector<std::string>{});
  EXPECT_EQ(ReadSection(list, 3), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(ReadSection(list, 255), std::vector<std::string>{});
  EXPECT_EQ(ReadSection(list, 256), std::vector<std::string>{"b"});
  EXPECT_EQ(ReadSection(list, 299), std::vector<std::string>{"last"});
  EXPECT_EQ(list.count(1), 1u);
}

TEST(SectionedList, MisuseIsRefused) {
  SectionedList list(3);
  list.Add(1, "x");
  EXPECT_THROW(list.Add(3, "out of range"), std::out_of_range);
  EXPECT_EQ(ReadSection(list, 1), std::vector<std::string>{"x"});
  EXPECT_THROW(list.Add(0, "late"), Error);
  EXPECT_THROW(ReadSection(list, 1), Error);  // again
  EXPECT_THROW(ReadSection(list, 0), Error);  // backwards
  EXPECT_EQ(ReadSection(list, 2), std::vector<std::string>{});
}

}  // namespace
}  // namespace storemove
