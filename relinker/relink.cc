#include "relinker/relink.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "relinker/distinct_count.h"
#include "relinker/list_directory.h"
#include "relinker/relinker.h"
#include "store/read_ahead.h"
#include "store/message_owner.h"
#include "store/stale_temporaries.h"
#include "util/error.h"
#include "util/file_digest.h"
#include "util/interrupt.h"
#include "util/fs.h"

namespace storemove::relinker {

namespace {

// At most this many different contents sharing one (digest, size) are remembered per run; the
// copies of any further one are left unlinked. Only an attack on XXH3 produces even two.
constexpr size_t kMaxCollidingContents = 16;

struct InodeId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool empty() const { return ino == 0; }
  friend bool operator==(const InodeId&, const InodeId&) = default;
};

InodeId IdOf(const struct stat& st) { return {st.st_dev, st.st_ino}; }

// Whether the open file `fd` is the inode `id` (a name may be given to another file at any time).
bool IsInode(int fd, const InodeId& id) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && IdOf(st) == id;
}

struct GroupKey {
  Digest digest;
  uint64_t size = 0;
  friend bool operator==(const GroupKey&, const GroupKey&) = default;
};

// noexcept, so the tables do not store a hash per node.
struct GroupKeyHash {
  size_t operator()(const GroupKey& key) const noexcept {
    uint64_t lo, hi;
    std::memcpy(&lo, key.digest.bytes.data(), 8);
    std::memcpy(&hi, key.digest.bytes.data() + 8, 8);
    return size_t(lo ^ (hi * 0x9e3779b97f4a7c15ULL) ^ (key.size * 0xc2b2ae3d27d4eb4fULL));
  }
};

// The link pass remembers the repository entry's inode for this many contents, so the next copy
// already linked to it needs no look-up; forgotten all at once when full (only a look-up saved).
constexpr size_t kRememberedEntries = 16 * 1024;

// kLeft: the message keeps its own file (no room in the target for all of its inode's links,
// or the target's name now holds another file); a later run may link it.
enum class LinkResult { kLinked, kTargetFull, kLeft, kVanished };

// Names of a directory's entries other than "." and ".."; empty when it does not exist.
// False when the file does not exist (ENOENT); throws on other failures.
bool StatPath(const std::string& path, struct stat* st) {
  // Beneath the store root: a symlinked directory on the way throws instead of being followed.
  if (int err = StatNoFollow(path, st)) {
    if (err == ENOENT || err == ENOTDIR) return false;
    ThrowErrno("stat " + path, err);
  }
  return true;
}

bool IsEntryName(std::string_view name) {
  Digest d;
  return name.size() == 36 && name.ends_with(".msg") && Digest::FromHex(name.substr(0, 32), &d);
}

// One partition: survey, link, (purge), survey again. Adds its numbers to `stats`.
class PartitionPass {
 public:
  PartitionPass(store::Store& store, std::string partition, const RelinkOptions& options, RelinkStats* stats)
      : store_(store),
        partition_(std::move(partition)),
        options_(options),
        stats_(*stats),
        repository_(store.PartitionPath(partition_), RepositoryOptions{.max_links = options.max_links, .before_link_rename = {}}),
        link_limit_(options.max_links ? options.max_links : std::numeric_limits<uint64_t>::max()) {}

  void Run() {
    uint64_t messages = 0, bytes = 0;  // what the passes will visit, for the progress line
    if (options_.on_pass)
      store_.ForEachFolder([&](const store::FolderInfo& info) {
        if (info.partition != partition_) return;
        messages += info.count;
        bytes += info.bytes;
      });
    auto pass = [&](const char* what) {
      if (options_.on_pass) options_.on_pass(partition_ + " " + what, messages, bytes);
    };
    pass("survey 1/3");
    Usage before = Survey();
    before.repository = WalkRepository(/*purge=*/false, /*purge_temporaries=*/false);
    pass("link 2/3");
    ForEachMessage(/*entries=*/true, [&](const store::Folder& folder, const std::string& path,
                                         const store::MessageMeta& meta) {
      if (meta.size < options_.min_size) {
        ++stats_.too_small;
        return;
      }
      GroupKey key{EffectiveDigest(meta.digest), meta.size};
      if (entries_.size() >= kRememberedEntries) entries_.clear();
      if (made_entry_.size() >= kRememberedEntries) made_entry_.clear();
      LinkMessage(folder, meta.uid, path, key, meta.digest, entries_[key]);
    });
    entries_.clear();
    made_entry_.clear();
    collided_.clear();
    pass("survey 3/3");
    Usage after = Survey();
    after.repository = WalkRepository(options_.purge, /*purge_temporaries=*/true);
    Add(&stats_.before, before);
    Add(&stats_.after, after);
  }

