// Backup -> restore end to end: fidelity, single instance, reruns, incremental, user maps,
// damaged and hostile streams, and the real CLI over pipes.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "format/zstd_codec.h"
#include "relinker/relinker.h"
#include "store/admin.h"
#include "store/generate.h"
#include "stream/stream.h"
#include "stream/transport.h"
#include "tests/support/store_checks.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"

namespace storemove::stream {
namespace {

using storemove::testing::ExpectEqualStores;
using storemove::testing::ExpectNothingHalfVisible;
using storemove::testing::TempDir;
namespace fs = std::filesystem;

std::string Corpus() { return fs::exists(STOREMOVE_CORPUS) ? STOREMOVE_CORPUS : ""; }

// A source store with every kind of metadata set, built from the corpus when it is there.
std::unique_ptr<store::Store> MakeSource(const std::string& dir, uint32_t users = 12, uint32_t per_user = 30) {
  auto s = store::Store::Init(dir, {"primary", "secondary"});
  store::GenerateOptions g;
  g.users = users;
  g.messages_per_user = per_user;
  g.dup_rate = 0.2;
  g.single_instance = true;
  g.corpus_dir = Corpus();
  g.seed = 7;
  store::Generate(*s, g);
  std::vector<std::string> names;
  s->ForEachUser([&](const store::UserInfo& u) { names.push_back(u.user); });
  // No user on hold: restore makes users active unless --keep-status (tools operator_test),
  // so a held source user would differ from its copy.
  s->SetQuotaLimit(names[1], 50 << 20);
  s->Subscribe(names[1], "user/" + names[1] + "/INBOX");
  s->Subscribe(names[1], "user/" + names[2] + "/INBOX");
  s->SetAcl(names[2], "INBOX", names[2] + " lrswipkxtea anyone lr");
  s->SetPerUser("user/" + names[2] + "/INBOX", names[1], "seen 1:3");
  auto inbox = s->OpenFolder(names.back(), "INBOX");
  inbox->SetUserFlagNames({"$Junk", "$Label1"});
  auto first = inbox->Snapshot().messages.at(0);
  inbox->SetFlags(first.uid, store::kSeen | store::kFlagged, 0b10);
  return s;
}

std::string BackupToString(store::Store& s, BackupOptions options = {}, int level = 3) {
  format::StringSink sink;
  if (level > 0) {
    format::ZstdCompressSink z(sink, level, 0);
    format::Encoder enc(z);
    Backup(s, options, enc);
    z.Finish();
  } else {
    format::Encoder enc(sink);
    Backup(s, options, enc);
  }
  return sink.Take();
}

SessionReport RestoreFromString(store::Store* s, const std::string& bytes, RestoreOptions options = {},
                                std::ostream* toc = nullptr) {
  format::StringSource src(bytes);
  format::DecompressingSource in(src);
  format::Decoder dec(in);
  return Restore(s, dec, options, toc);
}

size_t DistinctInodes(const std::string& root) {
  std::set<std::pair<dev_t, ino_t>> inodes;
  for (auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file() || e.path().extension() != ".msg") continue;
    if (e.path().string().find("/=user/") == std::string::npos) continue;
    struct stat st;
    ::stat(e.path().c_str(), &st);
    inodes.insert({st.st_dev, st.st_ino});
  }
  return inodes.size();
}

int Shell(const std::string& cmd) {
  int rc = std::system(("bash -c 'set -o pipefail; " + cmd + "' >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

TEST(Stream, RoundTripIsIdenticalAndDuplicatesBecomeHardLinks) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A");
  std::string bytes = BackupToString(*a);
  auto b = store::Store::Init(tmp / "B", {"primary", "secondary"});
  SessionReport r = RestoreFromString(b.get(), bytes);
  EXPECT_EQ(r.errors, 0u);
  EXPECT_GT(r.links, 0u);
  ExpectEqualStores(*b, *a);
  // Identical content is one file at the destination: at most as many inodes as the source.
  std::set<Digest> digests;
  a->ForEachFolder([&](const store::FolderInfo& f) {
    for (auto& m : a->OpenFolder(f.user, f.folder)->Snapshot().messages) digests.insert(m.digest);
  });
  size_t dst_inodes = DistinctInodes(tmp / "B/partition");
  EXPECT_LE(dst_inodes, DistinctInodes(tmp / "A/partition"));
  EXPECT_GE(dst_inodes, digests.size());
  // Users keep their partitions, and their quota usage is that of the source.
  a->ForEachUser([&](const store::UserInfo& u) {
    EXPECT_EQ(b->FindUser(u.user)->partition, u.partition);
    EXPECT_EQ(b->FindUser(u.user)->quota_used, u.quota_used) << u.user;
    EXPECT_EQ(b->FindUser(u.user)->quota_limit, u.quota_limit) << u.user;
  });
}

// Appends `bodies` to user's INBOX (made if missing), one commit each.
void AppendToInbox(store::Store& s, const std::string& user, const std::vector<std::string>& bodies) {
  auto f = s.FindFolder(user, "INBOX") ? s.OpenFolder(user, "INBOX") : s.CreateFolder(user, "INBOX");
  for (const std::string& body : bodies) {
    auto w = f->NewMessage();
    w->Write(body);
    std::vector<store::StagedMessage> batch{w->Finish({})};
    f->Commit(batch);
  }
}

// The list mail every user of StoreWithListMail holds after a message of its own.
const std::string kListMail = "Subject: list mail\r\n\r\n" + std::string(5000, 'x') + "\r\n";

// A one-partition store at `root` whose `users` each hold a message of their own, then kListMail:
// its backup carries the list mail once, as a content record, and as link records after.
std::unique_ptr<store::Store> StoreWithListMail(const std::string& root, const std::vector<std::string>& users) {
  auto s = store::Store::Init(root, {"primary"});
  for (const std::string& user : users) AppendToInbox(*s, user, {"Subject: own\r\n\r\nof " + user + "\r\n", kListMail});
  return s;
}

// A message the stream carries as a link record (a later copy of content it sent before) whose
// file at the destination was lost or damaged (deleted, bytes changed, a hard link to another
// message, a FIFO): a rerun puts the content back under the message's own UID, as it repairs a
// content record's file, hard-linked again where it can be. It appended the bytes under a new
// UID instead, on every rerun, and left the record without its file, exit 0 (helper-155).
TEST(Stream, ARerunRepairsTheLostOrDamagedFileOfALinkedMessageAtItsUid) {
  TempDir tmp;
  auto a = StoreWithListMail(tmp / "A", {"amy", "bob"});
  const std::string bytes = BackupToString(*a);
  auto b = store::Store::Init(tmp / "B", {"primary"});
  SessionReport first = RestoreFromString(b.get(), bytes);
  ASSERT_EQ(first.errors, 0u);
  ASSERT_EQ(first.links, 1u) << "bob's copy of the list mail is a link record";
  const std::string bobs = b->OpenFolder("bob", "INBOX")->MessagePath(2);
  const std::string amys_own = b->OpenFolder("amy", "INBOX")->MessagePath(1);
  const size_t inodes = DistinctInodes(tmp / "B/partition");
  const std::vector<std::pair<std::string, std::function<void()>>> damages = {
      {"deleted", [&] { fs::remove(bobs); }},
      {"a byte changed",
       [&] {
         std::fstream io(bobs, std::ios::in | std::ios::out | std::ios::binary);
         io.seekp(100);
         io.put('y');
       }},
      {"a hard link to another message",
       [&] {
         fs::remove(bobs);
         fs::create_hard_link(amys_own, bobs);
       }},
      {"a FIFO",
       [&] {
         fs::remove(bobs);
         ASSERT_EQ(::mkfifo(bobs.c_str(), 0600), 0);
       }},
  };
  for (const auto& [what, damage] : damages) {
    // The list mail's two names share one inode: a change through one is seen through both, so
    // the damage that is not a new name is done to a fresh, unshared copy of the message.
    {
      const std::string copy = bobs + ".copy";
      fs::copy_file(bobs, copy);
      fs::rename(copy, bobs);
    }
    damage();
    SessionReport again = RestoreFromString(b.get(), bytes);
    EXPECT_EQ(again.errors, 0u) << what;
    EXPECT_EQ(again.repaired, 1u) << what;
    EXPECT_EQ(b->FindFolder("bob", "INBOX")->count, 2u) << what << ": no copy under a new UID";
    ExpectEqualStores(*b, *a);
    EXPECT_EQ(DistinctInodes(tmp / "B/partition"), inodes) << what << ": linked again";
    SessionReport third = RestoreFromString(b.get(), bytes);
    EXPECT_EQ(third.repaired, 0u) << what;
    EXPECT_EQ(third.skipped, 4u) << what;
  }
}

// The same for a copy an earlier run appended at another UID (the destination had its own
// message at the stream's UID): the lost file of that copy is put back there, not appended once
// more beside a record left without its file (helper-156). And where the repair must copy (the
// body kept from a folder the restore skipped, the repository entry gone too), the copy becomes
// the content's file: the next link links to it, where every repair made its own copy (disk use
// up 3.5x, helper-156).
TEST(Stream, ARerunRepairsAnAppendedCopyAtItsUidAndLinksTheRepairsOfOneContent) {
  TempDir tmp;
  auto a = StoreWithListMail(tmp / "A", {"amy", "bob", "cat"});
  const std::string bytes = BackupToString(*a);
  auto b = store::Store::Init(tmp / "B", {"primary"});
  // bob's UIDs 1 and 2 here are the destination's own messages: the stream's are appended (3, 4).
  AppendToInbox(*b, "bob", {"Subject: here 1\r\n\r\n1\r\n", "Subject: here 2\r\n\r\n2\r\n"});
  RestoreOptions selection;
  selection.names = {"user/bob/*", "user/cat/*"};  // amy's folder skipped: its bodies kept for the links
  ASSERT_EQ(RestoreFromString(b.get(), bytes, selection).errors, 0u);
  ASSERT_EQ(b->FindFolder("bob", "INBOX")->count, 4u);
  const std::string bobs = b->OpenFolder("bob", "INBOX")->MessagePath(4);
  const std::string cats = b->OpenFolder("cat", "INBOX")->MessagePath(2);
  ASSERT_EQ(ReadFile(bobs), kListMail);
  fs::remove(bobs);
  fs::remove(cats);
  fs::remove_all(b->PartitionPath("primary") + "/=digest");
  SessionReport again = RestoreFromString(b.get(), bytes, selection);
  EXPECT_EQ(again.errors, 0u);
  EXPECT_EQ(again.repaired, 2u);
  EXPECT_EQ(b->FindFolder("bob", "INBOX")->count, 4u) << "no copy under a new UID";
  EXPECT_EQ(ReadFile(bobs), kListMail);
  EXPECT_EQ(ReadFile(cats), kListMail);
  struct stat bob_st, cat_st;
  ASSERT_EQ(::stat(bobs.c_str(), &bob_st), 0);
  ASSERT_EQ(::stat(cats.c_str(), &cat_st), 0);
  EXPECT_EQ(bob_st.st_ino, cat_st.st_ino) << "the second repair links to the first one's copy";
  EXPECT_EQ(ReadFile(b->OpenFolder("bob", "INBOX")->MessagePath(2)), "Subject: here 2\r\n\r\n2\r\n");
  EXPECT_EQ(RestoreFromString(b.get(), bytes, selection).repaired, 0u);
}

// A destination whose partitions have a store format 1.0 (nested) repository: the restore puts
// its entries there, in that layout, and a second restore of the same content under other user
// names links to them instead of writing copies.
TEST(Stream, RestoreIntoANestedRepositoryKeepsItsLayoutAndLinksToIt) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A");
  const std::string bytes = BackupToString(*a);
  auto b = store::Store::Init(tmp / "B", {"primary", "secondary"});
  for (const char* p : {"primary", "secondary"}) fs::remove_all(b->PartitionPath(p) + "/=digest");
  SessionReport first = RestoreFromString(b.get(), bytes);
  EXPECT_EQ(first.errors, 0u);
  ExpectEqualStores(*b, *a);
  size_t entries = 0;
  for (const char* p : {"primary", "secondary"}) {
    relinker::Repository repo(b->PartitionPath(p));
    EXPECT_EQ(repo.layout(), store::RepositoryLayout::kNested);
    for (const std::string& dir : repo.BucketDirectories()) {
      EXPECT_EQ(std::count(dir.begin() + long(repo.root().size()), dir.end(), '/'), 2) << dir;
      for (auto& e : fs::directory_iterator(dir)) entries += e.path().extension() == ".msg";
    }
  }
  EXPECT_GT(entries, 0u);
  const size_t inodes = DistinctInodes(tmp / "B/partition");

  RestoreOptions renamed;
  a->ForEachUser([&](const store::UserInfo& u) { renamed.user_map[u.user] = u.user + "2"; });
  SessionReport second = RestoreFromString(b.get(), bytes, renamed);
  EXPECT_EQ(second.errors, 0u);
  EXPECT_EQ(DistinctInodes(tmp / "B/partition"), inodes) << "the renamed users' messages are links to the entries";
}

// Two restores into one partition at once (migrate --jobs, two pipes) that both carry a content
// neither found in the repository when it started: the one that commits second must link its
// copy to the first one's entry, not keep a second file. The second session is held on a user's
// write lock between its first user (its look at the empty repository) and the user that shares
// the content, while the first session restores that content whole.
TEST(Stream, ConcurrentRestoresOfOneContentKeepOneFile) {
  TempDir tmp;
  auto a = store::Store::Init(tmp / "A", {"primary"});
  const std::string shared = "Subject: list mail\r\n\r\n" + std::string(20000, 'x') + "\r\n";
  for (const char* user : {"amy", "bob", "cat"}) {
    auto f = a->CreateFolder(user, "INBOX");
    auto w = f->NewMessage();
    w->Write(std::string(user) == "bob" ? "Subject: bob's own\r\n\r\nonly bob\r\n" : shared);
    std::vector<store::StagedMessage> batch{w->Finish({})};
    f->Commit(batch);
  }
  BackupOptions first_users, second_users;
  first_users.names = {"/primary/user/amy"};
  second_users.names = {"/primary/user/bob", "/primary/user/cat"};
  const std::string first = BackupToString(*a, first_users), second = BackupToString(*a, second_users);

  auto b = store::Store::Init(tmp / "B", {"primary"});
  std::promise<void> waiting;
  std::atomic<bool> told{false};
  SessionReport second_report;
  std::optional<store::Store::UserWriteLock> cat = b->LockUserForWriting("cat");
  std::thread second_session([&] {
    RestoreOptions o;
    o.on_wait = [&](const std::string&) {
      if (!told.exchange(true)) waiting.set_value();
    };
    second_report = RestoreFromString(b.get(), second, o);
  });
  const bool waited = waiting.get_future().wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  if (waited) {
    EXPECT_EQ(RestoreFromString(b.get(), first).errors, 0u);
  }
  cat.reset();
  second_session.join();
  ASSERT_TRUE(waited) << "the second restore never waited for cat";
  EXPECT_EQ(second_report.errors, 0u);
  ExpectEqualStores(*b, *a);
  struct stat amy_file, cat_file;
  ASSERT_EQ(::stat(b->OpenFolder("amy", "INBOX")->MessagePath(1).c_str(), &amy_file), 0);
  ASSERT_EQ(::stat(b->OpenFolder("cat", "INBOX")->MessagePath(1).c_str(), &cat_file), 0);
  EXPECT_EQ(amy_file.st_ino, cat_file.st_ino) << "cat's copy of the shared message is a file of its own";
  EXPECT_EQ(DistinctInodes(tmp / "B/partition"), 2u);
}

// A visible mailbox keeps its UIDVALIDITY under a restore, even one that never held a message
// (an INBOX an import or deliver --create made between a killed restore and its rerun). Giving
// it the archive's (2026-12-04, reverted the same day) let mail delivered while the restore ran
// take UIDs 1, 2, ... under the archive's UIDVALIDITY, so the source's messages of those UIDs
// moved above: a client that knew the source read other messages under its UIDs (helper-68).
// The archive's messages are appended under the mailbox's own UIDVALIDITY instead, which tells
// every client to forget what it knew of the UIDs.
// A restore copies keyword names as the stream spells them, unlike an import or a pull, which
// take a keyword in any case for the folder's (store::FindUserFlagName): a folder may hold `A`
// and `a` apart, and migrate's proof (store::Summarize) and verify compare names exactly; a
// restore that took the stream's `$Junk` for the folder's `$JUNK` failed every migrate attempt
// on a "summary differs" (helper-150).
TEST(Stream, ARestoreKeepsTheStreamsSpellingOfAKeyword) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A", 3, 5);
  const std::string bytes = BackupToString(*a);
  auto b = store::Store::Init(tmp / "B", {"primary", "secondary"});
  ASSERT_EQ(RestoreFromString(b.get(), bytes).errors, 0u);
  std::string user;
  a->ForEachUser([&](const store::UserInfo& u) { user = u.user; });  // MakeSource's keyword folder is the last user's
  b->OpenFolder(user, "INBOX")->SetUserFlagNames({"$JUNK", "$label1"});
  const store::FolderSnapshot before = b->OpenFolder(user, "INBOX")->Snapshot();
  ASSERT_EQ(before.messages.at(0).user_flags, 0b10u);
  ASSERT_EQ(RestoreFromString(b.get(), bytes).errors, 0u);
  const store::FolderSnapshot after = b->OpenFolder(user, "INBOX")->Snapshot();
  EXPECT_EQ(after.info.user_flag_names, (std::vector<std::string>{"$JUNK", "$label1", "$Junk", "$Label1"}));
  ASSERT_EQ(after.messages.size(), before.messages.size());
  EXPECT_EQ(after.messages.at(0).user_flags, 0b1000u);
  for (const std::string& line : CompareStores(*b, *a, {}).differences) ADD_FAILURE() << line;
}

TEST(Stream, AVisibleMailboxThatNeverHeldAMessageKeepsItsUidValidity) {
  TempDir tmp;
  auto a = store::Store::Init(tmp / "A", {"primary"});
  for (int i = 0; i < 3; ++i) {
    auto f = a->CreateFolder("amy", "INBOX");
    auto w = f->NewMessage();
    w->Write("Subject: amy " + std::to_string(i) + "\r\n\r\nbody\r\n");
    std::vector<store::StagedMessage> batch{w->Finish({})};
    f->Commit(batch);
  }
  const std::string bytes = BackupToString(*a);
  auto b = store::Store::Init(tmp / "B", {"primary"});
  b->CreateUser("amy", {}, /*with_inbox=*/false);
  // Fresh UIDVALIDITYs come from the clock, which both stores of this test share: given.
  const uint32_t own = a->FindFolder("amy", "INBOX")->uidvalidity + 1000;
  b->CreateFolder("amy", "INBOX", own);
  ASSERT_EQ(b->FindFolder("amy", "INBOX")->uidnext, 1u);
  EXPECT_EQ(RestoreFromString(b.get(), bytes).errors, 0u);
  const store::FolderInfo inbox = *b->FindFolder("amy", "INBOX");
  EXPECT_EQ(inbox.uidvalidity, own);
  EXPECT_EQ(inbox.count, 3u) << "every message of the archive is there";
}

TEST(Stream, RestoringTheSameStreamTwiceAddsNothing) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A");
  std::string bytes = BackupToString(*a);
  auto b = store::Store::Init(tmp / "B", {"primary", "secondary"});
  RestoreFromString(b.get(), bytes);
  SessionReport again = RestoreFromString(b.get(), bytes);
  EXPECT_EQ(again.skipped, again.messages + again.links);
  EXPECT_EQ(again.linked, 0u);
  ExpectEqualStores(*b, *a);
}

