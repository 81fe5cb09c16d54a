// A session's data path: backup (store -> records -> bytes) and restore (bytes -> records ->
// store), with Sun imsbackup/imsrestore semantics (../shared/reference/sun-store.md §2).
#pragma once

#include <cstdint>
#include <functional>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <ostream>
#include <string>
#include <vector>

#include "format/format.h"
#include "relinker/relinker.h"
#include "store/store.h"
#include "stream/progress.h"
#include "util/error.h"

namespace storemove::stream {

// --- selection -------------------------------------------------------------------------------
// Backup groups from backup-groups.conf: NAME=ERE, full match on the user id.
struct BackupGroup {
  std::string name;
  std::string regex;
};
std::vector<BackupGroup> ReadBackupGroups(const std::string& path);  // missing file = no groups
bool GroupMatches(const BackupGroup& group, const std::string& user);

// What a list of names selects. Names: "/" (everything), "/partition", "/partition/group",
// "/partition/group/user", or a mailbox "user/joe/INBOX" (IMAP wildcards * and % allowed, e.g.
// "user/joe/*" for all of joe's folders).
class Selection {
 public:
  // `groups_file`: where `groups` came from, for the error naming a group it lacks.
  Selection(const std::vector<std::string>& names, const std::vector<BackupGroup>& groups,
            const std::string& groups_file = {});
  bool WantsUser(const store::UserInfo& user) const;
  bool WantsFolder(const store::UserInfo& user, const std::string& folder) const;
  // Throws kNotFound naming the first name that selects nothing in `store` (an unknown
  // partition, user or mailbox, a user outside the named group or partition): an operator's
  // typo must not become an empty backup that exits 0.
  // `command` starts the message ("backup: 'user/x' selects nothing: ...").
  void RequireEveryNameMatches(store::Store& store, std::string_view command = "backup") const;
  // Marks, in `matched` (one flag per name, in the order given), every name that selects
  // `folder` of `user`: a restore reads its stream once, and names a name that selected nothing.
  void MarkNamesSelecting(const store::UserInfo& user, const std::string& folder, std::vector<bool>& matched) const;
  const std::string& name(size_t i) const { return items_[i].name; }
  size_t names() const { return items_.size(); }

 private:
  struct Item {
    std::string name;             // as given
    std::string partition;        // empty = any
    int group = -1;               // index into groups_, -1 = any
    std::string user;             // empty = any
    std::string mailbox_pattern;  // empty = whole users
  };
  // Items that can select one user only (/partition/group/USER, user/USER/... patterns), by that
  // user; the others are looked at for every user. A -u file of 32,000 users' names made every
  // look-up walk all of them: quadratic (helper-65, 24 s where `backup /` took 1.8 s).
  std::vector<size_t> ItemsFor(const std::string& user) const;
  std::vector<BackupGroup> groups_;
  std::vector<Item> items_;
  std::multimap<std::string, size_t> by_user_;
  std::vector<size_t> general_;
};

// --- backup --------------------------------------------------------------------------------
// Tells a backup sent over a network session which contents the receiver already holds, so
// they travel as held records instead of bodies (skip what the destination has). Questions are
// pipelined: Ask sends one and returns at once; answers come back in the order asked, and
// Answer waits only when its answer has not arrived yet. The stream need not be flushed first.
class ContentOracle {
 public:
  virtual ~ContentOracle() = default;
  // At most kMaxOracleBatch (digest, size) pairs: which the receiver's repository holds in the
  // partition where `user` (a source user id; `partition` its source partition) is or will be
  // restored. Returns a ticket for Answer.
  virtual uint64_t Ask(const std::string& user, const std::string& partition,
                       const std::vector<std::pair<Digest, uint64_t>>& contents) = 0;
  // One bool per pair asked, true = held. Tickets are answered in order; each once.
  virtual std::vector<bool> Answer(uint64_t ticket) = 0;
};
inline constexpr size_t kMaxOracleBatch = 1000;

// Message files a pass opens at once by default (threads; the kernel reads their data
// meanwhile): enough to keep a disk's queue full (docs/performance.md, "On disk").
constexpr size_t kDefaultReads = 16;

struct BackupOptions {
  std::vector<std::string> names{"/"};
  std::string groups_file;  // default STORE/config/backup-groups.conf
  int64_t since = 0;        // -d: only messages saved at or after this time
  bool manifest = false;    // records without bodies, for verify --manifest
  std::string source_host;
  bool live_progress = false;
  const std::set<std::string>* only_users = nullptr;  // narrows the selection further (migrate)
  std::function<void(uint64_t messages, uint64_t bytes)> on_progress;  // per message sent
  ContentOracle* oracle = nullptr;  // network sessions (a session stream); files and pipes: none
  // Message files opened at once, ahead of the stream (0 = kDefaultReads); docs/performance.md "On disk".
  size_t reads = 0;
  // Entries of the fixed-size table of contents already sent (a power of two, >= 4); 0 = the
  // default of 2^18 (4 MiB). Content the table has forgotten is sent again as a body.
  size_t sent_contents_capacity = 0;
  // Folder paths that table can refer to (the last N folders, as many as 1 MiB holds); 0 = the
  // default of 16,384.
  uint32_t folder_paths_kept = 0;
  // Links name only one of the last N contents (restore links nothing older); 0 = the format's
  // kLinkCheckWindow, the most allowed. Smaller values are for tests.
  uint64_t link_window = 0;

