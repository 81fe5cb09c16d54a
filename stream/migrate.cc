#include "stream/migrate.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "store/admin.h"
#include "util/error.h"

namespace storemove::stream {

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Counters one group's worker updates and the display thread reads.
struct LiveGroup {
  std::atomic<uint64_t> messages{0}, bytes{0};
  std::atomic<const char*> phase{"waiting"};
  uint64_t total_bytes = 0;
};

class Migration {
 public:
  Migration(store::Store& source, const MigrateOptions& options) : source_(source), options_(options) {}

  MigrateReport Run() {
    auto start = Clock::now();
    std::vector<BackupGroup> groups = ReadBackupGroups(options_.groups_file);
    if (groups.empty()) Throw(Errc::kInvalidArgument, "migrate: no backup groups in " + options_.groups_file);
    if (!options_.groups.empty()) {
      std::vector<BackupGroup> chosen;
      for (const std::string& name : options_.groups) {
        auto it = std::find_if(groups.begin(), groups.end(), [&](const BackupGroup& g) { return g.name == name; });
        if (it == groups.end()) Throw(Errc::kInvalidArgument, "migrate: no group '" + name + "' in " + options_.groups_file);
        chosen.push_back(*it);
      }
      groups = chosen;
    }
    // Each user belongs to the first group that matches it (overlapping patterns never migrate
    // a user twice at once).
    members_.resize(groups.size());
    live_ = std::vector<LiveGroup>(groups.size());
    source_.ForEachUser([&](const store::UserInfo& u) {
      for (size_t g = 0; g < groups.size(); ++g) {
        if (GroupMatches(groups[g], u.user)) {
          members_[g].insert(u.user);
          live_[g].total_bytes += u.quota_used;
          return;
        }
      }
      ++report_.users_in_no_group;
      if (report_.no_group_names.size() < MigrateReport::kNoGroupNamesShown) report_.no_group_names.push_back(u.user);
    });
    report_.groups.resize(groups.size());
    for (size_t g = 0; g < groups.size(); ++g) report_.groups[g].name = groups[g].name;

    std::atomic<size_t> next{0};
    std::atomic<bool> done{false};
    std::thread display;
    if (options_.live) display = std::thread([&] { Display(done); });
    std::vector<std::thread> workers;
    int jobs = std::max(1, std::min<int>(options_.jobs, int(groups.size())));
    for (int j = 0; j < jobs; ++j)
      workers.emplace_back([&] {
        for (size_t g; (g = next++) < groups.size();) RunGroup(g);
      });
    for (auto& w : workers) w.join();
    done = true;
    if (display.joinable()) display.join();
    report_.seconds = Since(start);
    return report_;
  }

 private:
  std::string MovedHost() const { return options_.moved_host.empty() ? options_.to.host : options_.moved_host; }

  void RunGroup(size_t g) {
    GroupReport& r = report_.groups[g];
    LiveGroup& live = live_[g];
    for (r.attempts = 1; r.attempts <= options_.retries + 1; ++r.attempts) {
      try {
        MigrateGroup(g, r, live);
        r.ok = true;
        live.phase = "done";
        return;
      } catch (const Error& e) {
        r.errors.push_back("attempt " + std::to_string(r.attempts) + ": " + e.what());
      }
    }
    r.attempts = options_.retries + 1;
    live.phase = "FAILED";
    // Give the users their service back on the source: their mail was only held.
    for (const std::string& user : members_[g]) {
      try {
        std::optional<store::UserInfo> u = source_.FindUser(user);
        if (u && u->status.state == store::UserState::kHold) source_.SetUserStatus(user, store::UserStatus{});
      } catch (const Error& e) {
        r.errors.push_back("reactivating " + user + ": " + e.what());
      }
    }
  }