TEST(Stream, IncrementalStreamCompletesTheDestination) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A");
  auto b = store::Store::Init(tmp / "B", {"primary", "secondary"});
  RestoreFromString(b.get(), BackupToString(*a));
  // Late deliveries after the first pass, and a flag change.
  int64_t t0 = ::time(nullptr) + 1000;
  std::string user;
  a->ForEachUser([&](const store::UserInfo& u) { if (user.empty()) user = u.user; });
  auto inbox = a->OpenFolder(user, "INBOX");
  for (int i = 0; i < 5; ++i) {
    auto w = inbox->NewMessage();
    w->Write("Subject: late " + std::to_string(i) + "\r\n\r\nlate mail\r\n");
    store::MessageMeta meta;
    meta.save_time = t0 + i;
    std::vector<store::StagedMessage> batch{w->Finish(meta)};
    inbox->Commit(batch);
  }
  a->CreateFolder(user, "Brand/New");
  BackupOptions since;
  since.since = t0;
  SessionReport r = RestoreFromString(b.get(), BackupToString(*a, since));
  EXPECT_EQ(r.messages + r.links, 5u);
  ExpectEqualStores(*b, *a);
}

TEST(Stream, UserMapRenamesUsers) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A", 3, 10);
  std::vector<std::string> names;
  a->ForEachUser([&](const store::UserInfo& u) { names.push_back(u.user); });
  auto b = store::Store::Init(tmp / "B", {});
  RestoreOptions o;
  o.user_map[names[1]] = "renamed.user";
  RestoreFromString(b.get(), BackupToString(*a), o);
  EXPECT_FALSE(b->FindUser(names[1]));
  ASSERT_TRUE(b->FindUser("renamed.user"));
  EXPECT_EQ(b->ListFolders("renamed.user").size(), a->ListFolders(names[1]).size());
  EXPECT_EQ(b->Subscriptions("renamed.user").at(0), "user/renamed.user/INBOX");
  EXPECT_EQ(b->FindFolder("renamed.user", "INBOX")->count, a->FindFolder(names[1], "INBOX")->count);
}

