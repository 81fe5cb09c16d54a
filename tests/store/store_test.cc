// Unit tests of the store library: names, users, folders, appends, flags, expunge, corruption.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include <future>

#include <chrono>

#include <atomic>

#include "tests/support/gone_pid.h"
#include "tests/support/error_code.h"
#include "store/index.h"
#include "store/mboxlist.h"
#include "store/names.h"
#include "store/stale_temporaries.h"
#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"
#include "util/fault.h"
#include "util/fs.h"

namespace storemove::store {
namespace {

using storemove::testing::TempDir;

using storemove::testing::CodeOf;

std::string ReadAllFd(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
  return out;
}

uint32_t Deliver(Folder& f, std::string_view bytes, MessageMeta meta = {}) {
  auto w = f.NewMessage();
  w->Write(bytes);
  std::vector<StagedMessage> batch{w->Finish(meta)};
  return f.Commit(batch).at(0);
}

TEST(Names, UserIds) {
  ValidateUserId("joe");
  ValidateUserId("joe.smith@example.com");
  for (const char* bad : {"", "../x", "a/b", "joe..x", ".joe", "joe@", "a@b@c", "jo e", "x\x01"})
    EXPECT_EQ(CodeOf([&] { ValidateUserId(bad); }), Errc::kInvalidArgument) << bad;
  EXPECT_EQ(CodeOf([&] { ValidateUserId(std::string(129, 'a')); }), Errc::kInvalidArgument);
  // Characters that show as nothing make an id that lists exactly like another (helper-105): a
  // byte-order mark, zero-width space/joiners, direction marks and embeddings, word joiner and
  // isolates, soft hyphen. Visible neighbours stay valid.
  for (const char* invisible : {"\xef\xbb\xbf" "zed", "ze\xe2\x80\x8b" "d", "zed\xe2\x80\x8f", "z\xe2\x80\xae" "ed",
                                "z\xe2\x81\xa0" "ed", "z\xe2\x81\xa9" "ed", "z\xc2\xad" "ed"}) {
    EXPECT_NO_THROW(ValidateUserId(invisible)) << "an existing user an older build made stays reachable";
    try {
      ValidateNewUserId(invisible);
      ADD_FAILURE() << "accepted " << invisible;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("which shows as nothing"), std::string::npos) << e.what();
    }
  }
  // em dash, euro, copyright; the zero-width non-joiner and joiner Persian and Indic names need
  for (const char* visible : {"z\xe2\x80\x94" "ed", "z\xe2\x82\xac" "d", "z\xc2\xa9" "ed", "mi\xe2\x80\x8c" "xa",
                              "k\xe2\x80\x8d" "a"})
    EXPECT_NO_THROW(ValidateNewUserId(visible)) << visible;
}

TEST(Names, FolderNames) {
  for (const char* ok : {"INBOX", "Sent", "Projects/2024/Q3", "My Folder", "caf\xc3\xa9", "store.idx", "00", "a.b"})
    ValidateFolderName(ok);
  for (const char* bad : {"", "/x", "x/", "a//b", "..", "a/../b", ".", "a\tb"})
    EXPECT_EQ(CodeOf([&] { ValidateFolderName(bad); }), Errc::kInvalidArgument) << bad;
  EXPECT_EQ(CodeOf([&] { ValidateFolderName(std::string("a\0b", 3)); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { ValidateFolderName(std::string(300, 'x')); }), Errc::kInvalidArgument);
}

// RFC 6531 internationalized addresses are user ids; every malformed UTF-8 form (RFC 3629 §3:
// stray continuation, truncated, overlong, surrogate, beyond U+10FFFF) and every control
// character (C0, DEL, C1) is refused, with one line that shows the bad bytes as \xNN.
TEST(Names, Utf8UserIds) {
  for (const char* ok : {"j\xc3\xb6rg@ex\xc3\xa4mple.org", "\xe6\x97\xa5\xe6\x9c\xac@\xe4\xbe\x8b.jp",
                         "\xc3\xb6laf", "x\xf0\x9f\x98\x80y", "a\xf4\x8f\xbf\xbf", "\xef\xbf\xbd"})
    EXPECT_NO_THROW(ValidateUserId(ok)) << ok;
  const std::vector<std::string> bad = {
      "j\xf6rg",               // Latin-1, not UTF-8
      "a\x80" "b",            // stray continuation byte
      "a\xc3",                 // truncated
      "a\xe6\x97",            // truncated
      "a\xc0\xaf" "b",        // overlong '/'
      "a\xc1\xbf",            // overlong
      "a\xe0\x80\xaf",       // overlong '/', three bytes
      "a\xf0\x80\x80\xaf",  // overlong '/', four bytes
      "a\xed\xa0\x80",       // surrogate U+D800
      "a\xed\xbf\xbf",       // surrogate U+DFFF
      "a\xf4\x90\x80\x80",  // U+110000
      "a\xf5\x80\x80\x80",  // beyond
      "a\xc2\x85",            // NEL (C1)
      "a\xc2\x9f",            // C1
      "a\x7f",                 // DEL
      "a\xe2\x80\xa8",       // U+2028 line separator
      "j\xc3\xb6rg/x",        // '/'
      "j\xc3\xb6rg..x",       // '..'
      "-j\xc3\xb6rg",         // ASCII start must be a letter or digit
  };
  for (const std::string& id : bad) {
    EXPECT_EQ(CodeOf([&] { ValidateUserId(id); }), Errc::kInvalidArgument) << id;
    try {
      ValidateUserId(id);
    } catch (const Error& e) {
      std::string what = e.what();
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
      for (unsigned char c : what) EXPECT_FALSE(c < 0x20 || c == 0x7f) << what;  // shown as \xNN
    }
  }
  std::string max;
  while (max.size() + 2 <= 128) max += "\xc3\xb6";  // 64 two-byte characters: 128 bytes
  EXPECT_NO_THROW(ValidateUserId(max));
  EXPECT_EQ(CodeOf([&] { ValidateUserId(max + "a"); }), Errc::kInvalidArgument);
}

TEST(Names, Utf8FolderNames) {
  for (const char* ok : {"Entw\xc3\xbcrfe", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/\xe5\x8f\xb0\xe5\x8c\x97",
                         "\xf0\x9f\x98\x80 smile", "caf\xc3\xa9/x"})
    EXPECT_NO_THROW(ValidateFolderName(ok)) << ok;
  for (const char* bad : {"caf\xe9", "a/\xed\xa0\x80", "\xc0\xae\xc0\xae", "a/\xc0\xaf/b", "x\xc2\x80", "x\x7f",
                          "x\xf4\x90\x80\x80", "a/\x80"})
    EXPECT_EQ(CodeOf([&] { ValidateFolderName(bad); }), Errc::kInvalidArgument) << bad;
  // What an earlier storemove stored with other 8-bit bytes stays readable (store/names.h)...
  EXPECT_NO_THROW(ValidateStoredFolderName("caf\xe9"));
  EXPECT_EQ(ParseStoredMailboxName("user/joe/caf\xe9").second, "caf\xe9");
  // ...but never with the path-safety rules relaxed.
  for (const char* bad : {"..", "a/../b", "a\tb", "", "a//b"})
    EXPECT_EQ(CodeOf([&] { ValidateStoredFolderName(bad); }), Errc::kInvalidArgument) << bad;
  EXPECT_EQ(CodeOf([] { ParseMailboxName("user/joe/caf\xe9"); }), Errc::kInvalidArgument);
}

// The user directory is the id's bytes after '=' below a hash of them: a UTF-8 id is one
// directory name (no '/' can pass validation) and two ids differing in one byte differ.
TEST(Names, Utf8UserDirectories) {
  const std::string id = "j\xc3\xb6rg@ex\xc3\xa4mple.org";
  EXPECT_EQ(FolderRelPath(id, "INBOX"), "=user/" + HashDir(id) + "/=" + id);
  EXPECT_EQ(FolderRelPath(id, "Entw\xc3\xbcrfe"), "=user/" + HashDir(id) + "/=" + id + "/+Entw%C3%BCrfe");
  EXPECT_NE(FolderRelPath("jorg@example.org", "INBOX"), FolderRelPath(id, "INBOX"));
}

TEST(Names, FolderPathsNeverCollideWithFolderFiles) {
  std::string inbox = FolderRelPath("joe", "INBOX");
  EXPECT_EQ(inbox, "=user/" + HashDir("joe") + "/=joe");
  EXPECT_EQ(FolderRelPath("joe", "store.idx"), inbox + "/+store.idx");
  EXPECT_EQ(FolderRelPath("joe", "00"), inbox + "/+00");
  EXPECT_EQ(FolderRelPath("joe", "My Folder/caf\xc3\xa9"), inbox + "/+My%20Folder/+caf%C3%A9");
  EXPECT_EQ(FolderRelPath("joe", "a+b%c"), inbox + "/+a%2Bb%25c");
  EXPECT_EQ(MessageRelPath(1), "00/1.msg");
  EXPECT_EQ(MessageRelPath(700), "02/700.msg");
}

TEST(Names, MailboxNamesAndPatterns) {
  EXPECT_EQ(ParseMailboxName("user/joe/Sent/2024"), std::make_pair(std::string("joe"), std::string("Sent/2024")));
  EXPECT_EQ(ParseMailboxName("user/joe"), std::make_pair(std::string("joe"), std::string("INBOX")));
  EXPECT_EQ(CodeOf([] { ParseMailboxName("user/../x/INBOX"); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([] { ParseMailboxName("joe/INBOX"); }), Errc::kInvalidArgument);
  EXPECT_TRUE(MatchPattern("*", "user/joe/INBOX"));
  EXPECT_TRUE(MatchPattern("user/%/INBOX", "user/joe/INBOX"));
  EXPECT_FALSE(MatchPattern("user/%", "user/joe/INBOX"));
  EXPECT_TRUE(MatchPattern("user/j*", "user/joe/Sent/x"));
  EXPECT_FALSE(MatchPattern("user/k*", "user/joe/INBOX"));
}

TEST(Flags, BitsNamesStatus) {
  EXPECT_EQ(FlagBits(kSeen), "0010000");
  EXPECT_EQ(ParseFlagNames("\\Seen, flagged"), kSeen | kFlagged);
  EXPECT_EQ(FlagNames(kSeen | kFlagged), "Seen,Flagged");
  EXPECT_EQ(CodeOf([] { ParseFlagNames("Bogus"); }), Errc::kInvalidArgument);
  EXPECT_EQ(UserStatus::Parse("moved:new.example.com").ToString(), "moved:new.example.com");
  EXPECT_EQ(UserStatus::Parse("hold").state, UserState::kHold);
  EXPECT_EQ(CodeOf([] { UserStatus::Parse("moved:"); }), Errc::kInvalidArgument);
}

TEST(Store, OpenMissingStoreIsNotFound) {
  TempDir tmp;
  EXPECT_EQ(CodeOf([&] { Store::Open(tmp / "nope"); }), Errc::kNotFound);
  EXPECT_EQ(CodeOf([&] { Store::Open(tmp.path()); }), Errc::kNotFound);
  EXPECT_FALSE(PathExists(tmp / "nope"));
}

TEST(Store, InitCreatesLayout) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {"primary", "secondary"});
  EXPECT_EQ(store->Partitions(), (std::vector<std::string>{"primary", "secondary"}));
  EXPECT_EQ(store->DefaultPartition(), "primary");
  EXPECT_TRUE(IsDirectory(tmp / "partition/secondary/=user"));
  EXPECT_EQ(store->store_id().size(), 24u);
  std::string id = store->store_id();
  store.reset();
  EXPECT_EQ(Store::Open(tmp.path())->store_id(), id);
}

TEST(Store, UsersStatusAndQuota) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {"primary", "secondary"});
  EXPECT_FALSE(store->FindUser("joe"));
  UserInfo joe = store->CreateUser("joe@example.com", "secondary");
  EXPECT_EQ(joe.partition, "secondary");
  EXPECT_EQ(joe.status.state, UserState::kActive);
  EXPECT_TRUE(store->FindFolder("joe@example.com", "INBOX"));
  EXPECT_TRUE(IsDirectory(tmp / ("partition/secondary/" + FolderRelPath("joe@example.com", "INBOX"))));
  store->SetUserStatus("joe@example.com", UserStatus::Parse("moved:mail2"));
  store->SetQuotaLimit("joe@example.com", 1000000);
  auto again = store->FindUser("joe@example.com");
  EXPECT_EQ(again->status.ToString(), "moved:mail2");
  EXPECT_EQ(again->quota_limit, 1000000u);
  EXPECT_EQ(CodeOf([&] { store->SetUserStatus("nobody", UserStatus{}); }), Errc::kNoUser);
  EXPECT_EQ(CodeOf([&] { store->CreateUser("x", "nopart"); }), Errc::kNotFound);
  store->CreateUser("amy");
  std::vector<std::string> users;
  store->ForEachUser([&](const UserInfo& u) { users.push_back(u.user); });
  EXPECT_EQ(users, (std::vector<std::string>{"amy", "joe@example.com"}));
}

