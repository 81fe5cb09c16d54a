// Operator errors and damaged stores through the real binary: each ends with one readable line
// on stderr and a non-zero exit (never a signal), and leaves the store as it was.
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "store/admin.h"
#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::tools {
namespace {

using storemove::testing::CliResult;
using storemove::testing::IsOneErrorLine;
using storemove::testing::RunCli;
using storemove::testing::TempDir;
namespace fs = std::filesystem;

void FillWithRandomBytes(const std::string& path, size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = char(rng());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A damaged mboxlist database file: the store cannot be opened, and the CLI says which file,
// in one line, with a non-zero exit. Before, Db::Db destroyed itself and then read its
// destroyed members (a double free, or garbage in the message).
TEST(Operator, DamagedMboxlistDatabaseIsOneLineNamingTheFile) {
  for (const char* file : {"lright.db", "user.db", "folder.db"}) {
    for (uint32_t seed : {1u, 2u}) {
      TempDir tmp;
      const std::string root = tmp / "store";
      ASSERT_EQ(RunCli({"init", "--store", root}).status, 0);
      ASSERT_EQ(RunCli({"deliver", "--store", root, "--user", "joe", "--create"}, "Subject: x\r\n\r\nx\r\n").status, 0);
      const std::string path = root + "/mboxlist/" + file;
      FillWithRandomBytes(path, size_t(fs::file_size(path)), seed);
      CliResult r = RunCli({"list", "--store", root});
      EXPECT_NE(r.status, 0) << file << "\n" << r.Describe();
      EXPECT_LT(r.status, 128) << file << "\n" << r.Describe();
      EXPECT_TRUE(IsOneErrorLine(r)) << file << "\n" << r.Describe();
      EXPECT_NE(r.err.find(file), std::string::npos) << r.Describe();
    }
  }
}

// A database file that cannot be opened at all (here: a directory in its place).
TEST(Operator, UnopenableMboxlistDatabaseIsOneLine) {
  TempDir tmp;
  const std::string root = tmp / "store";
  ASSERT_EQ(RunCli({"init", "--store", root}).status, 0);
  fs::remove(root + "/mboxlist/subscr.db");
  fs::create_directory(root + "/mboxlist/subscr.db");
  CliResult r = RunCli({"list", "--store", root});
  EXPECT_NE(r.status, 0) << r.Describe();
  EXPECT_LT(r.status, 128) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("subscr.db"), std::string::npos) << r.Describe();
}

// init on a full filesystem: a 64 KiB tmpfs (root only; skipped otherwise).
TEST(Operator, InitOnAFullFilesystemIsOneLine) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tiny tmpfs";
  TempDir tmp;
  const std::string mnt = tmp / "tiny";
  fs::create_directory(mnt);
  if (std::system(("mount -t tmpfs -o size=64k tmpfs " + mnt + " 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here";
  CliResult r = RunCli({"init", "--store", mnt + "/store"});
  std::system(("umount " + mnt).c_str());
  EXPECT_NE(r.status, 0) << r.Describe();
  EXPECT_LT(r.status, 128) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
}

// A store with users ann and mike on partition primary and groups groupA (a-l) and empty
// (matching nobody), as an operator would have it.
size_t Occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Store::Open(root) in a child running as nobody: "opened", or "<Errc> <message>"; "setuid
// failed" when the child could not become nobody.
std::string OpenAsNobody(const std::string& root) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fds[0]);
    std::string what = "opened";
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) {
      what = "setuid failed";
    } else {
      try {
        store::Store::Open(root);
      } catch (const storemove::Error& e) {
        what = std::to_string(int(e.code())) + " " + e.what();
      }
    }
    (void)!::write(pipe_fds[1], what.data(), what.size());
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  std::string got;
  char buf[512];
  for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) got.append(buf, size_t(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return got;
}

class OperatorStore : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(RunCli({"init", "--store", root_}).status, 0);
    for (const char* user : {"ann", "mike"})
      ASSERT_EQ(RunCli({"deliver", "--store", root_, "--user", user, "--create"}, "Subject: x\r\n\r\nx\r\n").status, 0);
    fs::create_directories(root_ + "/config");
    std::ofstream(root_ + "/config/backup-groups.conf") << "groupA=[a-l].*\nempty=zzz.*\n";
  }
  // ann gets a Sent folder; the store is backed up and restored into `copy`.
  void CopyWithASentFolder(const std::string& copy) {
    const std::string stream = dir_ / "all.sm";
    ASSERT_EQ(RunCli({"deliver", "--store", root_, "--user", "ann", "--folder", "Sent", "--create"},
                     "Subject: sent\r\n\r\nsent\r\n").status, 0);
    ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream, "/"}).status, 0);
    ASSERT_EQ(RunCli({"init", "--store", copy}).status, 0);
    ASSERT_EQ(RunCli({"restore", "--store", copy, "-f", stream}).status, 0);
  }
  // Whether the source records `user` as verified (the guard of delete).
  bool Verified(const std::string& user) { return store::GetVerified(*store::Store::Open(root_), user).has_value(); }
  TempDir dir_;
  const std::string root_ = dir_ / "store";
};

// A backup name that selects nothing is an operator's typo: an error naming it, not an empty
// backup with exit 0; and no output file is left behind.
TEST_F(OperatorStore, BackupOfANameThatSelectsNothingFails) {
  const std::string out = dir_ / "out.sm";
  struct Case {
    std::string name, says;
  } cases[] = {
      {"/nopart", "no partition 'nopart'"},
      {"/primary/groupA/zed", "no user 'zed'"},
      {"/primary/groupA/mike", "'mike' is not in group 'groupA'"},
      {"/primary/empty", "no user of partition 'primary' is in group 'empty'"},
      {"user/nobody/INBOX", "no mailbox matches 'user/nobody/INBOX'"},
      {"user/ann/Nope", "no mailbox matches 'user/ann/Nope'"},
  };
  for (const Case& c : cases) {
    CliResult r = RunCli({"backup", "--store", root_, "-f", out, c.name});
    EXPECT_NE(r.status, 0) << c.name << "\n" << r.Describe();
    EXPECT_LT(r.status, 128) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find("'" + c.name + "'"), std::string::npos) << r.Describe();
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.Describe();
    EXPECT_FALSE(fs::exists(out)) << c.name;
  }
  // Names that select something still work, with one of them alongside a bad one refused.
  for (std::string name : {"/", "/primary", "/primary/groupA", "/primary/groupA/ann", "user/ann/INBOX", "user/*"}) {
    CliResult r = RunCli({"backup", "--store", root_, "-f", out, name});
    EXPECT_EQ(r.status, 0) << name << "\n" << r.Describe();
  }
  CliResult mixed = RunCli({"backup", "--store", root_, "-f", dir_ / "mixed.sm", "/primary/groupA", "user/zed/INBOX"});
  EXPECT_NE(mixed.status, 0) << mixed.Describe();
}

// The mailboxes a backup stream holds, from `restore -t --json`.
std::set<std::string> MailboxesIn(const std::string& stream) {
  CliResult r = RunCli({"restore", "-f", stream, "-t", "--json"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  std::set<std::string> out;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.value("type", "") == "mailbox") out.insert(j["mailbox"].get<std::string>());
  }
  return out;
}

// A backup name with '*' takes what `list -p` shows for it: user/* took only the INBOXes (every
// other folder missing from the backup, exit 0). user/NAME and user/% are the INBOXes.
TEST_F(OperatorStore, AWildcardBackupNameTakesEveryFolderItMatches) {
  for (const auto& [user, folder] : {std::pair{"ann", "Sent"}, std::pair{"ann", "Projects/2024"}, std::pair{"mike", "Drafts"}})
    ASSERT_EQ(RunCli({"deliver", "--store", root_, "--user", user, "--folder", folder, "--create"}, "Subject: y\r\n\r\ny\r\n")
                  .status,
              0);
  using Set = std::set<std::string>;
  const Set every = {"user/ann/INBOX", "user/ann/Projects/2024", "user/ann/Sent", "user/mike/Drafts", "user/mike/INBOX"};
  const std::vector<std::pair<std::string, Set>> cases = {
      {"user/*", every},
      {"user/a*", {"user/ann/INBOX", "user/ann/Projects/2024", "user/ann/Sent"}},
      {"user/ann/*", {"user/ann/INBOX", "user/ann/Projects/2024", "user/ann/Sent"}},
      {"user/ann/%", {"user/ann/INBOX", "user/ann/Sent"}},
      {"user/%", {"user/ann/INBOX", "user/mike/INBOX"}},
      {"user/mike", {"user/mike/INBOX"}},
  };
  for (const auto& [name, want] : cases) {
    const std::string out = dir_ / "wild.sm";
    CliResult r = RunCli({"backup", "--store", root_, "-f", out, name});
    ASSERT_EQ(r.status, 0) << name << ": " << r.Describe();
    EXPECT_EQ(MailboxesIn(out), want) << name;
    if (name.find('*') != std::string::npos) {
      CliResult list = RunCli({"list", "--store", root_, "-p", name, "--json"});
      Set listed;
      for (const nlohmann::json& row : nlohmann::json::parse(list.out)) listed.insert(row["mailbox"].get<std::string>());
      EXPECT_EQ(listed, want) << name << ": list -p and backup agree";
    }
  }
}

