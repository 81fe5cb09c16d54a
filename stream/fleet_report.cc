#include "stream/fleet_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "stream/fleet_plan.h"
#include "stream/progress.h"
#include "util/error.h"
#include "util/printable.h"
#include "util/fs.h"
#include "util/version.h"
#include "util/plural.h"

namespace storemove::stream {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

uint64_t Count(const json& j, const char* field) {
  if (!j.contains(field)) return 0;
  // Parsed JSON holds a count as unsigned; a negative or fractional one is no count.
  if (!j[field].is_number_unsigned()) throw std::runtime_error(std::string("\"") + field + "\" is no count");
  return j[field].get<uint64_t>();
}

double Seconds(const json& j, const char* field) {
  if (!j.contains(field)) return 0;
  if (!j[field].is_number()) throw std::runtime_error(std::string("\"") + field + "\" is no number");
  return j[field].get<double>();
}

// A boolean field, false when absent or of another type: json::value throws type_error for a
// "deadline_reached": "yes", after the report was counted, which then counted as broken too
// (found by the report fuzz target).
bool Flag(const json& j, const char* field) { return j.contains(field) && j[field].is_boolean() && j[field].get<bool>(); }

// A group's "result" that says the group was left to the job's next run (its deadline, its
// destination found down, its source recovered under it, a signal), not failed on its own.
bool LeftToTheNextRun(const std::string& result) {
  return result.ends_with("(destination down)") || result.ends_with("(deadline)") ||
         result.ends_with("(source recovered)") || result.ends_with("(interrupted)");
}

std::string ResultOf(const json& g) {
  return g.contains("result") && g["result"].is_string() ? g["result"].get<std::string>() : "";
}

FleetGroupResult ReadGroup(const json& g, const std::string& file) {
  if (!g.is_object() || !g.contains("name") || !g["name"].is_string() || !g.contains("ok") || !g["ok"].is_boolean())
    throw std::runtime_error("a group without \"name\" or \"ok\"");
  FleetGroupResult r;
  r.file = file;
  r.group = g["name"].get<std::string>();
  r.ok = g["ok"].get<bool>();
  r.users = Count(g, "users");
  r.already_moved = Count(g, "already_moved");
  r.messages = Count(g, "messages");
  r.bytes_raw = Count(g, "bytes_raw");
  r.bytes_sent = Count(g, "bytes_sent");
  r.attempts = int(Count(g, "attempts"));
  r.hold_seconds = Seconds(g, "hold_seconds");
  if (g.contains("phase_seconds")) {
    if (!g["phase_seconds"].is_object()) throw std::runtime_error("\"phase_seconds\" is no object");
    for (const auto& [phase, value] : g["phase_seconds"].items()) {
      if (!value.is_number()) throw std::runtime_error("phase \"" + phase + "\" is no number");
      r.seconds += value.get<double>();
    }
  }
  if (g.contains("errors") && g["errors"].is_array() && !g["errors"].empty() && g["errors"].back().is_string())
    r.error = g["errors"].back().get<std::string>();
  else if (!r.ok && g.contains("result") && g["result"].is_string())  // "not started (deadline)"
    r.error = g["result"].get<std::string>();
  r.left_to_next_run = !r.ok && LeftToTheNextRun(ResultOf(g));
  // Why it stopped first: its last error alone ("attempt 1: connect ... refused") read as the
  // reason of a group a signal stopped (helper-124).
  if (r.left_to_next_run && r.error != ResultOf(g)) r.error = ResultOf(g) + " (last error: " + r.error + ")";
  return r;
}

// A group of a job that failed for a reason of its own, not one its job's deadline or a
// destination found down left to the next run (their "result" says so).
bool FailedOnTheirOwn(const json& groups) {
  for (const json& g : groups) {
    if (!g.is_object() || !g.contains("ok") || Flag(g, "ok")) continue;
    if (!LeftToTheNextRun(ResultOf(g))) return true;
  }
  return false;
}

}  // namespace

