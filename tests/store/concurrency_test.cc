// Several processes on one store: racing deliveries with a concurrent reader, and kill -9 in
// the middle of a delivery loop followed by recovery.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>
#include <map>
#include <random>
#include <set>

#include "store/mboxlist.h"
#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {
namespace {

using storemove::testing::TempDir;

std::string MessageFor(int writer, int i) {
  std::string body(size_t((writer * 7919 + i * 104729) % 5000), char('a' + (i % 26)));
  return "From: writer" + std::to_string(writer) + "@example.com\r\nSubject: " + std::to_string(i) + "\r\n\r\n" + body;
}

std::string ReadAllFd(int fd) {
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
  return out;
}

// Checks that every record of a snapshot names a complete file with the recorded digest.
void ExpectSnapshotConsistent(Folder& f, const FolderSnapshot& snap) {
  for (const MessageMeta& m : snap.messages) {
    UniqueFd fd = f.OpenMessage(m.uid);
    ASSERT_TRUE(fd.valid()) << "record without file: UID " << m.uid;
    std::string bytes = ReadAllFd(fd.get());
    ASSERT_EQ(bytes.size(), m.size) << "UID " << m.uid;
    ASSERT_EQ(DigestOf(bytes), m.digest) << "UID " << m.uid;
  }
}

TEST(Concurrency, RacingWritersNeverLoseAppendsAndReadersSeeCompleteMessages) {
  TempDir tmp;
  Store::Init(tmp.path(), {}).reset();
  constexpr int kWriters = 3, kPerWriter = 1000;
  int start[2];
  ASSERT_EQ(::pipe(start), 0);  // writers wait here until the reader is ready
  std::vector<pid_t> children;
  for (int w = 0; w < kWriters; ++w) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int rc = 0;
      char go;
      if (::read(start[0], &go, 1) != 1) ::_exit(3);
      try {
        auto store = Store::Open(tmp.path());
        auto f = store->CreateFolder("joe", "Race/deep");  // every writer races to create it
        for (int i = 0; i < kPerWriter; ++i) {
          auto msg = f->NewMessage();
          msg->Write(MessageFor(w, i));
          std::vector<StagedMessage> batch{msg->Finish({})};
          f->Commit(batch);
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "writer %d: %s\n", w, e.what());
        rc = 1;
      }
      ::_exit(rc);
    }
    children.push_back(pid);
  }
  auto store = Store::Open(tmp.path());
  ASSERT_EQ(::write(start[1], "gogo", kWriters), kWriters);
  int snapshots = 0, partial = 0;
  size_t running = children.size();
  while (running > 0) {
    int status;
    pid_t done = ::waitpid(-1, &status, WNOHANG);
    if (done > 0) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      --running;
      continue;
    }
    if (auto info = store->FindFolder("joe", "Race/deep")) {
      auto f = store->OpenFolder("joe", "Race/deep");
      FolderSnapshot snap = f->Snapshot();
      ExpectSnapshotConsistent(*f, snap);
      ++snapshots;
      if (snap.messages.size() > 0 && snap.messages.size() < size_t(kWriters * kPerWriter)) ++partial;
    }
  }
  auto f = store->OpenFolder("joe", "Race/deep");
  FolderSnapshot snap = f->Snapshot();
  ASSERT_EQ(snap.messages.size(), size_t(kWriters * kPerWriter));
  std::set<Digest> seen;
  for (size_t i = 0; i < snap.messages.size(); ++i) {
    EXPECT_EQ(snap.messages[i].uid, i + 1);
    seen.insert(snap.messages[i].digest);
  }
  for (int w = 0; w < kWriters; ++w)
    for (int i = 0; i < kPerWriter; ++i) EXPECT_TRUE(seen.count(DigestOf(MessageFor(w, i)))) << w << "/" << i;
  ExpectSnapshotConsistent(*f, snap);
  uint64_t total = 0;
  for (auto& m : snap.messages) total += m.size;
  EXPECT_EQ(snap.info.bytes, total);
  EXPECT_EQ(store->FindUser("joe")->quota_used, total);
  RecordProperty("reader_snapshots", snapshots);
  RecordProperty("snapshots_during_writes", partial);
  std::printf("reader took %d snapshots, %d while writers were appending\n", snapshots, partial);
}