// Two stream users restored as one would merge their mail beyond telling apart: a map onto a
// user the stream also holds, or two users onto one (as a network REQUEST may carry it), stops
// the restore before the second user's records are written. A shift (a=b, b=c) is fine.
TEST(Stream, AUserMapThatMergesTwoUsersIsRefused) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A", 3, 10);
  std::vector<std::string> names;
  a->ForEachUser([&](const store::UserInfo& u) { names.push_back(u.user); });
  const std::string stream = BackupToString(*a);
  const std::vector<std::map<std::string, std::string>> merging = {
      {{names[0], names[1]}},                      // onto a user the stream holds
      {{names[0], "carol"}, {names[1], "carol"}},  // two onto one
  };
  int n = 0;
  for (const auto& map : merging) {
    auto b = store::Store::Init(tmp / ("B" + std::to_string(n++)), {});
    RestoreOptions o;
    o.user_map = map;
    try {
      RestoreFromString(b.get(), stream, o);
      ADD_FAILURE() << "restored with a merging map";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("would both be restored as"), std::string::npos) << e.what();
    }
    // Whoever got there first is whole, and alone.
    const std::string merged = map.begin()->second;
    auto count = [](store::Store& s, const std::string& user) {
      uint64_t n = 0;
      for (const store::FolderInfo& f : s.ListFolders(user)) n += f.count;
      return n;
    };
    if (b->FindUser(merged)) {
      const uint64_t total = count(*b, merged), first = count(*a, names[0]), second = count(*a, names[1]);
      EXPECT_TRUE(total == first || total == second) << total << " messages: " << first << " + " << second << " merged?";
    }
  }
  // A rotation of the three users is no merge.
  auto b = store::Store::Init(tmp / "rotated", {});
  RestoreOptions o;
  o.user_map = {{names[0], names[1]}, {names[1], names[2]}, {names[2], names[0]}};
  RestoreFromString(b.get(), stream, o);
  for (size_t i = 0; i < 3; ++i) {
    const std::string& to = names[(i + 1) % 3];
    EXPECT_EQ(b->ListFolders(to).size(), a->ListFolders(names[i]).size()) << names[i] << " -> " << to;
    EXPECT_EQ(b->FindFolder(to, "INBOX")->count, a->FindFolder(names[i], "INBOX")->count) << names[i] << " -> " << to;
  }
}

