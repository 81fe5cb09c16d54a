// An export killed or failed leaves a marker in its OUTDIR until a rerun completes it
// (interop/export.h): its last file is cut short, and folders may be missing. import refuses
// such files rather than load a truncated message (helper-133: exit 0, the last message cut).
#pragma once

#include <optional>
#include <string>

namespace storemove::interop {

inline constexpr char kUnfinishedExportMarker[] = ".storemove-export-unfinished";

// The marker in the directory `dir` or in any directory above it (links resolved), if any.
std::optional<std::string> UnfinishedExportAbove(const std::string& dir);

// Throws kCorrupt naming `path` and the marker when `dir` lies in an unfinished export.
void RefuseUnfinishedExport(const std::string& path, const std::string& dir);

}  // namespace storemove::interop
