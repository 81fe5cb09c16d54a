// Tests of store/admin: deleting and renaming mailboxes and users, partition moves, the
// verified-before-delete guard, and the storemove delete / rename commands.
#include "store/admin.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <set>

#include <gtest/gtest.h>

#include "store/mboxlist.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {
namespace {

using storemove::testing::CliResult;
using storemove::testing::RunCli;
using storemove::testing::TempDir;
namespace fs = std::filesystem;

Errc CodeOf(const std::function<void()>& fn, std::string* message = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  ADD_FAILURE() << "no error thrown";
  return Errc::kInterrupted;
}

std::string Msg(const std::string& subject) {
  return "From: a@example.net\r\nSubject: " + subject + "\r\n\r\nbody of " + subject + "\r\n";
}

uint32_t Deliver(Store& store, std::string_view user, std::string_view folder, const std::string& bytes) {
  auto f = store.CreateFolder(user, folder);
  auto w = f->NewMessage();
  w->Write(bytes);
  std::vector<StagedMessage> batch{w->Finish({})};
  return f->Commit(batch).at(0);
}

std::string ReadMessage(Store& store, std::string_view user, std::string_view folder, uint32_t uid) {
  UniqueFd fd = store.OpenFolder(user, folder)->OpenMessage(uid);
  if (!fd.valid()) return "<missing>";
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) out.append(buf, size_t(n));
  return out;
}

FolderSnapshot Snap(Store& store, std::string_view user, std::string_view folder) {
  return store.OpenFolder(user, folder)->Snapshot();
}

// What a rename or move must keep: everything but the name (and the partition).
void ExpectSameContent(const FolderSnapshot& before, const FolderSnapshot& after) {
  EXPECT_EQ(before.messages, after.messages);
  EXPECT_EQ(before.info.uidvalidity, after.info.uidvalidity);
  EXPECT_EQ(before.info.uidnext, after.info.uidnext);
  EXPECT_EQ(before.info.count, after.info.count);
  EXPECT_EQ(before.info.bytes, after.info.bytes);
  EXPECT_EQ(before.info.last_append, after.info.last_append);
  EXPECT_EQ(before.info.created, after.info.created);
  EXPECT_EQ(before.info.user_flag_names, after.info.user_flag_names);
}

std::string FolderDir(Store& store, std::string_view partition, std::string_view user, std::string_view folder) {
  return store.PartitionPath(partition) + "/" + FolderRelPath(user, folder);
}

// Every entry below `dir`, relative ("" when `dir` is missing).
std::set<std::string> Tree(const std::string& dir) {
  std::set<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out.insert(fs::relative(e.path(), dir).string());
  return out;
}

ino_t Inode(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

nlink_t Links(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_nlink;
}

std::vector<std::string> Keys(Store& store, DB* db, std::string_view prefix) {
  std::vector<std::string> out;
  store.db().Scan(db, prefix, [&](std::string_view key, std::string_view) {
    out.emplace_back(key);
    return true;
  });
  return out;
}

const std::string kNul(1, '\0');

// --- deletion ---------------------------------------------------------------------------------

TEST(AdminDelete, FolderRecordsFilesAndQuotaGoChildrenStay) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  Deliver(*store, "joe", "INBOX", Msg("in"));
  Deliver(*store, "joe", "Sent", Msg("s1"));
  Deliver(*store, "joe", "Sent", Msg("s2-longer"));
  Deliver(*store, "joe", "Sent/2024", Msg("child"));
  store->SetAcl("joe", "Sent", "joe lrswipkxtea bob lr");
  store->SetPerUser("user/joe/Sent", "bob", "seen:1");
  const uint64_t sent_bytes = store->FindFolder("joe", "Sent")->bytes;
  const uint64_t used_before = store->FindUser("joe")->quota_used;

  EXPECT_EQ(DeleteFolder(*store, "joe", "Sent"), "user/joe/Sent");

  EXPECT_FALSE(store->FindFolder("joe", "Sent"));
  EXPECT_EQ(store->FindUser("joe")->quota_used, used_before - sent_bytes);
  EXPECT_EQ(store->RecomputeQuota("joe"), used_before - sent_bytes);
  EXPECT_TRUE(Keys(*store, store->db().lright(), "bob" + kNul).empty());
  EXPECT_TRUE(store->PerUser("user/joe/Sent").empty());
  // The child keeps its messages; the parent's directory holds nothing but the child.
  EXPECT_EQ(ReadMessage(*store, "joe", "Sent/2024", 1), Msg("child"));
  const std::string sent_dir = FolderDir(*store, "primary", "joe", "Sent");
  std::set<std::string> left = Tree(sent_dir);
  for (const std::string& entry : left) EXPECT_TRUE(entry.starts_with("+2024")) << entry;

  DeleteFolder(*store, "joe", "Sent/2024");
  EXPECT_FALSE(fs::exists(sent_dir));  // emptied directories go too
  EXPECT_TRUE(store->FindFolder("joe", "INBOX"));
  EXPECT_EQ(store->ListFolders("joe").size(), 1u);
}

TEST(AdminDelete, InboxAloneAndMissingMailboxesAreRefused) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  EXPECT_EQ(CodeOf([&] { DeleteFolder(*store, "joe", "inbox"); }), Errc::kInvalidArgument);
  EXPECT_TRUE(store->FindFolder("joe", "INBOX"));
  EXPECT_EQ(CodeOf([&] { DeleteFolder(*store, "joe", "Nope"); }), Errc::kNotFound);
  EXPECT_EQ(CodeOf([&] { DeleteFolder(*store, "joe", "../x"); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { DeleteUser(*store, "nobody", {.force = true}); }), Errc::kNotFound);
}

TEST(AdminDelete, UserGoesEverywhereSharedContentStays) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  store->CreateUser("bob");
  Deliver(*store, "joe", "INBOX", Msg("shared"));
  Deliver(*store, "joe", "Work", Msg("w"));
  Deliver(*store, "joe", "Work/Old", Msg("wo"));
  store->SetQuotaLimit("joe", 1 << 20);
  store->Subscribe("joe", "user/joe/Work");
  store->SetAcl("bob", "INBOX", "bob lrswipkxtea joe lr");
  store->SetPerUser("user/bob/INBOX", "joe", "seen");
  // Bob's copy and a repository entry are hard links to joe's file.
  const std::string joe_file = store->OpenFolder("joe", "INBOX")->MessagePath(1);
  {
    auto bob = store->OpenFolder("bob", "INBOX");
    MessageMeta meta = Snap(*store, "joe", "INBOX").messages.at(0);
    meta.uid = 0;
    std::vector<StagedMessage> batch{*bob->StageLink(joe_file, meta)};
    bob->Commit(batch);
  }
  const std::string repo = tmp / "partition/primary/=digest/entry.msg";
  MakeDirs(tmp / "partition/primary/=digest");
  ASSERT_EQ(::link(joe_file.c_str(), repo.c_str()), 0);
  const std::string bob_file = store->OpenFolder("bob", "INBOX")->MessagePath(1);
  ASSERT_EQ(Links(bob_file), 3u);
  const std::string joe_dir = FolderDir(*store, "primary", "joe", "INBOX");

  std::vector<std::string> deleted = DeleteUser(*store, "joe", {.force = true});

  EXPECT_EQ(deleted, (std::vector<std::string>{"user/joe/Work/Old", "user/joe/Work", "user/joe/INBOX"}));
  EXPECT_FALSE(store->FindUser("joe"));
  EXPECT_TRUE(store->ListFolders("joe").empty());
  EXPECT_TRUE(store->Subscriptions("joe").empty());
  EXPECT_TRUE(Keys(*store, store->db().quota(), "joe").empty());
  EXPECT_TRUE(Keys(*store, store->db().lright(), "joe" + kNul).empty());
  EXPECT_EQ(store->FindFolder("bob", "INBOX")->acl, "bob lrswipkxtea");
  EXPECT_TRUE(store->PerUser("user/bob/INBOX").empty());
  EXPECT_FALSE(fs::exists(joe_dir));
  EXPECT_EQ(ReadMessage(*store, "bob", "INBOX", 1), Msg("shared"));
  EXPECT_EQ(Links(bob_file), 2u);  // only joe's name was dropped
  EXPECT_TRUE(fs::exists(repo));
}

