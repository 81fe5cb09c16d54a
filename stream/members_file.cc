#include "stream/members_file.h"

#include "stream/journal_file.h"
#include "util/fs.h"

namespace storemove::stream {

namespace {

// The file's layout, for both writers: the magic line, then a user a line.
void EmitMembers(const std::function<void(std::string_view)>& write,
                 const std::function<void(const std::function<void(std::string_view)>&)>& each_user) {
  write(kMembersMagic);
  write("\n");
  each_user([&](std::string_view user) {
    write(user);
    write("\n");
  });
}

}  // namespace

std::string FormatMembersFile(const std::set<std::string>& users) {
  std::string text;
  EmitMembers([&](std::string_view piece) { text += piece; },
              [&](const std::function<void(std::string_view)>& user) {
                for (const std::string& u : users) user(u);
              });
  return text;
}

void WriteMembersFile(const std::string& path,
                      const std::function<void(const std::function<void(std::string_view)>&)>& each_user) {
  WriteFileAtomicFrom(
      path, [&](const std::function<void(std::string_view)>& write) { EmitMembers(write, each_user); }, 0600);
}

std::set<std::string> ParseMembersFile(std::string_view text, const std::string& path) {
  const std::vector<std::string_view> lines = JournalLines(text, path, "storemove migrate members file", {kMembersMagic});
  std::set<std::string> users;
  for (size_t i = 0; i < lines.size(); ++i) {
    CheckJournalUser(lines[i], path, i + 2);
    users.emplace(lines[i]);
  }
  return users;
}

}  // namespace storemove::stream
