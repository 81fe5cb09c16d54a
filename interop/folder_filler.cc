// Batches, UIDs and the skip of messages already present; the rules are in interop/folder_filler.h.
#include "interop/folder_filler.h"

#include <fcntl.h>

#include <algorithm>
#include <unordered_map>

#include "relinker/relinker.h"
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
    return TakeMatching(DigestOf(bytes), bytes.size(), [&](int fd, const std::string& path) {
      std::string stored(bytes.size(), '\0');
      PreadAll(fd, stored.data(), stored.size(), 0, path);
      return stored == bytes;
    });
  }
  // The same for a staged message, compared file to file.
  bool Take(const store::StagedMessage& staged) {
    if (by_digest_.empty()) return false;
    UniqueFd mine;
    return TakeMatching(staged.meta.digest, staged.meta.size, [&](int fd, const std::string&) {
      if (!mine.valid())
        mine = OpenAt(folder_.dir_fd(), staged.temp_name, O_RDONLY | O_NOFOLLOW, 0, folder_.path() + "/" + staged.temp_name);
      return relinker::SameContent(mine.get(), fd);
    });
  }

 private:
  template <typename Same>
  bool TakeMatching(const Digest& digest, uint64_t size, Same same) {
    auto it = by_digest_.find(digest);
    if (it == by_digest_.end()) return false;
    std::vector<Copy>& copies = it->second;
    for (size_t i = 0; i < copies.size(); ++i) {
      if (copies[i].size != size) continue;
      UniqueFd fd = folder_.OpenMessageFile(copies[i].uid);
      if (!fd.valid()) continue;  // expunged meanwhile
      if (!same(fd.get(), folder_.MessagePath(copies[i].uid))) continue;
      copies.erase(copies.begin() + static_cast<std::ptrdiff_t>(i));
      if (copies.empty()) by_digest_.erase(it);
      return true;
    }
    return false;
  }

  struct Copy {
    uint32_t uid;
    uint64_t size;
  };
  Folder& folder_;
  std::unordered_map<Digest, std::vector<Copy>, DigestHash> by_digest_;
};

FolderFiller::FolderFiller(Folder& folder, bool created, bool skip_present, bool keep_uids)
    : folder_(folder), created_(created), keep_uids_(keep_uids) {
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
