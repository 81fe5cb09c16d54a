// STORE/migrate-journal/GROUP.members: the users a running migrate has claimed for GROUP, so
// that another migrate (through another groups file, so other group locks) refuses them
// (docs/migration.md, "One migrate per user").
//   storemove-migrate-members 1
//   USER                   one a line
#pragma once

#include <functional>
#include <set>
#include <string>
#include <string_view>

namespace storemove::stream {

inline constexpr char kMembersMagic[] = "storemove-migrate-members 1";

std::string FormatMembersFile(const std::set<std::string>& users);

// Writes the members file `path` (atomically, mode 0600) with the users `each_user` gives its
// argument, in order, without holding them: a group of a whole store is one.
void WriteMembersFile(const std::string& path,
                      const std::function<void(const std::function<void(std::string_view)>&)>& each_user);

// The users of the members file `text`, read from `path`; kCorrupt with one line naming `path`
// (and the line) for another first line, a line that is no user id, or a file cut short.
std::set<std::string> ParseMembersFile(std::string_view text, const std::string& path);

}  // namespace storemove::stream
