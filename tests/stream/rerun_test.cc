// Restore run again over its own result finishes the job without adding copies: into a folder of
// another UIDVALIDITY (append mode), over a UID that holds other bytes, over a damaged file; and
// what a stream's names or error count cannot do to the report.
#include <sys/resource.h>
#include <fcntl.h>
#include <unistd.h>

#include <ctime>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "format/format.h"
#include "store/admin.h"
#include "store/index.h"
#include "store/store.h"
#include "stream/stream.h"
#include "store/stale_temporaries.h"
#include "tests/support/gone_pid.h"
#include "tests/support/stream_strings.h"
#include "tests/support/temp_dir.h"
#include "util/digest.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::stream {
namespace {

using storemove::testing::RestoreString;
using storemove::testing::TempDir;
using storemove::testing::WriteMessageWithBody;

struct Msg {
  uint32_t uid;
  std::string body;
  uint64_t link_to = 0;  // set: a link record naming the content_id-th message record (from 1)
  int64_t save_time = 0;  // when the source stored it; 0 = not carried
  int64_t internal_date = 0;
};

// One user, one folder, these messages: an uncompressed stream.
std::string StreamOf(const std::string& folder, uint32_t uidvalidity, const std::vector<Msg>& messages,
                     const std::string& status = "active", const std::string& acl = "", uint64_t quota = 0) {
  format::StringSink sink;
  format::Encoder enc(sink);
  enc.WriteHeader({});
  format::UserRecord u;
  u.user = "joe";
  u.status = status;
  u.quota_limit = quota;
  enc.WriteUser(u);
  format::FolderRecord f;
  f.user = "joe";
  f.folder = folder;
  f.uidvalidity = uidvalidity;
  f.acl = acl;
  f.uidnext = 1;
  for (const Msg& m : messages) f.uidnext = std::max(f.uidnext, m.uid + 1);
  enc.WriteFolder(f);
  for (const Msg& m : messages) {
    format::MessageRecord r;
    r.uid = m.uid;
    r.save_time = m.save_time;
    r.internal_date = m.internal_date;
    if (m.link_to) {
      r.size = m.body.size();
      r.digest = DigestOf(m.body);
      r.content_id = m.link_to;
      enc.WriteLink(r);
      continue;
    }
    WriteMessageWithBody(enc, r, m.body);
  }
  enc.EndFolder();
  enc.Finish();
  return sink.data();
}

// UID -> bytes of the folder's messages, read from their files.
std::map<uint32_t, std::string> Contents(store::Store& s, const std::string& folder) {
  std::map<uint32_t, std::string> out;
  auto f = s.OpenFolder("joe", folder);
  for (const store::MessageMeta& m : f->Snapshot().messages) {
    UniqueFd fd = f->OpenMessage(m.uid);
    std::string bytes(m.size + 16, '\0');
    const ssize_t n = ::pread(fd.get(), bytes.data(), bytes.size(), 0);
    bytes.resize(n < 0 ? 0 : size_t(n));
    out[m.uid] = bytes;
  }
  return out;
}

std::string Body(const std::string& subject) { return "Subject: " + subject + "\r\n\r\n" + subject + " body\r\n"; }

// The destination's INBOX came first (a delivery before the restore), with its own UIDVALIDITY:
// restore appends, and a second run finds every message it appended.
TEST(RestoreRerun, AppendingIntoAFolderOfAnotherUidValidityAddsNothingTheSecondTime) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  RestoreString(*s, StreamOf("INBOX", 7, {{1, Body("delivered first")}}));
  const std::string stream = StreamOf("INBOX", 99, {{1, Body("a")}, {2, Body("b")}, {3, Body("a")}});
  SessionReport first = RestoreString(*s, stream);
  EXPECT_EQ(first.errors, 0u);
  EXPECT_EQ(Contents(*s, "INBOX").size(), 4u);
  SessionReport second = RestoreString(*s, stream);
  EXPECT_EQ(second.errors, 0u);
  EXPECT_EQ(second.skipped, 3u);
  std::map<uint32_t, std::string> after = Contents(*s, "INBOX");
  ASSERT_EQ(after.size(), 4u) << "the rerun appended again";
  std::multiset<std::string> bodies;
  for (const auto& [uid, bytes] : after) bodies.insert(bytes);
  EXPECT_EQ(bodies, (std::multiset<std::string>{Body("delivered first"), Body("a"), Body("b"), Body("a")}));

  // -i: no check, as imsrestore -i: the messages are appended again.
  RestoreOptions no_check;
  no_check.skip_existing_check = true;
  RestoreString(*s, stream, no_check);
  EXPECT_EQ(Contents(*s, "INBOX").size(), 7u);
}