// A restore -m file that would merge two users, map one twice, or holds a bad id is refused
// before anything is restored, naming its file and line.
TEST_F(OperatorStore, ARestoreMapIsCheckedLineByLine) {
  const std::string stream = dir_ / "all.sm", dst = dir_ / "dst", map = dir_ / "map";
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream}).status, 0);
  ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
  struct Case {
    std::string map, says;
  } cases[] = {
      {"ann=carol\nmike=carol\n", map + " line 2: ann and mike would both be restored as carol"},
      {"ann=x\n# a comment\nann=y\n", map + " line 3: ann is mapped twice (to x and to y)"},
      {"ann=ok\nmike=../x\n", map + " line 2: "},
  };
  for (const Case& c : cases) {
    std::ofstream(map) << c.map;
    CliResult r = RunCli({"restore", "--store", dst, "-f", stream, "-m", map});
    EXPECT_EQ(r.status, 64) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.Describe();
  }
  // Onto a user the stream holds too: `-t -m` finds it without writing anything (helper-78: it
  // said nothing, exit 0).
  std::ofstream(map) << "ann=mike\n";
  CliResult toc = RunCli({"restore", "-t", "-f", stream, "-m", map});
  EXPECT_EQ(toc.status, 64) << toc.Describe();
  EXPECT_NE(toc.err.find("would both be restored as mike"), std::string::npos) << toc.Describe();
  // Restoring finds it when the second user comes, before any of it is written; the stream names
  // its users only as it goes, so the line says ann's mail is in mike already and how to undo it.
  CliResult r = RunCli({"restore", "--store", dst, "-f", stream, "-m", map});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  const std::string remedy = "ann's mail is restored as mike already, a user this restore created: remove it "
                             "(storemove delete --store " + dst + " --force mike) before running it again";
  EXPECT_NE(r.err.find(remedy), std::string::npos) << r.Describe();
  EXPECT_LE(store::Store::Open(dst)->FindFolder("mike", "INBOX")->count, 1u) << "merged";
  // The other way round (mike=ann: ann comes first, as herself) nothing of mike is written, and
  // the line says so, not that ann "existed before" (helper-80).
  {
    const std::string fresh = dir_ / "fresh";
    ASSERT_EQ(RunCli({"init", "--store", fresh}).status, 0);
    std::ofstream(map) << "mike=ann\n";
    CliResult other = RunCli({"restore", "--store", fresh, "-f", stream, "-m", map});
    EXPECT_EQ(other.status, 64) << other.Describe();
    EXPECT_NE(other.err.find("would both be restored as ann (restore -m); their mail would merge: map one of them "
                             "elsewhere; nothing of mike was written"),
              std::string::npos)
        << other.Describe();
    std::ofstream(map) << "ann=mike\n";
  }
  // Following the line, a corrected map restores both apart.
  ASSERT_EQ(RunCli({"delete", "--store", dst, "--force", "mike"}).status, 0);
  std::ofstream(map) << "ann=anna\n";
  CliResult again = RunCli({"restore", "--store", dst, "-f", stream, "-m", map});
  ASSERT_EQ(again.status, 0) << again.Describe();
  auto src = store::Store::Open(root_);
  auto out = store::Store::Open(dst);
  for (const auto& [from, to] : std::map<std::string, std::string>{{"ann", "anna"}, {"mike", "mike"}})
    EXPECT_EQ(out->FindFolder(to, "INBOX")->count, src->FindFolder(from, "INBOX")->count) << to;
  out.reset();
  src.reset();
  // A byte-order mark at the start (a Windows editor's) is no part of the first id; a line whose
  // old id the stream lacks (a typo) is said, -t too. Both left mike restored as mike, into the
  // other mike here, without a word (helper-103).
  std::ofstream(map) << "\xEF\xBB\xBFmike=mikey\r\njeo=jim\r\n";
  toc = RunCli({"restore", "-t", "-f", stream, "-m", map});
  EXPECT_EQ(toc.status, 0) << toc.Describe();
  EXPECT_NE(toc.out.find("user mikey"), std::string::npos) << toc.Describe();
  EXPECT_NE(toc.err.find("storemove: toc: note: -m jeo=jim: the stream has no user record or folder of jeo: that line "
                       "restored nobody as jim"),
            std::string::npos)
      << toc.Describe();
  EXPECT_EQ(toc.err.find("mike=mikey"), std::string::npos) << toc.Describe();
  const std::string bom = dir_ / "bom";
  ASSERT_EQ(RunCli({"init", "--store", bom}).status, 0);
  r = RunCli({"restore", "--store", bom, "-f", stream, "-m", map});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find("note: -m jeo=jim: the stream has no user record or folder of jeo"), std::string::npos) << r.Describe();
  EXPECT_TRUE(store::Store::Open(bom)->FindUser("mikey"));
  EXPECT_FALSE(store::Store::Open(bom)->FindUser("mike"));
}

// Deleting a migrated user (status moved:HOST) keeps the forwarding answer: a late delivery is
// deferred (75, the MTA re-resolves the host), not bounced as an unknown user (67).
TEST_F(OperatorStore, DeletingAMovedUserKeepsTheForwardingAnswer) {
  ASSERT_EQ(RunCli({"user", "--store", root_, "ann", "--status", "moved:new.example.com"}).status, 0);
  CliResult del = RunCli({"delete", "--store", root_, "--force", "ann"});
  ASSERT_EQ(del.status, 0) << del.Describe();
  // Said as it is: the record stays (it read "deleted user ann"; helper-72).
  EXPECT_NE(del.out.find("deleted the mailboxes of user ann; its record stays, marked moved:new.example.com, for "
                         "deliveries\n"),
            std::string::npos)
      << del.Describe();
  CliResult late = RunCli({"deliver", "--store", root_, "--user", "ann"}, "Subject: late\r\n\r\nx\r\n");
  EXPECT_EQ(late.status, 75) << late.Describe();
  EXPECT_NE(late.err.find("new.example.com"), std::string::npos) << late.Describe();
  auto store = store::Store::Open(root_);
  ASSERT_TRUE(store->FindUser("ann"));
  EXPECT_EQ(store->FindUser("ann")->status.ToString(), "moved:new.example.com");
  EXPECT_TRUE(store->ListFolders("ann").empty());
  // The record without mailboxes is in the backup, and a store rebuilt from it still defers her
  // mail: she was in no backup, and after a restore her late mail bounced (67) (helper-97). So
  // is a backup of her name alone (it held "0 users", exit 0).
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", dir_ / "full.sm"}).status, 0);
  CliResult one = RunCli({"backup", "--store", root_, "-f", dir_ / "ann.sm", "/primary/user/ann"});
  ASSERT_EQ(one.status, 0) << one.Describe();
  EXPECT_NE(one.err.find("backup: 1 user, 0 folders"), std::string::npos) << one.Describe();
  // Not in a manifest, which verify compares user by user where `verify --source` compares
  // mailboxes: a destination without her differed (helper-98).
  ASSERT_EQ(RunCli({"backup", "--store", root_, "--manifest", "-f", dir_ / "manifest.sm"}).status, 0);
  EXPECT_EQ(RunCli({"restore", "-t", "-f", dir_ / "manifest.sm"}).out.find("user ann"), std::string::npos);
  const std::string rebuilt = dir_ / "rebuilt";
  ASSERT_EQ(RunCli({"init", "--store", rebuilt}).status, 0);
  for (int run = 0; run < 2; ++run) {  // and its rerun
    CliResult restored = RunCli({"restore", "--store", rebuilt, "-f", dir_ / "full.sm"});
    ASSERT_EQ(restored.status, 0) << restored.Describe();
    EXPECT_EQ(restored.err.find("user ann: made here moved:new.example.com, as the stream says") != std::string::npos, run == 0)
        << restored.Describe();
  }
  EXPECT_EQ(RunCli({"deliver", "--store", rebuilt, "--user", "ann"}, "Subject: late\r\n\r\nx\r\n").status, 75);
  EXPECT_EQ(store::Store::Open(rebuilt)->FindUser("ann")->status.ToString(), "moved:new.example.com");
  // Many moved to one host: one note naming five and the count, not a line each (helper-119).
  for (int i = 1; i <= 6; ++i) {
    store->CreateUser("m" + std::to_string(i));
    store->SetUserStatus("m" + std::to_string(i), store::UserStatus{store::UserState::kMoved, "other.example.com"});
  }
  store->CreateUser("m7");  // the same host, spelt otherwise: the same note
  store->SetUserStatus("m7", store::UserStatus{store::UserState::kMoved, "Other.Example.COM."});
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", dir_ / "many.sm"}).status, 0);
  const std::string many = dir_ / "many";
  ASSERT_EQ(RunCli({"init", "--store", many}).status, 0);
  CliResult restored = RunCli({"restore", "--store", many, "-f", dir_ / "many.sm"});
  ASSERT_EQ(restored.status, 0) << restored.Describe();
  EXPECT_NE(restored.err.find("note: 7 users made here moved:other.example.com, as the stream says"), std::string::npos)
      << restored.Describe();
  EXPECT_NE(restored.err.find("m1, m2, m3, m4, m5 and 2 more\n"), std::string::npos) << restored.Describe();
  EXPECT_EQ(restored.err.find("user m6"), std::string::npos) << restored.Describe();
  EXPECT_EQ(store::Store::Open(many)->FindUser("m6")->status.ToString(), "moved:other.example.com");
  // An active user is deleted entirely, as before.
  ASSERT_EQ(RunCli({"delete", "--store", root_, "--force", "mike"}).status, 0);
  EXPECT_EQ(RunCli({"deliver", "--store", root_, "--user", "mike"}, "Subject: late\r\n\r\nx\r\n").status, 67);
}