 private:
  static void Add(Usage* total, const Usage& u) {
    total->messages += u.messages;
    total->unique += u.unique;
    total->repository += u.repository;
    total->bytes += u.bytes;
    total->space_used += u.space_used;
  }

  Digest EffectiveDigest(const Digest& digest) const {
    return options_.digest_override ? options_.digest_override(digest) : digest;
  }

  // Calls fn(path, record) for every committed message of the partition, one folder snapshot
  // at a time; folders removed meanwhile are skipped. On a disk each cold file is an inode read
  // the pass would wait for: while fn works, threads stat the files of the folders queued ahead
  // (kMessagesAhead messages), with `entries` also their repository entries (the link pass looks
  // each up), so fn finds them in memory. Only hints: fn still does every check itself.
  void ForEachMessage(bool entries,
                      const std::function<void(const store::Folder&, const std::string&, const store::MessageMeta&)>& fn) {
    constexpr size_t kMessagesAhead = 2048;
    std::deque<store::FolderInfo> pending;
    size_t pending_messages = 0;
    store::Prefetcher prefetch(store_.PartitionPath(partition_), options_.reads ? options_.reads : 16, 4096);
    auto take = [&] {
      const store::FolderInfo info = std::move(pending.front());
      pending_messages -= info.count;
      pending.pop_front();
      std::unique_ptr<store::Folder> folder;
      store::FolderSnapshot snapshot;
      try {
        folder = store_.OpenFolder(info.user, info.folder);
        snapshot = folder->Snapshot();
      } catch (const Error& e) {
        if (e.code() == Errc::kNotFound) return;
        throw;
      }
      for (const store::MessageMeta& meta : snapshot.messages) {
        if (InterruptSignal())  // the message is built only then: this runs for every message
          ThrowIfInterrupted("relinking partition " + partition_ + " (a rerun goes on; nothing is half done)");
        fn(*folder, folder->MessagePath(meta.uid), meta);
        if (options_.on_message) options_.on_message(meta.size);
      }
      // Once per run (the link pass): a killed writer's temporary keeps space, and a link among
      // them keeps an entry from -d.
      if (entries) stats_.stale_removed += store::RemoveStaleTemporaries(folder->dir_fd(), folder->path(), options_.stale_after);
    };
    store_.ForEachFolder([&](const store::FolderInfo& info) {
      if (info.partition != partition_) return;
      pending.push_back(info);
      pending_messages += info.count;
      prefetch.Submit([this, info, entries] { WarmFolder(info, entries); });
      while (pending.size() > 1 && pending_messages > kMessagesAhead) take();
    });
    while (!pending.empty()) take();
  }

  // The hint for one folder: its index, and the inodes of its files (and their entries).
  void WarmFolder(const store::FolderInfo& info, bool entries) {
    std::unique_ptr<store::Folder> folder = store_.OpenFolder(info.user, info.folder);
    struct stat st;
    for (const store::MessageMeta& m : folder->Snapshot().messages) {
      ::fstatat(folder->dir_fd(), store::MessageRelPath(m.uid).c_str(), &st, AT_SYMLINK_NOFOLLOW);
      if (entries && m.size >= options_.min_size)
        ::fstatat(AT_FDCWD, repository_.EntryPath(EffectiveDigest(m.digest)).c_str(), &st, AT_SYMLINK_NOFOLLOW);
    }
  }