// A migrated user's mail is deferred as "moved" and routed to its new host; deleting the old copy
// must not turn that into "on hold" even for a moment: a kill -9 there would leave the user held,
// its mail queued here, and a rerun of migrate would take it for a user not moved yet.
TEST(AdminDelete, AMovedUserStaysMovedThroughoutItsDeletion) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateFolder("joe", "INBOX");
  store->SetUserStatus("joe", UserStatus::Parse("moved:mail2.example"));
  std::string during;
  DeleteUser(*store, "joe", {.force = true, .before_folders = [&] { during = store->FindUser("joe")->status.ToString(); }});
  EXPECT_EQ(during, "moved:mail2.example");
  EXPECT_EQ(store->FindUser("joe")->status.ToString(), "moved:mail2.example");
  EXPECT_TRUE(store->ListFolders("joe").empty());
  // Any other user is held while its folders go.
  store->CreateFolder("amy", "INBOX");
  DeleteUser(*store, "amy", {.force = true, .before_folders = [&] { during = store->FindUser("amy")->status.ToString(); }});
  EXPECT_EQ(during, "hold");
  EXPECT_FALSE(store->FindUser("amy"));
}

// A user moved while its deletion runs (a migrate's switch, `storemove user --status`, neither of
// which takes the user's write lock) keeps its record and forwarding answer: the final
// transaction reads the status it commits over, not the one read when the deletion began.
TEST(AdminDelete, AUserMovedDuringItsDeletionKeepsItsForwardingRecord) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateFolder("joe", "INBOX");
  DeleteUser(*store, "joe",
             {.force = true, .before_folders = [&] { store->SetUserStatus("joe", UserStatus::Parse("moved:mail2.example")); }});
  ASSERT_TRUE(store->FindUser("joe"));
  EXPECT_EQ(store->FindUser("joe")->status.ToString(), "moved:mail2.example");
  EXPECT_TRUE(store->ListFolders("joe").empty());
}

// The same move landing between the deletion's read of the status and its hold: the hold
// overwrote it (helper-125), and the deletion then removed the record.
TEST(AdminDelete, AUserMovedJustBeforeItsDeletionsHoldKeepsItsForwardingRecord) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateFolder("joe", "INBOX");
  DeleteUser(*store, "joe",
             {.force = true, .before_hold = [&] { store->SetUserStatus("joe", UserStatus::Parse("moved:mail2.example")); }});
  ASSERT_TRUE(store->FindUser("joe"));
  EXPECT_EQ(store->FindUser("joe")->status.ToString(), "moved:mail2.example");
  EXPECT_TRUE(store->ListFolders("joe").empty());
}

// A moved user taken back at the source while its deletion runs (`user --status active
// --include-moved`) gets its mail here again: without --force its deletion is refused then, as it
// would have been had it begun afterwards, and nothing is deleted (helper-124: its record went,
// its mail bounced as unknown).
TEST(AdminDelete, AMovedUserTakenBackDuringItsDeletionIsNotDeleted) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateFolder("joe", "INBOX");
  store->SetUserStatus("joe", UserStatus::Parse("moved:mail2.example"));
  RecordVerified(*store, "joe", "mail2.example");
  try {
    DeleteUser(*store, "joe", {.before_folders = [&] { store->SetUserStatus("joe", UserStatus{}); }});
    ADD_FAILURE() << "deleted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kTempFail) << e.what();
    EXPECT_NE(std::string(e.what()).find("was set active while it was being deleted"), std::string::npos) << e.what();
  }
  ASSERT_TRUE(store->FindUser("joe"));
  EXPECT_EQ(store->FindUser("joe")->status.ToString(), "active");
  EXPECT_EQ(store->ListFolders("joe").size(), 1u);
}

TEST(AdminDelete, UserWithoutInboxLeavesNoDirectory) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {"primary", "second"});
  store->CreateFolder("amy", "Restored");  // as restore does: the user record without an INBOX
  store->SetUserStatus("amy", UserStatus{UserState::kHold, ""});  // leaves the delivery gate file
  MoveUser(*store, "amy", "second");
  EXPECT_FALSE(fs::exists(FolderDir(*store, "primary", "amy", "INBOX")));
  DeleteUser(*store, "amy", {.force = true});
  EXPECT_FALSE(fs::exists(FolderDir(*store, "second", "amy", "INBOX")));
}

TEST(AdminDelete, AKilledDeleteNeverResurrectsMessages) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  Deliver(*store, "joe", "Trash", Msg("old-1"));
  Deliver(*store, "joe", "Trash", Msg("old-2"));
  const std::string dir = FolderDir(*store, "primary", "joe", "Trash");
  // As if DeleteFolder was killed right after its commit point: record gone, files still there.
  store->db().Txn([&](DB_TXN* txn) { store->db().Del(store->db().folder(), txn, "user/joe/Trash"); });
  ASSERT_TRUE(fs::exists(dir + "/00/1.msg"));
  ASSERT_TRUE(fs::exists(dir + "/00/2.msg"));
  EXPECT_FALSE(store->FindFolder("joe", "Trash"));

  store->CreateFolder("joe", "Trash");
  FolderSnapshot fresh = Snap(*store, "joe", "Trash");
  EXPECT_EQ(fresh.info.count, 0u);
  EXPECT_TRUE(fresh.messages.empty());
  EXPECT_EQ(fresh.info.uidnext, 1u);
  EXPECT_EQ(Deliver(*store, "joe", "Trash", Msg("new")), 1u);
  EXPECT_EQ(ReadMessage(*store, "joe", "Trash", 1), Msg("new"));
  EXPECT_EQ(Snap(*store, "joe", "Trash").messages.size(), 1u);  // old-2's file is not a message
}

TEST(AdminDelete, ADeliveryRacingADeleteFailsInsteadOfVanishing) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  Deliver(*store, "joe", "Lists", Msg("one"));
  auto racing = store->OpenFolder("joe", "Lists");  // a delivery that opened the folder first
  auto w = racing->NewMessage();
  w->Write(Msg("late"));
  std::vector<StagedMessage> batch{w->Finish({})};

  DeleteFolder(*store, "joe", "Lists");

  EXPECT_THROW(racing->Commit(batch), Error);  // the MTA keeps the message and retries
  EXPECT_FALSE(store->FindFolder("joe", "Lists"));
  EXPECT_FALSE(fs::exists(FolderDir(*store, "primary", "joe", "Lists") + "/store.idx"));
}

