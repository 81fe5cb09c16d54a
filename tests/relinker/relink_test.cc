// The relink pass (relinker/relink.h) and `storemove relink`: exact savings, one inode per
// content, bytes intact, idempotence, digest collisions, the link limit, --min-size, -d, a
// live deliverer racing the pass, and the CLI's table and JSON.
#include <dirent.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "relinker/relink.h"
#include "relinker/relinker.h"
#include "store/admin.h"
#include "store/generate.h"
#include "tests/support/error_code.h"
#include "tests/support/gone_pid.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::relinker {
namespace {

using storemove::testing::TempDir;
namespace fs = std::filesystem;

uint32_t Deliver(store::Store& s, const std::string& user, const std::string& folder, std::string_view bytes) {
  std::unique_ptr<store::Folder> f = s.CreateFolder(user, folder);
  auto w = f->NewMessage();
  w->Write(bytes);
  std::vector<store::StagedMessage> batch{w->Finish({})};
  return f->Commit(batch).at(0);
}

// One message as found on disk, read independently of the relinker.
struct OnDisk {
  std::string mailbox;
  uint32_t uid = 0;
  std::string path;
  Digest indexed;  // digest in store.idx
  std::string bytes;
  ino_t ino = 0;
  nlink_t nlink = 0;
};

std::vector<OnDisk> ReadAll(store::Store& s) {
  std::vector<OnDisk> out;
  s.ForEachFolder([&](const store::FolderInfo& info) {
    auto folder = s.OpenFolder(info.user, info.folder);
    for (const store::MessageMeta& m : folder->Snapshot().messages) {
      OnDisk d{info.Mailbox(), m.uid, folder->MessagePath(m.uid), m.digest, ReadFile(folder->MessagePath(m.uid))};
      struct stat st;
      EXPECT_EQ(::lstat(d.path.c_str(), &st), 0) << d.path;
      d.ino = st.st_ino;
      d.nlink = st.st_nlink;
      EXPECT_EQ(d.bytes.size(), m.size) << d.path;
      out.push_back(std::move(d));
    }
  });
  return out;
}

uint64_t TotalBytes(const std::vector<OnDisk>& all) {
  uint64_t n = 0;
  for (const OnDisk& d : all) n += d.bytes.size();
  return n;
}

// Space the messages take when every content is stored once.
uint64_t SpaceOfDistinctContents(const std::vector<OnDisk>& all) {
  std::map<std::string, uint64_t> contents;
  for (const OnDisk& d : all) contents[d.bytes] = d.bytes.size();
  uint64_t n = 0;
  for (const auto& [bytes, size] : contents) n += size;
  return n;
}

uint64_t SpaceOfDistinctInodes(const std::vector<OnDisk>& all) {
  std::map<ino_t, uint64_t> inodes;
  for (const OnDisk& d : all) inodes[d.ino] = d.bytes.size();
  uint64_t n = 0;
  for (const auto& [ino, size] : inodes) n += size;
  return n;
}

// Every content is one inode, and no inode holds two contents.
void ExpectOneInodePerContent(const std::vector<OnDisk>& all) {
  std::map<std::string, std::set<ino_t>> inodes_of;
  std::map<ino_t, std::set<std::string>> contents_of;
  for (const OnDisk& d : all) {
    inodes_of[d.bytes].insert(d.ino);
    contents_of[d.ino].insert(d.bytes);
  }
  for (const auto& [bytes, inodes] : inodes_of) EXPECT_EQ(inodes.size(), 1u) << "content of " << bytes.size() << " bytes";
  for (const auto& [ino, contents] : contents_of) EXPECT_EQ(contents.size(), 1u) << "inode " << ino << " shared by different bytes";
}

// Every record still has its file with exactly the bytes it had (and its digest).
void ExpectSameMessages(const std::vector<OnDisk>& before, const std::vector<OnDisk>& after) {
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i].mailbox, before[i].mailbox);
    EXPECT_EQ(after[i].uid, before[i].uid);
    EXPECT_TRUE(after[i].bytes == before[i].bytes) << after[i].path;
    EXPECT_EQ(DigestOf(after[i].bytes), after[i].indexed) << after[i].path;
  }
}

std::map<std::string, ino_t> InodeMap(const std::vector<OnDisk>& all) {
  std::map<std::string, ino_t> m;
  for (const OnDisk& d : all) m[d.path] = d.ino;
  return m;
}

std::unique_ptr<store::Store> GeneratedStore(const TempDir& dir, uint32_t users, uint32_t per_user, uint64_t seed = 3) {
  auto s = store::Store::Init(dir / "store", {"primary"});
  store::GenerateOptions g;
  g.users = users;
  g.messages_per_user = per_user;
  g.dup_rate = 0.2;
  g.single_instance = false;
  g.seed = seed;
  store::Generate(*s, g);
  return s;
}

std::string Message(char fill, size_t body) {
  return "From: a@example.com\r\nSubject: test\r\n\r\n" + std::string(body, fill) + "\r\n";
}

TEST(Relink, SavesExactlyTheDuplicatesAndKeepsEveryMessage) {
  TempDir dir;
  auto s = GeneratedStore(dir, 30, 40);
  const std::vector<OnDisk> before = ReadAll(*s);
  for (const OnDisk& d : before) ASSERT_EQ(d.nlink, 1u) << "generated without single_instance: " << d.path;
  const uint64_t total = TotalBytes(before);
  const uint64_t expected_space = SpaceOfDistinctContents(before);
  ASSERT_LT(expected_space, total) << "dup_rate 0.2 produced no duplicates";
  std::set<std::string> contents;
  for (const OnDisk& d : before) contents.insert(d.bytes);

  const RelinkStats stats = Relink(*s, {});
  EXPECT_EQ(stats.before.messages, before.size());
  EXPECT_EQ(stats.before.unique, contents.size());
  EXPECT_EQ(stats.before.repository, 0u);
  EXPECT_EQ(stats.before.bytes, total);
  EXPECT_EQ(stats.before.space_used, total);
  EXPECT_EQ(stats.before.savings(), 0u);
  EXPECT_EQ(stats.after.messages, before.size());
  EXPECT_EQ(stats.after.unique, contents.size());
  EXPECT_EQ(stats.after.repository, contents.size());
  EXPECT_EQ(stats.after.space_used, expected_space);
  EXPECT_EQ(stats.after.savings(), total - expected_space);
  EXPECT_EQ(stats.linked, before.size() - contents.size());
  EXPECT_EQ(stats.entries_added, contents.size());
  EXPECT_EQ(stats.collisions, 0u);
  EXPECT_EQ(stats.vanished, 0u);

  const std::vector<OnDisk> after = ReadAll(*s);
  ExpectSameMessages(before, after);
  ExpectOneInodePerContent(after);
  EXPECT_EQ(SpaceOfDistinctInodes(after), expected_space);  // measured on disk, not from the stats
  for (const OnDisk& d : after) {  // each content's inode is its repository entry
    struct stat entry;
    ASSERT_EQ(::lstat(Repository(s->PartitionPath("primary")).EntryPath(d.indexed).c_str(), &entry), 0);
    EXPECT_EQ(entry.st_ino, d.ino) << d.path;
  }

  // A second run finds nothing to do and changes nothing.
  const RelinkStats again = Relink(*s, {});
  EXPECT_EQ(again.linked, 0u);
  EXPECT_EQ(again.entries_added, 0u);
  EXPECT_EQ(again.entries_replaced, 0u);
  EXPECT_EQ(again.before.space_used, expected_space);
  EXPECT_EQ(again.after.space_used, expected_space);
  EXPECT_EQ(again.after.repository, contents.size());
  EXPECT_EQ(InodeMap(ReadAll(*s)), InodeMap(after));
}

