// Which users each backup group holds, as migrate assigns them: every user belongs to the first
// group of the file (or of the chosen groups) whose pattern matches the whole user id; a later
// group that also matches it still names it (backup's /partition/GROUP selects it too).
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

// Groups of `groups_file` (STORE/config/backup-groups.conf by default); `chosen` non-empty keeps
// only those, in that order (kInvalidArgument naming an unknown one). kInvalidArgument when the
// file defines no group.
std::vector<BackupGroup> ChooseGroups(const std::string& groups_file, const std::vector<std::string>& chosen);

// Every user of the store against `groups`.
GroupAssignment AssignGroups(store::Store& store, const std::vector<BackupGroup>& groups);

// `storemove groups`: one block per group, then the users in no group.
std::string GroupsText(const GroupAssignment& assignment);
std::string GroupsJson(const GroupAssignment& assignment);

}  // namespace storemove::stream
