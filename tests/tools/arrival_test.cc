// `storemove config` and single instance on arrival through the real binary: the setting kept
// in the store, deliver and import linking identical content (bytes proven equal), the store
// consistent for `relink` and `verify` afterwards, and today's behaviour with the setting off.
#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "interop/mbox.h"
#include "relinker/relinker.h"
#include "store/settings.h"
#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"
#include "util/digest.h"
#include "util/fs.h"

namespace storemove::tools {
namespace {

using storemove::testing::CliResult;
using storemove::testing::IsOneErrorLine;
using storemove::testing::RunCli;
using storemove::testing::TempDir;
namespace fs = std::filesystem;

constexpr int kUsage = 64, kTempFail = 75;

std::string Message(const std::string& tag, size_t bytes = 3000) {
  std::string m = "From: list@example.net\nTo: all@example.com\nSubject: " + tag + "\nMessage-ID: <" + tag +
                  "@example.net>\n\n";
  while (m.size() < bytes) m += "a line of " + tag + " that every reader gets\n";
  return m;
}

struct FileState {
  ino_t ino = 0;
  nlink_t nlink = 0;
  std::string bytes;
};

class ArrivalCli : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(RunCli({"init", "--store", root_}).status, 0); }

  CliResult Config(std::vector<std::string> args) {
    args.insert(args.begin(), {"config", "--store", root_});
    return RunCli(args);
  }
  void Deliver(const std::string& user, const std::string& bytes) {
    CliResult r = RunCli({"deliver", "--store", root_, "--user", user, "--create"}, bytes);
    ASSERT_EQ(r.status, 0) << r.Describe();
  }
  // Every message of the user's INBOX, in UID order.
  std::vector<FileState> Inbox(const std::string& user) {
    auto store = store::Store::Open(root_);
    auto folder = store->OpenFolder(user, "INBOX");
    std::vector<FileState> out;
    for (const store::MessageMeta& m : folder->Snapshot().messages) {
      const std::string path = folder->MessagePath(m.uid);
      struct stat st;
      EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
      out.push_back({st.st_ino, st.st_nlink, ReadFile(path)});
      EXPECT_EQ(DigestOf(out.back().bytes), m.digest) << path;
    }
    return out;
  }
  std::string Partition() { return root_ + "/partition/primary"; }

  // relink finds nothing left to do, and backup | restore into a second store then verify
  // (which reads every message of both) finds the stores equal.
  void ExpectConsistent(uint64_t messages, uint64_t unique) {
    CliResult relink = RunCli({"relink", "--store", root_, "--json"});
    ASSERT_EQ(relink.status, 0) << relink.Describe();
    nlohmann::json j = nlohmann::json::parse(relink.out);
    EXPECT_EQ(j["linked"], 0) << relink.out;
    EXPECT_EQ(j["entries_added"], 0) << relink.out;
    EXPECT_EQ(j["collisions"], 0) << relink.out;
    EXPECT_EQ(j["before"]["messages"], messages) << relink.out;
    EXPECT_EQ(j["before"]["unique"], unique) << relink.out;
    EXPECT_EQ(j["before"]["space_used"], j["after"]["space_used"]) << relink.out;

    const std::string stream = dir_ / "all.sm", copy = dir_ / "copy";
    ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream}).status, 0);
    ASSERT_EQ(RunCli({"init", "--store", copy}).status, 0);
    CliResult restore = RunCli({"restore", "--store", copy, "-f", stream});
    ASSERT_EQ(restore.status, 0) << restore.Describe();
    CliResult verify = RunCli({"verify", "--store", root_, "--source", copy});
    EXPECT_EQ(verify.status, 0) << verify.Describe();
    fs::remove_all(copy);
  }

  TempDir dir_;
  std::string root_ = dir_ / "store";
};

