// Durability of bulk writes (restore, import, moveuser): no fsync per message file; one syncfs(2)
// per filesystem holding the store before the command reports success (docs/store-format.md §6.10).
#pragma once

#include "store/store.h"

namespace storemove::store {

// syncfs(2) once on every filesystem holding the store (root, mboxlist, partitions): a partition
// mounted elsewhere than the root is synced too.
void SyncStoreFilesystems(Store& store);

}  // namespace storemove::store