TEST(Store, AppendReadBackSnapshotAndQuota) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  auto inbox = store->CreateFolder("joe", "INBOX", 4242);  // creates the user record, without an INBOX first
  std::string m1 = "Date: Thu, 28 Nov 2026 10:00:00 +0000\r\nSubject: hi\r\n\r\nbody\r\n";
  std::string m2 = "Subject: no date\n\nline\nFrom me\n";
  MessageMeta meta;
  meta.flags = kSeen;
  meta.internal_date = 1700000000;
  EXPECT_EQ(Deliver(*inbox, m1, meta), 1u);
  EXPECT_EQ(Deliver(*inbox, m2), 2u);
  FolderSnapshot snap = inbox->Snapshot();
  EXPECT_EQ(snap.info.uidvalidity, 4242u);
  EXPECT_EQ(snap.info.uidnext, 3u);
  EXPECT_EQ(snap.info.count, 2u);
  EXPECT_EQ(snap.info.bytes, m1.size() + m2.size());
  ASSERT_EQ(snap.messages.size(), 2u);
  const MessageMeta& r1 = snap.messages[0];
  EXPECT_EQ(r1.flags, kSeen);
  EXPECT_EQ(r1.internal_date, 1700000000);
  EXPECT_EQ(r1.size, m1.size());
  EXPECT_EQ(r1.header_size, m1.find("\r\n\r\n") + 4);
  EXPECT_EQ(r1.digest, DigestOf(m1));
  EXPECT_EQ(snap.messages[1].header_size, m2.find("\n\n") + 2);
  UniqueFd fd = inbox->OpenMessage(1);
  ASSERT_TRUE(fd.valid());
  EXPECT_EQ(ReadAllFd(fd.get()), m1);
  EXPECT_EQ(store->FindUser("joe")->quota_used, m1.size() + m2.size());
  struct stat st;
  ASSERT_EQ(::stat(inbox->MessagePath(2).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

// A listing of names only (backup, verify) never touches the folders' indexes; the snapshot
// fills every counter itself and still names a missing index as damage.
TEST(Store, RecordOnlyListingLeavesTheIndexToTheSnapshot) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  auto inbox = store->CreateFolder("joe", "INBOX", 77);
  store->CreateFolder("joe", "Sent");
  Deliver(*inbox, "Subject: a\r\n\r\nbody\r\n");
  std::vector<FolderInfo> names = store->ListFolders("joe", Store::FolderDetail::kRecordOnly);
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].folder, "INBOX");
  EXPECT_EQ(names[0].uidnext, 1u);  // not read
  FolderSnapshot snap = inbox->Snapshot();
  EXPECT_EQ(snap.info.uidvalidity, 77u);
  EXPECT_EQ(snap.info.uidnext, 2u);
  EXPECT_EQ(snap.info.count, 1u);
  EXPECT_EQ(snap.info.partition, names[0].partition);
  EXPECT_EQ(snap.info.acl, store->FindFolder("joe", "INBOX")->acl);

  ASSERT_EQ(::unlink((inbox->path() + "/store.idx").c_str()), 0);
  EXPECT_EQ(store->ListFolders("joe", Store::FolderDetail::kRecordOnly).size(), 2u);
  EXPECT_TRUE(store->FindFolder("joe", "INBOX", Store::FolderDetail::kRecordOnly).has_value());
  EXPECT_EQ(CodeOf([&] { store->ListFolders("joe"); }), Errc::kCorrupt);
  try {
    inbox->Snapshot();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kCorrupt);
    EXPECT_NE(std::string(e.what()).find("store.idx missing at " + inbox->path() + "/store.idx"), std::string::npos)
        << e.what();
  }
}

