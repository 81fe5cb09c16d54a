#include "store/repository_layout.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>

#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {

RepositoryLayout ReadRepositoryLayout(const std::string& partition_dir) {
  // Resolved beneath the store root: a planted =digest symlink throws here, as everywhere else.
  struct stat st;
  const int err = StatNoFollow(partition_dir + "/=digest/" + std::string(kFlatRepositoryMarker), &st);
  if (err == 0) return RepositoryLayout::kFlat;
  if (err == ENOENT || err == ENOTDIR) return RepositoryLayout::kNested;
  ThrowErrno("stat " + partition_dir + "/=digest/" + std::string(kFlatRepositoryMarker), err);
}

std::string RepositoryEntryPath(const std::string& root, RepositoryLayout layout, const Digest& digest) {
  const std::string hex = digest.Hex();
  if (layout == RepositoryLayout::kFlat) return root + "/" + hex.substr(0, 2) + "/" + hex + ".msg";
  return root + "/" + hex.substr(0, 2) + "/" + hex.substr(2, 2) + "/" + hex + ".msg";
}

void CreateFlatRepositoryIfMissing(const std::string& partition_dir) {
  const std::string root = partition_dir + "/=digest";
  if (PathExists(root)) return;
  // Built under a temporary name and renamed into place, so that =digest never exists without
  // its marker: a process that looks at it in between would take it for a 1.0 repository.
  const std::string tmp = partition_dir + "/=digest.tmp." + RandomToken();
  MakeDirs(tmp, 0700);
  WriteFileAtomic(tmp + "/" + std::string(kFlatRepositoryMarker), "");
  if (int err = RenamePath(tmp, root)) {
    UnlinkPath(tmp + "/" + std::string(kFlatRepositoryMarker));
    UnlinkAt(AT_FDCWD, tmp, AT_REMOVEDIR);
    // Another init made it first (ENOTEMPTY/EEXIST): theirs stands.
    if (err != ENOTEMPTY && err != EEXIST) ThrowErrno("rename " + tmp + " to " + root, err);
  }
}

}  // namespace storemove::store
