// storemove import (Sun's imsimport) in bulk: many UNIX mbox files, of one user or of many, in
// one run, with restore's durability model (docs/store-format.md §6.10):
//  * no fsync per message file; the caller syncs the store's filesystems once (store::StoreSync)
//    before it reports success, so an import that exits 0 is on stable storage;
//  * never half-visible: a folder the import creates is filled unpublished (no mboxlist record)
//    under the user's write lock and published only when the whole file is in; an existing folder
//    gains messages in batches whose store.idx append is the commit point;
//  * a rerun finishes the job: a message whose exact bytes the folder already holds is skipped, as
//    many times as the folder holds them (multiset: a file that holds a message twice yields it
//    twice), so importing a file again, whole or after a kill, adds only what is missing.
//    `append_all` turns that off (imsimport's behaviour: every run appends everything).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "interop/mbox.h"
#include "store/store.h"
#include "util/input_wait.h"

namespace storemove::interop {

struct ImportJob {
  std::string user;
  std::string folder;
  std::string path;   // the mbox file
  std::string where;  // how errors name the job: "list.tsv line 3", or empty
};

// What one file added (ImportOptions::on_file).
struct ImportedFile {
  uint64_t messages = 0;  // imported
  uint64_t bytes = 0;
  uint64_t skipped = 0;   // already present (see above)
  uint64_t empty = 0;     // of `messages`, those of 0 bytes ("From " lines with nothing between)
  // The first message of a file written by Dovecot, UW-IMAP or Pine ("X-IMAP:" or "X-IMAPbase:",
  // "DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA"): the folder's own data, not mail.
  uint64_t folder_data = 0;
  // A file an IMAP server wrote (its first message has "X-IMAP:" or "X-IMAPbase:") keeps each
  // message's keywords in "X-Keywords:" (Dovecot, UW-IMAP): they become user flags. Elsewhere
  // that field is whatever a sender put there, and is not read. Keywords the store cannot keep
  // (beyond the folder's 64, or not a name it can hold) are counted here.
  uint64_t keywords_dropped = 0;
  // Lines beginning "From " without a date, in a file whose envelope lines have dates, kept as
  // message text (MboxReader::text_from_lines).
  uint64_t text_from_lines = 0;
};

struct ImportOptions {
  MboxFlavor flavor = MboxFlavor::kMboxrd;
  bool append_all = false;  // do not skip messages the folder already holds
  // Called once before waiting for another writer of a user (restore, rename ...), with why.
  std::function<void(const std::string&)> on_wait;
  // Called after each batch committed to an existing folder (a test pauses there to be killed
  // between two batches), with the job and the folder's messages so far in this run.
  std::function<void(const ImportJob&, uint64_t committed)> after_batch;
  // Called with each message as soon as it is staged, before its batch is committed; it may
  // replace it (FolderFiller::before_commit): where relinker::ArrivalLinker plugs in.
  std::function<void(store::Folder&, store::StagedMessage&)> before_commit;
  // Called after each file is in (committed and, for a new folder, published).
  std::function<void(const ImportJob&, const ImportedFile&)> on_file;
  // A pipe (`-s /dev/stdin`) whose writer stalls while the import holds its user: said, and
  // given up on, as this says (util/input_wait.h). A regular file never waits.
  StallPolicy stall;
};

struct ImportReport {
  uint64_t files = 0;
  uint64_t users = 0;
  uint64_t folders_created = 0;
  uint64_t messages = 0;  // imported
  uint64_t bytes = 0;
  uint64_t skipped = 0;   // already present (see above)
  uint64_t empty = 0;     // of `messages`, those of 0 bytes: stored, as the mbox holds them
  uint64_t folder_data = 0;  // left out: see ImportedFile
  uint64_t keywords_dropped = 0;  // see ImportedFile
};

// Reads a list of `USER<TAB>FOLDER<TAB>MBOX_PATH` lines. Blank lines and lines starting with '#'
// are ignored; a final CR is dropped (lists written on Windows). A relative path is relative to
// the list file's directory. Every name is validated here, before anything is imported: a bad
// line throws kInvalidArgument "<list> line N: why" (user ids and folder names as the store
// validates them; paths must not hold control characters).
std::vector<ImportJob> ReadImportList(const std::string& list_path);

// The folder a file goes to when none is named: its base name without a ".mbox" suffix
// ("/x/Sent.mbox" -> "Sent", "inbox" -> "inbox", which the store reads as INBOX).
std::string FolderForFile(const std::string& path);

// `-`, /dev/stdin, /dev/fd/0 and /proc/self/fd/0: standard input, read as the shell opened it
// (not opened again by name).
bool IsStandardInput(const std::string& path);

// Imports the jobs, user by user (a user's jobs keep their order). Every file is opened and checked
// to begin like an mbox before anything is written, so a missing or foreign file changes nothing.
// The first error stops the run: what was committed stays (each file of a new folder whole or not
// at all), and running the same import again completes it.
ImportReport ImportMboxes(store::Store& store, const std::vector<ImportJob>& jobs, const ImportOptions& options);

}  // namespace storemove::interop