// --- verified-before-delete guard ----------------------------------------------------------------

TEST(AdminGuard, UserDeletionNeedsAnUnchangedVerification) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  Deliver(*store, "joe", "INBOX", Msg("a"));
  std::string message;

  EXPECT_FALSE(GetVerified(*store, "joe"));
  EXPECT_EQ(CodeOf([&] { DeleteUser(*store, "joe"); }, &message), Errc::kTempFail);
  EXPECT_NE(message.find("not been verified"), std::string::npos) << message;
  EXPECT_EQ(store->FindUser("joe")->status.state, UserState::kActive);  // the hold was undone
  EXPECT_EQ(Snap(*store, "joe", "INBOX").messages.size(), 1u);

  RecordVerified(*store, "joe", "mail2.example.com:993");
  std::optional<VerifiedInfo> v = GetVerified(*store, "joe");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->destination, "mail2.example.com:993");
  EXPECT_GT(v->verified_at, 0);
  EXPECT_EQ(v->fingerprint.folders, 1u);
  EXPECT_EQ(v->fingerprint.messages, 1u);
  EXPECT_TRUE(VerifiedAndUnchanged(*store, "joe"));

  Deliver(*store, "joe", "INBOX", Msg("after verification"));
  EXPECT_FALSE(VerifiedAndUnchanged(*store, "joe"));
  EXPECT_EQ(CodeOf([&] { DeleteUser(*store, "joe"); }, &message), Errc::kTempFail);
  EXPECT_NE(message.find("changed since it was verified at mail2.example.com:993 on "), std::string::npos) << message;
  EXPECT_EQ(CodeOf([&] { RequireVerifiedAndUnchanged(*store, "joe"); }), Errc::kTempFail);
  EXPECT_TRUE(store->FindUser("joe"));

  RecordVerified(*store, "joe", "mail2.example.com:993");
  RequireVerifiedAndUnchanged(*store, "joe");
  store.reset();
  // The new database is a proper Berkeley DB file, and the record survives reopening.
  std::string cmd = "db5.3_verify -q " + tmp.path() + "/mboxlist/verified.db 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  store = Store::Open(tmp.path());
  EXPECT_EQ(GetVerified(*store, "joe")->destination, "mail2.example.com:993");
  // Verified, but still active: its mail comes here and would bounce as unknown once the record
  // is gone (helper-119). Refused, nothing changed.
  EXPECT_EQ(CodeOf([&] { DeleteUser(*store, "joe"); }, &message), Errc::kTempFail);
  EXPECT_NE(message.find("user joe is active here: its mail is still delivered here"), std::string::npos) << message;
  EXPECT_EQ(store->FindUser("joe")->status.state, UserState::kActive);
  EXPECT_EQ(Snap(*store, "joe", "INBOX").messages.size(), 2u);
  // On hold (the MTA queues its mail for here): the same (helper-120: deleted, and the queued
  // mail bounced). Refused before the delete holds anything or reads an index.
  store->SetUserStatus("joe", UserStatus{UserState::kHold, ""});
  EXPECT_EQ(CodeOf([&] { DeleteUser(*store, "joe"); }, &message), Errc::kTempFail);
  EXPECT_NE(message.find("user joe is on hold here: its mail is queued for here"), std::string::npos) << message;
  EXPECT_EQ(store->FindUser("joe")->status.state, UserState::kHold);
  // Its mail sent to the new host: deleted, its record stays to defer late mail there.
  store->SetUserStatus("joe", UserStatus{UserState::kMoved, "mail2.example.com"});
  DeleteUser(*store, "joe");
  EXPECT_EQ(store->FindUser("joe")->status.ToString(), "moved:mail2.example.com");
  EXPECT_FALSE(store->FindFolder("joe", "INBOX"));
  EXPECT_FALSE(GetVerified(*store, "joe"));
  // --force deletes an active user outright, record and all.
  store->CreateUser("ann");
  Deliver(*store, "ann", "INBOX", Msg("b"));
  DeleteUser(*store, "ann", {true});
  EXPECT_FALSE(store->FindUser("ann"));
}

TEST(AdminGuard, StoresMadeBeforeVerifiedDbOpen) {
  TempDir tmp;
  Store::Init(tmp.path(), {})->CreateUser("joe");
  ASSERT_EQ(::unlink((tmp / "mboxlist/verified.db").c_str()), 0);
  auto store = Store::Open(tmp.path());
  EXPECT_FALSE(GetVerified(*store, "joe"));
  RecordVerified(*store, "joe", "x");
  EXPECT_TRUE(VerifiedAndUnchanged(*store, "joe"));
}

TEST(AdminGuard, FingerprintSeesFlagsExpungesAndNewFolders) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  Deliver(*store, "joe", "INBOX", Msg("a"));
  Deliver(*store, "joe", "INBOX", Msg("b"));
  UserFingerprint base = FingerprintUser(*store, "joe");
  EXPECT_EQ(FingerprintUser(*store, "joe"), base);  // deterministic

  store->OpenFolder("joe", "INBOX")->SetFlags(1, kSeen, 0);
  UserFingerprint seen = FingerprintUser(*store, "joe");
  EXPECT_NE(seen.digest, base.digest);
  store->OpenFolder("joe", "INBOX")->Expunge({2});
  UserFingerprint expunged = FingerprintUser(*store, "joe");
  EXPECT_NE(expunged.digest, seen.digest);
  store->CreateFolder("joe", "Empty");
  EXPECT_NE(FingerprintUser(*store, "joe").digest, expunged.digest);

  // A fingerprint taken before a comparison refuses to record a user that changed meanwhile.
  UserFingerprint before = FingerprintUser(*store, "joe");
  Deliver(*store, "joe", "Empty", Msg("during"));
  EXPECT_EQ(CodeOf([&] { RecordVerified(*store, "joe", "dest", before); }), Errc::kTempFail);
  EXPECT_FALSE(GetVerified(*store, "joe"));
  RecordVerified(*store, "joe", "dest", FingerprintUser(*store, "joe"));
  EXPECT_TRUE(VerifiedAndUnchanged(*store, "joe"));
  EXPECT_EQ(CodeOf([&] { RecordVerified(*store, "nobody", "dest"); }), Errc::kNotFound);
}

// --- rename -----------------------------------------------------------------------------------------