// The copies an appending restore made lose their files, or get other bytes: the rerun puts the
// stream's bytes back at those UIDs. It appended them once more and left the records without
// their files or damaged, exit 0 (helper-157; a link record's copies were repaired since 55fa13b).
TEST(RestoreRerun, TheLostOrDamagedFilesOfAppendedCopiesAreRepairedAtTheirUids) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  RestoreString(*s, StreamOf("INBOX", 7, {{1, Body("delivered first")}}));
  const std::string stream = StreamOf("INBOX", 99, {{1, Body("a")}, {2, Body("b")}, {3, Body("c")}});
  ASSERT_EQ(RestoreString(*s, stream).errors, 0u);
  const std::map<uint32_t, std::string> before = Contents(*s, "INBOX");
  ASSERT_EQ(before.size(), 4u);
  auto f = s->OpenFolder("joe", "INBOX");
  const std::string lost = f->MessagePath(2), garbled = f->MessagePath(3), shorter = f->MessagePath(4);
  f.reset();
  ::unlink(lost.c_str());
  {
    std::fstream io(garbled, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(2);
    io.put('#');  // same size, other bytes
  }
  ASSERT_EQ(::truncate(shorter.c_str(), 3), 0);
  SessionReport r = RestoreString(*s, stream);
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(r.repaired, 3u);
  EXPECT_EQ(Contents(*s, "INBOX"), before) << "the same UIDs with the same bytes, none appended";
  SessionReport again = RestoreString(*s, stream);
  EXPECT_EQ(again.repaired, 0u);
  EXPECT_EQ(again.skipped, 3u);
  EXPECT_EQ(Contents(*s, "INBOX"), before);
}

using FolderOfBodies = std::tuple<std::string, uint32_t, std::vector<std::string>>;  // name, UIDVALIDITY, bodies

// A backup of joe's `folders`, written at `created`.
std::string FoldersOf(int64_t created, const std::vector<FolderOfBodies>& folders) {
  format::StringSink sink;
  format::Encoder enc(sink);
  format::StreamHeader h;
  h.created = created;
  h.store_id = "old-store";
  enc.WriteHeader(h);
  format::UserRecord u;
  u.user = "joe";
  enc.WriteUser(u);
  for (const auto& [folder, uidvalidity, bodies] : folders) {
    format::FolderRecord f;
    f.user = "joe";
    f.folder = folder;
    f.uidvalidity = uidvalidity;
    f.uidnext = static_cast<uint32_t>(bodies.size() + 1);
    enc.WriteFolder(f);
    uint32_t uid = 0;
    for (const std::string& body : bodies) {
      format::MessageRecord r;
      r.uid = ++uid;
      r.size = body.size();
      r.digest = DigestOf(body);
      enc.BeginMessage(r);
      enc.BodyChunk(body);
      enc.EndMessage();
    }
    enc.EndFolder();
  }
  enc.Finish();
  return sink.data();
}

// A backup of joe's INBOX (two messages) and Sent (one), written at `created`.
std::string InboxAndSent(int64_t created) {
  return FoldersOf(created, {{"INBOX", 99, {Body("a"), Body("b")}}, {"Sent", 98, {Body("c")}}});
}

std::set<std::string> FolderNames(store::Store& s) {
  std::set<std::string> names;
  for (const store::FolderInfo& f : s.ListFolders("joe", store::Store::FolderDetail::kRecordOnly)) names.insert(f.folder);
  return names;
}

std::string TodayUtc() {
  std::time_t t = std::time(nullptr);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y%m%d", &tm);
  return buf;
}

// restore -n puts a stream's mailbox beside an existing one, as NAME.YYYYMMDD. Run again (after an
// interruption, or to be sure), it completes what its first run made under the same names: a
// mailbox the first run created under its own name is not dated, nor a dated one dated anew (also
// when the rerun comes on another day). Another backup is put beside, as before.
TEST(RestoreRerun, ARerunOfRestoreBesideExistingMailFindsWhatItsFirstRunMade) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  RestoreString(*s, StreamOf("INBOX", 7, {{1, Body("live")}}));  // the live INBOX
  const std::string backup = InboxAndSent(1700000000);
  RestoreOptions beside;
  beside.rename_existing = true;
  const std::string today = "INBOX." + TodayUtc();
  for (int run = 0; run < 2; ++run) {
    SessionReport r = RestoreString(*s, backup, beside);
    EXPECT_EQ(r.errors, 0u) << "run " << run;
    EXPECT_EQ(FolderNames(*s), (std::set<std::string>{"INBOX", today, "Sent"})) << "run " << run;
    EXPECT_EQ(Contents(*s, today).size(), 2u) << "run " << run;
    EXPECT_EQ(Contents(*s, "Sent").size(), 1u) << "run " << run;
  }
  EXPECT_EQ(Contents(*s, "INBOX").size(), 1u) << "the live INBOX is left alone";

  RestoreOptions next_day = beside;  // the rerun comes after midnight
  next_day.today = "20991231";
  EXPECT_EQ(RestoreString(*s, backup, next_day).errors, 0u);
  EXPECT_EQ(FolderNames(*s), (std::set<std::string>{"INBOX", today, "Sent"}));
  EXPECT_EQ(Contents(*s, today).size(), 2u);

  EXPECT_EQ(RestoreString(*s, InboxAndSent(1700086400), beside).errors, 0u);  // a day later's backup
  // Beside each folder of the same name, the first backup's dated ones too: never into them.
  EXPECT_EQ(FolderNames(*s), (std::set<std::string>{"INBOX", today, today + "-2", "Sent", "Sent." + TodayUtc()}));
  EXPECT_EQ(Contents(*s, today + "-2").size(), 2u);
}

