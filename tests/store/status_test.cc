// Store::SetUsersStatus: many users' statuses in one transaction under every user's delivery
// gate (migrate's hold and switch of a group). Events are ordered by watching the kernel's lock
// table (/proc/locks shows a blocked flock as "->"), never by sleeping.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include "store/admin.h"
#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {
namespace {

using storemove::testing::TempDir;

std::string GatePath(Store& store, const std::string& user) {
  return store.PartitionPath(store.FindUser(user)->partition) + "/" + FolderRelPath(user, "INBOX") + "/user.lck";
}

// How many processes or threads wait for a flock on `path` right now.
int WaitersOn(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  char id[64];
  std::snprintf(id, sizeof id, "%02x:%02x:%llu", major(st.st_dev), minor(st.st_dev),
                static_cast<unsigned long long>(st.st_ino));
  std::ifstream locks("/proc/locks");
  std::string line;
  int n = 0;
  while (std::getline(locks, line)) {
    std::istringstream words(line);
    std::string w;
    bool waiter = false, flock = false, ours = false;
    while (words >> w) {
      waiter = waiter || w == "->";
      flock = flock || w == "FLOCK";
      ours = ours || w == id;
    }
    n += waiter && flock && ours;
  }
  return n;
}

// Spins (yielding) until `ready` holds; fails the test if `broken` holds first.
void AwaitOrFail(const std::function<bool()>& ready, const std::function<bool()>& broken, const char* what) {
  while (!ready()) {
    ASSERT_FALSE(broken()) << what;
    std::this_thread::yield();
  }
}

uint32_t Count(Store& store, const std::string& user) { return store.FindFolder(user, "INBOX")->count; }

void Append(Store& store, const std::string& user, const std::string& bytes) {
  auto f = store.OpenFolder(user, "INBOX");
  auto w = f->NewMessage();
  w->Write(bytes);
  std::vector<StagedMessage> batch{w->Finish({})};
  f->Commit(batch);
}

TEST(SetUsersStatus, LeavesMovedUsersWhenAskedAndReportsWhatItRead) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {"primary"});
  for (const char* u : {"amy", "bob", "cy"}) store->CreateUser(u);
  store->SetUserStatus("bob", UserStatus::Parse("moved:mail2"));
  store->SetUserStatus("cy", UserStatus{UserState::kHold, ""});
  auto before = store->SetUsersStatus({"amy", "bob", "cy"}, UserStatus{}, Store::MovedUsers::kLeave);
  ASSERT_EQ(before.size(), 3u);
  EXPECT_EQ(before[0], std::make_pair(std::string("amy"), UserStatus{}));
  EXPECT_EQ(before[1], std::make_pair(std::string("bob"), UserStatus::Parse("moved:mail2")));
  EXPECT_EQ(before[2], std::make_pair(std::string("cy"), UserStatus{UserState::kHold, ""}));
  EXPECT_EQ(store->FindUser("bob")->status, UserStatus::Parse("moved:mail2"));
  EXPECT_EQ(store->FindUser("cy")->status, UserStatus{});
  // Migrate's switch (kChange, the default) moves anyone listed, moved or not.
  store->SetUsersStatus({"amy", "bob"}, UserStatus::Parse("moved:mail3"));
  EXPECT_EQ(store->FindUser("bob")->status, UserStatus::Parse("moved:mail3"));
  EXPECT_EQ(store->FindUser("amy")->status, UserStatus::Parse("moved:mail3"));
}

// A pull's hold is marked (user.db's flags byte, with a user's renames and without): kept across
// a reopen, returned as the status before, and cleared by any status change that does not say so.
TEST(SetUsersStatus, APullsHoldIsMarkedUntilAnotherStatusChange) {
  TempDir tmp;
  {
    auto store = Store::Init(tmp.path(), {"primary"});
    for (const char* u : {"amy", "bob"}) store->CreateUser(u);
    RenameUser(*store, "bob", "bo");
    UserStatus pull{UserState::kHold, ""};
    pull.held_by_pull = true;
    store->SetUserStatus("amy", pull);
    auto before = store->SetUsersStatus({"bo"}, pull);
    EXPECT_FALSE(before.at(0).second.held_by_pull);
  }
  auto store = Store::Open(tmp.path());
  EXPECT_TRUE(store->FindUser("amy")->status.held_by_pull);
  EXPECT_TRUE(store->FindUser("bo")->status.held_by_pull);
  EXPECT_EQ(store->FindUser("bo")->renames.size(), 1u);
  auto before = store->SetUsersStatus({"amy"}, UserStatus{UserState::kHold, ""});  // held by hand now
  EXPECT_TRUE(before.at(0).second.held_by_pull);
  EXPECT_FALSE(store->FindUser("amy")->status.held_by_pull);
  store->SetUserStatus("bo", UserStatus{});
  EXPECT_FALSE(store->FindUser("bo")->status.held_by_pull);
  EXPECT_EQ(store->FindUser("bo")->renames.size(), 1u);
}

