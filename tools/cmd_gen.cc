// storemove gen: builds a realistic store for tests and benchmarks (store/generate.h).
#include <unistd.h>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "store/generate.h"
#include "stream/progress.h"
#include "tools/commands.h"
#include "util/error.h"
#include "util/plural.h"
#include "util/version.h"

namespace storemove::tools {
namespace {

struct GenOptions {
  std::string store_dir;
  store::GenerateOptions generate;
  bool json = false;
  bool verbose = false;
};

int RunGen(GenOptions& options) {
  const std::string& root = RequireStoreDir(options.store_dir);
  for (const std::string& partition : options.generate.partitions) store::ValidatePartitionName(partition);
  // Generated users have ordinary names (eva.white, postmaster): pointed at a real store (a
  // mistyped --store, STOREMOVE_STORE left set) gen wrote fake mail into its users, moved and
  // held ones too (helper-169). Asked before anything is written (--partitions adds them).
  try {
    uint64_t users = 0;
    store::Store::Open(root)->ForEachUser([&](const store::UserInfo&) { ++users; });
    if (users != 0)
      Throw(Errc::kInvalidArgument, "gen: " + root + " already holds " + Counted(users, "user") +
                                        "; gen fills a new or empty store for tests and benchmarks and never writes "
                                        "into one in use (storemove init DIR makes one)");
  } catch (const Error& e) {
    if (e.code() != Errc::kNotFound) throw;  // no store yet: made below
  }
  // A generated store is a fixture: it is rebuilt rather than recovered, so no fsyncs.
  std::unique_ptr<store::Store> store =
      options.generate.partitions.empty() ? nullptr : store::Store::Init(root, options.generate.partitions);
  if (!store) {
    try {
      store = store::Store::Open(root);
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;
      store = store::Store::Init(root, {"primary"});
    }
  }
  stream::Progress progress("gen", options.verbose || ::isatty(STDERR_FILENO));
  progress.set_total(uint64_t(options.generate.users) * options.generate.messages_per_user, 0);
  options.generate.on_message = [&](uint64_t bytes) { progress.Add(1, bytes); };
  const store::GenerateReport report = store::Generate(*store, options.generate);
  progress.Finish();
  if (options.json) {
    nlohmann::json out = {{"users", report.users},         {"folders", report.folders},
                          {"messages", report.messages},   {"bytes", report.bytes},
                          {"duplicates", report.duplicates}, {"links", report.links},
                          {"seconds", report.seconds},
                          {"storemove_version", Version()}};
    std::printf("%s\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  std::printf("store:      %s\n", store->root().c_str());
  std::printf("users:      %llu\n", static_cast<unsigned long long>(report.users));
  std::printf("folders:    %llu\n", static_cast<unsigned long long>(report.folders));
  std::printf("messages:   %llu\n", static_cast<unsigned long long>(report.messages));
  std::printf("bytes:      %llu (%s)\n", static_cast<unsigned long long>(report.bytes),
              HumanBytes(report.bytes).c_str());
  std::printf("duplicates: %llu\n", static_cast<unsigned long long>(report.duplicates));
  std::printf("links:      %llu\n", static_cast<unsigned long long>(report.links));
  std::printf("seconds:    %.2f\n", report.seconds);
  return 0;
}

}  // namespace

void AddGenCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<GenOptions>();
  store::GenerateOptions& g = options->generate;
  CLI::App* command = root.add_subcommand(
      "gen", "generate a realistic store (users, folders, flags, dates; deterministic from --seed) in a new or "
             "empty one: a store that holds users is refused");
  AddStoreOption(command, &options->store_dir);
  command->add_option("--users", g.users, "number of users")->required()->type_name("N");
  command->add_option("--messages-per-user", g.messages_per_user, "messages delivered to each user")
      ->required()
      ->type_name("M");
  command->add_option("--dup-rate", g.dup_rate, "share of deliveries that are mailing-list copies, 0..1 (default 0)")
      ->check(CLI::Range(0.0, 1.0))
      ->type_name("R");
  command->add_flag("--single-instance", g.single_instance,
                    "store list copies as hard links to one file (Sun's relinker enabled)");
  command->add_option("--corpus", g.corpus_dir, "take message bytes from this corpus (folders with MANIFEST.tsv)")
      ->type_name("DIR");
  command->add_option("--seed", g.seed, "random seed (default 1)")->type_name("S");
  command->add_option("--partitions", g.partitions,
                      "partitions to create and spread users over, comma separated (default: the store's)")
      ->delimiter(',')
      ->type_name("A,B");
  command->add_flag("--json", options->json, "print the summary as JSON");
  command->add_flag("-v,--verbose", options->verbose,
                    "live progress on stderr (rate and ETA) even when it is not a terminal");
  command->callback([options, chosen] { *chosen = [options] { return RunGen(*options); }; });
}

}  // namespace storemove::tools
