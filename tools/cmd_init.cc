// storemove init: creates a store, or adds partitions to an existing one.
#include <algorithm>
#include <cstdio>

#include "tools/commands.h"
#include "util/error.h"

namespace storemove::tools {
namespace {

struct InitOptions {
  std::string store_dir;
  std::vector<std::string> partitions;
};

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