  // Counts what the partition holds now. A file with one link is distinct by itself; the
  // contents and the shared inodes are counted in bounded memory (distinct_count.h).
  Usage Survey() {
    Usage usage;
    const size_t in_memory = options_.survey_values_in_memory ? options_.survey_values_in_memory
                                                               : DistinctCounter::kDefaultInMemory;
    DistinctCounter contents(in_memory), shared(in_memory);
    ForEachMessage(/*entries=*/false, [&](const store::Folder&, const std::string& path, const store::MessageMeta& meta) {
      struct stat st;
      if (!StatPath(path, &st) || !S_ISREG(st.st_mode)) return;  // expunged meanwhile
      const Digest digest = EffectiveDigest(meta.digest);
      DistinctCounter::Value content;
      std::memcpy(content.key.data(), digest.bytes.data(), 16);
      content.key[2] = meta.size;
      contents.Add(content);
      ++usage.messages;
      usage.bytes += uint64_t(st.st_size);
      if (st.st_nlink == 1) usage.space_used += uint64_t(st.st_size);
      else shared.Add({{uint64_t(st.st_dev), uint64_t(st.st_ino), 0}, uint64_t(st.st_size)});
    });
    usage.unique = contents.Count().distinct;
    usage.space_used += shared.Count().weight;
    return usage;
  }

  // Counts the entries of =digest; with `purge`, first removes those nothing else links to.
  uint64_t WalkRepository(bool purge, bool purge_temporaries) {
    // Up to 65,536 bucket directories (a 1.0 repository; a flat one has 256): on a cold disk each
    // listing waits for its blocks, so the buckets are shared out between threads (each sums its
    // own counts).
    const std::vector<std::string> buckets = repository_.BucketDirectories();
    std::atomic<size_t> next{0};
    std::atomic<uint64_t> entries{0}, purged{0}, stale{0};
    const std::time_t now = std::time(nullptr);
    std::mutex mu;
    std::exception_ptr error;
    auto work = [&] {
      uint64_t my_entries = 0, my_purged = 0, my_stale = 0;
      try {
        for (size_t i; (i = next++) < buckets.size();) {
          const std::string& dir = buckets[i];
          for (const std::string& name : ListDirectory(dir)) {
            const std::string path = dir + "/" + name;
            if (!IsEntryName(name)) {
              // The temporary name of an entry being replaced, or one a killed relink left (the
              // last walk removes those).
              struct stat st;
              if (purge_temporaries && StatPath(path, &st) &&
                  store::IsStaleTemporary(name, st, now, options_.stale_after)) {
                if (int err = UnlinkPath(path); err == 0) ++my_stale;
                else if (err != ENOENT) ThrowErrno("remove " + path, err);
              }
              continue;
            }
            struct stat st;
            if (!StatPath(path, &st)) continue;
            if (purge && S_ISREG(st.st_mode) && st.st_nlink == 1) {
              int err = UnlinkPath(path);
              if (err == 0) ++my_purged;
              else if (err != ENOENT) ThrowErrno("unlink " + path, err);
              continue;
            }
            ++my_entries;
          }
        }
      } catch (...) {
        std::lock_guard lock(mu);
        if (!error) error = std::current_exception();
        next = buckets.size();
      }
      entries += my_entries;
      purged += my_purged;
      stale += my_stale;
    };
    std::vector<std::thread> threads;
    const size_t count = std::min<size_t>(options_.reads ? options_.reads : 16, buckets.size());
    for (size_t t = 1; t < count; ++t) threads.emplace_back(work);
    work();
    for (std::thread& t : threads) t.join();
    stats_.purged += purged;
    stats_.stale_removed += stale;
    if (error) std::rethrow_exception(error);
    return entries;
  }