// The dated name taken, by a folder of the user's own or by the stream's own folder of that name:
// beside it too, NAME.YYYYMMDD-2; the restored mail went into it (helper-103). In either order
// of the stream's folders, and its rerun (on another day too) finds each where it put it.
TEST(RestoreRerun, RestoreBesideNeverMergesIntoAFolderOfTheDatedName) {
  const std::vector<std::string> own = {Body("the user's own, named like a dated copy")};
  const std::vector<std::string> sent = {Body("sent")}, dated = {Body("the stream's dated")};
  for (bool dated_first : {false, true}) {
    TempDir tmp;
    auto s = store::Store::Init(tmp / "store", {});
    RestoreString(*s, FoldersOf(1600000000, {{"Sent", 5, {Body("live")}}, {"Sent.20260101", 6, own}}));
    std::vector<FolderOfBodies> folders = {{"Sent", 98, sent}, {"Sent.20260101", 97, dated}};
    if (dated_first) std::swap(folders[0], folders[1]);
    const std::string backup = FoldersOf(1700000000, folders);
    RestoreOptions beside;
    beside.rename_existing = true;
    beside.today = "20260101";
    for (int run = 0; run < 3; ++run) {
      if (run == 2) beside.today = "20260102";
      EXPECT_EQ(RestoreString(*s, backup, beside).errors, 0u) << run;
      EXPECT_EQ(FolderNames(*s), (std::set<std::string>{"Sent", "Sent.20260101", "Sent.20260101-2",
                                                        "Sent.20260101.20260101"}))
          << dated_first << run;
      std::map<uint32_t, std::string> mine = Contents(*s, "Sent.20260101");
      ASSERT_EQ(mine.size(), 1u) << dated_first << run;
      EXPECT_EQ(mine.begin()->second, own[0]);
      ASSERT_EQ(Contents(*s, "Sent.20260101-2").size(), 1u);
      EXPECT_EQ(Contents(*s, "Sent.20260101-2").begin()->second, sent[0]);
      ASSERT_EQ(Contents(*s, "Sent.20260101.20260101").size(), 1u);
      EXPECT_EQ(Contents(*s, "Sent.20260101.20260101").begin()->second, dated[0]);
    }
  }
}

// A folder whose name leaves no room for ".YYYYMMDD" (a 249-byte name; one of two-byte
// characters) goes beside under its name cut at a character to fit, and a rerun finds it there.
// It was refused as "a path component is too long" (exit 64) by every restore -n.
TEST(RestoreRerun, RestoreBesideOfAFolderWithALongNameCutsTheNameToFit) {
  auto longest = [](const std::string& unit) {
    std::string name = unit;
    for (;;) {
      try {
        store::ValidateFolderName(name + unit);
      } catch (const Error&) {
        return name;
      }
      name += unit;
    }
  };
  // The last: a family emoji (man, ZWJ, woman, ZWJ, girl) repeated; cut, no joiner is left last.
  const std::string family = "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7";
  for (const std::string& name : {std::string(249, 'F'), longest("\xc3\xa9"), "Work/" + longest("\xc3\xa9"), longest(family)}) {
    TempDir tmp;
    auto s = store::Store::Init(tmp / "store", {});
    RestoreString(*s, FoldersOf(1600000000, {{name, 5, {Body("live")}}}));
    const std::string backup = FoldersOf(1700000000, {{name, 98, {Body("backed up")}}});
    RestoreOptions beside;
    beside.rename_existing = true;
    beside.today = "20260101";
    for (int run = 0; run < 2; ++run) {
      SessionReport r = RestoreString(*s, backup, beside);
      ASSERT_EQ(r.errors, 0u) << run;
      std::set<std::string> names = FolderNames(*s);
      names.erase("INBOX");
      ASSERT_EQ(names.size(), 2u) << run;
      ASSERT_TRUE(names.count(name));
      names.erase(name);
      const std::string dated = *names.begin();
      EXPECT_TRUE(dated.ends_with(".20260101")) << dated;
      EXPECT_EQ(name.substr(0, dated.size() - 9), dated.substr(0, dated.size() - 9)) << "cut, not changed";
      EXPECT_NO_THROW(store::ValidateFolderName(dated));  // whole UTF-8 characters
      EXPECT_FALSE(dated.substr(0, dated.size() - 9).ends_with("\xe2\x80\x8d")) << "a joiner left last";
      ASSERT_EQ(Contents(*s, dated).size(), 1u);
      EXPECT_EQ(Contents(*s, dated).begin()->second, Body("backed up"));
      EXPECT_EQ(Contents(*s, name).begin()->second, Body("live"));
      beside.today = "20260102";  // the rerun, another day, finds the same folder
    }
  }
}

