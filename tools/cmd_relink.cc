// storemove relink: Sun's relinker — one inode for every copy of the same message content in a
// partition, through the partition's digest repository (relinker/relink.h, docs/relinker.md).
#include <unistd.h>

#include <cstdint>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "relinker/relink.h"
#include "store/names.h"
#include "store/settings.h"
#include "stream/progress.h"
#include "tools/commands.h"
#include "util/error.h"
#include "util/version.h"
#include "util/interrupt.h"

namespace storemove::tools {
namespace {

struct RelinkCommandOptions {
  std::string store_dir;
  relinker::RelinkOptions relink;
  int64_t min_size_kb = -1;  // not given: the store's local.store.relinker.minsize
  bool json = false;
  bool verbose = false;
};

nlohmann::json UsageJson(const relinker::Usage& u) {
  return {{"messages", u.messages},     {"unique", u.unique},         {"repository", u.repository},
          {"bytes", u.bytes},           {"space_used", u.space_used}, {"savings", u.savings()}};
}

int RunRelink(RelinkCommandOptions& options) {
  StopAtSafePointOnSignal();  // a signal unwinds: the environment is closed (util/interrupt.h)
  std::unique_ptr<store::Store> store = OpenStore(options.store_dir);
  const uint64_t min_size_kb = options.min_size_kb >= 0 ? uint64_t(options.min_size_kb)
                                                        : store::ReadSettings(*store).relinker_minsize_kb;
  options.relink.min_size = min_size_kb * 1024;
  stream::Progress progress("relink", options.verbose || ::isatty(STDERR_FILENO));
  options.relink.on_pass = [&](const std::string& pass, uint64_t messages, uint64_t bytes) {
    progress.Restart("relink " + pass, messages, bytes);
  };
  options.relink.on_message = [&](uint64_t bytes) { progress.Add(1, bytes); };
  const relinker::RelinkStats stats = relinker::Relink(*store, options.relink);
  progress.Finish();
  if (options.json) {
    nlohmann::json out = {{"before", UsageJson(stats.before)},
                          {"after", UsageJson(stats.after)},
                          {"linked", stats.linked},
                          {"entries_added", stats.entries_added},
                          {"entries_replaced", stats.entries_replaced},
                          {"collisions", stats.collisions},
                          {"too_small", stats.too_small},
                          {"vanished", stats.vanished},
                          {"purged", stats.purged},
                          {"stale_temporaries_removed", stats.stale_removed},
                          {"left_for_owner_or_mode", stats.owner_or_mode},
                          {"damaged_entries_replaced", stats.damaged_entries},
                          {"damaged_messages", stats.damaged_messages},
                          {"damaged_named", stats.damaged_named},
                          {"damaged_entry_links", stats.damaged_entry_links},
                          {"storemove_version", Version()}};
    std::printf("%s\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::fputs(relinker::FormatRelinkTable(stats).c_str(), stdout);
  }
  // Damage is no error of the pass (it linked what it could), but the store is not whole: said,
  // and not exit 0 (helper-107: a damaged copy was counted as a collision, exit 0). Through
  // CheckStdout like any result: the table must have reached stdout too.
  if (stats.damaged_entry_links > 0)
    std::fprintf(stderr,
                 "storemove: relink: note: the damaged repository entries replaced had %llu other links (messages "
                 "an earlier pass linked to the damaged bytes, or temporaries of a killed writer): verify against "
                 "the source names any message among them\n",
                 static_cast<unsigned long long>(stats.damaged_entry_links));
  if (stats.damaged_messages == 0) return 0;
  for (const std::string& name : stats.damaged_named)
    std::fprintf(stderr, "storemove: relink: damaged: %s: its bytes are not what its record says\n", name.c_str());
  const uint64_t unnamed = stats.damaged_messages - stats.damaged_named.size();
  std::fprintf(stderr,
               "storemove: relink: damaged message files: %llu%s; nothing was linked to them: restore them from a "
               "backup (verify against the source names every one)\n",
               static_cast<unsigned long long>(stats.damaged_messages),
               unnamed ? (" (the first " + std::to_string(stats.damaged_named.size()) + " named above)").c_str() : "");
  return ExitStatus(Errc::kCorrupt);
}

}  // namespace

void AddRelinkCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<RelinkCommandOptions>();
  CLI::App* command = root.add_subcommand(
      "relink", "make every copy of the same message one file (hard links), per partition, like Sun's relinker");
  AddStoreOption(command, &options->store_dir);
  // A name, checked as a partition name (`-p ''` or `-p ../x` is a usage error, not "every one").
  command->add_option("-p,--partition", options->relink.partition, "only this partition (default: every one)")
      ->type_name("NAME")
      ->check([](const std::string& name) {
        try {
          store::ValidatePartitionName(name);
          return std::string();
        } catch (const Error& e) {
          return std::string(e.what());
        }
      });
  command->add_flag("-v,--verbose", options->verbose,
                    "live progress on stderr (each pass with rate and ETA) even when it is not a terminal");
  command->add_flag("-d,--purge", options->relink.purge,
                    "remove repository entries no message links to any more (not while a restore runs)");
  command->add_option("--min-size", options->min_size_kb, "leave messages smaller than this alone (default: the store's local.store.relinker.minsize)")
      ->type_name("KB")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));  // local.store.relinker.minsize's range
  command->add_option("--reads", options->relink.reads, "message files examined at once (default 16; 1 = one at a time)")
      ->check(CLI::Range(1, 1024));
  command->add_flag("--json", options->json, "print the before/after numbers as JSON");
  // Tests only: a small link limit exercises what ext4's 65,000 (EMLINK) triggers.
  command->add_option("--max-links", options->relink.max_links)->group("");
  command->footer(
      "Exit status: 0 done; 65 a message file whose bytes or size are not its record's (damaged: the first 20 "
      "named on stderr, nothing linked to them; the table still says what the pass did), or a damaged store.idx; 66 "
      "no such partition.");
  command->callback([options, chosen] { *chosen = [options] { return RunRelink(*options); }; });
}

}  // namespace storemove::tools