  void MigrateGroup(size_t g, GroupReport& r, LiveGroup& live) {
    // Users an earlier run finished are left alone: a rerun resumes.
    std::set<std::string> users;
    r.already_moved = 0;
    for (const std::string& user : members_[g]) {
      std::optional<store::UserInfo> u = source_.FindUser(user);
      if (!u) continue;  // deleted by an earlier run after its verification
      if (u->status.state == store::UserState::kMoved && u->status.host == MovedHost()) {
        ++r.already_moved;
        continue;
      }
      users.insert(user);
    }
    r.users = users.size();
    if (users.empty()) return;

    BackupOptions backup;
    backup.only_users = &users;
    backup.source_host = "migrate";
    backup.on_progress = [&](uint64_t m, uint64_t b) {
      live.messages += m;
      live.bytes += b;
    };
    RestoreOptions remote;
    remote.partition = options_.partition;
    // The destination mirrors the source's statuses until the switch sets them (verify compares them).
    remote.keep_status = true;

    auto t = Clock::now();
    live.phase = "copy";
    Account(r, net::SendBackup(source_, backup, options_.to, options_.client, remote));
    r.times.copy += Since(t);

    t = Clock::now();
    live.phase = "hold";
    for (const std::string& user : users) source_.SetUserStatus(user, store::UserStatus{store::UserState::kHold, ""});
    r.times.hold += Since(t);

    // Everything since the copy (new mail, flag changes, expunges): a full pass that sends
    // almost no bodies (the destination holds them) and mirrors the folders.
    t = Clock::now();
    live.phase = "catch-up";
    remote.mirror = true;
    Account(r, net::SendBackup(source_, backup, options_.to, options_.client, remote));
    r.times.catch_up += Since(t);

    t = Clock::now();
    live.phase = "verify";
    backup.on_progress = nullptr;
    VerifyReport v = net::VerifyRemote(source_, backup, options_.to, options_.client);
    r.times.verify += Since(t);
    if (!v.equal()) {
      std::string first = v.differences.front();
      Throw(Errc::kCorrupt, "verification found " + std::to_string(v.differences.size()) +
                                " differences at the destination, e.g. " + first);
    }
    // The users are on hold, so nothing changed since the manifest was taken.
    for (const std::string& user : users) store::RecordVerified(source_, user, options_.to.ToString());

    t = Clock::now();
    live.phase = "switch";
    for (const std::string& user : users) {
      net::SetRemoteStatus(options_.to, options_.client, user, store::UserStatus{});
      source_.SetUserStatus(user, store::UserStatus{store::UserState::kMoved, MovedHost()});
    }
    r.times.switch_over += Since(t);

    if (options_.delete_source) {
      t = Clock::now();
      live.phase = "delete";
      DeleteVerified(users);
      r.times.remove += Since(t);
    }
  }

  void DeleteVerified(const std::set<std::string>& users) {
    // DeleteUser refuses a user whose state differs from what was verified.
    for (const std::string& user : users) store::DeleteUser(source_, user);
  }

  static void Account(GroupReport& r, const SessionReport& s) {
    r.messages += s.messages + s.links;
    r.bytes_raw += s.message_bytes;
    r.bytes_sent += s.stream_bytes;
    r.dedupe_saved += s.message_bytes >= s.body_bytes ? s.message_bytes - s.body_bytes : 0;
    if (s.errors) Throw(Errc::kCorrupt, std::to_string(s.errors) + " errors in the session" +
                                            (s.error_lines.empty() ? "" : ": " + s.error_lines.front()));
  }

  void Display(const std::atomic<bool>& done) {
    auto start = Clock::now();
    while (!done) {
      std::string line = "\r";
      uint64_t bytes = 0, total = 0, messages = 0;
      for (size_t g = 0; g < live_.size(); ++g) {
        const LiveGroup& l = live_[g];
        bytes += l.bytes;
        total += l.total_bytes;
        messages += l.messages;
        line += report_.groups[g].name + ":" + l.phase.load() + " ";
      }
      double secs = Since(start), rate = secs > 0 ? double(bytes) / secs : 0;
      char buf[160];
      std::snprintf(buf, sizeof buf, "| %llu msgs %s %s/s", (unsigned long long)messages,
                    HumanBytes(double(bytes)).c_str(), HumanBytes(rate).c_str());
      line += buf;
      // The copy pass carries about the whole selection once; the catch-up little more.
      if (rate > 0 && bytes < total) {
        std::snprintf(buf, sizeof buf, " ETA %.0fs", double(total - bytes) / rate);
        line += buf;
      }
      line += "\033[K";
      (void)!::write(STDERR_FILENO, line.data(), line.size());
      std::this_thread::sleep_for(std::chrono::milliseconds(250));  // redraw period, not synchronisation
    }
    (void)!::write(STDERR_FILENO, "\r\033[K", 4);
  }

