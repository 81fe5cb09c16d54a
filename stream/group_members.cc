#include "stream/group_members.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/fs.h"
#include "util/version.h"
#include "util/plural.h"

namespace storemove::stream {

std::vector<BackupGroup> ReadGroupsFile(const std::string& groups_file) {
  if (!PathExists(groups_file))
    Throw(Errc::kNotFound, "no backup groups file " + groups_file + " (NAME=REGEX lines; --groups FILE names another)");
  std::vector<BackupGroup> groups = ReadBackupGroups(groups_file);
  if (groups.empty())
    Throw(Errc::kInvalidArgument,
          "no backup groups in " + groups_file + " (NAME=REGEX lines; --groups FILE names another, e.g. the source's)");
  return groups;
}

std::vector<GroupMembers> ChosenGroups(const GroupAssignment& assignment, const std::vector<std::string>& chosen,
                                       const std::string& groups_file) {
  if (chosen.empty()) return assignment.groups;
  std::vector<GroupMembers> out;
  for (const std::string& name : chosen) {
    auto named = [&](const GroupMembers& g) { return g.group.name == name; };
    auto it = std::find_if(assignment.groups.begin(), assignment.groups.end(), named);
    if (it == assignment.groups.end()) Throw(Errc::kInvalidArgument, "no group '" + name + "' in " + groups_file);
    if (std::none_of(out.begin(), out.end(), named)) out.push_back(*it);
  }
  return out;
}

GroupAssignment AssignGroups(store::Store& store, const std::vector<BackupGroup>& groups) {
  GroupAssignment out;
  out.groups.resize(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) out.groups[g].group = groups[g];
  store.ForEachUser([&](const store::UserInfo& u) {
    bool assigned = false;
    for (GroupMembers& g : out.groups) {
      if (!GroupMatches(g.group, u.user)) continue;
      (assigned ? g.also_matched : g.members).push_back(u.user);
      assigned = true;
    }
    if (!assigned) out.no_group.push_back(u.user);
  });
  for (GroupMembers& g : out.groups) {
    std::sort(g.members.begin(), g.members.end());
    std::sort(g.also_matched.begin(), g.also_matched.end());
  }
  std::sort(out.no_group.begin(), out.no_group.end());
  return out;
}

std::string GroupsText(const GroupAssignment& a) {
  std::string out;
  for (const GroupMembers& g : a.groups) {
    out += "group " + g.group.name + " (" + g.group.regex + "): " + Counted(g.members.size(), "user") + "\n";
    for (const std::string& user : g.members) out += "  " + user + "\n";
    if (!g.also_matched.empty()) {
      out += "  also matched, in an earlier group for migrate: " + Counted(g.also_matched.size(), "user") + "\n";
      for (const std::string& user : g.also_matched) out += "    " + user + "\n";
    }
  }
  out += "in no group: " + Counted(a.no_group.size(), "user") + "\n";
  for (const std::string& user : a.no_group) out += "  " + user + "\n";
  return out;
}

std::string GroupsJson(const GroupAssignment& a) {
  nlohmann::json groups = nlohmann::json::array();
  for (const GroupMembers& g : a.groups)
    groups.push_back({{"name", g.group.name},
                      {"regex", g.group.regex},
                      {"members", g.members},
                      {"also_matched", g.also_matched}});
  nlohmann::json j = {{"groups", groups}, {"no_group", a.no_group}, {"storemove_version", Version()}};
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace storemove::stream