FleetReport MergeFleetReports(const std::string& given) {
  // "results/" as in the README: its files are named results/x.json, not results//x.json.
  std::string dir = given;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (!fs::is_directory(dir)) Throw(Errc::kNotFound, "report: no directory " + dir);
  FleetReport report;
  report.dir = dir;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with(".")) continue;  // the plan's slot locks, editors' files
    if (name.ends_with(".json.part")) {
      report.broken.push_back(EscapeControls(name) + ": partial report (the job is still running, was killed, or its ssh failed: see the joblog)");
    } else if (name.find(".json.tmp.") != std::string::npos) {  // WriteFileAtomic's, of migrate --report FILE
      report.broken.push_back(EscapeControls(name) + ": partial report (a migrate is writing it, or was killed while it did)");
    } else if (name.ends_with(".json")) {
      names.push_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  std::sort(report.broken.begin(), report.broken.end());
  // Jobs of the plan without a report: killed before they wrote one, or not run (helper-114:
  // four of nine jobs run, or one killed -9 with its users on hold, and "every job done", exit 0).
  const std::string plan = dir + "/" + kPlannedReportsFile;
  bool planned = false;
  if (PathExists(plan)) {
    std::istringstream in(ReadFile(plan));
    std::string line;
    if (!std::getline(in, line) || line != kPlannedReportsMagic)
      Throw(Errc::kCorrupt, "report: " + plan + " is not a storemove fleet plan (first line '" + EscapeControls(line) + "')");
    planned = true;
    while (std::getline(in, line)) {
      if (line.empty() || std::binary_search(names.begin(), names.end(), line)) continue;
      const bool partial = std::any_of(report.broken.begin(), report.broken.end(), [&](const std::string& b) {
        return b.starts_with(EscapeControls(line) + ".");  // its .part or .tmp. is named already
      });
      if (!partial)
        report.missing.push_back(EscapeControls(line) +
                                 ": no report (the job has not run, or was killed before it wrote one: see the joblog; "
                                 "parallel --resume-failed runs it)");
    }
  }
  for (const std::string& name : names) {
    try {
      // Unreadable (a dangling link, a directory by that name): one broken line like the others.
      std::string text = ReadFile(dir + "/" + name);
      if (text.find_first_not_of(" \t\r\n") == std::string::npos) throw std::runtime_error("empty");
      json j = json::parse(text);
      if (!j.is_object() || !j.contains("ok") || !j["ok"].is_boolean() || !j.contains("groups") || !j["groups"].is_array())
        throw std::runtime_error("not a migrate report (no \"ok\" and \"groups\")");
      std::vector<FleetGroupResult> groups;
      for (const json& g : j["groups"]) groups.push_back(ReadGroup(g, name));
      if (j.contains("recovered") && j["recovered"].is_array())
        for (const json& line : j["recovered"])
          if (line.is_string()) report.recovered.push_back(name + ": " + line.get<std::string>());
      report.users_in_no_group = std::max(report.users_in_no_group, Count(j, "users_in_no_group"));
      if (j.contains("users_in_no_group_names") && j["users_in_no_group_names"].is_array())
        for (const json& user : j["users_in_no_group_names"])
          if (user.is_string()) report.no_group_names.insert(EscapeControls(user.get<std::string>()));
      ++report.reports;
      if (!j["ok"].get<bool>()) {
        ++report.jobs_failed;
        if (j.contains("error") && j["error"].is_string()) report.job_errors.push_back(name + ": " + j["error"].get<std::string>());
        else if (Flag(j, "interrupted"))
          report.job_errors.push_back(name + ": interrupted (by a signal)" +
                                      (FailedOnTheirOwn(j["groups"]) ? "; other groups failed on their own (below)"
                                                                     : "; its next run goes on"));
        else if (j.contains("destination_unreachable") && j["destination_unreachable"].is_string())
          report.job_errors.push_back(name + ": destination down (" + j["destination_unreachable"].get<std::string>() +
                                      (FailedOnTheirOwn(j["groups"]) ? "); other groups failed on their own (below)"
                                                                     : "); its next run goes on"));
        else if (j.contains("source_recovered") && j["source_recovered"].is_string())
          report.job_errors.push_back(name + ": another process recovered its source store under it (" +
                                      j["source_recovered"].get<std::string>() +
                                      (FailedOnTheirOwn(j["groups"]) ? "); other groups failed on their own (below)"
                                                                     : "); its next run goes on"));
        else if (Flag(j, "deadline_reached") && j.contains("deadline") && j["deadline"].is_string())
          report.job_errors.push_back(name + ": stopped at its deadline (" + j["deadline"].get<std::string>() +
                                      "); its next run goes on");
      }
      report.groups.insert(report.groups.end(), groups.begin(), groups.end());
    } catch (const std::exception& e) {
      std::string why = e.what();
      // The library's "[json.exception.parse_error.101] parse error at line 1, column 5: ..." is
      // cut to what an administrator acts on.
      if (const auto* parse = dynamic_cast<const json::parse_error*>(&e)) {
        const size_t detail = why.find(": ", why.find(']'));
        why = "not valid JSON (truncated?) at byte " + std::to_string(parse->byte) +
              (detail == std::string::npos ? "" : ": " + why.substr(detail + 2));
      }
      report.broken.push_back(EscapeControls(name) + ": " + ShownName(why, 300));  // the bytes it read: raw
    }
  }
  // Each source's jobs report the same users; several sources' names add up (a lower bound: a
  // report lists only its first names).
  report.users_in_no_group = std::max<uint64_t>(report.users_in_no_group, report.no_group_names.size());
  if (report.reports == 0 && report.broken.empty() && !planned)
    Throw(Errc::kInvalidArgument, "report: no job report (*.json) in " + dir);
  std::vector<double> holds;
  for (const FleetGroupResult& g : report.groups) {
    if (!g.ok) {
      ++report.groups_failed;
      report.users_not_moved += g.users;
      continue;
    }
    report.users += g.users;
    report.already_moved += g.already_moved;
    report.messages += g.messages;
    report.bytes_raw += g.bytes_raw;
    report.bytes_sent += g.bytes_sent;
    if (g.hold_seconds > 0) holds.push_back(g.hold_seconds);
  }
  if (!holds.empty()) {
    std::sort(holds.begin(), holds.end());
    report.hold_max = holds.back();
    double sum = 0;
    for (double h : holds) sum += h;
    report.hold_mean = sum / double(holds.size());
    report.hold_p95 = holds[std::min(holds.size() - 1, size_t(std::ceil(0.95 * double(holds.size()))) - 1)];
  }
  return report;
}

