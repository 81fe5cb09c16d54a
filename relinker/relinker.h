// Single-instance storage: proving bytes equal, the per-partition digest repository
// (partition/<p>/=digest, docs/store-format.md §7), and linking identical content.
//
// XXH3-128 is not collision-resistant and mail content is chosen by strangers, so nothing here
// links two files on a digest match alone: the bytes are compared first (or the files are
// already the same inode).
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "store/repository_layout.h"
#include "store/store.h"
#include "util/digest.h"
#include "util/fs.h"

namespace storemove::relinker {

// True when both files hold exactly the same bytes (sizes first, then content in blocks).
bool SameContent(int fd_a, int fd_b);
bool SameContent(const std::string& path_a, const std::string& path_b);

// Compares bytes arriving in chunks (a restore's body records) with an existing file, so that
// identical content is linked without writing it. Once a chunk differs, the caller copies the
// matched prefix from file() and writes the rest itself.
class IncomingMatcher {
 public:
  IncomingMatcher(UniqueFd existing, uint64_t expected_size);
  // Returns false from the first chunk that differs (or overruns the file) on.
  bool Feed(const void* data, size_t size);
  bool mismatched() const { return mismatched_; }
  uint64_t matched_bytes() const { return matched_; }  // equal prefix length
  int file() const { return fd_.get(); }
  // All bytes fed were equal and their count equals the file's size.
  bool CompleteMatch() const { return !mismatched_ && matched_ == size_; }

 private:
  UniqueFd fd_;
  uint64_t size_;
  uint64_t matched_ = 0;
  bool mismatched_ = false;
  std::string buf_;
};

struct RepositoryOptions {
  // Treat files with this many links as full (EMLINK) — 0 = only the filesystem's limit. Tests
  // use a small cap to exercise the copy-on-full path that ext4's 65,000 limit triggers.
  uint64_t max_links = 0;
  // Tests: called in LinkToEntry between the link under a temporary name and its rename, where a
  // kill leaves the temporary; a throw from it stands for the kill.
  std::function<void()> before_link_rename;
};

// The digest repository of one partition, flat or nested (store/repository_layout.h), as the
// partition's marker says when it is constructed.
class Repository {
 public:
  explicit Repository(std::string partition_dir, RepositoryOptions options = {});
  std::string EntryPath(const Digest& digest) const;
  // The directories that hold entries: =digest/<h1> (flat) or =digest/<h1>/<h2> (nested), as they
  // exist now. For walks over every entry (relink's count and purge).
  std::vector<std::string> BucketDirectories() const;
  // No entry yet (a fresh destination): only the marker, or no =digest at all.
  bool Empty() const;
  store::RepositoryLayout layout() const { return layout_; }
  // Opens the entry for `digest` when it exists and has `size` bytes; invalid fd otherwise.
  UniqueFd OpenEntry(const Digest& digest, uint64_t size) const;
  // Makes `file` the entry for `digest` unless one exists; true when `file` became the entry.
  // The caller guarantees the digest.
  bool AddIfMissing(const Digest& digest, const std::string& file);
  // The same for the file `name` in the directory `dirfd` (`shown` names it in errors): a
  // restore's case, one linkat(2) between two open directories instead of two walks from the
  // store root. A flat repository keeps its bucket directories open (at most 256 descriptors)
  // for the Repository's life, when the open-file limit leaves room for them (1,024 or more);
  // under a lower one each call opens its bucket and closes it again. One caller at a time.
  bool AddIfMissing(const Digest& digest, int dirfd, const std::string& name, const std::string& shown);
  // Makes the message file `name` in the directory `dirfd` (`shown` names it in errors), proven to
  // hold the same bytes as the open entry `entry` of `digest`, a link to that entry: a restore that
  // wrote a content while another session, at the same time, made its own copy the entry. The
  // link is made under a temporary name in `folder_dirfd`, the folder directory, where the sweeps
  // of a killed writer's files look (helper-134: one left in a bucket directory stayed for ever).
  // The caller holds the file's folder for writing, so the exchange is a plain rename(2). False (the
  // file stays as it is) when it is already the entry's inode, the entry is full (EMLINK or the
  // test cap), or the entry's name was given to another file since `entry` was opened.
  bool LinkToEntry(const Digest& digest, int entry, int folder_dirfd, int dirfd, const std::string& name,
                   const std::string& shown) const;
  // Replaces the entry (used when the old one reached its link limit).
  void Replace(const Digest& digest, const std::string& file);
  // Links `existing` (an entry or another message with proven-equal content) into the folder
  // as a staged message; nullopt when the file is full (EMLINK or the test cap) or on another
  // filesystem, and the caller must write a copy.
  std::optional<store::StagedMessage> StageLink(store::Folder& folder, const std::string& existing,
                                                const store::MessageMeta& meta) const;
  const std::string& root() const { return root_; }

 private:
  std::string root_;  // partition_dir + "/=digest"
  RepositoryOptions options_;
  store::RepositoryLayout layout_;
  std::vector<UniqueFd> bucket_fds_;  // flat layout: =digest/<h1> by its first digest byte, opened on first use
  bool keep_buckets_open_ = true;     // decided with bucket_fds_' first use, by the open-file limit
};

}  // namespace storemove::relinker
