// Several storemove processes on one store at once (docs/store-format.md §6.9): a restore that
// is building a mailbox, and a delivery, a second restore or a kill -9 meeting it. Each scenario
// is ordered without sleeping: the restore reads its stream from a pipe that the test fills up to
// the middle of a message, and the test waits for what the restore leaves on disk.
#include <fcntl.h>
#include <sys/file.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"
#include "util/digest.h"
#include "util/fs.h"

namespace storemove {
namespace {

using testing::CliResult;
using testing::RunCli;
using testing::SlurpFile;
using testing::TempDir;

// A storemove process whose stdin is a pipe the test writes; stderr goes to a file.
class Spawned {
 public:
  Spawned(const std::vector<std::string>& args, const std::string& err_path) : err_path_(err_path) {
    int in[2];
    // Close-on-exec: another child spawned later must not keep this stdin's write end open.
    if (::pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    std::vector<std::string> storage = {STOREMOVE_BIN};
    storage.insert(storage.end(), args.begin(), args.end());
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (std::string& a : storage) argv.push_back(a.data());
      argv.push_back(nullptr);
      int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      int out = ::open("/dev/null", O_WRONLY);
      ::dup2(in[0], 0);
      ::dup2(out, 1);
      ::dup2(err, 2);
      ::close(in[1]);
      ::unsetenv("STOREMOVE_STORE");
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(in[0]);
    in_ = in[1];
  }
  ~Spawned() {
    CloseInput();
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      Wait();
    }
  }
  void Feed(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::write(in_, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      ASSERT_GT(n, 0) << "the process stopped reading its stream";
      bytes.remove_prefix(size_t(n));
    }
  }
  // Feed, but false once the process no longer reads (it ended; SIGPIPE must be ignored).
  bool TryFeed(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::write(in_, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(size_t(n));
    }
    return true;
  }
  void CloseInput() {
    if (in_ >= 0) ::close(in_);
    in_ = -1;
  }
  void Kill() { ::kill(pid_, SIGKILL); }
  void Signal(int signo) { ::kill(pid_, signo); }
  bool Exited() {
    if (pid_ <= 0) return true;
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      pid_ = -1;
    }
    return pid_ <= 0;
  }
  int Wait() {
    if (pid_ > 0) {
      int st = 0;
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      pid_ = -1;
    }
    return status_;
  }
  std::string Err() const { return SlurpFile(err_path_); }

 private:
  std::string err_path_;
  pid_t pid_ = -1;
  int in_ = -1;
  int status_ = -1;
};

// Polls `ready` (something another process leaves on disk) for up to a minute.
bool WaitFor(const std::function<bool()>& ready) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < until) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling an observable condition
  }
  return false;
}

std::string Message(const std::string& subject, size_t body_bytes = 100, const std::string& marker = "") {
  std::string body;
  for (size_t i = 0; body.size() < body_bytes; ++i) body += "line " + std::to_string(i) + " of " + subject + "\n";
  if (!marker.empty()) body.insert(body.size() / 2, marker);
  return "From: a@example.com\nSubject: " + subject + "\nMessage-ID: <" + subject + "@example.com>\n\n" + body;
}

class WriteLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = tmp_ / "src";
    dst_ = tmp_ / "dst";
    ASSERT_EQ(RunCli({"init", "--store", src_}).status, 0);
    ASSERT_EQ(RunCli({"init", "--store", dst_}).status, 0);
    Deliver(src_, "joe", "INBOX", Message("inbox-1"));
    Deliver(src_, "joe", "Sent", Message("sent-1"));
    // Big enough that the restore is still writing it when the test stops feeding the stream.
    Deliver(src_, "joe", "Sent", Message("sent-2", 3 << 20, kMarker));
    Deliver(src_, "joe", "Sent", Message("sent-3"));
    CliResult b = RunCli({"backup", "--store", src_, "--compress", "none", "-f", tmp_ / "stream", "/"});
    ASSERT_EQ(b.status, 0) << b.Describe();
    stream_ = SlurpFile(tmp_ / "stream");
    cut_ = stream_.find(kMarker);
    ASSERT_NE(cut_, std::string::npos);
  }

  static void Deliver(const std::string& store, const std::string& user, const std::string& folder,
                      const std::string& msg, int expect = 0) {
    CliResult r = RunCli({"deliver", "--store", store, "--user", user, "--folder", folder, "--create"}, msg);
    ASSERT_EQ(r.status, expect) << r.Describe();
  }

  std::string SentDir() {
    auto store = store::Store::Open(dst_);
    return store->PartitionPath("primary") + "/" + store::FolderRelPath("joe", "Sent");
  }

  // Every record of every folder of the destination names its file, holding its digest.
  void ExpectEveryRecordHasItsFile() {
    auto store = store::Store::Open(dst_);
    store->ForEachFolder([&](const store::FolderInfo& info) {
      auto f = store->OpenFolder(info.user, info.folder);
      for (const store::MessageMeta& m : f->Snapshot().messages) {
        UniqueFd fd = f->OpenMessageFile(m.uid);
        ASSERT_TRUE(fd.valid()) << info.Mailbox() << " UID " << m.uid << ": record without file";
        std::string bytes(m.size, '\0');
        ASSERT_EQ(::pread(fd.get(), bytes.data(), m.size, 0), ssize_t(m.size));
        EXPECT_EQ(DigestOf(bytes), m.digest) << info.Mailbox() << " UID " << m.uid;
      }
    });
  }

  // The subjects of the messages in user joe's folder, in UID order.
  std::vector<std::string> Subjects(const std::string& folder) {
    auto store = store::Store::Open(dst_);
    std::vector<std::string> out;
    if (!store->FindFolder("joe", folder)) return out;
    auto f = store->OpenFolder("joe", folder);
    for (const store::MessageMeta& m : f->Snapshot().messages) {
      UniqueFd fd = f->OpenMessageFile(m.uid);
      if (!fd.valid()) continue;
      std::string head(200, '\0');
      head.resize(size_t(std::max<ssize_t>(0, ::pread(fd.get(), head.data(), head.size(), 0))));
      size_t s = head.find("Subject: ");
      out.push_back(s == std::string::npos ? "?" : head.substr(s + 9, head.find('\n', s) - s - 9));
    }
    return out;
  }

  static constexpr const char* kMarker = "<<<the restore is reading here>>>";
  TempDir tmp_;
  std::string src_, dst_, stream_;
  size_t cut_ = 0;
};

// Was: deliver --create initialised the folder under the restore, the restore wrote a known UID
// over the delivered file and its clean-up unlinked it: exit 0 for a delivery that was gone.
TEST_F(WriteLockTest, DeliverCreateOfAMailboxBeingRestoredIsDeferredNotLost) {
  Spawned restore({"restore", "--store", dst_, "-f", "-"}, tmp_ / "restore.err");
  restore.Feed(std::string_view(stream_).substr(0, cut_));
  const std::string sent = SentDir();
  ASSERT_TRUE(WaitFor([&] { return PathExists(sent + "/store.idx"); })) << restore.Err();

  CliResult d = RunCli({"deliver", "--store", dst_, "--user", "joe", "--folder", "Sent", "--create"},
                       Message("delivered-meanwhile"));
  EXPECT_EQ(d.status, 75) << d.Describe();  // temporary: the MTA retries
  EXPECT_NE(d.err.find("try again later"), std::string::npos) << d.err;

  restore.Feed(std::string_view(stream_).substr(cut_));
  restore.CloseInput();
  EXPECT_EQ(restore.Wait(), 0) << restore.Err();
  ExpectEveryRecordHasItsFile();
  std::vector<std::string> want = {"sent-1", "sent-2", "sent-3"};
  if (d.status == 0) want.push_back("delivered-meanwhile");  // acknowledged: must be there
  EXPECT_EQ(Subjects("Sent"), want);

  Deliver(dst_, "joe", "Sent", Message("delivered-after"));  // the retry succeeds
  want.push_back("delivered-after");
  EXPECT_EQ(Subjects("Sent"), want);
  ExpectEveryRecordHasItsFile();
}

