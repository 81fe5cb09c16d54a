// `storemove migrate --dry-run`: what a migrate with the same options would do, read from the
// source store alone. It opens no connection, reads no key file, takes no lock, writes nothing
// (not even the journal recovery a real run starts with: it names the journals it would apply).
#pragma once

#include <cstdio>

#include "store/store.h"
#include "stream/migrate.h"

namespace storemove::stream {

// Writes to `out` (text, or JSON with `json`) what a migrate with `options` would do: per group
// its users to migrate, with their folders, messages and bytes, the users an earlier run moved,
// and what would make the run refuse it; then the users in no group and the steps. Written from
// one read of the store's users through util/sectioned_list.h, so memory does not grow with them.
// Returns whether the run would refuse a group (the plan's "WILL FAIL" lines).
bool WriteMigratePlan(store::Store& source, const MigrateOptions& options, bool json, std::FILE* out);

}  // namespace storemove::stream
