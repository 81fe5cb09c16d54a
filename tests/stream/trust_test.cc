// A file or pipe stream is untrusted input: whatever it says, a restore must never put content
// into a mailbox that the stream did not deliver itself (docs/stream-format.md §13). Each case
// restores into a store that already holds another user's message and checks that the
// attacker's mailbox does not receive it.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <fstream>

#include "format/format.h"
#include "relinker/relinker.h"
#include "stream/net.h"
#include "store/generate.h"
#include "stream/migrate.h"
#include "stream/stream.h"
#include "tests/support/store_checks.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"
#include "util/error.h"
#include "util/printable.h"

namespace storemove::stream {
namespace {

using storemove::testing::CliResult;
using storemove::testing::RunCli;
using storemove::testing::SlurpFile;
using storemove::testing::TempDir;

const std::string kSecret = "From: bank\r\nSubject: your PIN\r\n\r\nalice's PIN is 4711\r\n";

SessionReport RestoreBytes(store::Store* s, const std::string& bytes, RestoreOptions options = {}) {
  format::StringSource src(bytes);
  format::Decoder dec(src);
  return Restore(s, dec, options);
}

format::MessageRecord Record(uint32_t uid, std::string_view body) {
  format::MessageRecord m;
  m.uid = uid;
  m.size = body.size();
  m.digest = DigestOf(body);
  return m;
}

void WriteMessage(format::Encoder& enc, uint32_t uid, std::string_view body) {
  enc.BeginMessage(Record(uid, body));
  if (!body.empty()) enc.BodyChunk(body);
  enc.EndMessage();
}

void BeginFolder(format::Encoder& enc, const std::string& user, const std::string& folder) {
  format::FolderRecord f;
  f.user = user;
  f.folder = folder;
  f.uidvalidity = 1;
  f.uidnext = 1;
  enc.WriteFolder(f);
}

void WriteUser(format::Encoder& enc, const std::string& user) {
  format::UserRecord u;
  u.user = user;
  u.status = "active";
  enc.WriteUser(u);
}

struct KeywordedMessage {
  uint32_t uid;
  std::string body;
  uint64_t user_flags;
};

// A stream of one folder, USER's INBOX, with these keyword names and messages.
std::string InboxWithKeywords(const std::string& user, const std::vector<std::string>& names,
                              const std::vector<KeywordedMessage>& messages) {
  format::StringSink sink;
  format::Encoder enc(sink);
  enc.WriteHeader({});
  WriteUser(enc, user);
  format::FolderRecord f;
  f.user = user;
  f.folder = "INBOX";
  f.uidvalidity = 1;
  f.uidnext = static_cast<uint32_t>(messages.size() + 1);
  f.user_flag_names = names;
  enc.WriteFolder(f);
  for (const KeywordedMessage& k : messages) {
    format::MessageRecord m = Record(k.uid, k.body);
    m.user_flags = k.user_flags;
    enc.BeginMessage(m);
    enc.BodyChunk(k.body);
    enc.EndMessage();
  }
  enc.EndFolder();
  enc.Finish();
  return std::string(sink.data());
}

// A user-flag bit that the folder record names no keyword for is not stored: kept, it would
// become whatever keyword the folder gains later (found by review: bit 40 in a folder without
// names survived in store.idx).
TEST(Trust, AUserFlagBitWithoutANameIsNotStored) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "s", {});
  const std::string stream =
      InboxWithKeywords("alice", {"$Forwarded", "Work"}, {{1, kSecret, (uint64_t(1) << 1) | (uint64_t(1) << 40)}});
  EXPECT_EQ(RestoreBytes(s.get(), stream).errors, 0u);
  auto inbox = s->OpenFolder("alice", "INBOX");
  const store::FolderSnapshot snap = inbox->Snapshot();
  ASSERT_EQ(snap.messages.size(), 1u);
  EXPECT_EQ(snap.messages[0].user_flags, uint64_t(1) << 1) << "Work kept, the nameless bit 40 dropped";
}

// A store in which alice holds kSecret, restored the ordinary way (so it is in the digest
// repository, where restore looks for content by digest).
std::unique_ptr<store::Store> StoreWithAlice(const std::string& root) {
  auto s = store::Store::Init(root, {});
  format::StringSink sink;
  format::Encoder enc(sink);
  enc.WriteHeader({});
  WriteUser(enc, "alice");
  BeginFolder(enc, "alice", "INBOX");
  WriteMessage(enc, 1, kSecret);
  enc.EndFolder();
  enc.Finish();
  EXPECT_EQ(RestoreBytes(s.get(), sink.data()).errors, 0u);
  return s;
}

