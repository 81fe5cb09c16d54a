// storemove list: mboxutil -l. One line per mailbox; the mailbox name comes last because folder
// names may contain spaces (as in mboxutil's own listing).
#include <cstdio>

#include <memory>
#include <nlohmann/json.hpp>

#include "stream/user_views.h"

#include "tools/commands.h"
#include "util/error.h"

namespace storemove::tools {
namespace {

struct ListOptions {
  std::string store_dir;
  std::string pattern = "*";
  bool json = false;
};

// Returns the number of mailboxes listed.
uint64_t ListOnce(store::Store& store, const ListOptions& options, std::FILE* rows);

// Copies the held JSON rows to standard output as one array.
void PrintRows(std::FILE* rows) {
  std::rewind(rows);
  char buf[65536];
  size_t n;
  bool any = false;
  while ((n = std::fread(buf, 1, sizeof buf, rows)) > 0) {
    if (!any) std::fputs("[\n", stdout);
    any = true;
    std::fwrite(buf, 1, n, stdout);
  }
  if (std::ferror(rows)) ThrowErrno("read list's temporary file");
  std::fputs(any ? "\n]\n" : "[]\n", stdout);  // written whole or exit 74: RunCommandLine
}

int RunList(const ListOptions& options) {
  auto store = OpenStore(options.store_dir);
  // Each user's folders are listed as of one moment (Store::ListFolders), but a user renamed while
  // the store is walked may be passed over under both names: the rename generation tells. The
  // JSON array is held (in an unlinked temporary file, not in memory: 64,000 mailboxes took
  // 133 MiB, helper-65) and is listed again; text lines are already out: exit 75.
  constexpr int kListings = 3;
  for (int listing = 1;; ++listing) {
    const uint64_t renames = store->UserRenameGeneration();
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> rows(nullptr, std::fclose);
    if (options.json) {
      rows.reset(std::tmpfile());
      if (!rows) ThrowErrno("create a temporary file for list --json");
    }
    const uint64_t listed = ListOnce(*store, options, rows.get());
    if (store->UserRenameGeneration() == renames) {
      if (options.json) PrintRows(rows.get());
      // A pattern names whole mailboxes, not users as backup's names do: `-p user/joe` lists
      // nothing, and said nothing (helper-169).
      if (listed == 0 && options.pattern != "*")
        std::fprintf(stderr,
                     "list: no mailbox matches '%s' (a pattern matches whole mailbox names, user/USER/FOLDER: "
                     "user/joe/* lists joe's mailboxes, user/%%/INBOX every INBOX)\n",
                     options.pattern.c_str());
      return 0;
    }
    if (!options.json || listing == kListings)
      Throw(Errc::kTempFail, "list: users were renamed while the store was listed; the listing may miss their "
                             "mailboxes: run again");
  }
}

// Text lines go out as the store is walked; JSON rows are written to `rows`, comma-separated.
uint64_t ListOnce(store::Store& store, const ListOptions& options, std::FILE* rows) {
  if (!options.json) {
    std::printf("%8s %14s %-20s %-12s %s\n", "messages", "bytes", "last delivery", "partition", "mailbox");
  }
  bool first = true;
  uint64_t listed = 0;
  store.ForEachFolder([&](const store::FolderInfo& info) {
    const std::string mailbox = info.Mailbox();
    if (!store::MatchPattern(options.pattern, mailbox)) return;
    ++listed;
    if (options.json) {
      const nlohmann::json row = {{"mailbox", mailbox},
                      {"user", info.user},
                      {"folder", info.folder},
                      {"partition", info.partition},
                      {"messages", info.count},
                      {"bytes", info.bytes},
                      {"last_delivery", info.last_append == 0 ? nlohmann::json(nullptr)
                                                              : nlohmann::json(IsoTime(info.last_append))},
                      {"uidvalidity", info.uidvalidity},
                      {"uidnext", info.uidnext}};
      if (!first) std::fputs(",\n", rows);
      first = false;
      const std::string text = stream::IndentedElement(row, "  ");
      if (std::fwrite(text.data(), 1, text.size(), rows) != text.size()) ThrowErrno("write list's temporary file");
    } else {
      std::printf("%8u %14llu %-20s %-12s %s\n", info.count, static_cast<unsigned long long>(info.bytes),
                  IsoTime(info.last_append).c_str(), info.partition.c_str(), mailbox.c_str());
    }
  });
  return listed;
}

}  // namespace

void AddListCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<ListOptions>();
  CLI::App* command = root.add_subcommand(
      "list", "list mailboxes: messages, bytes, last delivery (UTC), partition, mailbox (mboxutil -l)");
  AddStoreOption(command, &options->store_dir);
  command->add_option("-p,--pattern", options->pattern,
                      "mailbox pattern over whole names (user/USER/FOLDER): '*' matches anything, '%' anything but '/' "
                      "(default: *)")
      ->type_name("PATTERN");
  command->add_flag("--json", options->json, "print a JSON array of objects instead");
  command->callback([options, chosen] { *chosen = [options] { return RunList(*options); }; });
}

}  // namespace storemove::tools
