// util/external_sort.h and util/record_spool.h: order, stability and the records' bytes, in
// memory and spilled to temporary files, against std::stable_sort.
#include "util/external_sort.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "util/fault.h"
#include "util/record_spool.h"

namespace storemove {
namespace {

using Records = std::vector<std::pair<std::string, std::string>>;

Records SortedBy(ExternalSorter& sorter) {
  sorter.Finish();
  Records out;
  std::string_view key, value;
  while (sorter.Next(&key, &value)) out.emplace_back(std::string(key), std::string(value));
  EXPECT_FALSE(sorter.Next(&key, &value));  // stays at the end
  return out;
}

// Random keys from a small alphabet (many equal keys, prefixes of each other, NUL and 0xff
// bytes), each value its position: a stable sort keeps equal keys' values ascending.
Records RandomRecords(size_t n, unsigned seed) {
  std::mt19937 random(seed);
  const std::string alphabet("\0\x01" "ab\x7f\x80\xff", 7);
  Records records;
  for (size_t i = 0; i < n; ++i) {
    std::string key(random() % 5, '\0');
    for (char& c : key) c = alphabet[random() % alphabet.size()];
    std::string value = std::to_string(i) + std::string(random() % 40, 'v');
    records.emplace_back(std::move(key), std::move(value));
  }
  return records;
}

Records Expected(Records records) {
  // Bytewise, as unsigned bytes: std::string's order.
  std::stable_sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return records;
}

class ScratchDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/external_sort_test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    const char* was = ::getenv("TMPDIR");
    had_tmpdir_ = was != nullptr;
    if (was) old_tmpdir_ = was;
    ::setenv("TMPDIR", dir_.c_str(), 1);
  }
  void TearDown() override {
    if (had_tmpdir_)
      ::setenv("TMPDIR", old_tmpdir_.c_str(), 1);
    else
      ::unsetenv("TMPDIR");
    ::rmdir(dir_.c_str());
  }
  size_t EntriesInScratch() const {
    size_t n = 0;
    DIR* d = ::opendir(dir_.c_str());
    while (const dirent* e = ::readdir(d)) n += std::string_view(e->d_name) != "." && std::string_view(e->d_name) != "..";
    ::closedir(d);
    return n;
  }
  std::string dir_;
  std::string old_tmpdir_;
  bool had_tmpdir_ = false;
};

TEST_F(ScratchDir, AFewRecordsSortInMemory) {
  ExternalSorter sorter(1 << 20);
  const Records records = RandomRecords(500, 1);
  for (const auto& [key, value] : records) sorter.Add(key, value);
  EXPECT_EQ(sorter.size(), 500u);
  EXPECT_EQ(SortedBy(sorter), Expected(records));
  EXPECT_EQ(sorter.runs(), 0u);
}

TEST_F(ScratchDir, ManyRecordsSpillToRunsAndMergeInOrderAndStable) {
  ExternalSorter sorter(16 << 10);  // a run every few hundred records
  const Records records = RandomRecords(60000, 2);
  for (const auto& [key, value] : records) sorter.Add(key, value);
  EXPECT_EQ(SortedBy(sorter), Expected(records));
  EXPECT_GT(sorter.runs(), 100u);
  EXPECT_EQ(EntriesInScratch(), 0u);  // the runs' file is unlinked from the start
}

TEST_F(ScratchDir, NoRecordsAndEmptyKeysAndValues) {
  ExternalSorter none(64);
  EXPECT_TRUE(SortedBy(none).empty());
  ExternalSorter sorter(64);
  const Records records = {{"", ""}, {"b", ""}, {"", "x"}, {"a", std::string(1000, 'y')}, {"", ""}};
  for (const auto& [key, value] : records) sorter.Add(key, value);
  EXPECT_EQ(SortedBy(sorter), Expected(records));
  EXPECT_GT(sorter.runs(), 1u);
}

TEST_F(ScratchDir, WithoutATemporaryFileTheRecordsStayInMemory) {
  ::setenv("TMPDIR", (dir_ + "/missing").c_str(), 1);
  ExternalSorter sorter(4 << 10);
  const Records records = RandomRecords(5000, 3);
  for (const auto& [key, value] : records) sorter.Add(key, value);
  EXPECT_EQ(SortedBy(sorter), Expected(records));
}

// A full $TMPDIR: the write that fails (wholly or half-way) and every record after it stay in
// memory; what is in the file before it is read from there.
TEST_F(ScratchDir, AWriteThatFailsKeepsTheRestInMemory) {
  for (const fault::Kind kind : {fault::Kind::kEnospc, fault::Kind::kShortWrite}) {
    for (const uint64_t nth : {0u, 3u}) {
      SCOPED_TRACE(std::string(fault::KindName(kind)) + " at write " + std::to_string(nth));
      fault::Arm(nth, kind);
      ExternalSorter sorter(16 << 10);
      const Records records = RandomRecords(60000, 4);
      for (const auto& [key, value] : records) sorter.Add(key, value);
      EXPECT_EQ(SortedBy(sorter), Expected(records));
      EXPECT_TRUE(fault::Fired());
      fault::Stop();
    }
  }
}

TEST_F(ScratchDir, ASpoolReadsAnyRangeBackInMemoryAndSpilled) {
  for (size_t budget : {size_t{1} << 30, size_t{100}}) {
    RecordSpool spool(budget);
    std::vector<uint64_t> positions;
    std::vector<std::string> records;
    for (int i = 0; i < 3000; ++i) {
      positions.push_back(spool.end());
      // One record larger than a reader's buffer.
      records.push_back(i == 1500 ? std::string(200000, 'L') : std::string(static_cast<size_t>(i % 300), static_cast<char>(i)));
      spool.Append(records.back());
    }
    positions.push_back(spool.end());
    EXPECT_EQ(spool.spilled(), budget == 100);
    for (auto [first, last] : {std::pair<size_t, size_t>{0, 3000}, {1000, 2001}, {1500, 1501}, {7, 7}}) {
      RecordSpool::Reader reader(spool, positions[first], positions[last], 4096);
      std::string_view record;
      for (size_t i = first; i < last; ++i) {
        ASSERT_TRUE(reader.Next(&record)) << i;
        ASSERT_EQ(record, records[i]) << i;
      }
      EXPECT_FALSE(reader.Next(&record));
    }
  }
}

}  // namespace
}  // namespace storemove