  // The decisions for one message; see docs/relinker.md §The pass.
  // `entry`: the repository entry's inode as last seen for this content (empty: not known).
  void LinkMessage(const store::Folder& folder, uint32_t uid, const std::string& path, const GroupKey& key,
                   const Digest& recorded, InodeId& entry_seen) {
    struct stat st;
    if (!StatPath(path, &st)) {
      // Expunged since the snapshot, or lost: the index tells (OpenMessage throws kCorrupt,
      // naming the file, when store.idx still lists it), never counted as expunged meanwhile.
      if (folder.OpenMessage(uid).valid()) return;  // committed just now: a later run
      ++stats_.vanished;
      return;
    }
    // A directory, FIFO or device where a message file belongs is damage, never a race.
    if (!S_ISREG(st.st_mode))
      Throw(Errc::kCorrupt, "mailbox " + folder.Mailbox() + ": UID " + std::to_string(uid) + ": " + path +
                                " is not a regular file (damaged store)");
    // A file of another size than its record is damage (nothing is linked to it): named, unless
    // the path now names another folder's file (a rename since the snapshot).
    if (uint64_t(st.st_size) != key.size) {
      if (FolderOwnFile(folder, uid, st)) NoteDamaged(folder, uid, path);
      return;
    }
    const InodeId mine = IdOf(st);
    if (mine == entry_seen) return;

    // Twice: an entry may appear between looking for it and adding this file as the entry.
    for (int attempt = 0; attempt < 2; ++attempt) {
      UniqueFd entry = repository_.OpenEntry(key.digest, key.size);
      if (entry.valid()) {
        struct stat es;
        if (::fstat(entry.get(), &es) != 0) ThrowErrno("stat " + repository_.EntryPath(key.digest));
        entry_seen = IdOf(es);
        if (entry_seen == mine) return;
        UniqueFd file = TryOpenAt(AT_FDCWD, path, O_RDONLY, 0, path);
        if (!file.valid()) {
          ++stats_.vanished;
          return;
        }
        if (!IsInode(file.get(), mine)) return;  // another file took the name since: a later run
        if (!SameContent(entry.get(), file.get())) break;
        // The entry is full: this file becomes the entry the next copies are linked to, if its
        // inode has room for at least one of them once the entry links it too.
        if (MergeInto(repository_.EntryPath(key.digest), es, path, st) == LinkResult::kTargetFull &&
            uint64_t(st.st_nlink) + 1 < link_limit_ && store::AsNewMessage(st)) {
          if (!Guarded(path, [&] { repository_.Replace(key.digest, path); })) return;
          ++stats_.entries_replaced;
          entry_seen = mine;
        }
        return;
      }
      // An entry gives its mode and owner to every copy linked to it: made only of a file as
      // writers make them (a copy made 0644 by hand is left alone, SameOwnerAndMode).
      if (!store::AsNewMessage(st)) {
        ++stats_.owner_or_mode;
        return;
      }
      bool added = false;
      if (!Guarded(path, [&] { added = repository_.AddIfMissing(key.digest, path); })) return;
      if (added) {
        ++stats_.entries_added;
        entry_seen = mine;
        // Not hashed (that would cost every entry a read): should its bytes prove damaged when a
        // later copy is compared with them, this message is the one to name.
        made_entry_[key] = {folder.Mailbox() + " UID " + std::to_string(uid) + " (" + path + ")", mine};
        return;
      }
    }
    // No entry, and this file could not become one: its own inode is at the link limit (EMLINK),
    // as shared as it can be. Not a collision; nothing to do.
    if (!PathExists(repository_.EntryPath(key.digest))) return;
    if (ReplaceDamagedEntry(path, st, key)) return;
    if (IsDamaged(folder, uid, path, st, recorded)) return;
    LinkToCollided(path, st, key);
  }

  // Whether `st` (the file at the message's path) is the folder's own file of `uid`: through the
  // folder's directory descriptor, which follows the folder through renames, where the path may
  // name another folder's file since the snapshot (helper-110: folders swapped mid-pass made
  // healthy messages "damaged").
  static bool FolderOwnFile(const store::Folder& folder, uint32_t uid, const struct stat& st) {
    struct stat own;
    return ::fstatat(folder.dir_fd(), store::MessageRelPath(uid).c_str(), &own, AT_SYMLINK_NOFOLLOW) == 0 &&
           IdOf(own) == IdOf(st);
  }

  void NoteDamaged(const store::Folder& folder, uint32_t uid, const std::string& path) {
    NoteDamaged(folder.Mailbox() + " UID " + std::to_string(uid) + " (" + path + ")");
  }
  void NoteDamaged(const std::string& name) {
    ++stats_.damaged_messages;
    if (stats_.damaged_named.size() < RelinkStats::kDamagedNamed) stats_.damaged_named.push_back(name);
  }

