// The fleet plan (stream/fleet_plan.h) and merged report (stream/fleet_report.h) without hosts:
// the fleet file's checks, the job lines read back by a real /bin/sh, and report merging with
// broken and partial files. The runs by GNU parallel, locally and over ssh, are
// tests/tools/fleet_test.py and fleet_ssh_test.py.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "stream/fleet_plan.h"
#include "stream/fleet_report.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::stream {
namespace {

using storemove::testing::TempDir;

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string WriteFleet(const TempDir& tmp, const std::string& json) {
  std::string path = tmp / "fleet.json";
  WriteFileAtomic(path, json);
  return path;
}

TEST(FleetFile, EveryErrorIsOneLineNamingTheFileAndTheEntry) {
  TempDir tmp;
  struct Case {
    std::string json, expected;
  };
  const std::string ok = R"("store": "/s", "to": "new1:7070", "key": "/k")";
  for (const Case& c : std::vector<Case>{
           {"{", "fleet.json: not valid JSON"},
           {R"({"sources": []})", "fleet.json: expected {\"sources\": [...]}"},
           {R"({"sources": [{"host": ":", )" + ok + R"(}], "extra": 1})", "fleet.json: unknown field \"extra\""},
           {R"({"sources": [{"host": ":", )" + ok + R"(}, {"host": "mail2", "store": "/s", "key": "/k"}]})",
            "fleet.json: sources[1] (host mail2): \"to\" is missing"},
           {R"({"sources": [{"host": "-oProxyCommand=touch x", )" + ok + "}]}",
            "sources[0] (host -oProxyCommand=touch x): \"host\" must be"},
           {R"({"sources": [{"host": "a b", )" + ok + "}]}", "sources[0] (host a b): \"host\" must be"},
           {R"({"sources": [{"host": "m", "store": "rel", "to": "n:1", "key": "/k"}]})", "\"store\" must be an absolute path"},
           {R"({"sources": [{"host": "m", "store": "/s\nx", "to": "n:1", "key": "/k"}]})", "\"store\" contains a control character"},
           {R"({"sources": [{"host": "m", "store": "/s", "to": "n", "key": "/k"}]})", "\"to\" must be HOST:PORT"},
           {R"({"sources": [{"host": "m", "store": "/s", "to": "n:99999", "key": "/k"}]})", "port from 1 to 65535"},
           {R"({"sources": [{"host": "m", "store": "/s", "to": "n:0", "key": "/k"}]})", "port from 1 to 65535"},
           {R"({"sources": [{"host": "m", "store": "/s", "to": "n:1", "key": "rel/k"}]})", "\"key\" must be an absolute path"},
           {R"({"sources": [{"host": "m", )" + ok + R"(, "jobs": 0}]})", "\"jobs\" must be an integer from 1 to 64"},
           {R"({"sources": [{"host": "m", )" + ok + R"(, "jobs": "2"}]})", "\"jobs\" must be an integer from 1 to 64"},
           {R"({"sources": [{"host": "m", )" + ok + R"(, "groups": ["a", "x;y"]}]})", "\"groups\": \"x;y\" is not a group name"},
           {R"({"sources": [{"host": "m", )" + ok + R"(, "groups": ["a", "a"]}]})", "\"groups\": \"a\" is listed twice"},
           {R"({"sources": [{"host": "m", )" + ok + R"(, "colour": 1}]})", "sources[0] (host m): unknown field \"colour\""},
           {R"({"sources": [{"host": "m", )" + ok + R"(}, {"host": "m", )" + ok + "}]}",
            "sources[1] (host m): the same host and store as sources[0]"},
       }) {
    std::string path = WriteFleet(tmp, c.json);
    std::string error = ErrorOf([&] { ReadFleet(path); });
    EXPECT_NE(error.find(c.expected), std::string::npos) << c.json << "\n -> " << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
    EXPECT_EQ(error.rfind(path, 0), 0u) << error;  // starts with the file's name
  }
  EXPECT_NE(ErrorOf([&] { ReadFleet(tmp / "none.json"); }).find("none.json"), std::string::npos);
}

// What /bin/sh makes of `line` with `storemove` and `flock`, `ssh` replaced by printing their
// arguments (one per line): the words the job would really run.
std::string ShellWords(const TempDir& tmp, const std::string& line) {
  std::string script = tmp / "words.sh";
  WriteFileAtomic(script, "flock() { shift; \"$@\"; }\nssh() { printf '[%s]\\n' \"$@\"; }\n"
                          "words() { printf '[%s]\\n' \"$@\"; }\n" + line + "\n", 0755);
  std::string out;
  FILE* p = ::popen(("/bin/sh " + script + " 2>&1").c_str(), "r");
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ::pclose(p);
  return out;
}

// "storemove" as an array is a command line (sudo -u OWNER storemove: root is refused in a store
// another user owns, and a string is one word, helper-84); each word reaches the job as it is.
TEST(FleetPlan, TheStoremoveCommandMayBeWordsToRunItAsTheStoresOwner) {
  TempDir tmp;
  nlohmann::json fleet = {{"sources",
                           {{{"host", ":"}, {"store", "/srv/s"}, {"to", "new1:7070"}, {"key", "/k"},
                             {"storemove", {"words", "-u", "it's $(touch PWNED)", "storemove"}}}}}};
  Fleet f = ReadFleet(WriteFleet(tmp, fleet.dump()));
  PlanOptions options;
  options.results_dir = tmp / "results";
  options.read_groups_conf = [](const FleetSource&) -> std::string { return "g1=.*\n"; };
  std::vector<PlannedJob> jobs = PlanFleet(f, options);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(ShellWords(tmp, jobs[0].command).rfind("[-u]\n[it's $(touch PWNED)]\n[storemove]\n[migrate]\n[--store]\n[/srv/s]\n", 0), 0u)
      << ShellWords(tmp, jobs[0].command);
  EXPECT_FALSE(std::filesystem::exists("PWNED"));
  for (const nlohmann::json& bad : {nlohmann::json::array(), nlohmann::json{"ok", ""}, nlohmann::json{"a\nb"}, nlohmann::json{1}}) {
    fleet["sources"][0]["storemove"] = bad;
    EXPECT_THROW(ReadFleet(WriteFleet(tmp, fleet.dump())), Error) << bad.dump();
  }
}

TEST(FleetPlan, HostileNamesReachTheCommandsAsTheyAreAndGroupsComeFromTheConf) {
  TempDir tmp;
  const std::string hostile = "/srv/it's $(touch PWNED) `x` {} \"q\" \\ ;&|*";
  nlohmann::json fleet = {{"sources",
                           {{{"host", ":"}, {"store", hostile}, {"to", "new1:7070"}, {"key", "/k $HOME"},
                             {"jobs", 2}, {"storemove", "words"}},
                            {{"host", "root@mail2"}, {"store", hostile}, {"to", "new2:7070"}, {"key", "/k"},
                             {"groups", {"b", "a"}}, {"storemove", "words"}}}}};
  Fleet f = ReadFleet(WriteFleet(tmp, fleet.dump()));
  PlanOptions options;
  options.results_dir = tmp / "results it's";
  options.read_groups_conf = [](const FleetSource& s) -> std::string {
    EXPECT_TRUE(s.local());
    return "# comment\n\ng1=[a-m].*\r\n g2 = .*\n";
  };
  std::vector<PlannedJob> jobs = PlanFleet(f, options);
  ASSERT_EQ(jobs.size(), 4u);
  // Round robin over the sources.
  EXPECT_EQ(jobs[0].group, "g1");
  EXPECT_EQ(jobs[1].group, "b");
  EXPECT_EQ(jobs[2].group, "g2");
  EXPECT_EQ(jobs[3].group, "a");
  EXPECT_TRUE(std::filesystem::is_directory(options.results_dir + "/.slots"));
  // Local: storemove itself, every argument intact, the report written by migrate; its groups
  // come from the conf, shared by the fleet, so one that holds nobody here is allowed. The
  // remote source lists its groups: an empty one stays refused (no --allow-empty-groups).
  EXPECT_EQ(ShellWords(tmp, jobs[0].command),
            "[migrate]\n[--store]\n[" + hostile + "]\n[--to]\n[new1:7070]\n[--key]\n[/k $HOME]\n[--lock-wait]\n[600]\n"
            "[--allow-empty-groups]\n[--report]\n[" + jobs[0].report + "]\n[--]\n[g1]\n");
  // Remote: ssh gets the host after "--" and one command string that the remote shell splits
  // into the same words; the report comes back on stdout into a part file.
  EXPECT_EQ(ShellWords(tmp, jobs[1].command), "");  // ssh's output went to the part file, then the report
  std::string remote = ReadFile(jobs[1].report);
  std::string prefix = "[-n]\n[-o]\n[BatchMode=yes]\n[--]\n[root@mail2]\n[";
  ASSERT_EQ(remote.rfind(prefix, 0), 0u) << remote;
  std::string remote_command = remote.substr(prefix.size(), remote.size() - prefix.size() - 2);
  EXPECT_EQ(ShellWords(tmp, remote_command),
            "[migrate]\n[--store]\n[" + hostile + "]\n[--to]\n[new2:7070]\n[--key]\n[/k]\n[--lock-wait]\n[600]\n"
            "[--report]\n[-]\n[--]\n[b]\n");
  EXPECT_FALSE(std::filesystem::exists("PWNED"));
  EXPECT_FALSE(std::filesystem::exists(jobs[1].report + ".part"));
  // Report names: per (host, store, group), the same on every plan, distinct between sources.
  EXPECT_NE(jobs[0].report, jobs[3].report);
  EXPECT_EQ(PlanFleet(f, options)[0].report, jobs[0].report);
  // plan --deadline: one instant for every job, as seconds since the epoch.
  options.deadline_epoch = 1764820800;
  EXPECT_EQ(ShellWords(tmp, PlanFleet(f, options)[0].command),
            "[migrate]\n[--store]\n[" + hostile + "]\n[--to]\n[new1:7070]\n[--key]\n[/k $HOME]\n[--lock-wait]\n[600]\n"
            "[--deadline]\n[@1764820800]\n[--allow-empty-groups]\n[--report]\n[" + jobs[0].report + "]\n[--]\n[g1]\n");
  EXPECT_EQ(std::filesystem::path(jobs[0].report).parent_path(), options.results_dir);
  // Slots: the local source's two groups under different locks (jobs 2), the remote's under one.
  auto slot = [](const std::string& command) {
    const size_t flock = command.find("; flock ");  // after the removal of the job's earlier report
    return command.substr(flock, command.find("' ", flock) + 1 - flock);
  };
  EXPECT_NE(slot(jobs[0].command), slot(jobs[2].command));
  EXPECT_EQ(slot(jobs[1].command), slot(jobs[3].command));
}

TEST(FleetPlan, ASourceWithoutGroupsIsAnErrorNamingItsConf) {
  TempDir tmp;
  Fleet f = ReadFleet(WriteFleet(tmp, R"({"sources": [{"host": "mail1", "store": "/s", "to": "n:1", "key": "/k"}]})"));
  PlanOptions options;
  options.results_dir = tmp / "r";
  options.read_groups_conf = [](const FleetSource&) { return std::string("# only comments\n"); };
  EXPECT_NE(ErrorOf([&] { PlanFleet(f, options); }).find("sources[0] (host mail1): no groups: mail1:/s/config/backup-groups.conf"),
            std::string::npos);
  options.read_groups_conf = [](const FleetSource&) { return std::string("a=.*\nnot a line\n"); };
  EXPECT_NE(ErrorOf([&] { PlanFleet(f, options); }).find("mail1:/s/config/backup-groups.conf line 2: expected NAME=REGEX"),
            std::string::npos);
}

TEST(FleetPlan, ALocalSourcesStoreAndGroupsAreCheckedBeforeAnyJobIsWritten) {
  TempDir tmp;
  std::string store = tmp / "store";
  PlanOptions options;
  options.results_dir = tmp / "r";
  auto fleet = [&](const std::string& groups) {
    return ReadFleet(WriteFleet(tmp, R"({"sources": [{"host": ":", "store": ")" + store +
                                         R"(", "to": "n:1", "key": "/k")" + groups + "}]}"));
  };
  EXPECT_NE(ErrorOf([&] { PlanFleet(fleet(""), options); }).find("no store at " + store), std::string::npos);
  EXPECT_NE(ErrorOf([&] { PlanFleet(fleet(R"(, "groups": ["a"])"), options); }).find("no store at " + store),
            std::string::npos);
  MakeDirs(store + "/config");
  WriteFileAtomic(store + "/config/backup-groups.conf", "a=.*\n");
  EXPECT_EQ(PlanFleet(fleet(R"(, "groups": ["a"])"), options).size(), 1u);
  EXPECT_NE(ErrorOf([&] { PlanFleet(fleet(R"(, "groups": ["a", "nosuch"])"), options); })
                .find("sources[0]: no group 'nosuch' in " + store + "/config/backup-groups.conf"),
            std::string::npos);
}

