// The bodies of messages a restore skips (-c y: a folder that failed, a user refused as moved
// here), kept for links of later folders that name them. A stream sends each content once and
// links every later copy to it, so another user's copy of a message first sent in a skipped
// folder was lost with that folder, and no rerun could restore it while the folder's user stayed
// skipped (helper-78). The bodies go to one unnamed temporary file (O_TMPFILE) on the store's
// filesystem, which disappears when the restore ends however it ends (kill -9 included).
// Bounded: only the contents a link may still name (format::kLinkCheckWindow) are kept, and at
// most max_bytes of them: the oldest go first, their blocks given back (FALLOC_FL_PUNCH_HOLE).
// A body larger than max_bytes is not kept; a link to what is not kept is reported as before.
// restore NAMES uses it too: the folders not selected are skipped the same way.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

#include "store/store.h"
#include "util/fs.h"

namespace storemove::stream {

class SkippedContents {
 public:
  struct Range {
    uint64_t offset = 0, size = 0;
  };

  // `dir`: where the temporary file is made (the store's root: its filesystem), once needed.
  SkippedContents(std::string dir, uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}

  // A skipped message record (content id, size as the record says), then its body, then its end.
  // A message whose body does not all arrive (Append without Begin, End of another) is not kept.
  void Begin(uint64_t content_id, uint64_t size);
  void Append(std::string_view bytes);
  void End();

  // The kept body of a content id; nullopt when it was not kept (or is too old to be linked).
  std::optional<Range> Find(uint64_t content_id) const;
  // Writes a kept body into `writer`.
  void CopyTo(const Range& range, store::MessageWriter& writer) const;
  // Whether the open file `fd` holds exactly the kept body.
  bool SameAs(int fd, const Range& range) const;
  // Contents kept so far (for the report and the tests).
  uint64_t kept() const { return kept_; }
  // Bodies not kept, or let go before their content ids left the link window, for want of room
  // (max_bytes, or a write that failed): a link to one of them is then not restored.
  uint64_t dropped_for_room() const { return dropped_for_room_; }
  // The bound in effect (max_bytes, lowered to a quarter of the free space once the file is made).
  uint64_t max_bytes() const { return max_bytes_; }

 private:
  struct Entry {
    uint64_t content_id;
    Range range;
  };
  bool Open();
  void Forget();  // the oldest entry, its blocks given back

  std::string dir_;
  uint64_t max_bytes_;
  UniqueFd file_;
  bool unusable_ = false;  // no temporary file could be made, or a write failed: nothing more kept
  uint64_t end_ = 0;       // the file's size (sparse: forgotten bodies are holes)
  uint64_t live_ = 0;      // bytes of the bodies kept
  std::optional<Entry> current_;
  std::deque<Entry> entries_;  // in content-id order
  uint64_t kept_ = 0;
  uint64_t dropped_for_room_ = 0;
};

}  // namespace storemove::stream
