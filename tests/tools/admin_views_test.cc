// The administrator's views through the real binary: `groups`, `users`, the bulk form of
// `user --status` and `migrate --dry-run`.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"

namespace storemove::tools {
namespace {

using storemove::testing::CliResult;
using storemove::testing::IsOneErrorLine;
using storemove::testing::RunCli;
using storemove::testing::TempDir;
namespace fs = std::filesystem;

class AdminViews : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_ / "store";
    ASSERT_EQ(RunCli({"init", "--store", root_}).status, 0);
    for (const char* user : {"alice", "bob", "carol", "mike", "nina", "zed", "9lives"}) Deliver(user, 2);
    // bob matches both ab and b: migrate (and `groups`) take him with ab, the first.
    std::ofstream(root_ + "/config/backup-groups.conf") << "# test groups\nab=[ab].*\nb=b.*\nmn=[m-n].*\n";
  }
  void Deliver(const std::string& user, int n) {
    for (int i = 0; i < n; ++i) {
      CliResult r = RunCli({"deliver", "--store", root_, "--user", user, "--create"},
                           "Subject: " + std::to_string(i) + "\r\n\r\nbody of " + user + "\r\n");
      ASSERT_EQ(r.status, 0) << r.Describe();
    }
  }
  std::map<std::string, std::string> Statuses() {
    CliResult r = RunCli({"users", "--store", root_, "--json"});
    EXPECT_EQ(r.status, 0) << r.Describe();
    std::map<std::string, std::string> out;
    const nlohmann::json j = nlohmann::json::parse(r.out);  // kept alive for the loop
    for (const auto& u : j["users"])
      out[u["user"].get<std::string>()] = u["status"].get<std::string>();
    EXPECT_EQ(out.size(), 7u) << r.out;  // every user, so no comparison of statuses is vacuous
    return out;
  }
  TempDir tmp_;
  std::string root_;
};

TEST_F(AdminViews, GroupsListsMembersOverlapsAndUsersInNoGroup) {
  CliResult r = RunCli({"groups", "--store", root_});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out,
            "group ab ([ab].*): 2 users\n  alice\n  bob\n"
            "group b (b.*): 0 users\n  also matched, in an earlier group for migrate: 1 user\n    bob\n"
            "group mn ([m-n].*): 2 users\n  mike\n  nina\n"
            "in no group: 3 users\n  9lives\n  carol\n  zed\n");
  r = RunCli({"groups", "--store", root_, "--json"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["groups"].size(), 3u);
  EXPECT_EQ(j["groups"][1]["also_matched"], nlohmann::json::array({"bob"}));
  EXPECT_EQ(j["no_group"], nlohmann::json::array({"9lives", "carol", "zed"}));
  // --groups FILE instead of the store's.
  std::ofstream(tmp_ / "other.conf") << "all=.*\n";
  r = RunCli({"groups", "--store", root_, "--groups", tmp_ / "other.conf"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_TRUE(r.out.starts_with("group all (.*): 7 users\n")) << r.out;
  EXPECT_TRUE(r.out.ends_with("in no group: 0 users\n")) << r.out;
  // A bad file is one line naming it.
  std::ofstream(tmp_ / "bad.conf") << "no equals sign\n";
  r = RunCli({"groups", "--store", root_, "--groups", tmp_ / "bad.conf"});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("bad.conf line 1"), std::string::npos) << r.Describe();
  // A hostile group name is named as such, with its line; a missing file is "no such" (66).
  std::ofstream(tmp_ / "hostile.conf") << "ok=a.*\n../x=.*\n";
  r = RunCli({"groups", "--store", root_, "--groups", tmp_ / "hostile.conf"});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("hostile.conf line 2: invalid group name"), std::string::npos) << r.Describe();
  r = RunCli({"groups", "--store", root_, "--groups", tmp_ / "nonexistent.conf"});
  EXPECT_EQ(r.status, 66) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("no backup groups file " + (tmp_ / "nonexistent.conf")), std::string::npos) << r.Describe();
  // A directory given for the file is named as one, by every command that reads groups.
  std::filesystem::create_directory(tmp_ / "groups.d");
  const std::vector<std::vector<std::string>> commands = {
      {"groups", "--store", root_, "--groups", tmp_ / "groups.d"},
      {"backup", "--store", root_, "--groups", tmp_ / "groups.d", "-f", tmp_ / "never.sm", "/"}};
  for (const std::vector<std::string>& command : commands) {
    r = RunCli(command);
    EXPECT_EQ(r.status, 64) << command[0] << ": " << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find("groups.d is a directory"), std::string::npos) << command[0] << ": " << r.Describe();
  }
  EXPECT_FALSE(std::filesystem::exists(tmp_ / "never.sm"));
}