std::string GroupJson(const std::string& name, bool ok, int users, int moved, double copy, double hold) {
  nlohmann::json g = {{"name", name},          {"ok", ok},          {"attempts", ok ? 1 : 3}, {"users", users},
                      {"already_moved", moved}, {"messages", users * 10}, {"bytes_raw", users * 1000},
                      {"bytes_sent", users * 500}, {"hold_seconds", hold},
                      {"phase_seconds", {{"copy", copy}, {"final", hold}}},
                      {"errors", ok ? nlohmann::json::array() : nlohmann::json{"attempt 3: connect refused"}}};
  return g.dump();
}

// Every job done, but the groups file takes some users nowhere: they were not moved, and the
// fleet is not done (each job of a source reports the same users once).
TEST(FleetReport, UsersInNoGroupAreNamedAndTheFleetIsNotDone) {
  TempDir tmp;
  std::string dir = tmp / "results";
  MakeDirs(dir);
  for (const char* group : {"a", "b"})
    WriteFileAtomic(dir + "/" + group + ".json", std::string(R"({"ok": true, "users_in_no_group": 2,
        "users_in_no_group_names": ["zed", "zoe"], "groups": [)") + GroupJson(group, true, 3, 0, 1.0, 0.1) + "]}");
  FleetReport r = MergeFleetReports(dir);
  EXPECT_EQ(r.users, 6u);
  EXPECT_EQ(r.users_in_no_group, 2u);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.Text().find("in no group: 2 users no job moved (backup-groups.conf takes none of them; they are still "
                          "on their source): zed zoe\n"),
            std::string::npos)
      << r.Text();
  EXPECT_NE(r.Text().find("fleet: NOT DONE (every job ran, but users in no group were not moved"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(r.Json(1))["users_in_no_group"], 2);

  // A second source with its own users in no group: both sources' names count.
  WriteFileAtomic(dir + "/other-source.json", std::string(R"({"ok": true, "users_in_no_group": 1,
      "users_in_no_group_names": ["amy"], "groups": [)") + GroupJson("a", true, 3, 0, 1.0, 0.1) + "]}");
  EXPECT_EQ(MergeFleetReports(dir).users_in_no_group, 3u);
}