// The surveys' counts in bounded memory (four values before a run goes to $TMPDIR): the same
// table, computed here from the files themselves.
TEST(Relink, ASurveySpooledToDiskCountsTheSame) {
  TempDir dir;
  auto s = GeneratedStore(dir, 20, 30, 11);
  const std::vector<OnDisk> before = ReadAll(*s);
  std::set<std::string> contents;
  for (const OnDisk& d : before) contents.insert(d.bytes);
  const uint64_t expected_space = SpaceOfDistinctContents(before);
  ASSERT_LT(expected_space, TotalBytes(before));
  RelinkOptions options;
  options.survey_values_in_memory = 4;
  for (int run = 0; run < 2; ++run) {
    const RelinkStats stats = Relink(*s, options);
    EXPECT_EQ(stats.before.messages, before.size()) << "run " << run;
    EXPECT_EQ(stats.before.unique, contents.size()) << "run " << run;
    EXPECT_EQ(stats.before.space_used, run == 0 ? TotalBytes(before) : expected_space) << "run " << run;
    EXPECT_EQ(stats.after.unique, contents.size()) << "run " << run;
    EXPECT_EQ(stats.after.space_used, expected_space) << "run " << run;
    EXPECT_EQ(stats.after.bytes, TotalBytes(before)) << "run " << run;
  }
  EXPECT_EQ(SpaceOfDistinctInodes(ReadAll(*s)), expected_space);
}

// A partition made by init has the flat repository (=digest/<h1>/<hex>.msg, store format 1.1); one
// whose =digest predates it (format 1.0) keeps the nested one, and both link, count and purge the
// same. The layout is the marker's, never a guess: a later init leaves a 1.0 repository as it is.
TEST(Relink, BothRepositoryLayoutsLinkCountAndPurge) {
  for (const bool nested : {false, true}) {
    SCOPED_TRACE(nested ? "nested (1.0)" : "flat (1.1)");
    TempDir dir;
    auto s = store::Store::Init(dir / "store", {"primary"});
    const std::string partition = s->PartitionPath("primary");
    ASSERT_TRUE(PathExists(partition + "/=digest/flat"));
    if (nested) {
      fs::remove_all(partition + "/=digest");
      MakeDirs(partition + "/=digest/ab/cd", 0700);  // a 1.0 repository's bucket
      store::CreateFlatRepositoryIfMissing(partition);  // what init does again: the layout stays
      ASSERT_FALSE(PathExists(partition + "/=digest/flat"));
    }
    const std::string x = Message('x', 3000), y = Message('y', 3100);
    s->CreateUser("a");
    s->CreateUser("b");
    Deliver(*s, "a", "INBOX", x);
    Deliver(*s, "b", "INBOX", x);
    const uint32_t y1 = Deliver(*s, "a", "INBOX", y);
    const RelinkStats stats = Relink(*s, {});
    EXPECT_EQ(stats.linked, 1u);
    EXPECT_EQ(stats.after.repository, 2u);

    Repository repo(partition);
    EXPECT_EQ(repo.layout(), nested ? store::RepositoryLayout::kNested : store::RepositoryLayout::kFlat);
    const std::string hex = DigestOf(x).Hex();
    const std::string expected = partition + "/=digest/" + hex.substr(0, 2) + "/" +
                                 (nested ? hex.substr(2, 2) + "/" : "") + hex + ".msg";
    EXPECT_EQ(repo.EntryPath(DigestOf(x)), expected);
    struct stat entry, message;
    ASSERT_EQ(::lstat(expected.c_str(), &entry), 0);
    ASSERT_EQ(::lstat(s->OpenFolder("b", "INBOX")->MessagePath(1).c_str(), &message), 0);
    EXPECT_EQ(entry.st_ino, message.st_ino);
    EXPECT_EQ(entry.st_nlink, 3u);

    s->OpenFolder("a", "INBOX")->Expunge({y1});
    RelinkOptions purge;
    purge.purge = true;
    const RelinkStats purged = Relink(*s, purge);
    EXPECT_EQ(purged.purged, 1u);
    EXPECT_EQ(purged.after.repository, 1u);
    EXPECT_FALSE(PathExists(repo.EntryPath(DigestOf(y))));
    EXPECT_FALSE(repo.Empty());
  }
}

