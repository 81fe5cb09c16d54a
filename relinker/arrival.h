// Single instance on arrival (Sun's local.store.relinker.enabled; docs/relinker.md "On arrival"):
// a writer hands each staged message to Arrived() before Folder::Commit, and identical content is
// linked through the partition's repository as it comes in instead of by a later relink pass.
//
//   relinker::ArrivalLinker linker(store);            // reads STORE/config/store.conf once
//   batch.push_back(writer->Finish(meta));
//   batch.back() = linker.Arrived(*folder, batch.back());
//   ...
//   folder->Commit(batch);
// or, for a writer with a before-commit hook (FolderFiller): options.before_commit = linker.Hook();
//
// With the setting off (the default) Arrived returns its argument and costs nothing. On:
//  * no repository entry for the message's digest: the staged file becomes the entry (one
//    link(2); the message is not read again), so the next identical arrival links to it;
//  * an entry of that digest and size: its bytes and the staged file's are compared
//    (SameContent); equal -> a hard link to the entry is staged instead and the staged copy
//    unlinked; different (a digest collision) -> the copy is kept. Never a link on a digest
//    match alone;
//  * the entry is full (EMLINK): the staged copy is kept and becomes the new entry, as restore
//    and relink do.
// Whatever happens, what is returned is a staged message of exactly the bytes given, ready for
// Commit (or Discard). An entry added for a message that is then discarded (deliver's user on
// hold, a killed run) stays in the repository with one link: an identical later arrival links
// to it, and `relink -d` purges it.
//
// Arrived may be called from several threads at once (moveuser --jobs), for any folders of the
// store. The staged message must come from MessageWriter::Finish (or carry the digest and size
// of its file's bytes) and be in `folder`.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "relinker/relinker.h"
#include "store/settings.h"
#include "store/store.h"

namespace storemove::relinker {

struct ArrivalCounters {
  uint64_t linked = 0;            // staged copies replaced by a link to an equal entry
  uint64_t bytes_saved = 0;       // their bytes
  uint64_t entries_added = 0;     // staged files that became the repository entry
  uint64_t entries_replaced = 0;  // ... in place of a full one (EMLINK)
  uint64_t collisions = 0;        // an entry of the digest with other bytes or size (or one that changed
                                  // under us twice): the copy is kept
  uint64_t below_minsize = 0;     // smaller than local.store.relinker.minsize: left alone
  // "linked 3 (12,345 bytes saved), repository entries added 5, replaced 0, collisions 0,
  // below minsize 2"
  std::string ToString() const;
};

class ArrivalLinker {
 public:
  // Reads the store's settings (store::ReadSettings) once.
  explicit ArrivalLinker(store::Store& store, RepositoryOptions repository = {});
  ArrivalLinker(store::Store& store, const store::Settings& settings, RepositoryOptions repository = {});
  ArrivalLinker(const ArrivalLinker&) = delete;
  ArrivalLinker& operator=(const ArrivalLinker&) = delete;

  bool enabled() const { return enabled_; }
  // See above: the message to commit in place of `staged` (a copy of it when nothing is linked;
  // when a link is returned, the file of `staged` is gone). When it throws, `staged` is as it
  // was: still the caller's to commit (as a plain copy) or discard.
  store::StagedMessage Arrived(store::Folder& folder, const store::StagedMessage& staged);
  ArrivalCounters counters() const;
  // For the writers that take a hook (interop::FolderFiller::before_commit, ImportOptions,
  // MaildirImportOptions, moveuser's on_arrival): `options.before_commit = linker.Hook();`
  // replaces each staged message by Arrived's result. Empty when the setting is off, so an
  // import without it pays nothing. The linker must outlive the hook.
  std::function<void(store::Folder&, store::StagedMessage&)> Hook();

 private:
  store::Store& store_;
  bool enabled_ = false;
  uint64_t min_bytes_ = 0;
  RepositoryOptions repository_options_;
  std::string partitions_prefix_;                // STORE/partition/
  // By partition name; no entry is added or removed after construction, so threads share it
  // (Repository keeps no state of its own beyond its path).
  std::map<std::string, Repository> repositories_;
  std::atomic<uint64_t> linked_{0}, bytes_saved_{0}, entries_added_{0}, entries_replaced_{0}, collisions_{0},
      below_minsize_{0};
};

}  // namespace storemove::relinker
