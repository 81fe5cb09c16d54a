// verify finds every kind of difference, directly and through a manifest stream.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "store/admin.h"
#include "store/generate.h"
#include "stream/stream.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"

namespace storemove::stream {
namespace {

using storemove::testing::TempDir;

// backup --manifest of `source`.
std::string ManifestOf(store::Store& source) {
  format::StringSink sink;
  format::Encoder enc(sink);
  BackupOptions o;
  o.manifest = true;
  Backup(source, o, enc);
  return std::string(sink.data());
}

// verify --manifest of `destination` against a manifest of `source`.
VerifyReport ViaManifestOf(store::Store& source, store::Store& destination) {
  const std::string manifest = ManifestOf(source);
  format::StringSource in(manifest);
  format::Decoder dec(in);
  return VerifyManifest(destination, dec, {});
}

struct Pair {
  TempDir tmp;
  std::unique_ptr<store::Store> src, dst;
  std::string user;
  explicit Pair(std::vector<std::string> dst_partitions = {}, uint32_t messages_per_user = 12, uint32_t users = 4) {
    src = store::Store::Init(tmp / "src", {});
    store::GenerateOptions g;
    g.users = users;
    g.messages_per_user = messages_per_user;
    g.seed = 3;
    store::Generate(*src, g);
    format::StringSink sink;
    format::Encoder enc(sink);
    Backup(*src, {}, enc);
    dst = store::Store::Init(tmp / "dst", dst_partitions);
    format::StringSource in(sink.data());
    format::Decoder dec(in);
    Restore(dst.get(), dec, {});
    src->ForEachUser([&](const store::UserInfo& u) { if (user.empty()) user = u.user; });
  }
  std::unique_ptr<store::Folder> Inbox() { return dst->OpenFolder(user, "INBOX"); }
  std::vector<std::string> Direct() { return CompareStores(*dst, *src, {}).differences; }
  std::vector<std::string> ViaManifest() { return ViaManifestOf(*src, *dst).differences; }
};

bool Mentions(const std::vector<std::string>& lines, const std::string& what) {
  for (const auto& l : lines)
    if (l.find(what) != std::string::npos) return true;
  return false;
}

TEST(Verify, EqualStoresHaveNoDifferences) {
  Pair p;
  EXPECT_TRUE(p.Direct().empty());
  EXPECT_TRUE(p.ViaManifest().empty());
}

// One store passed as both sides (a caller that opened it once) is refused, not "equal".
TEST(Verify, AStoreComparedWithItselfIsRefused) {
  Pair p;
  try {
    CompareStores(*p.src, *p.src, {});
    ADD_FAILURE() << "a store compared with itself was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("source and destination are the same store"), std::string::npos) << e.what();
  }
}

// A destination whose partition is the source's (a symbolic link, as docs/store-format.md §1
// allows for a partition on another disk, or a bind mount) holds the source's files: "equal"
// would let delete remove the only copy. Refused at the first folder that is one directory.
TEST(Verify, ADestinationPartitionThatIsTheSourcesIsRefused) {
  namespace fs = std::filesystem;
  TempDir tmp;
  {
    auto src = store::Store::Init(tmp / "src", {});
    store::GenerateOptions g;
    g.users = 2;
    g.messages_per_user = 4;
    store::Generate(*src, g);
  }
  fs::copy(tmp / "src", tmp / "dst", fs::copy_options::recursive);
  fs::remove_all(tmp / "dst/partition/primary");
  fs::create_directory_symlink(tmp / "src/partition/primary", tmp / "dst/partition/primary");
  auto src = store::Store::Open(tmp / "src");
  auto dst = store::Store::Open(tmp / "dst");
  try {
    CompareStores(*dst, *src, {});
    ADD_FAILURE() << "a destination whose partition is the source's was found equal";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("source and destination are the same files: mailbox user/"),
              std::string::npos)
        << e.what();
  }
}

// Snapshots and manifest folders spooled to a temporary file (as a large folder's are) give
// the same answers: equal stores stay equal, through a backup made from spooled snapshots too,
// and a missing message and a flag are still found.
TEST(Verify, SpooledFoldersGiveTheSameAnswers) {
  Pair p;
  p.src->set_snapshot_records_in_memory(4);
  p.dst->set_snapshot_records_in_memory(4);
  ASSERT_TRUE(p.Inbox()->Snapshot().messages.spooled());
  EXPECT_TRUE(p.Direct().empty());
  EXPECT_TRUE(p.ViaManifest().empty());
  {
    TempDir again;
    auto copy = store::Store::Init(again / "copy", {});
    format::StringSink sink;
    format::Encoder enc(sink);
    Backup(*p.src, {}, enc);
    format::StringSource in(sink.data());
    format::Decoder dec(in);
    Restore(copy.get(), dec, {});
    EXPECT_TRUE(CompareStores(*copy, *p.src, {}).differences.empty());
  }
  auto inbox = p.Inbox();
  const store::MessageMeta gone = inbox->Snapshot().messages.at(1);
  const store::MessageMeta flagged = inbox->Snapshot().messages.at(7);
  inbox->Expunge({gone.uid});
  inbox->SetFlags(flagged.uid, flagged.flags ^ store::kFlagged, flagged.user_flags);
  const std::vector<std::string> direct = p.Direct(), via_manifest = p.ViaManifest();
  for (const std::vector<std::string>& found : {direct, via_manifest}) {
    EXPECT_TRUE(Mentions(found, "INBOX UID " + std::to_string(gone.uid) + " is missing"));
    EXPECT_TRUE(Mentions(found, "UID " + std::to_string(flagged.uid) + ": flags are"));
  }
  p.src->set_snapshot_records_in_memory(size_t{1} << 20);
  p.dst->set_snapshot_records_in_memory(size_t{1} << 20);
  EXPECT_EQ(direct, p.Direct()) << "the same lines as with snapshots in memory";
  EXPECT_EQ(via_manifest, p.ViaManifest());
}

TEST(Verify, MissingMessage) {
  Pair p;
  uint32_t uid = p.Inbox()->Snapshot().messages.at(0).uid;
  p.Inbox()->Expunge({uid});
  std::string want = "INBOX UID " + std::to_string(uid) + " is missing";
  EXPECT_TRUE(Mentions(p.Direct(), want));
  EXPECT_TRUE(Mentions(p.ViaManifest(), want));
}

// With a cap, a mailbox's lines about single messages past it are counted, not kept (helper-162:
// 98 MB for 400,000 differences where 20 a mailbox are printed): the listing at that cap and the
// totals are those of the whole list, directly and through a manifest.
TEST(Verify, LinesPastTheCapAreCountedNotKept) {
  Pair p({}, 40);
  size_t expunged = 0;
  p.dst->ForEachUser([&](const store::UserInfo& u) {
    for (const store::FolderInfo& f : p.dst->ListFolders(u.user)) {
      auto folder = p.dst->OpenFolder(u.user, f.folder);
      std::vector<uint32_t> uids;
      for (const store::MessageMeta& m : folder->Snapshot().messages) uids.push_back(m.uid);
      folder->Expunge(uids);
      expunged += uids.size();
    }
  });
  ASSERT_GE(expunged, 100u);
  VerifyOptions capped_options;
  capped_options.differences_kept_per_mailbox = 3;
  const std::string manifest = ManifestOf(*p.src);
  auto via_manifest = [&](const VerifyOptions& options) {
    format::StringSource in(manifest);
    format::Decoder dec(in);
    return VerifyManifest(*p.dst, dec, options);
  };
  for (const auto& [all, capped] : {std::pair{CompareStores(*p.dst, *p.src, {}), CompareStores(*p.dst, *p.src, capped_options)},
                                    std::pair{via_manifest({}), via_manifest(capped_options)}}) {
    EXPECT_GE(all.difference_count(), expunged);
    EXPECT_EQ(all.left_out_total, 0u);
    EXPECT_EQ(capped.difference_count(), all.difference_count());
    EXPECT_LT(capped.differences.size(), all.differences.size());
    EXPECT_EQ(capped.Listing(3), all.Listing(3));
    std::map<std::string, size_t> kept;
    for (const std::string& mailbox : capped.difference_mailboxes)
      if (!mailbox.empty()) {
        EXPECT_LE(++kept[mailbox], 3u) << mailbox;
      }
  }
}

// The same, line by line, for lines of mailboxes interleaved as verify's byte checks settle them
// (helper-163: a mailbox's count line came after its 20th line, ahead of other mailboxes' lines,
// where the whole list has it after its last).
TEST(Verify, ACappedListingIsTheWholeListsListingLineForLine) {
  uint64_t x = 7;
  for (int round = 0; round < 200; ++round) {
    VerifyReport all, capped;
    const int lines = int(x % 60);
    for (int i = 0; i < lines; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      const int which = int((x >> 33) % 4);  // three mailboxes and lines about no one message
      const std::string mailbox = which == 3 ? "" : "user/u/M" + std::to_string(which);
      const std::string line = "line " + std::to_string(i) + " of " + (mailbox.empty() ? "the store" : mailbox);
      all.Add(line, mailbox, 0);
      capped.Add(line, mailbox, 3);
    }
    EXPECT_EQ(capped.difference_count(), all.difference_count()) << "round " << round;
    EXPECT_EQ(capped.Listing(3), all.Listing(3)) << "round " << round;
    EXPECT_EQ(all.Listing(0).size(), all.difference_count());
  }
}

// A FIFO, a device or a huge sparse file in a message file's place is a difference named at
// once: a device (/dev/zero's numbers) was read for ever, a FIFO stopped verify with "Illegal
// seek", and an 8 GiB sparse file was read to its end before it was found other bytes.
TEST(Verify, AMessageFileThatIsNotItsBytesIsADifferenceNamedAtOnce) {
  Pair p;
  std::vector<store::MessageMeta> messages = p.Inbox()->Snapshot().messages.ToVector();
  ASSERT_GE(messages.size(), 3u);
  const std::string fifo = p.Inbox()->MessagePath(messages[0].uid);
  const std::string sparse = p.Inbox()->MessagePath(messages[1].uid);
  const std::string device = p.Inbox()->MessagePath(messages[2].uid);
  ASSERT_EQ(::unlink(fifo.c_str()), 0);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_EQ(::truncate(sparse.c_str(), off_t{8} << 30), 0);
  const bool root = ::geteuid() == 0;  // mknod of a character device needs it
  if (root) {
    ASSERT_EQ(::unlink(device.c_str()), 0);
    ASSERT_EQ(::mknod(device.c_str(), S_IFCHR | 0600, makedev(1, 5)), 0) << std::strerror(errno);
  }
  for (const std::vector<std::string>& found : {p.Direct(), p.ViaManifest()}) {
    EXPECT_TRUE(Mentions(found, "INBOX UID " + std::to_string(messages[0].uid) + ": message file " + fifo +
                                    " is not a regular file"));
    EXPECT_TRUE(Mentions(found, "INBOX UID " + std::to_string(messages[1].uid) + ": message file has 8589934592 bytes"));
    if (root) {
      EXPECT_TRUE(Mentions(found, "INBOX UID " + std::to_string(messages[2].uid) + ": message file " + device +
                                      " is not a regular file"));
    }
    EXPECT_EQ(found.size(), root ? 3u : 2u);
  }
}

TEST(Verify, OneFlippedByte) {
  Pair p;
  auto inbox = p.Inbox();
  uint32_t uid = inbox->Snapshot().messages.at(1).uid;
  std::string path = inbox->MessagePath(uid);
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char c;
  ASSERT_EQ(::pread(fd, &c, 1, 5), 1);
  c ^= 1;
  ASSERT_EQ(::pwrite(fd, &c, 1, 5), 1);
  ::close(fd);
  std::string want = "UID " + std::to_string(uid) + ": message bytes do not match the source";
  EXPECT_TRUE(Mentions(p.Direct(), want));
  EXPECT_TRUE(Mentions(p.ViaManifest(), want));
}

TEST(Verify, AFlag) {
  Pair p;
  auto inbox = p.Inbox();
  store::MessageMeta m = inbox->Snapshot().messages.at(2);
  inbox->SetFlags(m.uid, m.flags ^ store::kFlagged, m.user_flags);
  std::string want = "UID " + std::to_string(m.uid) + ": flags are";
  EXPECT_TRUE(Mentions(p.Direct(), want));
  EXPECT_TRUE(Mentions(p.ViaManifest(), want));
}

// Keywords are compared by name, as a set: a restore into an existing folder gives them other
// bits. Names are compared exactly, as migrate's proof compares them (store::Summarize): a
// folder may hold `$Junk` and `$junk` as two flags (helper-150). A bit without a name is no
// keyword `#N`.
TEST(Verify, KeywordsAreComparedAsSetsOfNames) {
  Pair p;
  auto source = p.src->OpenFolder(p.user, "INBOX");
  source->SetUserFlagNames({"$Junk", "Work"});
  const store::MessageMeta m = source->Snapshot().messages.at(2);
  source->SetFlags(m.uid, m.flags, 0b11);
  // The destination's names in another order, every message's first two bits swapped.
  auto inbox = p.Inbox();
  inbox->SetUserFlagNames({"Work", "$Junk", "Later"});
  for (const store::MessageMeta& d : inbox->Snapshot().messages) {
    const uint64_t bits = d.uid == m.uid ? 0b11 : d.user_flags;
    inbox->SetFlags(d.uid, d.flags, (bits & ~uint64_t{3}) | (bits & 1) << 1 | (bits >> 1 & 1));
  }
  for (const std::string& line : p.Direct()) ADD_FAILURE() << line;
  for (const std::string& line : p.ViaManifest()) ADD_FAILURE() << line;
  inbox->SetFlags(m.uid, m.flags, 0b101);
  std::string want = "UID " + std::to_string(m.uid) + ": user flags are 'Work Later', source has '$Junk Work'";
  EXPECT_TRUE(Mentions(p.Direct(), want));
  EXPECT_TRUE(Mentions(p.ViaManifest(), want));
  inbox->SetUserFlagNames({"Work", "$JUNK", "Later"});
  inbox->SetFlags(m.uid, m.flags, 0b11);
  want = "UID " + std::to_string(m.uid) + ": user flags are 'Work $JUNK', source has '$Junk Work'";
  EXPECT_TRUE(Mentions(p.Direct(), want));
  EXPECT_TRUE(Mentions(p.ViaManifest(), want));
  // Bit 3 has no name here, so no keyword, and `#3` is a keyword there.
  source->SetUserFlagNames({"$Junk", "Work", "x", "#3"});
  source->SetFlags(m.uid, m.flags, 0b1000);
  inbox->SetUserFlagNames({"Work", "$Junk", "Later"});
  inbox->SetFlags(m.uid, m.flags, 0b1000);
  want = "UID " + std::to_string(m.uid) + ": user flags are '(bit 3, no keyword)', source has '#3'";
  EXPECT_TRUE(Mentions(p.Direct(), want));
  // A bit without a name on both sides, or on one, is no keyword: no difference.
  source->SetFlags(m.uid, m.flags, uint64_t{1} << 40);
  inbox->SetFlags(m.uid, m.flags, 0);
  for (const std::string& line : p.Direct()) ADD_FAILURE() << line;
}

// A mailbox of another UIDVALIDITY (made here first; a restore appended the source's messages
// under new UIDs) is compared by content: verify said dates differ at UIDs that name other
// messages on each side, never which message was missing (helper-81).
TEST(Verify, AMailboxOfAnotherUidValidityIsComparedByContent) {
  Pair p;
  auto add = [](store::Folder& f, const std::string& body, int64_t save_time, uint8_t flags = 0) {
    auto w = f.NewMessage();
    w->Write(body);
    store::MessageMeta meta;
    meta.internal_date = 1700000000;
    meta.save_time = save_time;
    meta.flags = flags;
    std::vector<store::StagedMessage> batch{w->Finish(meta)};
    return f.Commit(batch).at(0);
  };
  const std::string a = "Subject: a\r\n\r\nsame bytes twice\r\n", b = "Subject: b\r\n\r\nb\r\n";
  auto src = p.src->CreateFolder(p.user, "Work", 11);
  add(*src, a, 1700000100);
  const uint32_t second_a = add(*src, a, 1700000200);  // the same bytes again, stored later
  const uint32_t source_b = add(*src, b, 1700000300, store::kSeen);
  auto dst = p.dst->CreateFolder(p.user, "Work", 22);
  const uint32_t local = add(*dst, "Subject: local\r\n\r\nmade here\r\n", 1700000050);
  const uint32_t here_a = add(*dst, a, 1700000100);
  const uint32_t here_b = add(*dst, b, 1700000300);
  for (const std::vector<std::string>& lines : {p.Direct(), p.ViaManifest()}) {
    EXPECT_TRUE(Mentions(lines, "mailbox user/" + p.user + "/Work: UIDVALIDITY is 22, source has 11"));
    EXPECT_TRUE(Mentions(lines, "mailbox user/" + p.user + "/Work source UID " + std::to_string(second_a) +
                                    " (" + std::to_string(a.size()) + " bytes, saved 2023-11-14T22:16:40Z) is missing "
                                    "(fewer messages here have its bytes"));
    EXPECT_TRUE(Mentions(lines, "mailbox user/" + p.user + "/Work UID " + std::to_string(local) +
                                    " is not in the source (compared by content)"));
    EXPECT_TRUE(Mentions(lines, "mailbox user/" + p.user + "/Work source UID " + std::to_string(source_b) + " (UID " +
                                    std::to_string(here_b) + " here): flags are"));
    EXPECT_FALSE(Mentions(lines, "(UID " + std::to_string(here_a) + " here)"));  // the first a: equal
    EXPECT_FALSE(Mentions(lines, "date differs"));
    EXPECT_FALSE(Mentions(lines, "save time"));
  }
}

// The save time alone (what a Maildir export and import changes) is named as such, with both
// times: "dates or header size differ" did not tell it from a changed message.
TEST(Verify, ASaveTimeIsNamedWithBothTimes) {
  Pair p;
  for (auto [store, at] : {std::pair{p.src.get(), int64_t{1700000000}}, std::pair{p.dst.get(), int64_t{1700003600}}}) {
    auto inbox = store->OpenFolder(p.user, "INBOX");
    auto w = inbox->NewMessage();
    w->Write(std::string("Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nSubject: s\r\n\r\nbody\r\n"));
    store::MessageMeta meta;
    meta.internal_date = 1700000000;
    meta.save_time = at;
    std::vector<store::StagedMessage> batch{w->Finish(meta)};
    inbox->Commit(batch);
  }
  const std::vector<std::string> direct = p.Direct();
  EXPECT_TRUE(Mentions(direct, ": save time is 2023-11-14T23:13:20Z, source has 2023-11-14T22:13:20Z")) << direct.size();
  EXPECT_FALSE(Mentions(direct, "sent date")) << direct.size();
  EXPECT_FALSE(Mentions(direct, "header size")) << direct.size();
  EXPECT_TRUE(Mentions(p.ViaManifest(), ": save time is 2023-11-14T23:13:20Z"));
}

TEST(Verify, AFolderField) {
  Pair p;
  p.Inbox()->RaiseUidNext(100000);
  EXPECT_TRUE(Mentions(p.Direct(), "INBOX: UIDNEXT is 100000"));
  EXPECT_TRUE(Mentions(p.ViaManifest(), "INBOX: UIDNEXT is 100000"));
  p.dst->SetAcl(p.user, "INBOX", "anyone lr");
  EXPECT_TRUE(Mentions(p.Direct(), "ACL is 'anyone lr'"));
}

TEST(Verify, AUserStatus) {
  Pair p;
  p.dst->SetUserStatus(p.user, store::UserStatus::Parse("hold"));
  std::string want = "user " + p.user + ": status is hold, source has active";
  EXPECT_TRUE(Mentions(p.Direct(), want));
  EXPECT_TRUE(Mentions(p.ViaManifest(), want));
}

// A manifest re-encoded with each user's subscriptions and each folder's per-user data reversed
// and the first entry repeated: another writer's order (the format does not fix one).
std::string ReorderedManifest(store::Store& source) {
  const std::string original = ManifestOf(source);
  format::StringSource in(original);
  format::Decoder dec(in);
  format::StringSink out;
  format::Encoder enc(out);
  const auto shuffle = [](auto items) {
    std::reverse(items.begin(), items.end());
    if (!items.empty()) items.push_back(items.back());
    return items;
  };
  for (;;) {
    switch (dec.Next()) {
      case format::Decoder::Event::kHeader: enc.WriteHeader(dec.header()); break;
      case format::Decoder::Event::kUser: {
        format::UserRecord u = dec.user();
        u.subscriptions = shuffle(u.subscriptions);
        enc.WriteUser(u);
        break;
      }
      case format::Decoder::Event::kFolder: {
        format::FolderRecord f = dec.folder();
        f.peruser = shuffle(f.peruser);
        enc.WriteFolder(f);
        break;
      }
      case format::Decoder::Event::kMessage: enc.BeginMessage(dec.message()); break;
      case format::Decoder::Event::kMessageEnd: enc.EndMessage(); break;
      case format::Decoder::Event::kLink: enc.WriteLink(dec.link()); break;
      case format::Decoder::Event::kFolderEnd: enc.EndFolder(); break;
      case format::Decoder::Event::kEnd: enc.Finish(); return out.data();
      default: ADD_FAILURE() << "unexpected record in a manifest"; return out.data();
    }
  }
}

// Subscriptions and per-user data are sets: a manifest listing them in another order (or one
// twice) used to be reported as "subscriptions differ" / "per-user data differs" (helper-56).
TEST(Verify, SubscriptionsAndPerUserDataAreComparedAsSets) {
  Pair p;
  for (store::Store* s : {p.src.get(), p.dst.get()}) {
    for (const char* folder : {"INBOX", "Sent", "Drafts"}) s->Subscribe(p.user, "user/" + p.user + "/" + folder);
    for (const char* reader : {"zed", "amy", "kim"})
      s->SetPerUser("user/" + p.user + "/INBOX", reader, std::string("seen=1:") + reader);
  }
  const auto via = [&](const std::string& manifest) {
    format::StringSource in(manifest);
    format::Decoder dec(in);
    return VerifyManifest(*p.dst, dec, {}).differences;
  };
  const std::string reordered = ReorderedManifest(*p.src);
  EXPECT_TRUE(via(reordered).empty()) << via(reordered).front();

  // A real difference still is one, in either order.
  p.dst->Unsubscribe(p.user, "user/" + p.user + "/Sent");
  p.dst->SetPerUser("user/" + p.user + "/INBOX", "amy", "seen=1:2");
  for (const auto& differences : {via(reordered), p.ViaManifest()}) {
    EXPECT_TRUE(Mentions(differences, "user " + p.user + ": subscriptions differ"));
    EXPECT_TRUE(Mentions(differences, "mailbox user/" + p.user + "/INBOX: per-user data differs"));
  }
}

TEST(Verify, WhatAMigrationDoesToStatusesIsNoDifferenceButTheReverseIs) {
  Pair p;
  VerifyOptions strict;
  strict.strict_status = true;
  // Source hold (during a migration) or moved:HOST (after it), destination active: expected.
  for (const char* source : {"hold", "moved:newhost"}) {
    p.src->SetUserStatus(p.user, store::UserStatus::Parse(source));
    EXPECT_TRUE(p.Direct().empty()) << source;
    EXPECT_TRUE(p.ViaManifest().empty()) << source;
    EXPECT_TRUE(Mentions(CompareStores(*p.dst, *p.src, strict).differences,
                         "user " + p.user + ": status is active, source has " + source));
  }
  // A destination on hold or moved while the source is not is a difference.
  p.dst->SetUserStatus(p.user, store::UserStatus::Parse("hold"));
  EXPECT_TRUE(Mentions(p.Direct(), "user " + p.user + ": status is hold, source has moved:newhost"));
  p.src->SetUserStatus(p.user, store::UserStatus::Parse("active"));
  p.dst->SetUserStatus(p.user, store::UserStatus::Parse("moved:elsewhere"));
  EXPECT_TRUE(Mentions(p.Direct(), "user " + p.user + ": status is moved:elsewhere, source has active"));
  // Moved to one host, named in two cases: no difference (a host name is in any case).
  p.src->SetUserStatus(p.user, store::UserStatus::Parse("moved:Elsewhere"));
  EXPECT_TRUE(CompareStores(*p.dst, *p.src, strict).differences.empty());
  p.src->SetUserStatus(p.user, store::UserStatus::Parse("moved:elsewhere2"));
  EXPECT_TRUE(Mentions(CompareStores(*p.dst, *p.src, strict).differences,
                       "user " + p.user + ": status is moved:elsewhere, source has moved:elsewhere2"));
  // And content differences are still found alongside an expected status.
  p.dst->SetUserStatus(p.user, store::UserStatus::Parse("active"));
  p.src->SetUserStatus(p.user, store::UserStatus::Parse("moved:newhost"));
  p.Inbox()->RaiseUidNext(100000);
  std::vector<std::string> d = p.Direct();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_TRUE(Mentions(d, "INBOX: UIDNEXT is 100000"));
}

// Which store's migration made a user is provenance, not status: a migrated user (active, its
// origin the source's store id) compared with a source whose user is active again read "status
// is active, source has active" and exit 1 (helper-68).
TEST(Verify, AMigratedUsersOriginIsNoStatusDifference) {
  Pair p;
  p.dst->SetUserStatus(p.user, store::UserStatus{store::UserState::kActive, "", "0123456789abcdef"});
  ASSERT_EQ(p.dst->FindUser(p.user)->status.origin_store, "0123456789abcdef");
  VerifyOptions strict;
  strict.strict_status = true;
  EXPECT_TRUE(p.Direct().empty());
  EXPECT_TRUE(CompareStores(*p.dst, *p.src, strict).differences.empty());
  EXPECT_TRUE(p.ViaManifest().empty());
}

TEST(Verify, AMissingMailboxAndAnExtraMessage) {
  Pair p;
  p.src->CreateFolder(p.user, "OnlyInSource");
  EXPECT_TRUE(Mentions(p.Direct(), "mailbox user/" + p.user + "/OnlyInSource is missing"));
  auto inbox = p.Inbox();  // a writer belongs to its folder: keep the folder alive
  auto w = inbox->NewMessage();
  w->Write("Subject: extra\r\n\r\nx");
  std::vector<store::StagedMessage> batch{w->Finish({})};
  uint32_t uid = inbox->Commit(batch).at(0);
  EXPECT_TRUE(Mentions(p.Direct(), "UID " + std::to_string(uid) + " is not in the source"));
}

// A folder deleted at the source after the copy stays at the destination (migration.md): verify
// says so, directly, rather than calling the stores equal. A user only the destination has is no
// difference (a destination may serve others).
TEST(Verify, AFolderOnlyTheDestinationHasIsADifference) {
  Pair p;
  p.dst->CreateFolder(p.user, "OnlyAtDestination");
  p.dst->CreateFolder("someone.else", "INBOX");
  const std::vector<std::string> d = p.Direct();
  EXPECT_TRUE(Mentions(d, "mailbox user/" + p.user + "/OnlyAtDestination is at the destination only")) << d.size();
  EXPECT_EQ(d.size(), 1u);
  // Within the selection only: verifying the user's INBOX alone does not list its other folders.
  VerifyOptions inbox_only;
  inbox_only.names = {"user/" + p.user + "/INBOX"};
  EXPECT_TRUE(CompareStores(*p.dst, *p.src, inbox_only).differences.empty());
}

// A user without mailboxes (moved away, its mailboxes deleted: its record defers late mail) is
// its record. verify skipped it: its record changed at the destination, or mail delivered there
// to a copy not live there, read "equal" (helper-107). A migration leaves such a user behind,
// and a migrated one lives at the destination with mailboxes of its own: neither is a
// difference (helper-109, helper-110); missing is one with --strict-status only.
TEST(Verify, AUserWithoutMailboxesIsComparedByItsRecord) {
  Pair p;
  const store::UserStatus moved = store::UserStatus::Parse("moved:newhost");
  p.src->CreateUser("carol", {}, /*with_inbox=*/false);
  p.src->SetUserStatus("carol", moved);
  VerifyOptions strict;
  strict.strict_status = true;
  EXPECT_TRUE(p.Direct().empty()) << "left behind by a migration";
  EXPECT_TRUE(Mentions(CompareStores(*p.dst, *p.src, strict).differences, "user carol is missing"));

  p.dst->CreateUser("carol", {}, /*with_inbox=*/false);  // as a restore carries it
  p.dst->SetUserStatus("carol", moved);
  std::vector<std::string> whole;
  VerifyOptions collecting;
  collecting.compared_whole = [&](const std::string& user) { whole.push_back(user); };
  VerifyReport equal = CompareStores(*p.dst, *p.src, collecting);
  EXPECT_TRUE(equal.differences.empty()) << equal.differences.front();
  EXPECT_FALSE(std::count(whole.begin(), whole.end(), "carol"));  // not recorded as verified
  VerifyOptions carol_only;
  carol_only.names = {"user/carol"};
  VerifyReport alone = CompareStores(*p.dst, *p.src, carol_only);
  EXPECT_TRUE(alone.equal());
  EXPECT_EQ(alone.users, 1u);  // was 0: "the source holds no users"

  p.dst->CreateFolder("carol", "INBOX");  // mail here for a copy that defers it
  EXPECT_TRUE(Mentions(p.Direct(), "mailbox user/carol/INBOX is at the destination only"));
  p.dst->SetQuotaLimit("carol", 1000);
  EXPECT_TRUE(Mentions(p.Direct(), "user carol: quota limit is 1000, source has 0"));
  p.dst->SetQuotaLimit("carol", 0);

  // Migrated here: live, with mailboxes of its own; only --strict-status names the status.
  p.dst->SetUserStatus("carol", store::UserStatus::Parse("active"));
  EXPECT_TRUE(p.Direct().empty()) << p.Direct().front();
  EXPECT_TRUE(Mentions(CompareStores(*p.dst, *p.src, strict).differences,
                       "user carol: status is active, source has moved:newhost"));

  // An active user without mailboxes is an account like any other: missing is a difference.
  p.src->CreateUser("dora", {}, /*with_inbox=*/false);
  EXPECT_TRUE(Mentions(p.Direct(), "user dora is missing"));
  p.dst->CreateUser("dora", {}, /*with_inbox=*/false);
  p.dst->CreateFolder("dora", "Old");
  EXPECT_TRUE(Mentions(p.Direct(), "mailbox user/dora/Old is at the destination only"));
}

// The destination's quota usage of a user compared whole must be what its mailboxes hold: set
// higher (damage) it defers every delivery as over quota, and it read "equal" (helper-107).
TEST(Verify, AQuotaUsageThatIsNotWhatTheMailboxesHoldIsADifference) {
  Pair p;
  ASSERT_TRUE(p.Direct().empty());
  p.dst->AddQuotaUsed(p.user, 60 << 20);
  const uint64_t used = p.dst->FindUser(p.user)->quota_used;
  std::vector<std::string> d = p.Direct();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0], "user " + p.user + ": quota usage here is " + std::to_string(used) + " bytes, its mailboxes here hold " +
                      std::to_string(used - (60 << 20)) + " (storemove user " + p.user +
                      " --recount-quota, or a rerun of the restore of the user, counts it again)");
  // A selection of some of the user's mailboxes says nothing about the usage of all.
  VerifyOptions inbox_only;
  inbox_only.names = {"user/" + p.user + "/INBOX"};
  EXPECT_TRUE(CompareStores(*p.dst, *p.src, inbox_only).differences.empty());
  p.dst->RecomputeQuota(p.user);
  EXPECT_TRUE(p.Direct().empty());
}

