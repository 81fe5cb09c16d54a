// Migrate's incremental passes through backup and restore (format 1.1): folders changed since
// a modseq go as incremental blocks (changed messages with bodies, the rest as meta records),
// unchanged ones are skipped or carry only a summary; restore applies flags, expunges what the
// source expunged, checks summaries and reports unsettled mailboxes. Also the pipelined QUERYs
// of backup, against an in-process oracle that records the order of questions and answers.
// These tests need real modseqs from the store (h11-store, store.idx 1.1).
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "relinker/relinker.h"
#include "store/admin.h"
#include "stream/stream.h"
#include "tests/support/store_checks.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"

namespace storemove::stream {
namespace {

using storemove::testing::ExpectEqualStores;
using storemove::testing::TempDir;

std::vector<uint32_t> Append(store::Folder& f, const std::vector<std::string>& bodies, uint8_t flags = 0) {
  std::vector<store::StagedMessage> batch;
  for (const std::string& body : bodies) {
    auto w = f.NewMessage();
    w->Write(body);
    store::MessageMeta meta;
    meta.flags = flags;
    meta.internal_date = 1700000000;
    batch.push_back(w->Finish(meta));
  }
  return f.Commit(batch);
}

std::string Body(const std::string& user, const std::string& folder, int i) {
  return "From: a@example.com\r\nSubject: " + user + " " + folder + " " + std::to_string(i) + "\r\n\r\nbody " +
         std::to_string(i) + " of " + user + "/" + folder + "\r\n";
}

// `users` users, each with INBOX, Sent and Work of `per_folder` distinct messages.
std::unique_ptr<store::Store> MakeSource(const std::string& dir, int users = 4, int per_folder = 5) {
  auto s = store::Store::Init(dir, {"primary"});
  for (int u = 0; u < users; ++u) {
    std::string user = "user" + std::to_string(u);
    s->CreateUser(user);
    for (const char* name : {"INBOX", "Sent", "Work"}) {
      auto f = s->CreateFolder(user, name);
      std::vector<std::string> bodies;
      for (int i = 0; i < per_folder; ++i) bodies.push_back(Body(user, name, i));
      Append(*f, bodies, store::kSeen);
    }
  }
  auto work = s->OpenFolder("user0", "Work");
  work->SetUserFlagNames({"$Work", "$Late"});
  return s;
}

struct Pass {
  SessionReport backup, restore;
  std::vector<std::string> folders_told;  // on_folder, in order
};

// One pass of a migration: backup with the modseqs the destination has, restore with --mirror.
// `since` is updated the way migrate keeps it: the modseq of every folder told, minus the
// mailboxes the restore reports unsettled.
Pass RunPass(store::Store& src, store::Store& dst, std::map<std::string, uint64_t>* since, bool skip_unchanged,
             bool summaries, bool strict = false) {
  Pass pass;
  std::map<std::string, uint64_t> told;
  BackupOptions b;
  b.since_modseq = since;
  b.skip_unchanged = skip_unchanged;
  b.summaries = summaries;
  b.on_folder = [&](const std::string& mailbox, uint64_t modseq, uint32_t, uint32_t) {
    told[mailbox] = modseq;
    pass.folders_told.push_back(mailbox);
  };
  format::StringSink sink;
  format::Encoder enc(sink);
  pass.backup = Backup(src, b, enc);
  RestoreOptions r;
  r.mirror = true;
  r.strict_summaries = strict;
  format::StringSource source(sink.data());
  format::Decoder dec(source);
  pass.restore = Restore(&dst, dec, r);
  for (const auto& [mailbox, modseq] : told) (*since)[mailbox] = modseq;
  for (const std::string& mailbox : pass.restore.unsettled) since->erase(mailbox);
  return pass;
}

TEST(Incremental, PassesAfterAppendsFlagChangesAndExpungesMakeTheDestinationEqual) {
  TempDir tmp;
  auto src = MakeSource(tmp / "A");
  auto dst = store::Store::Init(tmp / "B", {"primary"});
  std::map<std::string, uint64_t> since;

  Pass bulk = RunPass(*src, *dst, &since, true, true);
  EXPECT_EQ(bulk.backup.folders, 12u);
  EXPECT_EQ(bulk.backup.metas, 0u);
  EXPECT_TRUE(bulk.restore.unsettled.empty());
  ExpectEqualStores(*dst, *src);
  ASSERT_EQ(since.size(), 12u);
  for (const auto& [mailbox, modseq] : since) EXPECT_GT(modseq, 0u) << mailbox << " (needs store modseqs)";

  // Nothing changed: every folder is skipped with one comparison, and still told.
  Pass idle = RunPass(*src, *dst, &since, true, true);
  EXPECT_EQ(idle.backup.folders, 0u);
  EXPECT_EQ(idle.folders_told.size(), 12u);
  EXPECT_EQ(idle.restore.messages + idle.restore.metas, 0u);

  // Changes at the source in three folders of two users.
  {
    auto inbox = src->OpenFolder("user1", "INBOX");
    Append(*inbox, {Body("user1", "INBOX", 100), Body("user1", "INBOX", 101)});
    auto snap = inbox->Snapshot();
    inbox->SetFlags(snap.messages[0].uid, store::kSeen | store::kFlagged, 0);
    auto work = src->OpenFolder("user0", "Work");
    auto wsnap = work->Snapshot();
    work->SetFlags(wsnap.messages[1].uid, store::kAnswered, 0b10);  // $Late
    work->Expunge({wsnap.messages[2].uid, wsnap.messages[3].uid});
    auto sent = src->OpenFolder("user1", "Sent");
    sent->Expunge({sent->Snapshot().messages[0].uid});
  }
  Pass delta = RunPass(*src, *dst, &since, true, true);
  EXPECT_EQ(delta.backup.folders, 3u);  // the other nine are skipped
  EXPECT_EQ(delta.folders_told.size(), 12u);
  // user1/INBOX: 2 appended + 1 flagged as data, 4 metas; user0/Work: 1 flagged, 2 metas;
  // user1/Sent: 4 metas.
  EXPECT_EQ(delta.backup.messages + delta.backup.links, 4u);
  EXPECT_EQ(delta.backup.metas, 10u);
  EXPECT_EQ(delta.restore.metas, 10u);
  EXPECT_EQ(delta.restore.expunged, 3u);
  EXPECT_EQ(delta.restore.errors, 0u);
  EXPECT_TRUE(delta.restore.unsettled.empty()) << delta.restore.unsettled[0];
  ExpectEqualStores(*dst, *src);

  // The final pass under hold: nothing skipped, every folder an unchanged block whose summary
  // the destination proves, strictly.
  Pass final_pass = RunPass(*src, *dst, &since, false, true, /*strict=*/true);
  EXPECT_EQ(final_pass.backup.folders, 12u);
  EXPECT_EQ(final_pass.backup.messages + final_pass.backup.metas, 0u);
  EXPECT_TRUE(final_pass.restore.unsettled.empty());
  ExpectEqualStores(*dst, *src);
}

// A flag changed at the destination only (on a message the source did not touch) is put back
// by the meta record of the next incremental pass over that folder.
TEST(Incremental, MetaRecordsCarryTheSourceFlags) {
  TempDir tmp;
  auto src = MakeSource(tmp / "A", 1);
  auto dst = store::Store::Init(tmp / "B", {"primary"});
  std::map<std::string, uint64_t> since;
  RunPass(*src, *dst, &since, true, true);
  auto mine = dst->OpenFolder("user0", "Work");
  uint32_t uid = mine->Snapshot().messages[0].uid;
  mine->SetFlags(uid, store::kDeleted, 0b11);
  auto theirs = src->OpenFolder("user0", "Work");
  Append(*theirs, {Body("user0", "Work", 50)});
  Pass p = RunPass(*src, *dst, &since, true, true);
  EXPECT_EQ(p.restore.metas, 5u);
  EXPECT_TRUE(p.restore.unsettled.empty());
  ExpectEqualStores(*dst, *src);
}

// A user-flag bit the source folder names no keyword for (a damaged index, another tool's) is no
// keyword: a restore clears it, and the summary leaves it out too, as verify does. Summarized,
// it failed every final pass of a migrate of that folder on "summary differs" (helper-151).
TEST(Incremental, ABitWithoutANameFailsNoStrictPass) {
  TempDir tmp;
  auto src = MakeSource(tmp / "A", 1);
  auto work = src->OpenFolder("user0", "Work");
  const store::MessageMeta m = work->Snapshot().messages.at(1);
  work->SetFlags(m.uid, m.flags, 0b1 | uint64_t{1} << 40);
  auto dst = store::Store::Init(tmp / "B", {"primary"});
  std::map<std::string, uint64_t> since;
  Pass bulk = RunPass(*src, *dst, &since, true, true, /*strict=*/true);
  EXPECT_EQ(bulk.restore.errors, 0u);
  EXPECT_TRUE(bulk.restore.unsettled.empty());
  Pass last = RunPass(*src, *dst, &since, false, true, /*strict=*/true);
  EXPECT_TRUE(last.restore.unsettled.empty());
  EXPECT_EQ(dst->OpenFolder("user0", "Work")->Snapshot().messages.at(1).user_flags, 1u);
  ExpectEqualStores(*dst, *src);
}

// A meta record naming a UID the destination lacks leaves the mailbox unsettled (not an
// error); the summary then differs too, which strict_summaries makes an error; a complete pass
// (the mailbox dropped from since) settles it.
TEST(Incremental, MissingUidIsUnsettledStrictIsAnErrorAndACompletePassRepairs) {
  TempDir tmp;
  auto src = MakeSource(tmp / "A", 2);
  auto dst = store::Store::Init(tmp / "B", {"primary"});
  std::map<std::string, uint64_t> since;
  RunPass(*src, *dst, &since, true, true);
  auto mine = dst->OpenFolder("user1", "INBOX");
  mine->Expunge({mine->Snapshot().messages[2].uid});
  Append(*src->OpenFolder("user1", "INBOX"), {Body("user1", "INBOX", 60)});

  std::map<std::string, uint64_t> strict_since = since;
  try {
    RunPass(*src, *dst, &strict_since, true, true, /*strict=*/true);
    ADD_FAILURE() << "strict restore accepted a folder whose summary differs";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kCorrupt);
    EXPECT_NE(std::string(e.what()).find("user/user1/INBOX: summary differs from the source: count 5 (source 6)"),
              std::string::npos)
        << e.what();
  }