  // --- migrate's incremental passes (format 1.1, docs/migration.md) ---
  // Per mailbox ("user/joe/INBOX"), the source HIGHESTMODSEQ the destination already has
  // (what an earlier pass of this migration sent and the receiver settled). A folder found
  // here is written as an incremental folder (FolderRecord::since_modseq); others complete.
  const std::map<std::string, uint64_t>* since_modseq = nullptr;
  // With since_modseq: an unchanged folder (same modseq) is left out entirely (online passes),
  // or written as an unchanged folder whose folder-end carries the summary (the final pass).
  bool skip_unchanged = false;
  // With skip_unchanged: a user none of whose folders is written is left out too (no user
  // record): migrate's held pass then costs what changed, not what the group holds.
  bool skip_idle_users = false;
  // Every folder-end carries the summary of the source folder (store::Summarize).
  bool summaries = false;
  // Per mailbox, the source UIDNEXT of the snapshot the destination has (the same pass as
  // since_modseq): an incremental folder's message below it whose modseq changed existed then,
  // so only its flags changed: it goes as a meta record, and no file is read on either side.
  // (A message given an old UID later, by a restore into the source, then makes the folder
  // unsettled and the next pass sends it complete.)
  const std::map<std::string, uint32_t>* since_uidnext = nullptr;
  // Per mailbox, the UIDVALIDITY of that snapshot: a folder of another UIDVALIDITY now (deleted
  // and re-created at the source since) is not the folder since_modseq speaks of, whatever its
  // modseq, and goes complete. Without it a re-created folder whose modseq happened to equal the
  // settled one was skipped as unchanged, even by the final pass, and the migration ended ok
  // with the old folder at the destination.
  const std::map<std::string, uint32_t>* since_uidvalidity = nullptr;
  // Told, for every folder written (or skipped as unchanged), the modseq, UIDNEXT and
  // UIDVALIDITY its snapshot had.
  std::function<void(const std::string& mailbox, uint64_t modseq, uint32_t uidnext, uint32_t uidvalidity)> on_folder;
  // Folders whose QUERY is sent ahead of their data (pipelining); 0 = the default (32). Each
  // folder's snapshot is taken when its question is asked (at most ~131,072 messages of
  // snapshots are held ahead, whatever this says). 1 = stop-and-wait: each folder's questions
  // are answered right before its data. The stream is never flushed to ask.
  size_t query_ahead = 0;
  // Test hooks: called with a user's name just before its folders are listed, and with a
  // mailbox just before it is opened for its snapshot, so a test can rename at the worst moment.
  std::function<void(const std::string& user)> before_user_listed;
  std::function<void(const std::string& mailbox)> before_folder_opened;
};

struct SessionReport {
  uint64_t users = 0, folders = 0, messages = 0, links = 0;
  uint64_t message_bytes = 0;  // bytes of messages carried (bodies and links)
  uint64_t body_bytes = 0;     // bytes of bodies actually sent (links excluded)
  uint64_t stream_bytes = 0;   // bytes on the wire (after compression)
  uint64_t skipped = 0;        // restore: messages already present
  uint64_t selected_folders = 0;  // restore NAMES: the stream's folders they selected
  uint64_t flags_updated = 0;     // restore: messages already present whose flags it changed
  uint64_t linked = 0;         // restore: messages stored as hard links
  uint64_t held = 0;           // messages sent (backup) or received (restore) as held records
  uint64_t expunged = 0;       // restore --mirror: messages the source no longer has
  uint64_t repaired = 0;       // restore: listed messages whose lost file the stream put back
  uint64_t metas = 0;          // meta records sent / applied (incremental folders)
  int64_t started = 0;         // backup: its start (the stream's `created`), the next dated backup's -d
  bool left_messages_out = false;  // backup: its own errors (not a receiver's): no link of a chain
  // Restore: mailboxes that do not (yet) equal the source: summary differs, or a meta record
  // named a message the destination lacks, or an incremental/unchanged block named a folder it
  // lacks (or holds with another uidvalidity). Without strict_summaries this is not an error:
  // the next pass sends those folders complete. Named as in the stream ("user/U/F" of the
  // source, before any user map), so the sender can drop them from since_modseq.
  std::vector<std::string> unsettled;
  uint64_t errors = 0;
  // The kind of the first error counted: a run that went on past it (restore -c y) exits with
  // its status (a refused moved user is 64, a damaged record 65; helper-72: always 65).
  std::optional<Errc> first_error;
  double seconds = 0;
  std::vector<std::string> error_lines;
  // Restore: what the administrator should know that is no error (a folder renamed at the source
  // of a dated chain), one line each.
  std::vector<std::string> notes;
  std::string Summary(const std::string& verb) const;
  std::string Json(const std::string& verb) const;
};

// Writes the selected part of `store` as a stream of records into `encoder`'s sink. Messages
// whose file no longer matches its recorded digest are reported in `errors` and left out.
SessionReport Backup(store::Store& store, const BackupOptions& options, format::Encoder& encoder);
// What Backup checks first (Selection::RequireEveryNameMatches), for a caller that wants to
// know before it creates its output file.
void CheckBackupSelection(store::Store& store, const BackupOptions& options);

// --- restore -------------------------------------------------------------------------------
struct RestoreOptions {
  bool table_of_contents = false;  // -t: print, write nothing
  bool skip_existing_check = false;  // -i
  bool rename_existing = false;      // -n: restore into NAME.YYYYMMDD when the mailbox exists
  std::string today;                 // -n: the YYYYMMDD of dated names; empty = the current UTC date
  std::map<std::string, std::string> user_map;  // -m old=new
  // restore NAMES (imsrestore's [path]): only the stream's users and mailboxes these select, by
  // their names in the stream (before -m), as backup names select them (user/joe/Sent,
  // user/joe/*, /partition[/group[/user]] with `groups`); empty = everything. Names that select
  // nothing in the whole stream: kNotFound after it is read (nothing was written).
  std::vector<std::string> names;
  std::vector<BackupGroup> groups;
  std::string groups_file;  // where `groups` came from (for the error naming a group it lacks)
  // Bodies of skipped folders kept for later links to them (stream/skipped_contents.h): at most
  // this many bytes, and a quarter of the store's free space. Tests make it small.
  uint64_t skipped_bodies_max_bytes = uint64_t{1} << 30;
  std::string partition;             // destination partition for new users ("" = keep/default)
  bool continue_on_error = false;    // -c y: report a bad folder and go on
  bool live_progress = false;
  // The input's size when known (a regular file), and how much of it is read so far: the live
  // line's ETA. The stream itself announces no totals (docs/administration.md "Progress").
  uint64_t input_total = 0;
  std::function<uint64_t()> input_consumed;
  bool toc_json = false;             // -t --json: JSON Lines instead of text
  relinker::RepositoryOptions repository;
  size_t batch_messages = 512;       // messages per folder commit
  // Told once why a session waits for a user another session or process is writing (each
  // user is written by one session at a time: store::Store::LockUserForWriting).
  std::function<void(const std::string&)> on_wait;
  // A server session's bound on that wait (store::Store::LockWait): after lock_timeout_seconds
  // (0: none), or once lock_cancelled() says so, the restore stops with kTempFail, -c or not.
  int lock_timeout_seconds = 0;
  std::function<bool()> lock_cancelled;
  // With a full (not -d) stream: messages of an existing mailbox that the stream no longer has
  // are expunged, so a second pass makes the destination an exact mirror (migrate catch-up).
  bool mirror = false;
  // A file or pipe from `storemove backup`: a summary in a complete folder's end marks messages
  // its backup left out (docs/stream-format.md, folder-end), not a pass to settle.
  bool left_out_marks = false;
  // Held records ("you hold these bytes") are taken only from a peer that authenticated: a
  // network session sets this; a file or pipe stream of the session kind is refused.
  bool accept_held = false;
  // A user's status travels in the stream, but a restored user is made active (a new one) or
  // keeps its own status (an existing one) unless this is set (restore --keep-status; migrate,
  // whose switch sets statuses explicitly).
  bool keep_status = false;
  // A dated (-d) stream whose mailboxes here lack the earlier part of its chain is restored, but
  // each such mailbox is an error (kNotFound) unless this is set (restore --allow-gap).
  bool allow_gap = false;
  // A folder whose summary differs after applying it is an error (kCorrupt naming the mailbox
  // and what differs) instead of an `unsettled` entry: migrate's final pass, under hold.
  bool strict_summaries = false;
  // Migrate's passes: the user's copy here is kept on `hold` until the switch makes it active
  // (whatever status the stream carries), and only such a copy is mirrored over. A user that
  // exists here in another state is live here (switched by an earlier migration, or another
  // back-end's user of the same id): kExists naming it, before anything of it is written, unless
  // it is in `adopt` (users whose switch an interrupted attempt of this migration had begun:
  // the source never said "moved", so no mail came here). A folder here that holds mail the
  // source does not (its UIDNEXT above the source's) is refused the same way, before it changes.
  // A copy says which source store it is a copy of (UserStatus::origin_store, copy_source here):
  // one another store's migration made is refused as a live user is, held by hand or not (two
  // source stores with the same user ids would otherwise mirror over each other's copies). A
  // user of no origin may be taken over once on hold. Empty copy_source: a client that does not
  // say its store (an older version); such a pass takes any hold.
  bool copy_on_hold = false;
  std::string copy_source;
  std::vector<std::string> copy_users;  // checked by CheckCopiesOnHold before the stream is read
  std::set<std::string> adopt;
};

// With copy_on_hold: refuses (kExists, one line naming the user and what to do) the first of
// options.copy_users that exists in `store` in a state other than hold and is not adopted. A
// server runs it before its READY, so a refused pass has written nothing.
void CheckCopiesOnHold(store::Store& store, const RestoreOptions& options);

// A -m map file (old=new lines, # comments): kInvalidArgument naming the line of a bad user id,
// of a user mapped twice, or of a second user mapped to one name (their mail would merge).
std::map<std::string, std::string> ReadUserMap(const std::string& path);
// The same checks of a map from elsewhere (a network REQUEST's user_map), before anything is
// written: kInvalidArgument "A and B would both be restored as C; ..." or the bad user id.
void CheckUserMap(const std::map<std::string, std::string>& user_map);

// The partition restore puts the destination user `user` on: its own when it exists, else
// options.partition, else `source_partition` when the store has it, else the default.
std::string RestorePartition(store::Store& store, const RestoreOptions& options, const std::string& user,
                             const std::string& source_partition);

// Applies the stream read by `decoder` to `store` (nullptr only with table_of_contents, then
// the listing goes to `toc`).
SessionReport Restore(store::Store* store, format::Decoder& decoder, const RestoreOptions& options,
                      std::ostream* toc = nullptr);

}  // namespace storemove::stream

