// Where the single-instance repository of a partition keeps its entries (docs/store-format.md §7).
// Format 1.1 stores are created with a flat repository, =digest/<h1>/<hex>.msg: 256 directories
// instead of up to 65,536, which on a disk is most of a restore's metadata work. A partition whose
// =digest was made before (format 1.0, =digest/<h1>/<h2>/<hex>.msg) keeps its layout; the marker
// file says which one a repository has, so no reader ever has to guess from the entries.
#pragma once

#include <string>
#include <string_view>

#include "util/digest.h"

namespace storemove::store {

// The empty file =digest/flat marks a flat repository. It cannot collide with an entry or a
// bucket directory (hex digits only).
inline constexpr std::string_view kFlatRepositoryMarker = "flat";

enum class RepositoryLayout { kNested, kFlat };

// The layout of partition_dir/=digest: flat when the marker is there, nested otherwise (also when
// there is no repository yet: a partition made before format 1.1 stays as it was).
RepositoryLayout ReadRepositoryLayout(const std::string& partition_dir);

// Creates partition_dir/=digest with the flat marker when the partition has no repository yet;
// leaves an existing one as it is. Called by `init` for every partition.
void CreateFlatRepositoryIfMissing(const std::string& partition_dir);

// The entry of `digest` in the repository at `root` (partition_dir + "/=digest"):
// root/<h1>/<hex>.msg (flat) or root/<h1>/<h2>/<hex>.msg (nested).
std::string RepositoryEntryPath(const std::string& root, RepositoryLayout layout, const Digest& digest);

}  // namespace storemove::store