// A delete killed after its commit (the record gone, §6.7) left the files of what it deleted,
// and its rerun said "no such user", exit 66: the files, the deleted mail, stayed for good
// (helper-96). The rerun removes them, exit 0. Made here by putting a copy of the directory back
// after a complete delete: the same state.
TEST_F(OperatorStore, ARerunOfADeleteKilledAfterItsCommitRemovesWhatItLeft) {
  const auto directory_of = [&](const std::string& name) {
    for (const auto& e : fs::recursive_directory_iterator(root_ + "/partition"))
      if (e.is_directory() && e.path().filename() == name) return e.path().string();
    return std::string();
  };
  const auto files_below = [](const std::string& path) {
    size_t n = 0;
    if (fs::exists(path))
      for (const auto& e : fs::recursive_directory_iterator(path)) n += e.is_regular_file();
    return n;
  };
  for (const char* folder : {"Work", "Work/Sub"})
    ASSERT_EQ(RunCli({"deliver", "--store", root_, "--user", "ann", "--folder", folder, "--create"},
                     "Subject: w\r\n\r\nw\r\n").status, 0);
  const std::string ann = directory_of("=ann");
  ASSERT_FALSE(ann.empty());
  ASSERT_GE(files_below(ann), 4u);  // two indexes and two messages at least
  // `path` as it was before the delete `args` ran.
  const auto left_behind = [&](const std::string& path, const std::vector<std::string>& args) {
    fs::copy(path, dir_ / "kept", fs::copy_options::recursive);
    CliResult r = RunCli(args);
    fs::remove_all(path);  // what the delete left of it (a moved user's delivery gate)
    fs::create_directories(fs::path(path).parent_path());
    fs::rename(dir_ / "kept", path);
    return r;
  };

  // One mailbox, whose sub-folder stays recorded (helper-99: it kept the leftovers for good).
  const std::string work = directory_of("+Work");
  ASSERT_FALSE(work.empty());
  const size_t inbox_files = files_below(ann) - files_below(work), sub_files = files_below(work + "/+Sub");
  ASSERT_EQ(left_behind(work, {"delete", "--store", root_, "user/ann/Work"}).status, 0);
  CliResult r = RunCli({"delete", "--store", root_, "user/ann/Work"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("deleted user/ann/Work: its record was gone already (an interrupted delete); removed the "
                       "files of 1 folder it left"),
            std::string::npos)
      << r.Describe();
  EXPECT_EQ(files_below(work), sub_files) << "the sub-folder's files stay";
  EXPECT_EQ(store::Store::Open(root_)->OpenFolder("ann", "Work/Sub")->Snapshot().messages.size(), 1u);
  EXPECT_EQ(RunCli({"delete", "--store", root_, "user/ann/Work"}).status, 66);  // nothing left: no such mailbox
  EXPECT_EQ(files_below(ann), inbox_files + sub_files) << "the INBOX's files stay";

  // The whole user.
  ASSERT_EQ(RunCli({"deliver", "--store", root_, "--user", "ann", "--folder", "Work", "--create"},
                   "Subject: w\r\n\r\nw\r\n").status, 0);
  ASSERT_EQ(left_behind(ann, {"delete", "--store", root_, "--force", "ann"}).status, 0);
  ASSERT_GE(files_below(ann), 4u);
  r = RunCli({"delete", "--store", root_, "--force", "ann"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("deleted user ann: its record was gone already (an interrupted delete); removed the files of "
                       "3 folders it left"),
            std::string::npos)
      << r.Describe();
  EXPECT_FALSE(fs::exists(ann));
  EXPECT_EQ(RunCli({"delete", "--store", root_, "--force", "ann"}).status, 66);

  // A moved user keeps its record without mailboxes: its rerun is a delete of no mailbox, which
  // takes what the first run left. Without --force too: the first run removed its verification,
  // and the guard refused the rerun with 75 for ever (helper-98).
  ASSERT_EQ(RunCli({"user", "--store", root_, "mike", "--status", "moved:new.example.com"}).status, 0);
  const std::string mike = directory_of("=mike");
  ASSERT_EQ(left_behind(mike, {"delete", "--store", root_, "--force", "mike"}).status, 0);
  ASSERT_GE(files_below(mike), 2u);
  r = RunCli({"delete", "--store", root_, "mike"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(files_below(mike), 0u);
  EXPECT_EQ(store::Store::Open(root_)->FindUser("mike")->status.ToString(), "moved:new.example.com");
  EXPECT_EQ(RunCli({"deliver", "--store", root_, "--user", "mike"}, "Subject: late\r\n\r\nx\r\n").status, 75);
}

// restore -n of two stream users mapped onto one (-m ann=zed, then -m mike=zed): the second's
// folders were taken for a rerun of the first's, the dated INBOX and a Sent made under its own
// name, and merged into them, exit 0 (helper-105). A folder -n made records the stream's mailbox.
TEST_F(OperatorStore, RestoreBesideKeepsTwoMappedUsersApart) {
  for (const char* user : {"ann", "mike"})
    ASSERT_EQ(RunCli({"deliver", "--store", root_, "--user", user, "--folder", "Sent", "--create"},
                     std::string("Subject: sent by ") + user + "\r\n\r\nx\r\n").status, 0);
  const std::string stream = dir_ / "s.sm", dst = dir_ / "dst", map = dir_ / "map";
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream}).status, 0);
  ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
  ASSERT_EQ(RunCli({"deliver", "--store", dst, "--user", "zed", "--create"}, "Subject: zed's\r\n\r\nx\r\n").status, 0);
  for (const char* user : {"ann", "mike"})
    for (int run = 0; run < 2; ++run) {  // each run twice: its rerun adds nothing
      std::ofstream(map) << user << "=zed\n";
      CliResult r = RunCli({"restore", "--store", dst, "-f", stream, "-n", "-m", map, std::string("user/") + user + "/*"});
      ASSERT_EQ(r.status, 0) << r.Describe();
    }
  auto out = store::Store::Open(dst);
  std::map<std::string, std::string> subject_of;  // folder -> its one message's subject
  for (const store::FolderInfo& f : out->ListFolders("zed")) {
    auto folder = out->OpenFolder("zed", f.folder);
    const store::FolderSnapshot snap = folder->Snapshot();
    ASSERT_EQ(snap.messages.size(), 1u) << f.folder;
    const std::string bytes = storemove::ReadFile(folder->MessagePath(snap.messages.at(0).uid));
    subject_of[f.folder] = bytes.substr(9, bytes.find('\r') - 9);
  }
  std::map<std::string, std::string> by_subject;
  for (const auto& [folder, subject] : subject_of) by_subject[subject] = folder;
  EXPECT_EQ(subject_of.size(), 5u);  // zed's INBOX; ann's INBOX and Sent; mike's INBOX and Sent
  EXPECT_EQ(subject_of["INBOX"], "zed's");
  EXPECT_EQ(by_subject["sent by ann"], "Sent");
  EXPECT_TRUE(by_subject["sent by mike"].starts_with("Sent.")) << by_subject["sent by mike"];
}

// A delete's commit is done when its file removal fails (a directory planted in a bucket): the
// line said nothing of the deletion, no "deleted" line came (helper-98). It says the user is
// deleted and that a rerun removes the rest, which it does once the obstacle is gone.
TEST_F(OperatorStore, ADeleteWhoseFilesCannotAllGoSaysItIsDeletedAndARerunRemovesThem) {
  const std::string message = [&] {
    auto store = store::Store::Open(root_);
    std::unique_ptr<store::Folder> inbox = store->OpenFolder("ann", "INBOX");
    return inbox->MessagePath(inbox->Snapshot().messages.at(0).uid);
  }();
  const fs::path planted = fs::path(message).parent_path() / "planted";
  fs::create_directory(planted);
  CliResult r = RunCli({"delete", "--store", root_, "--force", "ann"});
  EXPECT_EQ(r.status, 74) << r.Describe();  // deleted; files left (EX_IOERR)
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("user ann is deleted from the mailbox list, but not all of its files could be removed: "),
            std::string::npos)
      << r.Describe();
  EXPECT_NE(r.err.find("storemove delete of it again removes them"), std::string::npos) << r.Describe();
  EXPECT_FALSE(store::Store::Open(root_)->FindUser("ann"));
  // Its rerun with the obstacle still there says whose files these are (helper-105: the bare
  // unlink error).
  r = RunCli({"delete", "--store", root_, "--force", "ann"});
  EXPECT_EQ(r.status, 74) << r.Describe();
  EXPECT_NE(r.err.find("user ann is deleted from the mailbox list already (an interrupted delete), but the files it "
                       "left could not all be removed: "),
            std::string::npos)
      << r.Describe();
  fs::remove(planted);
  r = RunCli({"delete", "--store", root_, "--force", "ann"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("deleted user ann: its record was gone already"), std::string::npos) << r.Describe();
  EXPECT_FALSE(fs::exists(fs::path(message).parent_path()));
  // One mailbox likewise.
  ASSERT_EQ(RunCli({"deliver", "--store", root_, "--user", "mike", "--folder", "Work", "--create"},
                   "Subject: w\r\n\r\nw\r\n").status, 0);
  const std::string work = store::Store::Open(root_)->OpenFolder("mike", "Work")->MessagePath(1);
  fs::create_directory(fs::path(work).parent_path() / "planted");
  r = RunCli({"delete", "--store", root_, "user/mike/Work"});
  EXPECT_EQ(r.status, 74) << r.Describe();  // deleted; files left (EX_IOERR)
  EXPECT_NE(r.err.find("user/mike/Work is deleted from the mailbox list"), std::string::npos) << r.Describe();
  fs::remove(fs::path(work).parent_path() / "planted");
  r = RunCli({"delete", "--store", root_, "user/mike/Work"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_FALSE(fs::exists(work));
}

// A user's status travels in the stream, but a held source user must not arrive held at the
// destination: restore makes users active unless --keep-status. Except one moved to another
// host: made active it took that host's deliveries, and the mail was split (helper-97).
TEST_F(OperatorStore, RestoreMakesUsersActiveUnlessAskedToKeepTheStatusOrMoved) {
  ASSERT_EQ(RunCli({"user", "--store", root_, "ann", "--status", "hold"}).status, 0);
  ASSERT_EQ(RunCli({"user", "--store", root_, "mike", "--status", "moved:x.example.com"}).status, 0);
  const std::string stream = dir_ / "s.sm";
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream}).status, 0);
  for (bool keep : {false, true}) {
    TempDir d;
    const std::string dst = d / "dst";
    ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
    std::vector<std::string> args = {"restore", "--store", dst, "-f", stream};
    if (keep) args.push_back("--keep-status");
    CliResult r = RunCli(args);
    ASSERT_EQ(r.status, 0) << r.Describe();
    auto store = store::Store::Open(dst);
    EXPECT_EQ(store->FindUser("ann")->status.ToString(), keep ? "hold" : "active");
    EXPECT_EQ(store->FindUser("mike")->status.ToString(), "moved:x.example.com");
    // Its rerun: mike is moved here because the stream says so, not refused as moved.
    r = RunCli(args);
    EXPECT_EQ(r.status, 0) << r.Describe();
    if (!keep) continue;
    // Moved to another host than the stream says: not this stream's doing, refused (helper-64).
    ASSERT_EQ(RunCli({"user", "--store", dst, "mike", "--status", "moved:other.example.com"}).status, 0);
    r = RunCli(args);
    EXPECT_EQ(r.status, 64) << r.Describe();
    EXPECT_NE(r.err.find("user mike is marked moved to other.example.com here"), std::string::npos) << r.Describe();
    EXPECT_EQ(store->FindUser("mike")->status.ToString(), "moved:other.example.com");
  }
}

