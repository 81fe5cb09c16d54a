// Batches, UIDs and the skip of messages already present; the rules are in interop/folder_filler.h.
#include "interop/folder_filler.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <unordered_map>

#include "relinker/relinker.h"
#include "util/digest.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::interop {

using store::Folder;
using store::MessageMeta;

namespace {
// One lock, one store.idx append and one quota update per batch.
constexpr size_t kBatchMessages = 256;
constexpr uint64_t kBatchBytes = 8 << 20;
}  // namespace

// The messages a folder held before this import, by content: what a rerun must not add again.
// Up to `in_memory_limit` of them in a hash map; more in an open-addressing hash table in an
// unlinked temporary file, read with pread: memory stays the same whatever the folder holds
// (helper-133: the map held ~105 bytes a message, 115 MB for a folder of 1,000,000).
class PresentMessages {
 public:
  PresentMessages(Folder& folder, size_t in_memory_limit) : folder_(folder) {
    const store::FolderSnapshot snapshot = folder.Snapshot();
    if (snapshot.messages.size() <= in_memory_limit) {
      for (const MessageMeta& m : snapshot.messages) by_digest_[m.digest].push_back({m.uid, m.size});
      remaining_ = snapshot.messages.size();
    } else {
      BuildTable(snapshot.messages);
    }
  }

  // True (and that copy is used up) when the folder holds a message with exactly these bytes: the
  // digest finds candidates, the bytes prove it, so a digest collision can never drop a message.
  bool Take(std::string_view bytes) {
    if (remaining_ == 0) return false;
    return TakeMatching(DigestOf(bytes), bytes.size(), [&](int fd, const std::string& path) {
      std::string stored(bytes.size(), '\0');
      PreadAll(fd, stored.data(), stored.size(), 0, path);
      return stored == bytes;
    });
  }
  // The same for a staged message, compared file to file.
  bool Take(const store::StagedMessage& staged) {
    if (remaining_ == 0) return false;
    UniqueFd mine;
    return TakeMatching(staged.meta.digest, staged.meta.size, [&](int fd, const std::string&) {
      if (!mine.valid())
        mine = OpenAt(folder_.dir_fd(), staged.temp_name, O_RDONLY | O_NOFOLLOW, 0, folder_.path() + "/" + staged.temp_name);
      return relinker::SameContent(mine.get(), fd);
    });
  }

 private:
  // The table file: `slots_` slots, one per distinct (digest, size), all zero (kEmpty) until one
  // is put there; then the copies, one node each, each slot's in a list from `head`. One slot per
  // content, not per copy: K copies of one message in consecutive slots cost K^2/16 reads to
  // build and again to take (helper-139: 106 s for 32,768 copies). A copy taken is unlinked.
  struct Slot {
    Digest digest;
    uint64_t size;
    uint32_t head;  // first node of its copies not taken; kNoNode when all are
    uint32_t state;
  };
  struct Node {
    uint32_t uid;
    uint32_t next;
  };
  static_assert(sizeof(Slot) == 32 && sizeof(Node) == 8);
  enum : uint32_t { kEmpty = 0, kPresent = 1 };
  static constexpr uint32_t kNoNode = ~uint32_t{0};
  static constexpr size_t kSlotsPerRead = 16;

  // Whether the copy `uid` of `size` bytes is the message `same` compares with.
  template <typename Same>
  bool Matches(uint32_t uid, uint64_t size, uint64_t wanted_size, Same& same) {
    if (size != wanted_size) return false;
    UniqueFd fd = folder_.OpenMessageFile(uid);
    if (!fd.valid()) return false;  // expunged meanwhile
    return same(fd.get(), folder_.MessagePath(uid));
  }

  template <typename Same>
  bool TakeMatching(const Digest& digest, uint64_t size, Same same) {
    if (table_.valid()) return TakeFromTable(digest, size, same);
    auto it = by_digest_.find(digest);
    if (it == by_digest_.end()) return false;
    std::vector<Copy>& copies = it->second;
    for (size_t i = 0; i < copies.size(); ++i) {
      if (!Matches(copies[i].uid, copies[i].size, size, same)) continue;
      copies.erase(copies.begin() + static_cast<std::ptrdiff_t>(i));
      if (copies.empty()) by_digest_.erase(it);
      --remaining_;
      return true;
    }
    return false;
  }

  // At least twice as many slots as messages (a power of two), so that every probe meets an
  // empty one: 2 to 4 slots, 64 to 128 bytes, a message, and 8 bytes a node.
  void BuildTable(const store::MessageList& messages) {
    std::string dir;
    table_ = OpenAnonymousTemporary(&dir);
    table_name_ = folder_.path() + ": the table of the " + std::to_string(messages.size()) +
                  " messages it held before the import, in a temporary file in " + dir + " (TMPDIR)";
    if (!table_.valid()) ThrowErrno(table_name_);
    slots_ = 1;
    while (slots_ < 2 * messages.size()) slots_ *= 2;
    if (::ftruncate(table_.get(), static_cast<off_t>(slots_ * sizeof(Slot))) != 0) ThrowErrno(table_name_);
    uint32_t nodes = 0;
    for (const MessageMeta& m : messages) {
      Probe(m.digest, [&](size_t index, Slot& found) {
        if (found.state != kEmpty && (found.digest != m.digest || found.size != m.size)) return false;
        if (found.state == kEmpty) found = Slot{.digest = m.digest, .size = m.size, .head = kNoNode, .state = kPresent};
        const Node node{.uid = m.uid, .next = found.head};
        PwriteAll(table_.get(), &node, sizeof node, NodeOffset(nodes), table_name_);
        found.head = nodes++;
        PwriteAll(table_.get(), &found, sizeof found, SlotOffset(index), table_name_);
        return true;
      });
      ++remaining_;
    }
  }