// A restore keeps the digest repository's 256 bucket directories open only where the open-file
// limit has room for them: under a low one (ulimit -n 256, here 128) it opens each as it needs
// it. It failed half-way with "Too many open files" (helper-123).
TEST(RestoreLimits, ARestoreUnderALowOpenFileLimitCompletes) {
  std::vector<std::string> bodies;
  for (int i = 0; i < 600; ++i) bodies.push_back(Body("message " + std::to_string(i)));
  const std::string stream = FoldersOf(1700000000, {{"INBOX", 9, bodies}});
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  struct rlimit before;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  struct rlimit low = before;
  low.rlim_cur = 128;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  SessionReport r;
  std::string failure;
  try {
    r = RestoreString(*s, stream);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  ::setrlimit(RLIMIT_NOFILE, &before);
  ASSERT_EQ(failure, "");
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(Contents(*s, "INBOX").size(), bodies.size());
}

// A mailbox a plain restore made (disaster recovery) is the live one: a later `restore -n` of the
// same backup goes beside it, never into it; nor into a dated mailbox renamed into place.
TEST(RestoreRerun, RestoreBesideNeverMergesIntoTheLiveMailbox) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  const std::string backup = InboxAndSent(1700000000);
  EXPECT_EQ(RestoreString(*s, backup).errors, 0u);  // the live mailboxes
  RestoreOptions beside;
  beside.rename_existing = true;
  beside.today = "20260101";
  EXPECT_EQ(RestoreString(*s, backup, beside).errors, 0u);
  EXPECT_EQ(FolderNames(*s), (std::set<std::string>{"INBOX", "INBOX.20260101", "Sent", "Sent.20260101"}));

  store::DeleteFolder(*s, "joe", "Sent");
  store::RenameFolder(*s, "joe", "Sent.20260101", "Sent");  // the dated copy swapped into place
  beside.today = "20260102";
  EXPECT_EQ(RestoreString(*s, backup, beside).errors, 0u);
  EXPECT_EQ(FolderNames(*s), (std::set<std::string>{"INBOX", "INBOX.20260101", "Sent", "Sent.20260102"}));
}

// Same UIDVALIDITY, UID 1 holds other bytes here: the stream's message is kept as well, once.
TEST(RestoreRerun, AUidHoldingOtherBytesGetsTheStreamsMessageOnce) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  RestoreString(*s, StreamOf("Work", 5, {{1, Body("ours")}}));
  const std::string stream = StreamOf("Work", 5, {{1, Body("theirs")}, {2, Body("second")}});
  for (int run = 0; run < 3; ++run) {
    SessionReport r = RestoreString(*s, stream);
    EXPECT_EQ(r.errors, 0u) << "run " << run;
  }
  std::map<uint32_t, std::string> after = Contents(*s, "Work");
  ASSERT_EQ(after.size(), 3u) << "each rerun added the conflicting message again";
  EXPECT_EQ(after[1], Body("ours"));
  EXPECT_EQ(after[2], Body("second"));
  EXPECT_EQ(after.rbegin()->second, Body("theirs"));
}

