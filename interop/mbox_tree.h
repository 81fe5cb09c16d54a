// The mbox tree `storemove export` writes (interop/export.h), read back as import jobs: a file
// is the folder of its path ("Sent", "Archive/2023"), and "<name>.msg" beside a directory
// "<name>/" is the folder <name>, whose sub-folders that directory holds (MboxPaths). Until
// 2026-12-06 such a tree did not import back: "Lists.msg" gave a folder "Lists.msg" and a
// directory argument was refused (helper-133 #6).
#pragma once

#include <string>
#include <vector>

#include "interop/import.h"

namespace storemove::interop {

// One job per regular file below `dir`, in folder-name order, for `user`. Names beginning with
// '.' are passed over; a link, a device or a pipe is refused (kCorrupt), as are folders nested
// over 64 deep and two files that name one folder (kInvalidArgument); a tree of an unfinished
// export is refused (kCorrupt, RefuseUnfinishedExport); no file at all is kNotFound.
std::vector<ImportJob> MboxTreeJobs(const std::string& user, const std::string& dir);

}  // namespace storemove::interop