// Was: the second restore re-initialised the mailbox the first was building; one exited 0 and
// the mailbox then had records whose files the other had removed.
TEST_F(WriteLockTest, TwoRestoresOfOneUserTakeTurnsAndBothSucceed) {
  Spawned first({"restore", "--store", dst_, "-f", "-"}, tmp_ / "first.err");
  first.Feed(std::string_view(stream_).substr(0, cut_));
  const std::string sent = SentDir();
  ASSERT_TRUE(WaitFor([&] { return PathExists(sent + "/store.idx"); })) << first.Err();

  Spawned second({"restore", "--store", dst_, "-f", tmp_ / "stream"}, tmp_ / "second.err");
  second.CloseInput();
  // It says why it waits (or, without the lock, it would simply finish).
  ASSERT_TRUE(WaitFor([&] { return second.Err().find("waiting for user joe") != std::string::npos || second.Exited(); }));
  EXPECT_FALSE(second.Exited()) << "the second restore did not wait for the first: " << second.Err();

  first.Feed(std::string_view(stream_).substr(cut_));
  first.CloseInput();
  EXPECT_EQ(first.Wait(), 0) << first.Err();
  EXPECT_EQ(second.Wait(), 0) << second.Err();
  ExpectEveryRecordHasItsFile();
  EXPECT_EQ(Subjects("Sent"), (std::vector<std::string>{"sent-1", "sent-2", "sent-3"}));
  EXPECT_EQ(Subjects("INBOX"), (std::vector<std::string>{"inbox-1"}));
  CliResult v = RunCli({"verify", "--store", dst_, "--source", src_});
  EXPECT_EQ(v.status, 0) << v.Describe();
}

// delete and rename wait for a user another process is writing, and say once why, as restore
// does (they waited without a word); both finish once the restore is done.
TEST_F(WriteLockTest, DeleteAndRenameSayWhyTheyWait) {
  Spawned restore({"restore", "--store", dst_, "-f", "-"}, tmp_ / "restore.err");
  restore.Feed(std::string_view(stream_).substr(0, cut_));
  const std::string sent = SentDir();
  ASSERT_TRUE(WaitFor([&] { return PathExists(sent + "/store.idx"); })) << restore.Err();
  Spawned rename({"rename", "--store", dst_, "user/joe/Sent", "user/joe/Old"}, tmp_ / "rename.err");
  rename.CloseInput();
  ASSERT_TRUE(WaitFor([&] { return rename.Err().find("waiting for user joe") != std::string::npos || rename.Exited(); }));
  EXPECT_FALSE(rename.Exited()) << rename.Err();
  EXPECT_NE(rename.Err().find("storemove: waiting for user joe: another storemove process is writing it"), std::string::npos)
      << rename.Err();
  restore.Feed(std::string_view(stream_).substr(cut_));
  restore.CloseInput();
  EXPECT_EQ(restore.Wait(), 0) << restore.Err();
  EXPECT_EQ(rename.Wait(), 0) << rename.Err();
  EXPECT_EQ(Subjects("Old"), (std::vector<std::string>{"sent-1", "sent-2", "sent-3"}));

  Spawned holder({"restore", "--store", dst_, "-f", "-"}, tmp_ / "holder.err");
  holder.Feed(std::string_view(stream_).substr(0, cut_));
  Spawned del({"delete", "--store", dst_, "--force", "joe"}, tmp_ / "delete.err");
  del.CloseInput();
  ASSERT_TRUE(WaitFor([&] { return del.Err().find("waiting for user joe") != std::string::npos || del.Exited(); }));
  EXPECT_FALSE(del.Exited()) << del.Err();
  const std::string said = del.Err();
  EXPECT_EQ(std::count(said.begin(), said.end(), '\n'), 1) << "once: " << said;
  holder.Feed(std::string_view(stream_).substr(cut_));
  holder.CloseInput();
  EXPECT_EQ(holder.Wait(), 0) << holder.Err();
  EXPECT_EQ(del.Wait(), 0) << del.Err();
  EXPECT_NE(del.Err().find(" s for user joe; going on"), std::string::npos) << del.Err();
  EXPECT_FALSE(store::Store::Open(dst_)->FindUser("joe"));
}