  // A message whose bytes differ from its entry's is a collision only if they are its record's
  // digest: otherwise the file is damaged (a disk error, a hand edit), named and left for a
  // restore (helper-107: counted as a collision, exit 0). Hashed only here, on that rare path.
  bool IsDamaged(const store::Folder& folder, uint32_t uid, const std::string& path, const struct stat& st,
                 const Digest& recorded) {
    UniqueFd file = TryOpenAt(AT_FDCWD, path, O_RDONLY, 0, path);
    if (!file.valid() || !IsInode(file.get(), IdOf(st)) || !FolderOwnFile(folder, uid, st) ||
        DigestOfFile(file.get(), path) == recorded)
      return false;
    NoteDamaged(folder, uid, path);
    return true;
  }

  // An entry whose bytes are not its digest's is damage (a disk error, a hand edit), not a
  // collision: this message, if its own bytes are its digest's, becomes the entry (helper-78:
  // relink reported a damaged entry as "digest collisions 1" and left it). True when handled.
  bool ReplaceDamagedEntry(const std::string& path, const struct stat& st, const GroupKey& key) {
    const std::string entry_path = repository_.EntryPath(key.digest);
    UniqueFd entry = TryOpenAt(AT_FDCWD, entry_path, O_RDONLY, 0, entry_path);
    if (!entry.valid() || DigestOfFile(entry.get(), entry_path) == key.digest) return false;  // a real collision
    UniqueFd file = TryOpenAt(AT_FDCWD, path, O_RDONLY, 0, path);
    if (!file.valid() || !IsInode(file.get(), IdOf(st)) || DigestOfFile(file.get(), path) != key.digest)
      return false;  // this copy is not its digest's either: verify names it
    if (!store::AsNewMessage(st)) {  // the entry gives its mode and owner to what is linked to it: a later copy
      ++stats_.owner_or_mode;
      return true;
    }
    struct stat es;
    const bool counted = ::fstat(entry.get(), &es) == 0;
    if (!Guarded(path, [&] { repository_.Replace(key.digest, path); })) return true;
    ++stats_.damaged_entries;
    // The message this run made the entry holds those bytes: named. Its other names (messages
    // an earlier run linked, or a killed writer's temporaries) are counted apart: verify against
    // the source names any message among them.
    uint64_t others = counted && es.st_nlink > 1 ? uint64_t(es.st_nlink) - 1 : 0;
    if (auto made = made_entry_.find(key); made != made_entry_.end() && counted && made->second.second == IdOf(es)) {
      NoteDamaged(made->second.first);
      if (others > 0) --others;
    }
    stats_.damaged_entry_links += others;
    return true;
  }

  // The message's bytes differ from the repository entry of its digest (or an entry of another
  // size holds that name): link it to an earlier message of the same bytes, if any.
  void LinkToCollided(const std::string& path, const struct stat& st, const GroupKey& key) {
    ++stats_.collisions;
    std::vector<std::string>& targets = collided_[key];
    for (size_t i = 0; i < targets.size();) {
      struct stat ts;
      if (!StatPath(targets[i], &ts)) {
        targets.erase(targets.begin() + long(i));
        continue;
      }
      if (IdOf(ts) == IdOf(st)) return;
      UniqueFd target = TryOpenAt(AT_FDCWD, targets[i], O_RDONLY, 0, targets[i]);
      UniqueFd file = TryOpenAt(AT_FDCWD, path, O_RDONLY, 0, path);
      if (!file.valid()) {
        ++stats_.vanished;
        return;
      }
      if (!IsInode(file.get(), IdOf(st))) return;  // another file took the name since
      if (target.valid() && SameContent(target.get(), file.get())) {
        if (MergeInto(targets[i], ts, path, st) == LinkResult::kTargetFull) targets[i] = path;
        return;
      }
      ++i;
    }
    if (targets.size() < kMaxCollidingContents) targets.push_back(path);
  }