// A restore whose content another session made the entry meanwhile links its file to that entry
// under a temporary name, then renames it over the file. A kill between the two left the
// temporary in the bucket directory (`00/`), where neither the next writer's sweep nor relink's
// looks: it stayed for ever, and kept the entry's link count up (helper-134). It is made in the
// folder directory now.
TEST(Repository, LinkToEntryStagesItsLinkWhereTheSweepsLook) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string partition = s->PartitionPath("primary");
  const std::string x = Message('x', 3000);
  const uint32_t entry_uid = Deliver(*s, "b", "INBOX", x);
  const uint32_t uid = Deliver(*s, "a", "INBOX", x);
  auto folder = s->OpenFolder("a", "INBOX");
  RepositoryOptions options;
  options.before_link_rename = [] { throw Error(Errc::kInterrupted, "killed between the link and the rename"); };
  Repository repo(partition, options);
  ASSERT_TRUE(repo.AddIfMissing(DigestOf(x), s->OpenFolder("b", "INBOX")->MessagePath(entry_uid)));
  UniqueFd entry = OpenFile(repo.EntryPath(DigestOf(x)), O_RDONLY);
  std::string name;
  const int bucket = folder->MessageDirFd(uid, &name);
  EXPECT_EQ(storemove::testing::CodeOf([&] { repo.LinkToEntry(DigestOf(x), entry.get(), folder->dir_fd(), bucket, name, folder->MessagePath(uid)); }),
            Errc::kInterrupted);
  const std::string bucket_path = folder->MessagePath(uid).substr(0, folder->MessagePath(uid).rfind('/'));
  std::vector<std::string> in_folder, in_bucket;
  for (const auto& e : fs::directory_iterator(folder->path()))
    if (e.path().filename().string().starts_with("tmp.")) in_folder.push_back(e.path().filename().string());
  for (const auto& e : fs::directory_iterator(bucket_path))
    if (e.path().filename().string().starts_with("tmp.")) in_bucket.push_back(e.path().filename().string());
  EXPECT_EQ(in_folder.size(), 1u);
  EXPECT_TRUE(in_bucket.empty()) << in_bucket.front();
  EXPECT_EQ(ReadFile(folder->MessagePath(uid)), x);  // the message itself is untouched
}

// Restore's way to add an entry: from the folder's bucket directory fd into a bucket fd the
// Repository keeps open. A bucket removed behind its back is made again; a missing file is an
// error that names it.
TEST(Repository, AddIfMissingFromADirectoryFd) {
  for (const bool nested : {false, true}) {
    SCOPED_TRACE(nested ? "nested (1.0)" : "flat (1.1)");
    TempDir dir;
    auto s = store::Store::Init(dir / "store", {"primary"});
    const std::string partition = s->PartitionPath("primary");
    if (nested) {
      fs::remove_all(partition + "/=digest");
      MakeDirs(partition + "/=digest", 0700);
    }
    const std::string x = Message('x', 3000);
    const uint32_t uid = Deliver(*s, "a", "INBOX", x);
    auto folder = s->OpenFolder("a", "INBOX");
    Repository repo(partition);
    std::string name;
    const int fd = folder->MessageDirFd(uid, &name);
    const std::string path = folder->MessagePath(uid);
    EXPECT_TRUE(repo.AddIfMissing(DigestOf(x), fd, name, path));
    EXPECT_FALSE(repo.AddIfMissing(DigestOf(x), fd, name, path));  // there already
    struct stat entry, message;
    ASSERT_EQ(::lstat(repo.EntryPath(DigestOf(x)).c_str(), &entry), 0);
    ASSERT_EQ(::lstat(path.c_str(), &message), 0);
    EXPECT_EQ(entry.st_ino, message.st_ino);

    const std::string bucket = repo.EntryPath(DigestOf(x)).substr(0, repo.EntryPath(DigestOf(x)).rfind('/'));
    fs::remove_all(bucket);  // an operator's rm -rf while the Repository holds the bucket open
    EXPECT_TRUE(repo.AddIfMissing(DigestOf(x), fd, name, path));
    ASSERT_EQ(::lstat(repo.EntryPath(DigestOf(x)).c_str(), &entry), 0);
    EXPECT_EQ(entry.st_ino, message.st_ino);
    // The same in a later session of this process (serve's next restore): the process still
    // took the bucket for one that exists, and the flat layout failed the folder with "open
    // .../=digest/NN: no such file or directory" instead of making it again.
    fs::remove_all(bucket);
    Repository later(partition);
    EXPECT_TRUE(later.AddIfMissing(DigestOf(x), fd, name, path));
    ASSERT_EQ(::lstat(later.EntryPath(DigestOf(x)).c_str(), &entry), 0);
    EXPECT_EQ(entry.st_ino, message.st_ino);

    const std::string y = Message('y', 3100);
    try {
      repo.AddIfMissing(DigestOf(y), fd, "999.msg", folder->MessagePath(999));
      ADD_FAILURE() << "a missing file was added";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(folder->MessagePath(999)), std::string::npos) << e.what();
    }
  }
}

TEST(Relink, OnlyTheChosenPartitionIsTouched) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"one", "two"});
  s->CreateUser("a", "one");
  s->CreateUser("b", "one");
  s->CreateUser("c", "two");
  s->CreateUser("d", "two");
  for (const char* user : {"a", "b", "c", "d"}) Deliver(*s, user, "INBOX", Message('x', 2000));
  RelinkOptions options;
  options.partition = "two";
  const RelinkStats stats = Relink(*s, options);
  EXPECT_EQ(stats.before.messages, 2u);
  EXPECT_EQ(stats.linked, 1u);
  std::map<std::string, ino_t> inodes;
  for (const OnDisk& d : ReadAll(*s)) inodes[d.mailbox] = d.ino;
  EXPECT_NE(inodes["user/a/INBOX"], inodes["user/b/INBOX"]);
  EXPECT_EQ(inodes["user/c/INBOX"], inodes["user/d/INBOX"]);

  options.partition = "three";
  try {
    Relink(*s, options);
    ADD_FAILURE() << "unknown partition accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kNotFound);
  }
}

