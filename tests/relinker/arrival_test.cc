// Single instance on arrival (relinker/arrival.h): identical content linked through the
// partition's repository as it is staged, bytes proven equal first; the setting off, minsize, a
// planted entry with other bytes, a full entry, a folder built unpublished, threads racing.
#include <fcntl.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "relinker/arrival.h"
#include "relinker/relinker.h"
#include "store/settings.h"
#include "tests/support/temp_dir.h"
#include "util/digest.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::relinker {
namespace {

using storemove::testing::TempDir;
namespace fs = std::filesystem;

std::string Message(const std::string& tag, size_t body_bytes = 3000) {
  std::string m = "From: list@example.net\nTo: all@example.com\nSubject: " + tag + "\n\n";
  while (m.size() < body_bytes) m += "the same line of " + tag + " for every reader\n";
  return m;
}

struct OnDisk {
  std::string bytes;
  ino_t ino = 0;
  nlink_t nlink = 0;
};

OnDisk Stat(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return {ReadFile(path), st.st_ino, st.st_nlink};
}

// No staged file is left behind in any folder of the partition.
size_t TempFiles(const std::string& partition_dir) {
  size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(partition_dir))
    n += e.path().filename().string().starts_with("tmp.");
  return n;
}

class Arrival : public ::testing::Test {
 protected:
  void SetUp() override { store_ = store::Store::Init(root_, {"primary"}); }

  store::Settings On(uint64_t minsize_kb = 0) {
    store::Settings s;
    s.relinker_enabled = true;
    s.relinker_minsize_kb = minsize_kb;
    return s;
  }

  // Stages `bytes` in user/<user>/INBOX, hands it to the linker, commits; the message's path.
  std::string Deliver(ArrivalLinker& linker, const std::string& user, const std::string& bytes) {
    std::unique_ptr<store::Folder> folder = store_->CreateFolder(user, "INBOX");
    auto writer = folder->NewMessage();
    writer->Write(bytes);
    std::vector<store::StagedMessage> batch;
    batch.push_back(writer->Finish({}));
    batch.back() = linker.Arrived(*folder, batch.back());
    uint32_t uid = folder->Commit(batch).at(0);
    return folder->MessagePath(uid);
  }

  std::string Partition() { return store_->PartitionPath("primary"); }
  std::string EntryPath(const std::string& bytes) { return Repository(Partition()).EntryPath(DigestOf(bytes)); }

  TempDir dir_;
  std::string root_ = dir_ / "store";
  std::unique_ptr<store::Store> store_;
};

TEST_F(Arrival, TheSameMessageToThreeUsersIsOneInodeWithFourLinks) {
  ArrivalLinker linker(*store_, On());
  const std::string m = Message("weekly news");
  std::vector<std::string> paths;
  for (const char* user : {"alice", "bob", "carol"}) paths.push_back(Deliver(linker, user, m));
  const OnDisk entry = Stat(EntryPath(m));
  EXPECT_EQ(entry.bytes, m);
  EXPECT_EQ(entry.nlink, 4u);  // three messages and the repository
  for (const std::string& p : paths) {
    OnDisk d = Stat(p);
    EXPECT_EQ(d.bytes, m) << p;
    EXPECT_EQ(d.ino, entry.ino) << p;
  }
  ArrivalCounters c = linker.counters();
  EXPECT_EQ(c.entries_added, 1u);
  EXPECT_EQ(c.linked, 2u);
  EXPECT_EQ(c.bytes_saved, 2 * m.size());
  EXPECT_EQ(c.collisions, 0u);
  EXPECT_EQ(TempFiles(Partition()), 0u);
  // The store.idx records are those of the bytes, as without linking.
  auto snap = store_->OpenFolder("bob", "INBOX")->Snapshot();
  ASSERT_EQ(snap.messages.size(), 1u);
  EXPECT_EQ(snap.messages[0].digest, DigestOf(m));
  EXPECT_EQ(snap.messages[0].size, m.size());
}

TEST_F(Arrival, SettingOffLinksNothing) {
  ArrivalLinker from_file(*store_);  // no store.conf: off
  EXPECT_FALSE(from_file.enabled());
  ArrivalLinker off(*store_, store::Settings{});
  const std::string m = Message("news");
  std::set<ino_t> inodes;
  for (const char* user : {"alice", "bob", "carol"}) {
    OnDisk d = Stat(Deliver(off, user, m));
    EXPECT_EQ(d.bytes, m);
    EXPECT_EQ(d.nlink, 1u);
    inodes.insert(d.ino);
  }
  EXPECT_EQ(inodes.size(), 3u);
  EXPECT_TRUE(Repository(Partition()).Empty());
  EXPECT_EQ(off.counters().ToString(),
            "linked 0 (0 bytes saved), repository entries added 0, replaced 0, collisions 0, below minsize 0");
}

