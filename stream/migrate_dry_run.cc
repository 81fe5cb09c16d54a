#include "stream/migrate_dry_run.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "stream/group_members.h"
#include "util/fs.h"
#include "util/version.h"
#include "util/plural.h"

namespace storemove::stream {

MigrateDryRun PlanMigrate(store::Store& source, const MigrateOptions& options) {
  MigrateDryRun plan;
  plan.destination = options.to.ToString();
  plan.moved_host = options.moved_host.empty() ? options.to.host : options.moved_host;
  plan.partition = options.partition;
  plan.jobs = options.jobs;
  plan.max_online_passes = options.max_online_passes;
  plan.settle_messages = options.settle_messages;
  plan.delete_source = options.delete_source;
  // As the real run: every user in the first group of the whole file that matches it.
  GroupAssignment assignment = AssignGroups(source, ReadGroupsFile(options.groups_file));
  plan.no_group = assignment.no_group;
  for (const GroupMembers& g : ChosenGroups(assignment, options.groups, options.groups_file)) {
    DryRunGroup d;
    d.name = g.group.name;
    d.regex = g.group.regex;
    for (const std::string& user : g.members) {
      std::optional<store::UserInfo> u = source.FindUser(user);
      if (!u) continue;  // deleted meanwhile
      // The same test as the real run: a rerun resumes and leaves these alone, moved to any
      // host (the destination named another way holds their live mail; helper-69: a dry run
      // with --to localhost after a run to 127.0.0.1 promised to move them all again).
      if (u->status.state == store::UserState::kMoved) {
        ++d.already_moved;
        continue;
      }
      d.users.push_back(user);
      for (const store::FolderInfo& f : source.ListFolders(user)) {
        ++d.folders;
        d.messages += f.count;
        d.bytes += f.bytes;
      }
    }
    d.matches_nobody = g.members.empty();
    d.refused = d.matches_nobody && !options.groups.empty() && !options.allow_empty_groups;
    d.too_large = DescriptorShortfall(d.users.size());
    plan.groups.push_back(std::move(d));
  }
  if (options.groups.empty() && !plan.groups.empty() &&
      std::all_of(plan.groups.begin(), plan.groups.end(), [](const DryRunGroup& g) { return g.matches_nobody; }))
    for (DryRunGroup& g : plan.groups) g.refused = true;  // as the run: a file that holds nobody here
  const std::string journal_dir = source.root() + "/migrate-journal";
  if (IsDirectory(journal_dir)) {
    for (const auto& entry : std::filesystem::directory_iterator(journal_dir))
      if (entry.path().extension() == ".hold") plan.journals.push_back(entry.path().string());
    std::sort(plan.journals.begin(), plan.journals.end());
  }
  return plan;
}

std::string MigrateDryRun::Text() const {
  std::string out = "migrate --dry-run: nothing is connected to or changed\n";
  out += "destination: " + destination + " (source users become moved:" + moved_host + ")";
  if (!partition.empty()) out += ", new users on partition " + partition;
  out += "\n";
  for (const std::string& j : journals)
    out += "first: put back the users a killed migrate left on hold (" + j + ")\n";
  uint64_t users = 0, messages = 0, bytes = 0;
  for (const DryRunGroup& g : groups) {
    out += "group " + g.name + " (" + g.regex + "): " + Counted(g.users.size(), "user") + ", " +
           Counted(g.folders, "folder") + ", " + Counted(g.messages, "message") + ", " +
           std::to_string(g.bytes) + " bytes (" + HumanBytes(double(g.bytes)) + ")";
    if (g.already_moved) out += "; " + Counted(g.already_moved, "user") + " already moved, left alone";
    if (g.refused)
      out += "\n  WILL FAIL: it holds no user of this store (its pattern matches none, or only users of groups "
             "above it: a typo in backup-groups.conf?)";
    else if (g.matches_nobody)
      out += "; it holds no user of this store";
    if (!g.too_large.empty())
      out += "\n  WILL FAIL: holding its users' delivery gates " + g.too_large +
             ": raise the limit or split the group in backup-groups.conf";
    out += "\n";
    for (const std::string& user : g.users) out += "  " + user + "\n";
    users += g.users.size();
    messages += g.messages;
    bytes += g.bytes;
  }
  out += "in no group (not migrated): " + Counted(no_group.size(), "user") + "\n";
  for (const std::string& user : no_group) out += "  " + user + "\n";
  out += "total: " + Counted(users, "user") + ", " + Counted(messages, "message") + ", " +
         std::to_string(bytes) + " bytes (" + HumanBytes(double(bytes)) + ") before deduplication and compression\n";
  out += "steps, per group, " + std::to_string(jobs) + " at a time, one connection each:\n";
  out += "  1. copy every folder while the users stay active\n";
  out += "  2. up to " + std::to_string(max_online_passes) +
         " incremental passes while the users stay active, until one carries at most " +
         std::to_string(settle_messages) + " messages\n";
  out += "  3. hold: the users' statuses go to STORE/migrate-journal/GROUP.hold, then they are set to hold\n";
  out += "  4. final incremental pass, every folder proven by its summary\n";
  out += "  5. switch: the users become active at " + destination + " and moved:" + moved_host + " here\n";
  if (delete_source) out += "  6. delete the verified users from this store\n";
  return out;
}

std::string MigrateDryRun::Json() const {
  nlohmann::json gs = nlohmann::json::array();
  for (const DryRunGroup& g : groups)
    gs.push_back({{"name", g.name},
                  {"regex", g.regex},
                  {"users", g.users},
                  {"already_moved", g.already_moved},
                  {"too_large", g.too_large},
                  {"matches_nobody", g.matches_nobody},
                  {"folders", g.folders},
                  {"messages", g.messages},
                  {"bytes", g.bytes}});
  nlohmann::json j = {{"dry_run", true},
                      {"storemove_version", Version()},
                      {"destination", destination},
                      {"moved_host", moved_host},
                      {"partition", partition},
                      {"jobs", jobs},
                      {"max_online_passes", max_online_passes},
                      {"settle_messages", settle_messages},
                      {"delete_source", delete_source},
                      {"groups", gs},
                      {"no_group", no_group},
                      {"journals", journals}};
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace storemove::stream