// Without --keep-status, a user the stream says moved away (helper-98, -99, -100): made here
// moved, or left so when moved here to that host (a rerun); refused only when moved elsewhere
// here and the stream has mail of it (a user without mailboxes has none: nothing is split). Its
// folders come as any user's. A user here active keeps its status and quota (the bare record of a
// deleted user has no quota left). Names that select only such a user select its record.
TEST_F(OperatorStore, AUserTheStreamSaysMovedAwayStaysMovedAndABareOneRefusesNothing) {
  ASSERT_EQ(RunCli({"user", "--store", root_, "mike", "--status", "moved:new.example.com"}).status, 0);
  const std::string with_folders = dir_ / "with-folders.sm", bare = dir_ / "bare.sm";
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", with_folders}).status, 0);
  ASSERT_EQ(RunCli({"delete", "--store", root_, "--force", "mike"}).status, 0);
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", bare}).status, 0);
  // Selected by name, as a file of user ids, and as every folder of it: its record (it was 66).
  std::ofstream(dir_ / "users") << "ann\nmike\n";
  CliResult r = RunCli({"backup", "--store", root_, "-u", dir_ / "users", "-f", dir_ / "u.sm"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(RunCli({"restore", "-t", "-f", dir_ / "u.sm"}).out.find("user mike moved:new.example.com"), std::string::npos);
  r = RunCli({"backup", "--store", root_, "-f", dir_ / "m.sm", "user/mike/*"});
  ASSERT_EQ(r.status, 0) << r.Describe();

  // A store where mike has one message of its own.
  const auto store_with_mike = [&](const std::string& name) {
    const std::string root = dir_ / name;
    EXPECT_EQ(RunCli({"init", "--store", root}).status, 0);
    EXPECT_EQ(RunCli({"deliver", "--store", root, "--user", "mike", "--create"}, "Subject: local\r\n\r\nl\r\n").status, 0);
    return root;
  };

  // Moved here already, to that host: the stream's state of it, a rerun's.
  const std::string dst = store_with_mike("dst");
  ASSERT_EQ(RunCli({"user", "--store", dst, "mike", "--status", "moved:new.example.com"}).status, 0);
  r = RunCli({"restore", "--store", dst, "-f", with_folders});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(store::Store::Open(dst)->FindUser("mike")->status.ToString(), "moved:new.example.com");
  // Moved elsewhere here: the stream's mail of it is refused (64), its bare record is not (it was
  // 64 on every rerun, helper-99).
  ASSERT_EQ(RunCli({"user", "--store", dst, "mike", "--status", "moved:other.example.com"}).status, 0);
  r = RunCli({"restore", "--store", dst, "-f", bare});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(store::Store::Open(dst)->FindUser("mike")->status.ToString(), "moved:other.example.com");
  r = RunCli({"restore", "--store", dst, "-f", with_folders});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_NE(r.err.find("user mike is marked moved to other.example.com here"), std::string::npos) << r.Describe();

  // Not here: made moved, without folders; restore NAMES of it alone restores its record (it was
  // 66, "nothing restored", after making the user).
  const std::string fresh = dir_ / "fresh";
  ASSERT_EQ(RunCli({"init", "--store", fresh}).status, 0);
  r = RunCli({"restore", "--store", fresh, "-f", bare, "user/mike/*"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(store::Store::Open(fresh)->FindUser("mike")->status.ToString(), "moved:new.example.com");
  r = RunCli({"restore", "--store", fresh, "-f", with_folders});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(store::Store::Open(fresh)->ListFolders("mike").size(), 1u);
  EXPECT_EQ(store::Store::Open(fresh)->FindUser("mike")->status.ToString(), "moved:new.example.com");

  // Active here (the host it moved to, say): stays active, keeps its quota, gets its folders.
  const std::string live = store_with_mike("live");
  ASSERT_EQ(RunCli({"user", "--store", live, "mike", "--quota", "5242880"}).status, 0);
  r = RunCli({"restore", "--store", live, "-f", bare});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find("note: user mike: the stream says moved:new.example.com; here it is active and stays so"),
            std::string::npos)
      << r.Describe();
  auto store = store::Store::Open(live);
  EXPECT_EQ(store->FindUser("mike")->status.ToString(), "active");
  EXPECT_EQ(store->FindUser("mike")->quota_limit, 5242880u);
}

// A chain whose full backup has a user moved away, and whose later stream has it back (helper-101:
// the rebuilt store refused the later stream, 64, --keep-status too). A moved host's name is one
// whatever its case.
TEST_F(OperatorStore, AChainWhoseUserCameBackRestoresItsLaterMail) {
  ASSERT_EQ(RunCli({"user", "--store", root_, "mike", "--status", "moved:hostB"}).status, 0);
  CliResult r = RunCli({"backup", "--store", root_, "-f", dir_ / "full.sm", "--json"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  const std::string since = nlohmann::json::parse(r.err).at("next_backup_since");
  ASSERT_EQ(RunCli({"user", "--store", root_, "mike", "--status", "active", "--include-moved"}).status, 0);
  ASSERT_EQ(RunCli({"deliver", "--store", root_, "--user", "mike"}, "Subject: back\r\n\r\nb\r\n").status, 0);
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-d", since, "-f", dir_ / "dated.sm"}).status, 0);
  const std::string dst = dir_ / "dst";
  ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
  ASSERT_EQ(RunCli({"restore", "--store", dst, "-f", dir_ / "full.sm"}).status, 0);
  EXPECT_EQ(store::Store::Open(dst)->FindUser("mike")->status.ToString(), "moved:hostB");
  r = RunCli({"restore", "--store", dst, "-f", dir_ / "dated.sm"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find("note: user mike: moved:hostB here, the stream says active; left so"), std::string::npos)
      << r.Describe();
  EXPECT_EQ(store::Store::Open(dst)->OpenFolder("mike", "INBOX")->Snapshot().messages.size(), 2u);
  r = RunCli({"restore", "--store", dst, "-f", dir_ / "dated.sm", "--keep-status"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(store::Store::Open(dst)->FindUser("mike")->status.ToString(), "active");
  // moved:HOSTB here is the stream's moved:hostB: a rerun's, not another host's.
  ASSERT_EQ(RunCli({"user", "--store", dst, "mike", "--status", "moved:HOSTB"}).status, 0);
  r = RunCli({"restore", "--store", dst, "-f", dir_ / "full.sm"});
  EXPECT_EQ(r.status, 0) << r.Describe();
}

// A user marked moved here lives on another host: a restore into it would split its mail between
// the two (and bring back what --delete-source removed while it still forwards). Refused as
// import and moveuser refuse it, before anything of that user is written; with -c y the user is
// skipped and the others restored.
TEST_F(OperatorStore, RestoreRefusesAUserMarkedMovedHere) {
  const std::string stream = dir_ / "s.sm";
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream}).status, 0);
  const std::string dst = dir_ / "dst";
  ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
  ASSERT_EQ(RunCli({"deliver", "--store", dst, "--user", "mike", "--create"}, "Subject: x\r\n\r\nx\r\n").status, 0);
  ASSERT_EQ(RunCli({"user", "--store", dst, "mike", "--status", "moved:new.example.com"}).status, 0);
  ASSERT_EQ(RunCli({"delete", "--store", dst, "--force", "mike"}).status, 0);  // as --delete-source leaves it
  CliResult r = RunCli({"restore", "--store", dst, "-f", stream});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("user mike is marked moved to new.example.com here: its mail lives there, and a restore would "
                       "split it"),
            std::string::npos)
      << r.Describe();
  {
    auto store = store::Store::Open(dst);
    EXPECT_TRUE(store->ListFolders("mike").empty());
    EXPECT_EQ(store->FindUser("mike")->status.ToString(), "moved:new.example.com");
  }
  // -c y skips it: exit 64 as without (it was 65, "corrupt input", for an intact stream), and
  // one line for the user, not one more per folder (helper-72).
  r = RunCli({"restore", "--store", dst, "-f", stream, "-c", "y"});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_NE(r.err.find("user mike is marked moved"), std::string::npos) << r.Describe();
  EXPECT_NE(r.err.find("; skipped, with its folders"), std::string::npos) << r.Describe();
  EXPECT_EQ(r.err.find("folder skipped"), std::string::npos) << r.Describe();
  {
    auto store = store::Store::Open(dst);
    EXPECT_TRUE(store->ListFolders("mike").empty());
    EXPECT_FALSE(store->ListFolders("ann").empty());
  }
  // Brought back by hand first, it is restored.
  ASSERT_EQ(RunCli({"user", "--store", dst, "mike", "--status", "active", "--include-moved"}).status, 0);
  r = RunCli({"restore", "--store", dst, "-f", stream});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_FALSE(store::Store::Open(dst)->ListFolders("mike").empty());
}

// A stream sends each content once: mike's copies of messages ann got first are links to ann's.
// With ann refused (moved here) and skipped by -c y, mike's copies were lost too ("link to
// content_id N, which this restore did not restore"), and no rerun could bring them while ann
// stays moved (helper-78). The skipped bodies are kept for such links: mike is whole, one line
// says ann was skipped, nothing else.
TEST_F(OperatorStore, ASkippedUsersMessagesStillServeTheOtherUsersCopies) {
  std::string large = "Subject: large\r\n\r\n";
  for (int i = 0; large.size() < 700 * 1024; ++i) large += "line " + std::to_string(i) + " of a long message\r\n";
  for (const std::string& message : {std::string("Subject: to both\r\n\r\nthe same bytes\r\n"), large})
    for (const char* user : {"ann", "mike"})
      ASSERT_EQ(RunCli({"deliver", "--store", root_, "--user", user}, message).status, 0);
  const std::string stream = dir_ / "s.sm";
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream}).status, 0);
  CliResult toc = RunCli({"restore", "-t", "-f", stream});
  ASSERT_EQ(toc.status, 0) << toc.Describe();
  ASSERT_LT(toc.out.find("user ann"), toc.out.find("user mike")) << toc.out;
  ASSERT_EQ(Occurrences(toc.out.substr(toc.out.find("user mike")), " link "), 3u) << toc.out;  // all three of mike's are copies
  const std::string dst = dir_ / "dst";
  ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
  ASSERT_EQ(RunCli({"deliver", "--store", dst, "--user", "ann", "--create"}, "Subject: x\r\n\r\nx\r\n").status, 0);
  ASSERT_EQ(RunCli({"user", "--store", dst, "ann", "--status", "moved:new.example.com"}).status, 0);
  CliResult r = RunCli({"restore", "--store", dst, "-f", stream, "-c", "y"});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_EQ(Occurrences(r.err, "storemove: "), 1u) << r.Describe();
  EXPECT_NE(r.err.find("user ann is marked moved"), std::string::npos) << r.Describe();
  EXPECT_EQ(r.err.find("not restored"), std::string::npos) << r.Describe();
  auto src = store::Store::Open(root_);
  auto out = store::Store::Open(dst);
  std::vector<std::string> want, got;
  for (const store::MessageMeta& m : src->OpenFolder("mike", "INBOX")->Snapshot().messages) want.push_back(m.digest.Hex());
  for (const store::MessageMeta& m : out->OpenFolder("mike", "INBOX")->Snapshot().messages) got.push_back(m.digest.Hex());
  EXPECT_EQ(got, want);
  EXPECT_EQ(want.size(), 3u);
  for (const store::MessageMeta& m : out->OpenFolder("mike", "INBOX")->Snapshot().messages)
    EXPECT_EQ(storemove::ReadFile(out->OpenFolder("mike", "INBOX")->MessagePath(m.uid)).size(), m.size);
  CliResult verify = RunCli({"verify", "--store", dst, "--source", root_, "user/mike/*"});
  EXPECT_EQ(verify.status, 0) << verify.Describe();
}

// restore NAMES (imsrestore's [path]): "bring back joe's folder from last night's backup" took
// restoring the whole stream (helper-78). Names select as backup's do, by the stream's names;
// the other folders are skipped, their bodies kept for the links of the selected ones (mike's
// INBOX message is a link to ann's, the same bytes). INBOX in any case.
TEST_F(OperatorStore, RestoreNamesSelectUsersAndMailboxes) {
  ASSERT_EQ(RunCli({"deliver", "--store", root_, "--user", "ann", "--folder", "Sent", "--create"},
                   "Subject: sent\r\n\r\nsent\r\n")
                .status,
            0);
  const std::string stream = dir_ / "s.sm";
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream}).status, 0);
  auto digests = [](const std::string& root, const std::string& user, const std::string& folder) {
    std::vector<std::string> out;
    for (const store::MessageMeta& m : store::Store::Open(root)->OpenFolder(user, folder)->Snapshot().messages)
      out.push_back(m.digest.Hex());
    return out;
  };
  const std::string dst = dir_ / "dst";
  ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
  CliResult r = RunCli({"restore", "--store", dst, "-f", stream, "user/mike/inbox"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find("1 mailbox of them selected by name"), std::string::npos) << r.Describe();
  {
    auto out = store::Store::Open(dst);
    EXPECT_FALSE(out->FindUser("ann"));
    ASSERT_EQ(out->ListFolders("mike").size(), 1u);
  }
  EXPECT_EQ(digests(dst, "mike", "INBOX"), digests(root_, "mike", "INBOX"));
  // user/ann is her INBOX, where `delete user/ann` is all of her: the folder not restored is said
  // (helper-97).
  const std::string inbox_only = dir_ / "inbox-only";
  ASSERT_EQ(RunCli({"init", "--store", inbox_only}).status, 0);
  r = RunCli({"restore", "--store", inbox_only, "-f", stream, "user/ann"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find("storemove: restore: note: user ann: the names select its INBOX, not 1 other folder of it in "
                       "the stream (user/ann is the INBOX; user/ann/* names every folder)"),
            std::string::npos)
      << r.Describe();
  EXPECT_EQ(store::Store::Open(inbox_only)->ListFolders("ann").size(), 1u);
  // Every INBOX, asked for as such: no note (helper-98: one a user).
  r = RunCli({"restore", "--store", inbox_only, "-f", stream, "user/*/INBOX"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.err.find("note:"), std::string::npos) << r.Describe();
  // A name the stream does not have: said, nothing written.
  r = RunCli({"restore", "--store", dst, "-f", stream, "user/nobody/INBOX"});
  EXPECT_EQ(r.status, 66) << r.Describe();
  EXPECT_NE(r.err.find("'user/nobody/INBOX' selects no mailbox of the stream"), std::string::npos) << r.Describe();
  EXPECT_FALSE(store::Store::Open(dst)->FindUser("nobody"));
  // A folder of a stream user that the stream does not have (a typo): nobody made either; an
  // empty active user was left, taking deliveries (helper-100). Its folder, asked for, makes it.
  r = RunCli({"restore", "--store", dst, "-f", stream, "user/ann/Snet"});
  EXPECT_EQ(r.status, 66) << r.Describe();
  EXPECT_FALSE(store::Store::Open(dst)->FindUser("ann"));
  r = RunCli({"restore", "--store", dst, "-f", stream, "user/ann/Sent"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(digests(dst, "ann", "Sent"), digests(root_, "ann", "Sent"));
  EXPECT_EQ(store::Store::Open(dst)->ListFolders("ann").size(), 1u);
  // A typo among several names was silent, exit 0 (helper-105): said, 66, the others restored.
  r = RunCli({"restore", "--store", dst, "-f", stream, "user/ann/Sent", "user/ann/Drafs"});
  EXPECT_EQ(r.status, 66) << r.Describe();
  EXPECT_NE(r.err.find("'user/ann/Drafs' selects no mailbox of the stream (names as the stream has them, before -m); "
                       "the mailboxes the other names select are restored"),
            std::string::npos)
      << r.Describe();
  EXPECT_EQ(r.err.find("user/ann/Sent'"), std::string::npos) << r.Describe();
  // A group of the store's groups file (groupA=[a-l].*): ann, both folders.
  r = RunCli({"restore", "--store", dst, "-f", stream, "--groups", root_ + "/config/backup-groups.conf", "/primary/groupA"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(digests(dst, "ann", "INBOX"), digests(root_, "ann", "INBOX"));
  EXPECT_EQ(digests(dst, "ann", "Sent"), digests(root_, "ann", "Sent"));
  // backup takes INBOX in any case too.
  EXPECT_EQ(RunCli({"backup", "--store", root_, "-f", dir_ / "inbox.sm", "user/ann/inbox"}).status, 0);
}

// The Sun chapter's step 1 puts user names in files for -u; storemove took only its own names
// there ("invalid backup name '20107372'", helper-78). A bare user id is all of its mailboxes.
TEST_F(OperatorStore, BackupNamesFileTakesBareUserIds) {
  ASSERT_EQ(RunCli({"deliver", "--store", root_, "--user", "ann", "--folder", "Sent", "--create"},
                   "Subject: sent\r\n\r\nsent\r\n")
                .status,
            0);
  const std::string list = dir_ / "users", stream = dir_ / "u.sm";
  // Blanks around an id go, as in `user --users-file` (helper-161: `bob  ` was refused here).
  std::ofstream(list) << "# Sun-style: one user name per line\r\n  ann \t\r\n   \n";
  CliResult r = RunCli({"backup", "--store", root_, "-u", list, "-f", stream});
  ASSERT_EQ(r.status, 0) << r.Describe();
  CliResult toc = RunCli({"restore", "-t", "-f", stream});
  ASSERT_EQ(toc.status, 0) << toc.Describe();
  EXPECT_NE(toc.out.find("mailbox user/ann/INBOX "), std::string::npos) << toc.out;
  EXPECT_NE(toc.out.find("mailbox user/ann/Sent "), std::string::npos) << toc.out;
  EXPECT_EQ(toc.out.find("user mike"), std::string::npos) << toc.out;
  std::ofstream(list) << "../x\n";
  r = RunCli({"backup", "--store", root_, "-u", list, "-f", stream});
  EXPECT_EQ(r.status, 64) << r.Describe();
  // A file of nothing but blanks and comments selects nothing, not the whole store (helper-163).
  for (const char* empty : {"", "   \n  # just a comment\n", "\xEF\xBB\xBF\r\n"}) {
    std::ofstream(list) << empty;
    r = RunCli({"backup", "--store", root_, "-u", list, "-f", stream});
    EXPECT_EQ(r.status, 64) << r.Describe();
    EXPECT_NE(r.err.find("-u " + list + ": no names or user ids in it"), std::string::npos) << r.Describe();
  }
  std::ofstream(list) << "\xEF\xBB\xBF  ann\r\n";  // a byte-order mark, as some editors save
  EXPECT_EQ(RunCli({"backup", "--store", root_, "-u", list, "-f", stream}).status, 0);
  std::ofstream(list) << "ann\nan n\n";
  r = RunCli({"backup", "--store", root_, "-u", list, "-f", stream});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_NE(r.err.find("-u " + list + " line 2: invalid user id 'an n'"), std::string::npos) << r.Describe();
  // A name that selects nothing says its line (helper-97), over the network as to a file.
  std::ofstream(list) << "ann\n# a comment\nnosuchuser\n";
  for (const std::vector<std::string>& output : {std::vector<std::string>{"-f", stream},
                                                 std::vector<std::string>{"--to", "127.0.0.1:1"}}) {
    std::vector<std::string> args = {"backup", "--store", root_, "-u", list};
    args.insert(args.end(), output.begin(), output.end());
    r = RunCli(args);
    EXPECT_EQ(r.status, 66) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find("'user/nosuchuser/*' selects nothing: no mailbox matches 'user/nosuchuser/*' (-u " + list +
                         " line 3)"),
              std::string::npos)
        << r.Describe();
  }
  // restore: a group the groups file lacks names the file it read.
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream}).status, 0);
  const std::string dst = dir_ / "dst";
  ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
  r = RunCli({"restore", "--store", dst, "-f", stream, "/primary/groupA"});
  EXPECT_EQ(r.status, 66) << r.Describe();
  EXPECT_NE(r.err.find("unknown backup group 'groupA' in '/primary/groupA' (groups of " + dst +
                       "/config/backup-groups.conf, which has none or does not exist)"),
            std::string::npos)
      << r.Describe();
}

// A restore into mailboxes that hold the messages already gives them the stream's flags, and its
// summary says how many (helper-80: 26,000 changed, and the line said only "already present").
TEST_F(OperatorStore, ARestoreSaysHowManyMessagesItGaveNewFlags) {
  const std::string stream = dir_ / "s.sm", dst = dir_ / "dst";
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream}).status, 0);
  ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
  ASSERT_EQ(RunCli({"restore", "--store", dst, "-f", stream}).status, 0);
  store::Store::Open(root_)->OpenFolder("ann", "INBOX")->SetFlags(1, store::kSeen | store::kFlagged, 0);
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", dir_ / "again.sm"}).status, 0);
  CliResult r = RunCli({"restore", "--store", dst, "-f", dir_ / "again.sm"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find("2 already present, 0 hard-linked"), std::string::npos) << r.Describe();
  EXPECT_NE(r.err.find(", 1 message with flags updated"), std::string::npos) << r.Describe();
  EXPECT_EQ(store::Store::Open(dst)->OpenFolder("ann", "INBOX")->Snapshot().messages.at(0).flags,
            store::kSeen | store::kFlagged);
}