TEST_F(AdminViews, UsersFiltersByStatus) {
  ASSERT_EQ(RunCli({"user", "--store", root_, "bob", "--status", "hold"}).status, 0);
  ASSERT_EQ(RunCli({"user", "--store", root_, "zed", "--status", "moved:new.example.org"}).status, 0);
  CliResult r = RunCli({"users", "--store", root_});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_TRUE(r.out.starts_with("USER ")) << r.out;
  EXPECT_TRUE(r.out.ends_with("7 users\n")) << r.out;
  // The table is written as the users are read (twice: the first read sizes the user column),
  // in id order, the filtered one counted alone.
  std::vector<std::string> lines;
  for (std::istringstream in(r.out); std::getline(in, lines.emplace_back());) {}
  lines.pop_back();
  ASSERT_EQ(lines.size(), 9u) << r.out;
  EXPECT_TRUE(std::is_sorted(lines.begin() + 1, lines.end() - 1)) << r.out;
  const size_t status_column = lines[0].find("STATUS");
  for (size_t i = 1; i + 1 < lines.size(); ++i)
    EXPECT_TRUE(lines[i].size() > status_column && lines[i][status_column - 1] == ' ' && lines[i][status_column] != ' ')
        << "the status column of\n" << lines[i] << "\nis not the header's\n" << lines[0];
  r = RunCli({"users", "--store", root_, "--status", "hold"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_TRUE(r.out.ends_with("\n1 user\n")) << r.out;
  EXPECT_NE(r.out.find("\nbob "), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3) << r.out;
  r = RunCli({"users", "--store", root_, "--status", "hold", "--json"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["count"], 1);
  EXPECT_EQ(j["users"][0]["user"], "bob");
  EXPECT_EQ(j["users"][0]["partition"], "primary");
  for (const char* filter : {"moved", "moved:new.example.org", "moved:New.Example.ORG", "moved:new.example.org."}) {  // a DNS name: any case, root dot or not
    r = RunCli({"users", "--store", root_, "--status", filter, "--json"});
    ASSERT_EQ(r.status, 0) << r.Describe();
    EXPECT_EQ(nlohmann::json::parse(r.out)["users"][0]["user"], "zed") << filter;
  }
  r = RunCli({"users", "--store", root_, "--status", "moved:other", "--json"});
  EXPECT_EQ(nlohmann::json::parse(r.out)["count"], 0);
  r = RunCli({"users", "--store", root_, "--status", "active", "--json"});
  EXPECT_EQ(nlohmann::json::parse(r.out)["count"], 5);
  r = RunCli({"users", "--store", root_, "--status", "sleeping"});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
}

// An unknown user is 67 (EX_NOUSER) in every form of `user`, as for deliver and the bulk form;
// the single form said 66 (EX_NOINPUT, "no input file").
TEST_F(AdminViews, AnUnknownUserIsTheSameAnswerInEveryForm) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"user", "--store", root_, "ghost"},
           {"user", "--store", root_, "ghost", "--status", "hold"},
           {"user", "--store", root_, "ghost", "--quota", "1000"},
           {"user", "--store", root_, "ghost", "--json"}}) {
    CliResult r = RunCli(args);
    EXPECT_EQ(r.status, 67) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find("user ghost does not exist"), std::string::npos) << r.Describe();
  }
}

