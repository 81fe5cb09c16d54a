#include "stream/fleet_plan.h"

#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "util/error.h"
#include "util/fs.h"
#include "util/printable.h"

extern char** environ;

namespace storemove::stream {

namespace {

// A name goes into a job line and a file name: NUL and newline would end the line (GNU parallel
// reads one job per line) and other control bytes have no business in a path or host name.
bool HasControlBytes(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

bool IsGroupName(const std::string& name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](unsigned char c) {
           return std::isalnum(c) || c == '_' || c == '-';
         });
}

// An ssh destination ([user@]host, or an alias of ~/.ssh/config): no option (leading '-'), no
// blank, no shell or ssh metacharacter; ssh itself gets it after "--" too.
bool IsSshDestination(const std::string& host) {
  if (host.empty() || host[0] == '-' || host.size() > 255) return false;
  return std::all_of(host.begin(), host.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == '@' || c == ':' || c == '%' || c == '[' ||
           c == ']';
  });
}

std::string Where(const std::string& path, size_t i, const nlohmann::json& entry) {
  std::string where = path + ": sources[" + std::to_string(i) + "]";
  if (entry.is_object() && entry.contains("host") && entry["host"].is_string())
    where += " (host " + ShownName(entry["host"].get<std::string>()) + ")";
  return where;
}

std::string RequiredString(const nlohmann::json& entry, const char* field, const std::string& where) {
  if (!entry.contains(field)) Throw(Errc::kInvalidArgument, where + ": \"" + field + "\" is missing");
  if (!entry[field].is_string() || entry[field].get<std::string>().empty())
    Throw(Errc::kInvalidArgument, where + ": \"" + field + "\" must be a non-empty string");
  std::string value = entry[field].get<std::string>();
  if (HasControlBytes(value))
    Throw(Errc::kInvalidArgument, where + ": \"" + field + "\" contains a control character (newline, tab, ...)");
  return value;
}

// 64-bit FNV-1a: a short, stable name part for a (host, store, group) whatever the build.
uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// A readable file name part: [A-Za-z0-9._-] kept, anything else '_', the last 40 bytes (a
// path's end tells stores apart, its start rarely does), no leading '_' or '.'.
std::string FileNamePart(const std::string& s) {
  std::string out;
  for (unsigned char c : s) out += (std::isalnum(c) || c == '.' || c == '-' || c == '_') ? char(c) : '_';
  if (out.size() > 40) out = out.substr(out.size() - 40);
  size_t start = out.find_first_not_of("._");
  return start == std::string::npos ? "x" : out.substr(start);
}

std::string Hex(uint64_t v, int digits) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return std::string(buf + 16 - digits);
}

std::string SourceId(const FleetSource& s) { return Hex(Fnv1a(s.host + '\0' + s.store), 12); }

struct Captured {
  int status = -1;
  std::string out, err;
};

// Runs argv (no shell), capturing stdout and stderr; stdin is /dev/null.
Captured Run(const std::vector<std::string>& argv) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) ThrowErrno("pipe");
  if (::pipe2(err, O_CLOEXEC) != 0) ThrowErrno("pipe");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  ::close(err[1]);
  UniqueFd out_fd(out[0]), err_fd(err[0]);
  if (rc != 0) {
    errno = rc;
    ThrowErrno("run " + argv[0]);
  }
  Captured c;
  pollfd p[2] = {{out_fd.get(), POLLIN, 0}, {err_fd.get(), POLLIN, 0}};
  std::string* sinks[2] = {&c.out, &c.err};
  for (int open = 2; open > 0;) {
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      ThrowErrno("poll");
    }
    for (int i = 0; i < 2; ++i) {
      if (p[i].fd < 0 || !p[i].revents) continue;
      char buf[65536];
      ssize_t n = ::read(p[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, size_t(n));
      } else if (n == 0 || errno != EINTR) {
        p[i].fd = -1;
        --open;
      }
    }
  }
  int status;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) ThrowErrno("wait " + argv[0]);
  }
  c.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return c;
}

std::string FirstLine(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  size_t nl = s.rfind('\n');  // ssh's last line says why
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

std::string Join(const std::vector<std::string>& words) {
  std::string line;
  for (const std::string& w : words) line += (line.empty() ? "" : " ") + w;
  return line;
}

}  // namespace