TEST_F(ArrivalCli, ConfigShowsSetsAndRefuses) {
  CliResult all = Config({});
  ASSERT_EQ(all.status, 0) << all.Describe();
  EXPECT_EQ(all.out, "local.store.relinker.enabled=no\nlocal.store.relinker.minsize=0\n");

  CliResult set = Config({"local.store.relinker.enabled=1", "local.store.relinker.minsize=8"});
  ASSERT_EQ(set.status, 0) << set.Describe();
  EXPECT_EQ(set.out, "local.store.relinker.enabled=yes\nlocal.store.relinker.minsize=8\n");
  CliResult one = Config({"local.store.relinker.minsize"});
  ASSERT_EQ(one.status, 0) << one.Describe();
  EXPECT_EQ(one.out, "local.store.relinker.minsize=8\n");
  // Kept in the store: a new process (and the library) reads it.
  EXPECT_TRUE(store::ReadSettings(root_).relinker_enabled);
  const std::string file = ReadFile(root_ + "/config/store.conf");

  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"local.store.relinker.enable=yes"},
           {"relinker.enabled"},
           {"local.store.relinker.enabled=perhaps"},
           {"local.store.relinker.minsize=-1"},
           {"local.store.relinker.minsize=0", "local.store.relinker.enabled=2"}}) {
    CliResult r = Config(bad);
    EXPECT_EQ(r.status, kUsage) << bad[0] << "\n" << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_EQ(r.out, "");
  }
  EXPECT_NE(Config({"local.store.relinker.enable=yes"}).err.find("unknown setting 'local.store.relinker.enable'"),
            std::string::npos);
  EXPECT_EQ(ReadFile(root_ + "/config/store.conf"), file);  // nothing changed

  CliResult nostore = RunCli({"config", "--store", dir_ / "nowhere", "local.store.relinker.enabled=yes"});
  EXPECT_NE(nostore.status, 0);
  EXPECT_TRUE(IsOneErrorLine(nostore)) << nostore.Describe();
  EXPECT_FALSE(fs::exists(dir_ / "nowhere"));
}

TEST_F(ArrivalCli, DeliverOfTheSameMessageToThreeUsersIsOneInodeWithFourLinks) {
  ASSERT_EQ(Config({"local.store.relinker.enabled=yes"}).status, 0);
  const std::string m = Message("newsletter"), other = Message("personal");
  for (const char* user : {"alice", "bob", "carol"}) Deliver(user, m);
  Deliver("bob", other);
  std::set<ino_t> inodes;
  for (const char* user : {"alice", "bob", "carol"}) {
    std::vector<FileState> inbox = Inbox(user);
    ASSERT_GE(inbox.size(), 1u);
    EXPECT_EQ(inbox[0].bytes, m);
    EXPECT_EQ(inbox[0].nlink, 4u) << user;  // three users and the repository
    inodes.insert(inbox[0].ino);
  }
  EXPECT_EQ(inodes.size(), 1u);
  const std::string entry = relinker::Repository(Partition()).EntryPath(DigestOf(m));
  struct stat st;
  ASSERT_EQ(::stat(entry.c_str(), &st), 0);
  EXPECT_EQ(st.st_ino, *inodes.begin());
  EXPECT_EQ(Inbox("bob").at(1).bytes, other);
  EXPECT_EQ(Inbox("bob").at(1).nlink, 2u);  // its own entry, waiting for a second copy

  CliResult verbose = RunCli({"deliver", "--store", root_, "--user", "dave", "--create", "-v"}, m);
  ASSERT_EQ(verbose.status, 0) << verbose.Describe();
  EXPECT_NE(verbose.out.find("(a link to identical content)"), std::string::npos) << verbose.out;
  ExpectConsistent(/*messages=*/5, /*unique=*/2);
}

TEST_F(ArrivalCli, SettingOffDeliversCopiesAsBefore) {
  const std::string m = Message("newsletter");
  for (const char* user : {"alice", "bob", "carol"}) Deliver(user, m);
  ASSERT_EQ(Config({"local.store.relinker.enabled=no"}).status, 0);
  Deliver("dave", m);
  std::set<ino_t> inodes;
  for (const char* user : {"alice", "bob", "carol", "dave"}) {
    FileState f = Inbox(user).at(0);
    EXPECT_EQ(f.bytes, m);
    EXPECT_EQ(f.nlink, 1u) << user;
    inodes.insert(f.ino);
  }
  EXPECT_EQ(inodes.size(), 4u);
  // Only what init made: the flat repository's marker, no entry.
  for (const fs::directory_entry& e : fs::directory_iterator(Partition() + "/=digest"))
    EXPECT_EQ(e.path().filename(), "flat");
}

TEST_F(ArrivalCli, AnEntryOfTheDigestWithOtherBytesGetsACopyNotALink) {
  ASSERT_EQ(Config({"local.store.relinker.enabled=yes"}).status, 0);
  const std::string m = Message("target");
  std::string forged = m;
  forged[100] ^= 0x20;  // same size, same name in the repository, other bytes
  const std::string entry = relinker::Repository(Partition()).EntryPath(DigestOf(m));
  MakeDirs(entry.substr(0, entry.rfind('/')), 0700);
  WriteFileAtomic(entry, forged, 0600);
  Deliver("alice", m);
  Deliver("bob", m);
  for (const char* user : {"alice", "bob"}) {
    FileState f = Inbox(user).at(0);
    EXPECT_EQ(f.bytes, m) << user;
    EXPECT_EQ(f.nlink, 1u) << user;
  }
  EXPECT_EQ(ReadFile(entry), forged);
}

