// MessageList: a snapshot's records beyond a bound live in an unlinked temporary file and read
// back the same as held in memory; records out of UID order or an unusable $TMPDIR leave them in
// memory, never fail.
#include <dirent.h>
#include <stdlib.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "store/message_list.h"
#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"

namespace storemove::store {
namespace {

using storemove::testing::TempDir;

MessageMeta Record(uint32_t uid) {
  MessageMeta m;
  m.uid = uid;
  m.flags = static_cast<uint8_t>(uid % 7);
  m.size = 1000 + uid;
  m.digest = DigestOf("message " + std::to_string(uid));
  m.modseq = uid;
  return m;
}

// Points TMPDIR at `dir` for the test's lifetime.
class TmpDirSetting {
 public:
  explicit TmpDirSetting(const std::string& dir) {
    const char* old = ::getenv("TMPDIR");
    had_ = old != nullptr;
    if (had_) old_ = old;
    ::setenv("TMPDIR", dir.c_str(), 1);
  }
  ~TmpDirSetting() {
    if (had_)
      ::setenv("TMPDIR", old_.c_str(), 1);
    else
      ::unsetenv("TMPDIR");
  }

 private:
  bool had_ = false;
  std::string old_;
};

size_t EntriesIn(const std::string& dir) {
  size_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d))
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++n;
  ::closedir(d);
  return n;
}

TEST(MessageList, RecordsBeyondTheBoundAreSpooledAndReadBackAlike) {
  TempDir tmp;
  TmpDirSetting setting(tmp.path());
  std::vector<MessageMeta> all;
  MessageListBuilder builder(100);
  for (uint32_t uid = 1; uid <= 5000; uid += 2) {  // gaps, as expunges leave
    all.push_back(Record(uid));
    builder.Add(&all.back(), 1);
  }
  const MessageList list = builder.Finish();
  ASSERT_TRUE(list.spooled());
  EXPECT_EQ(EntriesIn(tmp.path()), 0u) << "the temporary file has no name";
  ASSERT_EQ(list.size(), all.size());
  size_t i = 0;
  for (const MessageMeta& m : list) EXPECT_EQ(m, all[i++]);
  EXPECT_EQ(i, all.size());
  EXPECT_EQ(list[1234], all[1234]);
  EXPECT_EQ(list.back(), all.back());
  EXPECT_THROW(list.at(all.size()), Error);
  // Two cursors at once, and a copy of one, each see their own records.
  auto a = list.begin(), b = list.begin();
  for (int k = 0; k < 1500; ++k) ++b;
  EXPECT_EQ(a->uid, 1u);
  EXPECT_EQ(b->uid, all[1500].uid);
  auto c = b;
  ++b;
  EXPECT_EQ(c->uid, all[1500].uid);
  EXPECT_EQ(b->uid, all[1501].uid);
  EXPECT_EQ(list, MessageList(all));
  const MessageList shared = list;  // a copy shares the file
  EXPECT_EQ(shared.ToVector(), all);
}

TEST(MessageList, RecordsOutOfOrderStayInMemoryAndAreSorted) {
  TempDir tmp;
  TmpDirSetting setting(tmp.path());
  MessageListBuilder builder(10);
  std::vector<MessageMeta> first;
  for (uint32_t uid = 100; uid < 150; ++uid) first.push_back(Record(uid));
  builder.Add(first.data(), first.size());  // spooled by now
  const MessageMeta low = Record(7);          // an append below what the folder has
  builder.Add(&low, 1);
  const MessageList list = builder.Finish();
  EXPECT_FALSE(list.spooled());
  ASSERT_EQ(list.size(), 51u);
  EXPECT_EQ(list.front().uid, 7u);
  uint32_t last = 0;
  for (const MessageMeta& m : list) {
    EXPECT_GT(m.uid, last);
    last = m.uid;
  }
}

TEST(MessageList, AnUnusableTemporaryDirectoryKeepsTheRecordsInMemory) {
  TempDir tmp;
  TmpDirSetting setting(tmp / "no-such-directory");
  MessageListBuilder builder(10);
  std::vector<MessageMeta> all;
  for (uint32_t uid = 1; uid <= 100; ++uid) all.push_back(Record(uid));
  builder.Add(all.data(), all.size());
  const MessageList list = builder.Finish();
  EXPECT_FALSE(list.spooled());
  EXPECT_EQ(list.ToVector(), all);
}

std::string Body(int i) {
  return "From: a@example.com\r\nSubject: " + std::to_string(i) + "\r\n\r\nbody " + std::to_string(i) + "\r\n";
}

// A folder's snapshot taken spooled and taken in memory are the same snapshot.
TEST(MessageList, ASpooledSnapshotIsTheInMemoryOne) {
  TempDir tmp;
  StoreOptions options;
  options.snapshot_records_in_memory = 50;
  auto store = Store::Init(tmp / "store", {"primary"}, options);
  store->CreateUser("joe");
  auto f = store->OpenFolder("joe", "INBOX");
  for (int batch = 0; batch < 6; ++batch) {
    std::vector<StagedMessage> staged;
    for (int i = 0; i < 60; ++i) {
      auto w = f->NewMessage();
      w->Write(Body(batch * 60 + i));
      staged.push_back(w->Finish({}));
    }
    f->Commit(staged);
  }
  f->Expunge({3, 4, 200});
  f->SetFlags(100, kSeen | kFlagged, 0);
  const FolderSnapshot spooled = f->Snapshot();
  ASSERT_TRUE(spooled.messages.spooled());
  store->set_snapshot_records_in_memory(size_t{1} << 20);
  const FolderSnapshot held = f->Snapshot();
  ASSERT_FALSE(held.messages.spooled());
  EXPECT_EQ(spooled.messages.size(), 357u);
  EXPECT_EQ(spooled.messages, held.messages);
  EXPECT_EQ(Summarize(spooled), Summarize(held));
}

}  // namespace
}  // namespace storemove::store