  // Makes `path` (proven to hold the same bytes as `target`) a link to target's inode, unless
  // the target cannot take every link of path's inode (then moving this one saves nothing).
  // Returns kTargetFull when the target has no room left, so the caller makes `path` the target.
  LinkResult MergeInto(const std::string& target, const struct stat& ts, const std::string& path,
                       const struct stat& st) {
    if (uint64_t(ts.st_nlink) >= link_limit_) return LinkResult::kTargetFull;
    if (uint64_t(ts.st_nlink) + uint64_t(st.st_nlink) > link_limit_) return LinkResult::kLeft;
    if (!store::SameOwnerAndMode(ts, st)) {
      ++stats_.owner_or_mode;
      return LinkResult::kLeft;
    }
    LinkResult result = ReplaceWithLink(target, IdOf(ts), path, IdOf(st));
    switch (result) {
      case LinkResult::kLinked: ++stats_.linked; break;
      case LinkResult::kVanished: ++stats_.vanished; break;
      case LinkResult::kTargetFull: {
        // The filesystem's own limit, learnt once, spares later copies a failing link(2).
        struct stat now;
        link_limit_ = std::min<uint64_t>(link_limit_, StatPath(target, &now) ? now.st_nlink : ts.st_nlink);
        break;
      }
      case LinkResult::kLeft: break;
    }
    return result;
  }

