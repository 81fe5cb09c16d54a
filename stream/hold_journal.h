// STORE/migrate-journal/GROUP.hold: the users a migrate put on hold and their status before,
// written (durably) before the first of them is held, so that a run killed with -9 leaves what
// its successor (or `migrate --abort`) needs to give them their service back (docs/migration.md).
//   storemove-migrate-journal 1
//   group NAME
//   to HOST:PORT
//   USER<TAB>STATUS        one a user: its status before the hold (active, hold)
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "store/store.h"

namespace storemove::stream {

inline constexpr char kHoldJournalMagic[] = "storemove-migrate-journal 1";

struct HoldJournal {
  std::string group;                                // of its "group" line
  std::string to;                                   // of its "to" line
  std::map<std::string, store::UserStatus> before;  // user -> status before the hold
};

std::string FormatHoldJournal(const HoldJournal& journal);

// The journal in `text`, read from `path`; kCorrupt with one line naming `path` (and the line)
// when it is not one FormatHoldJournal writes: another first line, no group or to line, a line
// that is not USER<TAB>STATUS, a user listed twice, or cut short.
HoldJournal ParseHoldJournal(std::string_view text, const std::string& path);

}  // namespace storemove::stream