TEST_F(AdminViews, BulkStatusForAGroupOrAFileIsAllOrNothing) {
  CliResult r = RunCli({"user", "--store", root_, "--status", "hold", "--group", "mn"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out, "mike: active -> hold\nnina: active -> hold\n2 users set to hold in one transaction\n");
  auto s = Statuses();
  EXPECT_EQ(s["mike"], "hold");
  EXPECT_EQ(s["nina"], "hold");
  EXPECT_EQ(s["alice"], "active");

  // A file with an unknown user changes nobody, and says who.
  std::ofstream(tmp_ / "users.txt") << "# to move tonight\nalice\n\ncarol\nghost\n";
  r = RunCli({"user", "--store", root_, "--status", "moved:x.example", "--users-file", tmp_ / "users.txt"});
  EXPECT_EQ(r.status, 67) << r.Describe();
  EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  EXPECT_NE(r.err.find("no such user: ghost (nobody was changed)"), std::string::npos) << r.Describe();
  EXPECT_EQ(Statuses()["alice"], "active");
  EXPECT_EQ(Statuses()["carol"], "active");
  // A bad id in the file is refused naming the line, before the store is touched.
  std::ofstream(tmp_ / "bad.txt") << "alice\n../etc\n";
  r = RunCli({"user", "--store", root_, "--status", "hold", "--users-file", tmp_ / "bad.txt"});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_NE(r.err.find("bad.txt line 2"), std::string::npos) << r.Describe();

  // A byte-order mark is no part of the first id, and an id given twice is one user.
  std::ofstream(tmp_ / "users.txt", std::ios::trunc) << "\xEF\xBB\xBF" "alice\ncarol\nalice\n";
  r = RunCli({"user", "--store", root_, "--status", "active", "--users-file", tmp_ / "users.txt", "--json"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["count"], 2);
  EXPECT_EQ(j["status"], "active");
  // "-": the list from a pipe (a shell's <(...) is a link in /dev/fd, which is not followed).
  r = RunCli({"user", "--store", root_, "--status", "hold", "--users-file", "-"}, "mike\nnina\n");
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(Statuses()["mike"], "hold");
  EXPECT_EQ(Statuses()["nina"], "hold");
  r = RunCli({"user", "--store", root_, "--status", "hold", "--users-file", "-"}, "alice\n../x\n");
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_NE(r.err.find("standard input line 2"), std::string::npos) << r.Describe();
  r = RunCli({"user", "--store", root_, "--status", "active", "--group", "mn"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  for (const auto& [user, status] : Statuses()) EXPECT_EQ(status, "active") << user;

  // Misuse is one line.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"user", "--store", root_, "--group", "mn"},
           {"user", "--store", root_, "alice", "--status", "hold", "--group", "mn"},
           {"user", "--store", root_, "--status", "hold", "--group", "nope"},
           {"user", "--store", root_, "--status", "hold", "--group", "mn", "--quota", "1M"}}) {
    r = RunCli(args);
    EXPECT_EQ(r.status, 64) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  }
}

// A migration switched some of a group's users to their new back-end: setting the group back to
// active (after a failed night, say) must not pull them back, or their mail would be delivered
// here again while their mailboxes live there.
TEST_F(AdminViews, BulkStatusLeavesMovedUsersAloneUnlessAskedTo) {
  ASSERT_EQ(RunCli({"user", "--store", root_, "alice", "--status", "moved:new.example"}).status, 0);
  CliResult r = RunCli({"user", "--store", root_, "--status", "hold", "--group", "ab"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out,
            "bob: active -> hold\n"
            "alice: moved:new.example (left alone: moved away; --include-moved changes it too)\n"
            "1 user set to hold in one transaction, 1 moved left alone\n");
  r = RunCli({"user", "--store", root_, "--status", "active", "--group", "ab", "--json"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["count"], 1);
  ASSERT_EQ(j["users"].size(), 1u) << r.out;
  EXPECT_EQ(j["users"][0]["user"], "bob");
  EXPECT_EQ(j["users"][0]["before"], "hold");
  ASSERT_EQ(j["left_moved"].size(), 1u) << r.out;
  EXPECT_EQ(j["left_moved"][0]["user"], "alice");
  EXPECT_EQ(j["left_moved"][0]["status"], "moved:new.example");
  auto s = Statuses();
  EXPECT_EQ(s["alice"], "moved:new.example");
  EXPECT_EQ(s["bob"], "active");

  // Asked for by name, the move is undone with the rest.
  r = RunCli({"user", "--store", root_, "--status", "active", "--group", "ab", "--include-moved"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out, "alice: moved:new.example -> active\nbob: active -> active\n2 users set to active in one transaction\n");
  EXPECT_EQ(Statuses()["alice"], "active");
}

// A listening socket nobody accepts on: a connection attempt would be queued on it.
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 8) != 0) std::abort();
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~Listener() { ::close(fd_); }
  uint16_t port() const { return port_; }
  int fd() const { return fd_; }
  bool SomeoneConnected() {
    int c = ::accept(fd_, nullptr, nullptr);
    if (c >= 0) ::close(c);
    return c >= 0;
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

std::map<std::string, std::string> Tree(const std::string& root) {
  std::map<std::string, std::string> out;  // path -> size and mtime, for what a run could touch
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.path().filename().string().starts_with("__db.") || e.path().filename().string().starts_with("log."))
      continue;  // Berkeley DB's environment regions and log: opening the store touches them
    out[e.path().string()] = e.is_regular_file() ? std::to_string(e.file_size()) + "@" +
                                                       std::to_string(fs::last_write_time(e).time_since_epoch().count())
                                                 : "dir";
  }
  return out;
}

// Without a live display (cron, GNU parallel), a failed attempt that will be retried is said
// at once: a destination that never answers cost minutes of silence before the final report.
TEST_F(AdminViews, AMigrateAttemptThatWillBeRetriedIsSaidAtOnce) {
  Listener closer;  // takes each connection and closes it: the session fails, the host answers
  std::atomic<bool> stop{false};
  std::thread closing([&] {
    while (!stop) {
      pollfd p{closer.fd(), POLLIN, 0};
      if (::poll(&p, 1, 50) > 0) (void)closer.SomeoneConnected();
    }
  });
  CliResult r = RunCli({"migrate", "--store", root_, "--to", "127.0.0.1:" + std::to_string(closer.port()), "--insecure",
                        "--retries", "1", "--retry-delay", "1", "mn"});
  stop = true;
  closing.join();
  EXPECT_NE(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find("storemove migrate: group mn: attempt 1: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("; attempt 2 of 2 in 1 s\n"), std::string::npos) << r.err;
  // And the failure ends, as every failure does, with one line (the report is on stdout).
  EXPECT_EQ(r.status, 1) << r.Describe();
  EXPECT_TRUE(r.err.ends_with("storemove: migrate: 1 of 1 groups failed (the report says why); their users are served by " +
                              root_ + " as before\n"))
      << r.err;
}

// --deadline: a destination that accepts the connection and never answers would keep migrate in
// its session until --timeout (60 s here); at the deadline the session is cut off, nothing is left
// on hold, and migrate says so in one line with exit 75 (rerun in the next window). A deadline
// that is no time, or has passed, is refused before anything (64).
TEST_F(AdminViews, MigrateStopsAtItsDeadlineEvenInASessionThatNeverAnswers) {
  Listener silent;  // connections wait in its backlog: connected, never answered
  const std::string to = "127.0.0.1:" + std::to_string(silent.port());
  const auto statuses = Statuses();
  const auto started = std::chrono::steady_clock::now();
  CliResult r = RunCli({"migrate", "--store", root_, "--to", to, "--insecure", "--timeout", "60", "--deadline", "+2s",
                        "--report", tmp_ / "report.json", "ab", "mn"});
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(r.status, 75) << r.Describe();
  EXPECT_NE(r.err.find("storemove: migrate reached its deadline ("), std::string::npos) << r.Describe();
  EXPECT_NE(r.err.find(") before every group was done: 0 users put back to their status before the hold; the copies "
                       "made at the destination stay on hold there (their users are served here) until a run switches "
                       "them, but for a group whose switch was sent and not finished (the report says so: its users may "
                       "be active there as well, until a run adopts them); rerun to continue\n"),
            std::string::npos)
      << r.Describe();
  EXPECT_NE(r.out.find("not started (deadline)"), std::string::npos) << r.out;  // jobs 1: mn waited for ab
  EXPECT_NE(r.out.find("stopped (deadline)"), std::string::npos) << r.out;
  EXPECT_LT(took, std::chrono::seconds(40)) << "not cut off at the deadline: waited for the session timeout";
  nlohmann::json j = nlohmann::json::parse(testing::SlurpFile(tmp_ / "report.json"));
  EXPECT_EQ(j["ok"], false);
  EXPECT_EQ(j["deadline_reached"], true);
  EXPECT_EQ(j["exit_status"], 75);
  ASSERT_EQ(j["groups"].size(), 2u);
  EXPECT_EQ(j["groups"][0]["result"], "stopped (deadline)");
  EXPECT_NE(j["groups"][0]["errors"][0].get<std::string>().find("attempt 1: cut off (reached its deadline ("),
            std::string::npos)
      << j["groups"][0]["errors"];
  EXPECT_EQ(j["groups"][1]["result"], "not started (deadline)");
  EXPECT_EQ(j["groups"][1]["attempts"], 0);
  EXPECT_EQ(Statuses(), statuses);
  EXPECT_TRUE(fs::is_empty(root_ + "/migrate-journal") ||
              std::all_of(fs::directory_iterator(root_ + "/migrate-journal"), fs::directory_iterator(),
                          [](const fs::directory_entry& e) { return e.path().extension() == ".lock"; }));

  for (const char* refused : {"", "+0s", "+5", "+1x", "+30m2h", "25:00", "2020-01-01T00:00", "tomorrow"}) {
    CliResult bad = RunCli({"migrate", "--store", root_, "--to", to, "--insecure", "--deadline", refused});
    EXPECT_EQ(bad.status, 64) << refused << ": " << bad.Describe();
    EXPECT_TRUE(IsOneErrorLine(bad)) << bad.Describe();
    EXPECT_NE(bad.err.find(std::string("--deadline '") + refused + "'"), std::string::npos) << bad.Describe();
  }
  // A plan's deadline is resolved when the plan is made: one already passed is a mistake there.
  std::ofstream(tmp_ / "fleet.json") << R"({"sources": [{"host": ":", "store": ")" << root_
                                     << R"(", "to": "n:7070", "key": "/k", "groups": ["ab"]}]})";
  CliResult plan = RunCli({"plan", "--fleet", tmp_ / "fleet.json", "--results", tmp_ / "results", "--deadline", "@1"});
  EXPECT_EQ(plan.status, 64) << plan.Describe();
  EXPECT_NE(plan.err.find("--deadline '@1': already passed"), std::string::npos) << plan.Describe();
  plan = RunCli({"plan", "--fleet", tmp_ / "fleet.json", "--results", tmp_ / "results", "--deadline", "+2h"});
  EXPECT_EQ(plan.status, 0) << plan.Describe();
  EXPECT_NE(plan.out.find(" --deadline @"), std::string::npos) << plan.out;
  // A planned job (plan --deadline writes @SECONDS) started after its window: nothing starts, 75.
  CliResult late = RunCli({"migrate", "--store", root_, "--to", to, "--insecure", "--deadline", "@1", "ab"});
  EXPECT_EQ(late.status, 75) << late.Describe();
  EXPECT_TRUE(IsOneErrorLine(late)) << late.Describe();
  EXPECT_NE(late.out.find("not started (deadline)"), std::string::npos) << late.out;
  EXPECT_EQ(Statuses(), statuses);
}