std::string ShellQuote(const std::string& word) {
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

Fleet ReadFleet(const std::string& path) {
  Fleet fleet;
  fleet.path = path;
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(ReadFile(path));
  } catch (const nlohmann::json::exception& e) {
    Throw(Errc::kInvalidArgument, path + ": not valid JSON: " + ShownName(e.what(), 300));
  }
  if (!doc.is_object() || !doc.contains("sources") || !doc["sources"].is_array() || doc["sources"].empty())
    Throw(Errc::kInvalidArgument, path + ": expected {\"sources\": [...]} with at least one source");
  for (const auto& [key, value] : doc.items())
    if (key != "sources") Throw(Errc::kInvalidArgument, path + ": unknown field \"" + ShownName(key) + "\"");
  const auto& sources = doc["sources"];
  for (size_t i = 0; i < sources.size(); ++i) {
    const nlohmann::json& entry = sources[i];
    std::string where = Where(path, i, entry);
    if (!entry.is_object()) Throw(Errc::kInvalidArgument, where + ": expected an object");
    for (const auto& item : entry.items()) {
      static const char* kKnown[] = {"host", "store", "to", "key", "jobs", "groups", "storemove"};
      const std::string& key = item.key();  // a plain name: clang 14 cannot capture structured bindings
      if (std::none_of(std::begin(kKnown), std::end(kKnown), [&](const char* k) { return key == k; }))
        Throw(Errc::kInvalidArgument, where + ": unknown field \"" + ShownName(key) + "\"");
    }
    FleetSource s;
    s.host = RequiredString(entry, "host", where);
    if (!s.local() && !IsSshDestination(s.host))
      Throw(Errc::kInvalidArgument, where + ": \"host\" must be \":\" (this machine) or an ssh destination "
                                            "([user@]host: letters, digits, . - _ @ : %, not starting with '-')");
    s.store = RequiredString(entry, "store", where);
    if (s.store[0] != '/') Throw(Errc::kInvalidArgument, where + ": \"store\" must be an absolute path");
    s.to = RequiredString(entry, "to", where);
    size_t colon = s.to.rfind(':');
    std::string port = colon == std::string::npos ? "" : s.to.substr(colon + 1);
    if (colon == 0 || port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        s.to[0] == '-' || std::stoul(port) < 1 || std::stoul(port) > 65535)
      Throw(Errc::kInvalidArgument, where + ": \"to\" must be HOST:PORT with a port from 1 to 65535 (a storemove serve)");
    s.key = RequiredString(entry, "key", where);
    // The job lines run from any directory, on the source host.
    if (s.key[0] != '/') Throw(Errc::kInvalidArgument, where + ": \"key\" must be an absolute path");
    if (entry.contains("jobs")) {
      if (!entry["jobs"].is_number_integer() || entry["jobs"].get<int64_t>() < 1 || entry["jobs"].get<int64_t>() > 64)
        Throw(Errc::kInvalidArgument, where + ": \"jobs\" must be an integer from 1 to 64");
      s.jobs = entry["jobs"].get<int>();
    }
    if (entry.contains("groups")) {
      if (!entry["groups"].is_array() || entry["groups"].empty())
        Throw(Errc::kInvalidArgument, where + ": \"groups\" must be a non-empty list of group names");
      for (const auto& g : entry["groups"]) {
        if (!g.is_string() || !IsGroupName(g.get<std::string>()))
          Throw(Errc::kInvalidArgument, where + ": \"groups\": " + g.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + " is not a group name (1-64 letters, digits, '_' or '-')");
        if (std::find(s.groups.begin(), s.groups.end(), g.get<std::string>()) != s.groups.end())
          Throw(Errc::kInvalidArgument, where + ": \"groups\": " + g.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + " is listed twice");
        s.groups.push_back(g.get<std::string>());
      }
    }
    if (entry.contains("storemove")) {
      // A string is one word (a path); an array is a command line (helper-84: a store owned by
      // the packaged user could not be migrated by a fleet run as root, "sudo -u U storemove"
      // being quoted as one word).
      if (entry["storemove"].is_array()) {
        s.storemove.clear();
        for (const nlohmann::json& word : entry["storemove"]) {
          if (!word.is_string() || word.get<std::string>().empty() || HasControlBytes(word.get<std::string>()))
            Throw(Errc::kInvalidArgument, where + ": \"storemove\": " + word.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                                              " is not a word (a non-empty string without control characters)");
          s.storemove.push_back(word.get<std::string>());
        }
        if (s.storemove.empty()) Throw(Errc::kInvalidArgument, where + ": \"storemove\" is an empty command");
      } else {
        s.storemove = {RequiredString(entry, "storemove", where)};
      }
    }
    for (size_t j = 0; j < fleet.sources.size(); ++j)
      if (fleet.sources[j].host == s.host && fleet.sources[j].store == s.store)
        Throw(Errc::kInvalidArgument, where + ": the same host and store as sources[" + std::to_string(j) + "]");
    fleet.sources.push_back(std::move(s));
  }
  return fleet;
}