  Pass p = RunPass(*src, *dst, &since, true, true);
  EXPECT_EQ(p.restore.errors, 0u);
  EXPECT_EQ(p.restore.unsettled, std::vector<std::string>{"user/user1/INBOX"});
  EXPECT_EQ(since.count("user/user1/INBOX"), 0u);  // the next pass sends it complete

  Pass repair = RunPass(*src, *dst, &since, true, true);
  EXPECT_EQ(repair.backup.folders, 1u);
  EXPECT_TRUE(repair.restore.unsettled.empty());
  ExpectEqualStores(*dst, *src);
}

// An unchanged block whose summary the destination does not match: unsettled, or with strict an
// error naming the mailbox; without a summary an unchanged block changes nothing.
TEST(Incremental, UnchangedFolderWithADifferentDestinationIsUnsettled) {
  TempDir tmp;
  auto src = MakeSource(tmp / "A", 1);
  auto dst = store::Store::Init(tmp / "B", {"primary"});
  std::map<std::string, uint64_t> since;
  RunPass(*src, *dst, &since, true, true);
  auto mine = dst->OpenFolder("user0", "Sent");
  mine->SetFlags(mine->Snapshot().messages[0].uid, store::kFlagged, 0);

  std::map<std::string, uint64_t> copy = since;
  Pass quiet = RunPass(*src, *dst, &copy, false, false);  // unchanged blocks, no summaries
  EXPECT_EQ(quiet.backup.folders, 3u);
  EXPECT_TRUE(quiet.restore.unsettled.empty());
  EXPECT_EQ(quiet.restore.expunged, 0u);  // --mirror leaves an unchanged folder alone

  Pass p = RunPass(*src, *dst, &since, false, true);
  EXPECT_EQ(p.restore.unsettled, std::vector<std::string>{"user/user0/Sent"});
  EXPECT_THROW(RunPass(*src, *dst, &copy, false, true, true), Error);
  try {
    RunPass(*src, *dst, &copy, false, true, true);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("user/user0/Sent: summary differs from the source: digest"),
              std::string::npos)
        << e.what();
  }
  // Complete again (dropped from since): the destination's flag follows the source.
  RunPass(*src, *dst, &since, true, true);
  ExpectEqualStores(*dst, *src);
}