// A process killed inside a checkpoint leaves libdb's checkpoint mutex locked forever: a later
// checkpoint of a process attached before the recovery waits at most the limit, then restore's
// checkpoint fails (kTempFail: run again) and closing the store returns, leaving the environment
// to the next open's recovery. (A stand-in for the stuck libdb call: killing a real process at
// that exact moment cannot be made deterministic.)
TEST(Store, ACheckpointStuckOnADeadProcessFailsInTimeInsteadOfHanging) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateFolder("joe", "INBOX");
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> calls{0};
  Store::Db::SetCheckpointForTesting(
      [released, &calls](DB_ENV*, u_int32_t) {
        ++calls;
        released.wait();
        return 0;
      },
      std::chrono::milliseconds(200));
  const auto start = std::chrono::steady_clock::now();
  try {
    store->Checkpoint();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kTempFail);
    EXPECT_NE(std::string(e.what()).find("a checkpoint did not finish within 200 ms"), std::string::npos) << e.what();
  }
  store.reset();  // neither waits for the stuck checkpoint nor starts another one
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(calls.load(), 1);
  release.set_value();
  Store::Db::SetCheckpointForTesting({}, std::chrono::seconds(30));

  // A checkpoint that finishes in time is libdb's own, as before.
  TempDir other;
  auto fresh = Store::Init(other.path(), {});
  fresh->Checkpoint();
}

TEST(Store, LargeMessageWrittenInChunksHasCorrectHeaderAndDigest) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  auto f = store->CreateFolder("joe", "Big");
  std::string header = "From: a@b\r\nSubject: big\r\n\r\n";
  std::string body(3 * 1024 * 1024 + 17, 'x');
  std::string whole = header + body;
  auto w = f->NewMessage();
  for (size_t i = 0; i < whole.size(); i += 7) w->Write(whole.substr(i, 7));  // blank line split across chunks
  std::vector<StagedMessage> batch{w->Finish({})};
  f->Commit(batch);
  auto snap = f->Snapshot();
  EXPECT_EQ(snap.messages[0].header_size, header.size());
  EXPECT_EQ(snap.messages[0].digest, DigestOf(whole));
}

// The header ends at the first empty line ("\n\n" or "\r\n\r\n", mixed too), wherever the
// writes split it; no empty line: the whole message is header.
TEST(Store, HeaderSizeIsFoundWhateverTheWriteSizes) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  auto f = store->CreateFolder("joe", "INBOX");
  struct Case {
    std::string message;
    uint32_t header_size;
  };
  const std::vector<Case> cases = {
      {"A: 1\nB: 2\n\nbody\n\nmore", 11},     {"A: 1\r\nB: 2\r\n\r\nbody\r\n", 14},
      {"A: 1\r\n\nbody", 7},                    {"A: 1\n\r\nbody", 7},
      {"\nbody", 1},                               {"\r\nbody", 2},
      {"A: 1\r\r\nB\n\nx", 10},                 {"A: 1\nno empty line\r\n", 20},
      {"A: \r1\n\r\r\n\nx", 10},
  };
  for (const Case& c : cases) {
    for (size_t piece : {size_t{1}, size_t{2}, size_t{3}, c.message.size()}) {
      auto w = f->NewMessage();
      for (size_t i = 0; i < c.message.size(); i += piece) w->Write(c.message.substr(i, piece));
      std::vector<StagedMessage> batch{w->Finish({})};
      EXPECT_EQ(batch[0].meta.header_size, c.header_size) << c.message << " in pieces of " << piece;
      f->Discard(batch);
    }
  }
}