// A listed message whose file is missing, or is a directory, is damage: named, kCorrupt, never
// counted as "expunged meanwhile" with the pass ending well.
TEST(Relink, AMissingOrForeignMessageFileIsDamageNotAnExpunge) {
  for (const bool directory : {false, true}) {
    TempDir dir;
    auto s = store::Store::Init(dir / "store", {"one"});
    s->CreateUser("a", "one");
    s->CreateUser("b", "one");
    for (const char* user : {"a", "b"}) Deliver(*s, user, "INBOX", Message('x', 2000));
    const std::string path = s->OpenFolder("a", "INBOX")->MessagePath(1);
    ASSERT_EQ(::unlink(path.c_str()), 0);
    if (directory) {
      ASSERT_EQ(::mkdir(path.c_str(), 0700), 0);
    }
    try {
      const RelinkStats stats = Relink(*s, {});
      ADD_FAILURE() << (directory ? "a directory" : "a missing file") << " passed; expunged meanwhile "
                    << stats.vanished;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kCorrupt) << e.what();
      EXPECT_NE(std::string(e.what()).find("user/a/INBOX: UID 1"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(directory ? "is not a regular file" : "is missing (damaged store)"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(Relink, ForcedDigestCollisionIsNeverLinked) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string x = Message('x', 3000), y = Message('y', 3000);  // same size, other bytes
  ASSERT_EQ(x.size(), y.size());
  for (const char* user : {"a", "b", "c", "d", "e"}) s->CreateUser(user);
  Deliver(*s, "a", "INBOX", x);
  Deliver(*s, "b", "INBOX", y);
  Deliver(*s, "c", "INBOX", x);
  Deliver(*s, "d", "INBOX", y);
  Deliver(*s, "e", "INBOX", y);
  const std::vector<OnDisk> before = ReadAll(*s);

  RelinkOptions options;
  Digest forced;
  forced.bytes.fill(0x42);
  options.digest_override = [forced](const Digest&) { return forced; };
  const RelinkStats stats = Relink(*s, options);
  EXPECT_EQ(stats.before.unique, 1u);  // as far as the (forced) digests tell
  EXPECT_EQ(stats.collisions, 3u);  // every copy of y differs from the entry, which holds a's x
  EXPECT_EQ(stats.linked, 3u);      // c's x to the entry; d's and e's y to b's y

  const std::vector<OnDisk> after = ReadAll(*s);
  ExpectSameMessages(before, after);
  ExpectOneInodePerContent(after);
  EXPECT_EQ(SpaceOfDistinctInodes(after), x.size() + y.size());
  EXPECT_TRUE(SameContent(Repository(s->PartitionPath("primary")).EntryPath(forced), after[0].path));
}

// A repository entry whose bytes are no longer its digest's (damage: its user's copy was since
// repaired by a restore, the entry was not) is no digest collision: relink said "digest
// collisions 1", exit 0, and left it (helper-78). A copy whose bytes are the digest's replaces
// it, and the copies are linked to that.
TEST(Relink, ADamagedRepositoryEntryIsReplacedNotCountedAsACollision) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string x = Message('x', 3000);
  for (const char* user : {"a", "b"}) s->CreateUser(user);
  Deliver(*s, "a", "INBOX", x);
  Relink(*s, {});  // a's file becomes the entry
  const std::string entry = Repository(s->PartitionPath("primary")).EntryPath(DigestOf(x));
  ASSERT_TRUE(PathExists(entry));
  std::string damaged = x;
  damaged[10] ^= 1;
  ASSERT_EQ(::unlink(entry.c_str()), 0);
  std::ofstream(entry, std::ios::binary) << damaged;  // the entry alone damaged, a's copy intact
  Deliver(*s, "b", "INBOX", x);
  const std::vector<OnDisk> before = ReadAll(*s);
  const RelinkStats stats = Relink(*s, {});
  EXPECT_EQ(stats.collisions, 0u);
  EXPECT_EQ(stats.damaged_entries, 1u);
  EXPECT_NE(FormatRelinkTable(stats).find("damaged repository entries replaced 1"), std::string::npos);
  const std::vector<OnDisk> after = ReadAll(*s);
  ExpectSameMessages(before, after);
  ExpectOneInodePerContent(after);
  EXPECT_EQ(ReadFile(entry), x);
}

// The copy that would replace a damaged entry gives the entry its mode: one made 0644 by hand
// is not made the entry (helper-128 L1), and is counted; an ordinary copy later is.
TEST(Relink, ADamagedEntryIsNotReplacedByACopyOfAnotherMode) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string x = Message('x', 3000);
  for (const char* user : {"a", "b", "c"}) s->CreateUser(user);
  Deliver(*s, "a", "INBOX", x);
  Relink(*s, {});
  const std::string entry = Repository(s->PartitionPath("primary")).EntryPath(DigestOf(x));
  std::string damaged = x;
  damaged[10] ^= 1;
  ASSERT_EQ(::unlink(entry.c_str()), 0);
  WriteFileAtomic(entry, damaged, 0600);
  ASSERT_EQ(::chmod(s->OpenFolder("a", "INBOX")->MessagePath(1).c_str(), 0644), 0);
  RelinkStats stats = Relink(*s, {});
  EXPECT_EQ(stats.damaged_entries, 0u);
  EXPECT_EQ(stats.owner_or_mode, 1u);
  EXPECT_EQ(ReadFile(entry), damaged);
  Deliver(*s, "c", "INBOX", x);
  stats = Relink(*s, {});
  EXPECT_EQ(stats.damaged_entries, 1u);
  EXPECT_EQ(ReadFile(entry), x);
  struct stat st;
  ASSERT_EQ(::stat(entry.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

// Flips one byte of a message file in place (its inode and links kept): a disk error.
void DamageInPlace(const std::string& path) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(10);
  const char c = char(f.get() ^ 1);
  f.seekp(10);
  f.put(c);
}

// A message file whose bytes are not its record's digest is damage, not a digest collision:
// named and left alone, and the run does not end "ok" (helper-107: "digest collisions 1", or a
// damaged copy made the entry, replaced, and the user's copy left as it was, both exit 0).
TEST(Relink, AMessageWhoseBytesAreNotItsDigestIsNamedAndLeftAlone) {
  const std::string x = Message('x', 3000);
  for (const char* damaged_user : {"b", "a"}) {  // walked after the good copy, then before it
    SCOPED_TRACE(damaged_user);
    TempDir dir;
    auto s = store::Store::Init(dir / "store", {"primary"});
    for (const char* user : {"a", "b"}) {
      s->CreateUser(user);
      Deliver(*s, user, "INBOX", x);
    }
    const std::string damaged = s->OpenFolder(damaged_user, "INBOX")->MessagePath(1);
    const std::string good = s->OpenFolder(damaged_user == std::string("a") ? "b" : "a", "INBOX")->MessagePath(1);
    DamageInPlace(damaged);
    const std::string damaged_bytes = ReadFile(damaged);
    const RelinkStats stats = Relink(*s, {});
    EXPECT_EQ(stats.collisions, 0u);
    EXPECT_EQ(stats.damaged_messages, 1u);
    EXPECT_NE(FormatRelinkTable(stats).find("damaged messages 1"), std::string::npos);
    ASSERT_EQ(stats.damaged_named.size(), 1u);
    EXPECT_EQ(stats.damaged_named[0], "user/" + std::string(damaged_user) + "/INBOX UID 1 (" + damaged + ")");
    // Walked first, the damaged copy became the entry (unhashed), which the good one replaced.
    EXPECT_EQ(stats.damaged_entries, damaged_user == std::string("a") ? 1u : 0u);
    EXPECT_EQ(stats.damaged_entry_links, 0u);
    struct stat d, g;
    ASSERT_EQ(::stat(damaged.c_str(), &d), 0);
    ASSERT_EQ(::stat(good.c_str(), &g), 0);
    EXPECT_NE(d.st_ino, g.st_ino);  // never linked together
    EXPECT_EQ(ReadFile(damaged), damaged_bytes);
    EXPECT_EQ(ReadFile(good), x);
    EXPECT_EQ(ReadFile(Repository(s->PartitionPath("primary")).EntryPath(DigestOf(x))), x);
  }
}

// A file of another size than its record (truncated) is damage too: named, not linked.
TEST(Relink, AMessageFileOfAnotherSizeIsNamedAsDamaged) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string x = Message('x', 3000);
  for (const char* user : {"a", "b"}) {
    s->CreateUser(user);
    Deliver(*s, user, "INBOX", x);
  }
  const std::string cut = s->OpenFolder("b", "INBOX")->MessagePath(1);
  ASSERT_EQ(::truncate(cut.c_str(), 1000), 0);
  const RelinkStats stats = Relink(*s, {});
  EXPECT_EQ(stats.damaged_messages, 1u);
  EXPECT_EQ(stats.damaged_named, std::vector<std::string>{"user/b/INBOX UID 1 (" + cut + ")"});
  EXPECT_EQ(stats.collisions, 0u);
}

TEST(Relink, TruncatedDigestsOnAGeneratedStoreLinkOnlyEqualBytes) {
  TempDir dir;
  auto s = GeneratedStore(dir, 20, 30, 11);
  const std::vector<OnDisk> before = ReadAll(*s);
  RelinkOptions options;
  options.digest_override = [](const Digest& d) {  // 256 digests for hundreds of contents
    Digest truncated;
    truncated.bytes[0] = d.bytes[0];
    return truncated;
  };
  const RelinkStats stats = Relink(*s, options);
  EXPECT_GT(stats.collisions, 0u);
  const std::vector<OnDisk> after = ReadAll(*s);
  ExpectSameMessages(before, after);
  ExpectOneInodePerContent(after);
  EXPECT_EQ(SpaceOfDistinctInodes(after), SpaceOfDistinctContents(before));
}

TEST(Relink, LinkLimitMakesANewEntryAndKeepsWorking) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string x = Message('z', 5000);
  constexpr int kCopies = 7;
  for (int i = 0; i < kCopies; ++i) Deliver(*s, "u" + std::to_string(i), "INBOX", x);
  RelinkOptions options;
  options.max_links = 3;  // the entry's link counts too
  const std::vector<OnDisk> before = ReadAll(*s);
  const RelinkStats stats = Relink(*s, options);
  // Copies 1+2 share an inode with the entry, 3 is full so copy 3 becomes the entry, and so on.
  EXPECT_EQ(stats.entries_added, 1u);
  EXPECT_EQ(stats.entries_replaced, 3u);
  EXPECT_EQ(stats.linked, 3u);
  const std::vector<OnDisk> after = ReadAll(*s);
  ExpectSameMessages(before, after);
  std::set<ino_t> inodes;
  for (const OnDisk& d : after) {
    EXPECT_LE(d.nlink, 3u) << d.path;
    inodes.insert(d.ino);
  }
  EXPECT_EQ(inodes.size(), 4u);
  EXPECT_EQ(stats.after.space_used, 4 * x.size());
  struct stat entry;
  ASSERT_EQ(::lstat(Repository(s->PartitionPath("primary")).EntryPath(DigestOf(x)).c_str(), &entry), 0);
  EXPECT_EQ(entry.st_ino, after.back().ino);  // the last copy is the current entry

  // Nothing is moved back and forth: a second run with the same limit changes nothing.
  const RelinkStats again = Relink(*s, options);
  EXPECT_EQ(again.linked, 0u);
  EXPECT_EQ(again.entries_replaced, 0u);
  EXPECT_EQ(InodeMap(ReadAll(*s)), InodeMap(after));

  // A new copy links to the current entry; full inodes are not made the entry again.
  Deliver(*s, "late", "INBOX", x);
  const RelinkStats late = Relink(*s, options);
  EXPECT_EQ(late.linked, 1u);
  EXPECT_EQ(late.entries_replaced, 0u);
  EXPECT_EQ(late.after.space_used, 4 * x.size());
}

// A message whose own inode is already at the link limit (restore linked many mailboxes' copies
// to it) cannot become the repository entry: it is left as it is, and it is no digest collision.
TEST(Relink, AMessageWhoseInodeIsFullIsNotACollision) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string x = Message('f', 3000);
  s->CreateUser("a");
  s->CreateUser("b");
  Deliver(*s, "a", "INBOX", x);
  {
    auto a = s->OpenFolder("a", "INBOX");
    const store::MessageMeta meta = a->Snapshot().messages.at(0);
    auto b = s->CreateFolder("b", "INBOX");
    std::optional<store::StagedMessage> staged = b->StageLink(a->MessagePath(meta.uid), meta);
    ASSERT_TRUE(staged);
    std::vector<store::StagedMessage> batch{*staged};
    b->Commit(batch);
  }
  const std::vector<OnDisk> before = ReadAll(*s);
  ASSERT_EQ(before.size(), 2u);
  ASSERT_EQ(before[0].ino, before[1].ino);
  RelinkOptions options;
  options.max_links = 2;  // the two mailboxes' names fill the inode
  const RelinkStats stats = Relink(*s, options);
  EXPECT_EQ(stats.collisions, 0u);
  EXPECT_EQ(stats.entries_added, 0u);
  EXPECT_EQ(stats.linked, 0u);
  EXPECT_EQ(InodeMap(ReadAll(*s)), InodeMap(before));
  ExpectSameMessages(before, ReadAll(*s));
}

TEST(Relink, MinSizeLeavesSmallMessagesAlone) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string small = Message('s', 100), large = Message('l', 4000);
  for (const char* user : {"a", "b", "c"}) {
    Deliver(*s, user, "INBOX", small);
    Deliver(*s, user, "INBOX", large);
  }
  RelinkOptions options;
  options.min_size = 1024;
  const RelinkStats stats = Relink(*s, options);
  EXPECT_EQ(stats.too_small, 3u);
  EXPECT_EQ(stats.linked, 2u);
  std::set<ino_t> small_inodes, large_inodes;
  for (const OnDisk& d : ReadAll(*s)) (d.bytes == small ? small_inodes : large_inodes).insert(d.ino);
  EXPECT_EQ(small_inodes.size(), 3u);
  EXPECT_EQ(large_inodes.size(), 1u);
  EXPECT_EQ(stats.after.savings(), 2 * large.size());
}

