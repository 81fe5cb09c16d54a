// storemove import in bulk (interop/import.h): many files and many users in one run, names checked
// before anything is written, restore's durability model, and a rerun (after kill -9 too) that
// completes the job without duplicates. The real binary on a real store.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "interop/mbox.h"
#include "store/store.h"
#include "tests/support/store_checks.h"
#include "tests/support/build_flavor.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"
#include "util/digest.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::tools {
namespace {

using storemove::testing::ReadMessage;
using storemove::testing::CliResult;
using storemove::testing::IsOneErrorLine;
using storemove::testing::RunCli;
using storemove::testing::TempDir;
namespace fs = std::filesystem;

constexpr int kUsage = 64, kDataErr = 65, kNoInput = 66, kTempFail = 75;

// A message unique to (tag, n), `body_lines` long, with a line an mbox writer must quote.
std::string Message(const std::string& tag, int n, int body_lines = 3) {
  std::string m = "From: sender" + std::to_string(n) + "@example.net\nTo: someone@example.com\nSubject: " + tag + " " +
                  std::to_string(n) + "\nMessage-ID: <" + tag + "." + std::to_string(n) + "@example.net>\n\n";
  for (int i = 0; i < body_lines; ++i) m += "line " + std::to_string(i) + " of " + tag + " " + std::to_string(n) + "\n";
  m += "From the quoted line\n";
  return m;
}

// Writes messages as an mboxrd file and returns them.
std::vector<std::string> WriteMbox(const std::string& path, const std::vector<std::string>& messages) {
  fs::create_directories(fs::path(path).parent_path());
  UniqueFd fd = OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  interop::MboxWriter writer(fd.get(), path);
  for (const std::string& m : messages) writer.Write(m, "sender@example.net", 1719828000);
  return messages;
}

std::vector<std::string> Messages(const std::string& tag, int count, int body_lines = 3) {
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back(Message(tag, i, body_lines));
  return out;
}

// The folder's messages in UID order, each checked against its recorded size and digest.
std::vector<std::string> FolderMessages(store::Store& store, const std::string& user, const std::string& folder) {
  auto f = store.OpenFolder(user, folder);
  std::vector<std::string> out;
  for (const store::MessageMeta& m : f->Snapshot().messages) {
    std::string bytes = ReadMessage(*f, m.uid);
    EXPECT_EQ(bytes.size(), m.size) << f->Mailbox() << " uid " << m.uid;
    EXPECT_EQ(DigestOf(bytes), m.digest) << f->Mailbox() << " uid " << m.uid;
    out.push_back(std::move(bytes));
  }
  return out;
}

// Every mailbox with its message count, and every file below the partitions (a stray file shows).
std::string StoreState(const std::string& root) {
  std::ostringstream s;
  auto store = store::Store::Open(root);
  store->ForEachFolder([&](const store::FolderInfo& f) { s << "mailbox " << f.Mailbox() << " " << f.count << "\n"; });
  std::set<std::string> files;
  for (const std::string& partition : store->Partitions())
    for (const auto& entry : fs::recursive_directory_iterator(store->PartitionPath(partition)))
      files.insert(entry.path().string());
  for (const std::string& f : files) s << "file " << f << "\n";
  return s.str();
}

class Import : public ::testing::Test {
 protected:
  void SetUp() override {
    CliResult r = RunCli({"init", "--store", root_});
    ASSERT_EQ(r.status, 0) << r.Describe();
  }
  CliResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"import", "--store", root_});
    return RunCli(args);
  }
  // Imports `mbox` for `user` through a named pipe fed by a thread, as `cat f | import -s -` would.
  CliResult RunThroughFifo(const std::string& mbox, const std::string& user) {
    const std::string fifo = dir_ / "fifo";
    if (::mkfifo(fifo.c_str(), 0600) != 0) ThrowErrno("mkfifo " + fifo);
    std::thread writer([&] {
      UniqueFd in = OpenFile(mbox, O_RDONLY);
      UniqueFd out(::open(fifo.c_str(), O_WRONLY | O_CLOEXEC));
      std::string block(1 << 20, '\0');
      while (size_t n = ReadSome(in.get(), block.data(), block.size(), mbox))
        if (::write(out.get(), block.data(), n) != static_cast<ssize_t>(n)) break;
    });
    CliResult r = Run({"-u", user, "-s", fifo});
    writer.join();
    fs::remove(fifo);
    return r;
  }
  TempDir dir_;
  std::string root_ = dir_ / "store";
};

