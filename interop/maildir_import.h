// storemove import --maildir: a Maildir++ tree (Dovecot's, Courier's, or what `storemove export
// --format maildir` writes) into one user of the store. It reads exactly the layout the export
// writes (interop/export.h), so export then import gives back the same folders, message bytes,
// flags, user flags, internal dates and, for folders new at the destination, the same
// UIDVALIDITY and UIDs. docs/store-format.md §6.11 has every rule; in short:
//
//  * Folders: INBOX is DIR itself; every directory `.<name>` that holds `cur/` is the folder
//    interop::MaildirFolderName(<name>) (`.Projects.2024` -> `Projects/2024`, `.a\2eb` -> `a.b`,
//    `.Entw&APw-rfe` -> `Entwürfe`), with or without a `maildirfolder` file. A `.<name>` directory
//    without `cur/` is skipped with a warning; tmp/, files and other directories are ignored.
//  * Messages: every file in cur/ and new/ whose name does not begin with '.'. Flags from cur/
//    names' `:2,` info (D F R S T, keyword letters through `dovecot-keywords`), none for new/
//    (\Recent is not kept); the internal date is the file's mtime; the size is what was read (a
//    file that changes size while read is an error; a wrong `S=` in its name is only counted).
//  * UIDs: `dovecot-uidlist` (version 3, or 1; else Courier's `courierimapuiddb`, version 1)
//    gives UIDVALIDITY, the next UID and each message's UID by the base name before ':'. A
//    folder new at the destination keeps them; messages the list does not name get UIDs after
//    the list's next UID. Messages go in by UID, then the
//    unnamed ones by file name (numerically by the leading delivery time).
//  * Refused before anything is written, with one line naming the path: a symbolic link anywhere
//    in the tree (DIR itself included), anything but a regular file in cur/ or new/, a folder name
//    that is not valid modified UTF-7 or that the store refuses (`..`, control characters, ...),
//    two directories meaning the same folder, a malformed dovecot-uidlist or dovecot-keywords,
//    more than 64 user flags in a folder, a folder new at the destination whose list's next UID
//    leaves too few UIDs (the last is 4294967294) for the files the list does not name. Every
//    file is then opened beneath its directory without following links, so a link planted
//    during the import fails it instead of being followed.
//  * Subscriptions: the tree's `subscriptions` file (Dovecot's, version 1 or 2) or Courier's
//    `courierimapsubscribed` subscribes the user to the folders it names, after the messages; a
//    rerun adds what is missing and removes nothing.
//  * Durability and reruns as the mbox import (interop/import.h, interop/folder_filler.h): a new
//    folder is built unpublished and appears whole; an existing folder gains batches and skips a
//    message whose exact bytes it already holds, so a rerun (after kill -9 too) adds only what
//    is missing. The caller syncs the store's filesystems before reporting success.
//
// Memory does not grow with the tree: a folder's file names, its uidlist and the import order go
// through util/external_sort.h, which keeps `scratch_memory` in memory and the rest in $TMPDIR.
//
// The tree must not change during the import (stop the mail server that uses it, or import a
// copy). Courier's courierimapkeywords/ is not read: such a tree's messages lose their keywords
// (system flags are kept).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "interop/maildir_names.h"
#include "store/store.h"
#include "util/fs.h"
#include "util/record_spool.h"

namespace storemove::interop {

// One message file of a scanned tree.
struct MaildirMessageFile {
  bool in_new = false;  // new/ (else cur/)
  std::string name;
  uint32_t uid = 0;  // from dovecot-uidlist; 0 = not listed
  uint8_t flags = 0;  // store::SystemFlag bits
  bool passed = false;  // P: the keyword $Forwarded
  uint32_t keyword_bits = 0;  // letters dovecot-keywords names, bit i = 'a' + i
  bool flags_not_kept = false;  // had a letter the store cannot keep (an unnamed keyword, an unknown letter)
};

// The message files of one folder in import order, kept in the tree's spool (util/record_spool.h:
// a temporary file once the tree's outgrow a few MiB; they took ~370 bytes a message of memory).
class MaildirMessageFiles {
 public:
  MaildirMessageFiles() = default;
  MaildirMessageFiles(std::shared_ptr<RecordSpool> spool, uint64_t begin, uint64_t end, uint64_t count)
      : spool_(std::move(spool)), begin_(begin), end_(end), count_(count) {}
  uint64_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  // Calls `each` with every file, in import order. No other reader of the spool may run meanwhile.
  void ForEach(const std::function<void(const MaildirMessageFile&)>& each) const;
  std::vector<MaildirMessageFile> ToVector() const;  // for tests