// Only users compared whole may be recorded as verified (the guard of `delete`): a selection of
// one mailbox proves nothing about the user's others.
TEST(Verify, OnlyUsersComparedWholeCount) {
  Pair p;
  std::vector<std::string> before, whole;
  auto collecting = [&](std::vector<std::string> names) {
    before.clear();
    whole.clear();
    VerifyOptions options;
    options.names = std::move(names);
    options.before_user = [&](const std::string& user) { before.push_back(user); };
    options.compared_whole = [&](const std::string& user) {
      EXPECT_FALSE(before.empty() || before.back() != user) << user << " compared whole before its before_user";
      whole.push_back(user);
    };
    return options;
  };
  VerifyReport some = CompareStores(*p.dst, *p.src, collecting({"user/" + p.user + "/INBOX"}));
  ASSERT_TRUE(some.equal());
  ASSERT_GT(p.src->ListFolders(p.user).size(), 1u);
  EXPECT_EQ(some.users, 1u);
  EXPECT_EQ(before, std::vector<std::string>{p.user});
  EXPECT_TRUE(whole.empty());
  // The whole user
  CompareStores(*p.dst, *p.src, collecting({"/" + p.src->FindUser(p.user)->partition + "/user/" + p.user}));
  EXPECT_EQ(whole, std::vector<std::string>{p.user});
}