// What the text report shows from the job reports (group names, errors, job errors, recovered
// lines, a broken file's reason) is escaped: a report file cannot drive the terminal of whoever
// runs `storemove report` (security review #09). JSON keeps them as they are, JSON-escaped.
TEST(FleetReport, NamesAndErrorsFromTheReportsAreShownEscaped) {
  TempDir tmp;
  std::string dir = tmp / "results";
  MakeDirs(dir);
  nlohmann::json failed = nlohmann::json::parse(GroupJson("g\x1b[2J\x07", false, 4, 0, 1.0, 0));
  failed["errors"] = {"attempt 3: e\x1b]0;owned\x07"};
  nlohmann::json slow = nlohmann::json::parse(GroupJson("s\x1b[31m\x07", true, 2, 0, 9.0, 0.1));
  nlohmann::json job = {{"ok", false},
                        {"error", "job\x1b[2J\x07"},
                        {"recovered", {"held\x1b[1A\x07"}},
                        {"groups", {failed, slow}}};
  WriteFileAtomic(dir + "/a.json", job.dump());
  WriteFileAtomic(dir + "/b.json", R"({"ok": true, "groups": [{"name": "x", "ok": true, "phase_seconds": {"p\u001b\u0007": "z"}}]})");
  FleetReport r = MergeFleetReports(dir);
  const std::string text = r.Text();
  EXPECT_EQ(text.find('\x1b'), std::string::npos) << text;
  EXPECT_EQ(text.find('\x07'), std::string::npos) << text;
  for (const char* shown : {"FAILED group g\\x1b[2J\\x07 (a.json): attempt 3: e\\x1b]0;owned\\x07\n",
                            "  s\\x1b[31m\\x07", "FAILED job a.json: job\\x1b[2J\\x07\n",
                            "recovered a.json: held\\x1b[1A\\x07\n", "BROKEN b.json: phase \"p\\x1b\\x07\" is no number\n"})
    EXPECT_NE(text.find(shown), std::string::npos) << shown << " in\n" << text;
  const nlohmann::json merged = nlohmann::json::parse(r.Json());
  EXPECT_EQ(merged["failed_groups"][0]["group"], "g\x1b[2J\x07");
}