std::string AliceFile(store::Store& s) { return s.OpenFolder("alice", "INBOX")->MessagePath(1); }

// Every message mallory has, by content: none may be alice's.
void ExpectMalloryHasNoSecret(store::Store& s) {
  for (const store::FolderInfo& f : s.ListFolders("mallory")) {
    auto folder = s.OpenFolder("mallory", f.folder);
    for (const store::MessageMeta& m : folder->Snapshot().messages)
      EXPECT_NE(SlurpFile(folder->MessagePath(m.uid)), kSecret) << "mallory/" << f.folder << " UID " << m.uid;
  }
}

nlink_t Links(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_nlink;
}

bool OneLine(const std::string& err) { return !err.empty() && err.find('\n') == err.size() - 1; }

// The case: a link to a content id older than the decoder's link-check window carries
// alice's digest and size (both visible in a manifest). Nothing in the stream delivered those
// bytes, so the restore refuses the link as corrupt and mallory gets nothing of alice's.
TEST(RestoreTrust, LinkOlderThanTheWindowToAnotherUsersDigestIsRefused) {
  TempDir tmp;
  const std::string root = tmp / "store";
  nlink_t before;
  {
    auto s = StoreWithAlice(root);
    before = Links(AliceFile(*s));
  }
  const std::string stream_path = tmp / "evil.sm";
  {
    format::StringSink sink;
    format::Encoder enc(sink);
    enc.WriteHeader({});
    WriteUser(enc, "mallory");
    // Enough empty messages to push content id 1 out of the window, in a folder that restore
    // refuses (-c y skips it: quick, and the attack works whether or not they are restored).
    BeginFolder(enc, "mallory", "bad/../filler");
    for (uint32_t uid = 1; uid <= format::kLinkCheckWindow + 1; ++uid) WriteMessage(enc, uid, "");
    enc.EndFolder();
    BeginFolder(enc, "mallory", "INBOX");
    format::LinkRecord link = Record(1, kSecret);
    link.content_id = 1;
    enc.WriteLink(link);
    enc.EndFolder();
    enc.Finish();
    std::ofstream(stream_path, std::ios::binary) << sink.data();
  }
  CliResult r = RunCli({"restore", "--store", root, "-f", stream_path, "-c", "y"});
  EXPECT_NE(r.status, 0) << r.Describe();
  EXPECT_LT(r.status, 128) << r.Describe();
  EXPECT_TRUE(OneLine(r.err)) << r.Describe();
  EXPECT_NE(r.err.find("content_id 1"), std::string::npos) << r.Describe();
  auto s = store::Store::Open(root);
  ExpectMalloryHasNoSecret(*s);
  EXPECT_FALSE(s->FindFolder("mallory", "INBOX"));
  EXPECT_EQ(Links(AliceFile(*s)), before);
}

// Held records say "you hold these bytes": only an authenticated network session may say it.
// From a file (or a pipe), a session stream is refused before anything is written, even with
// the right SHA-256.
TEST(RestoreTrust, HeldRecordsFromAFileOrPipeAreRefused) {
  TempDir tmp;
  const std::string root = tmp / "store";
  nlink_t before;
  { before = Links(AliceFile(*StoreWithAlice(root))); }
  const std::string stream_path = tmp / "evil.sm";
  {
    format::StringSink sink;
    format::Encoder enc(sink);
    format::StreamHeader h;
    h.kind = format::StreamKind::kSession;
    enc.WriteHeader(h);
    WriteUser(enc, "mallory");
    BeginFolder(enc, "mallory", "INBOX");
    format::HeldRecord held;
    static_cast<format::MessageRecord&>(held) = Record(1, kSecret);
    net::Sha256 sha;
    sha.Update(kSecret.data(), kSecret.size());
    held.sha256 = sha.Final();
    enc.WriteHeld(held);
    enc.EndFolder();
    enc.Finish();
    std::ofstream(stream_path, std::ios::binary) << sink.data();
  }
  for (bool pipe : {false, true}) {
    CliResult r = pipe ? RunCli({"restore", "--store", root, "-f", "-"}, SlurpFile(stream_path))
                       : RunCli({"restore", "--store", root, "-f", stream_path, "-c", "y"});
    EXPECT_NE(r.status, 0) << r.Describe();
    EXPECT_LT(r.status, 128) << r.Describe();
    EXPECT_TRUE(OneLine(r.err)) << r.Describe();
    EXPECT_NE(r.err.find("network session"), std::string::npos) << r.Describe();
  }
  auto s = store::Store::Open(root);
  EXPECT_FALSE(s->FindUser("mallory"));  // refused at the header: nothing written
  EXPECT_EQ(Links(AliceFile(*s)), before);
}