// An incremental block for a folder the destination does not have: unsettled, never an empty
// folder published from an unchanged block.
TEST(Incremental, FolderMissingAtTheDestinationIsUnsettled) {
  TempDir tmp;
  auto src = MakeSource(tmp / "A", 1);
  auto dst = store::Store::Init(tmp / "B", {"primary"});
  std::map<std::string, uint64_t> since;
  RunPass(*src, *dst, &since, true, true);
  store::DeleteFolder(*dst, "user0", "Work");
  Pass p = RunPass(*src, *dst, &since, false, true);
  EXPECT_EQ(p.restore.unsettled, std::vector<std::string>{"user/user0/Work"});
  EXPECT_FALSE(dst->FindFolder("user0", "Work"));
  RunPass(*src, *dst, &since, true, true);
  ExpectEqualStores(*dst, *src);
}

// --- pipelined questions ---------------------------------------------------------------------

// Answers from the destination's repository, like storemove serve, and records the order of
// questions, answers and the stream bytes written at each.
class RecordingOracle final : public ContentOracle {
 public:
  explicit RecordingOracle(store::Store& dst) : dst_(dst) {}
  const format::Encoder* encoder = nullptr;  // records written so far, at each event
  uint64_t Ask(const std::string& user, const std::string& partition,
               const std::vector<std::pair<Digest, uint64_t>>& contents) override {
    std::vector<bool> have;
    relinker::Repository repo(dst_.PartitionPath(dst_.FindUser(user) ? dst_.FindUser(user)->partition : partition));
    for (const auto& [digest, size] : contents) have.push_back(repo.OpenEntry(digest, size).valid());
    answers_.push_back(std::move(have));
    events_.push_back({true, answers_.size(), encoder->records()});
    return answers_.size();
  }
  std::vector<bool> Answer(uint64_t ticket) override {
    EXPECT_EQ(ticket, answered_ + 1) << "tickets are answered in order, each once";
    answered_ = ticket;
    events_.push_back({false, ticket, encoder->records()});
    return answers_.at(ticket - 1);
  }
  struct Event {
    bool ask;
    uint64_t ticket;
    uint64_t records;
  };
  std::vector<Event> events_;
  uint64_t answered_ = 0;

