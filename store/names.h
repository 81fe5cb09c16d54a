// Folder names as the store reads them back from its own records. New names (every creation,
// restore, import, delivery, rename target) must be well-formed UTF-8 (store.h's
// ValidateFolderName); a folder an earlier storemove created with other 8-bit bytes keeps
// working for reading, backup, export, delete and rename, so it can be renamed to a UTF-8 name
// (docs/store-format.md §1.3). These keep only the path-safety rules.
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace storemove::store {

// ValidateFolderName without the UTF-8 rule: kInvalidArgument for an empty name or component,
// '.', '..', a C0 control or DEL, or a name too long.
void ValidateStoredFolderName(std::string_view folder);
// ParseMailboxName with ValidateStoredFolderName for the folder.
std::pair<std::string, std::string> ParseStoredMailboxName(std::string_view mailbox);

}  // namespace storemove::store