// Inside the window a link's digest is checked, but the content it names may not have been
// restored (its folder failed and -c y skipped it). Restore must not then take whatever the
// repository holds under that digest: here an entry with other bytes of the same size, as an
// XXH3 collision would leave it (XXH3 is not collision resistant), which is alice's file. It
// restores the link from the body it kept while it skipped that folder (stream-format.md §7.4):
// the stream's own bytes.
TEST(RestoreTrust, LinkToContentOfASkippedFolderDoesNotUseTheRepository) {
  TempDir tmp;
  const std::string root = tmp / "store";
  auto s = StoreWithAlice(root);
  const std::string mine(kSecret.size(), 'm');
  relinker::Repository repo(s->PartitionPath(s->DefaultPartition()));
  const std::string planted = repo.EntryPath(DigestOf(mine));
  std::filesystem::create_directories(std::filesystem::path(planted).parent_path());
  ASSERT_EQ(::link(AliceFile(*s).c_str(), planted.c_str()), 0) << planted;

  format::StringSink sink;
  format::Encoder enc(sink);
  enc.WriteHeader({});
  WriteUser(enc, "mallory");
  BeginFolder(enc, "mallory", "bad/../name");  // refused by restore, skipped with -c y
  WriteMessage(enc, 1, mine);
  enc.EndFolder();
  BeginFolder(enc, "mallory", "INBOX");
  format::LinkRecord link = Record(1, mine);
  link.content_id = 1;
  enc.WriteLink(link);
  enc.EndFolder();
  enc.Finish();

  RestoreOptions keep_going;
  keep_going.continue_on_error = true;
  SessionReport r = RestoreBytes(s.get(), sink.data(), keep_going);
  EXPECT_EQ(r.errors, 1u) << "the folder, and nothing else";
  ExpectMalloryHasNoSecret(*s);
  auto inbox = s->OpenFolder("mallory", "INBOX");
  ASSERT_EQ(inbox->Snapshot().messages.size(), 1u);
  EXPECT_EQ(ReadFile(inbox->MessagePath(inbox->Snapshot().messages[0].uid)), mine);
}

// restore NAMES keeps the skipped folders' bodies for the selected folders' links, within a bound:
// a body it could not keep leaves its link unrestored, and the line says why and what to do (a
// reviewer, helper-80, met the bound on a small filesystem and was told "its folder failed").
TEST(RestoreTrust, ALinkToASkippedBodyNotKeptSaysWhy) {
  const std::string body(4000, 'k');
  format::StringSink sink;
  format::Encoder enc(sink);
  enc.WriteHeader({});
  WriteUser(enc, "ann");
  BeginFolder(enc, "ann", "INBOX");
  WriteMessage(enc, 1, body);
  enc.EndFolder();
  WriteUser(enc, "bob");
  BeginFolder(enc, "bob", "INBOX");
  format::LinkRecord link = Record(1, body);
  link.content_id = 1;
  enc.WriteLink(link);
  enc.EndFolder();
  enc.Finish();
  for (const uint64_t bound : {uint64_t{1} << 30, uint64_t{100}}) {
    TempDir tmp;
    auto s = store::Store::Init(tmp / "store", {"primary"});
    RestoreOptions only_bob;
    only_bob.names = {"user/bob"};
    only_bob.continue_on_error = true;
    only_bob.skipped_bodies_max_bytes = bound;
    SessionReport r = RestoreBytes(s.get(), sink.data(), only_bob);
    EXPECT_FALSE(s->FindUser("ann"));
    auto inbox = s->OpenFolder("bob", "INBOX");
    if (bound > body.size()) {
      EXPECT_EQ(r.errors, 0u);
      ASSERT_EQ(inbox->Snapshot().messages.size(), 1u);
      EXPECT_EQ(ReadFile(inbox->MessagePath(1)), body);
      continue;
    }
    EXPECT_EQ(r.errors, 1u);
    EXPECT_TRUE(inbox->Snapshot().messages.empty());
    ASSERT_EQ(r.error_lines.size(), 1u);
    EXPECT_NE(r.error_lines[0].find("whose body came in a folder this restore skipped and could not keep"),
              std::string::npos)
        << r.error_lines[0];
    EXPECT_NE(r.error_lines[0].find("select that folder too, restore the whole stream, or free space first"),
              std::string::npos)
        << r.error_lines[0];
  }
}

