// Fills one folder with imported messages, in batches, the way every bulk import of interop/
// does it (docs/store-format.md §6.10):
//  * a folder the import created unpublished (Store::CreateUnpublishedFolder) takes each message
//    under the UID the caller gives (0 = the next after the last one given), straight to its final
//    name; the caller publishes the folder after Finish();
//  * an existing folder takes the next UIDs, and a message whose exact bytes the folder already
//    held before the import is skipped, as many times as the folder holds it (a rerun adds only
//    what is missing), unless skipping is turned off (imsimport's --append-all);
//  * messages become visible in batches (one lock, one store.idx append, one quota update each);
//    staged messages not committed are discarded when the filler is destroyed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "store/store.h"

namespace storemove::interop {

class PresentMessages;

class FolderFiller {
 public:
  // `created`: the folder is new and unpublished. `skip_present` only matters for an existing one.
  // `keep_uids`: an existing folder takes messages under the UIDs the caller gives (moveuser, when
  // the source's UIDVALIDITY is the folder's: the same UID is the same message).
  // `present_in_memory`: an existing folder holding more messages than this has the table of
  // what it holds in a temporary file in $TMPDIR (72 to 136 bytes a message).
  static constexpr size_t kPresentInMemory = 16384;
  FolderFiller(store::Folder& folder, bool created, bool skip_present, bool keep_uids = false,
               size_t present_in_memory = kPresentInMemory);
  ~FolderFiller();
  FolderFiller(const FolderFiller&) = delete;
  FolderFiller& operator=(const FolderFiller&) = delete;

  // After each full batch is committed (not the last, partial one Finish() commits), with the
  // messages added so far: a test seam, the kill tests stop the import there.
  std::function<void(uint64_t added)> after_batch;
  // Called with each message as soon as it is staged (in the batch, before the batch is
  // committed); it may replace the staged message: single instance on arrival goes here, for
  // every bulk import at once: `staged = linker.Arrived(folder, staged)` (relinker/arrival.h).
  std::function<void(store::Folder&, store::StagedMessage&)> before_commit;

  // Adds one message (meta: flags, user flags, dates; uid only for a created folder). False when
  // it was skipped as already present.
  bool Add(std::string_view bytes, store::MessageMeta meta);
  // The same for a message the caller has already written and staged (Folder::NewMessage, e.g.
  // streamed from a socket): a copy of bytes the folder held is compared file to file and
  // discarded. False when it was skipped as already present.
  bool AddStaged(store::StagedMessage staged);
  // Starts a message too large to hold, to be written by the caller and then passed to
  // AddStaged with meta.uid = *uid: in a created folder it takes the UID *uid (0: the next after
  // the last one given; *uid is set to it) and is written straight to its final name; elsewhere
  // *uid becomes 0 (unless keep_uids).
  std::unique_ptr<store::MessageWriter> NewMessage(uint32_t* uid);
  // Commits what is still staged.
  void Finish();

  uint64_t added() const { return added_; }
  uint64_t added_bytes() const { return added_bytes_; }
  // Of added(), what is committed (the folder's index lists it): after a failure, what a caller
  // may count as stored (a created folder's only once it is published).
  uint64_t committed() const { return committed_; }
  uint64_t committed_bytes() const { return committed_bytes_; }
  uint64_t skipped() const { return skipped_; }
  // Of added(), the messages of 0 bytes: kept (a source's empty message is really there), but
  // counted, so an import can say so instead of storing them silently.
  uint64_t added_empty() const { return added_empty_; }

 private:
  void CommitBatch();
  void Stage(store::StagedMessage staged);
  store::Folder& folder_;
  bool created_;
  bool keep_uids_;
  std::unique_ptr<PresentMessages> present_;
  std::vector<store::StagedMessage> batch_;
  uint64_t batch_bytes_ = 0;
  uint32_t next_uid_ = 1;
  uint64_t added_ = 0, added_bytes_ = 0, skipped_ = 0, added_empty_ = 0;
  uint64_t committed_ = 0, committed_bytes_ = 0;
};

}  // namespace storemove::interop