TEST_F(ArrivalCli, MinsizeIsRespected) {
  ASSERT_EQ(Config({"local.store.relinker.enabled=yes", "local.store.relinker.minsize=2"}).status, 0);
  const std::string small = Message("small", 1800), big = Message("big", 2100);
  for (const char* user : {"alice", "bob"}) {
    Deliver(user, small);
    Deliver(user, big);
  }
  for (const char* user : {"alice", "bob"}) {
    std::vector<FileState> inbox = Inbox(user);
    EXPECT_EQ(inbox.at(0).nlink, 1u) << user;
    EXPECT_EQ(inbox.at(1).nlink, 3u) << user;
  }
  // relink follows the same minsize when not told otherwise: nothing to do.
  ExpectConsistent(/*messages=*/4, /*unique=*/2);
}

TEST_F(ArrivalCli, ABrokenSettingsFileDefersDelivery) {
  std::ofstream(root_ + "/config/store.conf") << "local.store.relinker.enabled=yes\nlocal.store.relinker.minsize=lots\n";
  CliResult r = RunCli({"deliver", "--store", root_, "--user", "alice", "--create"}, Message("x"));
  EXPECT_EQ(r.status, kTempFail) << r.Describe();  // the MTA keeps the mail; no bounce
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("store.conf line 2: local.store.relinker.minsize: 'lots'"), std::string::npos) << r.Describe();
  auto store = store::Store::Open(root_);
  EXPECT_FALSE(store->FindUser("alice"));
}

TEST_F(ArrivalCli, ImportOfAnMboxIntoTwoUsersLinks) {
  ASSERT_EQ(Config({"local.store.relinker.enabled=yes"}).status, 0);
  std::vector<std::string> messages;
  for (int i = 0; i < 12; ++i) messages.push_back(Message("list-" + std::to_string(i), 2000 + 100 * i));
  messages.push_back(messages[3]);  // the file holds one content twice
  const std::string mbox = dir_ / "archive.mbox";
  {
    UniqueFd fd = OpenFile(mbox, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    interop::MboxWriter writer(fd.get(), mbox);
    for (const std::string& m : messages) writer.Write(m, "list@example.net", 1719828000);
  }
  CliResult a = RunCli({"import", "--store", root_, "-u", "alice", "-s", mbox});
  ASSERT_EQ(a.status, 0) << a.Describe();
  EXPECT_NE(a.out.find("single instance on arrival: linked 1 "), std::string::npos) << a.out;
  // An existing folder this time (bob's INBOX gets a delivery first): the batch path.
  Deliver("bob", Message("hello bob"));
  CliResult b = RunCli({"import", "--store", root_, "-u", "bob", "-s", mbox});
  ASSERT_EQ(b.status, 0) << b.Describe();
  EXPECT_NE(b.out.find("single instance on arrival: linked 13 "), std::string::npos) << b.out;

  std::vector<FileState> alice = Inbox("alice"), bob = Inbox("bob");
  ASSERT_EQ(alice.size(), messages.size());
  ASSERT_EQ(bob.size(), messages.size() + 1);
  for (size_t i = 0; i < messages.size(); ++i) {
    EXPECT_EQ(alice[i].bytes, messages[i]) << i;
    EXPECT_EQ(bob[i + 1].bytes, messages[i]) << i;
    EXPECT_EQ(alice[i].ino, bob[i + 1].ino) << i;
    EXPECT_EQ(alice[i].nlink, i == 3 || i == 12 ? 5u : 3u) << i;
  }
  ExpectConsistent(/*messages=*/2 * messages.size() + 1, /*unique=*/13);
}

TEST_F(ArrivalCli, MaildirImportLinksToo) {
  ASSERT_EQ(Config({"local.store.relinker.enabled=yes"}).status, 0);
  std::vector<std::string> messages;
  for (int i = 0; i < 4; ++i) messages.push_back(Message("maildir-" + std::to_string(i)));
  for (const std::string& m : messages) Deliver("alice", m);
  const std::string tree = dir_ / "alice.maildir";
  CliResult e = RunCli({"export", "--store", root_, "-u", "alice", "-d", tree, "--format", "maildir"});
  ASSERT_EQ(e.status, 0) << e.Describe();
  CliResult r = RunCli({"import", "--store", root_, "-u", "bob", "--maildir", tree});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("single instance on arrival: linked 4 "), std::string::npos) << r.out;
  std::vector<FileState> alice = Inbox("alice"), bob = Inbox("bob");
  ASSERT_EQ(bob.size(), messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    EXPECT_EQ(bob[i].bytes, messages[i]) << i;
    EXPECT_EQ(bob[i].ino, alice[i].ino) << i;
    EXPECT_EQ(bob[i].nlink, 3u) << i;
  }
  ExpectConsistent(/*messages=*/8, /*unique=*/4);
}

}  // namespace
}  // namespace storemove::tools