// The ordinary case still works: links to content the stream delivered, in the same folder,
// another folder and (through the repository of another partition) another partition.
TEST(RestoreTrust, LinksToDeliveredContentAreRestored) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {"one", "two"});
  format::StringSink sink;
  format::Encoder enc(sink);
  enc.WriteHeader({});
  format::UserRecord u;
  u.user = "ann";
  u.partition = "one";
  u.status = "active";
  enc.WriteUser(u);
  u.user = "bob";
  u.partition = "two";
  enc.WriteUser(u);
  BeginFolder(enc, "ann", "INBOX");
  WriteMessage(enc, 1, "hello\r\n");
  format::LinkRecord link = Record(2, "hello\r\n");
  link.content_id = 1;
  enc.WriteLink(link);
  enc.EndFolder();
  BeginFolder(enc, "bob", "INBOX");
  link.uid = 1;
  enc.WriteLink(link);
  enc.EndFolder();
  enc.Finish();
  SessionReport r = RestoreBytes(s.get(), sink.data());
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(s->OpenFolder("ann", "INBOX")->Snapshot().messages.size(), 2u);
  auto bob = s->OpenFolder("bob", "INBOX");
  ASSERT_EQ(bob->Snapshot().messages.size(), 1u);
  EXPECT_EQ(SlurpFile(bob->MessagePath(1)), "hello\r\n");
}

// The writer's side of the rule: backup links only to one of the last N contents (N is the
// format's window by default; a small one here), sending older content again, so its streams
// never carry a link that restore refuses; the restore is still equal and single-instance.
TEST(RestoreTrust, BackupLinksOnlyWithinTheWindow) {
  TempDir tmp;
  auto a = store::Store::Init(tmp / "A", {});
  store::GenerateOptions g;
  g.users = 8;
  g.messages_per_user = 40;
  g.dup_rate = 0.5;
  g.single_instance = true;
  g.seed = 5;
  store::Generate(*a, g);
  BackupOptions narrow;
  narrow.link_window = 64;
  format::StringSink sink;
  SessionReport sent;
  {
    format::Encoder enc(sink);
    sent = Backup(*a, narrow, enc);
  }
  format::StringSink wide_sink;
  format::Encoder wide(wide_sink);
  const uint64_t wide_links = Backup(*a, {}, wide).links;
  EXPECT_GT(sent.links, 0u);
  EXPECT_LT(sent.links, wide_links);  // some content was sent again
  format::StringSource src(sink.data());
  format::Decoder dec(src);
  uint64_t contents = 0, links = 0;
  for (auto ev = dec.Next(); ev != format::Decoder::Event::kEnd; ev = dec.Next()) {
    if (ev == format::Decoder::Event::kMessage) ++contents;
    if (ev == format::Decoder::Event::kLink) {
      ++links;
      EXPECT_LT(contents - dec.link().content_id, 64u) << "link to content " << dec.link().content_id;
    }
  }
  EXPECT_EQ(links, sent.links);
  auto b = store::Store::Init(tmp / "B", {});
  EXPECT_EQ(RestoreBytes(b.get(), sink.data()).errors, 0u);
  storemove::testing::ExpectEqualStores(*b, *a);
}

// A stream of mallory's INBOX with one message, its folder record shaped by `shape` (an ACL,
// keyword names ... from a hostile writer).
std::string MalloryInbox(const std::function<void(format::FolderRecord&)>& shape) {
  format::StringSink sink;
  format::Encoder enc(sink);
  enc.WriteHeader({});
  WriteUser(enc, "mallory");
  format::FolderRecord f;
  f.user = "mallory";
  f.folder = "INBOX";
  f.uidvalidity = 1;
  f.uidnext = 2;
  shape(f);
  enc.WriteFolder(f);
  WriteMessage(enc, 1, "hi\r\n");
  enc.EndFolder();
  enc.Finish();
  return std::string(sink.data());
}