TEST(Concurrency, KillNineDuringDeliveryLosesNoAcknowledgedMessage) {
  TempDir tmp;
  Store::Init(tmp.path(), {}).reset();
  std::mt19937 rng(12345);
  std::map<uint32_t, Digest> acknowledged;
  for (int round = 0; round < 6; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      try {
        auto store = Store::Open(tmp.path());
        store->CreateUser("joe");
        store->CreateFolder("joe", "Archive/" + std::to_string(round));  // a crash may also hit a create
        auto f = store->OpenFolder("joe", "INBOX");
        for (int i = 0;; ++i) {
          std::string bytes = MessageFor(round, i);
          auto msg = f->NewMessage();
          msg->Write(bytes);
          std::vector<StagedMessage> batch{msg->Finish({})};
          uint32_t uid = f->Commit(batch).at(0);
          // Acknowledge only after Commit returned, as deliver does to the MTA.
          std::string ack = std::to_string(uid) + " " + DigestOf(bytes).Hex() + "\n";
          if (::write(fds[1], ack.data(), ack.size()) != ssize_t(ack.size())) ::_exit(2);
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "deliverer: %s\n", e.what());
      }
      ::_exit(1);
    }
    ::close(fds[1]);
    size_t want = std::uniform_int_distribution<size_t>(5, 150)(rng);
    std::string acks;
    char buf[4096];
    size_t lines = 0;
    while (lines < want) {
      ssize_t n = ::read(fds[0], buf, sizeof buf);
      ASSERT_GT(n, 0) << "deliverer died early";
      acks.append(buf, size_t(n));
      lines = size_t(std::count(acks.begin(), acks.end(), '\n'));
    }
    ::kill(pid, SIGKILL);
    int status;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    acks += ReadAllFd(fds[0]);  // acknowledgements written before the kill landed
    ::close(fds[0]);
    size_t pos = 0;
    while (true) {
      size_t nl = acks.find('\n', pos);
      if (nl == std::string::npos) break;  // a torn last line was never a complete acknowledgement
      std::string line = acks.substr(pos, nl - pos);
      pos = nl + 1;
      Digest d;
      ASSERT_TRUE(Digest::FromHex(line.substr(line.find(' ') + 1), &d)) << line;
      acknowledged[uint32_t(std::stoul(line))] = d;
    }
    // Reopen: recovery runs, and every acknowledged message is there and intact.
    auto store = Store::Open(tmp.path());
    auto f = store->OpenFolder("joe", "INBOX");
    FolderSnapshot snap = f->Snapshot();
    std::map<uint32_t, Digest> present;
    for (const MessageMeta& m : snap.messages) present[m.uid] = m.digest;
    for (const auto& [uid, digest] : acknowledged) {
      ASSERT_TRUE(present.count(uid)) << "acknowledged UID " << uid << " lost in round " << round;
      EXPECT_EQ(present[uid], digest);
    }
    ExpectSnapshotConsistent(*f, snap);
    // The store keeps working after the crash.
    auto msg = f->NewMessage();
    msg->Write("after crash\n\nok");
    std::vector<StagedMessage> batch{msg->Finish({})};
    uint32_t uid = f->Commit(batch).at(0);
    acknowledged[uid] = DigestOf("after crash\n\nok");
  }
  // Every mboxlist file passes the Berkeley DB verifier after a clean close.
  for (const char* db : {"folder.db", "quota.db", "user.db", "subscr.db", "peruser.db", "lright.db"}) {
    std::string cmd = "db5.3_verify -q " + tmp.path() + "/mboxlist/" + db + " 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
}

// Threads of one process (serve's sessions) share a Store: one user is written by one thread at
// a time, the waiter is told why it waits, and a creation by anyone else is deferred, not run
// under the holder (docs/store-format.md §6.9).
TEST(WriteLock, ThreadsTakeTurnsAndOthersCannotCreateFoldersMeanwhile) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  std::optional<Store::UserWriteLock> held = store->LockUserForWriting("joe");
  EXPECT_TRUE(store->HoldsUserWriteLock("joe"));
  EXPECT_THROW(store->LockUserForWriting("joe"), Error);  // not re-entrant: a bug, said at once
  auto unpublished = store->CreateUnpublishedFolder("joe", "Sent", 1234);

  std::atomic<bool> waited{false}, acquired{false};
  std::mutex m;
  std::condition_variable told;
  std::thread other([&] {
    try {
      store->CreateFolder("joe", "Sent");
      ADD_FAILURE() << "created a folder under another thread's write lock";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kTempFail) << e.what();
    }
    Store::UserWriteLock mine = store->LockUserForWriting("joe", [&](const std::string& why) {
      EXPECT_NE(why.find("joe"), std::string::npos) << why;
      std::lock_guard<std::mutex> g(m);
      waited = true;
      told.notify_all();
    });
    acquired = true;
    EXPECT_TRUE(store->HoldsUserWriteLock("joe"));
    EXPECT_TRUE(store->FindFolder("joe", "Sent"));  // published by the first holder
  });
  {
    std::unique_lock<std::mutex> g(m);
    told.wait(g, [&] { return waited.load(); });
  }
  EXPECT_FALSE(acquired);
  EXPECT_FALSE(store->HoldsUserWriteLock("nobody"));
  store->PublishFolder(*unpublished);
  unpublished.reset();
  held.reset();
  other.join();
  EXPECT_TRUE(acquired);
  EXPECT_FALSE(store->HoldsUserWriteLock("joe"));
  // Without the lock an unpublished folder is refused: nothing would keep creators away.
  EXPECT_THROW(store->CreateUnpublishedFolder("joe", "Drafts", 1), Error);
}