// The users are compared as the scan reads them, kUsersAhead (32) behind it, not listed first
// (39 MB at 100,000 users): each once, in key order, those past the window too.
TEST(Verify, EveryUserOfAStoreLargerThanTheLookAheadIsComparedOnceInOrder) {
  Pair p({}, /*messages_per_user=*/1, /*users=*/100);
  store::Store& src = *p.src;
  store::Store& dst = *p.dst;
  std::vector<std::string> users, before, whole;
  src.ForEachUser([&](const store::UserInfo& u) { users.push_back(u.user); });
  ASSERT_EQ(users.size(), 100u);
  VerifyOptions options;
  options.before_user = [&](const std::string& user) { before.push_back(user); };
  options.compared_whole = [&](const std::string& user) { whole.push_back(user); };
  VerifyReport report = CompareStores(dst, src, options);
  EXPECT_TRUE(report.equal()) << report.differences.front();
  EXPECT_EQ(report.users, 100u);
  EXPECT_EQ(before, users);
  EXPECT_EQ(whole, users);
  // Differences of users in the window and past it are found.
  dst.CreateFolder(users[5], "OnlyHere");
  dst.CreateFolder(users[97], "OnlyHere");
  report = CompareStores(dst, src, {});
  EXPECT_EQ(report.differences.size(), 2u);
  EXPECT_TRUE(Mentions(report.differences, "user/" + users[5] + "/OnlyHere"));
  EXPECT_TRUE(Mentions(report.differences, "user/" + users[97] + "/OnlyHere"));
}