TEST(Relink, PurgeRemovesOnlyEntriesNothingLinksTo) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string x = Message('x', 2000), y = Message('y', 2100), z = Message('z', 2200);
  s->CreateUser("a");
  s->CreateUser("b");
  const uint32_t x1 = Deliver(*s, "a", "INBOX", x);
  Deliver(*s, "b", "INBOX", x);
  const uint32_t y1 = Deliver(*s, "a", "INBOX", y);
  Deliver(*s, "b", "INBOX", z);
  Relink(*s, {});
  Repository repo(s->PartitionPath("primary"));
  // y's only message and one of x's two go away; their entries stay until -d.
  s->OpenFolder("a", "INBOX")->Expunge({x1, y1});
  ASSERT_TRUE(PathExists(repo.EntryPath(DigestOf(y))));
  const std::string stray = repo.root() + "/00/not-an-entry";
  MakeDirs(repo.root() + "/00");
  WriteFileAtomic(stray, "x");

  RelinkOptions options;
  options.purge = true;
  const RelinkStats stats = Relink(*s, options);
  EXPECT_EQ(stats.purged, 1u);
  EXPECT_EQ(stats.before.repository, 3u);
  EXPECT_EQ(stats.after.repository, 2u);
  EXPECT_FALSE(PathExists(repo.EntryPath(DigestOf(y))));
  EXPECT_TRUE(PathExists(repo.EntryPath(DigestOf(x))));
  EXPECT_TRUE(PathExists(repo.EntryPath(DigestOf(z))));
  EXPECT_TRUE(PathExists(stray));  // only entries are considered
  EXPECT_EQ(ReadAll(*s).size(), 2u);
}