TEST(Stream, TableOfContentsWritesNothing) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A", 3, 10);
  std::ostringstream toc;
  RestoreOptions o;
  o.table_of_contents = true;
  SessionReport r = RestoreFromString(nullptr, BackupToString(*a), o, &toc);
  EXPECT_EQ(r.folders, [&] { int n = 0; a->ForEachFolder([&](const store::FolderInfo&) { ++n; }); return uint64_t(n); }());
  EXPECT_NE(toc.str().find("mailbox user/"), std::string::npos);
}

TEST(Stream, NameSelectionGroupsAndMailboxes) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A", 12, 5);
  {
    std::ofstream conf(tmp / "A/config/backup-groups.conf");
    conf << "digits=[0-9].*\nletters=[a-z].*\n";
  }
  std::vector<std::string> names;
  a->ForEachUser([&](const store::UserInfo& u) { names.push_back(u.user); });
  auto restored_users = [&](std::vector<std::string> sel) {
    TempDir t;
    auto b = store::Store::Init(t.path(), {"primary", "secondary"});
    BackupOptions o;
    o.names = sel;
    RestoreFromString(b.get(), BackupToString(*a, o));
    std::vector<std::string> out;
    b->ForEachUser([&](const store::UserInfo& u) { out.push_back(u.user); });
    return out;
  };
  for (const std::string& u : restored_users({"/primary/letters"})) {
    EXPECT_TRUE(u[0] >= 'a' && u[0] <= 'z') << u;
    EXPECT_EQ(a->FindUser(u)->partition, "primary");
  }
  if (a->FindUser(names[0])->partition == "secondary")
    EXPECT_EQ(restored_users({"/secondary/user/" + names[0]}).size(), 1u);
  else  // a user outside the named partition selects nothing: an error, not an empty backup
    EXPECT_THROW(restored_users({"/secondary/user/" + names[0]}), Error);
  EXPECT_EQ(restored_users({"user/" + names[4] + "/INBOX"}), std::vector<std::string>{names[4]});
  EXPECT_EQ(restored_users({"/"}).size(), names.size());
  EXPECT_THROW(restored_users({"/primary/nogroup"}), Error);
}

