#include "stream/sent_contents.h"

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

TEST(SentContents, FindsEveryEntryThroughGrowthAndKeepsTheFirst) {
  SentContents t;
  std::mt19937_64 rng(1);
  std::vector<Digest> keys;
  for (uint32_t i = 1; i <= 50000; ++i) {
    keys.push_back(Make(rng(), rng()));
    t.Insert(keys.back(), i, i % 7, i * 3);
  }
  t.Insert(keys[0], 999999, 1, 1);  // a second content for a known digest is not kept
  EXPECT_EQ(t.size(), 50000u);
  for (uint32_t i = 1; i <= 50000; ++i) {
    const SentContents::Entry* e = t.Find(keys[i - 1]);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->content_id, i);
    EXPECT_EQ(e->uid, i * 3);
  }
  EXPECT_EQ(t.Find(Make(12345, 67890)), nullptr);
}

TEST(SentContents, DigestsSharingAHomeSlotStayDistinct) {
  SentContents t;
  // Same first 8 bytes (the slot index), different last 8.
  for (uint32_t i = 1; i <= 100; ++i) t.Insert(Make(42, i), i, 0, i);
  for (uint32_t i = 1; i <= 100; ++i) EXPECT_EQ(t.Find(Make(42, i))->content_id, i);
  EXPECT_EQ(t.Find(Make(42, 1000)), nullptr);
}

}  // namespace
}  // namespace storemove::stream
