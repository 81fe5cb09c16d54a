// STORE/migrate-journal/GROUP.switch: the users whose switch an attempt has begun, written
// durably just before the destination is told to make them active and removed once the source
// has them moved (docs/migration.md, "A switch cut off in its middle").
//   storemove-migrate-switch 1             (or "storemove-migrate-switch 1 failed-run": kept by a
//   to HOST:PORT                            run that failed after sending the switch)
//   USER                                   one a line
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace storemove::stream {

inline constexpr char kSwitchMagic[] = "storemove-migrate-switch 1";
inline constexpr char kFailedSwitchMagic[] = "storemove-migrate-switch 1 failed-run";

struct SwitchRecord {
  bool failed_run = false;  // its first line is kFailedSwitchMagic
  std::string to;           // of its "to" line
  std::vector<std::string> users;
};

std::string FormatSwitchRecord(const SwitchRecord& record);

// The record in `text`, read from `path`; kCorrupt with one line naming `path` (and the line)
// for another first line, no "to" line, a line that is no user id, or a record cut short.
SwitchRecord ParseSwitchRecord(std::string_view text, const std::string& path);

}  // namespace storemove::stream