// glibc's regcomp is exponential in stacked repetitions ("a" and 20 '+' take 10 s and 700 MB;
// found by fuzz_groups); POSIX leaves them undefined, so the file is refused with its line.
TEST(BackupGroups, StackedRepetitionsAreRefusedWithTheirLine) {
  TempDir tmp;
  auto read = [&](const std::string& text) {
    std::ofstream(tmp / "groups.conf") << text;
    return ReadBackupGroups(tmp / "groups.conf");
  };
  for (const char* bad : {"a+++", "a*+", "[0-9]+*", "x{2}{3}", "a?*"}) {
    try {
      read(std::string("ok=[a-z]+\ng=") + bad + "\n");
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
    }
  }
  // Bracket expressions and escapes are not repetitions.
  EXPECT_EQ(read("a=[+*]+\nb=a\\++\nc=[]+]*\nd=[[:digit:]+]+\n").size(), 4u);
}

// "groupA = [a-l].*": blanks around the '=' are layout. Kept in the expression they made it
// match nobody, and a fleet migration moved no one with every job "done".
TEST(BackupGroups, BlanksAroundTheExpressionAreLayout) {
  TempDir tmp;
  std::ofstream(tmp / "groups.conf") << "groupA = [a-l].*  \ngroupB\t=\t.*\t\n";
  const std::vector<BackupGroup> groups = ReadBackupGroups(tmp / "groups.conf");
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].regex, "[a-l].*");
  EXPECT_TRUE(GroupMatches(groups[0], "joe"));
  EXPECT_FALSE(GroupMatches(groups[0], "zoe"));
  EXPECT_TRUE(GroupMatches(groups[1], "zoe"));
}

TEST(Stream, TruncatedStreamsFailCleanlyAndRerunCompletes) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A", 6, 15);
  std::string plain = BackupToString(*a, {}, 0);
  std::string packed = BackupToString(*a, {}, 3);
  std::mt19937_64 rng(99);
  for (int i = 0; i < 24; ++i) {
    const std::string& whole = i % 2 ? packed : plain;
    size_t cut = std::uniform_int_distribution<size_t>(0, whole.size() - 1)(rng);
    TempDir t;
    auto b = store::Store::Init(t.path(), {"primary", "secondary"});
    try {
      RestoreFromString(b.get(), whole.substr(0, cut));
      ADD_FAILURE() << "truncation at " << cut << " not detected";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kCorrupt) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("stream:", 0), 0u) << e.what();
    }
    ExpectNothingHalfVisible(*b, *a);
    RestoreFromString(b.get(), whole);  // the rerun finishes the job
    ExpectEqualStores(*b, *a);
  }
}

TEST(Stream, FlippedBytesAreDetectedBeforeAnythingWrongIsVisible) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A", 6, 15);
  std::string plain = BackupToString(*a, {}, 0);
  std::mt19937_64 rng(5);
  for (int i = 0; i < 24; ++i) {
    std::string bad = plain;
    size_t at = std::uniform_int_distribution<size_t>(0, bad.size() - 1)(rng);
    bad[at] = char(bad[at] ^ (1 << (i % 8)));
    TempDir t;
    auto b = store::Store::Init(t.path(), {"primary", "secondary"});
    EXPECT_THROW(RestoreFromString(b.get(), bad), Error) << "flip at " << at;
    ExpectNothingHalfVisible(*b, *a);
  }
}

// Streams that name things outside the store: each is refused and nothing is written outside.
TEST(Stream, HostileNamesAreRejected) {
  TempDir tmp;
  struct Case {
    std::string user, folder;
  };
  std::vector<Case> cases = {{"../x", "INBOX"},         {"joe", "../../etc"},    {"joe", "/etc/passwd"},
                             {"joe", "a/../../b"},      {"/abs", "INBOX"},       {"joe", std::string(1000, 'a')},
                             {"joe", "x\x01y"},         {"jo/e", "INBOX"},        {"joe", "."}};
  for (const Case& c : cases) {
    TempDir t;
    std::string root = t / "store";
    auto b = store::Store::Init(root, {});
    format::StringSink sink;
    format::Encoder enc(sink);
    enc.WriteHeader({});
    format::UserRecord u;
    u.user = c.user;
    u.status = "active";
    enc.WriteUser(u);
    format::FolderRecord f;
    f.user = c.user;
    f.folder = c.folder;
    f.uidvalidity = 1;
    f.uidnext = 2;
    enc.WriteFolder(f);
    format::MessageRecord m;
    std::string body = "Subject: x\r\n\r\nx";
    m.uid = 1;
    m.size = body.size();
    m.digest = DigestOf(body);
    enc.BeginMessage(m);
    enc.BodyChunk(body);
    enc.EndMessage();
    enc.EndFolder();
    enc.Finish();
    try {
      RestoreFromString(b.get(), sink.data());
      ADD_FAILURE() << "accepted user '" << c.user << "' folder '" << c.folder << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument) << e.what();
    }
    RestoreOptions keep_going;
    keep_going.continue_on_error = true;
    SessionReport r = RestoreFromString(b.get(), sink.data(), keep_going);
    EXPECT_GT(r.errors, 0u);
    std::vector<std::string> outside;
    for (auto& e : fs::directory_iterator(t.path())) outside.push_back(e.path().filename());
    EXPECT_EQ(outside, std::vector<std::string>{"store"});
    int folders = 0;
    b->ForEachFolder([&](const store::FolderInfo&) { ++folders; });
    EXPECT_EQ(folders, 0);
  }
}

