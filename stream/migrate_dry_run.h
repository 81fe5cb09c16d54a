// `storemove migrate --dry-run`: what a migrate with the same options would do, read from the
// source store alone. It opens no connection, reads no key file, takes no lock, writes nothing
// (not even the journal recovery a real run starts with: it names the journals it would apply).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/store.h"
#include "stream/migrate.h"

namespace storemove::stream {

struct DryRunGroup {
  std::string name, regex;
  std::vector<std::string> users;  // to migrate (sorted)
  uint64_t already_moved = 0;      // moved:HOST (any HOST, as the real run) by an earlier run: left alone
  bool matches_nobody = false;     // its pattern matches no user of the store
  bool refused = false;            // ... and the run refuses it (it was named on the command line)
  uint64_t folders = 0, messages = 0, bytes = 0;  // what the copy pass sends, before deduplication
  // Empty, or why the group cannot be held at once (util/fs.h DescriptorShortfall): the run
  // refuses it before copying.
  std::string too_large;
};

struct MigrateDryRun {
  std::string destination;  // HOST:PORT
  std::string moved_host;   // recorded on the source at the switch
  std::string partition;    // destination partition for new users ("" = same name or default)
  int jobs = 1;
  int max_online_passes = 4;
  uint64_t settle_messages = 200;
  bool delete_source = false;
  std::vector<DryRunGroup> groups;
  std::vector<std::string> no_group;  // users no group takes (not migrated)
  std::vector<std::string> journals;  // a killed run's hold journals a real run would apply first
  std::string Text() const;
  std::string Json() const;
};

MigrateDryRun PlanMigrate(store::Store& source, const MigrateOptions& options);

}  // namespace storemove::stream