TEST(Store, ExplicitUidsFillGapsAndConflictsChangeNothing) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  auto f = store->CreateFolder("joe", "INBOX");
  MessageMeta m;
  m.uid = 10;
  Deliver(*f, "a\n\nx", m);
  m.uid = 5;
  Deliver(*f, "b\n\ny", m);
  EXPECT_EQ(Deliver(*f, "c\n\nz"), 11u);
  auto snap = f->Snapshot();
  ASSERT_EQ(snap.messages.size(), 3u);
  EXPECT_EQ(snap.messages[0].uid, 5u);  // sorted by UID whatever the append order
  EXPECT_EQ(snap.info.uidnext, 12u);
  m.uid = 10;
  auto w = f->NewMessage();
  w->Write("dup");
  std::vector<StagedMessage> batch{w->Finish(m)};
  EXPECT_EQ(CodeOf([&] { f->Commit(batch); }), Errc::kExists);
  EXPECT_EQ(f->Snapshot().messages.size(), 3u);
  UniqueFd fd = f->OpenMessage(10);
  EXPECT_EQ(ReadAllFd(fd.get()), "a\n\nx");
  // No temporary files remain.
  for (auto& e : std::filesystem::directory_iterator(f->path()))
    EXPECT_FALSE(e.path().filename().string().starts_with("tmp.")) << e.path();
}

TEST(Store, FlagsUserFlagNamesAndUidNext) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  auto f = store->CreateFolder("joe", "INBOX");
  Deliver(*f, "m\n\n1");
  f->SetFlags(1, kSeen | kAnswered, 0b101);
  f->SetUserFlagNames({"$Junk", "$Label1", "important"});
  f->RaiseUidNext(100);
  f->RaiseUidNext(50);
  auto snap = f->Snapshot();
  EXPECT_EQ(snap.messages[0].flags, kSeen | kAnswered);
  EXPECT_EQ(snap.messages[0].user_flags, 0b101u);
  EXPECT_EQ(snap.info.user_flag_names, (std::vector<std::string>{"$Junk", "$Label1", "important"}));
  EXPECT_EQ(snap.info.uidnext, 100u);
  EXPECT_EQ(Deliver(*f, "m\n\n2"), 100u);
  EXPECT_EQ(CodeOf([&] { f->SetFlags(7, kSeen, 0); }), Errc::kNotFound);
}

TEST(Store, ExpungeRemovesRecordsFilesAndQuota) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  auto f = store->CreateFolder("joe", "INBOX");
  for (int i = 0; i < 5; ++i) Deliver(*f, "message " + std::to_string(i));
  uint64_t before = store->FindUser("joe")->quota_used;
  std::string path2 = f->MessagePath(2);
  f->Expunge({2, 4});
  auto snap = f->Snapshot();
  ASSERT_EQ(snap.messages.size(), 3u);
  EXPECT_EQ(snap.messages[1].uid, 3u);
  EXPECT_FALSE(PathExists(path2));
  EXPECT_EQ(store->FindUser("joe")->quota_used, before - 2 * std::string("message 0").size());
  EXPECT_EQ(store->RecomputeQuota("joe"), before - 18);
  EXPECT_EQ(Deliver(*f, "after"), 6u);  // UIDs are never reused
}

// A delivery's save time is its commit's, taken under the folder's lock, not the time its body
// started or finished arriving: `backup -d START` must take every message a full backup started
// at START did not see (a slow sender, a wait for the lock).
TEST(Store, ASaveTimeIsTakenAtTheCommit) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  auto f = store->CreateFolder("amy", "INBOX");
  auto w = f->NewMessage();
  w->Write("Subject: slow\r\n\r\nbody\r\n");
  std::vector<StagedMessage> batch{w->Finish({})};
  EXPECT_EQ(batch[0].meta.save_time, 0) << "left to the commit";
  EXPECT_NE(batch[0].meta.internal_date, 0);
  const int64_t before = ::time(nullptr);
  f->Commit(batch);
  const MessageMeta m = f->Snapshot().messages.at(0);
  EXPECT_GE(m.save_time, before);
  EXPECT_LE(m.save_time, ::time(nullptr));
}

// amy's INBOX holding one message, and bob's `folder`: the two ends of a staged link.
struct LinkEnds {
  TempDir tmp;
  std::unique_ptr<Store> store = Store::Init(tmp.path(), {});
  std::unique_ptr<Folder> a = store->CreateFolder("amy", "INBOX");
  std::unique_ptr<Folder> b;
  MessageMeta meta;
  explicit LinkEnds(const std::string& folder) : b(store->CreateFolder("bob", folder)) {
    Deliver(*a, "shared content\n\nbody");
    meta = a->Snapshot().messages[0];
  }
};

TEST(Store, StageLinkSharesOneInode) {
  LinkEnds ends("Lists/news");
  auto& [tmp, store, a, b, meta] = ends;
  meta.uid = 0;
  auto staged = b->StageLink(a->MessagePath(1), meta);
  ASSERT_TRUE(staged);
  std::vector<StagedMessage> batch{*staged};
  b->Commit(batch);
  struct stat sa, sb;
  ASSERT_EQ(::stat(a->MessagePath(1).c_str(), &sa), 0);
  ASSERT_EQ(::stat(b->MessagePath(1).c_str(), &sb), 0);
  EXPECT_EQ(sa.st_ino, sb.st_ino);
  EXPECT_EQ(sa.st_nlink, 2u);
  EXPECT_EQ(b->Snapshot().messages[0].digest, DigestOf("shared content\n\nbody"));
}

