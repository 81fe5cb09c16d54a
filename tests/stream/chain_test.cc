// Restore's chain check of dated (-d) streams (store::FolderCoverage): a mailbox that lacks the
// earlier part of an incremental's chain (an incremental skipped, or the stream of another store
// or of a re-created folder) is restored but reported, and a restore of the missing stream and
// then the later one again completes the chain without a report (helper-81 #3).
#include <sys/stat.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "format/format.h"
#include "store/clock_floor.h"
#include "store/store.h"
#include "stream/stream.h"
#include "tests/support/stream_strings.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::stream {
namespace {

using storemove::testing::BackupString;
using storemove::testing::RestoreString;
using storemove::testing::TempDir;
using storemove::testing::WriteMessageWithBody;

struct Msg {
  uint32_t uid;
  int64_t save_time;
};

struct Block {
  std::string folder = "INBOX";
  uint32_t uidvalidity = 99;
  uint32_t count = 0;  // messages in the source folder when the stream was made
  std::vector<Msg> messages;  // those the stream carries
};

std::string Body(uint32_t uid) { return "Subject: message " + std::to_string(uid) + "\r\n\r\nbody\r\n"; }

// joe's blocks, as backup of store `store_id` at `created` would write them with -d `since`.
std::string StreamOf(const std::string& store_id, int64_t created, int64_t since, const std::vector<Block>& blocks) {
  format::StringSink sink;
  format::Encoder enc(sink);
  format::StreamHeader h;
  h.created = created;
  h.since = since;
  h.store_id = store_id;
  enc.WriteHeader(h);
  format::UserRecord u;
  u.user = "joe";
  u.status = "active";
  enc.WriteUser(u);
  for (const Block& b : blocks) {
    format::FolderRecord f;
    f.user = "joe";
    f.folder = b.folder;
    f.uidvalidity = b.uidvalidity;
    f.count = b.count;
    f.uidnext = b.count + 1;
    enc.WriteFolder(f);
    for (const Msg& m : b.messages) {
      format::MessageRecord r;
      r.uid = m.uid;
      r.save_time = m.save_time;
      r.internal_date = m.save_time;
      WriteMessageWithBody(enc, r, Body(m.uid));
    }
    enc.EndFolder();
  }
  enc.Finish();
  return sink.data();
}

std::multiset<uint32_t> SizesOf(store::Store& s, const std::string& folder) {
  std::multiset<uint32_t> out;
  for (const store::MessageMeta& m : s.OpenFolder("joe", folder)->Snapshot().messages) out.insert(uint32_t(m.size));
  return out;
}

// The source's INBOX: message N stored at N*1000; a full backup at 1500 and incrementals at
// 2500, 3500 and 4500, each made with -d the time of the backup before it.
const std::string kFull = StreamOf("S1", 1500, 0, {{"INBOX", 99, 1, {{1, 1000}}}});
const std::string kIncA = StreamOf("S1", 2500, 1500, {{"INBOX", 99, 2, {{2, 2000}}}});
const std::string kIncB = StreamOf("S1", 3500, 2500, {{"INBOX", 99, 3, {{3, 3000}}}});
const std::string kIncC = StreamOf("S1", 4500, 3500, {{"INBOX", 99, 4, {{4, 4000}}}});

TEST(BackupChain, AChainRestoredInOrderHasNoGap) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  for (const std::string* stream : {&kFull, &kIncA, &kIncB, &kIncC}) EXPECT_EQ(RestoreString(*s, *stream).errors, 0u);
  EXPECT_EQ(s->OpenFolder("joe", "INBOX")->Snapshot().messages.size(), 4u);
  const store::FolderCoverage have = s->FindFolder("joe", "INBOX")->coverage;
  EXPECT_EQ(have, (store::FolderCoverage{"S1", 99, 4500}));
  // A rerun of an earlier stream keeps what the folder is known to hold.
  EXPECT_EQ(RestoreString(*s, kIncA).errors, 0u);
  EXPECT_EQ(s->FindFolder("joe", "INBOX")->coverage, have);
}