namespace {

std::vector<const FleetGroupResult*> Slowest(const FleetReport& r, size_t n) {
  std::vector<const FleetGroupResult*> all;
  for (const FleetGroupResult& g : r.groups) all.push_back(&g);
  std::sort(all.begin(), all.end(), [](auto* a, auto* b) { return a->seconds > b->seconds; });
  if (all.size() > n) all.resize(n);
  return all;
}

}  // namespace

std::string FleetReport::Text(size_t slowest) const {
  std::string out;
  char buf[1024];
  // Group names, file names, errors and recovered lines come from the job reports, which any job
  // (and whoever can write the results directory) wrote: shown escaped, they cannot drive the
  // terminal (security review #09). JSON escapes them itself.
  std::snprintf(buf, sizeof buf, "fleet %s: %s, %s (%llu failed), %s failed\n", EscapeControls(dir).c_str(),
                Counted(reports, "job report").c_str(), Counted(groups.size(), "group").c_str(),
                (unsigned long long)groups_failed, Counted(jobs_failed, "job").c_str());
  out += buf;
  std::snprintf(buf, sizeof buf, "moved: %s (%llu already moved by earlier runs), %s, %s of messages, %s sent\n",
                Counted(users, "user").c_str(), (unsigned long long)already_moved, Counted(messages, "message").c_str(),
                HumanBytes(double(bytes_raw)).c_str(), HumanBytes(double(bytes_sent)).c_str());
  out += buf;
  if (groups_failed > 0) {
    std::snprintf(buf, sizeof buf, "not moved: %s of the %s (still on their sources)\n",
                  Counted(users_not_moved, "user").c_str(), Counted(groups_failed, "failed group").c_str());
    out += buf;
  }
  std::snprintf(buf, sizeof buf, "hold: max %.2f s, mean %.2f s, p95 %.2f s\n", hold_max, hold_mean, hold_p95);
  out += buf;
  if (!groups.empty()) {
    out += "slowest groups:\n";
    for (const FleetGroupResult* g : Slowest(*this, slowest)) {
      std::snprintf(buf, sizeof buf, "  %-20s %8.2f s  hold %.2f s  %llu users  %s\n", ShownName(g->group).c_str(),
                    g->seconds, g->hold_seconds, (unsigned long long)g->users, ShownName(g->file).c_str());
      out += buf;
    }
  }
  // A group its job's deadline, a signal or a destination found down stopped is no failure of
  // its own: its job's line says why, and the next run goes on with it.
  for (const FleetGroupResult& g : groups)
    if (!g.ok)
      out += std::string(g.left_to_next_run ? "STOPPED" : "FAILED") + " group " + EscapeControls(g.group) + " (" +
             EscapeControls(g.file) + "): " + EscapeControls(g.error) + "\n";
  for (const std::string& e : job_errors) out += "FAILED job " + EscapeControls(e) + "\n";
  for (const std::string& b : broken) out += "BROKEN " + EscapeControls(b) + "\n";
  for (const std::string& m : missing) out += "MISSING " + m + "\n";
  for (const std::string& line : recovered) out += "recovered " + EscapeControls(line) + "\n";
  if (users_in_no_group > 0) {
    out += "in no group: " + Counted(users_in_no_group, "user") +
           " no job moved (backup-groups.conf takes none of them; they are still on their source):";
    for (const std::string& name : no_group_names) out += " " + name;
    out += "\n";
  }
  if (ok())
    out += "fleet: every job done\n";
  else if (broken.empty() && missing.empty() && jobs_failed == 0 && groups_failed == 0)
    out += "fleet: NOT DONE (every job ran, but users in no group were not moved: give them a group, plan, run again)\n";
  else
    out += "fleet: NOT DONE (rerun the failed jobs: parallel --resume-failed)\n";
  return out;
}