// A killed run's leftover <uid>.msg may already be a link to the very file a rerun links: rename(2)
// between two links of one inode does nothing and succeeds, and the staged tmp.* name stayed for
// good, three links each (helper-102: 18 of them after a restore rerun that exited 0).
TEST(Store, ACommitOntoALeftoverLinkOfTheSameFileLeavesNoStagedName) {
  LinkEnds ends("INBOX");
  auto& [tmp, store, a, b, meta] = ends;
  meta.uid = 1;
  const std::string leftover = b->MessagePath(1);
  std::filesystem::create_directories(std::filesystem::path(leftover).parent_path());
  ASSERT_EQ(::link(a->MessagePath(1).c_str(), leftover.c_str()), 0);
  auto staged = b->StageLink(a->MessagePath(1), meta);
  ASSERT_TRUE(staged);
  std::vector<StagedMessage> batch{*staged};
  b->Commit(batch);
  for (const auto& e : std::filesystem::recursive_directory_iterator(std::filesystem::path(leftover).parent_path().parent_path()))
    EXPECT_FALSE(e.path().filename().string().starts_with("tmp.")) << e.path();
  struct stat st;
  ASSERT_EQ(::stat(leftover.c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_EQ(b->Snapshot().messages.at(0).uid, 1u);
}

using storemove::testing::GonePid;

// A writer killed between writing its message and committing it leaves `tmp.<pid>.<token>`
// (invisible, but its bytes stay on the disk). The next writer to commit to the folder, a rerun
// of the restore, import or pull that was stopped, removes those whose process is gone, and
// nothing else (helper-123: a stopped moveuser left up to 0.9 MB that its successful rerun kept;
// only a relink an hour later removed it).
TEST(Store, TheFirstCommitRemovesTheTemporariesOfWritersThatAreGone) {
  TempDir tmp;
  auto store = Store::Init(tmp / "store", {"primary"});
  store->CreateUser("joe");
  const std::string inbox = store->OpenFolder("joe", "INBOX")->path();
  // A name as this namespace's writers make it, with the pid of a process that is gone.
  std::string made = NewTemporaryName();  // tmp.<pid>.n<ns>.<random>
  ASSERT_EQ(made.rfind("tmp." + std::to_string(::getpid()) + ".n", 0), 0u) << made;
  const std::string ns_and_token = made.substr(made.find('.', 4) + 1);
  const std::string gone = inbox + "/tmp." + std::to_string(GonePid()) + "." + ns_and_token;
  // A process that runs (a name without its start: the pid alone decides).
  const std::string running =
      inbox + "/tmp." + std::to_string(::getppid()) + "." + ns_and_token.substr(0, ns_and_token.find('.') + 1) + "r4nd0m";
  // Its process is gone, but in another pid namespace (a container's writer sharing the store:
  // its pid means nothing here, helper-128), or of a name without a namespace (an older
  // version's): relink's to judge, by its age.
  const std::string other_namespace = inbox + "/tmp." + std::to_string(GonePid()) + ".n1.r4nd0m";
  const std::string without_namespace = inbox + "/tmp." + std::to_string(GonePid()) + ".k1lled";
  const std::string renamed = inbox + "/store.idx.tmp.wr1te";
  const std::string other = inbox + "/tmp.notapid";
  for (const std::string& p : {gone, running, other_namespace, without_namespace, renamed, other})
    WriteFileAtomic(p, "left behind", 0600);
  auto folder = store->OpenFolder("joe", "INBOX");
  Deliver(*folder, "Subject: one\r\n\r\nbody\r\n");
  EXPECT_FALSE(PathExists(gone));
  for (const std::string& p : {running, other_namespace, without_namespace, renamed, other}) EXPECT_TRUE(PathExists(p)) << p;
  EXPECT_EQ(folder->Snapshot().messages.size(), 1u);
}

// A folder's directory made by this very call is not listed for temporaries at the first commit
// (restore of many small users); one that was there already, as a killed restore or a killed
// creation leaves it, still is.
TEST(Store, AFolderDirectoryLeftByAKilledCreatorIsSweptAtTheFirstCommit) {
  TempDir tmp;
  auto store = Store::Init(tmp / "store", {"primary"});
  store->CreateUser("joe");
  const std::string inbox = store->OpenFolder("joe", "INBOX")->path();
  const std::string made = NewTemporaryName();
  const std::string ns_and_token = made.substr(made.find('.', 4) + 1);
  const std::string left = "tmp." + std::to_string(GonePid()) + "." + ns_and_token;
  // Unpublished (a restore's), and published (CreateFolder's), each in a directory left behind.
  for (const std::string name : {"Sent", "Drafts"}) {
    const std::string dir = inbox + "/+" + name;  // a folder's directory (docs/store-format.md)
    MakeDirs(dir, 0700);
    WriteFileAtomic(dir + "/" + left, "left behind", 0600);
  }
  {
    Store::UserWriteLock held = store->LockUserForWriting("joe");
    auto sent = store->CreateUnpublishedFolder("joe", "Sent", 77);
    ASSERT_EQ(sent->path(), inbox + "/+Sent");
    Deliver(*sent, "Subject: one\r\n\r\nbody\r\n");
    EXPECT_FALSE(PathExists(sent->path() + "/" + left));
  }
  auto drafts = store->CreateFolder("joe", "Drafts");
  ASSERT_EQ(drafts->path(), inbox + "/+Drafts");
  Deliver(*drafts, "Subject: two\r\n\r\nbody\r\n");
  EXPECT_FALSE(PathExists(drafts->path() + "/" + left));
  EXPECT_EQ(drafts->Snapshot().messages.size(), 1u);
}

// The inode of a pid namespace file, or 0.
uint64_t NamespaceInode(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? uint64_t(st.st_ino) : 0;
}

// The start of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat), 0 if unknown.
unsigned long long StartTicks(pid_t pid) {
  const std::string text = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  unsigned long long start = 0;
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos ||
      std::sscanf(text.c_str() + paren + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                  &start) != 1)
    return 0;
  return start;
}

// A process in a pid namespace of its own (as a container's writer is), killed with the test.
class OtherPidNamespace {
 public:
  // `hidden`: the process runs as nobody and is not dumpable, as `serve` makes itself, so that
  // nobody cannot read its namespace (/proc/PID/ns/pid).
  explicit OtherPidNamespace(bool hidden = false) {
    int pipe_fds[2], ready_fds[2];
    if (::pipe(pipe_fds) != 0) return;
    if (::pipe(ready_fds) != 0) {
      ::close(pipe_fds[0]);
      ::close(pipe_fds[1]);
      return;
    }
    const pid_t outer = ::fork();
    if (outer == 0) {
      ::close(pipe_fds[0]);
      ::close(ready_fds[0]);
      if (::unshare(CLONE_NEWPID) != 0) ::_exit(1);
      const pid_t inner = ::fork();  // pid 1 of the new namespace
      if (inner == 0) {
        if (hidden && (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
                       ::setresuid(65534, 65534, 65534) != 0 || ::prctl(PR_SET_DUMPABLE, 0) != 0))
          ::_exit(1);
        (void)!::write(ready_fds[1], "r", 1);  // hidden (when asked) before anyone looks at it
        ::close(ready_fds[1]);
        for (;;) ::pause();
      }
      ::close(ready_fds[1]);
      (void)!::write(pipe_fds[1], &inner, sizeof inner);
      ::_exit(::waitpid(inner, nullptr, 0) == inner ? 0 : 1);
    }
    ::close(pipe_fds[1]);
    ::close(ready_fds[1]);
    outer_ = outer;
    if (outer <= 0 || ::read(pipe_fds[0], &inner_, sizeof inner_) != sizeof inner_) inner_ = 0;
    ::close(pipe_fds[0]);
    // Until the inner process is set up: a test that looked at it while it was still root's and
    // dumpable judged its namespace as another user's, not hidden (failed once under load).
    char ready = 0;
    if (inner_ > 0 && ::read(ready_fds[0], &ready, 1) != 1) inner_ = 0;
    ::close(ready_fds[0]);
    // Until the inner process has left the fork's namespace for the new one (bounded: ~10 s).
    const uint64_t own = NamespaceInode("/proc/self/ns/pid");
    for (int i = 0; i < 1000 && inner_ > 0 && (ns_ == 0 || ns_ == own); ++i) {
      ns_ = NamespaceInode("/proc/" + std::to_string(inner_) + "/ns/pid");
      if (ns_ == 0 || ns_ == own) ::poll(nullptr, 0, 10);
    }
    if (ns_ == own) ns_ = 0;
  }
  ~OtherPidNamespace() { End(); }
  void End() {
    if (inner_ > 0) ::kill(inner_, SIGKILL);
    if (outer_ > 0) ::waitpid(outer_, nullptr, 0);
    inner_ = outer_ = 0;
  }
  uint64_t ns() const { return ns_; }  // 0: no namespace could be made here
  pid_t pid() const { return inner_; }

 private:
  pid_t outer_ = 0, inner_ = 0;
  uint64_t ns_ = 0;
};

// A temporary's pid means something only in its writer's pid namespace, which its token names:
// relink judged a container writer's pid against the host's processes, removing a live writer's
// files and keeping a dead pid 1's for ever (helper-129). Another namespace's temporary is stale
// once no process of that namespace is left that started before its writer: the token gives the
// writer's start in clock ticks since boot, which no step of the wall clock moves.
TEST(Store, ATemporaryOfAnotherPidNamespaceIsStaleOnceThatNamespaceIsGone) {
  struct stat file {};
  file.st_mode = S_IFREG | 0600;
  file.st_ctime = 1000;
  const std::time_t now = 1000;
  const std::string made = NewTemporaryName();
  const std::string own_token = made.substr(made.find('.', 4) + 1);  // n<ns>.s<start>.<random>
  ASSERT_EQ(own_token.find(".s" + std::to_string(StartTicks(::getpid())) + "."), own_token.find('.')) << made;
  const std::string own_ns = own_token.substr(0, own_token.find('.') + 1);
  auto stale = [&](const std::string& name) { return IsStaleTemporary(name, file, now, std::chrono::seconds(0)); };
  EXPECT_FALSE(stale("tmp." + std::to_string(::getpid()) + "." + own_token));
  EXPECT_TRUE(stale("tmp." + std::to_string(GonePid()) + "." + own_token));
  // A pid that runs, but in another process than the writer, which started before it: the
  // writer's pid was given to it since.
  EXPECT_TRUE(stale("tmp." + std::to_string(::getppid()) + "." + own_ns + "s" +
                    std::to_string(StartTicks(::getppid()) + 1) + ".r4nd0m"));
  EXPECT_FALSE(stale("tmp." + std::to_string(::getppid()) + "." + own_ns + "s" + std::to_string(StartTicks(::getppid())) +
                     ".r4nd0m"));
  EXPECT_FALSE(stale("tmp." + std::to_string(::getppid()) + "." + own_ns + "r4nd0m"));  // no start: the pid alone
  // A namespace no process is in: stale, even with the pid of a process that runs here.
  EXPECT_TRUE(stale("tmp." + std::to_string(::getpid()) + ".n1.r4nd0m"));
  EXPECT_TRUE(stale("tmp.1.n1.s5.r4nd0m"));

  // A namespace a process still runs in: not stale, even with a pid no process has here.
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a pid namespace";
  OtherPidNamespace other;
  if (other.ns() == 0) GTEST_SKIP() << "no pid namespace could be made here";
  const std::string prefix = "tmp." + std::to_string(GonePid()) + ".n" + std::to_string(other.ns()) + ".";
  const unsigned long long began = StartTicks(other.pid());
  ASSERT_NE(began, 0u);
  const std::string writer = prefix + "s" + std::to_string(began + 100) + ".r4nd0m";  // started after its init
  const std::string without_start = prefix + "r4nd0m";                                 // an older version's name
  const std::string predecessor = prefix + "s" + std::to_string(began - 1) + ".r4nd0m";  // before the namespace
  auto written_at = [&](std::time_t when) {
    struct stat at = file;
    at.st_ctime = when;
    return at;
  };
  const std::time_t up = std::time(nullptr);
  for (const std::string& name : {writer, without_start})
    EXPECT_FALSE(IsStaleTemporary(name, written_at(up), up + 7200, std::chrono::seconds(0))) << name;
  // Written, by the wall clock, two hours before its namespace began: the clock was stepped
  // forward since (an NTP step, a virtual machine resumed), which moves the boot time /proc/stat
  // gives and every start reckoned from it. The live writer's files were removed (helper-134).
  EXPECT_FALSE(IsStaleTemporary(writer, written_at(up - 7200), up, std::chrono::seconds(0)));
  // Its writer started before any process of the namespace: the number is a dead namespace's,
  // reused (helper-130: a restarted container kept its predecessor's files for ever), even where
  // a later link to the same inode (another restore of the content) changed the file since
  // (helper-134: then its ctime said nothing).
  EXPECT_TRUE(IsStaleTemporary(predecessor, written_at(up), up + 7200, std::chrono::seconds(0)));
  other.End();
  bool gone = false;
  for (int i = 0; i < 1000 && !gone; ++i) {  // until the kernel has reaped it (bounded: ~10 s)
    gone = IsStaleTemporary(writer, written_at(std::time(nullptr)), std::time(nullptr) + 7200, std::chrono::seconds(0));
    if (!gone) ::poll(nullptr, 0, 10);
  }
  EXPECT_TRUE(gone) << "no process of its namespace is left";
  EXPECT_TRUE(IsStaleTemporary(without_start, written_at(up), up + 7200, std::chrono::seconds(0)));
}

// A process that is not dumpable (`serve`, and every command that reads a key or a password,
// makes itself so) hides its namespace from its own user: relink, run as the store's owner,
// found no process of that namespace and removed its writer's files (helper-134). A namespace a
// process of this user hides may be any: nothing of another namespace is judged then.
TEST(Store, ANamespaceThatHidesItselfKeepsItsTemporaries) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a pid namespace and to become nobody";
  OtherPidNamespace hidden(true);
  if (hidden.ns() == 0) GTEST_SKIP() << "no pid namespace could be made here";
  const std::string name = "tmp.1.n" + std::to_string(hidden.ns()) + ".r4nd0m";
  // As nobody, in a child: what relink sees as the store's owner.
  auto stale_as_nobody = [&](const std::string& temporary) {
    const pid_t child = ::fork();
    if (child == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0)
        ::_exit(2);
      const bool readable = NamespaceInode("/proc/" + std::to_string(hidden.pid()) + "/ns/pid") != 0;
      struct stat file {};
      file.st_mode = S_IFREG | 0600;
      file.st_ctime = std::time(nullptr);
      const bool stale = IsStaleTemporary(temporary, file, file.st_ctime + 7200, std::chrono::seconds(0));
      ::_exit(readable ? 3 : stale ? 1 : 0);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  const int result = stale_as_nobody(name);
  if (result == 3) GTEST_SKIP() << "nobody can read a process's namespace that is not dumpable here";
  EXPECT_EQ(result, 0) << "a live namespace's temporary judged stale";
  hidden.End();
  // Once that process is gone, the namespace is judged again (bounded: ~10 s until it is reaped).
  int after = 0;
  for (int i = 0; i < 1000 && after == 0; ++i) {
    after = stale_as_nobody(name);
    if (after == 0) ::poll(nullptr, 0, 10);
  }
  EXPECT_EQ(after, 1) << "a gone namespace's temporary kept";
}

// A store.idx whose UIDNEXT is not above every UID it lists (damage; §4.1 says it always is)
// handed a new message a listed UID, and the commit's rename replaced that message's file: the
// delivery exited 0 and an older message was gone (helper-107). The commit now finds the file,
// keeps it, puts UIDNEXT above the listed UIDs and fails with a temporary error; the next
// commit succeeds.
TEST(Store, ACommitNeverReplacesTheFileOfAListedMessage) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  auto inbox = store->CreateFolder("joe", "INBOX");
  for (int i = 1; i <= 5; ++i) Deliver(*inbox, "Subject: " + std::to_string(i) + "\r\n\r\nbody\r\n");
  const std::string idx_path = inbox->path() + "/store.idx";
  const auto set_uidnext = [&](uint32_t uidnext) {
    UniqueFd idx = OpenFile(idx_path, O_RDWR);
    index::Header h = index::Read(idx.get(), idx_path, false).header;
    h.uidnext = uidnext;
    index::WriteHeader(idx.get(), h, idx_path);
    return h.highest_modseq;
  };
  std::vector<std::string> before;
  for (uint32_t uid = 1; uid <= 5; ++uid) before.push_back(ReadFile(inbox->MessagePath(uid)));
  const auto expect_kept = [&] {
    for (uint32_t uid = 1; uid <= 5; ++uid) EXPECT_EQ(ReadFile(inbox->MessagePath(uid)), before[uid - 1]) << uid;
    EXPECT_EQ(inbox->Snapshot().messages.size(), 5u);
    for (const auto& e : std::filesystem::recursive_directory_iterator(inbox->path()))
      EXPECT_FALSE(e.path().filename().string().starts_with("tmp.")) << e.path();
  };
  // A batch of three new messages, given UIDs 3, 4 and 5: all listed.
  const uint64_t modseq = set_uidnext(3);
  const auto commit_three = [&] {
    std::vector<StagedMessage> batch;
    for (int i = 0; i < 3; ++i) {
      auto w = inbox->NewMessage();
      w->Write("Subject: new " + std::to_string(i) + "\r\n\r\nbody\r\n");
      batch.push_back(w->Finish({}));
    }
    inbox->Commit(batch);
  };
  std::string said;
  try {
    commit_three();
    ADD_FAILURE() << "committed over a listed UID";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kTempFail);
    said = e.what();
  }
  EXPECT_NE(said.find("lists UID 3 but its UIDNEXT was 3 (a damaged index): the message of that UID was kept, "
                      "nothing was added, and UIDNEXT is now 6; run again"),
            std::string::npos)
      << said;
  expect_kept();
  EXPECT_GT(inbox->Snapshot().info.highest_modseq, modseq);  // the folder changed: an incremental pass looks

  // The files a refused commit had already named are removed: UID 6 free, 7 listed (a record
  // appended with an explicit UID), UIDNEXT set back to 6.
  {
    MessageMeta meta;
    meta.uid = 7;
    Deliver(*inbox, "Subject: seven\r\n\r\nbody\r\n", meta);
  }
  before.resize(5);
  set_uidnext(6);
  EXPECT_EQ(CodeOf(commit_three), Errc::kTempFail);
  EXPECT_FALSE(std::filesystem::exists(inbox->MessagePath(6))) << "placed by the refused commit, not removed";
  EXPECT_EQ(ReadFile(inbox->MessagePath(7)), "Subject: seven\r\n\r\nbody\r\n");

  // A filesystem without renameat2's flags (EINVAL): the name is looked up instead.
  set_uidnext(3);
  for (uint64_t k = 0;; ++k) {
    ASSERT_LT(k, 40u) << "the commit made no rename";
    auto w = inbox->NewMessage();
    w->Write("Subject: einval\r\n\r\nbody\r\n");
    std::vector<StagedMessage> batch{w->Finish({})};
    fault::Arm(k, fault::Kind::kEinval);
    std::string what;
    try {
      inbox->Commit(batch);
    } catch (const Error& e) {
      what = e.what();
    }
    const std::vector<fault::Op> ops = fault::Stop();
    if (k >= ops.size() || ops[k] != fault::Op::kRename) continue;
    EXPECT_NE(what.find("lists UID 3 but its UIDNEXT was 3"), std::string::npos) << what;
    break;
  }
  EXPECT_EQ(ReadFile(inbox->MessagePath(3)), before[2]);
  EXPECT_EQ(Deliver(*inbox, "Subject: new\r\n\r\nbody\r\n"), 8u);
  EXPECT_EQ(ReadFile(inbox->MessagePath(8)), "Subject: new\r\n\r\nbody\r\n");
}

