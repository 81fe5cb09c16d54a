// storemove rename: renames a mailbox (with its children) or a user, and moves a user to
// another partition (Sun's mboxutil -r OLD NEW [PARTITION]).
#include <cstdio>

#include "store/admin.h"
#include "tools/commands.h"
#include "util/error.h"
#include "util/interrupt.h"

namespace storemove::tools {
namespace {

struct RenameOptions {
  std::string store_dir;
  std::string old_name;
  std::string new_name;
  std::string partition;
};

void PrintRenamed(const std::vector<store::Renamed>& renamed) {
  for (const store::Renamed& r : renamed) std::printf("renamed %s to %s\n", r.from.c_str(), r.to.c_str());
}

void Move(store::Store& store, const std::string& user, const std::string& partition) {
  if (store::MoveUser(store, user, partition)) {
    std::printf("moved user %s to partition %s\n", user.c_str(), partition.c_str());
  } else {
    std::printf("user %s is on partition %s already\n", user.c_str(), partition.c_str());
  }
}

int RunRename(const RenameOptions& options) {
  StopAtSafePointOnSignal();  // a signal unwinds: the environment is closed (util/interrupt.h)
  const store::AdminTarget from = store::ParseAdminTarget(options.old_name);
  const store::AdminTarget to = store::ParseAdminTarget(options.new_name);
  if (!options.partition.empty()) store::ValidatePartitionName(options.partition);
  if (from.whole_user() != to.whole_user())
    Throw(Errc::kInvalidArgument, "rename " + options.old_name + " " + options.new_name +
                                      ": both names must be users (user/joe) or both mailboxes (user/joe/Sent)");
  if (!from.whole_user() && from.user != to.user)
    Throw(Errc::kInvalidArgument, "rename " + options.old_name + " " + options.new_name +
                                      ": a mailbox is renamed within its user; moving it to another user is not supported");
  const bool same_name = from.user == to.user && from.folder == to.folder;
  if (same_name && options.partition.empty())
    Throw(Errc::kInvalidArgument, "rename " + options.old_name + " " + options.new_name +
                                      ": the names are the same and no partition was given");
  auto store = OpenStore(options.store_dir);
  try {
    if (from.whole_user() && !same_name) {
      PrintRenamed(store::RenameUser(*store, from.user, to.user, options.partition));
      std::printf("renamed user %s to %s%s\n", from.user.c_str(), to.user.c_str(),
                  options.partition.empty() ? "" : (" on partition " + options.partition).c_str());
      return 0;
    }
    if (!same_name) PrintRenamed(store::RenameFolder(*store, from.user, from.folder, to.folder));
  } catch (const Error& e) {
    // The same rename run again (after a kill, or by a script that retries): the old name is gone
    // and the new one is there. Not proof that this rename made it, so still 66, but said.
    const bool done_before = from.whole_user() ? !store->FindUser(from.user) && store->FindUser(to.user)
                                               : store->FindUser(from.user) && !store->FindFolder(from.user, from.folder) &&
                                                     store->FindFolder(to.user, to.folder);
    if (e.code() != Errc::kNotFound || !done_before) throw;
    Throw(e.code(), std::string(e.what()) + " (" + options.new_name + " exists: renamed already?)");
  }
  if (!options.partition.empty()) Move(*store, from.user, options.partition);
  return 0;
}

}  // namespace

void AddRenameCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<RenameOptions>();
  CLI::App* command = root.add_subcommand(
      "rename", "rename a mailbox (children follow) or a user, or move a user to another partition (mboxutil -r); 66 "
                "when the old name is not there (\"renamed already?\" when the new one is)");
  AddStoreOption(command, &options->store_dir);
  command->add_option("old", options->old_name, "user (joe, user/joe) or mailbox (user/joe/Old)")
      ->required()
      ->type_name("OLD");
  command->add_option("new", options->new_name, "new user name or mailbox name (same user)")
      ->required()
      ->type_name("NEW");
  command->add_option("partition", options->partition, "move the user (or the mailbox's user) to this partition")
      ->type_name("PARTITION");
  command->footer(
      "The INBOX cannot be renamed (give user/joe user/jim to rename the user). A delivery racing a rename either "
      "commits first (its message moves too) or fails with a temporary error and is retried by the MTA. "
      "Exit status: 64 bad name, 66 no such user or mailbox, 73 the new name exists.");
  command->callback([options, chosen] { *chosen = [options] { return RunRename(*options); }; });
}

}  // namespace storemove::tools