using storemove::testing::GonePid;

// A hard link makes identical messages one inode with one mode and owner: a copy an
// administrator made 0644 (or one of another owner's) gave its mode to every message linked to
// it, or lost its own (helper-126 M4). Such a copy is left alone and counted; the others are
// linked, whatever their group when the mode gives the group nothing (helper-128 M3: a copy of
// another group kept the ordinary ones from ever being linked).
TEST(Relink, NeverChangesAMessagesModeOrOwner) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string x = Message('x', 3000);
  std::map<std::string, std::string> path_of;
  for (const char* user : {"alice", "bob", "carol", "dave"}) {
    s->CreateUser(user);
    path_of[user] = s->OpenFolder(user, "INBOX")->MessagePath(Deliver(*s, user, "INBOX", x));
  }
  ASSERT_EQ(::chmod(path_of["alice"].c_str(), 0644), 0);
  ASSERT_EQ(::chown(path_of["dave"].c_str(), 65534, 65534), 0);
  ASSERT_EQ(::chown(path_of["bob"].c_str(), 0, 65534), 0);  // another group, mode 0600: alike
  std::map<std::string, struct stat> before;
  for (const auto& [user, path] : path_of) ASSERT_EQ(::stat(path.c_str(), &before[user]), 0);
  const RelinkStats stats = Relink(*s, {});
  EXPECT_EQ(stats.collisions, 0u);
  EXPECT_EQ(stats.linked, 1u);
  EXPECT_EQ(stats.owner_or_mode, 2u);  // alice's 0644, dave's of another owner
  EXPECT_NE(FormatRelinkTable(stats).find(", left for their owner or mode 2"), std::string::npos);
  for (const auto& [user, path] : path_of) {
    struct stat now;
    ASSERT_EQ(::stat(path.c_str(), &now), 0);
    EXPECT_EQ(now.st_mode, before[user].st_mode) << user;
    EXPECT_EQ(now.st_uid, before[user].st_uid) << user;
    EXPECT_EQ(ReadFile(path), x) << user;
  }
  struct stat b, c;
  ASSERT_EQ(::stat(path_of["bob"].c_str(), &b), 0);
  ASSERT_EQ(::stat(path_of["carol"].c_str(), &c), 0);
  EXPECT_EQ(b.st_ino, c.st_ino) << "the two copies of one mode and owner are still linked";
}

// A writer killed between its two steps leaves a temporary name: here a relink's link to x's
// entry (which then keeps that entry from -d) and a repository replacement's. The next relink
// removes those whose process is gone and which are old enough, and nothing else: not a running
// process's, not a young one, not a file of another name.
TEST(Relink, RemovesTheTemporariesOfKilledWritersOnly) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string x = Message('x', 2000), y = Message('y', 2100);
  s->CreateUser("a");
  s->CreateUser("b");
  const uint32_t x1 = Deliver(*s, "a", "INBOX", x);
  Deliver(*s, "b", "INBOX", y);
  Relink(*s, {});
  Repository repo(s->PartitionPath("primary"));
  const std::string inbox = s->OpenFolder("a", "INBOX")->path();
  const std::string gone = inbox + "/tmp." + std::to_string(GonePid()) + ".k1lled";
  const std::string running = inbox + "/tmp." + std::to_string(::getpid()) + ".runn1ng";
  const std::string entry_tmp = repo.EntryPath(DigestOf(y)) + ".tmp.r3place";
  const std::string index_tmp = inbox + "/store.idx.tmp.wr1te";
  const std::string other = inbox + "/tmp.notapid";
  ASSERT_EQ(LinkPath(repo.EntryPath(DigestOf(x)), gone), 0);
  ASSERT_EQ(LinkPath(repo.EntryPath(DigestOf(x)), running), 0);
  ASSERT_EQ(LinkPath(repo.EntryPath(DigestOf(y)), entry_tmp), 0);
  WriteFileAtomic(index_tmp, "half an index");
  WriteFileAtomic(other, "not ours");
  s->OpenFolder("a", "INBOX")->Expunge({x1});

  RelinkOptions young;  // the default age: all of them were made just now
  young.purge = true;
  const RelinkStats kept = Relink(*s, young);
  EXPECT_EQ(kept.stale_removed, 0u);
  EXPECT_EQ(kept.purged, 0u);  // x's entry is still linked by the temporaries
  for (const std::string& p : {gone, running, entry_tmp, index_tmp, other}) EXPECT_TRUE(PathExists(p)) << p;

  RelinkOptions old;
  old.purge = true;
  old.stale_after = std::chrono::seconds(0);
  const RelinkStats removed = Relink(*s, old);
  EXPECT_EQ(removed.stale_removed, 3u);
  EXPECT_FALSE(PathExists(gone));
  EXPECT_FALSE(PathExists(entry_tmp));
  EXPECT_FALSE(PathExists(index_tmp));
  EXPECT_TRUE(PathExists(running));  // its process runs: a writer may still rename it
  EXPECT_TRUE(PathExists(other));    // not a name our writers make
  EXPECT_EQ(removed.purged, 0u);     // `running` still links x's entry
  ASSERT_EQ(::unlink(running.c_str()), 0);
  const RelinkStats purged = Relink(*s, old);
  EXPECT_EQ(purged.purged, 1u);
  EXPECT_FALSE(PathExists(repo.EntryPath(DigestOf(x))));
  EXPECT_TRUE(PathExists(repo.EntryPath(DigestOf(y))));
  EXPECT_EQ(ReadAll(*s).size(), 1u);
}

