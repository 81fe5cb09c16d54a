// Which users each backup group holds, as migrate assigns them: every user belongs to the first
// group of the file whose pattern matches the whole user id (whichever groups a run migrates); a
// later group that also matches it still names it (backup's /partition/GROUP selects it too).
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "store/store.h"
#include "stream/stream.h"

namespace storemove::stream {

// The groups of `groups_file` (STORE/config/backup-groups.conf by default); kInvalidArgument
// when it defines none.
std::vector<BackupGroup> ReadGroupsFile(const std::string& groups_file);

// The index in `groups` of the first group that matches `user` (the group that holds it), or
// groups.size() when none does.
size_t FirstGroupOf(const std::vector<BackupGroup>& groups, const std::string& user);

// The indices in `groups` of the groups `chosen` names (every group when empty), in that order,
// each once; kInvalidArgument naming an unknown group and `groups_file`.
std::vector<size_t> ChosenGroups(const std::vector<BackupGroup>& groups, const std::vector<std::string>& chosen,
                                 const std::string& groups_file);

// `storemove groups`: one block per group (its users, then those an earlier group holds), then
// the users in no group, each list sorted; or the same as JSON. Written to `out` from one read of
// the store's users, through util/sectioned_list.h: memory does not grow with them (the lists
// held whole took ~8 MB per 100,000 users).
void WriteGroups(store::Store& store, const std::vector<BackupGroup>& groups, bool json, std::FILE* out);

// Ends a listing written to `out` (stdout): kIo when a write failed, so a full disk or a closed
// pipe is not an exit 0 with half a listing.
void FlushListing(std::FILE* out);

}  // namespace storemove::stream