TEST(BackupChain, ASkippedIncrementalIsReportedUntilItIsRestored) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  ASSERT_EQ(RestoreString(*s, kFull).errors, 0u);
  // B without A: message 2 (stored at 2000) is in neither.
  SessionReport r = RestoreString(*s, kIncB);
  EXPECT_EQ(r.errors, 1u);
  EXPECT_EQ(r.first_error, Errc::kNotFound);
  ASSERT_EQ(r.error_lines.size(), 1u);
  EXPECT_NE(r.error_lines[0].find("user/joe/INBOX: gap in the backup chain"), std::string::npos) << r.error_lines[0];
  EXPECT_NE(r.error_lines[0].find("since 1970-01-01T00:41:40Z"), std::string::npos) << r.error_lines[0];
  EXPECT_NE(r.error_lines[0].find("only up to 1970-01-01T00:25:00Z"), std::string::npos) << r.error_lines[0];
  EXPECT_EQ(SizesOf(*s, "INBOX").size(), 2u);  // what the stream has is restored all the same
  // Still a gap for C: the folder is known to hold the source's mail only up to the full.
  EXPECT_EQ(RestoreString(*s, kIncC).errors, 1u);
  // The missing stream, then the later ones again: complete, no report.
  for (const std::string* stream : {&kIncA, &kIncB, &kIncC}) EXPECT_EQ(RestoreString(*s, *stream).errors, 0u);
  EXPECT_EQ(SizesOf(*s, "INBOX").size(), 4u);
  EXPECT_EQ(s->FindFolder("joe", "INBOX")->coverage.through, 4500);
}

TEST(BackupChain, AnIncrementalOfAnotherStoreOrARecreatedFolderIsReported) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  ASSERT_EQ(RestoreString(*s, kFull).errors, 0u);
  SessionReport other = RestoreString(*s, StreamOf("S2", 2500, 1500, {{"INBOX", 99, 2, {{2, 2000}}}}));
  ASSERT_EQ(other.error_lines.size(), 1u);
  EXPECT_NE(other.error_lines[0].find("holds another store's mail (S1)"), std::string::npos) << other.error_lines[0];
  SessionReport recreated = RestoreString(*s, StreamOf("S1", 2500, 1500, {{"INBOX", 100, 2, {{2, 2000}}}}));
  ASSERT_EQ(recreated.error_lines.size(), 1u);
  EXPECT_NE(recreated.error_lines[0].find("UIDVALIDITY 99, not this one"), std::string::npos)
      << recreated.error_lines[0];
  // Nor does either count as continuing the chain.
  EXPECT_EQ(s->FindFolder("joe", "INBOX")->coverage, (store::FolderCoverage{"S1", 99, 1500}));
}

TEST(BackupChain, AMailboxTheIncrementalCarriesWholeIsNoGap) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  // Into an empty store: INBOX lacks message 1 (a gap); Work and Empty came whole.
  SessionReport r = RestoreString(
      *s, StreamOf("S1", 2500, 1500,
                   {{"INBOX", 99, 2, {{2, 2000}}}, {"Work", 7, 1, {{10, 1800}}}, {"Empty", 8, 0, {}}}));
  EXPECT_EQ(r.errors, 1u);
  ASSERT_EQ(r.error_lines.size(), 1u);
  EXPECT_NE(r.error_lines[0].find("user/joe/INBOX: "), std::string::npos) << r.error_lines[0];
  EXPECT_NE(r.error_lines[0].find("no earlier backup of it from that store"), std::string::npos) << r.error_lines[0];
  EXPECT_EQ(s->FindFolder("joe", "Work")->coverage, (store::FolderCoverage{"S1", 7, 2500}));
  EXPECT_EQ(s->FindFolder("joe", "Empty")->coverage, (store::FolderCoverage{"S1", 8, 2500}));
  EXPECT_TRUE(s->FindFolder("joe", "INBOX")->coverage.empty());
}

TEST(BackupChain, AllowGapOlderStreamsAndSideCopiesAreNotReported) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  ASSERT_EQ(RestoreString(*s, kFull).errors, 0u);
  RestoreOptions allow;
  allow.allow_gap = true;
  EXPECT_EQ(RestoreString(*s, kIncB, allow).errors, 0u);
  EXPECT_EQ(s->FindFolder("joe", "INBOX")->coverage.through, 1500);  // allowed, not covered
  // A stream that names no store (none of storemove's since 2026-11-29) is not checked.
  EXPECT_EQ(RestoreString(*s, StreamOf("", 3500, 2500, {{"INBOX", 99, 3, {{3, 3000}}}})).errors, 0u);
  // restore -n beside the live mailbox: the dated copy holds what the stream has, by design.
  RestoreOptions beside;
  beside.rename_existing = true;
  beside.today = "20261205";
  EXPECT_EQ(RestoreString(*s, kIncC, beside).errors, 0u);
  EXPECT_EQ(SizesOf(*s, "INBOX.20261205").size(), 1u);
}