TEST(StreamCli, PipeZstdCliAndKillMidwayThenRerun) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A", 8, 25);
  a.reset();
  const std::string bin = STOREMOVE_BIN, A = tmp / "A", B = tmp / "B", C = tmp / "C", D = tmp / "D";
  ASSERT_EQ(Shell(bin + " init --store " + B + " --partition primary --partition secondary"), 0);
  ASSERT_EQ(Shell(bin + " backup --store " + A + " -f - / | " + bin + " restore --store " + B + " -f -"), 0);
  // The compressed stream is plain zstd: the zstd CLI decodes it, and restore reads either form.
  ASSERT_EQ(Shell(bin + " backup --store " + A + " -f " + tmp.path() + "/s.zst /"), 0);
  ASSERT_EQ(Shell("zstd -q -d -c " + tmp.path() + "/s.zst > " + tmp.path() + "/s.raw"), 0);
  ASSERT_EQ(Shell(bin + " init --store " + C + " --partition primary --partition secondary"), 0);
  ASSERT_EQ(Shell(bin + " restore --store " + C + " -f " + tmp.path() + "/s.raw"), 0);

  // Kill -9 the restore half way through the stream, then rerun it.
  ASSERT_EQ(Shell(bin + " init --store " + D + " --partition primary --partition secondary"), 0);
  std::string raw;
  {
    std::ifstream in(tmp.path() + "/s.raw", std::ios::binary);
    raw.assign(std::istreambuf_iterator<char>(in), {});
  }
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(fds[0], 0);
    ::close(fds[1]);
    int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 2);
    ::execl(bin.c_str(), bin.c_str(), "restore", "--store", D.c_str(), "-f", "-", (char*)nullptr);
    ::_exit(127);
  }
  ::close(fds[0]);
  size_t half = raw.size() / 2;
  ASSERT_EQ(::write(fds[1], raw.data(), half), ssize_t(half));  // blocks until restore has read it
  ::kill(pid, SIGKILL);
  int status;
  ::waitpid(pid, &status, 0);
  ::close(fds[1]);
  EXPECT_TRUE(WIFSIGNALED(status));
  {
    auto src = store::Store::Open(A);
    auto d = store::Store::Open(D);
    ExpectNothingHalfVisible(*d, *src);
  }
  ASSERT_EQ(Shell(bin + " restore --store " + D + " -f " + tmp.path() + "/s.zst"), 0);

  auto src = store::Store::Open(A);
  for (const std::string& dir : {B, C, D}) {
    auto dst = store::Store::Open(dir);
    ExpectEqualStores(*dst, *src);
  }
  // A damaged file on the command line: one line naming the problem, non-zero exit.
  std::string bad = raw.substr(0, raw.size() - 10);
  std::ofstream(tmp.path() + "/bad.raw", std::ios::binary) << bad;
  EXPECT_EQ(Shell(bin + " restore --store " + B + " -f " + tmp.path() + "/bad.raw"), 65);
}

}  // namespace
}  // namespace storemove::stream