// Every *.msg file below a folder's bucket directories has a record, and no temporary file
// is left in any folder directory.
void ExpectNoStrayFiles(store::Store& s) {
  s.ForEachFolder([&](const store::FolderInfo& info) {
    auto folder = s.OpenFolder(info.user, info.folder);
    std::set<std::string> recorded;
    for (const store::MessageMeta& m : folder->Snapshot().messages) recorded.insert(folder->MessagePath(m.uid));
    for (const fs::directory_entry& e : fs::directory_iterator(folder->path())) {
      const std::string name = e.path().filename().string();
      EXPECT_FALSE(name.starts_with("tmp.")) << e.path();
      if (name.size() != 2 || !e.is_directory()) continue;
      for (const fs::directory_entry& m : fs::directory_iterator(e.path()))
        EXPECT_TRUE(recorded.count(m.path().string())) << "file without record: " << m.path();
    }
  });
}

TEST(Relink, MessageExpungedJustBeforeTheSwapIsNotBroughtBack) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string x = Message('x', 2000);
  Deliver(*s, "a", "INBOX", x);
  const uint32_t doomed = Deliver(*s, "b", "INBOX", x);
  RelinkOptions options;
  int calls = 0;
  options.before_exchange = [&](const std::string& path) {
    ++calls;
    auto folder = s->OpenFolder("b", "INBOX");
    ASSERT_EQ(path, folder->MessagePath(doomed));
    folder->Expunge({doomed});
  };
  const RelinkStats stats = Relink(*s, options);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(stats.linked, 0u);
  EXPECT_EQ(stats.vanished, 1u);
  EXPECT_TRUE(s->OpenFolder("b", "INBOX")->Snapshot().messages.empty());
  ExpectNoStrayFiles(*s);  // no <uid>.msg without a record, no temporary link
  EXPECT_EQ(stats.after.messages, 1u);
}

// The path of the compared message is given to another message just before the swap (its folder
// deleted and another folder renamed to its name: UIDs start at 1 again). The exchange takes the
// other message out; it must be put back, not unlinked.
TEST(Relink, AMessageThatTookTheComparedPathJustBeforeTheSwapIsKept) {
  TempDir dir;
  auto s = store::Store::Init(dir / "store", {"primary"});
  const std::string x = Message('x', 4000), y = Message('y', 300);
  Deliver(*s, "a", "INBOX", x);
  s->CreateFolder("b", "INBOX");
  ASSERT_EQ(Deliver(*s, "b", "Work", x), 1u);
  ASSERT_EQ(Deliver(*s, "b", "Play", y), 1u);
  RelinkOptions options;
  int calls = 0;
  options.before_exchange = [&](const std::string& path) {
    if (path != s->OpenFolder("b", "Work")->MessagePath(1)) return;
    ++calls;
    store::DeleteFolder(*s, "b", "Work");
    store::RenameFolder(*s, "b", "Play", "Work");
    ASSERT_EQ(s->OpenFolder("b", "Work")->MessagePath(1), path);  // the same name, another message
  };
  const RelinkStats stats = Relink(*s, options);
  EXPECT_EQ(calls, 1);
  auto f = s->OpenFolder("b", "Work");
  const std::vector<store::MessageMeta> messages = f->Snapshot().messages.ToVector();
  ASSERT_EQ(messages.size(), 1u);
  UniqueFd fd = f->OpenMessage(1);
  ASSERT_TRUE(fd.valid());
  std::string bytes(y.size() + 1, '\0');
  ASSERT_EQ(::pread(fd.get(), bytes.data(), bytes.size(), 0), ssize_t(y.size()));
  bytes.resize(y.size());
  EXPECT_EQ(bytes, y) << "the message renamed into F was replaced by the one compared";
  EXPECT_EQ(stats.linked, 0u);
  ExpectNoStrayFiles(*s);
}