TEST_F(Arrival, TheSettingIsReadFromTheStore) {
  store::WriteSettings(root_, {{"local.store.relinker.enabled", "yes"}, {"local.store.relinker.minsize", "2"}});
  ArrivalLinker linker(*store_);
  EXPECT_TRUE(linker.enabled());
  Deliver(linker, "alice", Message("small", 1500));  // below 2 KB
  Deliver(linker, "alice", Message("big", 2048));    // exactly 2 KB: linked
  ArrivalCounters c = linker.counters();
  EXPECT_EQ(c.below_minsize, 1u);
  EXPECT_EQ(c.entries_added, 1u);
}

TEST_F(Arrival, MessagesBelowMinsizeAreLeftAlone) {
  ArrivalLinker linker(*store_, On(/*minsize_kb=*/4));
  const std::string small = Message("small", 4000), big = Message("big", 5000);
  ASSERT_LT(small.size(), 4096u);
  for (const char* user : {"alice", "bob"}) {
    EXPECT_EQ(Stat(Deliver(linker, user, small)).nlink, 1u);
    Deliver(linker, user, big);
  }
  EXPECT_FALSE(fs::exists(EntryPath(small)));
  EXPECT_EQ(Stat(EntryPath(big)).nlink, 3u);
  EXPECT_EQ(linker.counters().below_minsize, 2u);
  EXPECT_EQ(linker.counters().linked, 1u);
}

TEST_F(Arrival, AnEntryWithTheDigestButOtherBytesIsNeverLinked) {
  // XXH3-128 collisions cannot be produced on demand, so the repository is given one: a file
  // under the message's digest name holding other bytes of the same size.
  const std::string m = Message("real");
  std::string other = m;
  other[other.size() / 2] ^= 1;
  const std::string entry = EntryPath(m);
  MakeDirs(entry.substr(0, entry.rfind('/')), 0700);
  WriteFileAtomic(entry, other, 0600);
  const OnDisk planted = Stat(entry);

  ArrivalLinker linker(*store_, On());
  const std::string a = Deliver(linker, "alice", m), b = Deliver(linker, "bob", m);
  for (const std::string& p : {a, b}) {
    OnDisk d = Stat(p);
    EXPECT_EQ(d.bytes, m) << p;
    EXPECT_NE(d.ino, planted.ino) << p;
    EXPECT_EQ(d.nlink, 1u) << p;  // a copy each
  }
  EXPECT_EQ(linker.counters().collisions, 2u);
  EXPECT_EQ(linker.counters().linked, 0u);
  EXPECT_EQ(Stat(entry).bytes, other);  // the planted file is left as it was

  // Other size under the name: a collision too, found without reading anything.
  const std::string m2 = Message("second");
  const std::string entry2 = EntryPath(m2);
  MakeDirs(entry2.substr(0, entry2.rfind('/')), 0700);
  WriteFileAtomic(entry2, "short", 0600);
  EXPECT_EQ(Stat(Deliver(linker, "carol", m2)).bytes, m2);
  EXPECT_EQ(linker.counters().collisions, 3u);
  EXPECT_EQ(TempFiles(Partition()), 0u);
}

// A FIFO planted as an entry is damage, named at once: opening it must not wait for a writer
// (relink, restore and deliver hung on it). The 10 s bound only turns a hang into a failure.
TEST_F(Arrival, AFifoPlantedAsAnEntryIsRefusedAtOnce) {
  const std::string m = Message("fifo");
  const std::string entry = EntryPath(m);
  MakeDirs(entry.substr(0, entry.rfind('/')), 0700);
  ASSERT_EQ(::mkfifo(entry.c_str(), 0600), 0);
  auto open = std::async(std::launch::async, [&] {
    try {
      Repository(Partition()).OpenEntry(DigestOf(m), m.size());
      return std::string("accepted");
    } catch (const Error& e) {
      return std::to_string(int(e.code())) + " " + e.what();
    }
  });
  if (open.wait_for(std::chrono::seconds(10)) == std::future_status::timeout) {
    ADD_FAILURE() << "opening a FIFO entry waits for a writer";
    UniqueFd writer(::open(entry.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));  // lets it go
  }
  const std::string got = open.get();
  EXPECT_EQ(got.rfind(std::to_string(int(Errc::kCorrupt)) + " ", 0), 0u) << got;
  EXPECT_NE(got.find("is not a regular file"), std::string::npos) << got;
}

