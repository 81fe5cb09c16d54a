// storemove config: the store's settings (store/settings.h, docs/store-format.md §11), as Sun's
// `configutil -o NAME -v VALUE` sets them: kept in STORE/config/store.conf, so that every later
// deliver, import or moveuser follows them.
//   storemove config --store S                 every setting, NAME=VALUE
//   storemove config --store S NAME...         those settings
//   storemove config --store S NAME=VALUE...   sets them (all validated first, one atomic write),
//                                              then prints them
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "store/settings.h"
#include "tools/commands.h"
#include "util/error.h"

namespace storemove::tools {
namespace {

struct ConfigOptions {
  std::string store_dir;
  std::vector<std::string> items;
};

int RunConfig(const ConfigOptions& options) {
  // Every argument is checked before the store is touched: a bad one changes nothing.
  std::vector<std::pair<std::string, std::string>> changes;
  std::vector<std::string> shown;
  for (const std::string& item : options.items) {
    const size_t eq = item.find('=');
    std::string name = item.substr(0, eq);
    if (eq != std::string::npos) {
      store::NormalizeSetting(name, item.substr(eq + 1));
      changes.emplace_back(name, item.substr(eq + 1));
    } else {
      store::ValidateSettingName(name);
    }
    shown.push_back(std::move(name));
  }
  std::unique_ptr<store::Store> store = OpenStore(options.store_dir);
  if (!changes.empty()) store::WriteSettings(store->root(), changes);
  const std::vector<std::pair<std::string, std::string>> values = store::SettingValues(store->root());
  for (const auto& [name, value] : values) {
    bool wanted = shown.empty();
    for (const std::string& s : shown) wanted = wanted || s == name;
    if (wanted) std::printf("%s=%s\n", name.c_str(), value.c_str());
  }
  return 0;
}

}  // namespace

void AddConfigCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<ConfigOptions>();
  std::string known;
  for (const store::SettingInfo& s : store::KnownSettings())
    known += "  " + std::string(s.name) + " (default " + std::string(s.default_value) + "): " + std::string(s.help) + "\n";
  CLI::App* command = root.add_subcommand(
      "config", "show or set the store's settings, kept in STORE/config/store.conf (Sun's configutil)");
  AddStoreOption(command, &options->store_dir);
  command->add_option("settings", options->items, "NAME to show it, NAME=VALUE to set it (none: show all)")
      ->type_name("NAME[=VALUE]");
  command->footer("Settings:\n" + known);
  command->callback([options, chosen] { *chosen = [options] { return RunConfig(*options); }; });
}

}  // namespace storemove::tools