TEST(SetUsersStatus, AllOrNothingInOneCall) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {"primary", "secondary"});
  store->CreateUser("amy");
  store->CreateUser("bob", "secondary");
  store->CreateUser("cy");
  store->SetUsersStatus({"cy", "amy", "bob", "amy"}, UserStatus{UserState::kHold, ""});  // duplicates are fine
  for (const char* u : {"amy", "bob", "cy"}) EXPECT_EQ(store->FindUser(u)->status.state, UserState::kHold) << u;

  try {
    store->SetUsersStatus({"amy", "ghost1", "bob", "ghost2"}, UserStatus::Parse("moved:mail2"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kNoUser);
    EXPECT_STREQ(e.what(), "no such user: ghost1");
  }
  for (const char* u : {"amy", "bob", "cy"}) EXPECT_EQ(store->FindUser(u)->status.state, UserState::kHold) << u;
  EXPECT_THROW(store->SetUsersStatus({"amy", "../x"}, UserStatus{}), Error);
  EXPECT_EQ(store->FindUser("amy")->status.state, UserState::kHold);

  store->SetUsersStatus({}, UserStatus{});
  store->SetUsersStatus({"bob", "amy"}, UserStatus::Parse("moved:mail2"));
  EXPECT_EQ(store->FindUser("amy")->status, UserStatus::Parse("moved:mail2"));
  EXPECT_EQ(store->FindUser("bob")->status, UserStatus::Parse("moved:mail2"));
  EXPECT_EQ(store->FindUser("cy")->status.state, UserState::kHold);
}

// A delivery to bob that saw `active` holds bob's gate and is still appending: the call waits
// for it, changes nobody meanwhile (not even amy, whose gate it already holds), and a real
// `storemove deliver` to amy that arrives meanwhile waits at amy's gate and is deferred (75).
TEST(SetUsersStatus, WaitsForDeliveriesInFlightAndDefersTheOnesThatCome) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {"primary"});
  for (const char* u : {"amy", "bob", "cy"}) store->CreateUser(u);

  std::optional<Store::UserGate> delivering(store->LockUserForDelivery("bob"));
  ASSERT_EQ(store->FindUser("bob")->status.state, UserState::kActive);  // what the delivery saw

  std::atomic<bool> returned{false};
  std::thread holder([&] {
    store->SetUsersStatus({"cy", "bob", "amy"}, UserStatus{UserState::kHold, ""});
    returned = true;
  });
  const std::string bob_gate = GatePath(*store, "bob");
  AwaitOrFail([&] { return WaitersOn(bob_gate) == 1; }, [&] { return returned.load(); },
              "SetUsersStatus returned while a delivery that saw `active` held bob's gate");

  // amy's gate is taken (user-id order: amy, then bob), so a delivery to amy waits there.
  const std::string in = tmp / "message", out = tmp / "deliver.out", err = tmp / "deliver.err";
  {
    std::ofstream(in, std::ios::binary) << "From: x@example.com\r\nSubject: late\r\n\r\nbody\r\n";
    std::ofstream touch(err);  // read below while the child runs
  }
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int i = ::open(in.c_str(), O_RDONLY), o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600),
        e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (i < 0 || o < 0 || e < 0) ::_exit(126);
    ::dup2(i, 0), ::dup2(o, 1), ::dup2(e, 2);
    ::execl(STOREMOVE_BIN, STOREMOVE_BIN, "deliver", "--store", tmp.path().c_str(), "-u", "amy", nullptr);
    ::_exit(127);
  }
  int child_status = 0;
  // deliver asks for the gate with LOCK_NB (its --lock-wait bounds the wait), so /proc/locks
  // shows no waiter: it says it waits, after half a second.
  AwaitOrFail([&] { return ReadFile(err).find("waiting for user amy: its delivery gate") != std::string::npos; },
              [&] { return ::waitpid(child, &child_status, WNOHANG) == child; },
              "deliver to amy finished while SetUsersStatus held amy's gate");
  // Nothing is changed piecemeal: amy's gate is held, yet amy is still active.
  EXPECT_EQ(store->FindUser("amy")->status.state, UserState::kActive);
  EXPECT_FALSE(returned);

  Append(*store, "bob", "From: x@example.com\r\nSubject: in flight\r\n\r\nbody\r\n");  // the delivery completes
  delivering.reset();
  holder.join();
  for (const char* u : {"amy", "bob", "cy"}) EXPECT_EQ(store->FindUser(u)->status.state, UserState::kHold) << u;
  EXPECT_EQ(Count(*store, "bob"), 1u);  // the message that saw `active` is there

  ASSERT_EQ(::waitpid(child, &child_status, 0), child);
  ASSERT_TRUE(WIFEXITED(child_status));
  EXPECT_EQ(WEXITSTATUS(child_status), 75) << ReadFile(err);
  EXPECT_NE(ReadFile(err).find("on hold"), std::string::npos) << ReadFile(err);
  EXPECT_EQ(Count(*store, "amy"), 0u);
}