  store::Store& source_;
  const MigrateOptions& options_;
  MigrateReport report_;
  std::vector<std::set<std::string>> members_;
  std::vector<LiveGroup> live_;
};

}  // namespace

bool MigrateReport::ok() const {
  for (const GroupReport& g : groups)
    if (!g.ok) return false;
  return true;
}

std::string MigrateReport::Text() const {
  std::string out;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%-12s %6s %6s %9s %10s %10s %10s %7s %7s %7s %7s %7s  %s\n", "group", "users", "moved",
                "messages", "raw", "sent", "deduped", "copy", "hold", "catchup", "verify", "switch", "result");
  out += buf;
  for (const GroupReport& g : groups) {
    std::snprintf(buf, sizeof buf, "%-12s %6llu %6llu %9llu %10s %10s %10s %6.1fs %6.1fs %6.1fs %6.1fs %6.1fs  %s\n",
                  g.name.c_str(), (unsigned long long)g.users, (unsigned long long)g.already_moved,
                  (unsigned long long)g.messages, HumanBytes(double(g.bytes_raw)).c_str(),
                  HumanBytes(double(g.bytes_sent)).c_str(), HumanBytes(double(g.dedupe_saved)).c_str(), g.times.copy,
                  g.times.hold, g.times.catch_up, g.times.verify, g.times.switch_over,
                  g.ok ? (g.attempts > 1 ? ("ok after " + std::to_string(g.attempts) + " attempts").c_str() : "ok")
                       : "FAILED");
    out += buf;
    for (const std::string& e : g.errors) out += "  " + g.name + ": " + e + "\n";
  }
  if (users_in_no_group) {
    out += std::to_string(users_in_no_group) + (users_in_no_group == 1 ? " user is" : " users are") +
           " in no group and were not migrated:";
    for (const std::string& name : no_group_names) out += " " + name;
    if (users_in_no_group > no_group_names.size())
      out += " and " + std::to_string(users_in_no_group - no_group_names.size()) + " more";
    out += "\n";
  }
  std::snprintf(buf, sizeof buf, "migrate: %s in %.1f s\n", ok() ? "all groups done" : "SOME GROUPS FAILED", seconds);
  out += buf;
  return out;
}

std::string MigrateReport::Json() const {
  nlohmann::json j;
  j["ok"] = ok();
  j["seconds"] = seconds;
  j["users_in_no_group"] = users_in_no_group;
  j["users_in_no_group_names"] = no_group_names;
  for (const GroupReport& g : groups) {
    j["groups"].push_back({{"name", g.name},
                           {"ok", g.ok},
                           {"attempts", g.attempts},
                           {"users", g.users},
                           {"already_moved", g.already_moved},
                           {"messages", g.messages},
                           {"bytes_raw", g.bytes_raw},
                           {"bytes_sent", g.bytes_sent},
                           {"dedupe_saved", g.dedupe_saved},
                           {"phase_seconds",
                            {{"copy", g.times.copy},
                             {"hold", g.times.hold},
                             {"catch_up", g.times.catch_up},
                             {"verify", g.times.verify},
                             {"switch", g.times.switch_over},
                             {"delete", g.times.remove}}},
                           {"errors", g.errors}});
  }
  return j.dump(2);
}

MigrateReport Migrate(store::Store& source, const MigrateOptions& options) {
  return Migration(source, options).Run();
}

}  // namespace storemove::stream
