// storemove init: creates a store, or adds partitions to an existing one.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "tools/commands.h"
#include "util/error.h"
#include "util/user_name.h"

namespace storemove::tools {
namespace {

struct InitOptions {
  std::string store_dir;
  std::vector<std::string> partitions;
};

// A store root made in another user's directory is most likely meant for that user (the one
// the mail server runs as); every later command as that user would be refused in root's store
// (store.cc, RefuseAnotherUsersStore). Said at once, while the store is still empty
// (helper-126 L5).
void NoteRootStoreInAnotherUsersDirectory(const std::string& root) {
  if (::geteuid() != 0) return;
  const std::string parent = std::filesystem::path(root).parent_path().string();
  struct stat st;
  if (parent.empty() || ::stat(parent.c_str(), &st) != 0 || st.st_uid == 0) return;
  const std::string login = LoginName(st.st_uid);
  const std::string as = login.empty() ? "'#" + std::to_string(st.st_uid) + "'" : login;
  const std::string owner = login.empty() ? std::to_string(st.st_uid) : login;
  std::fflush(stdout);  // after the lines of what was made
  std::fprintf(stderr,
               "storemove init: note: store %s is root's, made in %s, a directory of %s: if the mail server "
               "(serve, deliver) runs as that user, the store must be that user's: remove it and run "
               "`sudo -u %s storemove init ...`, or `chown -R %s %s` before anything else uses it\n",
               root.c_str(), parent.c_str(), UserName(st.st_uid).c_str(), as.c_str(), owner.c_str(), root.c_str());
}

int RunInit(const InitOptions& options) {
  const std::string& root = RequireStoreDir(options.store_dir);
  std::vector<std::string> wanted = options.partitions;
  if (wanted.empty()) wanted.push_back("primary");
  for (const std::string& partition : wanted) store::ValidatePartitionName(partition);

  // What exists already decides what this run reports as created.
  std::vector<std::string> existing;
  bool store_existed = false;
  if (PathExists(root)) {
    try {
      existing = store::Store::Open(root)->Partitions();
      store_existed = true;
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;
    }
  }

  auto store = store::Store::Init(root, wanted);
  std::printf("%s store %s (id %s)\n", store_existed ? "opened" : "created", store->root().c_str(),
              store->store_id().c_str());
  for (const std::string& partition : wanted) {
    bool had = std::find(existing.begin(), existing.end(), partition) != existing.end();
    std::printf("partition %s: %s %s\n", partition.c_str(), had ? "already at" : "created at",
                store->PartitionPath(partition).c_str());
  }
  if (!store_existed) NoteRootStoreInAnotherUsersDirectory(store->root());
  return 0;
}

}  // namespace

void AddInitCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<InitOptions>();
  CLI::App* command = root.add_subcommand("init", "create a store, or add partitions to an existing one");
  AddStoreOption(command, &options->store_dir);
  command->add_option("--partition", options->partitions, "partition to create; repeatable (default: primary)")
      ->type_name("NAME");
  command->callback([options, chosen] { *chosen = [options] { return RunInit(*options); }; });
}

}  // namespace storemove::tools
