// interop::FolderFiller, the piece every bulk import fills folders with: UIDs in a new folder,
// the multiset skip of messages an existing folder holds, batches, and the per-message hook where
// single instance on arrival plugs in. On a real store.
#include <filesystem>
#include <memory>

#include <gtest/gtest.h>

#include "interop/folder_filler.h"
#include "store/store.h"
#include "tests/support/store_checks.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"

namespace storemove::interop {
namespace {

using store::Folder;
using store::MessageMeta;
using store::StagedMessage;
using store::Store;
using storemove::testing::ReadMessage;
using storemove::testing::TempDir;
namespace fs = std::filesystem;

std::string Message(int n) { return "Subject: m" + std::to_string(n) + "\n\nbody " + std::to_string(n) + "\n"; }

MessageMeta Meta(uint32_t uid = 0) {
  MessageMeta meta;
  meta.uid = uid;
  meta.internal_date = 1700000000;
  return meta;
}

std::vector<std::pair<uint32_t, std::string>> Contents(Folder& folder) {
  std::vector<std::pair<uint32_t, std::string>> out;
  for (const MessageMeta& m : folder.Snapshot().messages) out.emplace_back(m.uid, ReadMessage(folder, m.uid));
  return out;
}

// Files of the folder directory that are no index file (store.idx, store.exp) and no committed message.
size_t StrayFiles(const Folder& folder) {
  size_t n = 0;
  for (const auto& entry : fs::recursive_directory_iterator(folder.path())) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name != "store.idx" && name != "store.exp" && !name.ends_with(".msg")) {
      ADD_FAILURE() << "stray " << entry.path();
      ++n;
    }
  }
  return n;
}

class Filler : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = Store::Init(dir_ / "store", {"primary"});
    store_->CreateUser("joe");
  }
  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(Filler, ANewFolderTakesTheGivenUidsAndThenTheNextOnes) {
  Store::UserWriteLock lock = store_->LockUserForWriting("joe");
  auto folder = store_->CreateUnpublishedFolder("joe", "New", 4242);
  {
    FolderFiller filler(*folder, /*created=*/true, /*skip_present=*/true);
    EXPECT_TRUE(filler.Add(Message(1), Meta(10)));
    EXPECT_TRUE(filler.Add(Message(2), Meta(20)));
    EXPECT_TRUE(filler.Add(Message(3), Meta()));  // the next after the last given
    EXPECT_TRUE(filler.Add(Message(3), Meta()));  // no skip in a new folder
    filler.Finish();
    EXPECT_EQ(filler.added(), 4u);
    EXPECT_EQ(filler.skipped(), 0u);
  }
  store_->PublishFolder(*folder);
  EXPECT_EQ(Contents(*folder), (std::vector<std::pair<uint32_t, std::string>>{
                                   {10, Message(1)}, {20, Message(2)}, {21, Message(3)}, {22, Message(3)}}));
  EXPECT_EQ(store_->FindFolder("joe", "New")->uidvalidity, 4242u);
}

TEST_F(Filler, AnExistingFolderSkipsWhatItHoldsAsManyTimesAsItHoldsIt) {
  auto folder = store_->CreateFolder("joe", "Box");
  {
    FolderFiller filler(*folder, false, true);
    filler.Add(Message(1), Meta());
    filler.Add(Message(1), Meta());
    filler.Add(Message(2), Meta());
    filler.Finish();
  }
  FolderFiller filler(*folder, false, true);
  EXPECT_FALSE(filler.Add(Message(1), Meta(99)));  // the UID of a request is ignored here
  EXPECT_FALSE(filler.Add(Message(1), Meta()));
  EXPECT_TRUE(filler.Add(Message(1), Meta()));  // a third copy is new
  EXPECT_FALSE(filler.Add(Message(2), Meta()));
  EXPECT_TRUE(filler.Add(Message(3), Meta()));
  filler.Finish();
  EXPECT_EQ(filler.skipped(), 3u);
  EXPECT_EQ(Contents(*folder), (std::vector<std::pair<uint32_t, std::string>>{
                                   {1, Message(1)}, {2, Message(1)}, {3, Message(2)}, {4, Message(1)}, {5, Message(3)}}));

  FolderFiller all(*folder, false, /*skip_present=*/false);
  EXPECT_TRUE(all.Add(Message(3), Meta()));
  all.Finish();
  EXPECT_EQ(folder->Snapshot().messages.size(), 6u);
}