// A name that selects nothing is refused, as backup refuses it: a typo must not read "equal".
TEST(Verify, ANameThatSelectsNothingIsRefused) {
  Pair p;
  for (const std::string& name : {"user/" + p.user + "/Sentt", std::string("user/nosuch/INBOX"), std::string("/nopart")}) {
    VerifyOptions o;
    o.names = {name};
    try {
      CompareStores(*p.dst, *p.src, o);
      ADD_FAILURE() << name << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kNotFound) << name << ": " << e.what();
    }
  }
}


// A destination folder moved to another partition (or renamed) after its snapshot, before its
// files are read: each file read "message file is missing" (helper-71: 2,068 lines for one
// INBOX, the store intact). A move is followed to where the record now leads; a rename is one
// line saying the folder's messages are not proven, not one per message.
TEST(Verify, ADestinationFolderMovedWhileItsFilesAreReadIsFollowedOrNamedOnce) {
  Pair p({"primary", "second"}, 30);
  auto& [tmp, src, dst, user] = p;
  const std::string inbox = "user/" + user + "/INBOX";
  VerifyOptions o;
  o.after_destination_snapshot = [&](const std::string& mailbox) {
    if (mailbox != inbox) return;
    const std::string now = dst->FindUser(user)->partition;
    ASSERT_TRUE(store::MoveUser(*dst, user, now == "second" ? "primary" : "second"));
  };
  VerifyReport moved = CompareStores(*dst, *src, o);
  EXPECT_TRUE(moved.equal()) << ::testing::PrintToString(moved.differences);
  // Renamed: its INBOX cannot be; a folder with messages is.
  std::string folder;  // a leaf: a rename takes children along, each another mailbox's lines
  const auto folders = dst->ListFolders(user, store::Store::FolderDetail::kWithIndex);
  for (const store::FolderInfo& f : folders) {
    bool leaf = std::none_of(folders.begin(), folders.end(),
                             [&](const store::FolderInfo& c) { return c.folder.rfind(f.folder + "/", 0) == 0; });
    if (f.folder != "INBOX" && f.count > 1 && leaf && folder.empty()) folder = f.folder;
  }
  ASSERT_FALSE(folder.empty());
  o.after_destination_snapshot = [&](const std::string& mailbox) {
    if (mailbox == "user/" + user + "/" + folder) store::RenameFolder(*dst, user, folder, "Renamed-meanwhile");
  };
  VerifyReport renamed = CompareStores(*dst, *src, o);
  size_t lines_of_it = 0;
  for (const std::string& d : renamed.differences) lines_of_it += d.find("user/" + user + "/" + folder) != std::string::npos;
  EXPECT_EQ(lines_of_it, 1u) << ::testing::PrintToString(renamed.differences);
  EXPECT_TRUE(Mentions(renamed.differences, "was moved, renamed or deleted while verify read it"));
}

// A source or a manifest without users (an empty store, a manifest taken on the wrong host)
// compares nothing: that proves nothing and is not "equal" (it was, exit 0).
TEST(Verify, ASourceOrManifestOfNoUsersIsNotEqual) {
  Pair p;
  auto empty = store::Store::Init(p.tmp / "empty", {});
  VerifyReport direct = CompareStores(*p.dst, *empty, {});
  EXPECT_FALSE(direct.equal());
  EXPECT_TRUE(Mentions(direct.differences, "nothing compared")) << ::testing::PrintToString(direct.differences);
  VerifyReport manifest = ViaManifestOf(*empty, *p.dst);
  EXPECT_EQ(manifest.users, 0u);
  EXPECT_FALSE(manifest.equal());
  EXPECT_TRUE(Mentions(manifest.differences, "nothing compared"));
}

}  // namespace
}  // namespace storemove::stream
