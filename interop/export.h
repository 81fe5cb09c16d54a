// storemove export (Sun's imsexport): writes one user's folders out of the store, as UNIX mbox
// files or as a Maildir++ tree, for another mail system to pick up.
//
// OUTDIR must not exist or be an empty directory (it is created, mode 0700): exporting into a
// directory that already holds files could mix two exports or overwrite someone's mail. OUTDIR
// itself may be a symbolic link to such a directory (the administrator's path, /backup ->
// /mnt/big). Every file and directory is created below OUTDIR through directory descriptors with
// O_NOFOLLOW and O_EXCL, so nothing outside OUTDIR is ever written, even if a link is planted
// meanwhile. A
// failed export leaves what it wrote so far; remove OUTDIR before running it again.
//
// mbox (imsexport's layout)
//  * One mbox file per folder, at the folder's path below OUTDIR: `INBOX`, `Sent`,
//    `Projects/2024`. A folder that has exported sub-folders is written as `<name>.msg` and its
//    sub-folders go into the directory `<name>/`: `Projects.msg` + `Projects/2024`. A component
//    that is not a folder itself (only `Archive/2023` exists) is just a directory.
//  * Names are written as stored (UTF-8 bytes). When two folders would need the same path (`A.msg`
//    next to `A` with sub-folders) the export is refused before anything is written.
//  * mboxrd (interop::MboxWriter): the envelope sender is the address of the topmost Return-Path
//    header (MAILER-DAEMON if there is none or it is `<>`), the date is the internal date.
//    `storemove import` gives back every message byte for byte, with its internal date. Flags,
//    UIDs and UIDVALIDITY are not kept (as with imsexport).
//  * Memory: a message up to 4 MiB is read whole, checked against its store.idx size and digest,
//    then written; a larger one is read twice (MboxWriter::WriteFile), checked on the first
//    reading before any of it is written and written on the second, a block at a time, so the
//    export holds a few blocks whatever the message's size. Its envelope sender is taken from
//    the first 4 MiB of its header.
//
// maildir (Maildir++, as Dovecot reads it)
//  * INBOX is OUTDIR itself (cur/ new/ tmp/); every other folder is `OUTDIR/.<name>/` with the
//    components joined by '.' and an empty `maildirfolder` file: `.Sent`, `.Projects.2024`.
//  * Names follow Dovecot's storage-name rules with the listescape plugin (namespace separator
//    '/', escape character '\'): inside a component '.' is written `\2e` and '\' `\5c`, a leading
//    '~' of the whole name `\7e`; then the name is converted to modified UTF-7 (RFC 3501 5.1.3),
//    Dovecot's default (mailbox_list_utf8 = no): `Entwürfe` -> `.Entw&APw-rfe`. Bytes that are not
//    valid UTF-8 are written as `\xx` too (Dovecot can list such a name but not show it as it is).
//    A Dovecot without listescape shows escaped names literally (`a\2eb`).
//  * Each message is one file `cur/<internal date>.<uid>_<n>.<host>,S=<size>,W=<vsize>:2,<flags>`
//    (n counts the messages of this export, as in the Maildir spec's "pid_count"; vsize is the
//    size with bare LFs counted as CRLF), with the bytes exactly as stored and mtime = internal
//    date (Dovecot's INTERNALDATE). It is written in tmp/ and renamed into cur/.
//  * Flags: D Draft, F Flagged, R Answered, S Seen, T Deleted; user flags that are IMAP atoms
//    become Dovecot keywords `a`..`z` listed in `dovecot-keywords`. \Recent, Archived and user
//    flags beyond those 26 (or not atoms) are not kept; ExportReport counts the messages concerned.
//  * `subscriptions` (Dovecot's, version 2) lists the user's subscriptions to its own folders
//    that the pattern selects; a subscription to another user's folder has no place there and
//    is counted in ExportReport.
//  * `dovecot-uidlist` keeps the folder's UIDVALIDITY, next UID and each message's UID, so IMAP
//    clients of the Dovecot that picks the tree up need not download the mail again.
//
// Both formats check every message against its store.idx size and digest while copying (kCorrupt
// on a mismatch) and read one message at a time; messages expunged during the export are skipped
// and counted. The data is synced to disk (syncfs) before Export returns.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "interop/maildir_names.h"
#include "store/store.h"

namespace storemove::interop {

enum class ExportFormat { kMbox, kMaildir };

struct ExportOptions {
  std::string user;
  std::string out_dir;
  ExportFormat format = ExportFormat::kMbox;
  std::string folder_pattern = "*";  // folders to export, as MatchPattern ('*' all, '%' one level)
  std::string host;                  // host part of maildir file names; empty = this host's name
};

struct ExportedFolder {
  std::string folder;  // store name: "Projects/2024"
  std::string path;    // relative to out_dir: "Projects/2024", ".Projects.2024", "" for the maildir INBOX
  uint64_t messages = 0;
  uint64_t bytes = 0;
  uint64_t vanished = 0;  // expunged after the folder was listed, so not exported
};

struct ExportReport {
  std::vector<ExportedFolder> folders;  // in folder name order
  uint64_t messages = 0;
  uint64_t bytes = 0;
  uint64_t vanished = 0;
  uint64_t flags_not_kept = 0;  // maildir: messages that lost Archived or a user flag; mbox: any flag
  uint64_t dates_not_kept = 0;  // maildir: internal dates the filesystem's file times cannot hold
  uint64_t subscriptions = 0;            // maildir: lines of the `subscriptions` file written
  uint64_t subscriptions_not_kept = 0;   // maildir: subscriptions to other users' folders
  uint64_t subscriptions_left_out = 0;   // mbox: the user's subscriptions, which mbox files cannot hold
};

// kNotFound when the user does not exist or no folder matches; kExists when out_dir is not an
// empty directory; kInvalidArgument when folder names cannot be laid out (see above).
ExportReport Export(store::Store& store, const ExportOptions& options);

// --- layout (exposed for tests and for tools that want to predict the output) --------------
// Paths below OUTDIR of the mbox files for `folders` (the exported set), in the same order.
// Throws kInvalidArgument naming the folders when two need the same path.
std::vector<std::string> MboxPaths(const std::vector<std::string>& folders);
// Maildir++ names (MaildirFolderDir, MaildirFlagLetters) are in interop/maildir_names.h.

}  // namespace storemove::interop