TEST_F(Import, ListLoadsManyUsersAndFoldersInOneRun) {
  const auto a_inbox = WriteMbox(dir_ / "in/alice/INBOX", Messages("alice-inbox", 5));
  const auto a_sent = WriteMbox(dir_ / "in/alice/Sent", Messages("alice-sent", 3));
  const auto b_work = WriteMbox(dir_ / "in/bob@example.org/Work", Messages("bob-work", 4));
  const auto c_old = WriteMbox(dir_ / "in/carol/Old", Messages("carol-old", 2));
  // Relative paths are relative to the list's directory; comments, blank lines and a CRLF line
  // are accepted; one user's lines need not be together.
  std::ofstream(dir_ / "in/list.tsv") << "# user\tfolder\tmbox\n"
                                      << "alice\tINBOX\talice/INBOX\n"
                                      << "\n"
                                      << "bob@example.org\tProjects/Work\t" << (dir_ / "in/bob@example.org/Work") << "\r\n"
                                      << "alice\tSent\talice/Sent\n"
                                      << "carol\tArchive/2019\tcarol/Old\n";
  CliResult r = Run({"--list", dir_ / "in/list.tsv"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("imported 14 messages"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("from 4 files for 3 users"), std::string::npos) << r.out;

  auto store = store::Store::Open(root_);
  EXPECT_EQ(FolderMessages(*store, "alice", "INBOX"), a_inbox);
  EXPECT_EQ(FolderMessages(*store, "alice", "Sent"), a_sent);
  EXPECT_EQ(FolderMessages(*store, "bob@example.org", "Projects/Work"), b_work);
  EXPECT_EQ(FolderMessages(*store, "carol", "Archive/2019"), c_old);
  // Users whose list names no INBOX still get one (every account has one), empty.
  EXPECT_EQ(store->FindFolder("bob@example.org", "INBOX").value().count, 0u);
  EXPECT_EQ(store->FindFolder("carol", "INBOX").value().count, 0u);
  // Quota counts what was imported.
  uint64_t alice_bytes = 0;
  for (const auto& m : a_inbox) alice_bytes += m.size();
  for (const auto& m : a_sent) alice_bytes += m.size();
  EXPECT_EQ(store->FindUser("alice")->quota_used, alice_bytes);
  // Internal date from the envelope line.
  auto inbox = store->OpenFolder("alice", "INBOX");
  EXPECT_EQ(inbox->Snapshot().messages.at(0).internal_date, 1719828000);
}

// An export killed or failed leaves ".storemove-export-unfinished" in its OUTDIR, its last file
// cut short: importing that file exited 0 with the last message truncated (helper-133), and a
// later import of the finished export would have added the whole one beside it. Files below
// such a marker, and a Maildir tree that holds one, are refused before anything is written.
TEST_F(Import, TheFilesOfAnUnfinishedExportAreRefused) {
  const auto inbox = WriteMbox(dir_ / "out/INBOX", Messages("inbox", 3));
  const auto deep = WriteMbox(dir_ / "out/Projects/2024", Messages("deep", 2));
  std::ofstream(dir_ / "out/.storemove-export-unfinished");
  for (const std::string& file : {std::string(dir_ / "out/INBOX"), std::string(dir_ / "out/Projects/2024")}) {
    CliResult r = Run({"-u", "joe", "-s", file, "-d", "Restored"});
    EXPECT_EQ(r.status, 65) << r.Describe();
    EXPECT_NE(r.err.find("part of an export that did not finish"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(".storemove-export-unfinished"), std::string::npos) << r.err;
  }
  // Through a link to the file from elsewhere, and through standard input redirected from it
  // (helper-137: both imported the cut file with exit 0).
  fs::create_directories(dir_ / "elsewhere");
  fs::create_symlink(dir_ / "out/INBOX", dir_ / "elsewhere/INBOX.mbox");
  CliResult linked = Run({"-u", "joe", "-s", dir_ / "elsewhere/INBOX.mbox", "-d", "Restored"});
  EXPECT_EQ(linked.status, 65) << linked.Describe();
  CliResult redirected = storemove::testing::RunCliWithStdinFile(
      {"import", "--store", root_, "-u", "joe", "-s", "-", "-d", "Restored"}, dir_ / "out/INBOX");
  EXPECT_EQ(redirected.status, 65) << redirected.Describe();
  fs::create_directories(dir_ / "maildir/cur");
  fs::create_directories(dir_ / "maildir/new");
  fs::create_directories(dir_ / "maildir/tmp");
  std::ofstream(dir_ / "maildir/.storemove-export-unfinished");
  CliResult maildir = Run({"-u", "joe", "--maildir", dir_ / "maildir"});
  EXPECT_EQ(maildir.status, 65) << maildir.Describe();
  EXPECT_FALSE(store::Store::Open(root_)->FindUser("joe")) << "nothing is made for a refused file";
  // Once the export has finished (the marker gone), the same import goes through.
  fs::remove(dir_ / "out/.storemove-export-unfinished");
  CliResult r = Run({"-u", "joe", "-s", dir_ / "out/INBOX", "-d", "Restored"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(FolderMessages(*store::Store::Open(root_), "joe", "Restored"), inbox);
}

// `-d ''` (a script's unset variable) was taken for no -d: the messages went into INBOX, exit 0.
TEST_F(Import, AnEmptyFolderNameIsRefused) {
  WriteMbox(dir_ / "m", Messages("m", 1));
  CliResult r = Run({"-u", "joe", "-s", dir_ / "m", "-d", ""});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_NE(r.err.find("an empty folder name"), std::string::npos) << r.err;
  EXPECT_FALSE(store::Store::Open(root_)->FindUser("joe"));
}

TEST_F(Import, ManyFilesOfOneUserGoToTheirBaseNames) {
  const auto sent = WriteMbox(dir_ / "a/Sent.mbox", Messages("sent", 2));
  const auto trash = WriteMbox(dir_ / "b/Trash", Messages("trash", 3));
  CliResult r = Run({"-u", "joe", dir_ / "a/Sent.mbox", dir_ / "b/Trash"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  auto store = store::Store::Open(root_);
  EXPECT_EQ(FolderMessages(*store, "joe", "Sent"), sent);
  EXPECT_EQ(FolderMessages(*store, "joe", "Trash"), trash);
  EXPECT_EQ(store->FindFolder("joe", "INBOX").value().count, 0u);

  // -d puts every file into the one folder named.
  store.reset();
  r = Run({"-u", "joe", "-d", "All", dir_ / "a/Sent.mbox", dir_ / "b/Trash"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  std::vector<std::string> both = sent;
  both.insert(both.end(), trash.begin(), trash.end());
  EXPECT_EQ(FolderMessages(*store::Store::Open(root_), "joe", "All"), both);

  // Two files that name one folder (an export of folders x and x.mbox, or two directories' Sent)
  // were merged into it, exit 0 (helper-103): refused before anything is written, naming both.
  WriteMbox(dir_ / "x", Messages("x", 1));
  WriteMbox(dir_ / "x.mbox", Messages("x.mbox", 1));
  for (const std::vector<std::string>& files :
       {std::vector<std::string>{dir_ / "x", dir_ / "x.mbox"}, std::vector<std::string>{dir_ / "a/Sent.mbox", dir_ / "b/Trash", dir_ / "a/Sent.mbox"}}) {
    std::vector<std::string> args = {"-u", "ann"};
    args.insert(args.end(), files.begin(), files.end());
    r = Run(args);
    EXPECT_EQ(r.status, 64) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find(" would both go into folder "), std::string::npos) << r.Describe();
    EXPECT_FALSE(store::Store::Open(root_)->FindUser("ann"));
  }
  // An INBOX in another case is the INBOX, and said so.
  r = Run({"-u", "joe", dir_ / "x", "-d", "inbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("into user/joe/INBOX"), std::string::npos) << r.Describe();
}

// Dovecot (mailbox_list_utf8 = no, its default) and UW-IMAP name mbox files in IMAP's modified
// UTF-7: "Entw&APw-rfe" is the folder Entwürfe. Without --utf7-names such a tree came in as folders
// named "Entw&APw-rfe" without a word (helper-133 #10); now a warning says so, and --utf7-names
// decodes every component, of a tree and of FILE... base names. A name that is not modified
// UTF-7, or decodes to a '/', is refused before anything is written; Dovecot's `.imap` index
// directories are passed over.
TEST_F(Import, Utf7NamesDecodeTheFolderNamesOfDovecotsMboxFiles) {
  const std::string tree = dir_ / "mail";
  const auto drafts = WriteMbox(tree + "/Entw&APw-rfe", Messages("drafts", 2));
  const auto deleted = WriteMbox(tree + "/Archiv/Gel&APY-scht", Messages("deleted", 1));
  const auto qa = WriteMbox(tree + "/Q&-A", Messages("qa", 1));
  WriteMbox(tree + "/.imap/Entw&APw-rfe/dovecot.index.log", Messages("index", 1));
  // Dovecot's subscriptions (version 2, as Dovecot 2.3 writes them), with lines that name no
  // folder: a '..' component, a raw '&', a \001 escape of a TAB (a control character) inside a component.
  std::ofstream(tree + "/.subscriptions") << "V\t2\n\nEntw&APw-rfe\nArchiv\tGel&APY-scht\nINBOX\nArchiv\t..\nR&D\n"
                                             "Entw&APw-rfe\na\001tb\n";

  CliResult r = Run({"-u", "joe", "--mbox-tree", tree, "--utf7-names"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("subscribed 3 folders (3 listed in " + tree + "/.subscriptions)"), std::string::npos)
      << r.Describe();
  EXPECT_EQ(store::Store::Open(root_)->Subscriptions("joe"),
            (std::vector<std::string>{"user/joe/Archiv/Gelöscht", "user/joe/Entwürfe", "user/joe/INBOX"}))
      << r.Describe();
  // The three lines that name no folder are said, one line each, and nothing else.
  EXPECT_NE(r.err.find(tree + "/.subscriptions line 6, 'Archiv\\x09..': invalid folder name"), std::string::npos)
      << r.Describe();
  EXPECT_NE(r.err.find(tree + "/.subscriptions line 7, 'R&D': the name is not modified UTF-7"), std::string::npos)
      << r.Describe();
  EXPECT_NE(r.err.find(tree + "/.subscriptions line 9, 'a\\x01tb': "), std::string::npos) << r.Describe();
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 3) << r.Describe();
  // A rerun subscribes nothing twice.
  r = Run({"-u", "joe", "--mbox-tree", tree, "--utf7-names"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("subscribed 0 folders (3 listed"), std::string::npos) << r.Describe();
  // An absurd one (17 MiB) is refused before anything is written.
  std::ofstream(tree + "/.subscriptions") << std::string(17 << 20, 'x');
  r = Run({"-u", "zed", "--mbox-tree", tree, "--utf7-names"});
  EXPECT_EQ(r.status, kUsage) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find(".subscriptions: over 16 MiB"), std::string::npos) << r.Describe();
  EXPECT_FALSE(store::Store::Open(root_)->FindUser("zed"));
  // A binary one (a NUL byte) likewise, exit 65; many lines that name no folder make 20 warnings
  // and one that counts the rest (a binary file made 11,694 lines, helper-156).
  std::ofstream(tree + "/.subscriptions") << "V\t2\n\nEntw&APw-rfe\n" << std::string(1, '\0') << "\n";
  r = Run({"-u", "zed", "--mbox-tree", tree, "--utf7-names"});
  EXPECT_EQ(r.status, kDataErr) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find(".subscriptions: holds NUL bytes"), std::string::npos) << r.Describe();
  EXPECT_FALSE(store::Store::Open(root_)->FindUser("zed"));
  {
    std::ofstream junk(tree + "/.subscriptions");
    for (int i = 0; i < 500; ++i) junk << "R&D" << i << "\n";
  }
  r = Run({"-u", "zed", "--mbox-tree", tree, "--utf7-names"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 21) << r.Describe();
  EXPECT_NE(r.err.find(".subscriptions: 480 more lines that name no folder; not subscribed"), std::string::npos)
      << r.Describe();
  fs::remove(tree + "/.subscriptions");
  {
    auto store = store::Store::Open(root_);
    EXPECT_EQ(FolderMessages(*store, "joe", "Entwürfe"), drafts);
    EXPECT_EQ(FolderMessages(*store, "joe", "Archiv/Gelöscht"), deleted);
    EXPECT_EQ(FolderMessages(*store, "joe", "Q&A"), qa);
    std::vector<std::string> folders;
    for (const store::FolderInfo& f : store->ListFolders("joe")) folders.push_back(f.folder);
    EXPECT_EQ(folders, (std::vector<std::string>{"Archiv/Gelöscht", "Entwürfe", "INBOX", "Q&A"}));
  }
  // FILE...: each base name decoded.
  r = Run({"-u", "ann", "--utf7-names", tree + "/Entw&APw-rfe", tree + "/Q&-A"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(FolderMessages(*store::Store::Open(root_), "ann", "Entwürfe"), drafts);

  // Without it: imported as named, and said once on stderr, before anything is written.
  EXPECT_EQ(store::Store::Open(root_)->Subscriptions("ann"), std::vector<std::string>{}) << "only a tree's are read";
  r = Run({"-u", "bob", "--mbox-tree", tree});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_TRUE(store::Store::Open(root_)->FindFolder("bob", "Entw&APw-rfe")) << r.Describe();
  EXPECT_NE(r.err.find("look like IMAP's modified UTF-7"), std::string::npos) << r.Describe();
  EXPECT_NE(r.err.find("give --utf7-names to decode them ('Archiv/Gelöscht')"), std::string::npos) << r.Describe();
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.Describe();

  // Names that are not modified UTF-7 (a raw '&', raw UTF-8), or hold a '/' once decoded: refused,
  // naming the file, nothing written.
  for (const std::string bad : {"Q&A", "Entwürfe", "a&AC8-b"}) {
    const std::string hostile = dir_ / ("hostile-" + std::to_string(bad.size()));
    WriteMbox(hostile + "/Sent", Messages("sent", 1));
    WriteMbox(hostile + "/" + bad, Messages("bad", 1));
    const std::string before = StoreState(root_);
    r = Run({"-u", "eve", "--mbox-tree", hostile, "--utf7-names"});
    EXPECT_EQ(r.status, kUsage) << bad << ": " << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find(hostile + "/" + bad + ": the name "), std::string::npos) << r.Describe();
    EXPECT_EQ(StoreState(root_), before) << bad;
  }
  // Dovecot's INBOX=~/mail/inbox: the file "inbox" is the INBOX, and said so.
  const std::string with_inbox = dir_ / "with-inbox";
  const auto inbox = WriteMbox(with_inbox + "/inbox", Messages("inbox", 2));
  r = Run({"-u", "ivy", "--mbox-tree", with_inbox, "--utf7-names"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("into user/ivy/INBOX"), std::string::npos) << r.Describe();
  EXPECT_EQ(FolderMessages(*store::Store::Open(root_), "ivy", "INBOX"), inbox);

  // It decodes names taken from files only: -s, -d, --list and --maildir name folders otherwise.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"-u", "joe", "-s", tree + "/Q&-A", "--utf7-names"},
        std::vector<std::string>{"-u", "joe", "-d", "X", tree + "/Q&-A", "--utf7-names"},
        std::vector<std::string>{"-u", "joe", "--maildir", tree, "--utf7-names"}}) {
    r = Run(args);
    EXPECT_EQ(r.status, kUsage) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  }
}

// Empty messages (consecutive "From " lines, an envelope line at the end) are in the mbox, so they
// are stored, nothing of the source lost; but the summary says how many there were, where it used
// to report them as ordinary messages (deliver refuses an empty stdin: a broken MTA pipe).
TEST_F(Import, EmptyMessagesAreStoredAndCountedInTheSummary) {
  std::ofstream(dir_ / "e.mbox") << "From a Mon Jan  1 00:00:00 2024\nFrom b Mon Jan  1 00:00:00 2024\n"
                                 << "From c Mon Jan  1 00:00:00 2024\nSubject: x\n\nx\n\n"
                                 << "From d Mon Jan  1 00:00:00 2024\n";
  CliResult r = Run({"-u", "joe", "-s", dir_ / "e.mbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("imported 4 messages (14 bytes) from " + dir_ / "e.mbox" + " into user/joe/INBOX, 3 of them empty"),
            std::string::npos)
      << r.out;
  auto store = store::Store::Open(root_);
  EXPECT_EQ(FolderMessages(*store, "joe", "INBOX"), (std::vector<std::string>{"", "", "Subject: x\n\nx\n", ""}));
  store.reset();

  // Many files: the run's summary counts them too; a file without any says nothing of it.
  WriteMbox(dir_ / "plain.mbox", Messages("plain", 2));
  r = Run({"-u", "kim", dir_ / "e.mbox", dir_ / "plain.mbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("from 2 files for 1 user; 3 empty messages (0 bytes)\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("into user/kim/plain\n"), std::string::npos) << r.out;
}

// An envelope line without a date gave its message the import's time as its internal date; the
// message's own Date: is taken first now (helper-133 #11), streamed or whole.
TEST_F(Import, AnUndatedEnvelopeLeavesTheDateFieldAsTheInternalDate) {
  const std::string big(6 << 20, 'x');
  std::ofstream(dir_ / "u.mbox") << "From alice\nDate: Mon, 1 Jul 2024 10:00:00 +0000\nSubject: 1\n\nx\n\n"
                                 << "From bob\nSubject: no date\n\nx\n\n"
                                 << "From carol\nDate: Tue, 2 Jul 2024 10:00:00 +0000\nSubject: big\n\n" << big << "\n\n"
                                 << "From dave Mon Jan  1 00:00:00 2024\nDate: Tue, 2 Jul 2024 10:00:00 +0000\n\nx\n";
  const int64_t before = ::time(nullptr);
  CliResult r = Run({"-u", "joe", "-s", dir_ / "u.mbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  const int64_t after = ::time(nullptr);
  auto store = store::Store::Open(root_);
  const auto messages = store->OpenFolder("joe", "INBOX")->Snapshot().messages.ToVector();
  ASSERT_EQ(messages.size(), 4u);
  EXPECT_EQ(messages[0].internal_date, 1719828000);
  EXPECT_GE(messages[1].internal_date, before);  // no date anywhere: the import's time
  EXPECT_LE(messages[1].internal_date, after);
  EXPECT_EQ(messages[2].internal_date, 1719914400);
  EXPECT_EQ(messages[3].internal_date, 1704067200);  // the envelope's date first
}

// An mbox written by Dovecot, UW-IMAP, Pine or mutt keeps each message's flags in Status and
// X-Status fields, and (Dovecot, UW, Pine) the folder's own data in a first pseudo message.
// Every message arrived unread and the pseudo message as mail (helper-73). The flags are taken
// from those fields (the bytes stay as they are) and the pseudo message is left out, said.
TEST_F(Import, StatusHeadersGiveFlagsAndTheFolderDataMessageIsLeftOut) {
  const std::string data =
      "Date: 04 Dec 2026 10:00:00 +0000\nFrom: Mail System Internal Data <MAILER-DAEMON@h>\n"
      "Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1764842400 0000000003\n\n"
      "This text is part of the internal format of your mail folder.\n";
  const std::string read = "Subject: read\nStatus: RO\n\nr\n";
  const std::string answered = "Subject: answered\nStatus: RO\nX-Status: AF\n\na\n";
  const std::string unread = "Subject: unread\nStatus: O\nX-Status: \n\nu\n";
  const std::string deleted_draft = "Subject: dd\nX-Status: DT\n\nStatus: R in the body is no flag\n";
  std::ofstream(dir_ / "dc.mbox") << "From MAILER_DAEMON Fri Dec  4 10:00:00 2026\n" << data << "\n"
                                  << "From a Mon Jan  1 00:00:00 2024\n" << read << "\n"
                                  << "From b Mon Jan  1 00:00:00 2024\n" << answered << "\n"
                                  << "From c Mon Jan  1 00:00:00 2024\n" << unread << "\n"
                                  << "From d Mon Jan  1 00:00:00 2024\n" << deleted_draft << "\n";
  CliResult r = Run({"-u", "joe", "-s", dir_ / "dc.mbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("imported 4 messages"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(", its folder-data message (X-IMAP, not mail) left out"), std::string::npos) << r.out;
  auto store = store::Store::Open(root_);
  EXPECT_EQ(FolderMessages(*store, "joe", "INBOX"), (std::vector<std::string>{read, answered, unread, deleted_draft}));
  const store::FolderSnapshot snap = store->OpenFolder("joe", "INBOX")->Snapshot();
  ASSERT_EQ(snap.messages.size(), 4u);
  EXPECT_EQ(snap.messages[0].flags, store::kSeen);
  EXPECT_EQ(snap.messages[1].flags, store::kSeen | store::kAnswered | store::kFlagged);
  EXPECT_EQ(snap.messages[2].flags, 0);
  EXPECT_EQ(snap.messages[3].flags, store::kDeleted | store::kDraft);
}

// Thunderbird keeps its flags in X-Mozilla-Status (4 hex digits): its exports came in unread, and
// a message it had deleted (waiting for compaction) came back as live mail (helper-133).
TEST_F(Import, ThunderbirdsStatusGivesFlags) {
  const std::string read = "Subject: read\nX-Mozilla-Status: 0001\nX-Mozilla-Status2: 00000000\n\nr\n";
  const std::string flagged = "Subject: flagged\nX-Mozilla-Status: 0007\n\nf\n";
  const std::string deleted = "Subject: deleted\nX-Mozilla-Status: 0009\n\nd\n";
  const std::string odd = "Subject: odd\nX-Mozilla-Status: zz01\n\no\n";  // not 4 hex digits: no flags
  std::ofstream(dir_ / "tb") << "From - Mon Jan  1 00:00:00 2024\n" << read << "\n"
                             << "From - Mon Jan  1 00:00:00 2024\n" << flagged << "\n"
                             << "From - Mon Jan  1 00:00:00 2024\n" << deleted << "\n"
                             << "From - Mon Jan  1 00:00:00 2024\n" << odd << "\n";
  CliResult r = Run({"-u", "joe", "-s", dir_ / "tb"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  auto store = store::Store::Open(root_);
  EXPECT_EQ(FolderMessages(*store, "joe", "INBOX"), (std::vector<std::string>{read, flagged, deleted, odd}));
  const store::FolderSnapshot snap = store->OpenFolder("joe", "INBOX")->Snapshot();
  ASSERT_EQ(snap.messages.size(), 4u);
  EXPECT_EQ(snap.messages[0].flags, store::kSeen);
  EXPECT_EQ(snap.messages[1].flags, store::kSeen | store::kAnswered | store::kFlagged);
  EXPECT_EQ(snap.messages[2].flags, store::kSeen | store::kDeleted);
  EXPECT_EQ(snap.messages[3].flags, 0);
  // The field leaked into a message archived elsewhere (not Thunderbird's "From - " envelope):
  // not read (helper-137: 0009 made it \Deleted).
  std::ofstream(dir_ / "archive") << "From list@example.org Mon Jan  1 00:00:00 2024\n" << deleted << "\n";
  store.reset();
  ASSERT_EQ(Run({"-u", "joe", "-s", dir_ / "archive", "-d", "Archive"}).status, 0);
  store = store::Store::Open(root_);
  EXPECT_EQ(store->OpenFolder("joe", "Archive")->Snapshot().messages.at(0).flags, 0);
}

// A file an IMAP server wrote (its first message has X-IMAPbase, as Dovecot writes it) keeps
// keywords in X-Keywords: they become user flags, new names joining the folder's, 64 at most
// (the rest counted); a large message streamed to disk gets its keywords too. In a file no IMAP
// server wrote, X-Keywords is what a sender put there (the corpus has "milton,john"): not read.
TEST_F(Import, XKeywordsOfAFileAnImapServerWroteBecomeUserFlags) {
  CliResult r = RunCli({"deliver", "--store", root_, "-u", "joe", "--create", "-d", "Lists"}, "Subject: held\n\nx\n");
  ASSERT_EQ(r.status, 0) << r.Describe();
  store::Store::Open(root_)->OpenFolder("joe", "Lists")->SetUserFlagNames({"mine"});
  const std::string first = "Subject: first\nX-IMAPbase: 1764842400 0000000004\nX-Keywords: $Work Later\n\n1\n";
  const std::string padded = "Subject: padded\nX-Keywords:                 \n\n2\n";
  // "\\Seen" and "(x)" are no IMAP keywords (helper-77: they were kept as user-flag names).
  const std::string later = "Subject: later\nX-Keywords: Later mine \\Seen (x)\n\n3\n";
  std::string many = "Subject: many\nX-Keywords:";
  for (int i = 0; i < 70; ++i) many += " k" + std::to_string(i);
  many += "\n\n4\n";
  const std::string large = "Subject: large\nX-Keywords: Later big\n\n" + std::string(5 << 20, 'x') + "\n";
  std::ofstream(dir_ / "dovecot.mbox") << "From a Mon Jan  1 00:00:00 2024\n" << first << "\n"
                                       << "From b Mon Jan  1 00:00:00 2024\n" << padded << "\n"
                                       << "From c Mon Jan  1 00:00:00 2024\n" << later << "\n"
                                       << "From d Mon Jan  1 00:00:00 2024\n" << large << "\n"
                                       << "From e Mon Jan  1 00:00:00 2024\n" << many << "\n";
  const std::string sender = "Subject: archive\nX-Keywords: milton,john\n\n5\n";
  std::ofstream(dir_ / "Archive") << "From f Mon Jan  1 00:00:00 2024\n" << sender << "\n";
  r = Run({"-u", "joe", "-d", "Lists", dir_ / "dovecot.mbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  // 4 names before "many" (mine, $Work, Later, big): 60 of its 70 fit; and 2 are no keywords.
  EXPECT_NE(r.out.find("imported 5 messages"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(", 12 keywords dropped (not IMAP keywords, or past the folder's 64)\n"), std::string::npos) << r.out;
  r = Run({"-u", "joe", dir_ / "Archive"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out.find("keyword"), std::string::npos) << r.out;

  auto store = store::Store::Open(root_);
  const store::FolderSnapshot lists = store->OpenFolder("joe", "Lists")->Snapshot();
  ASSERT_EQ(lists.info.user_flag_names.size(), 64u);
  EXPECT_EQ(std::vector<std::string>(lists.info.user_flag_names.begin(), lists.info.user_flag_names.begin() + 5),
            (std::vector<std::string>{"mine", "$Work", "Later", "big", "k0"}));
  ASSERT_EQ(lists.messages.size(), 6u);
  EXPECT_EQ(lists.messages[0].user_flags, 0u);       // the delivered one
  EXPECT_EQ(lists.messages[1].user_flags, 0b110u);   // $Work Later
  EXPECT_EQ(lists.messages[2].user_flags, 0u);       // padding only
  EXPECT_EQ(lists.messages[3].user_flags, 0b101u);   // Later mine
  EXPECT_EQ(lists.messages[3].flags, 0);              // not \\Seen
  EXPECT_EQ(lists.messages[4].user_flags, 0b1100u);  // Later big (streamed)
  EXPECT_EQ(lists.messages[4].size, large.size());
  EXPECT_EQ(lists.messages[5].user_flags, ~uint64_t{0} << 4);  // k0..k59 in bits 4..63
  const store::FolderSnapshot archive = store->OpenFolder("joe", "Archive")->Snapshot();
  EXPECT_TRUE(archive.info.user_flag_names.empty());
  ASSERT_EQ(archive.messages.size(), 1u);
  EXPECT_EQ(archive.messages[0].user_flags, 0u);
}

// IMAP keywords are case-insensitive: the `$work` of a later message, or of a folder's name,
// is the `$Work` already there, not a second flag (helper-144 #3); a folder that holds both
// spellings keeps each.
TEST_F(Import, AKeywordInAnotherCaseIsTheFoldersFlag) {
  std::ofstream(dir_ / "cases.mbox") << "From a Mon Jan  1 00:00:00 2024\n"
                                     << "Subject: one\nX-IMAPbase: 1764842400 0000000002\nX-Keywords: $Work\n\n1\n\n"
                                     << "From b Mon Jan  1 00:00:00 2024\n"
                                     << "Subject: two\nX-Keywords: $work LATER later\n\n2\n";
  CliResult r = Run({"-u", "joe", "-d", "Cases", dir_ / "cases.mbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  {
    const store::FolderSnapshot snap = store::Store::Open(root_)->OpenFolder("joe", "Cases")->Snapshot();
    EXPECT_EQ(snap.info.user_flag_names, (std::vector<std::string>{"$Work", "LATER"}));
    ASSERT_EQ(snap.messages.size(), 2u);
    EXPECT_EQ(snap.messages[0].user_flags, 0b01u);
    EXPECT_EQ(snap.messages[1].user_flags, 0b11u);
  }
  ASSERT_EQ(RunCli({"deliver", "--store", root_, "-u", "joe", "-d", "Both", "--create"}, "Subject: held\n\nx\n").status, 0);
  store::Store::Open(root_)->OpenFolder("joe", "Both")->SetUserFlagNames({"a", "A"});
  std::ofstream(dir_ / "both.mbox") << "From a Mon Jan  1 00:00:00 2024\n"
                                    << "Subject: one\nX-IMAPbase: 1764842400 0000000002\nX-Keywords: A\n\n1\n\n"
                                    << "From b Mon Jan  1 00:00:00 2024\n"
                                    << "Subject: two\nX-Keywords: a\n\n2\n";
  r = Run({"-u", "joe", "-d", "Both", dir_ / "both.mbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  const store::FolderSnapshot both = store::Store::Open(root_)->OpenFolder("joe", "Both")->Snapshot();
  EXPECT_EQ(both.info.user_flag_names, (std::vector<std::string>{"a", "A"}));
  ASSERT_EQ(both.messages.size(), 3u);
  EXPECT_EQ(both.messages[1].user_flags, 0b10u);
  EXPECT_EQ(both.messages[2].user_flags, 0b01u);
}

TEST_F(Import, HostileListLinesAreRefusedNamingTheLineBeforeAnyWrite) {
  WriteMbox(dir_ / "ok", Messages("ok", 2));
  const std::string before = StoreState(root_);
  const std::string good = "alice\tINBOX\t" + (dir_ / "ok") + "\n";
  const std::vector<std::pair<std::string, std::string>> bad_lines = {
      {"../x\tINBOX\tok\n", "invalid user id"},
      {"alice\ta/../../b\tok\n", "line 2"},
      {"alice\t/etc\tok\n", "line 2"},
      {std::string("alice\tbad\x01name\tok\n"), "line 2"},
      {std::string("alice\tINBOX\tok\x1b[2J\n"), "control character"},
      {"alice\tINBOX\n", "expected USER<TAB>FOLDER<TAB>MBOX_PATH"},
      {"alice\tINBOX\tok\textra\n", "found 4 fields"},
      {"alice\tINBOX\t\n", "empty mbox path"},
  };
  for (const auto& [line, why] : bad_lines) {
    std::ofstream(dir_ / "list.tsv", std::ios::trunc) << good << line;
    CliResult r = Run({"--list", dir_ / "list.tsv"});
    EXPECT_EQ(r.status, kUsage) << line << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << line << r.err;
    EXPECT_NE(r.err.find("list.tsv line 2: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(why), std::string::npos) << r.err;
    EXPECT_EQ(StoreState(root_), before) << "line 1 must not have been imported: " << line;
  }
  // On the command line too.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"-u", "../x", dir_ / "ok"}, {"-u", "alice", "-d", "x/../../y", dir_ / "ok"}, {"--list", dir_ / "list.tsv", "-u", "alice"}}) {
    CliResult r = Run(args);
    EXPECT_EQ(r.status, kUsage) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.err;
  }
  EXPECT_EQ(StoreState(root_), before);
}

TEST_F(Import, AMissingOrForeignFileStopsTheRunBeforeAnyWrite) {
  WriteMbox(dir_ / "ok", Messages("ok", 2));
  std::ofstream(dir_ / "notes.txt") << "Dear diary,\nno From line here\n";
  const std::string before = StoreState(root_);
  std::ofstream(dir_ / "list.tsv") << "alice\tINBOX\tok\nbob\tINBOX\tabsent\n";
  CliResult r = Run({"--list", dir_ / "list.tsv"});
  EXPECT_EQ(r.status, kNoInput) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.err;
  EXPECT_NE(r.err.find("list.tsv line 2: "), std::string::npos) << r.err;
  EXPECT_EQ(StoreState(root_), before);

  std::ofstream(dir_ / "list.tsv", std::ios::trunc) << "alice\tINBOX\tok\nbob\tINBOX\tnotes.txt\n";
  r = Run({"--list", dir_ / "list.tsv"});
  EXPECT_EQ(r.status, kDataErr) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.err;
  EXPECT_NE(r.err.find("line 2: " + (dir_ / "notes.txt") + ": not an mbox"), std::string::npos) << r.err;
  EXPECT_EQ(StoreState(root_), before);
}

// Standard input among FILE arguments: `- /dev/stdin` made a folder "-" of the messages and an
// empty folder "stdin", exit 0 (helper-128 L2). Named twice, or as a FILE without -d (it has no
// base name to give a folder), it is refused before any write; with -d, or as -s, it is read.
TEST_F(Import, StandardInputIsReadOnceAndIntoANamedFolder) {
  WriteMbox(dir_ / "in.mbox", Messages("in", 3));
  const std::string before = StoreState(root_);
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"-u", "bob", "-", "/dev/stdin"}, {"-u", "bob", "-"}, {"-u", "bob", "-s", "-", "-d", "X", "/dev/stdin"}}) {
    std::vector<std::string> full = {"import", "--store", root_};
    full.insert(full.end(), args.begin(), args.end());
    CliResult r = storemove::testing::RunCliWithStdinFile(full, dir_ / "in.mbox");
    EXPECT_EQ(r.status, kUsage) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find("standard input"), std::string::npos) << r.Describe();
    EXPECT_EQ(StoreState(root_), before);
  }
  // Two lines of a --list naming it (helper-129 M2: the second folder made empty, exit 0).
  std::ofstream(dir_ / "list.tsv") << "dan\tL1\t/dev/stdin\ndan\tL2\t/dev/fd/0\n";  // (helper-130: /dev/fd/0 too)
  CliResult listed = storemove::testing::RunCliWithStdinFile({"import", "--store", root_, "--list", dir_ / "list.tsv"},
                                                             dir_ / "in.mbox");
  EXPECT_EQ(listed.status, kUsage) << listed.Describe();
  EXPECT_NE(listed.err.find("is named on more than one line"), std::string::npos)
      << listed.Describe();
  EXPECT_EQ(StoreState(root_), before);

  // Closed: "read -: Bad file descriptor", exit 74 (helper-128 L3); now said so, 66, nothing made.
  const std::string closed = std::string(STOREMOVE_BIN) + " import --store '" + root_ + "' -u bob -s - <&- 2>&1";
  FILE* pipe = ::popen(closed.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string said;
  char buf[1024];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) said.append(buf, n);
  const int status = ::pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == kNoInput) << status << ": " << said;
  EXPECT_EQ(said, "storemove: open -: standard input is closed\n");
  EXPECT_EQ(StoreState(root_), before);

  CliResult r = storemove::testing::RunCliWithStdinFile({"import", "--store", root_, "-u", "bob", "-d", "Arch", "-"},
                                                        dir_ / "in.mbox");
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("imported 3 messages"), std::string::npos) << r.Describe();
  EXPECT_NE(r.out.find("into user/bob/Arch"), std::string::npos) << r.Describe();
}

// A pipe can be read once: a FIFO (or /dev/stdin, or a shell's <(zcat ...)) fed in small writes
// loses nothing; a symlink the administrator names is followed. A file whose lines end in CR
// alone (an old Mac mbox) is refused with one line before any write, not taken as one empty
// message.
// The command's own peak resident size (from wait4), not RUSAGE_CHILDREN's: that keeps the largest
// child of every earlier test when the binary runs whole.
uint64_t PeakRssMiB(const CliResult& r) { return static_cast<uint64_t>(r.peak_rss_kib) / 1024; }

// A message far larger than any buffer is written as it is read: the import's memory does not
// grow with it (it held the message about twice: 201 MiB for this one), and its bytes, quoted
// "From " lines included, are stored exactly; rerun into the existing folder, it is found
// present (compared file to file) and not added again.
TEST_F(Import, AMessageLargerThanMemoryBoundsIsStreamedIntoTheStore) {
  const auto make_messages = [] {
    constexpr size_t kLarge = 96 << 20;
    std::string large = "From: big@example.net\nSubject: a large attachment\nMessage-ID: <large@example.net>\n\n";
    const std::string line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\n";
    for (size_t n = 0; large.size() < kLarge; ++n) large += (n % 100000 == 7 ? ">From a quoted line\nFrom a line\n" : line);
    return std::vector<std::string>{Message("large", 1), large, Message("large", 2)};
  };
  WriteMbox(dir_ / "big.mbox", make_messages());
  // Nothing large is held here now: a forked child's resident size counts this process's pages.
  CliResult r = Run({"-u", "joe", "-s", dir_ / "big.mbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  if (!storemove::testing::kSanitizedBuild) {
    EXPECT_LT(PeakRssMiB(r), 64u) << "an import of a 96 MiB message";
  }
  {
    auto store = store::Store::Open(root_);
    const std::vector<std::string> stored = FolderMessages(*store, "joe", "INBOX");
    const std::vector<std::string> messages = make_messages();
    ASSERT_EQ(stored.size(), 3u);
    EXPECT_TRUE(stored == messages) << "sizes " << stored[1].size() << " / " << messages[1].size();
  }

  r = Run({"-u", "joe", "-s", dir_ / "big.mbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("3 already present"), std::string::npos) << r.out;
  auto store = store::Store::Open(root_);
  EXPECT_EQ(store->OpenFolder("joe", "INBOX")->Snapshot().messages.size(), 3u);
}

// The same through a pipe, for a message with an exact Content-Length (Sun's /var/mail gives
// every message one): a pipe cannot be read ahead and back, and the reader held the whole
// message to check where the count pointed (helper-54: 75 MiB for 40 MiB, 140 MiB for 80 MiB).
TEST_F(Import, ALargeMessageWithAContentLengthThroughAPipeIsStreamedToo) {
  Digest large_digest;
  {
    std::string body;
    while (body.size() < (96 << 20)) body += "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\n";
    const std::string large = "From: big@example.net\nContent-Length: " + std::to_string(body.size()) + "\n\n" + body;
    large_digest = DigestOf(large);
    WriteMbox(dir_ / "big.mbox", {Message("piped", 1), large, Message("piped", 2)});
  }
  CliResult r = RunThroughFifo(dir_ / "big.mbox", "joe");
  ASSERT_EQ(r.status, 0) << r.Describe();
  if (!storemove::testing::kSanitizedBuild) {
    EXPECT_LT(PeakRssMiB(r), 64u) << "an import of a 96 MiB message with a Content-Length, from a pipe";
  }
  auto store = store::Store::Open(root_);
  const auto snapshot = store->OpenFolder("joe", "INBOX")->Snapshot();
  ASSERT_EQ(snapshot.messages.size(), 3u);
  EXPECT_TRUE(snapshot.messages[1].digest == large_digest);
  EXPECT_EQ(FolderMessages(*store, "joe", "INBOX")[2], Message("piped", 2));
}

// A Content-Length that points past the next "From " line can only be checked on a pipe by
// reading on to where it points. Those bytes went into memory: a 96 MiB message of Sun's
// /var/mail whose body has unquoted "From " lines (the count is what keeps it whole), or one
// bogus count in a small message followed by 96 MiB of others, held all of it. They now go
// through a temporary file in $TMPDIR.
class ImportLookAhead : public Import {
 protected:
  void SetUp() override {
    Import::SetUp();
    fs::create_directories(spool_dir_);
    ::setenv("TMPDIR", spool_dir_.c_str(), 1);  // the child's temporary files, to see none are left
  }
  void TearDown() override {
    ::unsetenv("TMPDIR");
    EXPECT_TRUE(fs::is_empty(spool_dir_)) << "the look-ahead's file is unlinked";
  }
  std::string spool_dir_ = dir_ / "tmp";
};

TEST_F(ImportLookAhead, AnExactCountOverUnquotedFromLinesThroughAPipe) {
  // Sun's /var/mail: an exact count, and "From " lines in the body that nobody quoted.
  std::string large = "From: big@example.net\nSubject: unquoted\nContent-Length: ";
  {
    std::string body;
    for (size_t n = 0; body.size() < (96 << 20); ++n)
      body += n % 50000 == 3 ? "From the body, not quoted\n"
                             : "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\n";
    large += std::to_string(body.size()) + "\n\n" + body;
  }
  const Digest large_digest = DigestOf(large);
  // Message() ends in an unquoted "From " line too: Sun counted the small messages' bodies as well.
  const auto counted = [](std::string m) {
    const size_t body = m.find("\n\n") + 2;
    return m.insert(body - 1, "Content-Length: " + std::to_string(m.size() - body) + "\n");
  };
  {
    const std::string text = "From a@example.net Mon Jul  1 10:00:00 2024\n" + counted(Message("sun", 1)) + "\n" +
                             "From b@example.net Mon Jul  1 10:00:00 2024\n" + large + "\n" +
                             "From c@example.net Mon Jul  1 10:00:00 2024\n" + counted(Message("sun", 2)) + "\n";
    large.clear();
    large.shrink_to_fit();
    std::ofstream(dir_ / "sun.mbox") << text;
  }
  const CliResult r = RunThroughFifo(dir_ / "sun.mbox", "joe");
  ASSERT_EQ(r.status, 0) << r.Describe();
  if (!storemove::testing::kSanitizedBuild) {
    EXPECT_LT(PeakRssMiB(r), 64u) << "a 96 MiB message with unquoted From lines and a count, from a pipe";
  }
  auto store = store::Store::Open(root_);
  const auto snapshot = store->OpenFolder("joe", "INBOX")->Snapshot();
  ASSERT_EQ(snapshot.messages.size(), 3u) << "the count keeps the message whole";
  EXPECT_TRUE(snapshot.messages[1].digest == large_digest);
  const std::vector<std::string> stored = FolderMessages(*store, "joe", "INBOX");
  EXPECT_EQ(stored[0], counted(Message("sun", 1)));
  EXPECT_EQ(stored[2], counted(Message("sun", 2)));
}

TEST_F(ImportLookAhead, ABogusCountFollowedBy96MiBThroughAPipe) {
  // One bogus count (far past the end) in the first message, then 96 MiB of messages.
  const auto make_messages = [] {
    std::vector<std::string> messages{Message("bogus", 0)};
    messages[0].insert(messages[0].find("\n\n") + 1, "Content-Length: 123456789012\n");
    for (int n = 1; n <= 48; ++n) {
      std::string m = Message("bogus", n);
      m.reserve(2 << 20);
      while (m.size() < (2 << 20)) m += "bogus " + std::to_string(n) + " QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVph\n";
      messages.push_back(std::move(m));
    }
    return messages;
  };
  WriteMbox(dir_ / "bogus.mbox", make_messages());
  // Nothing large is held here now: a forked child's resident size counts this process's pages.
  const CliResult r = RunThroughFifo(dir_ / "bogus.mbox", "kim");
  ASSERT_EQ(r.status, 0) << r.Describe();
  if (!storemove::testing::kSanitizedBuild) {
    EXPECT_LT(PeakRssMiB(r), 64u) << "a bogus count followed by 96 MiB of messages, from a pipe";
  }
  auto store = store::Store::Open(root_);
  EXPECT_TRUE(FolderMessages(*store, "kim", "INBOX") == make_messages()) << "the count is ignored, every message kept";
}

TEST_F(Import, PipesAndLinksAreReadWholeAndCrOnlyFilesAreRefused) {
  const std::vector<std::string> messages = Messages("fifo", 5);
  WriteMbox(dir_ / "all.mbox", messages);
  const std::string bytes = ReadFile(dir_ / "all.mbox");
  const std::string fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::thread writer([&] {
    UniqueFd w(::open(fifo.c_str(), O_WRONLY | O_CLOEXEC));
    for (size_t at = 0; at < bytes.size(); at += 40) (void)!::write(w.get(), bytes.data() + at, std::min<size_t>(40, bytes.size() - at));
  });
  CliResult r = Run({"-u", "joe", "-s", fifo});
  writer.join();
  ASSERT_EQ(r.status, 0) << r.Describe();
  auto store = store::Store::Open(root_);
  EXPECT_EQ(FolderMessages(*store, "joe", "INBOX"), messages);
  store.reset();

  fs::create_symlink(dir_ / "all.mbox", dir_ / "link.mbox");
  r = Run({"-u", "kim", "-s", dir_ / "link.mbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(FolderMessages(*store::Store::Open(root_), "kim", "INBOX"), messages);

  std::string mac = "From a@example.net Mon Jul  1 10:00:00 2024\rSubject: one\r\rbody\r"
                    "From b@example.net Mon Jul  1 10:00:00 2024\rSubject: two\r\rbody\r";
  std::ofstream(dir_ / "mac.mbox") << mac;
  const std::string before = StoreState(root_);
  r = Run({"-u", "lea", "-s", dir_ / "mac.mbox"});
  EXPECT_EQ(r.status, kDataErr) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.err;
  EXPECT_NE(r.err.find("a \"From \" line with a CR inside"), std::string::npos) << r.err;
  EXPECT_EQ(StoreState(root_), before);

  // A pipe that is not an mbox makes nothing, not even the new user and its empty INBOX.
  const std::string diary = dir_ / "diary";
  ASSERT_EQ(::mkfifo(diary.c_str(), 0600), 0);
  std::thread diarist([&] {
    UniqueFd w(::open(diary.c_str(), O_WRONLY | O_CLOEXEC));
    (void)!::write(w.get(), "Dear diary,\nno From line here\n", 31);
  });
  r = Run({"-u", "ghost", "-s", diary});
  diarist.join();
  EXPECT_EQ(r.status, kDataErr) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.err;
  EXPECT_NE(r.err.find(diary + ": not an mbox"), std::string::npos) << r.err;
  EXPECT_EQ(StoreState(root_), before);
  EXPECT_FALSE(store::Store::Open(root_)->FindUser("ghost"));
}

// One message with CR-only line ends in the middle of an LF mbox: the file is still refused (it
// cannot be split safely), with one line that names the file and where that message is.
TEST_F(Import, ACrOnlyMessageInsideAnLfFileIsRefusedNamingItsPosition) {
  const std::string first = "From a@b Mon Jul  1 10:00:00 2024\nSubject: one\n\nbody\n\n";
  std::ofstream(dir_ / "mixed.mbox") << first << "From a@b Mon Jul  1 10:00:00 2024\rSubject: mac\r\rbody\r\n\n"
                                     << "From a@b Mon Jul  1 10:00:00 2024\nSubject: three\n\nbody\n\n";
  CliResult r = Run({"-u", "joe", "-s", dir_ / "mixed.mbox"});
  EXPECT_EQ(r.status, kDataErr) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find(dir_ / "mixed.mbox" + ": message 2, its \"From \" line at byte " + std::to_string(first.size())),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(store::Store::Open(root_)->FindFolder("joe", "INBOX"));

  // joe's record exists, his INBOX not yet: mail for him waits in the MTA's queue (75), never
  // bounces (66), until a rerun of the import finishes the job.
  const std::string mail = "Subject: meanwhile\n\nwaits\n";
  CliResult waiting = RunCli({"deliver", "--store", root_, "--user", "joe"}, mail);
  EXPECT_EQ(waiting.status, kTempFail) << waiting.Describe();
  EXPECT_TRUE(IsOneErrorLine(waiting)) << waiting.Describe();
  EXPECT_NE(waiting.err.find("user/joe/INBOX does not exist yet"), std::string::npos) << waiting.err;
  // Another missing folder is still a missing folder.
  EXPECT_EQ(RunCli({"deliver", "--store", root_, "--user", "joe", "-d", "Nope"}, mail).status, kNoInput);
  std::ofstream(dir_ / "mixed.mbox") << first;
  ASSERT_EQ(Run({"-u", "joe", "-s", dir_ / "mixed.mbox"}).status, 0);
  CliResult delivered = RunCli({"deliver", "--store", root_, "--user", "joe"}, mail);
  ASSERT_EQ(delivered.status, 0) << delivered.Describe();
  EXPECT_EQ(FolderMessages(*store::Store::Open(root_), "joe", "INBOX").size(), 2u);
}

// What "rerun finishes the job" means for a folder that exists: a message whose exact bytes the
// folder holds is not added again, as many times as the folder holds it.
TEST_F(Import, ARerunAddsOnlyWhatIsMissing) {
  const auto first = WriteMbox(dir_ / "one", Messages("m", 6));
  ASSERT_EQ(Run({"-u", "dora", "-s", dir_ / "one", "-d", "Box"}).status, 0);
  CliResult again = Run({"-u", "dora", "-s", dir_ / "one", "-d", "Box"});
  ASSERT_EQ(again.status, 0) << again.Describe();
  EXPECT_NE(again.out.find("imported 0 messages"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("6 already present"), std::string::npos) << again.out;
  EXPECT_EQ(FolderMessages(*store::Store::Open(root_), "dora", "Box"), first);

  // A file holding more (the first six and four new ones, one of them twice): only those are added.
  std::vector<std::string> more = first;
  more.push_back(Message("n", 1));
  more.push_back(Message("n", 2));
  more.push_back(Message("n", 2));
  more.push_back(Message("n", 3));
  WriteMbox(dir_ / "more", more);
  CliResult r = Run({"-u", "dora", "-s", dir_ / "more", "-d", "Box"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(FolderMessages(*store::Store::Open(root_), "dora", "Box"), more);

  // A message delivered meanwhile with the same bytes as one in the file counts as present.
  // --append-all appends everything (imsimport's behaviour).
  r = Run({"-u", "dora", "-s", dir_ / "one", "-d", "Box", "--append-all"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(FolderMessages(*store::Store::Open(root_), "dora", "Box").size(), more.size() + first.size());
}

// Same digest, different bytes: only the bytes decide (a digest match is a candidate, not a proof).
TEST_F(Import, PresenceIsProvenByBytesNotByDigest) {
  WriteMbox(dir_ / "one", Messages("m", 2));
  ASSERT_EQ(Run({"-u", "eve", "-s", dir_ / "one"}).status, 0);
  {
    // Replace the stored file of UID 1 with other bytes of the same length: its digest in
    // store.idx now names bytes the folder no longer holds.
    auto store = store::Store::Open(root_);
    auto f = store->OpenFolder("eve", "INBOX");
    const std::string path = f->MessagePath(1);
    std::string bytes = ReadMessage(*f, 1);
    bytes[bytes.size() - 2] ^= 1;
    UnlinkPath(path);
    std::ofstream(path, std::ios::binary) << bytes;
  }
  CliResult r = Run({"-u", "eve", "-s", dir_ / "one"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("imported 1 message "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 already present"), std::string::npos) << r.out;
}

// --- kill -9 mid-import, then a rerun -------------------------------------------------------

struct Expected {
  std::string user, folder;
  std::vector<std::string> before;    // what the folder held before the import (empty: new folder)
  std::vector<std::string> messages;  // the file
};

size_t CountMessageFiles(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const std::string name = it->path().filename().string();
    if (name.ends_with(".msg") || name.starts_with("tmp.")) ++n;
  }
  return n;
}

// Every visible folder is whole: for a new folder all of its file or nothing visible; for an
// existing one what it held plus a prefix of the file (committed batches), each message intact.
void ExpectConsistent(store::Store& store, const std::vector<Expected>& all, bool finished) {
  for (const Expected& e : all) {
    std::optional<store::FolderInfo> info = store.FindFolder(e.user, e.folder);
    if (!info) {
      EXPECT_FALSE(finished) << e.user << "/" << e.folder << " missing after the rerun";
      EXPECT_TRUE(e.before.empty()) << e.user << "/" << e.folder << " existed before";
      continue;
    }
    std::vector<std::string> got = FolderMessages(store, e.user, e.folder);
    std::vector<std::string> whole = e.before;
    whole.insert(whole.end(), e.messages.begin(), e.messages.end());
    if (finished || e.before.empty()) {
      EXPECT_EQ(got.size(), whole.size()) << e.user << "/" << e.folder << " visible but incomplete";
      EXPECT_TRUE(got == whole) << e.user << "/" << e.folder;
    } else {
      ASSERT_GE(got.size(), e.before.size()) << e.user << "/" << e.folder;
      ASSERT_LE(got.size(), whole.size()) << e.user << "/" << e.folder << " duplicates";
      EXPECT_TRUE(std::equal(got.begin(), got.end(), whole.begin())) << e.user << "/" << e.folder;
    }
  }
}

TEST_F(Import, KilledMidImportLeavesNothingHalfVisibleAndARerunCompletes) {
  // 4 users x 3 files of 300 messages: new folders (built unpublished) and, for two users, an
  // existing INBOX that gains 700 in batches of 256. The kills land at 15 % (user0's new
  // folders), 33 % (user1's existing INBOX after its first batch), 50 % (user1's new folders) and
  // 85 % (user3's existing INBOX) of the 4,200 messages.
  std::vector<Expected> all;
  std::string list;
  size_t total = 0;
  for (int u = 0; u < 4; ++u) {
    const std::string user = "user" + std::to_string(u);
    for (const std::string folder : {"INBOX", "Sent", "Archive/2020"}) {
      const bool existing = folder == "INBOX" && u % 2 == 1;
      Expected e{user, folder, {}, Messages(user + "-" + folder, existing ? 700 : 300, 40)};
      if (existing) e.before = Messages(user + "-old", 3);
      const std::string path = dir_ / ("in/" + user + "/" + std::to_string(all.size()));
      WriteMbox(path, e.messages);
      list += user + "\t" + folder + "\t" + path + "\n";
      total += e.messages.size();
      all.push_back(std::move(e));
    }
  }
  std::ofstream(dir_ / "list.tsv") << list;

  int killed_mid_run = 0, existing_partly_imported = 0;
  for (double share : {0.15, 0.33, 0.5, 0.85}) {
    SCOPED_TRACE("killed at " + std::to_string(share));
    fs::remove_all(root_);
    ASSERT_EQ(RunCli({"init", "--store", root_}).status, 0);
    for (const Expected& e : all) {
      if (e.before.empty()) continue;
      const std::string path = dir_ / ("old-" + e.user);
      WriteMbox(path, e.before);
      ASSERT_EQ(Run({"-u", e.user, "-s", path}).status, 0);
    }
    const std::string partition = root_ + "/partition";
    const size_t start = CountMessageFiles(partition);
    // At 33 % the import stops after the first batch of user1's existing INBOX (a test seam
    // in `import`) and is killed there: one kill surely lands between two of that folder's
    // batches, whatever the machine's load. The others wait for a share of the message files.
    int pair[2] = {-1, -1};
    if (share == 0.33) {
      ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
    }
    pid_t pid = storemove::testing::SpawnCli({"import", "--store", root_, "--list", dir_ / "list.tsv"}, dir_ / "out", pair[1]);
    int status = 0;
    bool exited = false;
    if (pair[0] >= 0) {
      ::close(pair[1]);
      char c;
      // Killed below while it waits for the answer (closing the socket first would let it go on).
      ASSERT_EQ(::read(pair[0], &c, 1), 1) << "the import never committed a batch of an existing folder";
    } else {
      // Polls the partition (no store lock taken) until the import has written that share.
      const size_t target = start + static_cast<size_t>(share * double(total));
      while (CountMessageFiles(partition) < target) {
        if (::waitpid(pid, &status, WNOHANG) == pid) {
          exited = true;
          break;
        }
        struct timespec ts {0, 200000};
        ::nanosleep(&ts, nullptr);
      }
    }
    if (!exited) {
      ::kill(pid, SIGKILL);
      ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    }
    if (pair[0] >= 0) ::close(pair[0]);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ++killed_mid_run;
    {
      auto store = store::Store::Open(root_);  // recovers the mboxlist as after any crash
      ExpectConsistent(*store, all, /*finished=*/!WIFSIGNALED(status));
      for (const Expected& e : all) {
        if (e.before.empty()) continue;
        // From store.idx, the commit point (the mailbox list's count follows it in its own
        // transaction, which a kill may have cut off).
        const size_t count = store->OpenFolder(e.user, e.folder)->Snapshot().messages.size();
        if (count > e.before.size() && count < e.before.size() + e.messages.size()) ++existing_partly_imported;
      }
    }
    CliResult rerun = Run({"--list", dir_ / "list.tsv"});
    ASSERT_EQ(rerun.status, 0) << rerun.Describe();
    auto store = store::Store::Open(root_);
    ExpectConsistent(*store, all, /*finished=*/true);
    for (int u = 0; u < 4; ++u) {
      uint64_t bytes = 0;
      for (const Expected& e : all)
        if (e.user == "user" + std::to_string(u)) {
          for (const auto& m : e.before) bytes += m.size();
          for (const auto& m : e.messages) bytes += m.size();
        }
      EXPECT_EQ(store->FindUser("user" + std::to_string(u))->quota_used, bytes);
    }
  }
  EXPECT_GE(killed_mid_run, 3) << "the kills must land while the import runs, or this test proves nothing";
  EXPECT_GE(existing_partly_imported, 1) << "no kill landed between two batches of an existing folder";
}

}  // namespace
}  // namespace storemove::tools
