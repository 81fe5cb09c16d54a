// storemove plan: a fleet migration as a GNU parallel job file (docs/fleet.md). The fleet file
// names the source stores (on this machine or over ssh) and where each goes; the plan is one
// shell line per (source, group), each one `storemove migrate` of that group that leaves its
// JSON report in the results directory. Scheduling, retries and job logs are GNU parallel's.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace storemove::stream {

struct FleetSource {
  std::string host;                  // ":" = this machine (GNU parallel's convention), else an ssh destination
  std::string store;                 // the source store's directory on that host
  std::string to;                    // HOST:PORT of the destination's `storemove serve`
  std::string key;                   // pre-shared key file, on that host
  int jobs = 1;                      // groups of this source migrated at once
  std::vector<std::string> groups;   // empty = every group of STORE/config/backup-groups.conf
  // The command on that host, word by word: ["storemove"], or a path, or a way to run it as the
  // store's owner (["sudo", "-u", "storemove", "storemove"]: root is refused in a store another
  // user owns).
  std::vector<std::string> storemove = {"storemove"};
  bool local() const { return host == ":"; }
};

struct Fleet {
  std::string path;  // for messages
  std::vector<FleetSource> sources;
};

// Parses and checks a fleet file (JSON: {"sources": [{"host", "store", "to", "key", "jobs",
// "groups", "storemove"}]}). Every error is one line naming the file and the entry
// ("fleet.json: sources[2] (host mail3): ..."), kInvalidArgument (kNotFound: no file).
Fleet ReadFleet(const std::string& path);

// RESULTS/.plan: the first line kPlannedReportsMagic, then the file name of each planned job's
// report (NAME.json), one per line; written by PlanFleet, read by MergeFleetReports.
inline constexpr char kPlannedReportsFile[] = ".plan";
inline constexpr char kPlannedReportsMagic[] = "storemove fleet plan 1";

struct PlannedJob {
  size_t source = 0;        // index into Fleet::sources
  std::string group;
  std::string report;       // RESULTS/NAME.json, the same on every plan of the same fleet
  std::string command;      // one shell line
};

struct PlanOptions {
  std::string results_dir;  // where every job leaves its report (made if missing; absolute in the lines)
  // A job rerun while its predecessor still runs on the source (its ssh was cut) waits this long
  // for the group's lock (migrate --lock-wait) before failing.
  int lock_wait_seconds = 600;
  // plan --deadline: every job's migrate gets --deadline @SECONDS (one instant, whatever each
  // host's time zone; a job started after it stops at once with 75, starting nothing).
  std::optional<int64_t> deadline_epoch;
  // The text of the source's backup-groups.conf; the default reads it locally or over ssh.
  // Tests replace it to plan without the hosts.
  std::function<std::string(const FleetSource&)> read_groups_conf;
};

// The jobs, taking the first group of every source, then the second of every source, and so on:
// `parallel -j M` then starts work on every source at once. Each job runs under one of the
// source's `jobs` slot locks (flock RESULTS/.slots/SOURCE-K, K = the group's index mod jobs), so at
// most `jobs` groups of one source run at once whatever -j says; the kernel drops a killed job's
// lock. The lines quote every name for the shell (any byte but NUL and newline is safe).
std::vector<PlannedJob> PlanFleet(const Fleet& fleet, const PlanOptions& options);

// The groups of a backup-groups.conf text (`where` names it in errors), in the file's order.
std::vector<std::string> GroupNamesOf(const std::string& text, const std::string& where);

// POSIX shell single-quoting: the word reads back as exactly `word`.
std::string ShellQuote(const std::string& word);

// Reads STORE/config/backup-groups.conf of `source`: the file itself for ":", else
// `ssh -n -o BatchMode=yes -- HOST cat -- PATH`. A missing file reads as "" (no groups).
std::string ReadGroupsConf(const FleetSource& source);

}  // namespace storemove::stream
