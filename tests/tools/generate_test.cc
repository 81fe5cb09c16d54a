// The store generator (store/generate.h): realistic shape, duplicates and links, determinism.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "tests/support/error_code.h"
#include "store/generate.h"
#include "tests/support/store_checks.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {
namespace {

using storemove::testing::ReadMessage;
using storemove::testing::TempDir;
namespace fs = std::filesystem;

constexpr int64_t kGeneratedPresent = 1748736000;  // 2025-06-01T00:00:00Z, the generator's "now"
constexpr int64_t kYear = 365 * 86400;

using storemove::testing::CodeOf;

// Every message of the store, in mailbox and UID order.
struct Stored {
  FolderInfo folder;
  MessageMeta meta;
};
std::vector<Stored> AllMessages(Store& store) {
  std::vector<Stored> out;
  store.ForEachFolder([&](const FolderInfo& info) {
    for (const MessageMeta& m : store.OpenFolder(info.user, info.folder)->Snapshot().messages) {
      out.push_back({info, m});
    }
  });
  return out;
}

TEST(Generate, ShapeOfTheStoreIsRealistic) {
  TempDir dir;
  auto store = Store::Init(dir / "s", {"primary"});
  GenerateOptions options;
  options.users = 200;
  options.messages_per_user = 50;
  options.dup_rate = 0.1;
  options.seed = 5;
  const GenerateReport report = Generate(*store, options);
  EXPECT_EQ(report.users, 200u);
  EXPECT_EQ(report.messages, 10000u);

  // Users: spread over letters and digits, some hosted-domain ids.
  std::set<char> initials;
  size_t digit_initial = 0, hosted = 0, users = 0;
  store->ForEachUser([&](const UserInfo& u) {
    ++users;
    initials.insert(u.user[0]);
    if (u.user[0] >= '0' && u.user[0] <= '9') ++digit_initial;
    if (u.user.find('@') != std::string::npos) ++hosted;
    uint64_t bytes = 0;
    for (const FolderInfo& f : store->ListFolders(u.user)) bytes += f.bytes;
    EXPECT_EQ(u.quota_used, bytes) << u.user;
  });
  EXPECT_EQ(users, 200u);
  EXPECT_GE(initials.size(), 15u);
  EXPECT_GT(digit_initial, 0u);
  EXPECT_GT(hosted, 10u);
  EXPECT_LT(hosted, 60u);

  // Folders and the share of messages in each kind.
  std::map<std::string, uint64_t> by_kind;
  uint64_t folders = 0, total = 0;
  size_t deepest = 0;
  store->ForEachFolder([&](const FolderInfo& f) {
    ++folders;
    total += f.count;
    std::string top = f.folder.substr(0, f.folder.find('/'));
    by_kind[top == "INBOX" || top == "Sent" || top == "Trash" ? top : "other"] += f.count;
    deepest = std::max<size_t>(deepest, std::count(f.folder.begin(), f.folder.end(), '/'));
  });
  EXPECT_EQ(folders, report.folders);
  EXPECT_EQ(total, 10000u);
  EXPECT_NEAR(double(by_kind["INBOX"]) / total, 0.6, 0.1);
  EXPECT_NEAR(double(by_kind["Sent"]) / total, 0.15, 0.05);
  EXPECT_NEAR(double(by_kind["Trash"]) / total, 0.05, 0.03);
  EXPECT_NEAR(double(by_kind["other"]) / total, 0.2, 0.07);
  EXPECT_GE(deepest, 2u) << "nested folders like Projects/2024/Q3";

  // Flags, user flags and dates.
  std::vector<Stored> all = AllMessages(*store);
  ASSERT_EQ(all.size(), 10000u);
  size_t seen = 0, answered = 0, flagged = 0, deleted = 0, draft = 0, user_flagged = 0, with_sent_date = 0;
  int64_t oldest = INT64_MAX, newest = 0;
  for (const Stored& s : all) {
    const MessageMeta& m = s.meta;
    seen += (m.flags & kSeen) != 0;
    answered += (m.flags & kAnswered) != 0;
    flagged += (m.flags & kFlagged) != 0;
    deleted += (m.flags & kDeleted) != 0;
    draft += (m.flags & kDraft) != 0;
    if (m.user_flags != 0) {
      ++user_flagged;
      EXPECT_LT(m.user_flags, uint64_t{1} << s.folder.user_flag_names.size()) << s.folder.Mailbox();
    }
    with_sent_date += m.sent_date != 0;
    oldest = std::min(oldest, m.internal_date);
    newest = std::max(newest, m.internal_date);
    EXPECT_GT(m.header_size, 0u);
    EXPECT_LT(m.header_size, m.size);
    EXPECT_GE(m.save_time, m.internal_date);
  }
  EXPECT_GT(seen, all.size() * 7 / 10);
  EXPECT_LT(seen, all.size());
  EXPECT_GT(answered, 0u);
  EXPECT_GT(flagged, 0u);
  EXPECT_GT(deleted, 0u);
  EXPECT_GT(user_flagged, 0u);
  EXPECT_EQ(with_sent_date, all.size()) << "synthesized messages carry a Date: header";
  EXPECT_LE(newest, kGeneratedPresent + 3600);
  EXPECT_LT(oldest, newest - 5 * kYear) << "dates spread over years";

  // Synthesized bytes look like mail.
  auto inbox = store->OpenFolder(all.front().folder.user, all.front().folder.folder);
  const std::string bytes = ReadMessage(*inbox, all.front().meta.uid);
  for (const char* header : {"\r\nFrom: ", "\r\nTo: ", "\r\nSubject: ", "\r\nMessage-ID: <", "Date: "}) {
    EXPECT_NE(bytes.find(header), std::string::npos) << header << " in\n" << bytes.substr(0, 600);
  }
}

TEST(Generate, ListCopiesShareBytesAndEverythingElseIsUnique) {
  TempDir dir;
  auto store = Store::Init(dir / "s", {"primary"});
  GenerateOptions options;
  options.users = 30;
  options.messages_per_user = 40;
  options.dup_rate = 0.25;
  const GenerateReport report = Generate(*store, options);

  std::map<Digest, std::set<std::string>> users_by_digest;
  uint64_t repeats = 0;
  for (const Stored& s : AllMessages(*store)) {
    auto& users = users_by_digest[s.meta.digest];
    if (!users.empty()) ++repeats;
    EXPECT_TRUE(users.insert(s.folder.user).second) << "a user gets each list post once: " << s.folder.Mailbox();
  }
  EXPECT_EQ(repeats, report.duplicates);
  EXPECT_NEAR(double(report.duplicates) / report.messages, 0.25, 0.08);
  EXPECT_EQ(report.links, 0u);
  size_t widely_shared = 0;
  for (const auto& [digest, users] : users_by_digest) widely_shared += users.size() >= 5;
  EXPECT_GT(widely_shared, 0u);

  TempDir other;
  auto unique_store = Store::Init(other / "s", {"primary"});
  options.dup_rate = 0;
  const GenerateReport unique = Generate(*unique_store, options);
  EXPECT_EQ(unique.duplicates, 0u);
  std::set<Digest> digests;
  for (const Stored& s : AllMessages(*unique_store)) EXPECT_TRUE(digests.insert(s.meta.digest).second);
  EXPECT_EQ(digests.size(), 1200u);
}

TEST(Generate, SingleInstanceLinksOnlyWithinAPartition) {
  TempDir dir;
  auto store = Store::Init(dir / "s", {"a", "b"});
  GenerateOptions options;
  options.users = 24;
  options.messages_per_user = 30;
  options.dup_rate = 0.3;
  options.single_instance = true;
  const GenerateReport report = Generate(*store, options);
  EXPECT_GT(report.links, 0u);
  EXPECT_LE(report.links, report.duplicates);

  std::map<ino_t, std::set<std::string>> partitions_of_inode;
  uint64_t linked_paths = 0;
  for (const char* partition : {"a", "b"}) {
    for (const auto& entry : fs::recursive_directory_iterator(store->PartitionPath(partition))) {
      if (!entry.is_regular_file() || entry.path().extension() != ".msg") continue;
      struct stat st;
      ASSERT_EQ(::stat(entry.path().c_str(), &st), 0);
      if (st.st_nlink > 1) {
        partitions_of_inode[st.st_ino].insert(partition);
        ++linked_paths;
      }
    }
  }
  EXPECT_FALSE(partitions_of_inode.empty());
  for (const auto& [inode, partitions] : partitions_of_inode) EXPECT_EQ(partitions.size(), 1u) << inode;
  // Each linked inode has one original plus its links.
  EXPECT_EQ(linked_paths, report.links + partitions_of_inode.size());

  // Linked copies keep their own flags and dates but share size and digest.
  for (const Stored& s : AllMessages(*store)) {
    auto folder = store->OpenFolder(s.folder.user, s.folder.folder);
    EXPECT_EQ(DigestOf(ReadMessage(*folder, s.meta.uid)), s.meta.digest) << s.folder.Mailbox() << " " << s.meta.uid;
  }
}

// A fresh store is the record of the ids a run made (looked up, not held): a name made twice
// (2% of users are role accounts such as postmaster) gets a digit, so every user is a new one,
// and the same seed makes the same ids.
TEST(Generate, EveryUserOfAFreshStoreIsANewIdAndTheSeedFixesThem) {
  TempDir dir;
  std::vector<std::vector<std::string>> ids;
  for (const char* name : {"s1", "s2"}) {
    auto store = Store::Init(dir / name, {"a"});
    GenerateOptions options;
    options.users = 3000;
    options.messages_per_user = 1;
    EXPECT_EQ(Generate(*store, options).users, 3000u);
    ids.emplace_back();
    store->ForEachUser([&](const UserInfo& u) { ids.back().push_back(u.user); });
    EXPECT_EQ(ids.back().size(), 3000u) << "an id made twice";
  }
  EXPECT_EQ(ids[0], ids[1]);
}

TEST(Generate, ExistingUsersKeepTheirPartitionAndItsLinks) {
  TempDir dir;
  auto store = Store::Init(dir / "s", {"a", "b"});
  GenerateOptions options;
  options.users = 10;
  options.messages_per_user = 20;
  options.partitions = {"a"};
  Generate(*store, options);
  // The same seed names the same first ten users, which exist in "a" already; ten more go to "b".
  options.users = 20;
  options.partitions = {"b"};
  options.dup_rate = 0.4;
  options.single_instance = true;
  const GenerateReport report = Generate(*store, options);
  EXPECT_GT(report.links, 0u);
  std::map<std::string, uint64_t> users_per_partition;
  store->ForEachUser([&](const UserInfo& u) { ++users_per_partition[u.partition]; });
  EXPECT_EQ(users_per_partition["a"], 10u);
  EXPECT_EQ(users_per_partition["b"], 10u);
  std::map<ino_t, std::set<std::string>> partitions_of_inode;
  for (const char* partition : {"a", "b"}) {
    for (const auto& entry : fs::recursive_directory_iterator(store->PartitionPath(partition))) {
      struct stat st;
      if (entry.is_regular_file() && ::stat(entry.path().c_str(), &st) == 0 && st.st_nlink > 1) {
        partitions_of_inode[st.st_ino].insert(partition);
      }
    }
  }
  for (const auto& [inode, partitions] : partitions_of_inode) EXPECT_EQ(partitions.size(), 1u) << inode;
}

TEST(Generate, BigFoldersCommitInSeveralBatchesWithDenseUids) {
  TempDir dir;
  auto store = Store::Init(dir / "s", {"primary"});
  GenerateOptions options;
  options.users = 1;
  options.messages_per_user = 3000;
  options.seed = 9;
  Generate(*store, options);
  uint64_t total = 0;
  store->ForEachFolder([&](const FolderInfo& f) {
    FolderSnapshot snap = store->OpenFolder(f.user, f.folder)->Snapshot();
    for (size_t i = 0; i < snap.messages.size(); ++i) {
      EXPECT_EQ(snap.messages[i].uid, i + 1) << f.Mailbox();
      if (i > 0) {
        EXPECT_GE(snap.messages[i].internal_date, snap.messages[i - 1].internal_date) << "UIDs follow arrival";
      }
    }
    total += snap.messages.size();
  });
  EXPECT_EQ(total, 3000u);
}

TEST(Generate, RejectsBadOptions) {
  TempDir dir;
  auto store = Store::Init(dir / "s", {"primary"});
  GenerateOptions options;
  options.dup_rate = -0.1;
  EXPECT_EQ(CodeOf([&] { Generate(*store, options); }), Errc::kInvalidArgument);
  options.dup_rate = 1.01;
  EXPECT_EQ(CodeOf([&] { Generate(*store, options); }), Errc::kInvalidArgument);
  options.dup_rate = 0;
  options.partitions = {"nope"};
  EXPECT_EQ(CodeOf([&] { Generate(*store, options); }), Errc::kNotFound);
  options.partitions = {};
  options.corpus_dir = dir / "absent";
  EXPECT_EQ(CodeOf([&] { Generate(*store, options); }), Errc::kNotFound);
  bool any_user = false;
  store->ForEachUser([&](const UserInfo&) { any_user = true; });
  EXPECT_FALSE(any_user) << "bad options are rejected before anything is written";
}

// A corpus of three files in two sources, one with CRLF line ends.
class FakeCorpus : public ::testing::Test {
 protected:
  void SetUp() override {
    MakeDirs(dir_ / "corpus/src-b/sub");
    MakeDirs(dir_ / "corpus/src-a");
    MakeDirs(dir_ / "corpus/no-manifest");
    Put("src-a/one.eml", "Subject: one\n\nfirst\n");
    Put("src-b/sub/two.eml", "Subject: two\r\n\r\nsecond\r\n");
    Put("src-b/three.eml", "Subject: three\n\nthird, a bit longer\n");
    Put("src-b/empty.eml", "");
    WriteFileAtomic(dir_ / "corpus/src-a/MANIFEST.tsv",
                    "path\tbytes\tsha256\tflags\none.eml\t20\t" + std::string(64, 'a') + "\t{}\n");
    WriteFileAtomic(dir_ / "corpus/src-b/MANIFEST.tsv",
                    "path\tbytes\tsha256\tflags\nsub/two.eml\t24\t" + std::string(64, 'b') + "\t{}\nthree.eml\t36\t" +
                        std::string(64, 'c') + "\t{}\nempty.eml\t0\t" + std::string(64, 'd') + "\t{}\n");
  }
  void Put(const std::string& rel, const std::string& bytes) {
    WriteFileAtomic(dir_ / ("corpus/" + rel), bytes);
    files_.insert(bytes);
  }
  TempDir dir_;
  std::set<std::string> files_;
};

TEST_F(FakeCorpus, ManifestsAreReadInSourceOrder) {
  std::vector<CorpusEntry> entries = ReadCorpusManifests(dir_ / "corpus");
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0].path, dir_ / "corpus/src-a/one.eml");
  EXPECT_EQ(entries[0].bytes, 20u);
  EXPECT_EQ(entries[0].sha256, std::string(64, 'a'));
  EXPECT_EQ(entries[1].path, dir_ / "corpus/src-b/sub/two.eml");
  EXPECT_EQ(entries[3].bytes, 0u);

  WriteFileAtomic(dir_ / "corpus/src-a/MANIFEST.tsv", "path\tbytes\tsha256\tflags\none.eml\ttwenty\tx\t{}\n");
  EXPECT_EQ(CodeOf([&] { ReadCorpusManifests(dir_ / "corpus"); }), Errc::kCorrupt);
  EXPECT_EQ(CodeOf([&] { ReadCorpusManifests(dir_ / "corpus/no-manifest"); }), Errc::kNotFound);
}