TEST(AdminRename, FolderWithChildrenKeepsEverything) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  for (const char* f : {"Old", "Old/x", "Old/x/y", "Old2"}) {
    Deliver(*store, "joe", f, Msg(std::string(f) + "-1"));
    Deliver(*store, "joe", f, Msg(std::string(f) + "-2"));
  }
  store->OpenFolder("joe", "Old/x")->SetUserFlagNames({"$Important"});
  store->OpenFolder("joe", "Old/x")->SetFlags(2, kSeen | kFlagged, 1);
  store->SetAcl("joe", "Old", "joe lrswipkxtea anyone lr");
  store->SetPerUser("user/joe/Old/x", "bob", "state");
  store->Subscribe("joe", "user/joe/Old/x");
  std::map<std::string, FolderSnapshot> before;
  std::map<std::string, ino_t> inodes;
  for (const char* f : {"Old", "Old/x", "Old/x/y"}) {
    before[f] = Snap(*store, "joe", f);
    inodes[f] = Inode(store->OpenFolder("joe", f)->MessagePath(2));
  }
  const uint64_t used = store->FindUser("joe")->quota_used;

  std::vector<Renamed> renamed = RenameFolder(*store, "joe", "Old", "Archive/2024");

  ASSERT_EQ(renamed.size(), 3u);
  EXPECT_EQ(renamed[0].from, "user/joe/Old");
  EXPECT_EQ(renamed[0].to, "user/joe/Archive/2024");
  EXPECT_EQ(renamed[2].to, "user/joe/Archive/2024/x/y");
  for (const char* f : {"Old", "Old/x", "Old/x/y"}) {
    std::string to = "Archive/2024" + std::string(f).substr(3);
    EXPECT_FALSE(store->FindFolder("joe", f)) << f;
    ExpectSameContent(before[f], Snap(*store, "joe", to));
    EXPECT_EQ(ReadMessage(*store, "joe", to, 2), Msg(std::string(f) + "-2"));
    EXPECT_EQ(Inode(store->OpenFolder("joe", to)->MessagePath(2)), inodes[f]) << "hard-linked, not copied";
  }
  EXPECT_EQ(store->FindFolder("joe", "Archive/2024")->acl, "joe lrswipkxtea anyone lr");
  EXPECT_EQ(Keys(*store, store->db().lright(), "anyone" + kNul),
            (std::vector<std::string>{"anyone" + kNul + "user/joe/Archive/2024"}));
  EXPECT_EQ(store->PerUser("user/joe/Archive/2024/x").size(), 1u);
  EXPECT_TRUE(store->PerUser("user/joe/Old/x").empty());
  EXPECT_EQ(store->Subscriptions("joe"), (std::vector<std::string>{"user/joe/Archive/2024/x"}));
  EXPECT_EQ(Snap(*store, "joe", "Old2").messages.size(), 2u);  // a sibling, not a child
  EXPECT_FALSE(fs::exists(FolderDir(*store, "primary", "joe", "Old")));
  EXPECT_EQ(store->FindUser("joe")->quota_used, used);
  EXPECT_EQ(Deliver(*store, "joe", "Archive/2024/x", Msg("next")), 3u);
}

TEST(AdminRename, RefusalsChangeNothing) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  Deliver(*store, "joe", "A", Msg("a"));
  Deliver(*store, "joe", "A/x", Msg("ax"));
  Deliver(*store, "joe", "B/x", Msg("bx"));  // B itself is not a folder
  Deliver(*store, "joe", "C", Msg("c"));
  FolderSnapshot a = Snap(*store, "joe", "A");
  std::set<std::string> b_tree = Tree(FolderDir(*store, "primary", "joe", "B"));

  EXPECT_EQ(CodeOf([&] { RenameFolder(*store, "joe", "A", "C"); }), Errc::kExists);
  // A's child would land on the existing B/x.
  EXPECT_EQ(CodeOf([&] { RenameFolder(*store, "joe", "A", "B"); }), Errc::kExists);
  EXPECT_EQ(CodeOf([&] { RenameFolder(*store, "joe", "A", "A/inner"); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { RenameFolder(*store, "joe", "INBOX", "Old"); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { RenameFolder(*store, "joe", "Nope", "Z"); }), Errc::kNotFound);
  EXPECT_EQ(CodeOf([&] { RenameFolder(*store, "joe", "A", "../../x"); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { RenameFolder(*store, "../joe", "A", "Z"); }), Errc::kInvalidArgument);

  ExpectSameContent(a, Snap(*store, "joe", "A"));
  EXPECT_EQ(ReadMessage(*store, "joe", "A/x", 1), Msg("ax"));
  EXPECT_EQ(Tree(FolderDir(*store, "primary", "joe", "B")), b_tree);
  EXPECT_FALSE(store->FindFolder("joe", "B"));
  EXPECT_EQ(store->ListFolders("joe").size(), 5u);
}

TEST(AdminRename, ADeliveryRacingARenameFailsAndTheRenamedFolderIsIntact) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  Deliver(*store, "joe", "Old", Msg("kept"));
  auto racing = store->OpenFolder("joe", "Old");
  auto w = racing->NewMessage();
  w->Write(Msg("late"));
  std::vector<StagedMessage> batch{w->Finish({})};

  RenameFolder(*store, "joe", "Old", "New");

  // A temporary failure: deliver exits 75 and the MTA retries. "Damaged store" (65) or "no
  // such file" (66) would make it bounce the message.
  EXPECT_EQ(CodeOf([&] { racing->Commit(batch); }), Errc::kTempFail);
  EXPECT_EQ(CodeOf([&] { racing->Snapshot(); }), Errc::kNotFound);
  EXPECT_EQ(CodeOf([&] { racing->SetFlags(1, kSeen, 0); }), Errc::kTempFail);
  EXPECT_FALSE(store->FindFolder("joe", "Old"));
  FolderSnapshot now = Snap(*store, "joe", "New");
  ASSERT_EQ(now.messages.size(), 1u);
  EXPECT_EQ(ReadMessage(*store, "joe", "New", 1), Msg("kept"));

  // An index missing where the record still leads is damage, as before.
  auto damaged = store->OpenFolder("joe", "New");
  ASSERT_EQ(::unlink((damaged->path() + "/store.idx").c_str()), 0);
  EXPECT_EQ(CodeOf([&] { damaged->Snapshot(); }), Errc::kCorrupt);
  EXPECT_EQ(CodeOf([&] { store->FindFolder("joe", "New"); }), Errc::kCorrupt);
}

TEST(AdminRename, UserWithEverythingAttached) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  store->CreateUser("bob");
  Deliver(*store, "joe", "INBOX", Msg("i"));
  Deliver(*store, "joe", "Sent", Msg("s"));
  store->SetQuotaLimit("joe", 5000);
  store->SetUserStatus("joe", UserStatus{UserState::kHold, ""});
  store->Subscribe("joe", "user/joe/Sent");
  store->Subscribe("joe", "user/bob/INBOX");
  store->SetAcl("bob", "INBOX", "bob lrswipkxtea joe lr");
  store->SetAcl("joe", "Sent", "joe lrswipkxtea");
  store->SetPerUser("user/bob/INBOX", "joe", "seen");
  RecordVerified(*store, "joe", "elsewhere");
  FolderSnapshot inbox = Snap(*store, "joe", "INBOX"), sent = Snap(*store, "joe", "Sent");
  UserInfo joe = *store->FindUser("joe");
  EXPECT_TRUE(joe.renames.empty());
  EXPECT_EQ(store->UserRenameGeneration(), 0u);

  std::vector<Renamed> renamed = RenameUser(*store, "joe", "jim");

  EXPECT_EQ(renamed.size(), 2u);
  EXPECT_FALSE(store->FindUser("joe"));
  EXPECT_TRUE(store->ListFolders("joe").empty());
  std::optional<UserInfo> jim = store->FindUser("jim");
  ASSERT_TRUE(jim);
  EXPECT_EQ(jim->status.state, UserState::kHold);
  EXPECT_EQ(jim->quota_limit, 5000u);
  EXPECT_EQ(jim->quota_used, joe.quota_used);
  EXPECT_EQ(jim->created, joe.created);
  ExpectSameContent(inbox, Snap(*store, "jim", "INBOX"));
  ExpectSameContent(sent, Snap(*store, "jim", "Sent"));
  EXPECT_EQ(store->FindFolder("jim", "Sent")->acl, "jim lrswipkxtea");
  EXPECT_EQ(store->FindFolder("bob", "INBOX")->acl, "bob lrswipkxtea jim lr");
  EXPECT_EQ(store->Subscriptions("jim"), (std::vector<std::string>{"user/bob/INBOX", "user/jim/Sent"}));
  EXPECT_TRUE(store->Subscriptions("joe").empty());
  EXPECT_EQ(store->PerUser("user/bob/INBOX"), (std::vector<std::pair<std::string, std::string>>{{"jim", "seen"}}));
  EXPECT_FALSE(GetVerified(*store, "jim"));
  EXPECT_FALSE(GetVerified(*store, "joe"));
  EXPECT_FALSE(fs::exists(FolderDir(*store, "primary", "joe", "INBOX")));
  EXPECT_EQ(ReadMessage(*store, "jim", "Sent", 1), Msg("s"));

  EXPECT_EQ(CodeOf([&] { RenameUser(*store, "jim", "bob"); }), Errc::kExists);
  EXPECT_EQ(CodeOf([&] { RenameUser(*store, "nobody", "x"); }), Errc::kNotFound);
  EXPECT_EQ(CodeOf([&] { RenameUser(*store, "jim", "../x"); }), Errc::kInvalidArgument);

  // The rename is marked for a backup running meanwhile (docs/store-format.md §3.1): by the
  // store's rename generation, which a refused rename does not raise; a later status change
  // keeps the mark.
  EXPECT_EQ(store->UserRenameGeneration(), 1u);
  store->SetUserStatus("jim", UserStatus{});
  jim = store->FindUser("jim");
  EXPECT_EQ(jim->renames, (std::vector<UserRename>{{1, "joe"}}));
  RenameUser(*store, "jim", "jo");
  EXPECT_EQ(store->UserRenameGeneration(), 2u);
  EXPECT_EQ(store->FindUser("jo")->renames, (std::vector<UserRename>{{1, "joe"}, {2, "jim"}}));
  EXPECT_FALSE(store->FindUser("jo")->renames_truncated);
  EXPECT_TRUE(store->FindUser("bob")->renames.empty());
  // The last four are kept.
  RenameUser(*store, "jo", "j3");
  RenameUser(*store, "j3", "j4");
  RenameUser(*store, "j4", "j5");
  EXPECT_EQ(store->FindUser("j5")->renames, (std::vector<UserRename>{{2, "jim"}, {3, "jo"}, {4, "j3"}, {5, "j4"}}));
  EXPECT_TRUE(store->FindUser("j5")->renames_truncated);
}

