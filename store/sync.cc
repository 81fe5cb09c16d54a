#include "store/sync.h"

#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <string>
#include <vector>

#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {

void SyncStoreFilesystems(Store& store) {
  std::vector<std::string> dirs = {store.root(), store.root() + "/mboxlist"};
  for (const std::string& partition : store.Partitions()) dirs.push_back(store.PartitionPath(partition));
  std::set<dev_t> synced;
  for (const std::string& dir : dirs) {
    UniqueFd fd = OpenDirectory(dir);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) ThrowErrno("stat " + dir);
    if (!synced.insert(st.st_dev).second) continue;
    if (::syncfs(fd.get()) != 0) ThrowErrno("syncfs " + dir);
  }
}

}  // namespace storemove::store