// A message the source holds twice (the same bytes under a second UID, stored later) whose
// second copy comes in a later stream: it was taken for the first copy's restored one, "already
// present", and never restored, exit 0 (helper-81). Both ways a restore puts a message at a UID
// other than the source's: into a folder of another UIDVALIDITY (the destination's INBOX made
// by a delivery first), and in a merge whose UID held the destination's own mail. Reruns of
// each stream, in any order, add nothing.
TEST(RestoreRerun, ASecondCopyOfAMessageInALaterStreamIsRestoredNotTakenForTheFirst) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  const std::string a = Body("same bytes twice");
  RestoreString(*s, StreamOf("INBOX", 7, {{1, Body("delivered here first")}}));
  const std::string full = StreamOf("INBOX", 99, {{1, a, 0, 1000}});
  const std::string inc = StreamOf("INBOX", 99, {{2, a, 0, 2000}});
  for (const std::string* stream : {&full, &inc, &inc, &full}) EXPECT_EQ(RestoreString(*s, *stream).errors, 0u);
  std::multiset<std::string> bodies;
  for (const auto& [uid, bytes] : Contents(*s, "INBOX")) bodies.insert(bytes);
  EXPECT_EQ(bodies, (std::multiset<std::string>{Body("delivered here first"), a, a}));

  // Merge: UID 2 here is the destination's own mail, so the source's UID 2 (a) went to UID 4;
  // the source's second copy of a is its UID 4.
  RestoreString(*s, StreamOf("Work", 5, {{1, Body("old"), 0, 1000}}));
  {
    auto work = s->OpenFolder("joe", "Work");
    auto w = work->NewMessage();
    w->Write(Body("local"));
    std::vector<store::StagedMessage> batch;
    batch.push_back(w->Finish({}));
    work->Commit(batch);
  }
  const std::string inc1 = StreamOf("Work", 5, {{2, a, 0, 2000}, {3, Body("b"), 0, 2001}});
  const std::string inc2 = StreamOf("Work", 5, {{4, a, 0, 3000}});
  for (const std::string* stream : {&inc1, &inc2, &inc2, &inc1}) EXPECT_EQ(RestoreString(*s, *stream).errors, 0u);
  bodies.clear();
  for (const auto& [uid, bytes] : Contents(*s, "Work")) bodies.insert(bytes);
  EXPECT_EQ(bodies, (std::multiset<std::string>{Body("old"), Body("local"), a, Body("b"), a}));

  // A folder moved by Maildir export and import keeps the source's UIDVALIDITY, UIDs and internal
  // dates, not its save times: a restore of the source then finds every message present. It
  // appended each again (helper-84), when only the save time was taken for the arrival.
  RestoreString(*s, StreamOf("Moved", 8, {{1, a, 0, 500, 1600}, {2, Body("b"), 0, 501, 1601}}));
  SessionReport over = RestoreString(*s, StreamOf("Moved", 8, {{1, a, 0, 1000, 1600}, {2, Body("b"), 0, 1001, 1601}}));
  EXPECT_EQ(over.errors, 0u);
  EXPECT_EQ(over.skipped, 2u);
  EXPECT_EQ(Contents(*s, "Moved").size(), 2u);

  // A stream without save times is matched by bytes alone, as before: its rerun adds nothing.
  const std::string undated = StreamOf("INBOX", 99, {{3, Body("c")}});
  for (int run = 0; run < 2; ++run) EXPECT_EQ(RestoreString(*s, undated).errors, 0u);
  EXPECT_EQ(Contents(*s, "INBOX").size(), 4u);
}

// The destination's quota limit becomes the source's, "none" included: a limit removed at the
// source stayed at the destination (helper-81), deferring mail there as over quota.
TEST(RestoreRerun, TheQuotaLimitFollowsTheSourceAlsoWhenItHasNone) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  RestoreString(*s, StreamOf("INBOX", 7, {{1, Body("a")}}, "active", "", 50 << 20));
  EXPECT_EQ(s->FindUser("joe")->quota_limit, uint64_t{50} << 20);
  RestoreString(*s, StreamOf("INBOX", 7, {{1, Body("a")}}));
  EXPECT_EQ(s->FindUser("joe")->quota_limit, 0u);
}

// A restore over a user that was here counts its quota usage again (a usage left wrong by a crash
// or a failed update is repaired, as verify's difference line says); a user the restore makes is
// counted exactly as each of its folders is published, without that count.
TEST(RestoreRerun, ARestoreOverAUserThatWasHereCountsItsQuotaUsageAgain) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  const std::string stream = StreamOf("INBOX", 7, {{1, Body("a")}, {2, Body("bb")}});
  RestoreString(*s, stream);
  const uint64_t used = s->FindUser("joe")->quota_used;
  EXPECT_EQ(used, Body("a").size() + Body("bb").size());
  s->AddQuotaUsed("joe", 60 << 20);
  RestoreString(*s, stream);
  EXPECT_EQ(s->FindUser("joe")->quota_used, used);
}

// restore NAMES takes mailboxes: a user who is here already keeps its quota and status, also when
// the names select nothing (exit 66) or one folder with nothing new (helper-84: the quota went,
// and with --keep-status a held user became active).
TEST(RestoreRerun, RestoreByNameLeavesAnExistingUsersQuotaAndStatus) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  const std::string stream = StreamOf("INBOX", 7, {{1, Body("a")}});
  RestoreString(*s, stream);
  s->SetQuotaLimit("joe", 9000000);
  s->SetUserStatus("joe", store::UserStatus::Parse("hold"));
  RestoreOptions typo;
  typo.names = {"user/joe/Typo"};
  typo.keep_status = true;
  EXPECT_THROW(RestoreString(*s, stream, typo), Error);
  RestoreOptions inbox = typo;
  inbox.names = {"user/joe/INBOX"};
  EXPECT_EQ(RestoreString(*s, stream, inbox).skipped, 1u);
  EXPECT_EQ(s->FindUser("joe")->quota_limit, 9000000u);
  EXPECT_EQ(s->FindUser("joe")->status.ToString(), "hold");
}