// A record no rename made keeps the layout of stores from before the rename fields.
TEST(AdminRename, AnUnrenamedUserRecordKeepsItsFirstLayout) {
  UserValue u;
  u.partition = "primary";
  u.created = 7;
  const std::string v = EncodeUser(u);
  EXPECT_EQ(v.size(), 1u + 1u + 2u + 2u + 7u + 8u);
  EXPECT_TRUE(DecodeUser(v, "joe").renames.empty());
  u.renames = {{3, "jim"}, {9, "jo"}};
  u.renames_truncated = true;
  const UserValue back = DecodeUser(EncodeUser(u), "joe");
  EXPECT_EQ(back.renames, u.renames);
  EXPECT_TRUE(back.renames_truncated);
  EXPECT_EQ(back.created, 7);
  EXPECT_EQ(CodeOf([&] { DecodeUser(v + "x", "joe"); }), Errc::kCorrupt);
}

// --- partition moves ----------------------------------------------------------------------------------

std::map<std::string, FolderSnapshot> AllSnapshots(Store& store, std::string_view user) {
  std::map<std::string, FolderSnapshot> out;
  for (const FolderInfo& f : store.ListFolders(user)) out[f.folder] = Snap(store, user, f.folder);
  return out;
}

void ExpectMovedIntact(Store& store, std::string_view user, const std::map<std::string, FolderSnapshot>& before,
                       const std::string& partition) {
  std::map<std::string, FolderSnapshot> after = AllSnapshots(store, user);
  ASSERT_EQ(after.size(), before.size());
  for (const auto& [name, snap] : before) {
    ExpectSameContent(snap, after.at(name));
    EXPECT_EQ(after.at(name).info.partition, partition);
    for (const MessageMeta& m : snap.messages) {
      std::string bytes = ReadMessage(store, user, name, m.uid);
      EXPECT_EQ(DigestOf(bytes), m.digest) << name << " " << m.uid;
      EXPECT_EQ(bytes.size(), m.size);
    }
  }
}

// A store of two partitions on one filesystem, with joe on the first: a message in INBOX and
// one in Sent/2024.
std::unique_ptr<Store> JoeOnPrimary(const TempDir& tmp) {
  auto store = Store::Init(tmp.path(), {"primary", "second"});
  store->CreateUser("joe");
  Deliver(*store, "joe", "INBOX", Msg("i"));
  Deliver(*store, "joe", "Sent/2024", Msg("s"));
  return store;
}

TEST(AdminMove, UserToAnotherPartitionOnTheSameFilesystemLinks) {
  TempDir tmp;
  auto store = JoeOnPrimary(tmp);
  auto before = AllSnapshots(*store, "joe");
  ino_t inode = Inode(store->OpenFolder("joe", "Sent/2024")->MessagePath(1));
  const std::string old_dir = FolderDir(*store, "primary", "joe", "INBOX");

  EXPECT_TRUE(MoveUser(*store, "joe", "second"));

  EXPECT_EQ(store->FindUser("joe")->partition, "second");
  ExpectMovedIntact(*store, "joe", before, "second");
  EXPECT_EQ(Inode(store->OpenFolder("joe", "Sent/2024")->MessagePath(1)), inode);
  EXPECT_FALSE(fs::exists(old_dir));
  EXPECT_EQ(store->CreateFolder("joe", "New")->path(), FolderDir(*store, "second", "joe", "New"));
  EXPECT_FALSE(MoveUser(*store, "joe", "second"));
  EXPECT_EQ(CodeOf([&] { MoveUser(*store, "joe", "nopart"); }), Errc::kNotFound);
  EXPECT_EQ(CodeOf([&] { MoveUser(*store, "joe", "../primary"); }), Errc::kInvalidArgument);
}

