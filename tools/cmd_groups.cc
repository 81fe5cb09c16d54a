// storemove groups: each backup group with the users it holds, and the users in no group.
#include <cstdio>

#include "stream/group_members.h"
#include "tools/commands.h"

namespace storemove::tools {
namespace {

struct GroupsOptions {
  std::string store_dir;
  std::string groups_file;
  bool json = false;
};

int RunGroups(const GroupsOptions& options) {
  auto store = OpenStore(options.store_dir);
  std::string file = options.groups_file.empty() ? store->root() + "/config/backup-groups.conf" : options.groups_file;
  stream::WriteGroups(*store, stream::ReadGroupsFile(file), options.json, stdout);
  return 0;
}

}  // namespace

void AddGroupsCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<GroupsOptions>();
  CLI::App* command = root.add_subcommand(
      "groups", "list each backup group's users (each user in the first group that matches it, as migrate takes "
                "them) and the users in no group");
  AddStoreOption(command, &options->store_dir);
  command->add_option("--groups", options->groups_file, "NAME=ERE lines (default STORE/config/backup-groups.conf)")
      ->type_name("FILE");
  command->add_flag("--json", options->json, "print JSON");
  command->callback([options, chosen] { *chosen = [options] { return RunGroups(*options); }; });
}

}  // namespace storemove::tools