// A second process sees the lock too, and a creation there is deferred (deliver exits 75).
TEST(WriteLock, AnotherProcessCannotCreateAFolderOfAWriteLockedUser) {
#if defined(__SANITIZE_THREAD__)
  // The parent's open store runs lock detector and guard threads; TSan cannot follow threads a child forked
  // from a multi-threaded process starts ("dup thread with used id"). Run in the normal build.
  GTEST_SKIP() << "fork of a multi-threaded process: not followed by ThreadSanitizer";
#endif
  TempDir tmp;
  Store::Init(tmp.path(), {}).reset();
  auto store = Store::Open(tmp.path());
  Store::UserWriteLock held = store->LockUserForWriting("joe");
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int rc = 1;
    try {
      auto other = Store::Open(tmp.path());
      other->CreateFolder("joe", "Sent");
      rc = 2;  // created under the holder
    } catch (const Error& e) {
      rc = e.code() == Errc::kTempFail ? 0 : 3;
    }
    ::_exit(rc);
  }
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
  EXPECT_FALSE(store->FindFolder("joe", "Sent"));
}

// A bounded wait (a server session's) gives up with kTempFail after its timeout or once it is
// cancelled, whether the holder is another thread of this process or another process; it then
// holds nothing, and takes the user as soon as the holder lets go.
void ExpectBoundedWaitsGiveUp(Store& store, const std::string& holder) {
  auto expect_temp_fail = [&](const Store::LockWait& wait, const std::string& says) {
    try {
      store.LockUserForWriting("joe", wait);
      ADD_FAILURE() << "took a user " << holder << " holds";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kTempFail) << e.what();
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
    EXPECT_FALSE(store.HoldsUserWriteLock("joe"));
  };
  std::thread([&] { expect_temp_fail({{}, 1, {}}, holder + " has been writing it for over 1 s"); }).join();
  // Cancelled once the waiter has said it waits: the wait must notice while it goes on.
  std::atomic<bool> cancel{false};
  std::mutex m;
  std::condition_variable told;
  bool waiting = false;
  std::thread waiter([&] {
    Store::LockWait wait;
    wait.on_wait = [&](const std::string&) {
      std::lock_guard<std::mutex> g(m);
      waiting = true;
      told.notify_all();
    };
    wait.cancelled = [&] { return cancel.load(); };
    expect_temp_fail(wait, "cancelled");
  });
  {
    std::unique_lock<std::mutex> g(m);
    told.wait(g, [&] { return waiting; });
  }
  cancel = true;
  waiter.join();
}

TEST(WriteLock, ABoundedWaitGivesUpAfterItsTimeoutOrWhenCancelled) {
#if defined(__SANITIZE_THREAD__)
  // The parent's open store runs lock detector and guard threads; TSan cannot follow threads a child forked
  // from a multi-threaded process starts ("dup thread with used id"). Run in the normal build.
  GTEST_SKIP() << "fork of a multi-threaded process: not followed by ThreadSanitizer";
#endif
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {});
  {
    std::optional<Store::UserWriteLock> held = store->LockUserForWriting("joe");
    ExpectBoundedWaitsGiveUp(*store, "another session of this process");
  }
  // Another process holds it (flock): the wait cannot sleep in flock(2) and still give up.
  int up[2], down[2];
  ASSERT_EQ(::pipe(up), 0);
  ASSERT_EQ(::pipe(down), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(up[0]);
    ::close(down[1]);
    int rc = 0;
    try {
      auto other = Store::Open(tmp.path());
      Store::UserWriteLock held = other->LockUserForWriting("joe");
      char c = 1;
      if (::write(up[1], &c, 1) != 1) rc = 2;
      while (::read(down[0], &c, 1) > 0) {
      }  // until the parent closes its end
    } catch (...) {
      rc = 3;
    }
    ::_exit(rc);
  }
  ::close(up[1]);
  ::close(down[0]);
  char c = 0;
  ASSERT_EQ(::read(up[0], &c, 1), 1) << "the child did not take the lock";
  ExpectBoundedWaitsGiveUp(*store, "another storemove process");
  ::close(down[1]);  // the child lets go and exits
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
  ::close(up[0]);
  Store::UserWriteLock mine = store->LockUserForWriting("joe", Store::LockWait{{}, 30, {}});
  EXPECT_TRUE(store->HoldsUserWriteLock("joe"));
}