// A move killed before its commit leaves the messages it staged at their final names, hard links
// of the source's files; its rerun links the same files again, and rename(2) onto another link
// of the same inode does nothing and succeeds: the tmp.* names stayed (review of helper-102's fix).
TEST(AdminMove, ARerunOntoLinksAKilledMoveLeftLeavesNoTemporaryName) {
  TempDir tmp;
  auto store = JoeOnPrimary(tmp);
  auto before = AllSnapshots(*store, "joe");
  const std::string source = store->OpenFolder("joe", "INBOX")->MessagePath(1);
  const std::string leftover =
      FolderDir(*store, "second", "joe", "INBOX") + source.substr(FolderDir(*store, "primary", "joe", "INBOX").size());
  fs::create_directories(fs::path(leftover).parent_path());
  ASSERT_EQ(::link(source.c_str(), leftover.c_str()), 0);
  EXPECT_TRUE(MoveUser(*store, "joe", "second"));
  ExpectMovedIntact(*store, "joe", before, "second");
  for (const auto& e : fs::recursive_directory_iterator(tmp.path()))
    EXPECT_EQ(e.path().filename().string().find("tmp."), std::string::npos) << e.path();
}

// A move killed after its commit and before it removed the old files (§6.8 step 5) leaves the
// user's old tree, store.idx included, where nothing leads. A writer that had a folder open
// there and waited for its lock committed into it, exit 0, mail nobody could see; and the rerun
// ("on partition second already") left the tree, with the space and repository entries it pins,
// for good (helper-68). The writer, finding the move's marker, asks the mboxlist and is refused
// as after a rename; the rerun removes the tree.
TEST(AdminMove, ARerunRemovesWhatAKilledMoveLeftAndNoWriterCommitsIntoIt) {
  TempDir tmp;
  auto store = JoeOnPrimary(tmp);
  const std::string old_dir = FolderDir(*store, "primary", "joe", "INBOX");
  std::unique_ptr<Folder> held = store->OpenFolder("joe", "INBOX");  // a writer from before the move
  // As a kill before step 5 leaves it: the same directory with its index. The move removes the
  // index and keeps the directory (a sub-directory no record names keeps it from being empty);
  // the index comes back under its name, a hard link of the one the move removed.
  fs::create_directory(old_dir + "/+stray");
  ASSERT_EQ(::link((old_dir + "/store.idx").c_str(), (tmp / "store.idx").c_str()), 0);
  ASSERT_TRUE(MoveUser(*store, "joe", "second"));
  ASSERT_FALSE(fs::exists(old_dir + "/store.idx"));
  ASSERT_EQ(::link((tmp / "store.idx").c_str(), (old_dir + "/store.idx").c_str()), 0);
  std::ofstream(old_dir + "/" + kMovingMarker);  // the marker the move left before its commit
  EXPECT_EQ(CodeOf([&] { held->SetFlags(1, kSeen, 0); }), Errc::kTempFail);
  EXPECT_EQ(store->OpenFolder("joe", "INBOX")->Snapshot().messages.at(0).flags & kSeen, 0);

  // A partition name that leads to the live tree is never taken for a leftover.
  fs::create_directory_symlink(tmp / "partition/second", tmp / "partition/alias");
  EXPECT_FALSE(MoveUser(*store, "joe", "second"));  // the rerun
  EXPECT_FALSE(fs::exists(old_dir));
  EXPECT_FALSE(fs::exists(FolderDir(*store, "primary", "joe", "Sent/2024")));
  EXPECT_EQ(store->OpenFolder("joe", "Sent/2024")->Snapshot().messages.size(), 1u);
  EXPECT_EQ(store->OpenFolder("joe", "INBOX")->Snapshot().messages.size(), 1u);
}

TEST(AdminMove, AMissingMessageFileStopsTheMoveAndUndoesIt) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {"primary", "second"});
  store->CreateUser("joe");
  Deliver(*store, "joe", "INBOX", Msg("one"));
  Deliver(*store, "joe", "Sent", Msg("two"));
  Deliver(*store, "joe", "Sent", Msg("three"));
  ASSERT_EQ(::unlink(store->OpenFolder("joe", "Sent")->MessagePath(2).c_str()), 0);

  std::string message;
  EXPECT_EQ(CodeOf([&] { MoveUser(*store, "joe", "second"); }, &message), Errc::kCorrupt);
  EXPECT_NE(message.find("message file missing"), std::string::npos) << message;
  EXPECT_EQ(store->FindUser("joe")->partition, "primary");
  EXPECT_EQ(store->FindFolder("joe", "INBOX")->partition, "primary");
  EXPECT_EQ(ReadMessage(*store, "joe", "INBOX", 1), Msg("one"));
  EXPECT_FALSE(fs::exists(FolderDir(*store, "second", "joe", "INBOX"))) << "the staged copy is undone";
}

// A partition on another filesystem: /dev/shm (tmpfs) and the temporary directory usually differ.
std::string OtherFilesystemDir(const std::string& than) {
  const char* env = std::getenv("TMPDIR");
  std::string base = env && *env ? env : "/tmp";
  struct stat a, b;
  if (::stat(than.c_str(), &a) != 0 || ::stat(base.c_str(), &b) != 0 || a.st_dev == b.st_dev) return "";
  return base;
}

// The directory of a partition "far" on that other filesystem, removed at the end; dir() is
// empty when there is no other filesystem.
class FarPartition {
 public:
  explicit FarPartition(const std::string& store_root) {
    const std::string other = OtherFilesystemDir(store_root);
    if (other.empty()) return;
    dir_ = other + "/storemove-admin-test-" + RandomToken();
    MakeDirs(dir_ + "/=user");
  }
  ~FarPartition() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

TEST(AdminMove, AcrossFilesystemsCopiesAndChecksEveryMessage) {
  TempDir tmp;
  FarPartition far(tmp.path());
  if (far.dir().empty()) GTEST_SKIP() << "no second filesystem next to " << tmp.path();
  auto store = Store::Init(tmp.path(), {});
  fs::create_directory_symlink(far.dir(), tmp / "partition/far");
  store->CreateUser("joe");
  Deliver(*store, "joe", "INBOX", Msg("i"));
  Deliver(*store, "joe", "INBOX", Msg("j"));
  Deliver(*store, "joe", "Sent", Msg("s"));
  auto before = AllSnapshots(*store, "joe");

  // A damaged file (same size, other bytes) stops the move before its commit point.
  const std::string damaged = store->OpenFolder("joe", "INBOX")->MessagePath(2);
  std::string good = ReadFile(damaged);
  std::string bad = good;
  bad.back() = 'X';
  WriteFileAtomic(damaged, bad, 0600);
  EXPECT_EQ(CodeOf([&] { MoveUser(*store, "joe", "far"); }), Errc::kCorrupt);
  EXPECT_EQ(store->FindUser("joe")->partition, "primary");
  EXPECT_EQ(store->FindFolder("joe", "Sent")->partition, "primary");
  EXPECT_FALSE(fs::exists(FolderDir(*store, "far", "joe", "INBOX"))) << "the staged copy is undone";
  // So are the repository entries its copies made (helper-113: left, they filled the partition).
  size_t entries = 0;
  if (fs::exists(far.dir() + "/=digest"))
    for (const auto& e : fs::recursive_directory_iterator(far.dir() + "/=digest")) entries += e.is_regular_file();
  EXPECT_EQ(entries, 0u);
  WriteFileAtomic(damaged, good, 0600);

  EXPECT_TRUE(MoveUser(*store, "joe", "far"));
  ExpectMovedIntact(*store, "joe", before, "far");
  struct stat moved, home;
  ASSERT_EQ(::stat(store->OpenFolder("joe", "Sent")->MessagePath(1).c_str(), &moved), 0);
  ASSERT_EQ(::stat(tmp.path().c_str(), &home), 0);
  EXPECT_NE(moved.st_dev, home.st_dev) << "a copy on the other filesystem";
  EXPECT_FALSE(fs::exists(FolderDir(*store, "primary", "joe", "INBOX")));
}

struct stat StatOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st;
}

