#include "store/sync.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <set>

#include "util/error.h"
#include "util/fault.h"

namespace storemove::store {

StoreSync::StoreSync(Store& store) {
  std::vector<std::string> dirs = {store.root(), store.root() + "/mboxlist"};
  for (const std::string& partition : store.Partitions()) dirs.push_back(store.PartitionPath(partition));
  std::set<dev_t> seen;
  for (const std::string& dir : dirs) {
    UniqueFd fd = OpenDirectory(dir);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) ThrowErrno("stat " + dir);
    if (!seen.insert(st.st_dev).second) continue;
    filesystems_.push_back(std::move(fd));
    names_.push_back(dir);
  }
}

void StoreSync::Sync() {
  for (size_t i = 0; i < filesystems_.size(); ++i) {
    int err = fault::Check(fault::Op::kFsync);
    if (err == 0 && ::syncfs(filesystems_[i].get()) != 0) err = errno;
    if (err) ThrowErrno("syncfs " + names_[i], err);
  }
}

}  // namespace storemove::store