// --- a mboxlist lock that is never released ------------------------------------------------------

// A child that holds a write lock on joe's user record (a transaction left open) until killed;
// returns once the lock is held.
pid_t HoldJoesRecord(const std::string& root) {
  int ready[2];
  EXPECT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(ready[0]);
    auto store = Store::Open(root);
    Store::Db& db = store->db();
    db.Txn([&](DB_TXN* txn) {
      std::string value;
      db.Get(db.users(), txn, "joe", &value, /*for_update=*/true);
      db.Put(db.users(), txn, "joe", value);
      (void)!::write(ready[1], "x", 1);
      for (;;) ::pause();
    });
    ::_exit(1);
  }
  ::close(ready[1]);
  char c;
  EXPECT_EQ(::read(ready[0], &c, 1), 1) << "the holder did not get its lock";
  ::close(ready[0]);
  return pid;
}

// A child that looks joe up: exits 0 found, 3 kTempFail, 1 anything else (75 is the guard's
// own exit); SIGALRM if it is still waiting after `limit` seconds.
pid_t LookUpJoe(const std::string& root, unsigned limit) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(limit);
    int rc = 1;
    try {
      rc = Store::Open(root)->FindUser("joe") ? 0 : 1;
    } catch (const Error& e) {
      rc = e.code() == Errc::kTempFail ? 3 : 1;
    } catch (...) {
    }
    ::_exit(rc);
  }
  return pid;
}

std::string HowItEnded(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return "waitpid failed";
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  return "signal " + std::to_string(WTERMSIG(status)) + (WTERMSIG(status) == SIGALRM ? " (still waiting: hung)" : "");
}

// libdb checks lock timeouts only when its detector runs: without Store::Db's watch, a request
// behind a stopped holder waited forever (and a timeout, when it came, posed as a deadlock that
// Txn retried 50 times). Now: kTempFail after its 10 s timeout.
TEST(MboxlistLocks, AHolderThatNeverLetsGoIsATemporaryFailureNotAHang) {
  TempDir tmp;
  Store::Init(tmp.path(), {})->CreateUser("joe");
  const pid_t holder = HoldJoesRecord(tmp.path());
  const pid_t waiter = LookUpJoe(tmp.path(), 60);
  EXPECT_EQ(HowItEnded(waiter), "exit 3");
  ::kill(holder, SIGKILL);
  HowItEnded(holder);
  EXPECT_TRUE(Store::Open(tmp.path())->FindUser("joe"));  // recovered, the record as it was
}

// The holder is killed -9 while a request waits for it, and another process opens the store:
// DB_REGISTER recovers the environment, whose old regions the waiter still sleeps in, and libdb
// wakes no waiter there. Found hanging for 10 minutes in a migrate under kill -9 (helper-38).
// Since failchk (docs/store-format.md §3) that open first aborts the dead holder's transaction,
// which wakes the waiter, and then recovers (the holder died inside its transaction): the waiter
// finishes its lookup (0) or meets the panicked environment (3, or 75 from its guard). It must
// end, and soon.
TEST(MboxlistLocks, AWaiterForAProcessThatDiedEndsWhenAnotherRecoversTheEnvironment) {
  TempDir tmp;
  Store::Init(tmp.path(), {})->CreateUser("joe");
  const pid_t holder = HoldJoesRecord(tmp.path());
  uint64_t waits_before;
  {
    auto store = Store::Open(tmp.path());
    waits_before = store->db().LockWaits();
  }
  const pid_t waiter = LookUpJoe(tmp.path(), 90);
  {
    auto store = Store::Open(tmp.path());
    // The waiter is asleep on the holder's lock once the environment counts one more wait.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (store->db().LockWaits() == waits_before) {
      ASSERT_EQ(::waitpid(waiter, nullptr, WNOHANG), 0) << "the waiter ended before it waited";
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the waiter never waited for the lock";
      std::this_thread::yield();
    }
  }
  ::kill(holder, SIGKILL);
  EXPECT_EQ(HowItEnded(holder), "signal 9");
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(Store::Open(tmp.path())->FindUser("joe"));  // this open recovers the environment
  const std::string how = HowItEnded(waiter);
  EXPECT_TRUE(how == "exit 0" || how == "exit 3" || how == "exit 75") << how;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

}  // namespace
}  // namespace storemove::store