// The same for a message the stream carries as a link (a second copy of content it sent before,
// e.g. a list post in two folders), in both ways a rerun finds an earlier run's copy at a UID
// other than the stream's: appended into a folder of another UIDVALIDITY, and appended in a
// merge because the stream's UID here holds other bytes. Each rerun used to add it again.
TEST(RestoreRerun, ALinkedMessageAnEarlierRunAppendedIsFoundNotAddedAgain) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  RestoreString(*s, StreamOf("INBOX", 7, {{1, Body("delivered first")}}));
  const std::string append = StreamOf("INBOX", 99, {{1, Body("a")}, {2, Body("a"), 1}, {3, Body("b")}});
  RestoreString(*s, StreamOf("Work", 5, {{2, Body("ours")}}));
  const std::string merge = StreamOf("Work", 5, {{1, Body("a")}, {2, Body("a"), 1}});
  for (int run = 0; run < 3; ++run) {
    SessionReport r = RestoreString(*s, append);
    EXPECT_EQ(r.errors, 0u) << "run " << run;
    if (run > 0) {
      EXPECT_EQ(r.skipped, 3u) << "run " << run;
    }
    r = RestoreString(*s, merge);
    EXPECT_EQ(r.errors, 0u) << "run " << run;
    if (run > 0) {
      EXPECT_EQ(r.skipped, 2u) << "run " << run;
    }
  }
  std::multiset<std::string> inbox, work;
  for (const auto& [uid, bytes] : Contents(*s, "INBOX")) inbox.insert(bytes);
  for (const auto& [uid, bytes] : Contents(*s, "Work")) work.insert(bytes);
  EXPECT_EQ(inbox, (std::multiset<std::string>{Body("delivered first"), Body("a"), Body("a"), Body("b")}));
  EXPECT_EQ(work, (std::multiset<std::string>{Body("ours"), Body("a"), Body("a")}));
  EXPECT_EQ(Contents(*s, "Work").at(2), Body("ours"));
}

// The same with --mirror (migrate's passes), which expunges what the stream does not name: the
// copy a rerun finds in place of the stream's message is the stream's, and stays.
TEST(RestoreRerun, AMirroredPassKeepsTheCopyOfAMessageWhoseUidHeldOtherBytes) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  RestoreString(*s, StreamOf("Work", 5, {{1, Body("ours")}}));
  const std::string stream = StreamOf("Work", 5, {{1, Body("theirs")}, {2, Body("second")}});
  RestoreOptions mirror;
  mirror.mirror = true;
  for (int run = 0; run < 3; ++run) {
    SessionReport r = RestoreString(*s, stream, mirror);
    EXPECT_EQ(r.errors, 0u) << "run " << run;
    std::map<uint32_t, std::string> now = Contents(*s, "Work");
    ASSERT_EQ(now.size(), 3u) << "run " << run;
    EXPECT_EQ(now.rbegin()->second, Body("theirs")) << "run " << run;
  }
}

// A damaged index that lists a UID twice: a mirrored pass took the second record for a message
// the stream left out and expunged the UID, file and all, though the stream carried it
// (helper-95, after present messages moved from a map to a sorted array).
TEST(RestoreRerun, AMirroredPassKeepsAMessageTheDamagedIndexListsTwice) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  const std::string stream = StreamOf("Work", 5, {{1, Body("one")}, {2, Body("two")}, {3, Body("three")}});
  RestoreString(*s, stream);
  const std::string idx = s->OpenFolder("joe", "Work")->path() + "/store.idx";
  {
    UniqueFd fd = OpenFile(idx, O_RDONLY);
    store::index::Contents c = store::index::Read(fd.get(), idx);
    c.records.push_back(c.records[1]);  // UID 2 again
    store::index::WriteNew(idx, c, false);
  }
  RestoreOptions mirror;
  mirror.mirror = true;
  SessionReport r = RestoreString(*s, stream, mirror);
  EXPECT_EQ(r.expunged, 0u);
  std::map<uint32_t, std::string> now = Contents(*s, "Work");
  EXPECT_EQ(now[2], Body("two"));
  EXPECT_EQ(now.size(), 3u);
}