  // Replaces the visible message file `path`, proven to hold target's bytes while it was the inode
  // `path_id`, by a link to `target`, atomically: the new link is made under a temporary name in
  // the folder directory, checked to be the compared inode, and exchanged with `path`
  // (RENAME_EXCHANGE fails when path was expunged meanwhile, so an expunged message is never
  // brought back). Readers of the old file keep identical bytes.
  //
  // The name `path` can be given to another message meanwhile (its folder deleted and another
  // renamed to its name, UIDs starting at 1 again): what the exchange took out is checked to be
  // the compared inode, and exchanged back if it is not, so that message is never replaced.
  LinkResult ReplaceWithLink(const std::string& target, const InodeId& target_id, const std::string& path,
                             const InodeId& path_id) {
    const std::string bucket_dir = path.substr(0, path.rfind('/'));
    const std::string temp = bucket_dir.substr(0, bucket_dir.rfind('/')) + "/" + store::NewTemporaryName();
    if (int err = LinkPath(target, temp)) {
      if (err == EMLINK) return LinkResult::kTargetFull;
      if (err == ENOENT || err == EXDEV) return PathExists(path) ? LinkResult::kLeft : LinkResult::kVanished;
      ThrowMakingErrno("link " + target + " to " + temp, err, target);
    }
    {
      UniqueFd made = TryOpenAt(AT_FDCWD, temp, O_RDONLY, 0, temp);
      if (!made.valid() || !IsInode(made.get(), target_id)) {
        UnlinkPath(temp);  // the target's name was given to another file since it was compared
        return LinkResult::kLeft;
      }
      // The target may be a restore's or an import's new file whose data is not on the disk yet
      // (they sync once at their end): written before the exchange, it is on stable storage by the
      // time the journal commits the exchange, so a power cut cannot leave `path` naming an
      // empty file where it held a durable message. No device flush: free when already written.
      if (::sync_file_range(made.get(), 0, 0,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0 &&
          errno != ESPIPE && errno != EINVAL) {
        const int err = errno;
        UnlinkPath(temp);
        ThrowErrno("write " + target + " back", err);
      }
    }
    struct stat now;
    if (!StatPath(path, &now) || IdOf(now) != path_id) {
      UnlinkPath(temp);  // expunged or replaced since it was compared: left as it is
      return PathExists(path) ? LinkResult::kLeft : LinkResult::kVanished;
    }
    if (options_.before_exchange) options_.before_exchange(path);
    if (int err = RenameAt(AT_FDCWD, temp, AT_FDCWD, path, RENAME_EXCHANGE)) {
      if (err == EINVAL && PathExists(path)) {
        // A filesystem without RENAME_EXCHANGE (NFS): a plain rename, checked just before.
        err = RenamePath(temp, path);
        if (err == 0) return LinkResult::kLinked;
      }
      UnlinkPath(temp);
      if (err == ENOENT) return LinkResult::kVanished;
      ThrowErrno("replace " + path + " by a link to " + target, err);
    }
    // `temp` now names what `path` held.
    struct stat old;
    if (!StatPath(temp, &old) || IdOf(old) != path_id) {
      // Another message took the name between the check and the exchange: it goes back.
      if (int err = RenameAt(AT_FDCWD, temp, AT_FDCWD, path, RENAME_EXCHANGE))
        ThrowErrno("put back " + path + " (left as " + KeepAside(temp) + ")", err);
      struct stat back;
      if (StatPath(temp, &back) && IdOf(back) == target_id) UnlinkPath(temp);
      else Throw(Errc::kIo, "relink: " + path + " changed again while being put back; its former file is " + KeepAside(temp));
      return LinkResult::kLeft;
    }
    if (int err = UnlinkPath(temp); err != 0 && err != ENOENT) ThrowErrno("unlink " + temp, err);
    return LinkResult::kLinked;
  }

  // A message file left under relink's temporary name (a put-back that failed): renamed to a
  // name the next relink's removal of stale temporaries does not match, so it stays for the
  // administrator. Returns the name it has.
  static std::string KeepAside(const std::string& temp) {
    const size_t slash = temp.rfind('/');
    const std::string kept = temp.substr(0, slash + 1) + "relink-kept." + temp.substr(slash + 1 + 4);  // drops "tmp."
    return RenamePath(temp, kept) == 0 ? kept : temp;
  }

  // Runs a repository change that links `path`; false when it failed because the message was
  // expunged meanwhile (counted), rethrows any other failure.
  bool Guarded(const std::string& path, const std::function<void()>& change) {
    try {
      change();
      return true;
    } catch (const Error&) {
      if (PathExists(path)) throw;
      ++stats_.vanished;
      return false;
    }
  }

  store::Store& store_;
  const std::string partition_;
  const RelinkOptions& options_;
  RelinkStats& stats_;
  Repository repository_;
  uint64_t link_limit_;
  std::unordered_map<GroupKey, InodeId, GroupKeyHash> entries_;  // at most kRememberedEntries
  // The message (its name for a line, its inode) each entry this pass added was made of.
  std::unordered_map<GroupKey, std::pair<std::string, InodeId>, GroupKeyHash> made_entry_;
  // Only for (digest, size) keys whose messages differ from the entry: a few paths each.
  std::unordered_map<GroupKey, std::vector<std::string>, GroupKeyHash> collided_;
};

std::string Grouped(uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

RelinkStats Relink(store::Store& store, const RelinkOptions& options) {
  std::vector<std::string> partitions = store.Partitions();
  if (!options.partition.empty()) {
    if (std::find(partitions.begin(), partitions.end(), options.partition) == partitions.end())
      Throw(Errc::kNotFound, "no such partition: " + options.partition + " in " + store.root());
    partitions = {options.partition};
  }
  RelinkStats stats;
  for (const std::string& partition : partitions) PartitionPass(store, partition, options, &stats).Run();
  return stats;
}

std::string FormatRelinkTable(const RelinkStats& s) {
  struct Row {
    const char* label;
    uint64_t before, after;
  };
  const Row rows[] = {
      {"Total messages", s.before.messages, s.after.messages},
      {"Unique messages", s.before.unique, s.after.unique},
      {"Message digests in repository", s.before.repository, s.after.repository},
      {"Space used (bytes)", s.before.space_used, s.after.space_used},
      {"Space savings from single-copy (bytes)", s.before.savings(), s.after.savings()},
  };
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "%-40s %18s %18s\n", "", "before", "after");
  out += line;
  for (const Row& row : rows) {
    std::snprintf(line, sizeof line, "%-40s %18s %18s\n", row.label, Grouped(row.before).c_str(),
                  Grouped(row.after).c_str());
    out += line;
  }
  out += "linked " + std::to_string(s.linked) + ", new repository entries " + std::to_string(s.entries_added) +
         ", entries replaced at the link limit " + std::to_string(s.entries_replaced) + ", digest collisions " +
         std::to_string(s.collisions) + ", below minimum size " + std::to_string(s.too_small) +
         ", expunged meanwhile " + std::to_string(s.vanished) + ", purged " + std::to_string(s.purged) +
         ", stale temporary files removed " + std::to_string(s.stale_removed) +
         (s.owner_or_mode ? ", left for their owner or mode " + std::to_string(s.owner_or_mode) : "") +
         (s.damaged_entries ? ", damaged repository entries replaced " + std::to_string(s.damaged_entries) : "") +
         (s.damaged_messages ? ", damaged messages " + std::to_string(s.damaged_messages) : "") +
         (s.damaged_entry_links ? ", other links of damaged entries " + std::to_string(s.damaged_entry_links) : "") +
         "\n";
  return out;
}

}  // namespace storemove::relinker