// A manifest has no bodies: restoring one must fail, not exit 0 with empty mailboxes.
TEST_F(OperatorStore, RestoreOfAManifestFails) {
  const std::string manifest = dir_ / "m.sm";
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", manifest, "--manifest"}).status, 0);
  const std::string dst = dir_ / "dst";
  ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
  CliResult r = RunCli({"restore", "--store", dst, "-f", manifest});
  EXPECT_NE(r.status, 0) << r.Describe();
  EXPECT_LT(r.status, 128) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("manifest"), std::string::npos) << r.Describe();
  auto store = store::Store::Open(dst);
  EXPECT_FALSE(store->FindUser("ann"));
  EXPECT_EQ(RunCli({"restore", "--store", dst, "-f", manifest, "-t"}).status, 0);  // listing it is fine
}

// Ctrl-C (or SIGTERM) of a restore: one line saying it was interrupted and that a rerun
// completes it, a non-zero exit (not a death by signal), and the rerun does complete it.
TEST_F(OperatorStore, InterruptedRestoreSaysSoAndARerunCompletesIt) {
  const std::string stream = dir_ / "s.sm";
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream, "--compress", "none"}).status, 0);
  const std::string bytes = storemove::testing::SlurpFile(stream);
  for (int sig : {SIGINT, SIGTERM}) {
    // A store of its own for each signal: the restore dies as after kill -9 (_exit in the
    // handler), and when that lands while it holds a mutex of the environment the next process
    // to open it says so in a warning line of its own before recovering (once in a CI run the
    // SIGTERM restore, opening the store the SIGINT one died in, printed that line too).
    const std::string dst = dir_ / ("dst-" + std::to_string(sig));
    ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
    int in[2];
    ASSERT_EQ(::pipe(in), 0);
    const std::string err_path = dir_ / "err";
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::dup2(in[0], 0);
      ::close(in[1]);
      int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      ::dup2(err, 2);
      ::execl(STOREMOVE_BIN, STOREMOVE_BIN, "restore", "--store", dst.c_str(), "-f", "-", nullptr);
      ::_exit(127);
    }
    ::close(in[0]);
    // Half the stream, then wait (the pipe keeps the restore blocked) until it has read all of
    // it: by then its handler is installed (before it reads its input).
    const size_t half = std::min<size_t>(bytes.size() / 2, 60000);
    ASSERT_EQ(::write(in[1], bytes.data(), half), ssize_t(half));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (int pending = 1; pending > 0 && std::chrono::steady_clock::now() < deadline;) {
      ASSERT_EQ(::ioctl(in[1], FIONREAD, &pending), 0);
      if (pending > 0) std::this_thread::yield();
    }
    ::kill(pid, sig);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ::close(in[1]);
    const std::string err = storemove::testing::SlurpFile(err_path);
    ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << "\n" << err;
    EXPECT_NE(WEXITSTATUS(status), 0);
    EXPECT_TRUE(err.find("interrupted") != std::string::npos && err.find("again") != std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    CliResult rerun = RunCli({"restore", "--store", dst, "-f", stream});
    ASSERT_EQ(rerun.status, 0) << rerun.Describe();
    auto store = store::Store::Open(dst);
    EXPECT_EQ(store->OpenFolder("ann", "INBOX")->Snapshot().messages.size(), 1u);
    EXPECT_EQ(store->OpenFolder("mike", "INBOX")->Snapshot().messages.size(), 1u);
  }
}

