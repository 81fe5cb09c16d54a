#include "stream/sent_contents.h"
#include "stream/folder_path_ring.h"
#include "stream/content_filter.h"

#include <gtest/gtest.h>

#include <random>

namespace storemove::stream {
namespace {

Digest Make(uint64_t low, uint64_t high) {
  Digest d;
  for (int i = 0; i < 8; ++i) d.bytes[size_t(i)] = uint8_t(low >> (8 * i));
  for (int i = 0; i < 8; ++i) d.bytes[size_t(8 + i)] = uint8_t(high >> (8 * i));
  return d;
}

TEST(SentContents, FindsEveryEntryWhileItFitsAndKeepsTheFirst) {
  SentContents t(1 << 16);
  std::mt19937_64 rng(1);
  std::vector<Digest> keys;
  for (uint32_t i = 1; i <= 2000; ++i) {  // a thirtieth of the capacity: no bucket overflows
    keys.push_back(Make(rng(), rng()));
    t.Insert(keys.back(), i, i % 7, i * 3);
  }
  t.Insert(keys[0], 999999, 1, 1);  // a second content for a known digest is not kept
  EXPECT_EQ(t.size(), 2000u);
  EXPECT_EQ(t.evicted(), 0u);
  for (uint32_t i = 1; i <= 2000; ++i) {
    const SentContents::Entry* e = t.Find(keys[i - 1]);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->content_id, i);
    EXPECT_EQ(e->uid, i * 3);
  }
  EXPECT_EQ(t.Find(Make(12345, 67890)), nullptr);
}

TEST(SentContents, StaysAtItsCapacityAndForgetsTheOldestOfABucket) {
  SentContents t(64);
  std::mt19937_64 rng(2);
  std::vector<Digest> keys;
  for (uint32_t i = 1; i <= 10000; ++i) {
    keys.push_back(Make(rng(), rng()));
    t.Insert(keys.back(), i, 0, i);
  }
  EXPECT_EQ(t.capacity(), 64u);
  EXPECT_EQ(t.size(), 64u);
  EXPECT_EQ(t.size() + t.evicted(), 10000u);
  size_t found = 0;
  for (uint32_t i = 1; i <= 10000; ++i) {
    if (const SentContents::Entry* e = t.Find(keys[i - 1])) {
      ++found;
      EXPECT_EQ(e->content_id, i);
    }
  }
  EXPECT_EQ(found, 64u);
  // Whatever bucket the newest key went to, it is still there: eviction takes the oldest.
  EXPECT_NE(t.Find(keys.back()), nullptr);
}

TEST(SentContents, DigestsSharingABucketStayDistinctAndTheOldestGoesFirst) {
  SentContents t(SentContents::kWays);  // one bucket: every key shares it
  std::vector<Digest> keys;
  for (uint64_t i = 1; i <= 6; ++i) keys.push_back(Make(42, i));  // equal first halves too
  for (uint32_t i = 0; i < 4; ++i) t.Insert(keys[i], i + 1, 0, i);
  for (uint32_t i = 0; i < 4; ++i) EXPECT_EQ(t.Find(keys[i])->content_id, i + 1);
  EXPECT_EQ(t.Find(keys[4]), nullptr);
  t.Insert(keys[4], 5, 0, 4);  // a fifth replaces content 1, the oldest
  EXPECT_EQ(t.Find(keys[0]), nullptr);
  EXPECT_EQ(t.Find(keys[4])->content_id, 5u);
  EXPECT_EQ(t.Find(keys[1])->content_id, 2u);
  t.Insert(keys[5], 6, 0, 5);  // then content 2
  EXPECT_EQ(t.Find(keys[1]), nullptr);
  EXPECT_EQ(t.Find(keys[2])->content_id, 3u);
  EXPECT_EQ(t.evicted(), 2u);
  EXPECT_EQ(t.size(), 4u);
}

// An entry keeps 32 bits of its digest: another digest with the same bucket and tag is found as
// it. Backup proves a found content equal (same file or same bytes) before it links to it.
TEST(SentContents, FindAnswersByBucketAndTagSoTheCallerMustProveTheContent) {
  SentContents t(SentContents::kWays);  // one bucket
  const Digest first = Make(0x1234, 0x5678);
  const Digest same_tag = Make(0x1234 ^ 1, 0x5678);  // differs in a bit that picks buckets, not tags
  t.Insert(first, 1, 0, 10);
  ASSERT_NE(t.Find(same_tag), nullptr);
  EXPECT_EQ(t.Find(same_tag)->uid, 10u);
  t.Insert(same_tag, 2, 0, 20);  // taken for the first: not added
  EXPECT_EQ(t.size(), 1u);

  SentContents wide(1 << 10);  // with bucket bits the two part
  wide.Insert(first, 1, 0, 10);
  EXPECT_EQ(wide.Find(same_tag), nullptr);
  EXPECT_EQ(wide.Find(Make(0x1234, 0x5679)), nullptr);  // another tag in the first's bucket or not
}

TEST(FolderPathRing, KeepsTheLastPathsByCountAndByBytes) {
  FolderPathRing ring(4, 64);
  EXPECT_EQ(ring.Find(0), std::nullopt);  // none added
  EXPECT_EQ(ring.Add("/s/a"), 0u);
  EXPECT_EQ(ring.Add(""), 1u);
  EXPECT_EQ(ring.Add("/s/b"), 2u);
  EXPECT_EQ(ring.Find(0), "/s/a");
  EXPECT_EQ(ring.Find(1), "");
  EXPECT_EQ(ring.Find(2), "/s/b");
  EXPECT_EQ(ring.Find(3), std::nullopt);
  ring.Add("/s/c");
  ring.Add("/s/d");  // a fifth: the first is out by count
  EXPECT_EQ(ring.Find(0), std::nullopt);
  EXPECT_EQ(ring.Find(4), "/s/d");
  EXPECT_EQ(ring.added(), 5u);

  // By bytes: 64 of them hold three paths of 20; the fourth starts the arena again and
  // overwrites the oldest, the others stay whole.
  FolderPathRing bytes(100, 64);
  const std::string p[] = {std::string(20, 'a'), std::string(20, 'b'), std::string(20, 'c'), std::string(20, 'd'),
                           std::string(20, 'e')};
  for (const std::string& path : p) bytes.Add(path);
  EXPECT_EQ(bytes.Find(0), std::nullopt);
  EXPECT_EQ(bytes.Find(1), std::nullopt);  // 'e' went over the start of 'b'
  EXPECT_EQ(bytes.Find(2), p[2]);
  EXPECT_EQ(bytes.Find(3), p[3]);
  EXPECT_EQ(bytes.Find(4), p[4]);
  EXPECT_EQ(bytes.Add(std::string(65, 'x')), 5u);  // longer than the arena: never kept
  EXPECT_EQ(bytes.Find(5), std::nullopt);
  EXPECT_EQ(bytes.Find(4), p[4]);  // and nothing else lost
}

TEST(ContentFilter, NoFalseNegativesAndFewFalsePositives) {
  ContentFilter f;
  std::mt19937_64 rng(3);
  std::vector<Digest> added;
  for (int i = 0; i < 200000; ++i) {
    added.push_back(Make(rng(), rng()));
    f.Add(added.back());
  }
  for (const Digest& d : added) ASSERT_TRUE(f.MayContain(d));
  int false_positives = 0;
  for (int i = 0; i < 200000; ++i) false_positives += f.MayContain(Make(rng(), rng()));
  // (1 - e^(-4 * 200000 / 2^23))^4 = 0.0067 %: ~13 expected; 200 would mean a broken hash split.
  EXPECT_LT(false_positives, 200);
}

}  // namespace
}  // namespace storemove::stream