// A group that did not end ok, with no error lines: its report's result says why.
nlohmann::json NotOkGroup(const std::string& name, const std::string& result) {
  nlohmann::json g = nlohmann::json::parse(GroupJson(name, false, 4, 0, 0, 0));
  g["errors"] = nlohmann::json::array();
  g["result"] = result;
  return g;
}

// A job stopped by its --deadline (plan --deadline) is not done and says so: the job's line names
// the deadline, a group that never started names that instead of an empty error.
TEST(FleetReport, AJobStoppedAtItsDeadlineIsNamedAsSuch) {
  TempDir tmp;
  std::string dir = tmp / "results";
  MakeDirs(dir);
  const nlohmann::json stopped = NotOkGroup("b", "not started (deadline)");
  WriteFileAtomic(dir + "/a.json", R"({"ok": false, "deadline": "2026-12-04 06:00:00 CET", "deadline_reached": true,
                                       "groups": [)" + stopped.dump() + "]}");
  FleetReport r = MergeFleetReports(dir);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.groups_failed, 1u);
  ASSERT_EQ(r.job_errors.size(), 1u);
  EXPECT_EQ(r.job_errors[0], "a.json: stopped at its deadline (2026-12-04 06:00:00 CET); its next run goes on");
  EXPECT_NE(r.Text().find("STOPPED group b (a.json): not started (deadline)"), std::string::npos) << r.Text();
  EXPECT_EQ(r.Text().find("FAILED group"), std::string::npos) << r.Text();
  EXPECT_NE(r.Json().find("\"left_to_next_run\": true"), std::string::npos) << r.Json();
}

