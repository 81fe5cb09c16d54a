// STORE/migrate-journal/GROUP.switch: the users whose switch an attempt has begun, written
// durably just before the destination is told to make them active and removed once the source
// has them moved (docs/migration.md, "A switch cut off in its middle").
//   storemove-migrate-switch 1             (or "storemove-migrate-switch 1 failed-run": kept by a
//   to HOST:PORT                            run that failed after sending the switch)
//   store STOREID                          the destination's store id (since 2026-12-07; absent
//                                          in older records and for a server that sent none)
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
  std::string store_id;     // of its "store" line; empty without one
  std::vector<std::string> users;
};

std::string FormatSwitchRecord(const SwitchRecord& record);

// Whether `id` may stand in a record's "store" line: what a server's READY said its store id is,
// a peer's bytes (a store's id is 24 lowercase hex digits; any letters and digits are taken).
bool IsRecordableStoreId(std::string_view id);

// Whether the record is about the destination at `to` whose store id (from its READY) is
// `store_id` ("" for none): for a record with a store id, that same store (the address may be
// another name or port of it; a server without an id is another store); for an older record
// without one, the same HOST:PORT.
bool SwitchRecordNames(const SwitchRecord& record, const std::string& to, const std::string& store_id);

// The record in `text`, read from `path`; kCorrupt with one line naming `path` (and the line)
// for another first line, no "to" line, a "store" line with no store id, a line that is no user
// id, or a record cut short.
SwitchRecord ParseSwitchRecord(std::string_view text, const std::string& path);

}  // namespace storemove::stream