// A destination that is down: the first group spends its retries, the others do not start, and
// migrate exits 75 (try later) with one line saying so, not "groups failed" (1) after each
// group's own minutes of retries.
TEST_F(AdminViews, MigrateToADestinationThatIsDownStopsAfterOneGroupsRetries) {
  uint16_t port;
  {
    Listener closed;  // a port that was free a moment ago and is closed again
    port = closed.port();
  }
  const std::string to = "127.0.0.1:" + std::to_string(port);
  const auto statuses = Statuses();
  CliResult r = RunCli({"migrate", "--store", root_, "--to", to, "--insecure", "--retries", "1", "--retry-delay",
                        "0.01", "--report", tmp_ / "report.json", "ab", "mn"});
  EXPECT_EQ(r.status, 75) << r.Describe();
  EXPECT_NE(r.err.find("storemove migrate: destination " + to + " is down (group ab: attempt 2: connect to " + to +
                       ": Connection refused): no further group starts unless it answers\n"),
            std::string::npos)
      << r.Describe();
  EXPECT_TRUE(r.err.ends_with("storemove: migrate: destination " + to + " was down (group ab: attempt 2: connect to " +
                              to + ": Connection refused): 2 of 2 groups not migrated, their users served by " + root_ +
                              " as before; rerun when it answers\n"))
      << r.Describe();
  EXPECT_NE(r.out.find("FAILED (destination down)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not started (destination down)"), std::string::npos) << r.out;
  nlohmann::json j = nlohmann::json::parse(testing::SlurpFile(tmp_ / "report.json"));
  EXPECT_EQ(j["ok"], false);
  EXPECT_NE(j["destination_unreachable"].get<std::string>().find("group ab: attempt 2: connect to"), std::string::npos);
  EXPECT_EQ(j["exit_status"], 75);
  ASSERT_EQ(j["groups"].size(), 2u);
  EXPECT_EQ(j["groups"][0]["attempts"], 2);
  EXPECT_EQ(j["groups"][1]["attempts"], 0);
  EXPECT_EQ(j["groups"][1]["result"], "not started (destination down)");
  EXPECT_EQ(Statuses(), statuses);
}