// A mounted snapshot is read-only: backup, list and verify read it (the mboxlist through a
// private copy) and write nothing into it. Was: "open environment: Read-only file system", exit 70.
TEST_F(OperatorStore, ABackupOfAReadOnlySnapshotWorks) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a read-only bind mount";
  const std::string snap = dir_ / "snapshot";
  fs::create_directory(snap);
  if (std::system(("mount --bind " + root_ + " " + snap + " 2>/dev/null && mount -o remount,bind,ro " + snap +
                   " 2>/dev/null").c_str()) != 0) {
    std::system(("umount " + snap + " 2>/dev/null").c_str());
    GTEST_SKIP() << "cannot make a read-only bind mount here";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { std::system(("umount " + path).c_str()); }
  } unmount{snap};
  ASSERT_FALSE(std::ofstream(snap + "/probe").good()) << "the snapshot is writable";
  CliResult b = RunCli({"backup", "--store", snap, "-f", dir_ / "snap.sm", "/"});
  EXPECT_EQ(b.status, 0) << b.Describe();
  CliResult l = RunCli({"list", "--store", snap});
  EXPECT_EQ(l.status, 0) << l.Describe();
  EXPECT_NE(l.out.find("user/ann/INBOX"), std::string::npos) << l.out;
  const std::string copy = dir_ / "copy";
  ASSERT_EQ(RunCli({"init", "--store", copy}).status, 0);
  CliResult r = RunCli({"restore", "--store", copy, "-f", dir_ / "snap.sm"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  CliResult v = RunCli({"verify", "--store", copy, "--source", snap});
  EXPECT_EQ(v.status, 0) << v.Describe();
}

// verify of a store against itself, reached by another path, is refused before either store is
// opened: one line, exit 64, and no user recorded as verified (so `delete` keeps refusing). Was:
// a raw Berkeley DB error (exit 70); before that "equal", with every user recorded as verified.
TEST_F(OperatorStore, VerifyOfAStoreAgainstItselfIsRefused) {
  fs::create_symlink(root_, dir_ / "alias");
  fs::create_directory(dir_ / "sub");
  for (const std::string& other : {dir_ / "alias", dir_ / "sub/../store", root_}) {
    CliResult r = RunCli({"verify", "--store", other, "--source", root_});
    EXPECT_EQ(r.status, 64) << other << "\n" << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find("source and destination are the same store: " + other + " and " + root_),
              std::string::npos)
        << r.Describe();
  }
  CliResult del = RunCli({"delete", "--store", root_, "ann"});
  EXPECT_NE(del.status, 0) << del.Describe();
  EXPECT_TRUE(store::Store::Open(root_)->FindUser("ann"));
}