// The file to link can go away between the caller's proof and the link (a repository entry that
// relink -d purged): that is "write a copy", as for a full inode, not an error that stops an
// import or a restore.
TEST(Store, StageLinkOfAFileRemovedMeanwhileAsksForACopy) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  auto b = store->CreateFolder("bob", "INBOX");
  MessageMeta meta;
  meta.size = 4;
  meta.digest = DigestOf("gone");
  EXPECT_FALSE(b->StageLink(tmp.path() + "/purged-entry.msg", meta));
  // The folder gone (the file still there) is still an error.
  const std::string there = tmp.path() + "/there.msg";
  WriteFileAtomic(there, "gone");
  std::filesystem::remove_all(b->path());
  EXPECT_THROW(b->StageLink(there, meta), Error);
}

TEST(Store, FoldersAnyDepthAndHostileNames) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  for (const char* name : {"Sent", "Projects/2024/Q3", "My Folder", "store.idx", "00", "caf\xc3\xa9", "inbox/sub"})
    store->CreateFolder("joe", name);
  auto folders = store->ListFolders("joe");
  std::vector<std::string> names;
  for (auto& f : folders) names.push_back(f.folder);
  EXPECT_EQ(names, (std::vector<std::string>{"00", "INBOX", "INBOX/sub", "My Folder", "Projects/2024/Q3", "Sent",
                                              "caf\xc3\xa9", "store.idx"}));
  EXPECT_EQ(CodeOf([&] { store->CreateFolder("joe", "../../etc"); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { store->CreateFolder("../x", "INBOX"); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { store->OpenFolder("joe", "Nope"); }), Errc::kNotFound);
  EXPECT_FALSE(PathExists(tmp / "etc"));
  int count = 0;
  store->ForEachFolder([&](const FolderInfo&) { ++count; });
  EXPECT_EQ(count, 8);
}

TEST(Store, AclSubscriptionsPerUser) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateFolder("joe", "Shared");
  store->SetAcl("joe", "Shared", "joe lrswipkxtea anyone lr");
  EXPECT_EQ(store->FindFolder("joe", "Shared")->acl, "joe lrswipkxtea anyone lr");
  EXPECT_EQ(CodeOf([&] { store->SetAcl("joe", "Shared", "oddcount"); }), Errc::kInvalidArgument);
  store->Subscribe("joe", "user/joe/Shared");
  store->Subscribe("joe", "user/joe/INBOX");
  store->Unsubscribe("joe", "user/joe/INBOX");
  EXPECT_EQ(store->Subscriptions("joe"), (std::vector<std::string>{"user/joe/Shared"}));
  store->SetPerUser("user/joe/Shared", "amy", "seen 1:5");
  EXPECT_EQ(store->PerUser("user/joe/Shared").at(0), std::make_pair(std::string("amy"), std::string("seen 1:5")));
}