// A folder's ACL is stored after the folder is published: an invalid one must stop the restore
// before that (the mailbox stays invisible), not after it (a published mailbox and a failure).
TEST(RestoreTrust, InvalidAclFailsBeforeTheFolderIsPublished) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  for (std::string acl : {"mallory lrs ../x lr", "mallory lrs anyone l\x01r", "mallory"}) {
    const std::string stream = MalloryInbox([&](format::FolderRecord& f) { f.acl = acl; });
    try {
      RestoreBytes(s.get(), stream);
      ADD_FAILURE() << "accepted ACL '" << acl << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument) << e.what();
    }
    EXPECT_FALSE(s->FindFolder("mallory", "INBOX")) << acl;
    RestoreOptions keep_going;
    keep_going.continue_on_error = true;
    EXPECT_EQ(RestoreBytes(s.get(), stream, keep_going).errors, 1u);
    EXPECT_FALSE(s->FindFolder("mallory", "INBOX")) << acl;
  }
}

// Keyword names come from the stream too: one with CR LF reached the store and would go to an
// IMAP client inside a FLAGS response (helper-70: exit 0, stored as keywords). Each kept must be
// an IMAP atom. One that is not is left out with a note and the folder restored without it:
// refusing it lost the whole folder, whose other messages and keywords were fine, at the
// restore of a backup that had exited 0 (helper-93: an import had stored 'odd%kw'). A name
// twice is still refused, before the folder is published, as a bad ACL is.
TEST(RestoreTrust, KeywordNamesThatAreNotImapAtomsAreLeftOutAndTheFolderRestored) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  const std::vector<std::string> not_atoms = {"evil\r\n* OK [ALERT] injected", "sp ace", "paren(", std::string("ctl\x01"),
                                              std::string("\xff\xfe"), "\\Seen", "", "odd%kw", std::string(201, 'k')};
  for (size_t i = 0; i < not_atoms.size(); ++i) {
    const std::string& bad = not_atoms[i];
    SCOPED_TRACE(EscapeControls(bad));
    auto each = store::Store::Init(tmp / ("each" + std::to_string(i)), {});
    // Message 1 carries all three keywords, message 2 only the one left out.
    const SessionReport r = RestoreBytes(
        each.get(), InboxWithKeywords("mallory", {"$Before", bad, "$After"}, {{1, "hi\r\n", 0b111}, {2, "ho\r\n", 0b010}}));
    EXPECT_EQ(r.errors, 0u);
    ASSERT_EQ(r.notes.size(), 1u);
    EXPECT_NE(r.notes[0].find("is not an IMAP keyword"), std::string::npos) << r.notes[0];
    EXPECT_EQ(r.notes[0].find('\n'), std::string::npos) << r.notes[0];
    const store::FolderSnapshot snap = each->OpenFolder("mallory", "INBOX")->Snapshot();
    EXPECT_EQ(snap.info.user_flag_names, (std::vector<std::string>{"$Before", "$After"}));
    ASSERT_EQ(snap.messages.size(), 2u);
    for (const store::MessageMeta& m : snap.messages) EXPECT_EQ(m.user_flags, m.uid == 1 ? 0b11u : 0u) << m.uid;
  }
  try {
    RestoreBytes(s.get(), MalloryInbox([&](format::FolderRecord& f) { f.user_flag_names = {"ok", "ok"}; }));
    ADD_FAILURE() << "accepted a keyword name twice";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kInvalidArgument) << e.what();
  }
  EXPECT_FALSE(s->FindFolder("mallory", "INBOX"));
  // Atoms are kept, as Dovecot and Sun name them.
  const std::vector<std::string> atoms = {"$Forwarded", "NonJunk", "$label1", "work-2024"};
  RestoreBytes(s.get(), MalloryInbox([&](format::FolderRecord& f) { f.user_flag_names = atoms; }));
  EXPECT_EQ(s->OpenFolder("mallory", "INBOX")->Snapshot().info.user_flag_names, atoms);
}