// Last night's incremental restored into the store it came from, to bring back deleted mail:
// its folders are the source folders themselves, not a gap (helper-87). A folder deleted at the
// source since (re-created by the restore with the stream's part only) still is.
TEST(BackupChain, ADatedStreamRestoredIntoItsOwnStoreIsNoGap) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  const std::string own = s->store_id();
  ASSERT_EQ(RestoreString(*s, StreamOf("S0", 1500, 0, {{"INBOX", 99, 2, {{1, 1000}, {2, 1200}}}})).errors, 0u);
  SessionReport r = RestoreString(
      *s, StreamOf(own, 2500, 1100, {{"INBOX", 99, 2, {{2, 1200}}}, {"Projects", 5, 3, {{7, 2000}}}}));
  EXPECT_EQ(r.errors, 1u);
  ASSERT_EQ(r.error_lines.size(), 1u);
  EXPECT_NE(r.error_lines[0].find("user/joe/Projects: gap"), std::string::npos) << r.error_lines[0];
  RestoreOptions plain_append;
  plain_append.skip_existing_check = true;  // -i: appended, the folder still the source's
  EXPECT_EQ(RestoreString(*s, StreamOf(own, 2500, 1100, {{"INBOX", 99, 2, {{2, 1200}}}}), plain_append).errors, 0u);
}

// A folder renamed at the source after the full backup: the incrementals name it by its new
// name, and its earlier messages are here under the old one. Not a gap while the old one holds
// the source folder up to the date: a note says where they are (helper-87). A hole before the
// rename is still one, naming the former name.
TEST(BackupChain, AFolderRenamedAtTheSourceIsANoteNotAGap) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  ASSERT_EQ(RestoreString(*s, StreamOf("S1", 1500, 0, {{"Old", 42, 1, {{1, 1000}}}})).errors, 0u);
  const std::string renamed = StreamOf("S1", 2500, 1500, {{"Renamed", 42, 2, {{2, 2000}}}});
  SessionReport r = RestoreString(*s, renamed);
  EXPECT_EQ(r.errors, 0u) << (r.error_lines.empty() ? "" : r.error_lines[0]);
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_NE(r.notes[0].find("user/joe/Renamed: renamed at the source: its messages stored before "
                            "1970-01-01T00:25:00Z are here under its former name user/joe/Old"),
            std::string::npos)
      << r.notes[0];
  // Its rerun continues the new name's chain: nothing to say.
  SessionReport rerun = RestoreString(*s, renamed);
  EXPECT_EQ(rerun.errors, 0u);
  EXPECT_TRUE(rerun.notes.empty());
  // The next incremental continues the new name's chain.
  SessionReport next = RestoreString(*s, StreamOf("S1", 3500, 2500, {{"Renamed", 42, 3, {{3, 3000}}}}));
  EXPECT_EQ(next.errors, 0u);
  EXPECT_TRUE(next.notes.empty());
  EXPECT_EQ(SizesOf(*s, "Renamed").size(), 2u);

  // Renamed again, and an incremental skipped before: no former name reaches the date.
  SessionReport hole = RestoreString(*s, StreamOf("S1", 5500, 4500, {{"Again", 42, 4, {{4, 5000}}}}));
  ASSERT_EQ(hole.error_lines.size(), 1u);
  EXPECT_NE(hole.error_lines[0].find("it was renamed at the source, and its former name here, user/joe/Renamed, "
                                     "holds that store's messages only up to 1970-01-01T00:58:20Z"),
            std::string::npos)
      << hole.error_lines[0];
}

}  // namespace
}  // namespace storemove::stream