TEST(Store, CorruptIndexIsReportedWithPath) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  auto f = store->CreateFolder("joe", "INBOX");
  Deliver(*f, "one\n\n1");
  Deliver(*f, "two\n\n2");
  std::string idx = f->path() + "/store.idx";
  {
    // Flip one byte inside the second record.
    UniqueFd fd = OpenFile(idx, O_RDWR);
    uint8_t b;
    PreadAll(fd.get(), &b, 1, 1024 + 96 + 10, idx);
    b ^= 0x40;
    PwriteAll(fd.get(), &b, 1, 1024 + 96 + 10, idx);
  }
  try {
    f->Snapshot();
    FAIL() << "corruption not detected";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kCorrupt);
    EXPECT_NE(std::string(e.what()).find(idx), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("record 1"), std::string::npos) << e.what();
  }
  ASSERT_EQ(::truncate(idx.c_str(), 30), 0);
  EXPECT_EQ(CodeOf([&] { f->Snapshot(); }), Errc::kCorrupt);
  EXPECT_EQ(CodeOf([&] { store->ListFolders("joe"); }), Errc::kCorrupt);
}

// An unpublished folder made with its keywords has them in its index from the start, its
// messages' bits meaning them; published, the folder lists them.
TEST(Store, AnUnpublishedFolderMadeWithKeywordsHoldsThem) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  Store::UserWriteLock held = store->LockUserForWriting("joe");
  const std::vector<std::string> names{"$Junk", "work"};
  auto folder = store->CreateUnpublishedFolder("joe", "Sent", 77, names);
  {
    const std::string idx_path = folder->path() + "/store.idx";
    UniqueFd idx = OpenFile(idx_path, O_RDONLY);
    EXPECT_EQ(index::Read(idx.get(), idx_path, false).user_flag_names, names);
  }
  auto w = folder->NewMessage(1);
  w->Write("Subject: s\r\n\r\nbody\r\n");
  MessageMeta meta;
  meta.uid = 1;
  meta.user_flags = 2;
  std::vector<StagedMessage> batch{w->Finish(meta)};
  folder->Commit(batch);
  store->PublishFolder(*folder);
  FolderSnapshot snap = store->OpenFolder("joe", "Sent")->Snapshot();
  EXPECT_EQ(snap.info.user_flag_names, names);
  ASSERT_EQ(snap.messages.size(), 1u);
  EXPECT_EQ(snap.messages[0].user_flags, 2u);
  EXPECT_THROW(store->CreateUnpublishedFolder("joe", "Drafts", 78, std::vector<std::string>(65, "k")), Error);
}