TEST(Relink, RacingALiveDelivererLosesNothing) {
  TempDir dir;
  std::vector<std::string> users, contents;
  {
    auto s = GeneratedStore(dir, 20, 30, 5);
    s->ForEachUser([&](const store::UserInfo& u) { users.push_back(u.user); });
    for (const OnDisk& d : ReadAll(*s)) contents.push_back(d.bytes);
  }  // closed before fork: a Berkeley DB environment handle must not cross fork()
  int ready[2], stop[2], report[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(stop), 0);
  ASSERT_EQ(::pipe(report), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Delivers copies of existing content and new messages, and expunges old messages, until
    // the parent's relink is over; reports how many of each.
    int rc = 0;
    uint64_t counts[2] = {0, 0};  // delivered, expunged
    try {
      auto s = store::Store::Open(dir / "store");
      for (uint64_t i = 0;; ++i) {
        const std::string& user = users[i % users.size()];
        std::string bytes = i % 2 ? contents[(i * 7) % contents.size()] : Message('n', 1000 + i);
        Deliver(*s, user, "INBOX", bytes);
        ++counts[0];
        if (i % 5 == 0) {
          auto folder = s->OpenFolder(user, "INBOX");
          std::vector<store::MessageMeta> present = folder->Snapshot().messages.ToVector();
          if (!present.empty()) {
            folder->Expunge({present[i % present.size()].uid});
            ++counts[1];
          }
        }
        if (i == 20 && ::write(ready[1], "r", 1) != 1) ::_exit(3);
        struct pollfd p{stop[0], POLLIN, 0};
        if (i > 20 && ::poll(&p, 1, 0) == 1) break;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "deliverer: %s\n", e.what());
      rc = 1;
    }
    if (::write(report[1], counts, sizeof counts) != sizeof counts) rc = 2;
    ::_exit(rc);
  }
  char byte;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);  // the deliverer is running
  auto s = store::Store::Open(dir / "store");
  const RelinkStats stats = Relink(*s, {});
  ASSERT_EQ(::write(stop[1], "s", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  uint64_t counts[2];
  ASSERT_EQ(::read(report[0], counts, sizeof counts), ssize_t(sizeof counts));
  for (int fd : {ready[0], ready[1], stop[0], stop[1], report[0], report[1]}) ::close(fd);

  EXPECT_GT(stats.linked, 0u);
  std::printf("relink linked %llu, skipped %llu expunged meanwhile; deliverer: %llu delivered, %llu expunged\n",
              (unsigned long long)stats.linked, (unsigned long long)stats.vanished, (unsigned long long)counts[0],
              (unsigned long long)counts[1]);
  const std::vector<OnDisk> all = ReadAll(*s);  // every record's file exists
  for (const OnDisk& d : all) EXPECT_EQ(DigestOf(d.bytes), d.indexed) << d.path;
  uint64_t expected = 20 * 30 + counts[0] - counts[1];
  EXPECT_EQ(all.size(), expected) << "delivered " << counts[0] << ", expunged " << counts[1];
  ExpectNoStrayFiles(*s);

  // What the race left unlinked, a quiet second run finishes: one inode per content.
  Relink(*s, {});
  ExpectOneInodePerContent(ReadAll(*s));
}

// The last whitespace-separated field of the table row starting with `label`, commas removed.
std::string AfterColumn(const std::string& table, const std::string& label, bool before = false) {
  std::istringstream lines(table);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with(label)) continue;
    std::istringstream fields(line.substr(label.size()));
    std::vector<std::string> words;
    for (std::string w; fields >> w;) words.push_back(w);
    if (words.size() < 2) return "";
    std::string value = words[words.size() - (before ? 2 : 1)];
    std::erase(value, ',');
    return value;
  }
  return "";
}

// -p names a partition: a name that cannot be one is a usage error (64, one line), never "every
// partition" (-p '') nor "no such partition" (66).
TEST(RelinkCli, APartitionThatCannotBeANameIsAUsageError) {
  TempDir dir;
  GeneratedStore(dir, 2, 2);
  const std::string store = dir / "store";
  using storemove::testing::RunCli;
  for (const char* bad : {"../x", ""}) {
    storemove::testing::CliResult r = RunCli({"relink", "--store", store, "-p", bad});
    EXPECT_EQ(r.status, 64) << r.Describe();
    EXPECT_NE(r.err.find("invalid partition name"), std::string::npos) << r.Describe();
    EXPECT_TRUE(r.out.empty()) << r.Describe();
  }
  EXPECT_EQ(RunCli({"relink", "--store", store, "-p", "nosuch"}).status, 66);
}

TEST(RelinkCli, PrintsSunsTableAndJson) {
  TempDir dir;
  uint64_t total, expected_space, unique;
  {
    auto s = GeneratedStore(dir, 15, 20, 9);
    const std::vector<OnDisk> all = ReadAll(*s);
    total = TotalBytes(all);
    expected_space = SpaceOfDistinctContents(all);
    std::set<std::string> contents;
    for (const OnDisk& d : all) contents.insert(d.bytes);
    unique = contents.size();
  }
  using storemove::testing::RunCli;
  const auto r = RunCli({"relink", "--store", dir / "store"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(AfterColumn(r.out, "Total messages", true), "300") << r.out;
  EXPECT_EQ(AfterColumn(r.out, "Total messages"), "300") << r.out;
  EXPECT_EQ(AfterColumn(r.out, "Unique messages"), std::to_string(unique)) << r.out;
  EXPECT_EQ(AfterColumn(r.out, "Message digests in repository", true), "0") << r.out;
  EXPECT_EQ(AfterColumn(r.out, "Message digests in repository"), std::to_string(unique)) << r.out;
  EXPECT_EQ(AfterColumn(r.out, "Space used (bytes)", true), std::to_string(total)) << r.out;
  EXPECT_EQ(AfterColumn(r.out, "Space used (bytes)"), std::to_string(expected_space)) << r.out;
  EXPECT_EQ(AfterColumn(r.out, "Space savings from single-copy (bytes)", true), "0") << r.out;
  EXPECT_EQ(AfterColumn(r.out, "Space savings from single-copy (bytes)"), std::to_string(total - expected_space))
      << r.out;
  EXPECT_NE(r.out.find("before"), std::string::npos);
  EXPECT_NE(r.out.find("linked " + std::to_string(300 - unique)), std::string::npos) << r.out;

  const auto j = RunCli({"relink", "--store", dir / "store", "--json", "--min-size", "1", "-d"});
  ASSERT_EQ(j.status, 0) << j.Describe();
  const nlohmann::json out = nlohmann::json::parse(j.out);
  EXPECT_EQ(out["before"]["savings"], total - expected_space);
  EXPECT_EQ(out["after"]["savings"], total - expected_space);
  EXPECT_EQ(out["after"]["space_used"], expected_space);
  EXPECT_EQ(out["after"]["messages"], 300u);
  EXPECT_EQ(out["after"]["repository"], unique);
  EXPECT_EQ(out["linked"], 0u);
  EXPECT_EQ(out["purged"], 0u);

  const auto bad = RunCli({"relink", "--store", dir / "store", "-p", "nosuch"});
  EXPECT_EQ(bad.status, 66) << bad.Describe();
  EXPECT_NE(bad.err.find("no such partition: nosuch"), std::string::npos) << bad.err;

  // A size that is no size is refused, not wrapped: -5 read as 2^64-5 KB would skip every message,
  // 2^54 KB times 1024 would be 0 and link every one; -1 was the "not given" marker.
  for (const char* size : {"-5", "-1", "18014398509481984"}) {
    const auto refused = RunCli({"relink", "--store", dir / "store", "--json", "--min-size", size});
    EXPECT_EQ(refused.status, 64) << size << ": " << refused.Describe();
    EXPECT_NE(refused.err.find("--min-size"), std::string::npos) << refused.err;
    EXPECT_TRUE(refused.out.empty()) << refused.out;
  }
}

}  // namespace
}  // namespace storemove::relinker