 private:
  std::shared_ptr<RecordSpool> spool_;
  uint64_t begin_ = 0, end_ = 0, count_ = 0;
};

struct MaildirFolderScan {
  std::string folder;  // store name, normalised ("INBOX", "Projects/2024")
  std::string path;    // relative to the tree: "" for INBOX, ".Projects.2024"
  uint32_t uidvalidity = 0;  // from dovecot-uidlist; 0 = no list
  uint32_t uidnext = 0;
  std::string uidlist;       // the list's file name ("dovecot-uidlist", "courierimapuiddb"); empty = none
  // dovecot-keywords: the name of letter 'a' + i, "" if none; no entries without the file (26
  // empty strings in every folder were ~830 bytes of ~1.1 KiB a folder: 100 MB at 40,000).
  std::vector<std::string> keywords;
  bool any_passed = false;  // a message has P: the folder needs the keyword $Forwarded
  MaildirMessageFiles messages;  // in import order (see above)
  // Counted as the files were scanned, so no pass over them is needed before the import:
  uint64_t unlisted = 0;            // files the uidlist does not name (or a second of the same base)
  uint64_t first_unlisted_uid = 1;  // what a new folder gives the first: past the list's next UID and its UIDs
  uint64_t flags_not_kept = 0;      // files with a letter the store cannot keep
  uint64_t passed_otherwise_kept = 0;  // files with P and no such letter (P alone lost if no room for it)
};

struct MaildirTree {
  std::string dir;
  std::shared_ptr<RecordSpool> spool;  // every folder's MaildirMessageFiles
  UniqueFd root;  // DIR, opened without following links
  std::deque<MaildirFolderScan> folders;  // INBOX first, then by name (a deque: no copy of all as it grows)
  std::vector<std::string> warnings;
  // Folders the tree's `subscriptions` file names (Dovecot, version 1 or 2; else Courier's
  // `courierimapsubscribed`), normalised, each once. A line that names no valid folder is a
  // warning, not an error: Dovecot itself drops such lines.
  std::vector<std::string> subscriptions;
};

// Reads the tree's structure (not the messages) and checks every rule above. Throws with one line
// naming the path: kNotFound (no DIR), kInvalidArgument (not a Maildir, a bad folder name),
// kCorrupt (a link, a special file, a malformed uidlist or keywords file).
// `scratch_memory`: what each of a folder's sorts holds in memory before it writes a temporary
// file in $TMPDIR (tests make it small to see the files' path).
constexpr size_t kMaildirScanScratch = 4 << 20;
MaildirTree ScanMaildir(const std::string& dir, size_t scratch_memory = kMaildirScanScratch);

struct ImportedMaildirFolder {
  std::string folder;
  std::string path;
  uint64_t messages = 0;  // imported
  uint64_t bytes = 0;
  uint64_t skipped = 0;   // already present
  uint64_t empty = 0;     // of `messages`, files of 0 bytes
  bool created = false;   // new at the destination (built unpublished, then published)
  bool uids_kept = false; // created with the tree's UIDVALIDITY and UIDs
  // Of `skipped`: messages whose flags now follow the tree's (a rerun into a folder the import
  // made: same UIDVALIDITY, same UID, same bytes).
  uint64_t flags_updated = 0;
  // An existing folder whose messages' flags follow the tree's (it was made from this tree:
  // the same UIDVALIDITY). Else messages already present keep the flags the store has.
  bool flags_follow_tree = false;
};

struct MaildirImportReport {
  std::vector<ImportedMaildirFolder> folders;
  uint64_t folders_created = 0;
  uint64_t messages = 0;
  uint64_t bytes = 0;
  uint64_t skipped = 0;
  uint64_t empty = 0;             // of `messages`, files of 0 bytes: stored, as the tree holds them
  uint64_t flags_not_kept = 0;    // messages with a flag letter the store cannot keep
  uint64_t new_uids = 0;          // messages of created folders that dovecot-uidlist did not name
  uint64_t size_hints_wrong = 0;  // messages whose name's S= differs from the bytes read
  uint64_t subscribed = 0;        // subscriptions of the tree the user did not have yet
  uint64_t flags_updated = 0;     // messages already here whose flags follow the tree's now
};

struct MaildirImportOptions {
  std::string user;
  std::string dir;
  bool append_all = false;  // do not skip messages an existing folder already holds
  size_t scratch_memory = kMaildirScanScratch;  // ScanMaildir's
  // Called once before waiting for another writer of the user, with why.
  std::function<void(const std::string&)> on_wait;
  // Called for each warning (a skipped directory, flags not kept, wrong size hints).
  std::function<void(const std::string&)> on_warning;
  // After each full batch committed to any folder, new or existing (a test seam: the kill test
  // stops the import there), with the folder and the messages added to it so far.
  std::function<void(const std::string& folder, uint64_t added)> after_batch;
  // ArrivalLinker: called with each message as soon as it is staged, before its batch is
  // committed; it may replace it (FolderFiller::before_commit).
  std::function<void(store::Folder&, store::StagedMessage&)> before_commit;
  // After each folder is in (committed and, when new, published).
  std::function<void(const ImportedMaildirFolder&)> on_folder;
};

// Scans the tree, then imports it under the user's write lock, creating the user when missing.
// The first error stops the run: what was committed stays (each new folder whole or not at all)
// and running the same import again completes it.
MaildirImportReport ImportMaildir(store::Store& store, const MaildirImportOptions& options);

}  // namespace storemove::interop