std::string FleetReport::Json(size_t slowest) const {
  json j;
  j["dir"] = dir;
  j["ok"] = ok();
  j["reports"] = reports;
  j["jobs_failed"] = jobs_failed;
  j["groups"] = groups.size();
  j["groups_failed"] = groups_failed;
  j["users"] = users;
  j["already_moved"] = already_moved;
  j["users_not_moved"] = users_not_moved;
  j["users_in_no_group"] = users_in_no_group;
  j["users_in_no_group_names"] = no_group_names;
  j["messages"] = messages;
  j["bytes_raw"] = bytes_raw;
  j["bytes_sent"] = bytes_sent;
  j["hold_seconds"] = {{"max", hold_max}, {"mean", hold_mean}, {"p95", hold_p95}};
  j["slowest"] = json::array();
  for (const FleetGroupResult* g : Slowest(*this, slowest))
    j["slowest"].push_back({{"group", g->group}, {"file", g->file}, {"seconds", g->seconds},
                            {"hold_seconds", g->hold_seconds}, {"users", g->users}});
  j["failed_groups"] = json::array();
  for (const FleetGroupResult& g : groups)
    if (!g.ok)
      j["failed_groups"].push_back(
          {{"group", g.group}, {"file", g.file}, {"error", g.error}, {"left_to_next_run", g.left_to_next_run}});
  j["job_errors"] = job_errors;
  j["broken"] = broken;
  j["missing"] = missing;
  j["recovered"] = recovered;
  j["storemove_version"] = Version();
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace storemove::stream