// Leftovers of a killed restore under an unpublished folder's final names (a file, a hard link
// shared with another mailbox, a symlink out of the store) are replaced by name, never written
// through; the message files are opened from the bucket directory kept by MessageDirFd.
TEST(Store, UnpublishedFolderReplacesLeftoversUnderFinalNames) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  const std::string outside = tmp.path() + "/outside.txt", shared = tmp.path() + "/shared.txt";
  WriteFileAtomic(outside, "outside\n");
  WriteFileAtomic(shared, "shared\n");
  Store::UserWriteLock held = store->LockUserForWriting("joe");
  auto folder = store->CreateUnpublishedFolder("joe", "Sent", 77);
  for (uint32_t uid : {1u, 2u, 3u, 300u}) {
    const std::string rel = MessageRelPath(uid);
    MakeDirs(folder->path() + "/" + rel.substr(0, rel.find('/')), 0700);
  }
  const std::string leftover = folder->path() + "/" + MessageRelPath(1);
  WriteFileAtomic(leftover, "half a message");
  ASSERT_EQ(::link(shared.c_str(), (folder->path() + "/" + MessageRelPath(2)).c_str()), 0);
  ASSERT_EQ(::symlink(outside.c_str(), (folder->path() + "/" + MessageRelPath(3)).c_str()), 0);

  std::vector<StagedMessage> batch;
  for (uint32_t uid : {1u, 2u, 3u, 4u, 300u}) {
    auto w = folder->NewMessage(uid);
    w->Write("Subject: " + std::to_string(uid) + "\r\n\r\nbody\r\n");
    MessageMeta meta;
    meta.uid = uid;
    batch.push_back(w->Finish(meta));
  }
  EXPECT_EQ(folder->Commit(batch), (std::vector<uint32_t>{1, 2, 3, 4, 300}));
  EXPECT_EQ(ReadFile(outside), "outside\n");
  EXPECT_EQ(ReadFile(shared), "shared\n");
  for (uint32_t uid : {1u, 2u, 3u, 4u, 300u}) {
    struct stat st;
    ASSERT_EQ(::lstat(folder->MessagePath(uid).c_str(), &st), 0) << uid;
    EXPECT_TRUE(S_ISREG(st.st_mode)) << uid;
    EXPECT_EQ(st.st_nlink, 1u) << uid;
    EXPECT_EQ(ReadFile(folder->MessagePath(uid)), "Subject: " + std::to_string(uid) + "\r\n\r\nbody\r\n");
  }
  std::string name;
  const int dir = folder->MessageDirFd(300, &name);
  EXPECT_EQ(name, "300.msg");
  struct stat st;
  EXPECT_EQ(::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW), 0);
  EXPECT_EQ(CodeOf([&] { folder->MessageDirFd(0x5000, &name); }), Errc::kNotFound);  // bucket 50 was never made
}

// An unpublished folder's messages count against the user's quota once it is published, with
// its record: a killed import's leftover, which nobody sees, counted before (helper-119).
TEST(Store, AnUnpublishedFoldersBytesCountOnceItIsPublished) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  store->CreateUser("joe");
  const std::string bytes = "Subject: x\r\n\r\nbody\r\n";
  Store::UserWriteLock held = store->LockUserForWriting("joe");
  for (const char* name : {"Left", "Done"}) {
    auto folder = store->CreateUnpublishedFolder("joe", name, 0);
    std::vector<StagedMessage> batch;
    for (int i = 0; i < 3; ++i) {
      auto w = folder->NewMessage();
      w->Write(bytes);
      batch.push_back(w->Finish({}));
    }
    folder->Commit(batch);
    EXPECT_EQ(store->FindUser("joe")->quota_used, 0u) << name;
    if (std::string(name) == "Done") store->PublishFolder(*folder);
  }
  EXPECT_EQ(store->FindUser("joe")->quota_used, 3 * bytes.size());
  EXPECT_EQ(store->RecomputeQuota("joe"), 3 * bytes.size());  // what the visible folders hold
}

}  // namespace
}  // namespace storemove::store