  // Takes the first copy of the content's list whose bytes `same` proves equal.
  template <typename Same>
  bool TakeFromTable(const Digest& digest, uint64_t size, Same& same) {
    bool taken = false;
    Probe(digest, [&](size_t index, Slot& found) {
      if (found.state == kEmpty) return true;  // the end of this digest's run: not there
      if (found.digest != digest || found.size != size) return false;
      uint32_t previous = kNoNode;
      for (uint32_t at = found.head; at != kNoNode;) {
        Node node;
        PreadAll(table_.get(), &node, sizeof node, NodeOffset(at), table_name_);
        if (Matches(node.uid, size, size, same)) {
          if (previous == kNoNode) {
            found.head = node.next;
            PwriteAll(table_.get(), &found, sizeof found, SlotOffset(index), table_name_);
          } else {
            PwriteAll(table_.get(), &node.next, sizeof node.next, NodeOffset(previous) + offsetof(Node, next),
                      table_name_);
          }
          --remaining_;
          taken = true;
          break;
        }
        previous = at;
        at = node.next;
      }
      return true;  // one slot per content
    });
    return taken;
  }

  off_t SlotOffset(size_t index) const { return static_cast<off_t>(index * sizeof(Slot)); }
  off_t NodeOffset(uint32_t node) const { return static_cast<off_t>(slots_ * sizeof(Slot) + node * sizeof(Node)); }

  // Calls `visit` with the slots from the digest's own on, wrapping, until it returns true.
  template <typename Visit>
  void Probe(const Digest& digest, Visit visit) {
    size_t index = DigestHash()(digest) & (slots_ - 1);
    Slot group[kSlotsPerRead];
    for (;;) {
      const size_t n = std::min(kSlotsPerRead, slots_ - index);
      PreadAll(table_.get(), group, n * sizeof(Slot), SlotOffset(index), table_name_);
      for (size_t k = 0; k < n; ++k)
        if (visit(index + k, group[k])) return;
      index = (index + n) & (slots_ - 1);
    }
  }

  struct Copy {
    uint32_t uid;
    uint64_t size;
  };
  Folder& folder_;
  uint64_t remaining_ = 0;  // copies not taken yet
  std::unordered_map<Digest, std::vector<Copy>, DigestHash> by_digest_;
  UniqueFd table_;
  std::string table_name_;
  size_t slots_ = 0;
};

FolderFiller::FolderFiller(Folder& folder, bool created, bool skip_present, bool keep_uids,
                           size_t present_in_memory)
    : folder_(folder), created_(created), keep_uids_(keep_uids) {
  if (!created && skip_present) present_ = std::make_unique<PresentMessages>(folder, present_in_memory);
}

FolderFiller::~FolderFiller() {
  if (!batch_.empty()) folder_.Discard(batch_);
}

bool FolderFiller::Add(std::string_view bytes, MessageMeta meta) {
  if (present_ && present_->Take(bytes)) {
    ++skipped_;
    return false;
  }
  if (created_) {
    if (meta.uid == 0) meta.uid = next_uid_;
    next_uid_ = std::max(next_uid_, meta.uid + 1);
  } else {
    meta.uid = 0;
  }
  std::unique_ptr<store::MessageWriter> writer = created_ ? folder_.NewMessage(meta.uid) : folder_.NewMessage();
  writer->Write(bytes);
  Stage(writer->Finish(meta));
  return true;
}

std::unique_ptr<store::MessageWriter> FolderFiller::NewMessage(uint32_t* uid) {
  if (!created_) {
    if (!keep_uids_) *uid = 0;
    return folder_.NewMessage();
  }
  if (*uid == 0) *uid = next_uid_;
  return folder_.NewMessage(*uid);
}

bool FolderFiller::AddStaged(store::StagedMessage staged) {
  if (present_ && present_->Take(staged)) {
    std::vector<store::StagedMessage> one{std::move(staged)};
    folder_.Discard(one);
    ++skipped_;
    return false;
  }
  if (!created_ && !keep_uids_) staged.meta.uid = 0;
  if (staged.meta.uid != 0) next_uid_ = std::max(next_uid_, staged.meta.uid + 1);
  Stage(std::move(staged));
  return true;
}

void FolderFiller::Stage(store::StagedMessage staged) {
  const uint64_t size = staged.meta.size;
  batch_.push_back(std::move(staged));
  // ArrivalLinker: the one place where a staged message can become a link to identical content.
  // In the batch first, so that the destructor discards it whatever the hook does.
  if (before_commit) before_commit(folder_, batch_.back());
  ++added_;
  added_empty_ += size == 0;
  added_bytes_ += size;
  batch_bytes_ += size;
  if (batch_.size() >= kBatchMessages || batch_bytes_ >= kBatchBytes) {
    CommitBatch();
    if (after_batch) after_batch(added_);
  }
}

void FolderFiller::Finish() { CommitBatch(); }

void FolderFiller::CommitBatch() {
  if (batch_.empty()) return;
  const size_t count = batch_.size();  // Commit may take the staged messages out of the batch
  folder_.Commit(batch_);
  committed_ += count;
  committed_bytes_ += batch_bytes_;
  batch_.clear();
  batch_bytes_ = 0;
}

}  // namespace storemove::interop
