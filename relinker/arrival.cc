#include "relinker/arrival.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>

#include "util/error.h"
#include "util/fs.h"

namespace storemove::relinker {

std::string ArrivalCounters::ToString() const {
  return "linked " + std::to_string(linked) + " (" + std::to_string(bytes_saved) +
         " bytes saved), repository entries added " + std::to_string(entries_added) + ", replaced " +
         std::to_string(entries_replaced) + ", collisions " + std::to_string(collisions) + ", below minsize " +
         std::to_string(below_minsize);
}

ArrivalLinker::ArrivalLinker(store::Store& store, RepositoryOptions repository)
    : ArrivalLinker(store, store::ReadSettings(store), repository) {}

ArrivalLinker::ArrivalLinker(store::Store& store, const store::Settings& settings, RepositoryOptions repository)
    : store_(store),
      enabled_(settings.relinker_enabled),
      min_bytes_(settings.relinker_min_bytes()),
      repository_options_(repository),
      partitions_prefix_(store.root() + "/partition/") {
  if (!enabled_) return;
  for (const std::string& p : store.Partitions())
    repositories_.emplace(p, Repository(store.PartitionPath(p), repository_options_));
}

ArrivalCounters ArrivalLinker::counters() const {
  return {linked_.load(), bytes_saved_.load(), entries_added_.load(), entries_replaced_.load(), collisions_.load(),
          below_minsize_.load()};
}

std::function<void(store::Folder&, store::StagedMessage&)> ArrivalLinker::Hook() {
  if (!enabled_) return {};
  return [this](store::Folder& folder, store::StagedMessage& staged) { staged = Arrived(folder, staged); };
}

store::StagedMessage ArrivalLinker::Arrived(store::Folder& folder, const store::StagedMessage& staged) {
  if (!enabled_) return staged;
  const uint64_t size = staged.meta.size;
  if (size < min_bytes_) {
    ++below_minsize_;
    return staged;
  }
  // The folder's partition: its path is STORE/partition/<name>/=user/...
  const std::string& path = folder.path();
  if (path.compare(0, partitions_prefix_.size(), partitions_prefix_) != 0)
    Throw(Errc::kInvalidArgument, "folder " + path + " is not in the store at " + store_.root());
  const size_t end = path.find('/', partitions_prefix_.size());
  const std::string partition = path.substr(partitions_prefix_.size(), end - partitions_prefix_.size());
  std::optional<Repository> added_later;  // a partition made after this linker (storemove init)
  auto known = repositories_.find(partition);
  Repository& repo = known != repositories_.end()
                               ? known->second
                               : added_later.emplace(store_.PartitionPath(partition), repository_options_);

  const Digest& digest = staged.meta.digest;
  const std::string staged_path = path + "/" + staged.temp_name;
  // Twice at most: when the entry is added or replaced by someone else between the lookup and
  // our link (an identical message arriving for another user at the same instant), look again.
  for (int attempt = 0; attempt < 2; ++attempt) {
    UniqueFd entry = repo.OpenEntry(digest, size);
    if (!entry.valid()) {
      // No entry of this size: the staged file becomes it. false: one appeared meanwhile, or an
      // entry of another size holds the name (a collision), or it is full.
      if (repo.AddIfMissing(digest, staged_path)) {
        ++entries_added_;
        return staged;
      }
      continue;
    }
    UniqueFd mine = OpenAt(folder.dir_fd(), staged.temp_name, O_RDONLY, 0, staged_path);
    struct stat proven, own;
    if (::fstat(entry.get(), &proven) != 0) ThrowErrno("stat " + repo.EntryPath(digest));
    if (::fstat(mine.get(), &own) != 0) ThrowErrno("stat " + staged_path);
    if (proven.st_ino == own.st_ino && proven.st_dev == own.st_dev) return staged;  // staged as a link already
    // The proof: a digest and size match only nominates the entry.
    if (!SameContent(entry.get(), mine.get())) {
      ++collisions_;
      return staged;
    }
    // A writer that promises durability (deliver) must not commit a link to bytes that another
    // writer (an import or restore still running) has not synced yet. fdatasync: the entry's
    // data is what matters, and an entry already on disk (the usual case) then costs no write,
    // although its link count changed.
    if (store_.durability() == store::Durability::kBatch && ::fdatasync(entry.get()) != 0)
      ThrowErrno("fdatasync " + repo.EntryPath(digest));
    const std::string entry_path = repo.EntryPath(digest);
    std::optional<store::StagedMessage> link = repo.StageLink(folder, entry_path, staged.meta);
    if (!link) {
      // Full (EMLINK): this copy becomes the entry, as restore and relink do. (On another
      // filesystem, which a partition's =digest never is, the copy just stays a copy.)
      if (proven.st_dev == own.st_dev) {
        repo.Replace(digest, staged_path);
        ++entries_replaced_;
      }
      return staged;
    }
    // The name may have been given to another file between the proof and the link: keep only a
    // link to the inode that was compared.
    struct stat linked;
    if (::fstatat(folder.dir_fd(), link->temp_name.c_str(), &linked, AT_SYMLINK_NOFOLLOW) != 0 ||
        linked.st_ino != proven.st_ino || linked.st_dev != proven.st_dev) {
      std::vector<store::StagedMessage> drop{std::move(*link)};
      folder.Discard(drop);
      continue;
    }
    if (int err = UnlinkAt(folder.dir_fd(), staged.temp_name); err != 0 && err != ENOENT) {
      std::vector<store::StagedMessage> drop{std::move(*link)};
      folder.Discard(drop);
      ThrowErrno("unlink " + staged_path, err);
    }
    ++linked_;
    bytes_saved_ += size;
    return std::move(*link);
  }
  ++collisions_;
  return staged;
}

}  // namespace storemove::relinker