// Subscriptions, ACLs and per-user data become database keys: their names are validated when
// stored, as every other name is.
TEST(RestoreTrust, SubscriptionAclAndPerUserNamesAreValidatedWhenStored) {
  TempDir tmp;
  auto s = store::Store::Init(tmp / "store", {});
  s->CreateUser("joe");
  for (const std::string& bad : std::vector<std::string>{"../../etc", "user/../x", "user/joe/../../x", "INBOX"})
    EXPECT_THROW(s->Subscribe("joe", bad), Error) << bad;
  EXPECT_THROW(s->SetPerUser("user/joe/INBOX", "../x", "seen 1"), Error);
  EXPECT_THROW(s->SetPerUser("../x", "joe", "seen 1"), Error);
  EXPECT_THROW(s->SetAcl("joe", "INBOX", "../x lr"), Error);
  EXPECT_THROW(s->SetAcl("joe", "INBOX", "joe l/r"), Error);
  EXPECT_TRUE(s->Subscriptions("joe").empty());
  // Valid ones are still stored.
  s->Subscribe("joe", "user/joe/INBOX");
  s->SetPerUser("user/joe/INBOX", "ann", "seen 1");
  s->SetAcl("joe", "INBOX", "joe lrswipkxtea anyone lr -group:staff w");
  EXPECT_EQ(s->Subscriptions("joe").size(), 1u);
}

// A subscription naming no mailbox the store can hold is left out with a note: the user and its
// mail are restored. Checked for every user record, also one restore NAMES defers and drops for
// a later record of the user (a stream may repeat one, stream-format.md §6), so a run over the
// result does not refuse what the first run passed (found by the restore fuzz target).
TEST(RestoreTrust, SubscriptionsTheStoreCannotHoldAreLeftOutInEveryRecord) {
  TempDir tmp;
  // joe's first record has the bad subscriptions, then a folder of ann, joe again, joe's INBOX.
  auto stream = [](const std::string& first_status) {
    format::StringSink sink;
    format::Encoder enc(sink);
    enc.WriteHeader({});
    format::UserRecord joe;
    joe.user = "joe";
    joe.status = first_status;
    joe.subscriptions = {"INBOX", "user/../x", "user/joe/Sent"};
    enc.WriteUser(joe);
    WriteUser(enc, "ann");
    BeginFolder(enc, "ann", "INBOX");
    WriteMessage(enc, 1, "to ann\r\n");
    enc.EndFolder();
    WriteUser(enc, "joe");
    BeginFolder(enc, "joe", "INBOX");
    WriteMessage(enc, 1, "to joe\r\n");
    enc.EndFolder();
    enc.Finish();
    return std::string(sink.data());
  };
  {
    auto s = store::Store::Init(tmp / "whole", {});
    for (int run = 0; run < 2; ++run) {
      SCOPED_TRACE(run);
      const SessionReport r = RestoreBytes(s.get(), stream("active"));
      EXPECT_EQ(r.errors, 0u);
      ASSERT_FALSE(r.notes.empty());
      EXPECT_NE(r.notes[0].find("joe: 2 subscriptions left out"), std::string::npos) << r.notes[0];
      EXPECT_EQ(s->Subscriptions("joe"), std::vector<std::string>{"user/joe/Sent"});
      EXPECT_EQ(s->OpenFolder("joe", "INBOX")->Snapshot().messages.size(), 1u);
    }
  }
  RestoreOptions names;
  names.names = {"user/%/INBOX"};
  names.continue_on_error = true;
  {
    auto s = store::Store::Init(tmp / "names", {});
    for (int run = 0; run < 2; ++run) {
      SCOPED_TRACE(run);
      const SessionReport r = RestoreBytes(s.get(), stream("active"), names);
      EXPECT_EQ(r.errors, 0u);
      EXPECT_EQ(s->OpenFolder("joe", "INBOX")->Snapshot().messages.size(), 1u);
    }
  }
  // A status restore reads and cannot, in the record a first run drops, is refused in that run
  // too: a move's, which it always reads (helper-148), and with --keep-status any.
  for (const bool keep_status : {false, true}) {
    SCOPED_TRACE(keep_status);
    names.keep_status = keep_status;
    auto s = store::Store::Init(tmp / ("status" + std::to_string(keep_status)), {});
    const SessionReport r = RestoreBytes(s.get(), stream(keep_status ? "sideways" : "moved:bad host"), names);
    EXPECT_EQ(r.errors, 1u);
    ASSERT_EQ(r.error_lines.size(), 1u);
    EXPECT_NE(r.error_lines[0].find("user joe: "), std::string::npos) << r.error_lines[0];
    EXPECT_EQ(s->OpenFolder("joe", "INBOX")->Snapshot().messages.size(), 1u);
  }
}