 private:
  store::Store& dst_;
  std::vector<std::vector<bool>> answers_;
};

// Counts flushes: backup must not flush the stream to ask a question.
class CountingSink final : public format::ByteSink {
 public:
  explicit CountingSink(format::StringSink& inner) : inner_(inner) {}
  void Write(const void* data, size_t size) override { inner_.Write(data, size); }
  void Flush() override { ++flushes; }
  int flushes = 0;

 private:
  format::StringSink& inner_;
};

struct Pipelined {
  std::vector<RecordingOracle::Event> events;
  SessionReport backup, restore;
};

Pipelined BackupWithOracle(store::Store& src, store::Store& dst, size_t ahead) {
  format::StringSink sink;
  CountingSink counting(sink);
  RecordingOracle oracle(dst);
  BackupOptions b;
  b.oracle = &oracle;
  b.query_ahead = ahead;
  b.sent_contents_capacity = 4;  // forgets quickly: later folders ask about earlier content too
  Pipelined out;
  {
    format::Encoder enc(counting);
    oracle.encoder = &enc;
    out.backup = Backup(src, b, enc);
  }
  EXPECT_EQ(counting.flushes, 1);  // Finish() only
  out.events = oracle.events_;
  RestoreOptions r;
  r.accept_held = true;  // an in-process peer stands for the authenticated session
  format::StringSource source(sink.data());
  format::Decoder dec(source);
  out.restore = Restore(&dst, dec, r);
  return out;
}

