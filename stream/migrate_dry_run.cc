#include "stream/migrate_dry_run.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "stream/group_members.h"
#include "stream/json_template.h"
#include "util/fs.h"
#include "util/version.h"
#include "util/plural.h"
#include "util/sectioned_list.h"

namespace storemove::stream {

namespace {

// A group's line of the plan: all but its users, which stay in the SectionedList.
struct PlannedGroup {
  std::string name, regex;
  uint64_t users = 0;          // to migrate
  uint64_t already_moved = 0;  // moved:HOST (any HOST, as the real run) by an earlier run: left alone
  bool matches_nobody = false;  // its pattern holds no user of the store
  bool refused = false;         // ... and the run refuses it (it was named on the command line)
  uint64_t folders = 0, messages = 0, bytes = 0;  // what the copy pass sends, before deduplication
  // Empty, or why the group cannot be held at once (util/fs.h DescriptorShortfall): the run
  // refuses it before copying.
  std::string too_large;
};

}  // namespace

bool WriteMigratePlan(store::Store& source, const MigrateOptions& options, bool json, std::FILE* out) {
  // As the real run: every user in the first group of the whole file that matches it.
  const std::vector<BackupGroup> all = ReadGroupsFile(options.groups_file);
  const std::vector<size_t> chosen = ChosenGroups(all, options.groups, options.groups_file);
  std::vector<size_t> position(all.size() + 1, SIZE_MAX);  // of a file's group in `chosen`
  for (size_t p = 0; p < chosen.size(); ++p) position[chosen[p]] = p;
  std::vector<PlannedGroup> groups(chosen.size());
  for (size_t p = 0; p < chosen.size(); ++p) {
    groups[p].name = all[chosen[p]].name;
    groups[p].regex = all[chosen[p]].regex;
  }
  // Sections: each chosen group's users to migrate, then the users in no group.
  const size_t no_group = chosen.size();
  SectionedList list(no_group + 1);
  std::vector<uint64_t> members(chosen.size());
  source.ForEachUser([&](const store::UserInfo& u) {
    const size_t first = FirstGroupOf(all, u.user);
    if (first == all.size()) {
      list.Add(no_group, u.user);
      return;
    }
    const size_t p = position[first];
    if (p == SIZE_MAX) return;  // another group's, not migrated by this run
    PlannedGroup& g = groups[p];
    ++members[p];
    // The same test as the real run: a rerun resumes and leaves these alone, moved to any host
    // (the destination named another way holds their live mail; helper-69: a dry run with
    // --to localhost after a run to 127.0.0.1 promised to move them all again).
    if (u.status.state == store::UserState::kMoved) {
      ++g.already_moved;
      return;
    }
    list.Add(p, u.user);
    ++g.users;
    for (const store::FolderInfo& f : source.ListFolders(u.user)) {
      ++g.folders;
      g.messages += f.count;
      g.bytes += f.bytes;
    }
  });
  list.Finish();  // before the first line: an error of the runs on disk is not half a listing
  for (size_t p = 0; p < groups.size(); ++p) {
    PlannedGroup& g = groups[p];
    g.matches_nobody = members[p] == 0;
    g.refused = g.matches_nobody && !options.groups.empty() && !options.allow_empty_groups;
    g.too_large = DescriptorShortfall(g.users);
  }
  if (options.groups.empty() && !groups.empty() &&
      std::all_of(groups.begin(), groups.end(), [](const PlannedGroup& g) { return g.matches_nobody; }))
    for (PlannedGroup& g : groups) g.refused = true;  // as the run: a file that holds nobody here
  const bool will_fail =
      std::any_of(groups.begin(), groups.end(), [](const PlannedGroup& g) { return g.refused || !g.too_large.empty(); });
  std::vector<std::string> journals;
  const std::string journal_dir = source.root() + "/migrate-journal";
  if (IsDirectory(journal_dir)) {
    for (const auto& entry : std::filesystem::directory_iterator(journal_dir))
      if (entry.path().extension() == ".hold") journals.push_back(entry.path().string());
    std::sort(journals.begin(), journals.end());
  }
  const std::string destination = options.to.ToString();
  const std::string moved_host = options.moved_host.empty() ? options.to.host : options.moved_host;
  if (json) {
    const nlohmann::json doc = {{"dry_run", true},
                                {"storemove_version", Version()},
                                {"destination", destination},
                                {"moved_host", moved_host},
                                {"partition", options.partition},
                                {"jobs", options.jobs},
                                {"max_online_passes", options.max_online_passes},
                                {"settle_messages", options.settle_messages},
                                {"delete_source", options.delete_source},
                                {"groups", JsonArrayPlaceholder("groups")},
                                {"no_group", JsonArrayPlaceholder("no_group")},
                                {"journals", journals}};
    auto names = [&](size_t section) {
      return [&list, section](JsonArrayOut& array) {
        list.Read(section, [&](std::string_view user) { array.Add(std::string(user)); });
      };
    };
    WriteJsonTemplate(out, doc, "",
                      {{"groups",
                        [&](JsonArrayOut& array) {
                          for (size_t p = 0; p < groups.size(); ++p) {
                            const PlannedGroup& g = groups[p];
                            array.AddTemplate({{"name", g.name},
                                               {"regex", g.regex},
                                               {"users", JsonArrayPlaceholder("users")},
                                               {"already_moved", g.already_moved},
                                               {"too_large", g.too_large},
                                               {"matches_nobody", g.matches_nobody},
                                               {"folders", g.folders},
                                               {"messages", g.messages},
                                               {"bytes", g.bytes}},
                                              {{"users", names(p)}});
                          }
                        }},
                       {"no_group", names(no_group)}});
    std::fputs("\n", out);
    FlushListing(out);
    return will_fail;
  }
  auto put = [out](const std::string& text) { std::fputs(text.c_str(), out); };
  put("migrate --dry-run: nothing is connected to or changed\n");
  put("destination: " + destination + " (source users become moved:" + moved_host + ")" +
      (options.partition.empty() ? "" : ", new users on partition " + options.partition) + "\n");
  for (const std::string& j : journals) put("first: put back the users a killed migrate left on hold (" + j + ")\n");
  auto print = [&](size_t section) {
    list.Read(section, [&](std::string_view user) {
      std::fputs("  ", out);
      std::fwrite(user.data(), 1, user.size(), out);
      std::fputs("\n", out);
    });
  };
  uint64_t users = 0, messages = 0, bytes = 0;
  for (size_t p = 0; p < groups.size(); ++p) {
    const PlannedGroup& g = groups[p];
    std::string line = "group " + g.name + " (" + g.regex + "): " + Counted(g.users, "user") + ", " +
                       Counted(g.folders, "folder") + ", " + Counted(g.messages, "message") + ", " +
                       std::to_string(g.bytes) + " bytes (" + HumanBytes(double(g.bytes)) + ")";
    if (g.already_moved) line += "; " + Counted(g.already_moved, "user") + " already moved, left alone";
    if (g.refused)
      line += "\n  WILL FAIL: it holds no user of this store (its pattern matches none, or only users of groups "
              "above it: a typo in backup-groups.conf?)";
    else if (g.matches_nobody)
      line += "; it holds no user of this store";
    if (!g.too_large.empty())
      line += "\n  WILL FAIL: holding its users' delivery gates " + g.too_large +
              ": raise the limit or split the group in backup-groups.conf";
    put(line + "\n");
    print(p);
    users += g.users;
    messages += g.messages;
    bytes += g.bytes;
  }
  put("in no group (not migrated): " + Counted(list.count(no_group), "user") + "\n");
  print(no_group);
  put("total: " + Counted(users, "user") + ", " + Counted(messages, "message") + ", " + std::to_string(bytes) +
      " bytes (" + HumanBytes(double(bytes)) + ") before deduplication and compression\n");
  put("steps, per group, " + std::to_string(options.jobs) + " at a time, one connection each:\n");
  put("  1. copy every folder while the users stay active\n");
  put("  2. up to " + std::to_string(options.max_online_passes) +
      " incremental passes while the users stay active, until one carries at most " +
      std::to_string(options.settle_messages) + " messages\n");
  put("  3. hold: the users' statuses go to STORE/migrate-journal/GROUP.hold, then they are set to hold\n");
  put("  4. final incremental pass, every folder proven by its summary\n");
  put("  5. switch: the users become active at " + destination + " and moved:" + moved_host + " here\n");
  if (options.delete_source) put("  6. delete the verified users from this store\n");
  FlushListing(out);
  return will_fail;
}

}  // namespace storemove::stream