// A present message's file was damaged (bytes appended, or changed): the rerun puts the stream's
// bytes back under its UID instead of calling it present or adding a copy.
TEST(RestoreRerun, ADamagedPresentFileIsRepairedNotDuplicated) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  const std::string stream = StreamOf("INBOX", 3, {{1, Body("one")}, {2, Body("two")}});
  RestoreString(*s, stream);
  auto f = s->OpenFolder("joe", "INBOX");
  const std::string one = f->MessagePath(1), two = f->MessagePath(2);
  f.reset();
  std::ofstream(one, std::ios::app) << "GARBAGE";
  {
    std::fstream io(two, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(3);
    io.put('X');  // same size, other bytes
  }
  SessionReport r = RestoreString(*s, stream);
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(r.repaired, 2u);
  std::map<uint32_t, std::string> after = Contents(*s, "INBOX");
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[1], Body("one"));
  EXPECT_EQ(after[2], Body("two"));
  SessionReport again = RestoreString(*s, stream);
  EXPECT_EQ(again.repaired, 0u);
  EXPECT_EQ(again.skipped, 2u);
}

// A writer killed between staging and committing (a restore killed under a `backup | restore`
// pipe) leaves `tmp.<pid>.<token>` copies in the folder. A commit sweeps those of writers that are
// gone, but a rerun that finds the folder complete commits nothing there, and they stayed until
// relink's hour (helper-155: three staged copies in a complete folder). Now the rerun sweeps every
// folder it merges into; a live writer's and another namespace's stay.
TEST(RestoreRerun, ARerunThatAddsNothingStillRemovesAGoneWritersStagedFiles) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  const std::string stream = StreamOf("Work", 5, {{1, Body("one")}, {2, Body("two")}});
  RestoreString(*s, stream);
  const std::string dir = s->OpenFolder("joe", "Work")->path();
  const std::string made = store::NewTemporaryName();  // tmp.<pid>.n<ns>.s<start>.<random>
  const std::string ns = made.substr(made.find(".n") + 1, made.find('.', made.find(".n") + 1) - made.find(".n") - 1);
  const std::string gone = dir + "/tmp." + std::to_string(storemove::testing::GonePid()) + "." + ns + ".st4ged";
  const std::string live = dir + "/tmp." + std::to_string(::getpid()) + "." + ns + ".l1ve";
  const std::string other_namespace = dir + "/tmp." + std::to_string(storemove::testing::GonePid()) + ".n1.0ther";
  for (const std::string& p : {gone, live, other_namespace}) std::ofstream(p) << Body("two");
  SessionReport r = RestoreString(*s, stream);
  EXPECT_EQ(r.skipped, 2u);
  EXPECT_FALSE(PathExists(gone));
  EXPECT_TRUE(PathExists(live));
  EXPECT_TRUE(PathExists(other_namespace));
  EXPECT_EQ(Contents(*s, "Work").size(), 2u);
}

