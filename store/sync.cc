#include "store/sync.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <set>

#include "util/error.h"
#include "util/fault.h"

namespace storemove::store {

std::vector<StoreFilesystem> OpenStoreFilesystems(Store& store) {
  std::vector<std::string> dirs = {store.root(), store.root() + "/mboxlist"};
  for (const std::string& partition : store.Partitions()) dirs.push_back(store.PartitionPath(partition));
  std::vector<StoreFilesystem> out;
  std::set<dev_t> seen;
  for (const std::string& dir : dirs) {
    UniqueFd fd = OpenDirectory(dir);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) ThrowErrno("stat " + dir);
    if (seen.insert(st.st_dev).second) out.push_back({std::move(fd), dir});
  }
  return out;
}

StoreSync::StoreSync(Store& store) : filesystems_(OpenStoreFilesystems(store)) {}

void StoreSync::Sync() {
  for (const StoreFilesystem& f : filesystems_) {
    int err = fault::Check(fault::Op::kFsync);
    if (err == 0 && ::syncfs(f.dir.get()) != 0) err = errno;
    if (err) ThrowErrno("syncfs " + f.name, err);
  }
}

}  // namespace storemove::store
