// storemove list: mboxutil -l. One line per mailbox; the mailbox name comes last because folder
// names may contain spaces (as in mboxutil's own listing).
#include <cstdio>

#include <nlohmann/json.hpp>

#include "tools/commands.h"
#include "util/error.h"

namespace storemove::tools {
namespace {

struct ListOptions {
  std::string store_dir;
  std::string pattern = "*";
  bool json = false;
};

void ListOnce(store::Store& store, const ListOptions& options, nlohmann::json* rows);

int RunList(const ListOptions& options) {
  auto store = OpenStore(options.store_dir);
  // Each user's folders are listed as of one moment (Store::ListFolders), but a user renamed while
  // the store is walked may be passed over under both names: the rename generation tells. The
  // JSON array is held anyway and is listed again; text lines are already out: exit 75.
  constexpr int kListings = 3;
  for (int listing = 1;; ++listing) {
    const uint64_t renames = store->UserRenameGeneration();
    nlohmann::json rows = nlohmann::json::array();
    ListOnce(*store, options, &rows);
    if (store->UserRenameGeneration() == renames) {
      if (options.json) std::printf("%s\n", rows.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      return 0;
    }
    if (!options.json || listing == kListings)
      Throw(Errc::kTempFail, "list: users were renamed while the store was listed; the listing may miss their "
                             "mailboxes: run again");
  }
}

// Text lines go out as the store is walked; JSON rows are collected into *rows.
void ListOnce(store::Store& store, const ListOptions& options, nlohmann::json* rows) {
  if (!options.json) {
    std::printf("%8s %14s %-20s %-12s %s\n", "messages", "bytes", "last delivery", "partition", "mailbox");
  }
  store.ForEachFolder([&](const store::FolderInfo& info) {
    const std::string mailbox = info.Mailbox();
    if (!store::MatchPattern(options.pattern, mailbox)) return;
    if (options.json) {
      rows->push_back({{"mailbox", mailbox},
                      {"user", info.user},
                      {"folder", info.folder},
                      {"partition", info.partition},
                      {"messages", info.count},
                      {"bytes", info.bytes},
                      {"last_delivery", info.last_append == 0 ? nlohmann::json(nullptr)
                                                              : nlohmann::json(IsoTime(info.last_append))},
                      {"uidvalidity", info.uidvalidity},
                      {"uidnext", info.uidnext}});
    } else {
      std::printf("%8u %14llu %-20s %-12s %s\n", info.count, static_cast<unsigned long long>(info.bytes),
                  IsoTime(info.last_append).c_str(), info.partition.c_str(), mailbox.c_str());
    }
  });
}

}  // namespace

void AddListCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<ListOptions>();
  CLI::App* command = root.add_subcommand(
      "list", "list mailboxes: messages, bytes, last delivery (UTC), partition, mailbox (mboxutil -l)");
  AddStoreOption(command, &options->store_dir);
  command->add_option("-p,--pattern", options->pattern,
                      "mailbox pattern: '*' matches anything, '%' anything but '/' (default: *)")
      ->type_name("PATTERN");
  command->add_flag("--json", options->json, "print a JSON array of objects instead");
  command->callback([options, chosen] { *chosen = [options] { return RunList(*options); }; });
}

}  // namespace storemove::tools