// Moved to another filesystem, messages that were one inode are one inode again, and content the
// target partition holds is linked to its repository entry once its bytes are compared: copying
// each file on its own undid all sharing (helper-67: 1,200 files of 800 inodes became 1,200).
TEST(AdminMove, AcrossFilesystemsSharedContentStaysShared) {
  TempDir tmp;
  FarPartition far(tmp.path());
  if (far.dir().empty()) GTEST_SKIP() << "no second filesystem next to " << tmp.path();
  auto store = Store::Init(tmp.path(), {});
  fs::create_directory_symlink(far.dir(), tmp / "partition/far");
  const std::string list_mail = Msg("list mail") + std::string(5000, 'l');
  const std::string planted = Msg("other bytes") + std::string(5000, 'o');
  // joe: the list mail in INBOX and, as the same inode, in Sent; ann: her own copy of it.
  Deliver(*store, "joe", "INBOX", list_mail);
  {
    auto inbox = store->OpenFolder("joe", "INBOX");
    MessageMeta meta = inbox->Snapshot().messages.at(0);
    meta.uid = 0;
    auto sent = store->CreateFolder("joe", "Sent");
    std::optional<StagedMessage> link = sent->StageLink(inbox->MessagePath(1), meta);
    ASSERT_TRUE(link);
    std::vector<StagedMessage> batch{std::move(*link)};
    sent->Commit(batch);
  }
  Deliver(*store, "ann", "INBOX", list_mail);
  Deliver(*store, "bob", "INBOX", planted.substr(0, list_mail.size()));
  auto joe_before = AllSnapshots(*store, "joe");
  auto ann_before = AllSnapshots(*store, "ann");

  ASSERT_TRUE(MoveUser(*store, "joe", "far"));
  ExpectMovedIntact(*store, "joe", joe_before, "far");
  const struct stat joe_inbox = StatOf(store->OpenFolder("joe", "INBOX")->MessagePath(1));
  EXPECT_EQ(joe_inbox.st_ino, StatOf(store->OpenFolder("joe", "Sent")->MessagePath(1)).st_ino)
      << "one inode at the source, two files at the destination";
  ASSERT_TRUE(MoveUser(*store, "ann", "far"));
  ExpectMovedIntact(*store, "ann", ann_before, "far");
  EXPECT_EQ(StatOf(store->OpenFolder("ann", "INBOX")->MessagePath(1)).st_ino, joe_inbox.st_ino)
      << "ann's copy is linked to the content joe's move put in the repository";
  EXPECT_EQ(joe_inbox.st_nlink, 3u) << "joe's two files and the repository entry";

  // An entry of the digest with other bytes (a collision, or damage) is never linked to: bob's
  // message is the planted entry's size but not its bytes.
  const MessageMeta bob = store->OpenFolder("bob", "INBOX")->Snapshot().messages.at(0);
  const std::string entry = far.dir() + "/=digest/" + bob.digest.Hex().substr(0, 2) + "/" + bob.digest.Hex() + ".msg";
  MakeDirs(entry.substr(0, entry.rfind('/')));
  std::string other_bytes = ReadMessage(*store, "bob", "INBOX", 1);
  other_bytes.back() = other_bytes.back() == 'x' ? 'y' : 'x';
  WriteFileAtomic(entry, other_bytes, 0600);
  auto bob_before = AllSnapshots(*store, "bob");
  ASSERT_TRUE(MoveUser(*store, "bob", "far"));
  ExpectMovedIntact(*store, "bob", bob_before, "far");
  EXPECT_NE(StatOf(store->OpenFolder("bob", "INBOX")->MessagePath(1)).st_ino, StatOf(entry).st_ino);
}

// Deliveries retried as an MTA does, in other processes, while the user moves back and forth
// between partitions and a folder is renamed: every acknowledged message ends up present exactly
// once, with its bytes.
TEST(AdminMove, RacingDeliveriesLoseNothing) {
  TempDir tmp;
  {
    auto store = Store::Init(tmp.path(), {"primary", "second"});
    store->CreateUser("joe");
    Deliver(*store, "joe", "A", Msg("seed"));
  }
  constexpr int kWriters = 2, kPerWriter = 400;
  auto body = [](int w, int i) { return Msg("w" + std::to_string(w) + "-" + std::to_string(i)); };
  std::vector<pid_t> children;
  for (int w = 0; w < kWriters; ++w) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto store = Store::Open(tmp.path());
      for (int i = 0; i < kPerWriter; ++i) {
        for (int attempt = 0;; ++attempt) {
          try {
            auto f = store->OpenFolder("joe", "INBOX");
            auto m = f->NewMessage();
            m->Write(body(w, i));
            std::vector<StagedMessage> batch{m->Finish({})};
            f->Commit(batch);
            break;
          } catch (const Error& e) {
            if (attempt == 10000) {
              std::fprintf(stderr, "writer %d message %d: %s\n", w, i, e.what());
              ::_exit(1);
            }
          }
        }
      }
      ::_exit(0);
    }
    children.push_back(pid);
  }
  auto store = Store::Open(tmp.path());
  int moves = 0;
  size_t running = children.size();
  while (running > 0) {
    int status;
    if (::waitpid(-1, &status, WNOHANG) > 0) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      --running;
      continue;
    }
    MoveUser(*store, "joe", moves % 2 ? "primary" : "second");
    RenameFolder(*store, "joe", moves % 2 ? "B" : "A", moves % 2 ? "A" : "B");
    ++moves;
  }
  FolderSnapshot snap = Snap(*store, "joe", "INBOX");
  ASSERT_EQ(snap.messages.size(), size_t(kWriters * kPerWriter)) << "after " << moves << " moves";
  std::set<Digest> digests;
  for (const MessageMeta& m : snap.messages) {
    digests.insert(m.digest);
    EXPECT_EQ(DigestOf(ReadMessage(*store, "joe", "INBOX", m.uid)), m.digest);
  }
  for (int w = 0; w < kWriters; ++w)
    for (int i = 0; i < kPerWriter; ++i) EXPECT_TRUE(digests.count(DigestOf(body(w, i)))) << w << "/" << i;
  EXPECT_EQ(store->RecomputeQuota("joe"), store->FindUser("joe")->quota_used);
  RecordProperty("moves_during_deliveries", moves);
}

// A folder of a user moving between partitions is found throughout: its record is read again
// when the index went with the move. It was "no such folder" now and then, which a deliver
// answers with 66 and an MTA bounces.
TEST(AdminMove, AMovingUsersFolderIsFoundThroughout) {
  TempDir tmp;
  {
    auto store = Store::Init(tmp.path(), {"primary", "second"});
    store->CreateUser("joe");
    Deliver(*store, "joe", "Stays", Msg("seed"));
  }
  constexpr int kMoves = 300;
  const pid_t mover = ::fork();
  ASSERT_GE(mover, 0);
  if (mover == 0) {
    auto store = Store::Open(tmp.path());
    for (int i = 0; i < kMoves; ++i) MoveUser(*store, "joe", i % 2 ? "primary" : "second");
    ::_exit(0);
  }
  auto store = Store::Open(tmp.path());
  uint64_t looks = 0, missed = 0;
  for (int status;;) {
    const pid_t done = ::waitpid(mover, &status, WNOHANG);
    ASSERT_GE(done, 0);
    if (done == mover) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      break;
    }
    ++looks;
    missed += !store->FindFolder("joe", "Stays").has_value();
  }
  EXPECT_EQ(missed, 0u) << "of " << looks << " looks during " << kMoves << " moves";
}

