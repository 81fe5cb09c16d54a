// The mbox tree `storemove export` writes (interop/export.h), read back as import jobs: a file
// is the folder of its path ("Sent", "Archive/2023"), and "<name>.msg" beside a directory
// "<name>/" is the folder <name>, whose sub-folders that directory holds (MboxPaths). Until
// 2026-12-06 such a tree did not import back: "Lists.msg" gave a folder "Lists.msg" and a
// directory argument was refused (helper-133 #6).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "interop/import.h"

namespace storemove::interop {

// How the file names of a tree spell folder names.
enum class MboxFileNames {
  kAsStored,      // the folder's name as stored (UTF-8), as `storemove export` writes them
  kModifiedUtf7,  // IMAP's modified UTF-7 (RFC 3501 5.1.3), as Dovecot (mailbox_list_utf8 = no, its
                  // default) and UW-IMAP name mbox files: "Entw&APw-rfe" is Entwürfe, "Q&-A" is Q&A
};

// Directories nested below the tree's root that MboxTreeJobs reads (deeper is refused): what
// export writes as mbox stays within it (MboxPaths).
constexpr int kMaxMboxTreeDepth = 64;

// The folder-name component that the file or directory name `name` gives. kInvalidArgument,
// naming `shown`, for a name that is not modified UTF-7 or that decodes to one holding a '/'.
std::string FolderComponent(std::string_view name, MboxFileNames names, const std::string& shown);

// One job per regular file below `dir`, in folder-name order, for `user`. Names beginning with
// '.' are passed over (Dovecot's `.imap` index directories and `.subscriptions`); a link, a device
// or a pipe is refused (kCorrupt), as are folders nested over 64 deep and two files that name one
// folder (kInvalidArgument); a tree of an unfinished export is refused (kCorrupt,
// RefuseUnfinishedExport); no file at all is kNotFound. Every name is checked before any is used.
std::vector<ImportJob> MboxTreeJobs(const std::string& user, const std::string& dir,
                                    MboxFileNames names = MboxFileNames::kAsStored);

// The folders Dovecot's `DIR/.subscriptions` lists (its mbox layout keeps the user's subscriptions
// there): version 2 ("V<TAB>2", an empty line, then one name a line with a TAB between components
// and \001 escapes) or version 1 (one name a line, '/' between components); each component read
// as the tree's file names are (FolderComponent). A line that names no valid folder is a warning,
// as is a file of another version (after 20 such lines, one more counts the rest); no file,
// none. Read whole, so it is refused over 16 MiB or 65,536 names (kInvalidArgument) or with a NUL
// byte (kCorrupt: a binary file), before anything is written.
std::vector<std::string> MboxTreeSubscriptions(const std::string& dir, MboxFileNames names,
                                               std::vector<std::string>* warnings);

}  // namespace storemove::interop