// A job that found its destination down names it, and a group it did not start says so.
TEST(FleetReport, AJobThatFoundItsDestinationDownIsNamedAsSuch) {
  TempDir tmp;
  std::string dir = tmp / "results";
  MakeDirs(dir);
  const nlohmann::json skipped = NotOkGroup("b", "not started (destination down)");
  WriteFileAtomic(dir + "/a.json", R"({"ok": false, "destination_unreachable": "group a: attempt 3: connect to n:7070: )"
                                   R"(Connection refused", "groups": [)" + skipped.dump() + "]}");
  FleetReport r = MergeFleetReports(dir);
  EXPECT_FALSE(r.ok());
  ASSERT_EQ(r.job_errors.size(), 1u);
  EXPECT_EQ(r.job_errors[0], "a.json: destination down (group a: attempt 3: connect to n:7070: Connection refused); its "
                             "next run goes on");
  EXPECT_NE(r.Text().find("STOPPED group b (a.json): not started (destination down)"), std::string::npos) << r.Text();

  // With a second group: what the job's line says of it.
  auto job_error_with = [&](const nlohmann::json& other) {
    WriteFileAtomic(dir + "/a.json", R"({"ok": false, "destination_unreachable": "group a: attempt 3: connect to )"
                                     R"(n:7070: Connection refused", "groups": [)" + skipped.dump() + "," +
                                         other.dump() + "]}");
    FleetReport merged = MergeFleetReports(dir);
    return merged.job_errors.size() == 1 ? merged.job_errors[0] : "(" + std::to_string(merged.job_errors.size()) + " lines)";
  };
  // One that failed on its own (exit 1): the next run would not cure it.
  EXPECT_EQ(job_error_with(NotOkGroup("c", "FAILED")),
            "a.json: destination down (group a: attempt 3: connect to n:7070: Connection refused); "
            "other groups failed on their own (below)");
  // One a signal stopped did not fail on its own (helper-119): its next run goes on.
  EXPECT_EQ(job_error_with(NotOkGroup("c", "stopped (interrupted)")),
            "a.json: destination down (group a: attempt 3: connect to n:7070: Connection refused); its next run "
            "goes on");
}