// A group with more users than the open-file limit allows to hold at once (each user's delivery
// gate is an open file during the hold) was refused only after its whole copy (helper-65: 17 s
// of copying 29,487 users, then exit 64). It is refused before anything is sent, and --dry-run
// says it will fail. Scaled down: a hard limit of 257 leaves room for 1 user, group ab has 2.
TEST_F(AdminViews, AGroupTooLargeForTheOpenFileLimitIsRefusedBeforeItsCopy) {
  uint16_t port;
  {
    Listener closed;  // nothing may be connected to: the refusal comes first
    port = closed.port();
  }
  const std::string to = "127.0.0.1:" + std::to_string(port);
  auto limited = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"-c", "ulimit -n 257 && exec \"$0\" \"$@\"", STOREMOVE_BIN});
    return testing::RunProgram("/bin/bash", args);
  };
  CliResult plan = limited({"migrate", "--store", root_, "--to", to, "--insecure", "--dry-run", "ab"});
  EXPECT_EQ(plan.status, 64) << plan.Describe();  // the run's status (helper-169: 0)
  EXPECT_NE(plan.err.find("migrate --dry-run: the run would refuse a group"), std::string::npos) << plan.Describe();
  EXPECT_NE(plan.out.find("WILL FAIL: holding its users' delivery gates needs 258 open files; the limit is 257 "
                          "(ulimit -n)"),
            std::string::npos)
      << plan.Describe();
  const auto statuses = Statuses();
  CliResult r = limited({"migrate", "--store", root_, "--to", to, "--insecure", "ab"});
  EXPECT_EQ(r.status, 64) << r.Describe();
  EXPECT_NE(r.err.find("group ab: holding the delivery gates of 2 users needs 258 open files; the limit is 257 "
                       "(ulimit -n) (not retried: fix the configuration)"),
            std::string::npos)
      << r.Describe();
  EXPECT_EQ(r.err.find("Connection refused"), std::string::npos) << "it tried to connect first: " << r.Describe();
  EXPECT_EQ(Statuses(), statuses);
}

