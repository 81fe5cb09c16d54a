// storemove moveuser (Sun's MoveUser): pulls users' mailboxes from any IMAP server into the store
// (docs/moveuser.md).
//
//  * One IMAP connection per user (imaps://, or imap:// with STARTTLS unless `insecure`), logged in
//    as the user or as an administrator acting for the user (SASL PLAIN authorization identity).
//  * Every selectable folder: a folder new at the destination is filled unpublished, with the
//    source's UIDVALIDITY and UIDs, and published when complete, so it is never half-visible and a
//    killed pull leaves nothing a reader can see. An existing folder with the same UIDVALIDITY gets
//    the UIDs it lacks, under their UIDs, in batches, and the flags of the messages it has follow the
//    source's; one with another UIDVALIDITY gets the messages whose bytes it does not hold already
//    (digest, then the bytes compared), under new UIDs. So a rerun fetches only what is missing.
//  * Messages are stored byte for byte as the server sends BODY[] (IMAP's CRLF form), streamed
//    from the socket into the message file, never whole in memory.
//  * Flags: \Seen \Answered \Flagged \Deleted \Draft map to the store's system flags, keywords to
//    user flags (64 per folder; more are dropped and counted); \Recent is not kept. INTERNALDATE
//    becomes the internal date. Subscriptions are copied.
//  * No fsync per file: the caller syncs the store once (store::StoreSync, opened before it starts) before it
//    reports success, as restore does.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "store/store.h"

namespace storemove::stream {

struct ImapSource {
  std::string url;            // imap://HOST[:PORT] (STARTTLS) or imaps://HOST[:PORT]
  // Instead of url: a command whose stdin and stdout speak IMAP (stream/command_connection.h),
  // %u the user id (valid ids need no shell quoting), %% a '%'. A PREAUTH greeting is logged in
  // already; an OK greeting logs in as with url. No TLS: the command is the link.
  std::string tunnel;
  std::string ca_file;        // trust these CAs instead of the system's
  bool insecure = false;      // imap:// without STARTTLS: plain text, for trusted links only
  std::string admin;          // when set, log in as this administrator acting for each user
  std::string admin_password;
  int timeout_seconds = 60;   // a read, a write or a command that makes no progress this long fails the user
  // Store a BODY[] whose length is not its RFC822.SIZE as sent (Exchange reports sizes inexact)
  // instead of refusing it as cut short or padded on the way.
  bool allow_size_mismatch = false;
};

// The tunnel's command for `user` (%u, %%); kInvalidArgument for another '%' escape.
std::string TunnelCommand(const std::string& tunnel, const std::string& user);

struct ImapAccount {
  std::string user;      // the same id at the source and in the store
  std::string password;  // empty when an administrator logs in for the user
};

struct MoveUserResult {
  std::string user;
  uint64_t folders = 0;          // source folders pulled
  uint64_t folders_created = 0;  // new at the destination
  uint64_t folders_gone = 0;     // listed, then deleted at the source before their turn: not pulled
  uint64_t messages = 0;         // stored by this run
  uint64_t bytes = 0;
  uint64_t already_present = 0;  // fetched but held already (another UIDVALIDITY)
  uint64_t flags_updated = 0;    // messages present whose flags followed the source
  uint64_t uid_conflicts = 0;    // stored under a new UID: their UID holds another message here
  // present under their UIDs with the LF line ends of the server's files (an import of them),
  // which the server sends as CRLF: the same messages, not fetched again (docs/moveuser.md)
  uint64_t lf_copies = 0;
  uint64_t keywords_dropped = 0; // keywords beyond the 64 user flags of a folder
  // --hold: the user was on hold before this pull, set by someone else (by hand, a migration's
  // copy), or was held by hand during it: the pull did not lift that hold.
  bool left_on_hold = false;
  double seconds = 0;
  std::string error;  // empty when the user is complete
  // For a failed user: a rerun cannot help until somebody acts (a name the store cannot take, two
  // folders that would become one, credentials refused). Anything else may pass on a rerun.
  bool permanent = false;
};

struct MoveUserOptions {
  int jobs = 1;       // users pulled at once
  bool hold = false;  // destination user on hold during its pull, active after
  // Called with each staged message before it is committed; it may replace it (single instance
  // on arrival: interop::FolderFiller::before_commit). Called from the worker threads.
  std::function<void(store::Folder&, store::StagedMessage&)> on_arrival;
  // Called once per user when it is done or failed, one call at a time.
  std::function<void(const MoveUserResult&)> on_user;
  // Test seam: called after each batch committed to a folder, with the user, the folder and the
  // messages the folder received so far in this run.
  std::function<void(const std::string&, const std::string&, uint64_t)> after_batch;
};

struct MoveUserReport {
  std::vector<MoveUserResult> users;  // in the order given
  uint64_t failed = 0;
  uint64_t failed_permanently = 0;  // of failed: see MoveUserResult::permanent
  uint64_t messages = 0, bytes = 0;
  double seconds = 0;
};

struct ImapUrl {
  bool tls = false;  // imaps://
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;
};
// "imap://host", "imaps://host:993", "imap://[::1]:1143"; kInvalidArgument naming the text.
ImapUrl ParseImapUrl(const std::string& url);

// The accounts of a run: `user` alone, or one user id per line of `users_file` (blank lines and
// '#' comments ignored). Passwords come from `password_file` unless an administrator logs in:
// for one user its first line is the password; for a users file it holds USER<TAB>PASSWORD lines.
// Password files must not be readable by group or others (kInvalidArgument naming the mode).
std::vector<ImapAccount> ReadAccounts(const std::string& user, const std::string& users_file,
                                      const std::string& password_file, bool with_admin);
// The first line of a password file, checked as above.
std::string ReadPasswordFile(const std::string& path);

// Pulls every account; a user that fails is reported (error) and the others go on.
MoveUserReport MoveUsers(store::Store& store, const ImapSource& source, const std::vector<ImapAccount>& accounts,
                         const MoveUserOptions& options);

}  // namespace storemove::stream
