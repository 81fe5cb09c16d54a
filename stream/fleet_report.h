// storemove report: the JSON reports a fleet's jobs left in their results directory (migrate
// --report, one file per job, docs/fleet.md) merged into one: users, messages, bytes, failures,
// the slowest groups and the hold times. A file that is not a whole report is named, never
// skipped in silence.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace storemove::stream {

struct FleetGroupResult {
  std::string file;        // the report it came from (name within the directory)
  std::string group;
  bool ok = false;
  uint64_t users = 0, already_moved = 0, messages = 0, bytes_raw = 0, bytes_sent = 0;
  int attempts = 0;
  double seconds = 0;      // the group's phases, summed
  double hold_seconds = 0;
  std::string error;       // the last error of a failed group
  // Not failed on its own: stopped by its job's deadline, a signal, a destination found down or a
  // recovery of its source under it ("STOPPED group" in the text); the job's next run goes on.
  bool left_to_next_run = false;
};

struct FleetReport {
  std::string dir;
  uint64_t reports = 0;         // whole report files read
  uint64_t jobs_failed = 0;     // reports whose run was not ok (failed groups, or an error before any)
  std::vector<FleetGroupResult> groups;
  std::vector<std::string> job_errors;  // "FILE: error" of runs that ended before migrating (busy lock, ...)
  std::vector<std::string> broken;      // "FILE: why": empty, truncated or foreign files, partial (.part, .tmp.) files
  // Reports the last plan of the directory (RESULTS/.plan) names and that are not there, nor
  // partial: jobs not run yet, or killed before they wrote one.
  std::vector<std::string> missing;
  std::vector<std::string> recovered;   // what runs put back from killed runs' journals
  // Of the groups that completed: a failed group's users stay on the source (put back from hold),
  // whatever its report says it copied before it failed.
  uint64_t users = 0, already_moved = 0, messages = 0, bytes_raw = 0, bytes_sent = 0, groups_failed = 0;
  uint64_t users_not_moved = 0;  // users of the failed groups
  // Users no group of backup-groups.conf takes, which no job moves: the largest count one job
  // reported (every job of a source sees the same ones), and the names the reports list.
  uint64_t users_in_no_group = 0;
  std::set<std::string> no_group_names;
  double hold_max = 0, hold_mean = 0, hold_p95 = 0;  // over the groups that held users
  bool ok() const {
    return broken.empty() && missing.empty() && jobs_failed == 0 && groups_failed == 0 && users_in_no_group == 0;
  }
  std::string Text(size_t slowest = 5) const;
  std::string Json(size_t slowest = 5) const;
};

// Reads every *.json (and names every *.json.part and *.json.tmp.*) in `dir`, and names every report
// its .plan lists that is not there; kNotFound when there is no such directory, kInvalidArgument
// when it holds no report at all and no plan.
FleetReport MergeFleetReports(const std::string& dir);

}  // namespace storemove::stream