// --- the CLI -------------------------------------------------------------------------------------------

class AdminCli : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = Store::Init(tmp_.path(), {"primary", "second"});
    for (const char* user : {"joe", "bob"}) {
      store->CreateUser(user);
      Deliver(*store, user, "INBOX", Msg(user));
      Deliver(*store, user, "Sent", Msg(std::string(user) + "-sent"));
    }
  }
  CliResult Run(std::vector<std::string> args) {
    args.insert(args.begin() + 1, {"--store", tmp_.path()});
    return RunCli(args);
  }
  std::unique_ptr<Store> Open() { return Store::Open(tmp_.path()); }
  TempDir tmp_;
};

TEST_F(AdminCli, DeleteIsGuardedPerUserAndReportsEachObject) {
  CliResult r = Run({"delete", "joe", "user/bob/Sent"});
  EXPECT_EQ(r.status, 75) << r.Describe();
  EXPECT_EQ(r.out, "deleted user/bob/Sent\n");
  EXPECT_NE(r.err.find("user joe has not been verified"), std::string::npos) << r.err;
  EXPECT_TRUE(Open()->FindUser("joe"));

  { RecordVerified(*Open(), "joe", "mail2:993"); }
  r = Run({"delete", "user/joe"});  // verified, but its mail still comes here
  EXPECT_EQ(r.status, 75) << r.Describe();
  EXPECT_NE(r.err.find("user joe is active here"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("storemove user joe --status moved:HOST"), std::string::npos) << r.err;
  ASSERT_EQ(Run({"user", "joe", "--status", "moved:mail2"}).status, 0);
  r = Run({"delete", "user/joe"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  // Where it was verified is said: the guard cannot tell whether that is the host mail goes to.
  EXPECT_TRUE(std::regex_match(r.out, std::regex("deleted user/joe/Sent\ndeleted user/joe/INBOX\ndeleted the mailboxes "
                                                 "of user joe \\(verified at mail2:993 on \\d{4}-\\d\\d-\\d\\dT"
                                                 "\\d\\d:\\d\\d:\\d\\dZ\\); its record stays, marked moved:mail2, "
                                                 "for deliveries\n")))
      << r.out;

  r = Run({"delete", "bob"});
  EXPECT_EQ(r.status, 75) << r.Describe();
  r = Run({"delete", "--force", "bob"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_FALSE(Open()->FindUser("bob"));
}

TEST_F(AdminCli, HostileNamesDeleteAndRenameNothing) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"delete", "--force", "user/bob/Sent", "../x"},
           {"delete", "--force", "user/joe/../bob"},
           {"delete", "--force", "joe/Sent"},
           {"rename", "user/joe/Sent", "user/joe/../../x"},
           {"rename", "user/joe", "../jim"},
           {"rename", "user/joe", "user/jim", "../second"},
       }) {
    CliResult r = Run(args);
    EXPECT_EQ(r.status, 64) << args[1] << " " << r.Describe();
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  auto store = Open();
  EXPECT_TRUE(store->FindFolder("bob", "Sent"));
  EXPECT_TRUE(store->FindFolder("joe", "Sent"));
  EXPECT_FALSE(store->FindUser("jim"));
}

TEST_F(AdminCli, RenameFolderUserAndPartition) {
  CliResult r = Run({"rename", "user/joe/Sent", "user/joe/Sent Items"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out, "renamed user/joe/Sent to user/joe/Sent Items\n");
  // The same rename again (a script's retry, a rerun after a kill): still 66, but it says why.
  r = Run({"rename", "user/joe/Sent", "user/joe/Sent Items"});
  EXPECT_EQ(r.status, 66) << r.Describe();
  EXPECT_TRUE(r.err.ends_with(": user/joe/Sent (user/joe/Sent Items exists: renamed already?)\n")) << r.Describe();
  r = Run({"rename", "user/joe/Drafts", "user/joe/Other"});  // neither there: no such guess
  EXPECT_EQ(r.status, 66) << r.Describe();
  EXPECT_EQ(r.err.find("renamed already"), std::string::npos) << r.Describe();
  r = Run({"rename", "user/joe/Sent Items", "user/bob/Sent"});
  EXPECT_EQ(r.status, 64) << r.Describe();
  r = Run({"rename", "user/joe/INBOX", "user/joe/Old"});
  EXPECT_EQ(r.status, 64) << r.Describe();
  r = Run({"rename", "user/bob", "user/joe"});
  EXPECT_EQ(r.status, 73) << r.Describe();

  r = Run({"rename", "user/joe", "user/jim", "second"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out,
            "renamed user/joe/INBOX to user/jim/INBOX\nrenamed user/joe/Sent Items to user/jim/Sent Items\n"
            "renamed user joe to jim on partition second\n");
  r = Run({"rename", "user/joe", "user/jim"});
  EXPECT_EQ(r.status, 66) << r.Describe();
  EXPECT_TRUE(r.err.ends_with(": joe (user/jim exists: renamed already?)\n")) << r.Describe();
  // A user moved away keeps its name here: its record defers mail to the new host (helper-64:
  // renamed, mail to the old name bounced and a restore of it was no longer refused).
  ASSERT_EQ(Run({"user", "bob", "--status", "moved:mail2.example"}).status, 0);
  r = Run({"rename", "user/bob", "user/robert"});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_NE(r.err.find("user bob is marked moved to mail2.example here: its mail lives there, so rename it there"),
            std::string::npos)
      << r.Describe();
  EXPECT_TRUE(Open()->FindUser("bob"));
  // Nor are its folders renamed here: they live there too (helper-75: accepted, exit 0).
  r = Run({"rename", "user/bob/Sent", "user/bob/Sent2"});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_NE(r.err.find("user bob is marked moved to mail2.example here: its mail lives there, so rename its folders "
                       "there"),
            std::string::npos)
      << r.Describe();
  EXPECT_TRUE(Open()->FindFolder("bob", "Sent"));
  ASSERT_EQ(Run({"user", "bob", "--status", "active", "--include-moved"}).status, 0);
  {
    auto store = Open();
    EXPECT_EQ(store->FindUser("jim")->partition, "second");
    EXPECT_EQ(ReadMessage(*store, "jim", "Sent Items", 1), Msg("joe-sent"));
  }
  r = Run({"rename", "user/bob/Sent", "user/bob/Sent", "second"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out, "moved user bob to partition second\n");
  r = Run({"rename", "bob", "bob", "second"});
  EXPECT_EQ(r.out, "user bob is on partition second already\n");
  EXPECT_EQ(ReadMessage(*Open(), "bob", "Sent", 1), Msg("bob-sent"));
}

}  // namespace
}  // namespace storemove::store
