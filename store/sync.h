// Durability of bulk writes (restore, import, moveuser): no fsync per message file; one syncfs(2)
// per filesystem holding the store before the command reports success (docs/store-format.md §6.10).
#pragma once

#include <string>
#include <vector>

#include "store/store.h"
#include "util/fs.h"

namespace storemove::store {

// One open directory per filesystem holding the store (root, mboxlist, partitions), named by the
// first of them on it.
struct StoreFilesystem {
  UniqueFd dir;
  std::string name;
};
std::vector<StoreFilesystem> OpenStoreFilesystems(Store& store);

// The filesystems holding the store (root, mboxlist, partitions: a partition mounted elsewhere
// than the root is synced too), opened when a bulk load starts and synced when it ends.
//
// Opened at the start because syncfs(2) reports a write-back error through a descriptor only
// when it happened after that descriptor was opened (the kernel's errseq): a descriptor opened
// at the end would miss the errors the kernel met writing the load back while it ran (its
// flusher threads, or a background syncfs of our own, store/writeback.h), and the load would be
// reported durable when it is not.
class StoreSync {
 public:
  explicit StoreSync(Store& store);
  // syncfs on each filesystem; kIo naming the directory when one reports an error.
  void Sync();

 private:
  std::vector<StoreFilesystem> filesystems_;
};

}  // namespace storemove::store