std::vector<std::string> GroupNamesOf(const std::string& text, const std::string& where) {
  std::vector<std::string> names;
  size_t start = 0;
  for (int lineno = 1; start < text.size(); ++lineno) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos)
      Throw(Errc::kInvalidArgument, where + " line " + std::to_string(lineno) + ": expected NAME=REGEX");
    std::string name = line.substr(first, eq - first);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.pop_back();
    if (!IsGroupName(name))
      Throw(Errc::kInvalidArgument, where + " line " + std::to_string(lineno) + ": invalid group name");
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  return names;
}

std::string ReadGroupsConf(const FleetSource& source) {
  std::string path = source.store + "/config/backup-groups.conf";
  if (source.local()) {
    if (!PathExists(source.store + "/config")) Throw(Errc::kNotFound, "plan: no store at " + source.store);
    return PathExists(path) ? ReadFile(path) : "";
  }
  // The remote login shell reads this line: every word quoted.
  std::string remote = "if ! test -d " + ShellQuote(source.store + "/config") + "; then echo no store at " +
                       ShellQuote(source.store) + " >&2; exit 66; fi; test ! -e " + ShellQuote(path) +
                       " || cat -- " + ShellQuote(path);
  Captured c = Run({"ssh", "-n", "-o", "BatchMode=yes", "--", source.host, remote});
  if (c.status != 0)
    Throw(Errc::kIo, "ssh " + source.host + ": cannot read " + path + " (exit " + std::to_string(c.status) +
                         "): " + FirstLine(c.err));
  return c.out;
}

