// The relink pass (Sun's `relinker`): makes every copy of the same message content in a
// partition one inode, through the partition's digest repository (=digest). docs/relinker.md
// describes the rules; in short: bytes are proven equal before any link (same inode, or
// compared), a visible message file is replaced atomically and only while it still exists, and
// a full repository entry (link count limit) is replaced by the current file.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "store/stale_temporaries.h"
#include "store/store.h"
#include "util/digest.h"

namespace storemove::relinker {

struct RelinkOptions {
  std::string partition;  // empty = every partition
  uint64_t min_size = 0;  // bytes; smaller messages are left alone (Sun's minsize, given in KB)
  bool purge = false;     // -d: remove repository entries that no message links to any more
  // Treat an inode with this many links as full, as the filesystem's limit (EMLINK) would;
  // 0 = only the filesystem's limit. Lets tests exercise ext4's 65,000 limit cheaply.
  uint64_t max_links = 0;
  size_t reads = 0;  // message files examined at once (0 = 16)
  // Temporary files a killed writer left in folders and in =digest are removed once at least
  // this old and their writer's process is gone (store/stale_temporaries.h).
  std::chrono::seconds stale_after = store::kStaleTemporaryAge;
  // Test hook: maps each message's digest before grouping and naming repository entries, so a
  // test can force different contents to share a digest. Empty = the digest of store.idx.
  std::function<Digest(const Digest&)> digest_override;
  // Test hook: called with a message file's path just before it is swapped for a link, so a
  // test can expunge the message at the worst moment.
  std::function<void(const std::string&)> before_exchange;
  // Progress, for a live line: on_pass when one of a partition's three passes over its messages
  // starts ("PARTITION survey 1/3", "... link 2/3", "... survey 3/3", with the messages and bytes
  // its store.idx files count), on_message after each message a pass visited.
  std::function<void(const std::string& pass, uint64_t messages, uint64_t bytes)> on_pass;
  std::function<void(uint64_t bytes)> on_message;
  // Test hook: values a survey keeps in memory before it spools them to $TMPDIR (0 = 64 Ki).
  size_t survey_values_in_memory = 0;
};

// What the partition(s) looked like: the rows of Sun's before/after table.
struct Usage {
  uint64_t messages = 0;           // Total messages (records whose file exists)
  uint64_t unique = 0;             // Unique messages: distinct (digest, size)
  uint64_t repository = 0;         // Message digests in repository: entries in =digest
  uint64_t bytes = 0;              // sum of the sizes of all message files, each copy counted
  uint64_t space_used = 0;         // sum of the sizes of their distinct inodes
  uint64_t savings() const { return bytes - space_used; }  // Space savings from single-copy
};

struct RelinkStats {
  Usage before, after;
  uint64_t linked = 0;            // message files replaced by a link to identical content
  uint64_t entries_added = 0;     // message files that became a repository entry
  uint64_t entries_replaced = 0;  // entries replaced by a new copy because the old one was full
  uint64_t collisions = 0;        // messages whose digest matched other bytes: never linked to them
  uint64_t too_small = 0;         // messages below min_size, left alone
  uint64_t vanished = 0;          // messages expunged while the pass ran
  uint64_t purged = 0;            // repository entries removed (-d)
  uint64_t stale_removed = 0;     // temporary files of killed writers removed
  // Messages left unlinked because a link would change their owner or mode, or another's (one
  // made 0644 by hand, another user's: store/message_owner.h).
  uint64_t owner_or_mode = 0;
  uint64_t damaged_entries = 0;   // entries whose bytes were not their digest's, replaced by a good copy
  // Message files whose bytes are not their record's digest, or of another size (damage): never
  // linked to (one this pass had made an entry, unhashed, is named when a good copy replaces it).
  uint64_t damaged_messages = 0;
  std::vector<std::string> damaged_named;  // "user/joe/INBOX UID 3 (PATH)", the first kDamagedNamed
  static constexpr size_t kDamagedNamed = 20;
  // Other names of damaged entries replaced: messages an earlier pass linked to those bytes, or
  // a killed writer's temporaries (verify against the source names any message among them).
  uint64_t damaged_entry_links = 0;
};

// Runs the pass over one partition or all of them. Safe while deliveries, expunges and
// restores run (docs/relinker.md, "Replacing a visible message file"), except that `purge`
// may remove an entry a concurrent restore is about to link to. kNotFound: unknown partition.
RelinkStats Relink(store::Store& store, const RelinkOptions& options);

// Sun's table: the five rows, "before" and "after" columns, then one line of counters.
std::string FormatRelinkTable(const RelinkStats& stats);

}  // namespace storemove::relinker