TEST(Pipelining, QuestionsRunAheadOfTheDataWithoutFlushing) {
  TempDir tmp;
  auto src = MakeSource(tmp / "A", 6, 3);  // 18 folders of distinct content: one question each
  auto dst = store::Store::Init(tmp / "B", {"primary"});
  const size_t ahead = 5;
  Pipelined p = BackupWithOracle(*src, *dst, ahead);
  ExpectEqualStores(*dst, *src);
  std::vector<size_t> asks_before_answer;
  size_t asks = 0;
  for (const auto& e : p.events) {
    if (e.ask)
      ++asks;
    else
      asks_before_answer.push_back(asks);
  }
  ASSERT_EQ(asks, 18u);
  ASSERT_EQ(asks_before_answer.size(), 18u);
  // When folder i's answer is taken, the questions of folders i .. i+ahead-1 are out.
  for (size_t i = 0; i < 18; ++i) EXPECT_EQ(asks_before_answer[i], std::min<size_t>(i + ahead, 18)) << i;
  // The first `ahead` questions went out before anything but the header was written; the first
  // answer is taken after the user record and folder record, before the folder's messages.
  EXPECT_TRUE(p.events[ahead - 1].ask);
  EXPECT_EQ(p.events[ahead - 1].records, 1u);
  ASSERT_FALSE(p.events[ahead].ask);
  EXPECT_EQ(p.events[ahead].records, 3u);
}

TEST(Pipelining, HeldContentAndOneQuestionAtATime) {
  TempDir tmp;
  auto src = MakeSource(tmp / "A", 3, 4);
  auto dst = store::Store::Init(tmp / "B", {"primary"});
  Pipelined first = BackupWithOracle(*src, *dst, 0);  // the default depth, into an empty store
  EXPECT_EQ(first.backup.held, 0u);
  ExpectEqualStores(*dst, *src);
  // A destination that already holds the content (a first copy), under other users' mailboxes.
  auto dst2 = store::Store::Init(tmp / "C", {"primary"});
  {
    format::StringSink sink;
    format::Encoder enc(sink);
    Backup(*src, BackupOptions{}, enc);
    format::StringSource source(sink.data());
    format::Decoder dec(source);
    Restore(dst2.get(), dec, RestoreOptions{});
  }
  store::DeleteUser(*dst2, "user2", {.force = true});  // its content stays in the repository
  Pipelined p = BackupWithOracle(*src, *dst2, 1);
  // Stop-and-wait without a flush (what an older server needs): each answer right after its question.
  for (size_t i = 0; i + 1 < p.events.size(); i += 2) {
    EXPECT_TRUE(p.events[i].ask);
    EXPECT_FALSE(p.events[i + 1].ask);
    EXPECT_EQ(p.events[i].ticket, p.events[i + 1].ticket);
  }
  EXPECT_EQ(p.backup.held, 36u);  // the repository holds every content, user2's included
  EXPECT_EQ(p.restore.errors, 0u);
  ExpectEqualStores(*dst2, *src);
}

// A folder of more than kMaxOracleBatch contents asks in several batches, all before its data,
// answered in order.
TEST(Pipelining, BigFoldersAskInBatches) {
  TempDir tmp;
  auto src = MakeSource(tmp / "A", 1, 1100);
  auto dst = store::Store::Init(tmp / "B", {"primary"});
  Pipelined p = BackupWithOracle(*src, *dst, 0);
  size_t asks = 0, answers = 0;
  for (const auto& e : p.events) (e.ask ? asks : answers)++;
  EXPECT_EQ(asks, 6u);  // 3 folders x (1000 + 100)
  EXPECT_EQ(answers, 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_TRUE(p.events[i].ask) << i;  // all three folders asked first
  ExpectEqualStores(*dst, *src);
}

}  // namespace
}  // namespace storemove::stream