TEST(RestoreRerun, AFolderRecordWithUidValidityZeroIsRefused) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  try {
    RestoreString(*s, StreamOf("INBOX", 0, {{1, Body("x")}}));
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("UIDVALIDITY 0"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(s->FindFolder("joe", "INBOX"));
  // restore NAMES makes a user at its first selected folder, once the folder's record passed its
  // checks: a refused one left an empty active user whom deliveries waited for (helper-105).
  TempDir other;
  auto t = store::Store::Init(other / "store", {});
  RestoreOptions names;
  names.names = {"user/joe/*"};
  EXPECT_THROW(RestoreString(*t, StreamOf("Sent", 0, {{1, Body("x")}}), names), Error);
  EXPECT_FALSE(t->FindUser("joe"));
  // Nor user/joe (its INBOX) of a stream that has only another folder of joe's.
  names.names = {"user/joe"};
  EXPECT_THROW(RestoreString(*t, StreamOf("Sent", 5, {{1, Body("x")}}), names), Error);
  EXPECT_FALSE(t->FindUser("joe"));
  // A user record no folder follows (a user without mailboxes) is what user/joe selects: made.
  format::StringSink bare;
  format::Encoder enc(bare);
  enc.WriteHeader({});
  format::UserRecord u;
  u.user = "joe";
  enc.WriteUser(u);
  enc.Finish();
  EXPECT_EQ(RestoreString(*t, bare.data(), names).errors, 0u);
  EXPECT_TRUE(t->FindUser("joe"));
}

// restore -t shows the stream header's source host and store id, which whoever wrote the stream
// chose: escaped in text, so an ESC or BEL cannot drive the terminal (security review #04); JSON
// escapes them itself.
TEST(RestoreRerun, TheTableOfContentsEscapesTheStreamsHostAndStoreId) {
  format::StringSink sink;
  format::Encoder enc(sink);
  format::StreamHeader header;
  header.source_host = "host\x1b]0;owned\x07";
  header.store_id = "id\x1b[2J\x07";
  enc.WriteHeader(header);
  enc.Finish();
  for (bool json : {false, true}) {
    std::ostringstream toc;
    format::StringSource in(sink.data());
    format::Decoder dec(in);
    RestoreOptions list;
    list.table_of_contents = true;
    list.toc_json = json;
    Restore(nullptr, dec, list, &toc);
    EXPECT_EQ(toc.str().find('\x1b'), std::string::npos) << toc.str();
    EXPECT_EQ(toc.str().find('\x07'), std::string::npos) << toc.str();
    EXPECT_NE(toc.str().find(json ? "host\\u001b]0;owned\\u0007" : "from host\\x1b]0;owned\\x07 store id\\x1b[2J\\x07 "),
              std::string::npos)
        << toc.str();
  }
}

// With -c y a hostile folder name reaches the error lines: control characters are escaped, and
// however many records fail, the lines kept are bounded.
TEST(RestoreRerun, ErrorLinesAreEscapedAndBounded) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  RestoreOptions keep_going;
  keep_going.continue_on_error = true;
  SessionReport r = RestoreString(*s, StreamOf("evil\n\x1b[2Jforged", 1, {{1, Body("x")}}), keep_going);
  ASSERT_EQ(r.errors, 1u);
  ASSERT_EQ(r.error_lines.size(), 1u);
  EXPECT_EQ(r.error_lines[0].find('\n'), std::string::npos) << r.error_lines[0];
  EXPECT_EQ(r.error_lines[0].find('\x1b'), std::string::npos) << r.error_lines[0];
  EXPECT_NE(r.error_lines[0].find("evil\\x0a\\x1b[2Jforged"), std::string::npos) << r.error_lines[0];
  // The table of contents (text) shows the name escaped too.
  {
    std::ostringstream toc;
    const std::string evil = StreamOf("evil\n\x1b[2Jforged", 1, {{1, Body("x")}});
    format::StringSource in(evil);
    format::Decoder dec(in);
    RestoreOptions list;
    list.table_of_contents = true;
    Restore(nullptr, dec, list, &toc);
    EXPECT_EQ(toc.str().find('\x1b'), std::string::npos) << toc.str();
    EXPECT_NE(toc.str().find("mailbox user/joe/evil\\x0a\\x1b[2Jforged uidvalidity"), std::string::npos) << toc.str();
  }

  format::StringSink sink;
  format::Encoder enc(sink);
  enc.WriteHeader({});
  for (int i = 0; i < 1500; ++i) {
    format::FolderRecord f;
    f.user = "joe";
    f.folder = "../bad" + std::to_string(i);
    f.uidvalidity = 1;
    enc.WriteFolder(f);
    enc.EndFolder();
  }
  enc.Finish();
  SessionReport many = RestoreString(*s, sink.data(), keep_going);
  EXPECT_EQ(many.errors, 1500u);
  ASSERT_EQ(many.error_lines.size(), 1001u);
  EXPECT_EQ(many.error_lines.back(), "... and 500 more errors not listed");
}

// A user's status is only read when it is kept: one this version does not know refuses nothing.
TEST(RestoreRerun, AnUnknownStatusRefusesTheUserOnlyWhenKept) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  const std::string stream = StreamOf("INBOX", 3, {{1, Body("one")}}, "retired:2031");
  SessionReport r = RestoreString(*s, stream);
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(Contents(*s, "INBOX").size(), 1u);
  RestoreOptions keep;
  keep.keep_status = true;
  try {
    RestoreString(*s, stream, keep);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    // Without -c y this one line is all the administrator sees: it names the user.
    EXPECT_TRUE(std::string_view(e.what()).starts_with("user joe: ")) << e.what();
  }
}

// Without -c y a refused folder record stops the restore with one line that names the mailbox,
// even when the reason (an ACL, a flag name) does not.
TEST(RestoreRerun, ARefusalWithoutContinueNamesTheMailbox) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  try {
    RestoreString(*s, StreamOf("Lists", 3, {{1, Body("one")}}, "active", "anyone"));
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kInvalidArgument);
    EXPECT_TRUE(std::string_view(e.what()).starts_with("user/joe/Lists: invalid ACL 'anyone'")) << e.what();
    // And that -c y would skip it: a folder name an older version accepted stopped the restore
    // without a word of the way round (helper-85).
    EXPECT_TRUE(std::string_view(e.what()).ends_with("; restore -c y skips such a folder and goes on")) << e.what();
  }
  EXPECT_FALSE(s->FindFolder("joe", "Lists"));
}

// Per-user data of a folder the stream names "inbox" belongs to INBOX.
TEST(RestoreRerun, PerUserDataOfInboxInAnyCaseIsKeptUnderInbox) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  s->CreateUser("bob");
  s->SetPerUser("user/joe/inbox", "bob", "seen-data");
  EXPECT_EQ(s->PerUser("user/joe/INBOX"), (std::vector<std::pair<std::string, std::string>>{{"bob", "seen-data"}}));
}

}  // namespace
}  // namespace storemove::stream