namespace storemove::stream {

// --- verify ---------------------------------------------------------------------------------
struct VerifyOptions {
  std::vector<std::string> names{"/"};  // selection, as for backup (on the source)
  // 0: every difference is kept (--json, --all-differences). N: of each mailbox's lines about
  // single messages the first N are kept and the rest counted (VerifyReport::left_out), so that
  // memory does not grow with the differences (helper-162: 98 MB for 400,000 of them).
  size_t differences_kept_per_mailbox = 0;
  bool check_bytes = true;              // re-read every destination message and hash it
  size_t reads = 0;                     // message files read at once (0 = kDefaultReads)
  // By default a destination user that is active while the source has it on hold or moved:HOST
  // is what a migration does, not a difference (docs/migration.md); strict compares statuses
  // exactly.
  bool strict_status = false;
  bool live_progress = false;  // a live line on stderr (stream/progress.h)
  // --manifest from a regular file: its size and how much is read, for the ETA.
  uint64_t input_total = 0;
  std::function<uint64_t()> input_consumed;
  // Tests: called with a mailbox once its destination snapshot is taken, before its files are read.
  std::function<void(const std::string& mailbox)> after_destination_snapshot;
  // CompareStores: called with each user of the source before any of its folders is read, and
  // with each user compared whole (every folder the source has; a selection of some of a
  // user's mailboxes proves nothing about the others, so only these may be recorded as
  // verified). Calls, not lists in the report, so that memory does not grow with the users.
  std::function<void(const std::string& user)> before_user;
  std::function<void(const std::string& user)> compared_whole;
  // CompareStores: called with the user of each difference that leaves some of the source's
  // mail unproven at the destination (the user, a mailbox or a message missing there, other
  // bytes, a folder that could not be compared), perhaps more than once per user, and for the
  // byte checks a few users after its own. Not for metadata (flags, dates, statuses, quota) nor
  // for what only the destination has: after a migration's switch the destination is live and
  // those differ anyway.
  std::function<void(const std::string& user)> unproven;
};

struct VerifyReport {
  uint64_t users = 0, folders = 0, messages = 0, bytes = 0;
  std::vector<std::string> differences;  // plain words, one per line
  // For each difference, the mailbox when it is about one message of it ("" for the others).
  std::vector<std::string> difference_mailboxes;
  // Lines about single messages left out per mailbox (VerifyOptions::differences_kept_per_mailbox):
  // how many, and where the last one came (before the kept line `before`, the `order`th line
  // added), for Listing to put the mailbox's count line where the whole list has it.
  struct LeftOut {
    uint64_t count = 0;
    size_t before = 0;
    uint64_t order = 0;
  };
  std::map<std::string, LeftOut> left_out;
  uint64_t left_out_total = 0;
  uint64_t lines_added = 0;
  std::map<std::string, uint64_t> kept_per_mailbox;  // lines about single messages kept, with a cap
  // Adds a difference, `mailbox` when it is about one message of it: with `keep_per_mailbox`
  // (not 0) such a line past that many of its mailbox is counted, not kept.
  void Add(const std::string& line, const std::string& mailbox, size_t keep_per_mailbox);
  // Users compared whose source has them moved (switched): the destination is live for them, and
  // what happened there since (new mail, flags, expunges) shows as differences too.
  uint64_t switched_users = 0;
  bool equal() const { return differences.empty(); }
  uint64_t difference_count() const { return differences.size() + left_out_total; }
  // The differences to print: of those about single messages, the first `per_mailbox` of each
  // mailbox (all when 0), followed by one "... and N more differences in MAILBOX" line after that
  // mailbox's last one: a badly damaged store's thousands of lines do not hide the rest.
  std::vector<std::string> Listing(size_t per_mailbox) const;
  std::string Json() const;
};

// Compares `destination` with `source`: users, statuses, quota limits, subscriptions, folders
// and their metadata, every message's fields, flags and bytes; and, for each user compared, the
// folders (within the selection) that only the destination has. Users only the destination has
// are not differences: a destination may serve other users too. kNotFound when a name selects
// nothing, as for backup.
// kInvalidArgument when the stores are one (their roots the same directory, also through
// a symlink, `a/../a` or a bind mount).
VerifyReport CompareStores(store::Store& destination, store::Store& source, const VerifyOptions& options);
// Refuses (kInvalidArgument "source and destination are the same store: ...") two roots that name
// one directory: a store compared with itself is equal and proves nothing, and its users recorded
// as verified would let `storemove delete` remove their only copy. Callers check before opening
// the second store (Berkeley DB refuses a second handle on one environment with a raw error).
void RefuseSameStore(const std::string& destination_root, const std::string& source_root);
// Compares `destination` with a manifest stream (backup --manifest) of the source: the same
// checks, with the source's side taken from the records, so it works across hosts.
VerifyReport VerifyManifest(store::Store& destination, format::Decoder& manifest, const VerifyOptions& options);

}  // namespace storemove::stream
