// The store's clock floor (docs/store-format.md §1, "config/clock-floor"): the latest start time
// of a backup of this store. A message committed afterwards is saved at that time or later,
// whatever the committing host's clock says, so that `backup -d START` of a later backup takes
// every message the backup that started at START did not: a clock stepped back (an NTP step, a
// virtual machine resumed) or a delivering host whose clock runs behind the backup's would
// otherwise give such a message an earlier save time, and it would be in neither backup of the
// chain (helper-88).
#pragma once

#include <cstdint>
#include <string>

namespace storemove::store {

// The floor, or 0 when the store has none (no backup since this existed, an unreadable file or
// not a regular one) or when it is more than a day ahead of this clock (a wrong clock's value).
int64_t ReadClockFloor(const std::string& root);

// A backup's start: max(now, floor), written as the new floor (never lowered, unless it was more
// than a day ahead: then set back to now; writers are serialised by a lock on
// config/clock-floor.lock, readers see the old or the new file whole). `note` gets a sentence
// when it could not be written (not on a read-only filesystem, where nothing commits: the backup
// goes on) or was set back.
int64_t RaiseClockFloor(const std::string& root, int64_t now, std::string* note);

}  // namespace storemove::store
