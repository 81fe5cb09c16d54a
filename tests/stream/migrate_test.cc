// storemove migrate over loopback: groups in parallel, failures and reruns, and zero loss while a
// test MTA keeps delivering (through the real `storemove deliver`) during the migration.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "store/generate.h"
#include "stream/migrate.h"
#include "stream/net.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"

namespace storemove::stream {
namespace {

using storemove::testing::TempDir;
namespace fs = std::filesystem;

std::string Corpus() { return fs::exists(STOREMOVE_CORPUS) ? STOREMOVE_CORPUS : ""; }

// A storemove server in a thread of this process.
class Server {
 public:
  Server(store::Store& store, net::Credentials credentials) {
    net::ServeOptions o;
    o.listen = "127.0.0.1:0";
    o.credentials = std::move(credentials);
    std::promise<net::Endpoint> bound;
    auto ready = bound.get_future();
    o.on_listening = [&](const net::Endpoint& e) { bound.set_value(e); };
    options_ = o;
    thread_ = std::thread([this, &store] { net::Serve(store, options_, &stop_, log_); });
    endpoint_ = ready.get();
    options_.on_listening = nullptr;
  }
  ~Server() {
    stop_ = true;
    thread_.join();
  }
  const net::Endpoint& endpoint() const { return endpoint_; }

 private:
  net::ServeOptions options_;
  std::atomic<bool> stop_{false};
  std::ostringstream log_;
  std::thread thread_;
  net::Endpoint endpoint_;
};

std::unique_ptr<store::Store> MakeSource(const std::string& dir, uint32_t users, uint32_t per_user) {
  auto s = store::Store::Init(dir, {"primary"});
  store::GenerateOptions g;
  g.users = users;
  g.messages_per_user = per_user;
  g.dup_rate = 0.15;
  g.corpus_dir = Corpus();
  g.seed = 11;
  store::Generate(*s, g);
  std::ofstream(dir + "/config/backup-groups.conf") << "ae=[a-e].*\nfm=[f-m].*\nnz=[n-z].*\ndigits=[0-9].*\n";
  return s;
}

MigrateOptions Options(const std::string& source_dir, const net::Endpoint& to, const net::Credentials& c, int jobs) {
  MigrateOptions o;
  o.groups_file = source_dir + "/config/backup-groups.conf";
  o.jobs = jobs;
  o.to = to;
  o.client.credentials = c;
  o.client.timeout_seconds = 30;
  return o;
}

// Everything but the status (which the switch changes on purpose) must be equal.
void ExpectMigrated(store::Store& dst, store::Store& src, const std::string& host) {
  VerifyReport r = CompareStores(dst, src, {});
  for (const std::string& d : r.differences)
    EXPECT_NE(d.find(": status is active, source has moved:" + host), std::string::npos) << d;
  src.ForEachUser([&](const store::UserInfo& u) {
    EXPECT_EQ(u.status.ToString(), "moved:" + host) << u.user;
    EXPECT_EQ(dst.FindUser(u.user)->status.ToString(), "active") << u.user;
  });
}

TEST(Migrate, FourGroupsTwoJobsOverTlsPsk) {
  TempDir tmp;
  auto src = MakeSource(tmp / "src", 24, 12);
  auto dst = store::Store::Init(tmp / "dst", {"primary"});
  net::WriteKeyFile(tmp / "key");
  net::Credentials psk;
  psk.key_file = tmp / "key";
  Server server(*dst, psk);
  MigrateReport report = Migrate(*src, Options(tmp / "src", server.endpoint(), psk, 2));
  ASSERT_TRUE(report.ok()) << report.Text();
  EXPECT_EQ(report.groups.size(), 4u);
  ExpectMigrated(*dst, *src, "127.0.0.1");
  // A rerun finds every user moved already and sends nothing.
  MigrateReport again = Migrate(*src, Options(tmp / "src", server.endpoint(), psk, 2));
  ASSERT_TRUE(again.ok());
  for (const GroupReport& g : again.groups) {
    EXPECT_EQ(g.users, 0u);
    EXPECT_EQ(g.bytes_sent, 0u);
  }
  EXPECT_NE(report.Json().find("\"phase_seconds\""), std::string::npos);
}

TEST(Migrate, UnreachableDestinationFailsRetriesAndGivesUsersBackThenRerunCompletes) {
  TempDir tmp;
  auto src = MakeSource(tmp / "src", 8, 5);
  auto dst = store::Store::Init(tmp / "dst", {"primary"});
  net::Credentials insecure;
  insecure.insecure = true;
  net::Endpoint nowhere;
  {
    Server probe(*dst, insecure);  // a port that was free a moment ago and is closed again
    nowhere = probe.endpoint();
  }
  MigrateOptions o = Options(tmp / "src", nowhere, insecure, 2);
  o.retries = 1;
  MigrateReport failed = Migrate(*src, o);
  EXPECT_FALSE(failed.ok());
  for (const GroupReport& g : failed.groups) {
    if (g.users == 0) continue;
    EXPECT_EQ(g.attempts, 2);
    EXPECT_FALSE(g.errors.empty());
  }
  src->ForEachUser([&](const store::UserInfo& u) { EXPECT_EQ(u.status.ToString(), "active") << u.user; });
  Server server(*dst, insecure);
  MigrateReport done = Migrate(*src, Options(tmp / "src", server.endpoint(), insecure, 2));
  ASSERT_TRUE(done.ok()) << done.Text();
  ExpectMigrated(*dst, *src, "127.0.0.1");
}

TEST(Migrate, DeleteSourceRemovesOnlyVerifiedUsers) {
  TempDir tmp;
  auto src = MakeSource(tmp / "src", 6, 5);
  auto dst = store::Store::Init(tmp / "dst", {"primary"});
  net::Credentials insecure;
  insecure.insecure = true;
  Server server(*dst, insecure);
  std::vector<std::string> users;
  src->ForEachUser([&](const store::UserInfo& u) { users.push_back(u.user); });
  MigrateOptions o = Options(tmp / "src", server.endpoint(), insecure, 1);
  o.delete_source = true;
  MigrateReport report = Migrate(*src, o);
  ASSERT_TRUE(report.ok()) << report.Text();
  for (const std::string& u : users) {
    // The mailboxes are gone; the record stays with its forwarding status (late mail is
    // deferred to the new host, not bounced).
    ASSERT_TRUE(src->FindUser(u)) << u;
    EXPECT_EQ(src->FindUser(u)->status.state, store::UserState::kMoved) << u;
    EXPECT_TRUE(src->ListFolders(u).empty()) << u;
    ASSERT_TRUE(dst->FindUser(u)) << u;
  }
}

// --- zero loss under live delivery ---------------------------------------------------------

struct Delivery {
  std::string user;
  std::string bytes;
};

// Runs `storemove deliver`, feeding `bytes` on stdin; returns the exit status and stderr.
std::pair<int, std::string> RunDeliver(const std::string& store, const std::string& user, const std::string& bytes,
                                       const std::string& scratch) {
  std::string in = scratch + ".in", err = scratch + ".err";
  std::ofstream(in, std::ios::binary) << bytes;
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(in.c_str(), O_RDONLY), efd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 0);
    ::dup2(efd, 2);
    ::execl(STOREMOVE_BIN, STOREMOVE_BIN, "deliver", "--store", store.c_str(), "--user", user.c_str(), (char*)nullptr);
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::ifstream e(err);
  std::string text((std::istreambuf_iterator<char>(e)), {});
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, text};
}

