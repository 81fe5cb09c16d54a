// Batches, UIDs and the skip of messages already present; the rules are in interop/folder_filler.h.
#include "interop/folder_filler.h"

#include <algorithm>
#include <unordered_map>

#include "util/digest.h"
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
class PresentMessages {
 public:
  explicit PresentMessages(Folder& folder) : folder_(folder) {
    for (const MessageMeta& m : folder.Snapshot().messages) by_digest_[m.digest].push_back({m.uid, m.size});
  }

  // True (and that copy is used up) when the folder holds a message with exactly these bytes: the
  // digest finds candidates, the bytes prove it, so a digest collision can never drop a message.
  bool Take(std::string_view bytes) {
    if (by_digest_.empty()) return false;
    auto it = by_digest_.find(DigestOf(bytes));
    if (it == by_digest_.end()) return false;
    std::vector<Copy>& copies = it->second;
    for (size_t i = 0; i < copies.size(); ++i) {
      if (copies[i].size != bytes.size()) continue;
      UniqueFd fd = folder_.OpenMessageFile(copies[i].uid);
      if (!fd.valid()) continue;  // expunged meanwhile
      std::string stored(bytes.size(), '\0');
      PreadAll(fd.get(), stored.data(), stored.size(), 0, folder_.MessagePath(copies[i].uid));
      if (stored != bytes) continue;
      copies.erase(copies.begin() + static_cast<std::ptrdiff_t>(i));
      if (copies.empty()) by_digest_.erase(it);
      return true;
    }
    return false;
  }

 private:
  struct Copy {
    uint32_t uid;
    uint64_t size;
  };
  Folder& folder_;
  std::unordered_map<Digest, std::vector<Copy>, DigestHash> by_digest_;
};

FolderFiller::FolderFiller(Folder& folder, bool created, bool skip_present) : folder_(folder), created_(created) {
  if (!created && skip_present) present_ = std::make_unique<PresentMessages>(folder);
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
  batch_.push_back(writer->Finish(meta));
  // ArrivalLinker: the one place where a staged message can become a link to identical content.
  // In the batch first, so that the destructor discards it whatever the hook does.
  if (before_commit) before_commit(folder_, batch_.back());
  ++added_;
  added_bytes_ += bytes.size();
  batch_bytes_ += bytes.size();
  if (batch_.size() >= kBatchMessages || batch_bytes_ >= kBatchBytes) {
    CommitBatch();
    if (after_batch) after_batch(added_);
  }
  return true;
}

void FolderFiller::Finish() { CommitBatch(); }

void FolderFiller::CommitBatch() {
  if (batch_.empty()) return;
  folder_.Commit(batch_);
  batch_.clear();
  batch_bytes_ = 0;
}

}  // namespace storemove::interop