// A job a signal stopped: its line says so and that its next run goes on; its group is STOPPED,
// with why before its last error (helper-124: "STOPPED group g: attempt 1: connect ... refused"
// read as the reason, and the job's line as a failure).
TEST(FleetReport, AJobStoppedByASignalSaysWhyItsGroupStopped) {
  TempDir tmp;
  std::string dir = tmp / "results";
  MakeDirs(dir);
  nlohmann::json stopped = NotOkGroup("g", "stopped (interrupted)");
  stopped["errors"].push_back("attempt 1: connect to n:7070: Connection refused");
  WriteFileAtomic(dir + "/a.json", R"({"ok": false, "interrupted": true, "groups": [)" + stopped.dump() + "]}");
  FleetReport r = MergeFleetReports(dir);
  ASSERT_EQ(r.job_errors.size(), 1u);
  EXPECT_EQ(r.job_errors[0], "a.json: interrupted (by a signal); its next run goes on");
  EXPECT_NE(r.Text().find("STOPPED group g (a.json): stopped (interrupted) (last error: attempt 1: connect to n:7070: "
                          "Connection refused)\n"),
            std::string::npos)
      << r.Text();
}

// Jobs of the plan that left no report (not run yet: parallel stopped; or killed -9 before they
// wrote one, their users on hold) are named, and the fleet is not done: only the reports present
// were counted, and a fleet with four of nine jobs run was "every job done", exit 0 (helper-114).
TEST(FleetReport, APlannedJobWithoutAReportIsMissingAndTheFleetIsNotDone) {
  TempDir tmp;
  nlohmann::json fleet = {{"sources", {{{"host", ":"}, {"store", "/srv/s"}, {"to", "new1:7070"}, {"key", "/k"}}}}};
  Fleet f = ReadFleet(WriteFleet(tmp, fleet.dump()));
  PlanOptions options;
  options.results_dir = tmp / "results";
  options.read_groups_conf = [](const FleetSource&) -> std::string { return "g1=a.*\ng2=b.*\ng3=.*\n"; };
  std::vector<PlannedJob> jobs = PlanFleet(f, options);
  ASSERT_EQ(jobs.size(), 3u);
  const std::string dir = tmp / "results";
  // Nothing ran yet: all three are missing (not "no job report", an error of the command line).
  FleetReport r = MergeFleetReports(dir);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.missing.size(), 3u) << r.Text();
  auto name = [&](size_t i) { return jobs[i].report.substr(dir.size() + 1); };
  // The first job done, the second killed while ssh brought its report back (its .part is named
  // as partial, not as missing too), the third never run.
  WriteFileAtomic(jobs[0].report, R"({"ok": true, "groups": [)" + GroupJson("g1", true, 10, 0, 1.0, 0.5) + "]}");
  WriteFileAtomic(jobs[1].report + ".part", R"({"ok": tr)");
  r = MergeFleetReports(dir);
  EXPECT_FALSE(r.ok());
  ASSERT_EQ(r.missing.size(), 1u) << r.Text();
  EXPECT_EQ(r.missing[0], name(2) + ": no report (the job has not run, or was killed before it wrote one: see the "
                                    "joblog; parallel --resume-failed runs it)");
  EXPECT_NE(r.Text().find("MISSING " + name(2) + ": no report"), std::string::npos) << r.Text();
  EXPECT_NE(r.Text().find("fleet: NOT DONE (rerun the failed jobs: parallel --resume-failed)"), std::string::npos)
      << r.Text();
  EXPECT_EQ(nlohmann::json::parse(r.Json())["missing"].size(), 1u);
  // Every job's report there: done.
  std::filesystem::remove(jobs[1].report + ".part");
  WriteFileAtomic(jobs[1].report, R"({"ok": true, "groups": [)" + GroupJson("g2", true, 10, 0, 1.0, 0.5) + "]}");
  WriteFileAtomic(jobs[2].report, R"({"ok": true, "groups": [)" + GroupJson("g3", true, 10, 0, 1.0, 0.5) + "]}");
  r = MergeFleetReports(dir);
  EXPECT_TRUE(r.ok()) << r.Text();
  EXPECT_NE(r.Text().find("fleet: every job done"), std::string::npos) << r.Text();
  // Each job's line removes its earlier report first: a run killed before it writes its own
  // leaves none (helper-116: an earlier run's ok report stood for it).
  for (const PlannedJob& job : jobs) EXPECT_TRUE(job.command.starts_with("rm -f -- '" + job.report + "'; ")) << job.command;
  (void)ShellWords(tmp, jobs[2].command);
  EXPECT_FALSE(std::filesystem::exists(jobs[2].report));
  EXPECT_EQ(MergeFleetReports(dir).missing.size(), 1u);
  // A plan of fewer groups into the same directory keeps the earlier plan's jobs.
  options.read_groups_conf = [](const FleetSource&) -> std::string { return "g1=a.*\n"; };
  ASSERT_EQ(PlanFleet(f, options).size(), 1u);
  EXPECT_EQ(MergeFleetReports(dir).missing.size(), 1u);
  // A damaged plan file is said, not taken for an empty plan, nor replaced by the next plan.
  WriteFileAtomic(dir + "/.plan", "something else\n");
  EXPECT_NE(ErrorOf([&] { MergeFleetReports(dir); }).find("is not a storemove fleet plan"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { PlanFleet(f, options); }).find("is not a storemove fleet plan"), std::string::npos);
  EXPECT_EQ(ReadFile(dir + "/.plan"), "something else\n");
}