TEST_F(FakeCorpus, MessagesAreCorpusFilesBelowAReceivedHeader) {
  auto store = Store::Init(dir_ / "s", {"primary"});
  GenerateOptions options;
  options.users = 5;
  options.messages_per_user = 12;
  options.corpus_dir = dir_ / "corpus";
  options.dup_rate = 0.2;
  Generate(*store, options);
  size_t checked = 0;
  std::set<std::string> used;
  for (const Stored& s : AllMessages(*store)) {
    const std::string bytes = ReadMessage(*store->OpenFolder(s.folder.user, s.folder.folder), s.meta.uid);
    ASSERT_TRUE(bytes.starts_with("Received: ")) << bytes;
    // The header ends at the first line that is not a continuation line.
    size_t end = bytes.find('\n');
    while (end != std::string::npos && end + 1 < bytes.size() && bytes[end + 1] == '\t') {
      end = bytes.find('\n', end + 1);
    }
    ASSERT_NE(end, std::string::npos);
    const std::string header = bytes.substr(0, end + 1), rest = bytes.substr(end + 1);
    EXPECT_EQ(files_.count(rest), 1u) << rest;
    EXPECT_NE(rest, "") << "empty corpus files are never used";
    const bool crlf_file = rest.find("\r\n") != std::string::npos;
    EXPECT_EQ(header.find("\r\n") != std::string::npos, crlf_file) << "the header follows the file's line ends";
    used.insert(rest);
    ++checked;
  }
  EXPECT_EQ(checked, 60u);
  EXPECT_EQ(used.size(), 3u);
}

}  // namespace
}  // namespace storemove::store