namespace storemove::stream {
namespace {

// The backup side of the chain: a message committed after a backup began is saved no earlier than
// that backup's start, whatever the committing host's clock says, so `backup -d START` takes it.
// A clock stepped back after a full backup, or a delivering host 5 s behind, used to give it an
// earlier save time: it was in neither stream, and both restores exited 0 (helper-88).
TEST(BackupChainClock, AMessageCommittedAfterABackupBeganIsInTheBackupDatedFromItsStart) {
  TempDir dir;
  auto store = store::Store::Init(dir / "src", {"primary"});
  store->CreateUser("joe", "", true);
  auto commit = [&](const std::string& body, int64_t save_time) {
    auto folder = store->OpenFolder("joe", "INBOX");
    std::vector<store::StagedMessage> batch;
    auto writer = folder->NewMessage();
    writer->Write(body);
    store::MessageMeta meta;
    meta.internal_date = 1700000000;
    meta.save_time = save_time;  // 0: the commit's time
    batch.push_back(writer->Finish(meta));
    return folder->Commit(batch).front();
  };
  auto backup = [&](int64_t since) {
    BackupOptions options;
    options.since = since;
    return BackupString(*store, options);
  };
  auto saved = [&](uint32_t uid) {
    for (const store::MessageMeta& m : store->OpenFolder("joe", "INBOX")->Snapshot().messages)
      if (m.uid == uid) return m.save_time;
    return int64_t(-1);
  };
  commit("Subject: before\r\n\r\nbody\r\n", 0);
  const std::string first = backup(0);
  {
    format::StringSource in(first);
    format::Decoder dec(in);
    ASSERT_EQ(dec.Next(), format::Decoder::Event::kHeader);
    EXPECT_EQ(store::ReadClockFloor(store->root()), dec.header().created);
  }

  // A backup of this store begins on a host whose clock is an hour ahead of this one's.
  const int64_t ahead = ::time(nullptr) + 3600;
  std::string why_not;
  EXPECT_EQ(store::RaiseClockFloor(store->root(), ahead, &why_not), ahead);
  EXPECT_EQ(why_not, "");
  const std::string full = backup(0);  // its start: the later of this clock and the floor
  {
    format::StringSource in(full);
    format::Decoder dec(in);
    ASSERT_EQ(dec.Next(), format::Decoder::Event::kHeader);
    EXPECT_EQ(dec.header().created, ahead);
  }
  // What this host commits now is saved at that start, not at this host's earlier time, and the
  // backup dated from that start takes it: the chain restored in order has every message.
  const uint32_t late = commit("Subject: committed after the backup began\r\n\r\nbody\r\n", 0);
  EXPECT_EQ(saved(late), ahead);
  TempDir out;
  auto restored = store::Store::Init(out / "dst", {"primary"});
  EXPECT_EQ(RestoreString(*restored, full).errors, 0u);
  EXPECT_EQ(RestoreString(*restored, backup(ahead)).errors, 0u);
  EXPECT_EQ(restored->FindFolder("joe", "INBOX")->count, 2u);

  // A save time carried from elsewhere (restore) is kept; the floor is never lowered.
  const uint32_t carried = commit("Subject: restored\r\n\r\nbody\r\n", 1600000000);
  EXPECT_EQ(saved(carried), 1600000000);
  EXPECT_EQ(store::RaiseClockFloor(store->root(), ahead - 60, &why_not), ahead);
  EXPECT_EQ(store::ReadClockFloor(store->root()), ahead);
  // A backup reading a store whose floor it cannot write goes on, and says so.
  TempDir bare;
  EXPECT_GE(store::RaiseClockFloor(bare / "no-such-store", 5, &why_not), 5);
  EXPECT_NE(why_not.find("clock-floor.lock"), std::string::npos) << why_not;
}


// A user restored (or migrated) into a store after its full backup keeps the save times of its
// first store, older than the full backup's start: the next dated backup carried none of its
// messages, and its restore after the full one reported every folder of that user as a gap that
// no restore of the chain could fill (helper-88 #6). A folder made since the date goes whole.
TEST(BackupChainClock, AUserRestoredIntoTheStoreAfterItsFullBackupIsInTheNextDatedBackup) {
  TempDir dir;
  auto commit = [](store::Store& s, const std::string& user, const std::string& folder, int64_t save_time) {
    auto f = s.CreateFolder(user, folder, 0, /*created=*/1500000000);  // made long before any backup
    std::vector<store::StagedMessage> batch;
    for (int i = 0; i < 3; ++i) {
      auto writer = f->NewMessage();
      writer->Write("Subject: " + user + " " + folder + " " + std::to_string(i) + "\r\n\r\nbody\r\n");
      store::MessageMeta meta;
      meta.internal_date = 1500000000;
      meta.save_time = save_time;
      meta.stored_at = save_time;  // delivered then
      batch.push_back(writer->Finish(meta));
    }
    f->Commit(batch);
  };
  auto backup = [](store::Store& s, int64_t since) {
    BackupOptions options;
    options.since = since;
    return BackupString(s, options);
  };
  auto other = store::Store::Init(dir / "a", {"primary"});
  commit(*other, "ann", "INBOX", 1500000000);
  commit(*other, "ann", "Archive", 1500000100);
  auto store = store::Store::Init(dir / "b", {"primary"});
  commit(*store, "joe", "INBOX", 1500000000);
  const std::string full = backup(*store, 0);
  const int64_t started = store::ReadClockFloor(store->root());
  ASSERT_GT(started, 0);
  EXPECT_EQ(RestoreString(*store, backup(*other, 0)).errors, 0u);  // ann arrives after the full backup

  const std::string dated = backup(*store, started);
  auto copy = store::Store::Init(dir / "c", {"primary"});
  EXPECT_EQ(RestoreString(*copy, full).errors, 0u);
  const SessionReport r = RestoreString(*copy, dated);
  EXPECT_EQ(r.errors, 0u) << (r.error_lines.empty() ? "" : r.error_lines[0]);
  for (const char* folder : {"INBOX", "Archive"}) {
    ASSERT_TRUE(copy->FindFolder("ann", folder).has_value()) << folder;
    EXPECT_EQ(copy->FindFolder("ann", folder)->count, 3u) << folder;
  }
  // joe's INBOX was made before the date: only what was stored since goes (nothing).
  EXPECT_EQ(r.messages + r.links, 6u);
}

// Messages restored into a folder that was there before the full backup (an administrator
// restores the mail a user deleted, from an older stream) keep their first save times, older
// than that backup: the next dated backup left them out, and a restore of the full backup and
// that dated one lost them again, exit 0. Their stored-at time is the restore's.
TEST(BackupChainClock, MessagesRestoredIntoAnExistingFolderAfterTheFullBackupAreInTheNextDatedBackup) {
  TempDir dir;
  auto store = store::Store::Init(dir / "s", {"primary"});
  {
    auto f = store->CreateFolder("joe", "INBOX", 0, /*created=*/1500000000);
    std::vector<store::StagedMessage> batch;
    for (int i = 0; i < 3; ++i) {
      auto writer = f->NewMessage();
      writer->Write("Subject: " + std::to_string(i) + "\r\n\r\nbody\r\n");
      store::MessageMeta meta;
      meta.internal_date = meta.save_time = meta.stored_at = 1500000000 + i;  // delivered then
      batch.push_back(writer->Finish(meta));
    }
    f->Commit(batch);
  }
  auto backup = [&store](int64_t since) {
    BackupOptions options;
    options.since = since;
    return BackupString(*store, options);
  };
  const std::string older = backup(0);
  store->OpenFolder("joe", "INBOX")->Expunge({1, 2});  // joe deletes two
  const std::string full = backup(0);
  const int64_t started = store::ReadClockFloor(store->root());
  EXPECT_EQ(RestoreString(*store, older).errors, 0u);  // and gets them back
  ASSERT_EQ(store->FindFolder("joe", "INBOX")->count, 3u);

  const std::string dated = backup(started);
  auto copy = store::Store::Init(dir / "c", {"primary"});
  EXPECT_EQ(RestoreString(*copy, full).errors, 0u);
  const SessionReport r = RestoreString(*copy, dated);
  EXPECT_EQ(r.errors, 0u) << (r.error_lines.empty() ? "" : r.error_lines[0]);
  EXPECT_EQ(r.messages + r.links, 2u);  // the two restored, not the one delivered long ago
  EXPECT_EQ(copy->FindFolder("joe", "INBOX")->count, 3u);
}

// A folder a restore (import, pull) builds is invisible until it is published: a full backup
// that began meanwhile did not list it, and the batches committed before that backup's start were
// created and stored before it, so the dated backup from that start left them out too, the
// full and dated restores exited 66 with a gap, and --allow-gap lost them (helper-94). The folder
// counts as made when it is published.
TEST(BackupChainClock, AFolderBuiltWhileAFullBackupRanIsWholeInTheNextDatedBackup) {
  TempDir dir;
  auto store = store::Store::Init(dir / "s", {"primary"});
  store->CreateUser("ann");
  auto commit = [](store::Folder& f, int from) {
    std::vector<store::StagedMessage> batch;
    for (int i = from; i < from + 3; ++i) {
      auto writer = f.NewMessage();
      writer->Write("Subject: " + std::to_string(i) + "\r\n\r\nbody\r\n");
      store::MessageMeta meta;
      meta.internal_date = meta.save_time = 1500000000 + i;  // from its first store
      batch.push_back(writer->Finish(meta));
    }
    f.Commit(batch);
  };
  store::Store::UserWriteLock restoring = store->LockUserForWriting("ann");
  auto building = store->CreateUnpublishedFolder("ann", "Archive", 777);
  commit(*building, 0);  // the first batch, stored now
  // The full backup starts later than that batch (a clock a minute on, without waiting for it).
  store::RaiseClockFloor(store->root(), ::time(nullptr) + 60, nullptr);
  BackupOptions full_options;
  const std::string full = BackupString(*store, full_options);
  const int64_t started = store::ReadClockFloor(store->root());
  commit(*building, 3);
  store->PublishFolder(*building);

  BackupOptions dated_options;
  dated_options.since = started;
  const std::string dated = BackupString(*store, dated_options);
  auto copy = store::Store::Init(dir / "c", {"primary"});
  EXPECT_EQ(RestoreString(*copy, full).errors, 0u);
  const SessionReport r = RestoreString(*copy, dated);
  EXPECT_EQ(r.errors, 0u) << (r.error_lines.empty() ? "" : r.error_lines[0]);
  ASSERT_TRUE(copy->FindFolder("ann", "Archive").has_value());
  EXPECT_EQ(copy->FindFolder("ann", "Archive")->count, 6u);
}

// The floor file as found: a FIFO planted there hung every delivery and backup; a value more than
// a day ahead of the clock (a backup run under a wrong clock, a garbage value) dated every later
// message that far ahead. Both are ignored, and a backup sets such a value back, saying so
// (helper-91).
TEST(BackupChainClock, AFloorThatIsNoFileOrFarAheadIsIgnoredAndSetBack) {
  TempDir dir;
  auto store = store::Store::Init(dir / "s", {"primary"});
  const std::string floor_path = store->root() + "/config/clock-floor";
  ASSERT_EQ(::mkfifo(floor_path.c_str(), 0600), 0);
  EXPECT_EQ(store::ReadClockFloor(store->root()), 0);  // at once, not blocked on the FIFO
  ::unlink(floor_path.c_str());

  const int64_t now = ::time(nullptr);
  for (const std::string& far : {std::to_string(now + 365 * 86400), std::string("9223372036854775807")}) {
    WriteFileAtomic(floor_path, far + "\n", 0644);
    EXPECT_EQ(store::ReadClockFloor(store->root()), 0) << far;
    std::string note;
    const int64_t started = store::RaiseClockFloor(store->root(), now, &note);
    EXPECT_EQ(started, now) << far;
    EXPECT_NE(note.find("more than a day ahead of this host's clock: set back to now"), std::string::npos) << note;
    EXPECT_EQ(store::ReadClockFloor(store->root()), now);
  }
  // An hour ahead is a clock's difference between hosts: kept.
  std::string note;
  EXPECT_EQ(store::RaiseClockFloor(store->root(), now + 3600, &note), now + 3600);
  EXPECT_EQ(store::ReadClockFloor(store->root()), now + 3600);
  EXPECT_EQ(note, "");
  // A store without config/ (made by hand; Store::Open does not need it) gets one, without a note.
  std::filesystem::remove_all(store->root() + "/config");
  EXPECT_EQ(store::RaiseClockFloor(store->root(), now, &note), now);
  EXPECT_EQ(store::ReadClockFloor(store->root()), now);
  EXPECT_EQ(note, "");
}

}  // namespace
}  // namespace storemove::stream