// A group named on the command line that holds nobody (a typo in its pattern) was migrated
// "ok", exit 0, while `user --group` refused it (helper-69). It is refused before anything is
// connected to, and --dry-run says it will fail. Group b's pattern matches bob, but bob is in ab,
// the first group that matches him; zz matches nobody.
TEST_F(AdminViews, AGroupThatHoldsNobodyIsRefusedNotMigratedOk) {
  std::ofstream(root_ + "/config/backup-groups.conf", std::ios::app) << "zz=zz-typo\n";
  Listener destination;
  const std::string to = "127.0.0.1:" + std::to_string(destination.port());
  const auto statuses = Statuses();
  for (const char* group : {"zz", "b"}) {
    CliResult plan = RunCli({"migrate", "--store", root_, "--to", to, "--insecure", "--dry-run", group});
    EXPECT_EQ(plan.status, 64) << plan.Describe();
    CliResult json = RunCli({"migrate", "--store", root_, "--to", to, "--insecure", "--dry-run", "--json", group});
    EXPECT_EQ(json.status, 64) << json.Describe();
    EXPECT_TRUE(nlohmann::json::parse(json.out)["groups"][0]["matches_nobody"].get<bool>()) << json.Describe();
    EXPECT_NE(plan.out.find("WILL FAIL: it holds no user of this store"), std::string::npos) << plan.Describe();
    CliResult r = RunCli({"migrate", "--store", root_, "--to", to, "--insecure", "ab", group});
    EXPECT_EQ(r.status, 64) << r.Describe();
    EXPECT_NE(r.err.find("group '" + std::string(group) + "' ("), std::string::npos) << r.Describe();
    EXPECT_NE(r.err.find("holds no user of this store (its pattern matches none, or only users of groups above it: "
                         "a typo?); nothing was migrated"),
              std::string::npos)
        << r.Describe();
  }
  // Run without names, groups that hold nobody here are other back-ends' (a fleet's shared file).
  CliResult plan = RunCli({"migrate", "--store", root_, "--to", to, "--insecure", "--dry-run"});
  EXPECT_EQ(plan.status, 0) << plan.Describe();
  EXPECT_EQ(plan.out.find("WILL FAIL"), std::string::npos) << plan.Describe();
  EXPECT_NE(plan.out.find("group zz (zz-typo): 0 users, 0 folders, 0 messages, 0 bytes (0 B); it holds no user of "
                          "this store"),
            std::string::npos)
      << plan.Describe();
  EXPECT_FALSE(destination.SomeoneConnected());
  EXPECT_EQ(Statuses(), statuses);
}