// A folder holding more messages than FolderFiller keeps in memory has the table of them in a
// temporary file (helper-133: ~105 bytes a message were held). Both ways skip the same messages,
// as many times as the folder holds them, whole and staged, and none that was expunged since.
TEST_F(Filler, AFolderTooLargeToHoldInMemorySkipsTheSameMessagesFromATemporaryTable) {
  std::vector<std::vector<std::pair<uint32_t, std::string>>> contents;
  std::vector<uint64_t> skipped;
  for (const size_t in_memory : {FolderFiller::kPresentInMemory, size_t{0}, size_t{7}}) {
    auto folder = store_->CreateFolder("joe", "Box" + std::to_string(in_memory));
    {
      FolderFiller filler(*folder, false, true);
      for (int i = 0; i < 3000; ++i) filler.Add(Message(i % 1700), Meta());  // 0..1299 twice
      filler.Finish();
    }
    folder->Expunge({1501, 1502});  // Message(1500) and Message(1501), their only copies
    FolderFiller filler(*folder, false, true, false, in_memory);
    for (int i = 0; i < 2500; ++i) {
      if (i % 2 == 0) {
        filler.Add(Message(i), Meta());
      } else {
        uint32_t uid = 0;
        std::unique_ptr<store::MessageWriter> writer = filler.NewMessage(&uid);
        writer->Write(Message(i));
        filler.AddStaged(writer->Finish(Meta()));
      }
    }
    filler.Finish();
    skipped.push_back(filler.skipped());
    contents.push_back(Contents(*folder));
  }
  EXPECT_EQ(skipped[0], 1700u - 2);  // each of 0..1699 once, but 1500 and 1501 no more
  EXPECT_EQ(skipped[1], skipped[0]);
  EXPECT_EQ(skipped[2], skipped[0]);
  EXPECT_EQ(contents[1], contents[0]);
  EXPECT_EQ(contents[2], contents[0]);
  EXPECT_EQ(contents[0].size(), 3000u - 2 + 2500 - skipped[0]);
}

// Many copies of one message share one slot of the table, each copy a node of its list: one
// copy per slot made each insert and each take read past all the copies before it (helper-139:
// 106 s for 32,768 copies). Copies expunged since are passed over, at the head and inside.
TEST_F(Filler, ManyCopiesOfOneMessageAreSkippedAsManyTimesAsTheFolderHoldsThem) {
  for (const size_t in_memory : {FolderFiller::kPresentInMemory, size_t{0}}) {
    auto folder = store_->CreateFolder("joe", "Same" + std::to_string(in_memory));
    {
      FolderFiller filler(*folder, false, true);
      for (int i = 0; i < 300; ++i) filler.Add(Message(i % 100 == 99 ? i : 7), Meta());
      filler.Finish();
    }
    folder->Expunge({1, 150, 299});  // copies of Message(7): the first, one inside, the last
    FolderFiller filler(*folder, false, true, false, in_memory);
    for (int i = 0; i < 300; ++i) filler.Add(Message(7), Meta());
    filler.Finish();
    EXPECT_EQ(filler.skipped(), 297u - 3) << in_memory;  // 297 copies held, 3 of them expunged
    EXPECT_EQ(filler.added(), 6u) << in_memory;
    EXPECT_EQ(folder->Snapshot().messages.size(), 297u + 6) << in_memory;
  }
}

TEST_F(Filler, TheHookSeesEachStagedMessageAndBatchesAreReported) {
  auto folder = store_->CreateFolder("joe", "Big");
  {
    FolderFiller before(*folder, false, true);
    before.Add(Message(-1), Meta());
    before.Finish();
  }
  FolderFiller filler(*folder, false, true);
  std::vector<std::string> staged;
  std::vector<uint64_t> batches;
  filler.before_commit = [&](Folder& f, StagedMessage& s) {
    EXPECT_EQ(&f, folder.get());
    staged.push_back(s.temp_name);
    EXPECT_EQ(folder->Snapshot().messages.size(), 1 + batches.size() * 256) << "staged, not yet committed";
  };
  filler.after_batch = [&](uint64_t added) { batches.push_back(added); };
  for (int i = 0; i < 600; ++i) filler.Add(Message(i), Meta());
  filler.Add(Message(-1), Meta());  // present: skipped before staging, so the hook never sees it
  filler.Finish();
  EXPECT_EQ(staged.size(), 600u);
  EXPECT_EQ(batches, (std::vector<uint64_t>{256, 512}));  // the last, partial batch is Finish()'s
  EXPECT_EQ(folder->Snapshot().messages.size(), 601u);
}

TEST_F(Filler, AFailingHookLeavesNothingVisibleAndNoFileBehind) {
  auto folder = store_->CreateFolder("joe", "Box");
  {
    FolderFiller filler(*folder, false, true);
    int calls = 0;
    filler.before_commit = [&](Folder&, StagedMessage&) {
      if (++calls == 3) Throw(Errc::kIo, "repository unusable");
    };
    filler.Add(Message(1), Meta());
    filler.Add(Message(2), Meta());
    EXPECT_THROW(filler.Add(Message(3), Meta()), Error);
  }  // destroyed without Finish(): the staged messages are discarded
  EXPECT_TRUE(folder->Snapshot().messages.empty());
  EXPECT_EQ(StrayFiles(*folder), 0u);
}

}  // namespace
}  // namespace storemove::interop
