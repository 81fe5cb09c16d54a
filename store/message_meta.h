// MessageMeta: what store.idx keeps of one message (docs/store-format.md §4).
#pragma once

#include <cstdint>
#include <type_traits>

#include "util/digest.h"

namespace storemove::store {

// Per-message fields kept in store.idx.
struct MessageMeta {
  uint32_t uid = 0;             // 0 in a request = assign the next UID
  uint8_t flags = 0;            // SystemFlag bits
  uint64_t user_flags = 0;      // bit i = folder's user_flag_names[i]
  int64_t internal_date = 0;    // IMAP INTERNALDATE, unix seconds
  int64_t sent_date = 0;        // Date: header, unix seconds, 0 if absent/unparseable
  int64_t save_time = 0;        // its first commit (delivery, import), unix seconds; 0 = the commit's time; restore carries it
  uint64_t size = 0;            // bytes of the message file
  uint32_t header_size = 0;     // bytes up to and including the blank line after the header
  Digest digest;                // XXH3-128 of the message bytes
  // The folder's modification sequence when this message was appended or its flags last
  // changed (docs/store-format.md §4.5); set by the store, ignored in requests. 0 = before
  // modseqs existed (an index of format 1.0).
  uint64_t modseq = 0;
  // When this store committed the record, unix seconds: the save time for a delivery or import,
  // the restore's own time for a restored message (which carries its first store's save time).
  // `backup -d` goes by the later of the two, so a message restored into an existing folder after
  // a full backup is in the next dated one. 0 in a request = the commit's time; 0 read from an
  // index written before 2026-12-06 = not recorded (the save time stands in).
  int64_t stored_at = 0;
  friend bool operator==(const MessageMeta&, const MessageMeta&) = default;
};
// A new value for one message's flags (Folder::SetFlags of many).
struct FlagChange {
  uint32_t uid = 0;
  uint8_t flags = 0;
  uint64_t user_flags = 0;
};

// MessageList keeps records in a temporary file as they are in memory.
static_assert(std::is_trivially_copyable_v<MessageMeta>);

}  // namespace storemove::store
