// `storemove users` and the bulk form of `storemove user --status`: the users of a store by
// status, and the user lists a status change is applied to (a backup group or a file).
#pragma once

#include <cstdio>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "store/store.h"

namespace storemove::stream {

// "active", "hold", "moved" (any host) or "moved:HOST"; kInvalidArgument otherwise.
struct StatusFilter {
  store::UserState state;
  std::string host;  // "" = any (only for moved)
  static StatusFilter Parse(std::string_view text);
  bool Matches(const store::UserStatus& status) const;
};

// `users`: a table of the store's users (user-id order), those of `filter` only when given,
// and their count, written to `out` in two reads of the users (the first for the column's
// width), so memory does not grow with the users (100,000 of them took 41 MB listed first).
void WriteUsersText(store::Store& store, const std::optional<StatusFilter>& filter, std::FILE* out);
// `users --json`: {"users": [...], "count": N, "storemove_version": V}, written to `out` as the
// store's users are read (user-id order), so memory does not grow with the users.
void WriteUsersJson(store::Store& store, const std::optional<StatusFilter>& filter, std::FILE* out);
// One element of a JSON array as nlohmann's dump(2) would print it at `indent`.
std::string IndentedElement(const nlohmann::json& element, const std::string& indent);

// User ids from a file: one per line, blank lines and '#' comments ignored, a CR before the LF
// ignored. Every id is validated before anything uses the list (kInvalidArgument naming the
// file and line); an empty list is refused. "-" reads standard input. `line_numbers`, when
// given, gets each id's line (its first, for an id repeated).
std::vector<std::string> ReadUsersFile(const std::string& path, std::vector<size_t>* line_numbers = nullptr);

// The users backup group `group` of `groups_file` holds as migrate assigns them (its members in
// `storemove groups`); kInvalidArgument for an unknown group.
std::vector<std::string> GroupUsers(store::Store& store, const std::string& groups_file, const std::string& group);

// What a bulk status change did: the users it set, each with its status before, and the users
// it left alone because they had been moved to another back-end.
struct StatusChange {
  store::UserStatus status;
  std::vector<std::pair<std::string, store::UserStatus>> changed;
  std::vector<std::pair<std::string, store::UserStatus>> left_moved;
};

// Sets every user of `users` to `status` in one transaction (store::Store::SetUsersStatus: all or
// nothing). A user already moved is left alone unless `include_moved`: setting a group back to
// active must not pull back the users a migration has switched to their new back-end.
// A delivery gate held meanwhile is waited for as `wait` says (store::Store::LockWait).
StatusChange SetStatusOf(store::Store& store, const std::vector<std::string>& users, const store::UserStatus& status,
                         bool include_moved, const store::Store::LockWait& wait = {});
std::string StatusChangeText(const StatusChange& change);
std::string StatusChangeJson(const StatusChange& change);

}  // namespace storemove::stream