// verify --source records the users it compared whole as verified in the source (what lets
// `delete` without --force remove them), and only when the whole run is equal; their
// fingerprints are taken user by user and kept in a spool, not in memory for every user.
TEST_F(OperatorStore, VerifyRecordsTheUsersComparedWholeOnlyWhenAllIsEqual) {
  const std::string copy = dir_ / "copy";
  ASSERT_NO_FATAL_FAILURE(CopyWithASentFolder(copy));
  // A difference in mike's copy: nobody is recorded, ann neither.
  ASSERT_EQ(RunCli({"deliver", "--store", copy, "--user", "mike"}, "Subject: only here\r\n\r\nx\r\n").status, 0);
  CliResult differs = RunCli({"verify", "--store", copy, "--source", root_});
  EXPECT_EQ(differs.status, 1) << differs.Describe();
  EXPECT_FALSE(Verified("ann"));
  EXPECT_FALSE(Verified("mike"));
  // ann's INBOX alone proves nothing about ann's other mailboxes.
  CliResult inbox = RunCli({"verify", "--store", copy, "--source", root_, "user/ann/INBOX"});
  EXPECT_EQ(inbox.status, 0) << inbox.Describe();
  EXPECT_FALSE(Verified("ann"));
  CliResult ann = RunCli({"verify", "--store", copy, "--source", root_, "/primary/user/ann"});
  EXPECT_EQ(ann.status, 0) << ann.Describe();
  EXPECT_TRUE(Verified("ann"));
  EXPECT_FALSE(Verified("mike"));
  for (const char* user : {"ann", "mike"})
    ASSERT_EQ(RunCli({"user", "--store", root_, user, "--status", "moved:new.example.com"}).status, 0);
  CliResult del = RunCli({"delete", "--store", root_, "ann"});
  EXPECT_EQ(del.status, 0) << del.Describe();
  EXPECT_TRUE(store::Store::Open(root_)->ListFolders("ann").empty()) << del.Describe();
  CliResult refused = RunCli({"delete", "--store", root_, "mike"});
  EXPECT_EQ(refused.status, 75) << refused.Describe();
  EXPECT_NE(refused.err.find("has not been verified at a destination"), std::string::npos) << refused.Describe();
}

// A verify that finds some of a user's mail not at the destination takes back the user's
// earlier verification, whichever destination that was for: `delete` then refuses the user
// (helper-169: a folder deleted at the destination after an equal verify, a failing verify, and
// delete removed the source's copy, the only one left). What only the destination has, as after
// a migration's switch, does not take it back.
TEST_F(OperatorStore, AVerifyThatFindsMailMissingAtTheDestinationTakesBackTheVerification) {
  const std::string copy = dir_ / "copy";
  ASSERT_NO_FATAL_FAILURE(CopyWithASentFolder(copy));
  CliResult equal = RunCli({"verify", "--store", copy, "--source", root_});
  ASSERT_EQ(equal.status, 0) << equal.Describe();
  ASSERT_TRUE(Verified("ann"));
  ASSERT_TRUE(Verified("mike"));

  // Mail that only the destination has (delivered there after a switch): still verified.
  ASSERT_EQ(RunCli({"deliver", "--store", copy, "--user", "mike"}, "Subject: only here\r\n\r\nx\r\n").status, 0);
  CliResult extra = RunCli({"verify", "--store", copy, "--source", root_});
  EXPECT_EQ(extra.status, 1) << extra.Describe();
  EXPECT_TRUE(Verified("ann"));
  EXPECT_TRUE(Verified("mike"));
  EXPECT_EQ(extra.err.find("no longer count"), std::string::npos) << extra.Describe();

  // ann's Sent gone from the destination, with --no-bytes too: ann is no longer verified, mike is.
  ASSERT_EQ(RunCli({"delete", "--store", copy, "user/ann/Sent"}).status, 0);
  CliResult missing = RunCli({"verify", "--store", copy, "--source", root_, "--no-bytes"});
  EXPECT_EQ(missing.status, 1) << missing.Describe();
  EXPECT_NE(missing.err.find("1 user verified before (by verify or migrate) no longer counts as verified"),
            std::string::npos)
      << missing.Describe();
  EXPECT_FALSE(Verified("ann"));
  EXPECT_TRUE(Verified("mike"));

  // Other bytes in mike's message file at the destination, the same size: found by the byte checks.
  {
    auto copy_store = store::Store::Open(copy);
    auto inbox = copy_store->OpenFolder("mike", "INBOX");
    const std::string path = inbox->MessagePath(inbox->Snapshot().messages.front().uid);
    const int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(::pwrite(fd, "Y", 1, 0), 1);
    ::close(fd);
  }
  CliResult bytes = RunCli({"verify", "--store", copy, "--source", root_, "/primary/user/mike"});
  EXPECT_EQ(bytes.status, 1) << bytes.Describe();
  EXPECT_NE(bytes.out.find("message bytes do not match the source"), std::string::npos) << bytes.Describe();
  EXPECT_FALSE(Verified("mike"));

  for (const char* user : {"ann", "mike"}) {
    ASSERT_EQ(RunCli({"user", "--store", root_, user, "--status", "moved:new.example.com"}).status, 0);
    CliResult refused = RunCli({"delete", "--store", root_, user});
    EXPECT_EQ(refused.status, 75) << refused.Describe();
    EXPECT_NE(refused.err.find("has not been verified at a destination"), std::string::npos) << refused.Describe();
    EXPECT_FALSE(store::Store::Open(root_)->ListFolders(user).empty()) << user;
  }
}

// A store on a disk: backup compresses on a thread beside its reads. The stream restores to
// an equal store, and a write error of that thread (a full device) is one line naming the
// output, with a non-zero exit, as when the backup's own thread writes.
TEST(Operator, ABackupOfAStoreOnDiskRestoresExactlyAndReportsAFullDevice) {
  storemove::testing::DiskDir disk;
  const std::string store = disk / "store", copy = disk / "copy", stream = disk / "all.sm";
  ASSERT_EQ(RunCli({"gen", "--store", store, "--users", "6", "--messages-per-user", "40"}).status, 0);
  CliResult b = RunCli({"backup", "--store", store, "-f", stream, "/"});
  ASSERT_EQ(b.status, 0) << b.Describe();
  ASSERT_EQ(RunCli({"init", "--store", copy}).status, 0);
  CliResult r = RunCli({"restore", "--store", copy, "-f", stream});
  EXPECT_EQ(r.status, 0) << r.Describe();
  CliResult v = RunCli({"verify", "--store", copy, "--source", store});
  EXPECT_EQ(v.status, 0) << v.Describe();

  CliResult full = RunCli({"backup", "--store", store, "-f", "/dev/full", "/"});
  EXPECT_NE(full.status, 0) << full.Describe();
  EXPECT_LT(full.status, 128) << full.Describe();
  EXPECT_TRUE(IsOneErrorLine(full)) << full.Describe();
  EXPECT_NE(full.err.find("/dev/full"), std::string::npos) << full.Describe();
}