// SIGTERM or Ctrl-C of a rename or delete waiting for a user stops it cleanly (130, one line):
// it leaves the database environment as it found it. Dying by the signal with the environment
// open made the next opener recover it, which ended the restore it was waiting for with 75.
TEST_F(WriteLockTest, ASignalledWaiterStopsCleanlyAndTheRestoreItWaitedForCompletes) {
  Spawned restore({"restore", "--store", dst_, "-f", "-"}, tmp_ / "restore.err");
  restore.Feed(std::string_view(stream_).substr(0, cut_));
  ASSERT_TRUE(WaitFor([&] { return PathExists(SentDir() + "/store.idx"); })) << restore.Err();
  const std::vector<std::pair<std::vector<std::string>, int>> waiters = {
      {{"rename", "--store", dst_, "user/joe/Sent", "user/joe/Old"}, SIGTERM},
      {{"delete", "--store", dst_, "--force", "joe"}, SIGINT}};
  for (const auto& [args, signo] : waiters) {
    Spawned waiter(args, tmp_ / (args[0] + ".err"));
    waiter.CloseInput();
    ASSERT_TRUE(WaitFor([&] { return waiter.Err().find("waiting for user joe") != std::string::npos || waiter.Exited(); }));
    ASSERT_FALSE(waiter.Exited()) << waiter.Err();
    waiter.Signal(signo);
    EXPECT_EQ(waiter.Wait(), 130) << args[0] << ": " << waiter.Err();
    EXPECT_NE(waiter.Err().find(std::string("storemove: interrupted by SIG") + (signo == SIGTERM ? "TERM" : "INT") +
                                " while waiting for user joe"),
              std::string::npos)
        << waiter.Err();
    CliResult next = RunCli({"users", "--store", dst_});  // the next opener
    EXPECT_EQ(next.status, 0) << next.Describe();
  }
  restore.Feed(std::string_view(stream_).substr(cut_));
  restore.CloseInput();
  EXPECT_EQ(restore.Wait(), 0) << restore.Err();
  EXPECT_EQ(Subjects("Sent"), (std::vector<std::string>{"sent-1", "sent-2", "sent-3"}));
}