// A stream whose records of joe disagree: on hold, then moved to other.example. restore NAMES
// makes joe from the record before its first selected folder, moved; a rerun then met the first
// record and refused joe as moved away (64), though the stream's last word is that very move.
// A later record saying so takes back the refusal, which waits for the user's first folder as
// for a user moved elsewhere (found by the restore fuzz target).
TEST(RestoreTrust, ARerunOverAUserTheStreamMadeMovedIsNotRefusedByItsEarlierRecord) {
  TempDir tmp;
  format::StringSink sink;
  format::Encoder enc(sink);
  enc.WriteHeader({});  // no store id: the chain's own check (HoldsOnlyMailOf) cannot apply
  format::UserRecord joe;
  joe.user = "joe";
  joe.status = "hold";
  enc.WriteUser(joe);
  BeginFolder(enc, "joe", "Trash");
  WriteMessage(enc, 1, "thrown\r\n");
  enc.EndFolder();
  WriteUser(enc, "ann");
  joe.status = "moved:other.example";
  enc.WriteUser(joe);
  BeginFolder(enc, "joe", "INBOX");
  WriteMessage(enc, 1, "kept\r\n");
  enc.EndFolder();
  enc.Finish();
  const std::string stream(sink.data());
  RestoreOptions names;
  names.names = {"user/%/INBOX"};
  auto s = store::Store::Init(tmp / "names", {});
  for (int run = 0; run < 2; ++run) {
    SCOPED_TRACE(run);
    const SessionReport r = RestoreBytes(s.get(), stream, names);
    EXPECT_EQ(r.errors, 0u);
    EXPECT_EQ(s->FindUser("joe")->status.ToString(), "moved:other.example");
    EXPECT_EQ(s->OpenFolder("joe", "INBOX")->Snapshot().messages.size(), 1u);
    EXPECT_FALSE(s->FindFolder("joe", "Trash"));
  }
  // The whole stream over that store: joe's Trash, under the record that is not the move, is
  // refused at that folder, as before; with -c y the rest is restored.
  try {
    RestoreBytes(s.get(), stream);
    ADD_FAILURE() << "restored Trash into a user moved away";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("user joe is marked moved to other.example here"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(s->FindFolder("joe", "Trash"));
  // A record of a user moved away that no folder follows changes nothing and refuses nothing.
  format::StringSink bare_sink;
  format::Encoder bare(bare_sink);
  bare.WriteHeader({});
  joe.status = "active";
  joe.quota_limit = 1000;
  joe.subscriptions = {"user/joe/Trash"};
  bare.WriteUser(joe);
  bare.Finish();
  const SessionReport bare_report = RestoreBytes(s.get(), std::string(bare_sink.data()));
  EXPECT_EQ(bare_report.errors, 0u);
  ASSERT_EQ(bare_report.notes.size(), 1u);
  EXPECT_NE(bare_report.notes[0].find("user joe: moved away from here; the stream's record of joe (status, quota, "
                                      "subscriptions) was left out, and no folder of it followed that record"),
            std::string::npos)
      << bare_report.notes[0];
  EXPECT_EQ(s->FindUser("joe")->status.ToString(), "moved:other.example");
  EXPECT_EQ(s->FindUser("joe")->quota_limit, 0u);
  EXPECT_TRUE(s->Subscriptions("joe").empty());
}

// A group defined twice is an operator's mistake: an error naming the line, not a silent
// overwrite.
TEST(RestoreTrust, GroupDefinedTwiceIsAnErrorNamingTheLine) {
  TempDir tmp;
  const std::string conf = tmp / "groups.conf";
  std::ofstream(conf) << "# groups\ngroupA=[a-l].*\ngroupB=[m-z].*\ngroupA=x.*\n";
  try {
    ReadBackupGroups(conf);
    ADD_FAILURE() << "accepted a group defined twice";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("line 4"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("first on line 2"), std::string::npos) << e.what();
  }
}

// The migrate summary names the users that are in no group (the first 20).
TEST(RestoreTrust, MigrateReportNamesUsersInNoGroup) {
  MigrateReport r;
  r.users_in_no_group = 22;
  for (int i = 0; i < 20; ++i) r.no_group_names.push_back("u" + std::to_string(i));
  std::string text = r.Text();
  EXPECT_NE(text.find("22 users are in no group and were not migrated: u0 u1"), std::string::npos) << text;
  EXPECT_NE(text.find("u19 and 2 more"), std::string::npos) << text;
}

}  // namespace
}  // namespace storemove::stream