// A recount without a bound of its own (pull, a folder delete whose index cannot be read) waits
// for the gate as long as it takes, but says so through the store's on_wait: it waited in
// silence (helper-147 #3).
TEST(RecomputeQuota, AWaitForTheGateIsSaidEvenWithoutABound) {
  TempDir tmp;
  Store::Init(tmp.path(), {"primary"})->CreateUser("amy");
  std::mutex said_mutex;
  std::string said;
  StoreOptions options;
  options.on_wait = [&](const std::string& why) {
    std::lock_guard<std::mutex> lock(said_mutex);
    said += why + "\n";
  };
  auto store = Store::Open(tmp.path(), options);
  std::optional<Store::UserGate> delivering(store->LockUserForDelivery("amy"));
  std::atomic<bool> returned{false};
  std::thread recount([&] {
    store->RecomputeQuota("amy");
    returned = true;
  });
  auto told = [&] {
    std::lock_guard<std::mutex> lock(said_mutex);
    return said.find("waiting for user amy: its delivery gate") != std::string::npos;
  };
  AwaitOrFail(told, [&] { return returned.load(); }, "RecomputeQuota returned while a delivery held amy's gate");
  delivering.reset();
  recount.join();
  EXPECT_TRUE(returned);
}

// A group bigger than the soft descriptor limit (one gate descriptor per user): the limit is
// raised as far as the hard limit allows rather than failing with EMFILE halfway.
TEST(SetUsersStatus, AGroupLargerThanTheSoftDescriptorLimit) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {"primary"});
  std::vector<std::string> users;
  for (int i = 0; i < 400; ++i) {
    users.push_back("user" + std::to_string(i));
    store->CreateUser(users.back(), {}, /*with_inbox=*/false);
  }
  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max < 1000) GTEST_SKIP() << "hard RLIMIT_NOFILE below 1000";
  struct rlimit low = saved;
  low.rlim_cur = 300;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  store->SetUsersStatus(users, UserStatus{UserState::kHold, ""});
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  for (const std::string& u : users) ASSERT_EQ(store->FindUser(u)->status.state, UserState::kHold) << u;
}

// Overlapping lists in opposite orders, and single-user calls, from several threads at once:
// the fixed gate order means this always finishes.
TEST(SetUsersStatus, OverlappingCallsDoNotDeadlock) {
  TempDir tmp;
  auto store = Store::Init(tmp.path(), {"primary"});
  const std::vector<std::string> users{"u1", "u2", "u3", "u4"};
  for (const std::string& u : users) store->CreateUser(u);
  auto work = std::async(std::launch::async, [&] {
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t)
      threads.emplace_back([&, t] {
        std::vector<std::string> mine = users;
        if (t == 1) std::reverse(mine.begin(), mine.end());
        for (int i = 0; i < 100; ++i) {
          UserStatus s{(i + t) % 2 ? UserState::kHold : UserState::kActive, ""};
          if (t == 2) {
            store->SetUserStatus(users[size_t(i) % users.size()], s);
          } else {
            store->SetUsersStatus(mine, s);
          }
        }
      });
    for (std::thread& th : threads) th.join();
  });
  // A deadlock would hang forever; fail loudly instead of waiting for the ctest timeout.
  if (work.wait_for(std::chrono::minutes(2)) != std::future_status::ready) {
    ADD_FAILURE() << "SetUsersStatus calls deadlocked";
    std::_Exit(1);
  }
  work.get();
}

}  // namespace
}  // namespace storemove::store