TEST_F(Arrival, AFullEntryIsReplacedByTheNewCopy) {
  RepositoryOptions cap;
  cap.max_links = 3;  // ext4's 65,000, made small
  ArrivalLinker linker(*store_, On(), cap);
  const std::string m = Message("popular");
  std::vector<std::string> paths;
  for (int i = 0; i < 6; ++i) paths.push_back(Deliver(linker, "user" + std::to_string(i), m));
  std::map<ino_t, int> per_inode;
  for (const std::string& p : paths) {
    OnDisk d = Stat(p);
    EXPECT_EQ(d.bytes, m);
    ++per_inode[d.ino];
  }
  // user0 entry (2 links), user1 linked (3: full), user2 becomes the entry, user3 linked (full),
  // user4 becomes the entry, user5 linked.
  EXPECT_EQ(per_inode.size(), 3u);
  EXPECT_EQ(linker.counters().entries_added, 1u);
  EXPECT_EQ(linker.counters().entries_replaced, 2u);
  EXPECT_EQ(linker.counters().linked, 3u);
  EXPECT_EQ(Stat(EntryPath(m)).ino, Stat(paths[5]).ino);
}

TEST_F(Arrival, AnUnpublishedFolderWithKnownUidsLinksToo) {
  // import and restore write a new folder's messages straight to <bucket>/<uid>.msg.
  ArrivalLinker linker(*store_, On());
  const std::string m = Message("imported");
  const std::string first = Deliver(linker, "alice", m);
  store_->CreateUser("bob", {}, /*with_inbox=*/false);
  store::Store::UserWriteLock lock = store_->LockUserForWriting("bob");
  std::unique_ptr<store::Folder> folder = store_->CreateUnpublishedFolder("bob", "INBOX", 7);
  std::vector<store::StagedMessage> batch;
  for (uint32_t uid = 1; uid <= 2; ++uid) {
    auto writer = folder->NewMessage(uid);
    writer->Write(m);
    store::MessageMeta meta;
    meta.uid = uid;
    batch.push_back(writer->Finish(meta));
    batch.back() = linker.Arrived(*folder, batch.back());
  }
  folder->Commit(batch);
  store_->PublishFolder(*folder);
  for (uint32_t uid = 1; uid <= 2; ++uid) {
    OnDisk d = Stat(folder->MessagePath(uid));
    EXPECT_EQ(d.bytes, m);
    EXPECT_EQ(d.ino, Stat(first).ino);
  }
  EXPECT_EQ(Stat(first).nlink, 4u);
  EXPECT_EQ(TempFiles(Partition()), 0u);
}

TEST_F(Arrival, ADiscardedLinkLeavesOnlyTheEntry) {
  ArrivalLinker linker(*store_, On());
  const std::string m = Message("deferred");
  const std::string first = Deliver(linker, "alice", m);
  std::unique_ptr<store::Folder> folder = store_->CreateFolder("bob", "INBOX");
  auto writer = folder->NewMessage();
  writer->Write(m);
  std::vector<store::StagedMessage> batch{writer->Finish({})};
  batch.back() = linker.Arrived(*folder, batch.back());
  EXPECT_EQ(Stat(first).nlink, 3u);
  folder->Discard(batch);  // deliver: the user went on hold
  EXPECT_EQ(Stat(first).nlink, 2u);
  EXPECT_EQ(TempFiles(Partition()), 0u);
  EXPECT_EQ(folder->Snapshot().messages.size(), 0u);
}

TEST_F(Arrival, ThreadsDeliveringTheSameContentShareOneInode) {
  ArrivalLinker linker(*store_, On());
  const std::string m = Message("to everyone", 20000);
  constexpr int kThreads = 4, kEach = 25;
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kEach; ++i) store_->CreateUser("u" + std::to_string(t) + "-" + std::to_string(i));
  std::vector<std::thread> threads;
  std::vector<std::vector<std::string>> paths(kThreads);
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) paths[t].push_back(Deliver(linker, "u" + std::to_string(t) + "-" + std::to_string(i), m));
    });
  for (std::thread& t : threads) t.join();
  const OnDisk entry = Stat(EntryPath(m));
  for (const auto& list : paths)
    for (const std::string& p : list) {
      OnDisk d = Stat(p);
      EXPECT_EQ(d.bytes, m);
      EXPECT_EQ(d.ino, entry.ino) << p;  // a lost race to add the entry retries the link
    }
  EXPECT_EQ(entry.nlink, nlink_t(kThreads * kEach + 1));
  EXPECT_EQ(linker.counters().entries_added + linker.counters().linked, uint64_t(kThreads * kEach));
}

TEST_F(Arrival, AFolderOfAnotherStoreIsRefused) {
  TempDir other_dir;
  auto other = store::Store::Init(other_dir / "store", {"primary"});
  ArrivalLinker linker(*store_, On());
  std::unique_ptr<store::Folder> folder = other->CreateFolder("alice", "INBOX");
  auto writer = folder->NewMessage();
  writer->Write(Message("x"));
  std::vector<store::StagedMessage> batch{writer->Finish({})};
  EXPECT_THROW(linker.Arrived(*folder, batch.back()), Error);
  folder->Discard(batch);
}

}  // namespace
}  // namespace storemove::relinker