TEST_F(AdminViews, MigrateDryRunSaysWhatAndChangesNothing) {
  // Done earlier, to the destination under another name: the real run leaves nina alone whatever
  // the host, and so does the plan (helper-69: it promised to move her again).
  ASSERT_EQ(RunCli({"user", "--store", root_, "nina", "--status", "moved:localhost"}).status, 0);
  Listener destination;
  const std::string to = "127.0.0.1:" + std::to_string(destination.port());
  const auto statuses = Statuses();
  const auto tree = Tree(root_);
  CliResult r = RunCli({"migrate", "--store", root_, "--to", to, "--key", tmp_ / "no-such-key", "--dry-run"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("destination: " + to), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("group ab ([ab].*): 2 users, 2 folders, 4 messages, "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("group mn ([m-n].*): 1 user, 1 folder, 2 messages, "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 user already moved, left alone"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("in no group (not migrated): 3 users"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3. hold"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("5. switch"), std::string::npos) << r.out;

  r = RunCli({"migrate", "--store", root_, "--to", to, "--dry-run", "--json", "--delete-source", "mn"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["dry_run"], true);
  ASSERT_EQ(j["groups"].size(), 1u);
  EXPECT_EQ(j["groups"][0]["users"], nlohmann::json::array({"mike"}));
  EXPECT_EQ(j["groups"][0]["messages"], 2);
  EXPECT_EQ(j["delete_source"], true);

  // A killed run's journal is named, not applied.
  fs::create_directories(root_ + "/migrate-journal");
  std::ofstream(root_ + "/migrate-journal/ab.hold") << "storemove-migrate-journal 1\ngroup ab\nto x\nalice\tactive\n";
  const auto tree_with_journal = Tree(root_);
  r = RunCli({"migrate", "--store", root_, "--to", to, "--dry-run"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("killed migrate left on hold (" + root_ + "/migrate-journal/ab.hold)"), std::string::npos)
      << r.out;
  EXPECT_EQ(Tree(root_), tree_with_journal);
  fs::remove_all(root_ + "/migrate-journal");

  EXPECT_FALSE(destination.SomeoneConnected());
  EXPECT_EQ(Statuses(), statuses);
  EXPECT_EQ(Tree(root_), tree);
  EXPECT_FALSE(fs::exists(root_ + "/migrate-journal"));
}

// --compress takes backup's words; adapt, which needs a one-way output, and what is no level are
// refused in one line before anything is read or connected.
TEST_F(AdminViews, MigrateRefusesACompressionItCannotUse) {
  Listener destination;
  const std::string to = "127.0.0.1:" + std::to_string(destination.port());
  const auto tree = Tree(root_);
  for (const char* refused : {"adapt", "fast", "0", "20"}) {
    CliResult r = RunCli({"migrate", "--store", root_, "--to", to, "--insecure", "--compress", refused});
    EXPECT_EQ(r.status, 64) << refused << ": " << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find("--compress"), std::string::npos) << r.Describe();
  }
  CliResult none = RunCli({"migrate", "--store", root_, "--to", to, "--insecure", "--compress", "none", "--dry-run"});
  EXPECT_EQ(none.status, 0) << none.Describe();
  EXPECT_FALSE(destination.SomeoneConnected());
  EXPECT_EQ(Tree(root_), tree);
}

}  // namespace
}  // namespace storemove::tools