TEST(Migrate, ZeroLossUnderLiveDelivery) {
  TempDir tmp;
  auto src = MakeSource(tmp / "src", 16, 10);
  auto dst = store::Store::Init(tmp / "dst", {"primary"});
  net::Credentials insecure;
  insecure.insecure = true;
  Server server(*dst, insecure);
  std::vector<std::string> users;
  src->ForEachUser([&](const store::UserInfo& u) { users.push_back(u.user); });

  // The test MTA: two queue runners deliver distinct messages; a temporary failure while the
  // user is on hold is retried, and once the user has moved the message goes to the new host.
  constexpr int kMessages = 600;
  std::vector<Delivery> queue;
  for (int i = 0; i < kMessages; ++i)
    queue.push_back({users[size_t(i) % users.size()],
                     "Message-ID: <mta-" + std::to_string(i) + "@test>\r\nSubject: live " + std::to_string(i) +
                         "\r\n\r\nbody " + std::to_string(i) + "\r\n"});
  std::atomic<size_t> next{0};
  std::atomic<int> to_source{0}, to_destination{0}, deferred{0}, failures{0};
  std::atomic<bool> migration_done{false};
  auto runner = [&](int id) {
    std::string scratch = tmp / ("mta" + std::to_string(id));
    for (size_t i; (i = next++) < queue.size();) {
      const Delivery& d = queue[i];
      for (int attempt = 0;; ++attempt) {
        auto [status, err] = RunDeliver(tmp / "src", d.user, d.bytes, scratch);
        if (status == 0) {
          ++to_source;
          break;
        }
        if (status == 75 && err.find("has moved to 127.0.0.1") != std::string::npos) {
          auto [s2, e2] = RunDeliver(tmp / "dst", d.user, d.bytes, scratch);
          if (s2 == 0) {
            ++to_destination;
            break;
          }
          ADD_FAILURE() << "destination refused: " << e2;
          ++failures;
          break;
        }
        if (status != 75 || attempt > 2000) {
          ADD_FAILURE() << "delivery failed: exit " << status << " " << err;
          ++failures;
          break;
        }
        ++deferred;
        // An MTA's retry interval for a deferred message (not synchronisation: any delay works).
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      // Keep part of the queue for after the switch, so both routes are exercised.
      while (i > queue.size() * 3 / 4 && !migration_done) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  std::thread mta1(runner, 1), mta2(runner, 2);
  while (next < queue.size() / 4) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  MigrateReport report = Migrate(*src, Options(tmp / "src", server.endpoint(), insecure, 2));
  migration_done = true;
  mta1.join();
  mta2.join();
  ASSERT_TRUE(report.ok()) << report.Text();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(to_source + to_destination, kMessages);
  EXPECT_GT(to_destination, 0);
  RecordProperty("delivered_to_source", to_source.load());
  RecordProperty("delivered_to_destination", to_destination.load());
  RecordProperty("deferred", deferred.load());

  // Every acknowledged message is in the destination exactly once.
  std::map<Digest, int> found;
  dst->ForEachFolder([&](const store::FolderInfo& f) {
    for (const auto& m : dst->OpenFolder(f.user, f.folder)->Snapshot().messages) ++found[m.digest];
  });
  for (const Delivery& d : queue) EXPECT_EQ(found[DigestOf(d.bytes)], 1) << d.bytes.substr(0, 30);
}

}  // namespace
}  // namespace storemove::stream