std::vector<PlannedJob> PlanFleet(const Fleet& fleet, const PlanOptions& options) {
  if (options.results_dir.empty()) Throw(Errc::kInvalidArgument, "plan: --results DIR is required");
  if (HasControlBytes(options.results_dir)) Throw(Errc::kInvalidArgument, "plan: --results contains a control character");
  // Absolute: the lines may run from another directory (a Slurm or Kubernetes job, docs/fleet.md).
  std::string results = std::filesystem::absolute(options.results_dir).lexically_normal().string();
  while (results.size() > 1 && results.back() == '/') results.pop_back();
  MakeDirs(results + "/.slots", 0755);

  auto read_conf = [&](const FleetSource& s) {
    return options.read_groups_conf ? options.read_groups_conf(s) : ReadGroupsConf(s);
  };
  std::vector<std::vector<std::string>> groups(fleet.sources.size());
  for (size_t i = 0; i < fleet.sources.size(); ++i) {
    const FleetSource& s = fleet.sources[i];
    std::string where = (s.local() ? "" : s.host + ":") + s.store + "/config/backup-groups.conf";
    if (!s.groups.empty()) {
      groups[i] = s.groups;
      // A local source's groups are checked now rather than failing job by job (a remote one's
      // when its jobs run: reading them would cost an ssh the fleet file made unnecessary).
      if (s.local()) {
        std::vector<std::string> defined = GroupNamesOf(read_conf(s), where);
        for (const std::string& g : s.groups)
          if (std::find(defined.begin(), defined.end(), g) == defined.end())
            Throw(Errc::kInvalidArgument, fleet.path + ": sources[" + std::to_string(i) + "]: no group '" + g +
                                              "' in " + where);
      }
      continue;
    }
    groups[i] = GroupNamesOf(read_conf(s), where);
    if (groups[i].empty())
      Throw(Errc::kInvalidArgument, fleet.path + ": sources[" + std::to_string(i) + "] (host " + s.host +
                                        "): no groups: " + where + " defines none (give \"groups\")");
  }

  std::vector<PlannedJob> jobs;
  size_t most = 0;
  for (const auto& g : groups) most = std::max(most, g.size());
  for (size_t k = 0; k < most; ++k) {
    for (size_t i = 0; i < fleet.sources.size(); ++i) {
      if (k >= groups[i].size()) continue;
      const FleetSource& s = fleet.sources[i];
      PlannedJob job;
      job.source = i;
      job.group = groups[i][k];
      std::string name = FileNamePart(s.local() ? "local" : s.host) + "_" + FileNamePart(s.store) + "_" + job.group +
                         "-" + Hex(Fnv1a(s.host + '\0' + s.store + '\0' + job.group), 8);
      job.report = results + "/" + name + ".json";
      std::string slot = results + "/.slots/" + SourceId(s) + "-" + std::to_string(k % size_t(s.jobs));
      std::vector<std::string> migrate;
      for (const std::string& word : s.storemove) migrate.push_back(ShellQuote(word));
      migrate.insert(migrate.end(), {"migrate", "--store", ShellQuote(s.store), "--to", ShellQuote(s.to), "--key",
                                     ShellQuote(s.key), "--lock-wait", std::to_string(options.lock_wait_seconds)});
      if (options.deadline_epoch)
        migrate.insert(migrate.end(), {"--deadline", "@" + std::to_string(*options.deadline_epoch)});
      // Every group of a groups file shared by the fleet's back-ends gets a job on each of them:
      // one that holds nobody on this source is done there, not a typo (helper-72: such jobs
      // exited 64 at every rerun and the fleet was never reported done). Groups the fleet file
      // lists were chosen for this source: an empty one is still refused.
      if (s.groups.empty()) migrate.push_back("--allow-empty-groups");
      if (s.local()) {
        migrate.insert(migrate.end(), {"--report", ShellQuote(job.report), "--", ShellQuote(job.group)});
        job.command = "flock " + ShellQuote(slot) + " " + Join(migrate);
      } else {
        // The report comes back on ssh's stdout into a part file, renamed over the report once
        // complete: a cut connection never replaces the last good report with a piece.
        migrate.insert(migrate.end(), {"--report", "-", "--", ShellQuote(job.group)});
        std::string part = job.report + ".part";
        job.command = "flock " + ShellQuote(slot) + " ssh -n -o BatchMode=yes -- " + ShellQuote(s.host) + " " +
                      ShellQuote(Join(migrate)) + " > " + ShellQuote(part) + "; s=$?; if [ -s " + ShellQuote(part) +
                      " ]; then mv -f -- " + ShellQuote(part) + " " + ShellQuote(job.report) + "; fi; exit $s";
      }
      // An earlier run's report is not this run's: a job killed before it writes its own leaves
      // none, which `report` names as missing (helper-116: an earlier run's "ok" report stood for a
      // run killed with a new user on hold, "every job done").
      job.command = "rm -f -- " + ShellQuote(job.report) + "; " + job.command;
      jobs.push_back(std::move(job));
    }
  }
  // The reports this plan's jobs leave: `report` names every one that has none (a job not run
  // yet, or killed before it wrote one) instead of calling the fleet done (helper-114).
  // Added to those of earlier plans into the same directory (waves, subsets, a plan only looked
  // at): a job of any of them without its report keeps the fleet from being done.
  const std::string plan_path = results + "/" + kPlannedReportsFile;
  std::set<std::string> names;
  if (PathExists(plan_path)) {
    std::istringstream earlier(ReadFile(plan_path));
    std::string line;
    if (!std::getline(earlier, line) || line != kPlannedReportsMagic)
      Throw(Errc::kCorrupt, "plan: " + plan_path + " is not a storemove fleet plan (first line '" +
                                EscapeControls(line) + "'): move it away, or mend it, before planning into " + results);
    while (std::getline(earlier, line))
      if (!line.empty()) names.insert(line);
  }
  for (const PlannedJob& job : jobs) names.insert(job.report.substr(results.size() + 1));
  std::string planned = std::string(kPlannedReportsMagic) + "\n";
  for (const std::string& name : names) planned += name + "\n";
  WriteFileAtomic(plan_path, planned, 0644);
  return jobs;
}

}  // namespace storemove::stream