namespace storemove::stream {
namespace {

// Without single instance at the source, copies are separate files: the backup finds them by
// digest, proves them equal byte for byte, and sends links.
TEST(Stream, SeparateCopiesAreFoundByDigestAndSentAsLinks) {
  TempDir tmp;
  auto a = store::Store::Init(tmp / "A", {});
  store::GenerateOptions g;
  g.users = 10;
  g.messages_per_user = 20;
  g.dup_rate = 0.3;
  g.single_instance = false;
  g.seed = 21;
  store::Generate(*a, g);
  format::StringSink sink;
  format::Encoder enc(sink);
  SessionReport sent = Backup(*a, {}, enc);
  EXPECT_GT(sent.links, 0u);
  auto b = store::Store::Init(tmp / "B", {});
  format::StringSource src(sink.data());
  format::Decoder dec(src);
  Restore(b.get(), dec, {});
  ExpectEqualStores(*b, *a);
}

// A backup whose table of sent contents is tiny forgets nearly everything and sends most
// duplicates as bodies again; the restore must still produce an equal, single-instance store.
TEST(Stream, ForgottenContentIsSentAgainAndStillSingleInstanced) {
  TempDir tmp;
  auto a = MakeSource(tmp / "A");
  BackupOptions forgetful;
  forgetful.sent_contents_capacity = 4;
  format::StringSink small_sink, full_sink;
  {
    format::Encoder enc(small_sink);
    Backup(*a, forgetful, enc);
  }
  SessionReport full;
  {
    format::Encoder enc(full_sink);
    full = Backup(*a, {}, enc);
  }
  ASSERT_GT(full.links, 10u);
  EXPECT_GT(small_sink.data().size(), full_sink.data().size());  // bodies sent again
  auto b = store::Store::Init(tmp / "B", {"primary", "secondary"});
  format::StringSource src(small_sink.data());
  format::Decoder dec(src);
  SessionReport r = Restore(b.get(), dec, {});
  EXPECT_EQ(r.errors, 0u);
  ExpectEqualStores(*b, *a);
  // As many files as with the full table: the restore found the repeated bodies in its repository.
  auto c = store::Store::Init(tmp / "C", {"primary", "secondary"});
  format::StringSource full_src(full_sink.data());
  format::Decoder full_dec(full_src);
  Restore(c.get(), full_dec, {});
  EXPECT_EQ(DistinctInodes(tmp / "B/partition"), DistinctInodes(tmp / "C/partition"));

  // The same when the table keeps every content but only the last folder's path: links only
  // within a folder, every other copy sent again and linked by the restore.
  BackupOptions one_folder;
  one_folder.folder_paths_kept = 1;
  format::StringSink ring_sink;
  SessionReport ringed;
  {
    format::Encoder enc(ring_sink);
    ringed = Backup(*a, one_folder, enc);
  }
  EXPECT_LT(ringed.links, full.links);
  auto d = store::Store::Init(tmp / "D", {"primary", "secondary"});
  format::StringSource ring_src(ring_sink.data());
  format::Decoder ring_dec(ring_src);
  EXPECT_EQ(Restore(d.get(), ring_dec, {}).errors, 0u);
  ExpectEqualStores(*d, *a);
  EXPECT_EQ(DistinctInodes(tmp / "D/partition"), DistinctInodes(tmp / "C/partition"));
}

// A pipe or socket gets the stream in pieces of 128 KiB, so that its reader works while the
// writer goes on; a file gets 1 MiB writes (docs/performance.md, "The pipe on tmpfs").
TEST(Transport, PipesGetSmallWritesFilesLargeOnes) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  ASSERT_GE(::fcntl(write_end.get(), F_SETPIPE_SZ, 1 << 20), 1 << 20);
  int s[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
  UniqueFd s0(s[0]), s1(s[1]);
  TempDir dir;
  UniqueFd file = OpenFile(dir.path() + "/out", O_WRONLY | O_CREAT | O_EXCL, 0600);
  EXPECT_EQ(OutputBufferFor(write_end.get()), size_t{128} << 10);
  EXPECT_EQ(OutputBufferFor(s0.get()), size_t{128} << 10);
  EXPECT_EQ(OutputBufferFor(file.get()), size_t{1} << 20);

  // 200 KiB written in 4 KiB pieces, no Flush: the reader already has the first 128 KiB.
  FdSink sink(write_end.get(), "pipe");
  const std::string piece(4096, 'x');
  for (int i = 0; i < 50; ++i) sink.Write(piece.data(), piece.size());
  std::string got(1 << 20, '\0');
  const ssize_t n = ::read(read_end.get(), got.data(), got.size());
  EXPECT_GE(n, ssize_t{128} << 10);
  EXPECT_LT(n, ssize_t{200} << 10);
  sink.Flush();
  EXPECT_EQ(sink.bytes(), uint64_t{200} << 10);
}

// An IMAP RENAME of a folder is ordinary on a live store: one done while backup runs, between
// the listing and the snapshot, must not leave the folder out of a stream that backup reports as
// complete. It is found under its new name; one renamed after its snapshot is not sent twice.
std::unique_ptr<store::Store> ThreeUsersFourFolders(const std::string& dir) {
  auto s = store::Store::Init(dir, {"primary"});
  int n = 0;
  for (const char* user : {"amy", "bob", "cat"})
    for (const char* folder : {"INBOX", "F1", "F2", "F3"}) {
      auto f = s->CreateFolder(user, folder);
      auto w = f->NewMessage();
      w->Write("Subject: " + std::string(user) + " " + folder + "\r\n\r\nbody " + std::to_string(++n) + "\r\n");
      std::vector<store::StagedMessage> batch{w->Finish({})};
      f->Commit(batch);
    }
  return s;
}

std::unique_ptr<store::Store> RestoredFrom(const std::string& dir, const std::string& stream) {
  auto dst = store::Store::Init(dir, {"primary"});
  format::StringSource in(stream);
  format::Decoder dec(in);
  EXPECT_EQ(Restore(dst.get(), dec, {}).errors, 0u);
  return dst;
}

uint64_t MessageCount(store::Store& s) {
  uint64_t messages = 0;
  s.ForEachFolder([&](const store::FolderInfo& f) { messages += f.count; });
  return messages;
}

// Migrate's passes name their group's users (only_users): each is looked up, not found in a scan
// of every user. A name that is no user (deleted, renamed) is passed over, as the scan passed it;
// the selection still applies.
TEST(Backup, OnlyUsersTakesTheNamedUsersThereAreAndTheSelectionKeeps) {
  TempDir tmp;
  auto src = ThreeUsersFourFolders(tmp / "src");
  const std::set<std::string> named{"bob", "cat", "dan"};
  BackupOptions o;
  o.only_users = &named;
  const std::string stream = BackupToString(*src, o, 0);
  auto dst = RestoredFrom(tmp / "dst", stream);
  std::vector<std::string> users;
  dst->ForEachUser([&](const store::UserInfo& u) { users.push_back(u.user); });
  EXPECT_EQ(users, (std::vector<std::string>{"bob", "cat"}));
  EXPECT_EQ(MessageCount(*dst), 8u);

  o.names = {"user/cat/*"};
  auto cat_only = RestoredFrom(tmp / "dst2", BackupToString(*src, o, 0));
  users.clear();
  cat_only->ForEachUser([&](const store::UserInfo& u) { users.push_back(u.user); });
  EXPECT_EQ(users, std::vector<std::string>{"cat"});
}

TEST(Backup, AFolderRenamedWhileItRunsIsInTheStream) {
  TempDir tmp;
  auto src = ThreeUsersFourFolders(tmp / "src");
  BackupOptions o;
  bool renamed = false;
  o.before_folder_opened = [&](const std::string& mailbox) {
    // F3 goes to Z3 after the listing, and F1, already in the stream, to A1.
    if (mailbox == "user/amy/F2" && !renamed) {
      renamed = true;
      store::RenameFolder(*src, "amy", "F3", "Z3");
      store::RenameFolder(*src, "amy", "F1", "A1");
    }
  };
  format::StringSink sink;
  format::Encoder enc(sink);
  EXPECT_EQ(Backup(*src, o, enc).messages, 12u);
  ASSERT_TRUE(renamed);
  auto dst = RestoredFrom(tmp / "dst", sink.data());
  EXPECT_TRUE(dst->FindFolder("amy", "Z3")) << "the folder renamed before its snapshot";
  EXPECT_TRUE(dst->FindFolder("amy", "F1")) << "the folder renamed after its snapshot, under the name it had";
  EXPECT_FALSE(dst->FindFolder("amy", "A1")) << "sent once, not twice";
  EXPECT_EQ(MessageCount(*dst), 12u);
}

// A folder moved to another partition and back (or renamed away and back) while backup reads
// it is read whole, wherever it is. The defect this guards against (helper-52: 28 of 30 backups
// short, exit 0) came from a lookup that met the folder between two places, in another process,
// and took it for deleted; that window cannot be hit from here, and this test passes on the code
// before the fix too. The reviewer's script measured the fix (docs/store-format.md §6.2).
TEST(Backup, AFolderMovedAwayAndBackAfterItsSnapshotIsReadWhereItIs) {
  for (const bool by_partition : {true, false}) {
    SCOPED_TRACE(by_partition ? "partition move" : "rename");
    TempDir tmp;
    auto src = store::Store::Init(tmp / "src", {"primary", "second"});
    uint64_t n = 0;
    for (const char* folder : {"INBOX", "F1", "F2", "F3", "F4"}) {
      auto f = src->CreateFolder("amy", folder);
      for (int i = 0; i < 20; ++i) {
        auto w = f->NewMessage();
        w->Write("Subject: " + std::string(folder) + "\r\n\r\nbody " + std::to_string(++n) + "\r\n");
        std::vector<store::StagedMessage> batch{w->Finish({})};
        f->Commit(batch);
      }
    }
    BackupOptions o;
    int moves = 0;
    const auto move = [&](bool away) {
      ++moves;
      if (by_partition) store::MoveUser(*src, "amy", away ? "second" : "primary");
      else if (away) store::RenameFolder(*src, "amy", "F3", "G3");
      else store::RenameFolder(*src, "amy", "G3", "F3");
    };
    // Away after every folder's snapshot (F4's is the last), before any file is read; back once
    // F3's first message was read where it had gone. The rest of F3 is where it was at first.
    o.before_folder_opened = [&](const std::string& mailbox) {
      if (mailbox == "user/amy/F4" && moves == 0) move(true);
    };
    uint64_t sent = 0;
    o.on_progress = [&](uint64_t messages, uint64_t) {
      sent += messages;
      if (sent > 60 && moves == 1) move(false);
    };
    format::StringSink sink;
    format::Encoder enc(sink);
    const SessionReport r = Backup(*src, o, enc);
    ASSERT_EQ(moves, 2);
    EXPECT_EQ(r.errors, 0u) << ::testing::PrintToString(r.error_lines);
    EXPECT_EQ(r.messages, n);
    EXPECT_EQ(MessageCount(*RestoredFrom(tmp / "dst", sink.data())), n);
  }
}

// A user renamed (or deleted) while backup runs is an administrator's operation whose result the
// store no longer tells apart, and the new name may be behind the scan: an error line (exit 65),
// never a stream that looks complete. Users not involved are sent once.
TEST(Backup, AUserRenamedWhileItRunsIsAnErrorNotASilentGap) {
  TempDir tmp;
  auto src = ThreeUsersFourFolders(tmp / "src");
  BackupOptions o;
  bool renamed = false;
  o.before_user_listed = [&](const std::string& user) {
    if (user == "cat" && !renamed) {
      renamed = true;
      store::RenameUser(*src, "cat", "aaron");
    }
  };
  format::StringSink sink;
  format::Encoder enc(sink);
  const SessionReport r = Backup(*src, o, enc);
  ASSERT_TRUE(renamed);
  EXPECT_EQ(r.errors, 1u);
  ASSERT_EQ(r.error_lines.size(), 1u);
  EXPECT_NE(r.error_lines[0].find("user cat was deleted or renamed while backup ran"), std::string::npos) << r.error_lines[0];
  EXPECT_EQ(r.users, 2u) << "amy and bob, once each";
  EXPECT_EQ(MessageCount(*RestoredFrom(tmp / "dst", sink.data())), 8u);

  // Renamed in the middle of its folders (after the first one's snapshot): the same, with the
  // mailbox it could not finish named.
  BackupOptions middle;
  bool moved = false;
  middle.before_folder_opened = [&](const std::string& mailbox) {
    if (mailbox == "user/bob/F2" && !moved) {
      moved = true;
      store::RenameUser(*src, "bob", "zed");
    }
  };
  format::StringSink again;
  format::Encoder enc2(again);
  const SessionReport m = Backup(*src, middle, enc2);
  ASSERT_TRUE(moved);
  EXPECT_GE(m.errors, 1u);
  bool named = false;
  for (const std::string& line : m.error_lines)
    named = named || line.find("user/bob/F1 UID 1: its user was deleted or renamed while backup read the mailbox") !=
                         std::string::npos;
  EXPECT_TRUE(named) << ::testing::PrintToString(m.error_lines);
}

// The scan reads users in batches of 512: a user renamed from a name the scan has not read yet
// to one it has passed is in neither batch. That is an error line naming it, also when it is
// renamed twice (the name between never read) or once more after the scan; a user renamed ahead
// of the scan, or after the scan read it, is in the stream and no error.
TEST(Backup, AUserRenamedBehindTheScanIsAnErrorNotASilentGap) {
  TempDir tmp;
  auto src = store::Store::Init(tmp / "src", {"primary"});
  char name[8];
  for (int i = 0; i < 600; ++i) {  // more than one batch
    std::snprintf(name, sizeof name, "a%03d", i);
    src->CreateUser(name, {}, /*with_inbox=*/false);
  }
  for (const char* user : {"yan", "zed", "zoe"}) {
    auto f = src->CreateFolder(user, "INBOX");
    auto w = f->NewMessage();
    w->Write("Subject: " + std::string(user) + "\r\n\r\nbody\r\n");
    std::vector<store::StagedMessage> batch{w->Finish({})};
    f->Commit(batch);
  }
  BackupOptions o;
  bool renamed = false;
  bool renamed_after = false;
  o.before_user_listed = [&](const std::string& user) {
    if (user == "a100" && !renamed) {  // the first batch (a000..a511) is read, the second not yet
      renamed = true;
      store::RenameUser(*src, "zoe", "a050x");  // from ahead to behind: passed over
      store::RenameUser(*src, "yan", "yz");     // ahead to ahead: read under its new name
      store::RenameUser(*src, "a002", "a0021");  // behind to behind: read under its old name
      store::RenameUser(*src, "zed", "anna");   // twice: the name between was never read
      store::RenameUser(*src, "anna", "a060x");
    }
    if (user == "a590" && !renamed_after) {  // the scan has read every batch
      renamed_after = true;
      store::RenameUser(*src, "a050x", "a050y");  // once more, after the scan
    }
  };
  format::StringSink sink;
  format::Encoder enc(sink);
  const SessionReport r = Backup(*src, o, enc);
  ASSERT_TRUE(renamed && renamed_after);
  EXPECT_EQ(r.errors, 2u);
  ASSERT_EQ(r.error_lines.size(), 2u) << ::testing::PrintToString(r.error_lines);
  EXPECT_EQ(r.error_lines[0], "user a050y (renamed from zoe while backup ran) is not in this stream under either name; "
                              "run the backup again");
  EXPECT_EQ(r.error_lines[1], "user a060x (renamed from zed while backup ran) is not in this stream under either name; "
                              "run the backup again");
  auto dst = RestoredFrom(tmp / "dst", sink.data());
  EXPECT_TRUE(dst->FindFolder("yz", "INBOX"));
  EXPECT_FALSE(dst->FindUser("a050x"));

  // A backup that starts after the renames: nothing to say.
  format::StringSink later;
  format::Encoder enc2(later);
  const SessionReport again = Backup(*src, {}, enc2);
  EXPECT_EQ(again.errors, 0u) << ::testing::PrintToString(again.error_lines);
  EXPECT_TRUE(RestoredFrom(tmp / "dst2", later.data())->FindFolder("a050y", "INBOX"));
}

// A folder deleted after its snapshot, its user still there, is gone like an expunged message:
// no error (a busy store deletes folders during every nightly backup).
TEST(Backup, AFolderDeletedAfterItsSnapshotIsNoError) {
  TempDir tmp;
  auto src = ThreeUsersFourFolders(tmp / "src");
  BackupOptions o;
  bool deleted = false;
  o.before_folder_opened = [&](const std::string& mailbox) {
    if (mailbox == "user/amy/F2" && !deleted) {
      deleted = true;
      store::DeleteFolder(*src, "amy", "F1");
    }
  };
  format::StringSink sink;
  format::Encoder enc(sink);
  const SessionReport r = Backup(*src, o, enc);
  ASSERT_TRUE(deleted);
  EXPECT_EQ(r.errors, 0u) << ::testing::PrintToString(r.error_lines);
}

}  // namespace
}  // namespace storemove::stream