// A folder lock held for long (a rename or partition move staging the folder, or a process
// stopped with it) is said once by whoever waits for it, then waited for: deliver and list sat
// silent for as long as the holder was stopped.
TEST_F(WriteLockTest, AFolderLockHeldForLongIsSaidByTheWaiter) {
  auto store = store::Store::Open(src_);
  const std::string sent = store->PartitionPath("primary") + "/" + store::FolderRelPath("joe", "Sent");
  store.reset();
  UniqueFd held(::open(sent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_EQ(::flock(held.get(), LOCK_EX), 0);
  // export waited in silence (helper-52), so did import and verify's source store.
  const std::vector<std::vector<std::string>> waiters = {
      {"deliver", "--store", src_, "--user", "joe", "--folder", "Sent"},
      {"list", "--store", src_},
      {"export", "--store", src_, "-u", "joe", "-d", tmp_ / "exported"},
      // The change is committed before the report waits: the line says so (helper-52).
      {"user", "--store", src_, "joe", "--status", "active"}};
  for (const std::vector<std::string>& args : waiters) {
    Spawned waiter(args, tmp_ / (args[0] + ".err"));
    waiter.Feed(Message("waited"));
    waiter.CloseInput();
    ASSERT_TRUE(WaitFor([&] {
      return waiter.Err().find("waiting for the lock of folder " + sent) != std::string::npos || waiter.Exited();
    }));
    EXPECT_FALSE(waiter.Exited()) << args[0] << ": " << waiter.Err();
    const std::string said = waiter.Err();
    EXPECT_EQ(std::count(said.begin(), said.end(), '\n'), 1) << "once: " << said;
    if (args[0] == "user") {
      EXPECT_NE(said.find("(the change is made already; only this report waits)"), std::string::npos) << said;
    }
    ASSERT_EQ(::flock(held.get(), LOCK_UN), 0);
    EXPECT_EQ(waiter.Wait(), 0) << args[0] << ": " << waiter.Err();
    // ... and that the wait is over (helper-66: the log showed a wait and then nothing).
    EXPECT_NE(waiter.Err().find(" s for the lock of folder " + sent + "; going on"), std::string::npos)
        << args[0] << ": " << waiter.Err();
    ASSERT_EQ(::flock(held.get(), LOCK_EX), 0);
  }
}

// ... but not without bound where someone waits on the other side (helper-66): deliver gives up
// after --lock-wait with 75, so the MTA retries later, and backup --to after its --timeout with
// 75 naming the folder; it used to wait on while the server dropped its silent session, and end
// in "Broken pipe" (74) once it wrote again.
TEST_F(WriteLockTest, AFolderLockHeldPastItsBoundIsATemporaryFailureNamingTheFolder) {
  auto store = store::Store::Open(src_);
  const std::string sent = store->PartitionPath("primary") + "/" + store::FolderRelPath("joe", "Sent");
  store.reset();
  UniqueFd held(::open(sent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_EQ(::flock(held.get(), LOCK_EX), 0);
  {
    Spawned deliver({"deliver", "--store", src_, "--user", "joe", "--folder", "Sent", "--lock-wait", "1"},
                    tmp_ / "deliver.err");
    deliver.Feed(Message("deferred"));
    deliver.CloseInput();
    ASSERT_TRUE(WaitFor([&] { return deliver.Exited(); })) << deliver.Err();
    EXPECT_EQ(deliver.Wait(), 75) << deliver.Err();
    EXPECT_NE(deliver.Err().find("the lock of folder " + sent + " has been held by another process for over 1 s"),
              std::string::npos)
        << deliver.Err();
  }
  Spawned serve({"serve", "--store", dst_, "--insecure", "--listen", "127.0.0.1:0", "--idle-timeout", "2"},
                tmp_ / "serve.err");
  std::string port;
  ASSERT_TRUE(WaitFor([&] {
    const std::string log = serve.Err();
    const size_t at = log.find("listening on 127.0.0.1:");
    if (at == std::string::npos) return false;
    const size_t digits = at + std::string("listening on 127.0.0.1:").size();
    port = log.substr(digits, log.find_first_not_of("0123456789", digits) - digits);
    return !port.empty() && log.find_first_not_of("0123456789", digits) != std::string::npos;
  })) << serve.Err();
  Spawned backup({"backup", "--store", src_, "--to", "127.0.0.1:" + port, "--insecure", "--timeout", "3", "/"},
                 tmp_ / "backup.err");
  const bool ended = WaitFor([&] { return backup.Exited(); });
  ASSERT_EQ(::flock(held.get(), LOCK_UN), 0);  // a backup that still waits finishes now
  ASSERT_TRUE(ended) << "backup --to waited for the folder lock past its --timeout: " << backup.Err();
  EXPECT_EQ(backup.Wait(), 75) << backup.Err();
  EXPECT_NE(backup.Err().find("the lock of folder " + sent + " has been held by another process for over 3 s"),
            std::string::npos)
      << backup.Err();
}

// A restore from a pipe whose writer stalls (a hung ssh link) holds the user it is writing: it
// used to wait without a word for as long as the pipe stayed open (helper-66). It now says so
// (after a minute, or half its --timeout), says when input resumes, and gives up at --timeout
// with 75; the rerun completes.
TEST_F(WriteLockTest, ARestoreWhoseInputStallsSaysSoAndGivesUpAtItsTimeout) {
  {
    Spawned restore({"restore", "--store", dst_, "-f", "-", "--timeout", "2"}, tmp_ / "restore.err");
    restore.Feed(std::string_view(stream_).substr(0, cut_));
    ASSERT_TRUE(WaitFor([&] { return restore.Exited(); })) << restore.Err();
    EXPECT_EQ(restore.Wait(), 75) << restore.Err();
    const std::string err = restore.Err();
    EXPECT_NE(err.find("storemove restore: no input from standard input for 1 s (after byte "), std::string::npos)
        << err;
    EXPECT_NE(err.find("the user being restored stays locked for writing meanwhile"), std::string::npos) << err;
    EXPECT_NE(err.find("standard input: no input for 2 s (after byte "), std::string::npos) << err;
    EXPECT_NE(err.find("gave up (--timeout)"), std::string::npos) << err;
  }
  EXPECT_TRUE(Subjects("Sent").empty());  // never half visible
  {
    Spawned restore({"restore", "--store", dst_, "-f", "-", "--timeout", "8"}, tmp_ / "resumed.err");
    restore.Feed(std::string_view(stream_).substr(0, cut_));
    // Said after half --timeout (4 s; capped at 60): this waits for the line, then feeds the rest.
    ASSERT_TRUE(WaitFor([&] { return restore.Err().find("no input from standard input") != std::string::npos; }))
        << restore.Err();
    restore.Feed(std::string_view(stream_).substr(cut_));
    restore.CloseInput();
    EXPECT_EQ(restore.Wait(), 0) << restore.Err();
    EXPECT_NE(restore.Err().find("storemove restore: input from standard input resumed after "), std::string::npos)
        << restore.Err();
  }
  EXPECT_EQ(Subjects("Sent"), (std::vector<std::string>{"sent-1", "sent-2", "sent-3"}));
  ExpectEveryRecordHasItsFile();
}

// A writer that sends a few bytes now and then (20 a second here, under the 1 KiB a second a
// writer must keep up) is no stall to WaitForInput, which returns at each byte: the restore held
// the user for as long as the trickle lasted, without a word (helper-159 F1). Now it says so and
// gives up at --timeout as for a stall; nothing half-restored is visible.
TEST_F(WriteLockTest, ARestoreWhoseInputTricklesSaysSoAndGivesUpAtItsTimeout) {
  struct sigaction ignore {}, before {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGPIPE, &ignore, &before), 0);
  {
    Spawned restore({"restore", "--store", dst_, "-f", "-", "--timeout", "2"}, tmp_ / "trickle.err");
    restore.Feed(std::string_view(stream_).substr(0, cut_));
    // Given up after 2 s of trickle plus the window (1 s) that notices it; 30 s is a hang.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (size_t at = cut_; !restore.Exited() && std::chrono::steady_clock::now() < deadline; at += 2) {
      if (!restore.TryFeed(std::string_view(stream_).substr(at, 2))) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the trickle's pace
    }
    restore.CloseInput();  // a restore still reading sees the end of its stream now
    EXPECT_EQ(restore.Wait(), 75) << restore.Err();
    const std::string err = restore.Err();
    EXPECT_NE(err.find("storemove restore: input from standard input trickles: "), std::string::npos) << err;
    EXPECT_NE(err.find("under 1 KiB a second: the writer trickles; the user being restored stays locked for writing "
                       "meanwhile; gave up (--timeout)"),
              std::string::npos)
        << err;
  }
  ASSERT_EQ(::sigaction(SIGPIPE, &before, nullptr), 0);
  EXPECT_TRUE(Subjects("Sent").empty());  // never half visible
}

// The same for an mbox piped into import: it holds the user while its pipe stalls.
TEST_F(WriteLockTest, AnImportWhoseInputStallsGivesUpAtItsTimeout) {
  const std::string mbox = "From a@example.com Mon Jan  1 00:00:00 2024\nSubject: one\n\nfirst\n\n"
                           "From a@example.com Mon Jan  1 00:00:01 2024\nSubject: two\n\n";
  {
    Spawned import({"import", "--store", dst_, "-u", "ann", "-s", "/dev/stdin", "--timeout", "2"}, tmp_ / "import.err");
    import.Feed(mbox);  // the second message is never finished
    ASSERT_TRUE(WaitFor([&] { return import.Exited(); })) << import.Err();
    EXPECT_EQ(import.Wait(), 75) << import.Err();
    const std::string err = import.Err();
    EXPECT_NE(err.find("storemove import: no input from /dev/stdin for 1 s (after byte "), std::string::npos) << err;
    EXPECT_NE(err.find("the user being imported stays locked for writing meanwhile"), std::string::npos) << err;
    EXPECT_NE(err.find("/dev/stdin: no input for 2 s (after byte "), std::string::npos) << err;
  }
  CliResult rerun = RunCli({"import", "--store", dst_, "-u", "ann", "-s", "/dev/stdin"}, mbox + "second\n");
  EXPECT_EQ(rerun.status, 0) << rerun.Describe();
  EXPECT_NE(rerun.out.find("imported 2 messages"), std::string::npos) << rerun.Describe();
}

// The same for an mbox trickling into import.
TEST_F(WriteLockTest, AnImportWhoseInputTricklesGivesUpAtItsTimeout) {
  struct sigaction ignore {}, before {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGPIPE, &ignore, &before), 0);
  const std::string mbox = "From a@example.com Mon Jan  1 00:00:00 2024\nSubject: one\n\n" + std::string(4096, 'x') + "\n";
  {
    Spawned import({"import", "--store", dst_, "-u", "ann", "-s", "/dev/stdin", "--timeout", "2"}, tmp_ / "import.err");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (size_t at = 0; at < mbox.size() && !import.Exited() && std::chrono::steady_clock::now() < deadline; at += 2) {
      if (!import.TryFeed(std::string_view(mbox).substr(at, 2))) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    import.CloseInput();
    EXPECT_EQ(import.Wait(), 75) << import.Err();
    const std::string err = import.Err();
    EXPECT_NE(err.find("storemove import: input from /dev/stdin trickles: "), std::string::npos) << err;
    EXPECT_NE(err.find("under 1 KiB a second: the writer trickles; the user being imported stays locked"),
              std::string::npos)
        << err;
  }
  ASSERT_EQ(::sigaction(SIGPIPE, &before, nullptr), 0);
}

// A restore killed with its lock held blocks nobody: the kernel drops the lock with the process,
// and the rerun completes the mailbox.
TEST_F(WriteLockTest, KilledRestoreLeavesNoLockAndTheRerunCompletes) {
  {
    Spawned restore({"restore", "--store", dst_, "-f", "-"}, tmp_ / "restore.err");
    restore.Feed(std::string_view(stream_).substr(0, cut_));
    const std::string sent = SentDir();
    ASSERT_TRUE(WaitFor([&] { return PathExists(sent + "/store.idx"); })) << restore.Err();
    restore.Kill();
    EXPECT_EQ(restore.Wait(), 128 + SIGKILL);
  }
  EXPECT_TRUE(Subjects("Sent").empty());  // never half visible
  CliResult rerun = RunCli({"restore", "--store", dst_, "-f", tmp_ / "stream"});
  EXPECT_EQ(rerun.status, 0) << rerun.Describe();
  EXPECT_EQ(rerun.err.find("waiting"), std::string::npos) << rerun.err;
  ExpectEveryRecordHasItsFile();
  CliResult v = RunCli({"verify", "--store", dst_, "--source", src_});
  EXPECT_EQ(v.status, 0) << v.Describe();
}

// A leftover of a killed restore under a message's final name can be a hard link shared with
// another mailbox (a link restored before the kill). Was: opened with O_TRUNC and rewritten,
// which altered the other mailbox's message.
TEST_F(WriteLockTest, RestoreNeverWritesThroughALeftoverHardLink) {
  Deliver(dst_, "alice", "INBOX", Message("alice-only"));
  std::string victim;
  {
    auto store = store::Store::Open(dst_);
    auto f = store->OpenFolder("alice", "INBOX");
    victim = f->MessagePath(f->Snapshot().messages.at(0).uid);
  }
  const std::string before = SlurpFile(victim);
  const std::string leftover = SentDir() + "/" + store::MessageRelPath(1);
  MakeDirs(leftover.substr(0, leftover.rfind('/')));
  ASSERT_EQ(::link(victim.c_str(), leftover.c_str()), 0);

  CliResult r = RunCli({"restore", "--store", dst_, "-f", tmp_ / "stream"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(SlurpFile(victim), before) << "another mailbox's message was rewritten";
  EXPECT_EQ(Subjects("Sent"), (std::vector<std::string>{"sent-1", "sent-2", "sent-3"}));
  ExpectEveryRecordHasItsFile();
}

// Was: backup and export skipped a record whose file is gone as "expunged meanwhile" and
// exited 0; a lost file is damage.
TEST_F(WriteLockTest, BackupReportsARecordWhoseFileIsMissingAsDamage) {
  std::string lost;
  {
    auto store = store::Store::Open(src_);
    auto f = store->OpenFolder("joe", "Sent");
    lost = f->MessagePath(f->Snapshot().messages.at(0).uid);
  }
  ASSERT_EQ(::unlink(lost.c_str()), 0);
  CliResult b = RunCli({"backup", "--store", src_, "-f", tmp_ / "damaged", "/"});
  EXPECT_NE(b.status, 0) << b.Describe();
  EXPECT_NE(b.err.find(lost), std::string::npos) << b.err;
  EXPECT_NE(b.err.find("missing"), std::string::npos) << b.err;
  CliResult e = RunCli({"export", "--store", src_, "-u", "joe", "-d", tmp_ / "export"});
  EXPECT_NE(e.status, 0) << e.Describe();
  EXPECT_NE(e.err.find("missing"), std::string::npos) << e.err;
}

// A rerun repairs damage too: a record whose file was lost gets its file back under its UID.
// Was: the rerun appended a second copy under a new UID and left the broken record.
TEST_F(WriteLockTest, RestoreRerunPutsBackALostFileUnderItsUid) {
  ASSERT_EQ(RunCli({"restore", "--store", dst_, "-f", tmp_ / "stream"}).status, 0);
  std::string lost;
  {
    auto store = store::Store::Open(dst_);
    auto f = store->OpenFolder("joe", "Sent");
    lost = f->MessagePath(f->Snapshot().messages.at(1).uid);
  }
  ASSERT_EQ(::unlink(lost.c_str()), 0);
  EXPECT_NE(RunCli({"verify", "--store", dst_, "--source", src_}).status, 0);
  CliResult rerun = RunCli({"restore", "--store", dst_, "-f", tmp_ / "stream"});
  EXPECT_EQ(rerun.status, 0) << rerun.Describe();
  EXPECT_NE((rerun.out + rerun.err).find("1 lost file repaired"), std::string::npos) << rerun.Describe();
  EXPECT_TRUE(PathExists(lost));
  EXPECT_EQ(Subjects("Sent"), (std::vector<std::string>{"sent-1", "sent-2", "sent-3"}));
  CliResult v = RunCli({"verify", "--store", dst_, "--source", src_});
  EXPECT_EQ(v.status, 0) << v.Describe();
}

}  // namespace
}  // namespace storemove