TEST(FleetReport, MergesReportsAndNamesBrokenAndPartialFiles) {
  TempDir tmp;
  std::string dir = tmp / "results";
  MakeDirs(dir + "/.slots");
  WriteFileAtomic(dir + "/a.json", R"({"ok": true, "recovered": ["group a: put back"], "groups": [)" +
                                       GroupJson("a", true, 10, 2, 5.0, 0.5) + "]}");
  WriteFileAtomic(dir + "/b.json", R"({"ok": true, "version": "x", "groups": [)" + GroupJson("b", true, 20, 0, 9.0, 1.5) + "]}");
  WriteFileAtomic(dir + "/c.json", R"({"ok": false, "groups": [)" + GroupJson("c", false, 5, 0, 1.0, 0) + "]}");
  WriteFileAtomic(dir + "/d.json", R"({"ok": false, "error": "another storemove migrate is running", "exit_status": 75,
                                       "groups_requested": ["d"], "groups": []})");
  MergeFleetReports(dir);  // a well-formed directory reads
  FleetReport r = MergeFleetReports(dir);
  EXPECT_EQ(r.reports, 4u);
  EXPECT_EQ(r.users, 30u);  // the failed group's 5 users were not moved
  EXPECT_EQ(r.users_not_moved, 5u);
  EXPECT_EQ(r.already_moved, 2u);
  EXPECT_EQ(r.messages, 300u);
  EXPECT_EQ(r.bytes_raw, 30000u);
  EXPECT_EQ(r.groups_failed, 1u);
  EXPECT_EQ(r.jobs_failed, 2u);
  EXPECT_DOUBLE_EQ(r.hold_max, 1.5);
  EXPECT_DOUBLE_EQ(r.hold_mean, 1.0);
  ASSERT_EQ(r.job_errors.size(), 1u);
  EXPECT_EQ(r.job_errors[0], "d.json: another storemove migrate is running");
  EXPECT_FALSE(r.ok());
  nlohmann::json j = nlohmann::json::parse(r.Json(2));
  ASSERT_EQ(j["slowest"].size(), 2u);
  EXPECT_EQ(j["slowest"][0]["group"], "b");  // 9 + 1.5 s
  EXPECT_EQ(j["slowest"][1]["group"], "a");
  EXPECT_EQ(j["failed_groups"][0]["error"], "attempt 3: connect refused");
  EXPECT_EQ(j["failed_groups"][0]["left_to_next_run"], false);  // it failed on its own
  EXPECT_NE(r.Text().find("FAILED group c (c.json): attempt 3: connect refused"), std::string::npos) << r.Text();
  EXPECT_NE(r.Text().find("not moved: 5 users of the 1 failed group "), std::string::npos) << r.Text();
  EXPECT_EQ(j["users_not_moved"], 5);
  EXPECT_EQ(r.users_in_no_group, 0u);

  // Broken files: each named once, in one line; nothing else is lost.
  WriteFileAtomic(dir + "/e.json", "");
  WriteFileAtomic(dir + "/f.json", R"({"ok": true, "groups": [{"name": "f", "ok": tr)");
  WriteFileAtomic(dir + "/g.json", R"({"something": "else"})");
  WriteFileAtomic(dir + "/h.json", R"({"ok": true, "groups": [{"name": "h", "ok": true, "users": "many"}]})");
  WriteFileAtomic(dir + "/i.json.part", R"({"ok": tr)");
  WriteFileAtomic(dir + "/k.json", R"({"ok": true, "groups": [{"name": "k", "ok": true, "messages": -3}]})");
  WriteFileAtomic(dir + "/j.json.tmp.x1y2", R"({"ok": tr)");
  ASSERT_EQ(::symlink("gone/l.json", (dir + "/l.json").c_str()), 0);  // a dangling link
  r = MergeFleetReports(dir);
  EXPECT_EQ(r.reports, 4u);
  EXPECT_EQ(r.users, 30u);
  ASSERT_EQ(r.broken.size(), 8u) << r.Text();
  EXPECT_EQ(r.broken[0], "i.json.part: partial report (the job is still running, was killed, or its ssh failed: see the joblog)");
  EXPECT_EQ(r.broken[1], "j.json.tmp.x1y2: partial report (a migrate is writing it, or was killed while it did)");
  EXPECT_EQ(r.broken[2], "e.json: empty");
  EXPECT_NE(r.broken[3].find("f.json: not valid JSON (truncated?) at byte "), std::string::npos) << r.broken[3];
  EXPECT_EQ(r.broken[3].find("json.exception"), std::string::npos) << "the library's own label: " << r.broken[3];
  EXPECT_EQ(r.broken[4], "g.json: not a migrate report (no \"ok\" and \"groups\")");
  EXPECT_EQ(r.broken[5], "h.json: \"users\" is no count");
  EXPECT_EQ(r.broken[6], "k.json: \"messages\" is no count");
  EXPECT_TRUE(r.broken[7].starts_with("l.json: ")) << r.broken[7];
  EXPECT_NE(r.broken[7].find("open "), std::string::npos) << r.broken[7];  // links are not followed
  for (const std::string& b : r.broken) EXPECT_EQ(b.find('\n'), std::string::npos);

  EXPECT_NE(ErrorOf([&] { MergeFleetReports(tmp / "none"); }).find("no directory"), std::string::npos);
  MakeDirs(tmp / "empty");
  EXPECT_NE(ErrorOf([&] { MergeFleetReports(tmp / "empty"); }).find("no job report"), std::string::npos);
}

}  // namespace
}  // namespace storemove::stream