// Root working in a directory another user can write to (/tmp, a user's home): a link, FIFO or
// file that user made there beforehand must not turn root's backup into a file they read, nor
// root's import of their mail files into a copy of someone else's mail (security review #01, #05,
// #08, #11). Links and files of root's own are used as before.
TEST_F(OperatorStore, FilesAnotherUserPlantedDoNotRedirectOrExposeMail) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make files of another owner";
  constexpr uid_t kOther = 65534;  // nobody
  const std::string pub = dir_ / "pub";
  fs::create_directories(pub);
  ::chmod(pub.c_str(), 01777);
  auto plant_link = [&](const std::string& target, const std::string& at) {
    ASSERT_EQ(::symlink(target.c_str(), at.c_str()), 0) << at;
    ASSERT_EQ(::lchown(at.c_str(), kOther, kOther), 0) << at;
  };
  auto refused = [](const CliResult& r, const std::string& what) {
    EXPECT_EQ(r.status, 77) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find(what), std::string::npos) << r.Describe();
    EXPECT_NE(r.err.find("owned by nobody (uid 65534), not by this user or root"), std::string::npos) << r.Describe();
  };

  // A file made world-writable beforehand: replaced by root's own, mode 0600, not given its mode.
  const std::string pre = pub + "/nightly.stream";
  std::ofstream(pre) << "planted";
  ASSERT_EQ(::chown(pre.c_str(), kOther, kOther), 0);
  ASSERT_EQ(::chmod(pre.c_str(), 0666), 0);
  CliResult r = RunCli({"backup", "--store", root_, "-f", pre, "/primary"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  struct stat st;
  ASSERT_EQ(::stat(pre.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::geteuid());

  // A link to a file of theirs, and a FIFO they read from: refused, nothing written.
  const std::string loot = dir_ / "loot";
  std::ofstream(loot) << "";
  plant_link(loot, pub + "/link.stream");
  refused(RunCli({"backup", "--store", root_, "-f", pub + "/link.stream", "/primary"}),
              "output file " + pub + "/link.stream is a symbolic link");
  EXPECT_EQ(fs::file_size(loot), 0u);
  ASSERT_EQ(::mkfifo((pub + "/fifo").c_str(), 0666), 0);
  ASSERT_EQ(::chown((pub + "/fifo").c_str(), kOther, kOther), 0);
  refused(RunCli({"backup", "--store", root_, "-f", pub + "/fifo", "/primary"}), "is a FIFO");
  // Nor a stream their link leads to (root's own links are read: Cli.AnInputGivenThroughALinkOfOurs...).
  const std::string stream = dir_ / "root.stream";
  ASSERT_EQ(RunCli({"backup", "--store", root_, "-f", stream, "/primary"}).status, 0);
  plant_link(stream, pub + "/in.stream");
  refused(RunCli({"restore", "--store", dir_ / "elsewhere", "-f", pub + "/in.stream", "-t"}),
          "input file " + pub + "/in.stream is a symbolic link");

  // import of a user's files: their link to another user's mailbox is not followed.
  const std::string other_mail = dir_ / "alice.mbox";
  std::ofstream(other_mail) << "From a@b Thu Jan  1 00:00:00 2026\nSubject: alice private\n\nPIN\n";
  plant_link(other_mail, pub + "/notes");
  refused(RunCli({"import", "--store", root_, "-u", "ann", pub + "/notes"}), "mbox file " + pub + "/notes");
  // ... nor their link to a directory on the way (helper-84: only the last name was checked).
  fs::create_directories(dir_ / "private");
  fs::copy_file(other_mail, dir_ / "private/alice.mbox");
  plant_link(dir_ / "private", pub + "/mail");
  refused(RunCli({"import", "--store", root_, "-u", "ann", pub + "/mail/alice.mbox"}),
          "mbox file " + pub + "/mail/alice.mbox (through " + pub + "/mail) is a symbolic link");
  EXPECT_EQ(RunCli({"list", "--store", root_}).out.find("notes"), std::string::npos);

  // export into their link; the store's groups file as their link.
  fs::create_directories(dir_ / "theirs");
  plant_link(dir_ / "theirs", pub + "/out");
  refused(RunCli({"export", "--store", root_, "-u", "ann", "-d", pub + "/out"}), "export directory " + pub + "/out");
  EXPECT_TRUE(fs::is_empty(dir_ / "theirs"));
  fs::remove(root_ + "/config/backup-groups.conf");
  std::ofstream(dir_ / "secret") << "DB_PASSWORD=Hunter2\n";
  plant_link(dir_ / "secret", root_ + "/config/backup-groups.conf");
  r = RunCli({"groups", "--store", root_});
  refused(r, "backup groups file " + root_ + "/config/backup-groups.conf");
  EXPECT_EQ(r.out.find("Hunter2"), std::string::npos) << r.Describe();

  // serve's log through their link (helper-126 M3: root's serve appended its lines to the target).
  const std::string victim = dir_ / "victim";
  std::ofstream(victim) << "ORIGINAL\n";
  plant_link(victim, pub + "/serve.log");
  ASSERT_EQ(RunCli({"keygen", dir_ / "serve.key"}).status, 0);
  // (Bounded: a serve that takes the log runs until stopped.)
  r = storemove::testing::RunProgram("/usr/bin/timeout", {"60", STOREMOVE_BIN, "serve", "--store", root_, "--listen", "127.0.0.1:0",
                                                          "--key", dir_ / "serve.key", "--log", pub + "/serve.log"});
  refused(r, "--log file " + pub + "/serve.log");
  EXPECT_EQ(storemove::testing::SlurpFile(victim), "ORIGINAL\n");

  // root's own link is followed, as before.
  fs::remove(root_ + "/config/backup-groups.conf");
  ASSERT_EQ(::symlink(loot.c_str(), (pub + "/mine.stream").c_str()), 0);
  r = RunCli({"backup", "--store", root_, "-f", pub + "/mine.stream", "/primary"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_GT(fs::file_size(loot), 0u);
}

// root in a store another user owns (serve's and the deliveries' user) made root's lock and
// user directories there, and that user's sessions then failed (security review #10): refused
// before anything is made; a delivery is deferred (75), not bounced.
TEST_F(OperatorStore, RootIsRefusedInAStoreAnotherUserOwns) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  ASSERT_EQ(::chown(root_.c_str(), 65534, 65534), 0);
  CliResult r = RunCli({"import", "--store", root_, "-u", "newbie", "-s", "/dev/null"});
  EXPECT_EQ(r.status, 77) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("store " + root_ + " belongs to nobody (uid 65534) and this command runs as root"),
            std::string::npos)
      << r.Describe();
  EXPECT_NE(r.err.find("sudo -u nobody storemove"), std::string::npos) << r.Describe();
  r = RunCli({"deliver", "--store", root_, "--user", "ann"}, "Subject: x\r\n\r\nx\r\n");
  EXPECT_EQ(r.status, 75) << r.Describe();
  EXPECT_EQ(RunCli({"init", "--store", root_}).status, 77);
  ASSERT_EQ(::chown(root_.c_str(), 0, 0), 0);
  r = RunCli({"users", "--store", root_});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out.find("newbie"), std::string::npos) << r.Describe();
}

// The top directory of root's (a mount point) with everything in it another user's let root in,
// and root's files then locked that user out: `deliver` deferred, `backup` 74 (helper-126 H1).
// The database environment's owner refuses root as the top directory's does. A partition's
// owner is not asked: one on a share mapping owners (root_squash) locked out root and the
// owner alike (helper-128).
TEST_F(OperatorStore, RootIsRefusedWhereTheDatabaseIsAnotherUsers) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  const std::string mboxlist = root_ + "/mboxlist";
  ASSERT_EQ(::chown(mboxlist.c_str(), 65534, 65534), 0);
  CliResult r = RunCli({"import", "--store", root_, "-u", "newbie", "-s", "/dev/null"});
  EXPECT_EQ(r.status, 77) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("store " + root_ + ": " + mboxlist + " belongs to nobody (uid 65534) and this command runs as root"),
            std::string::npos)
      << r.Describe();
  EXPECT_EQ(RunCli({"deliver", "--store", root_, "--user", "ann"}, "Subject: x\r\n\r\nx\r\n").status, 75);
  ASSERT_EQ(::chown(mboxlist.c_str(), 0, 0), 0);
  r = RunCli({"users", "--store", root_});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out.find("newbie"), std::string::npos) << r.Describe();

  const std::string partition = root_ + "/partition/primary";
  ASSERT_EQ(::chown(partition.c_str(), 65534, 65534), 0);
  r = RunCli({"deliver", "--store", root_, "--user", "ann"}, "Subject: x\r\n\r\nx\r\n");
  EXPECT_EQ(r.status, 0) << r.Describe();
  ASSERT_EQ(::chown(partition.c_str(), 0, 0), 0);
}

// Another user the store lets in (its permissions or an ACL) made its 0600 files there, which the
// owner then could not open: deliveries deferred for ever (helper-126 M1). Refused like root.
TEST_F(OperatorStore, AnotherUserTheStoreLetsInIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run as another user";
  ASSERT_EQ(std::system(("chmod -R o+rwX '" + root_ + "'").c_str()), 0);
  ::chmod(dir_.path().c_str(), 0755);
  const std::string got = OpenAsNobody(root_);
  EXPECT_EQ(got.rfind(std::to_string(int(storemove::Errc::kAuth)) + " store " + root_ + ": " + root_ +
                          "/mboxlist belongs to root (uid 0) and this command runs as nobody (uid 65534)",
                      0),
            0u)
      << got;
  for (const auto& e : fs::recursive_directory_iterator(root_)) {
    struct stat st;
    ASSERT_EQ(::lstat(e.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u) << e.path() << " was made by the refused user";
  }
}

// Root is refused in the mail user's store, so root hands it a file on standard input:
// `sudo -u mailsrv storemove import -s /dev/stdin < root's-file`. Opening /dev/stdin again
// checked the file's permissions, "Permission denied", exit 74 (helper-126 M2); `-` was taken for
// a file of that name. Standard input is used as the shell opened it.
TEST_F(OperatorStore, TheStoresOwnerImportsAFileRootOpenedForIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run as another user";
  ::chmod(dir_.path().c_str(), 0755);
  const std::string mbox = dir_ / "root-only.mbox";
  WriteFileAtomic(mbox, "From a@example.com Mon Jan  1 00:00:00 2024\nSubject: one\n\nfirst\n\n"
                        "From b@example.com Mon Jan  1 00:00:01 2024\nSubject: two\n\nsecond\n", 0600);
  ASSERT_EQ(std::system(("chown -R 65534:65534 '" + root_ + "'").c_str()), 0);
  for (const std::string path : {"/dev/stdin", "-"}) {
    const std::string user = path == "-" ? "dash" : "stdin";
    const std::string line = "setpriv --reuid=65534 --regid=65534 --clear-groups " + std::string(STOREMOVE_BIN) +
                             " import --store '" + root_ + "' -u " + user + " -s " + path + " < '" + mbox + "' 2>&1";
    FILE* pipe = ::popen(line.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string out;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
    EXPECT_EQ(::pclose(pipe), 0) << path << ": " << out;
    EXPECT_NE(out.find("imported 2 messages"), std::string::npos) << path << ": " << out;
  }
  ASSERT_EQ(std::system(("chown -R 0:0 '" + root_ + "'").c_str()), 0);
  auto store = store::Store::Open(root_);
  for (const char* user : {"stdin", "dash"}) EXPECT_EQ(store->OpenFolder(user, "INBOX")->Snapshot().messages.size(), 2u) << user;
}

// backup -f into a directory reached through the user's own link (a backup directory linked to a
// NAS mount): a new backup was written whole, then "open DIR: Not a directory", exit 74 (helper-84).
TEST_F(OperatorStore, BackupIntoALinkedDirectoryCompletes) {
  fs::create_directories(dir_ / "nas");
  fs::create_directory_symlink(dir_ / "nas", dir_ / "backups");
  CliResult r = RunCli({"backup", "--store", root_, "-f", dir_ / "backups/mail.sm", "/primary"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_TRUE(fs::is_regular_file(dir_ / "nas/mail.sm"));
  // /dev/stdout into a pipe (and a shell's >(...)) is a link too: it was refused, exit 64.
  const std::string line = std::string(STOREMOVE_BIN) + " backup --store '" + root_ + "' -f /dev/stdout /primary 2>/dev/null | " +
                           STOREMOVE_BIN + " restore -t -f - 2>&1";
  FILE* pipe = ::popen(line.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string toc;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) toc.append(buf, n);
  EXPECT_EQ(::pclose(pipe), 0) << toc;
  EXPECT_NE(toc.find("user ann "), std::string::npos) << toc;
}

// A store this user may not read is said so, naming its owner: it was "not a message store ...
// run storemove init" or "no database environment" (helper-84), which sent the administrator
// the wrong way.
TEST_F(OperatorStore, AStoreThisUserMayNotReadIsSaidSo) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run as another user";
  ASSERT_EQ(::chmod((root_ + "/mboxlist").c_str(), 0700), 0);
  ::chmod(root_.c_str(), 0755);
  ::chmod(dir_.path().c_str(), 0755);
  const std::string got = OpenAsNobody(root_);
  EXPECT_EQ(got.rfind(std::to_string(int(storemove::Errc::kAuth)) + " store " + root_ + ": " + root_ +
                          "/mboxlist cannot be read by this user, nobody (uid 65534) (it belongs to root (uid 0))",
                      0),
            0u)
      << got;
}

}  // namespace
}  // namespace storemove::tools
