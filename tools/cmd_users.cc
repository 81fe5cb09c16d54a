// storemove users: the store's users with their status, partition and bytes used.
#include <cstdio>

#include "stream/user_views.h"
#include "tools/commands.h"

namespace storemove::tools {
namespace {

struct UsersOptions {
  std::string store_dir;
  std::string status;
  bool json = false;
};

int RunUsers(const UsersOptions& options) {
  std::optional<stream::StatusFilter> filter;
  if (!options.status.empty()) filter = stream::StatusFilter::Parse(options.status);
  auto store = OpenStore(options.store_dir);
  if (options.json) {
    stream::WriteUsersJson(*store, filter, stdout);
    return 0;
  }
  stream::WriteUsersText(*store, filter, stdout);
  return 0;
}

}  // namespace

void AddUsersCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<UsersOptions>();
  CLI::App* command = root.add_subcommand("users", "list the users with their status, partition and bytes used");
  AddStoreOption(command, &options->store_dir);
  command->add_option("--status", options->status, "only users with this status: active, hold, moved or moved:HOST")
      ->type_name("STATUS");
  command->add_flag("--json", options->json, "print JSON");
  command->callback([options, chosen] { *chosen = [options] { return RunUsers(*options); }; });
}

}  // namespace storemove::tools
