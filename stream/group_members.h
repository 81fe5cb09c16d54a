// Which users each backup group holds, as migrate assigns them: every user belongs to the first
// group of the file whose pattern matches the whole user id (whichever groups a run migrates); a
// later group that also matches it still names it (backup's /partition/GROUP selects it too).
#pragma once

#include <string>
#include <vector>

#include "store/store.h"
#include "stream/stream.h"

namespace storemove::stream {

struct GroupMembers {
  BackupGroup group;
  std::vector<std::string> members;       // users whose first matching group this is (sorted)
  std::vector<std::string> also_matched;  // users it matches that an earlier group holds (sorted)
};

struct GroupAssignment {
  std::vector<GroupMembers> groups;   // in file order
  std::vector<std::string> no_group;  // users no group matches (sorted)
};

// The groups of `groups_file` (STORE/config/backup-groups.conf by default); kInvalidArgument
// when it defines none.
std::vector<BackupGroup> ReadGroupsFile(const std::string& groups_file);

// Every user of the store against `groups` (the whole file: a user belongs to the first group
// of the file that matches it, whichever groups a run works on).
GroupAssignment AssignGroups(store::Store& store, const std::vector<BackupGroup>& groups);

// The groups of `assignment` named by `chosen` (every one when empty), in that order, each once;
// kInvalidArgument naming an unknown group and `groups_file`.
std::vector<GroupMembers> ChosenGroups(const GroupAssignment& assignment, const std::vector<std::string>& chosen,
                                       const std::string& groups_file);

// `storemove groups`: one block per group, then the users in no group.
std::string GroupsText(const GroupAssignment& assignment);
std::string GroupsJson(const GroupAssignment& assignment);

}  // namespace storemove::stream
