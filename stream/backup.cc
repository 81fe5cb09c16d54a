// The backup side: a consistent snapshot per folder, each message read once, checked against
// its recorded digest, and sent as a body or - when the same content was already sent in this
// stream - as a link (same inode like Sun's imsbackup, or equal digest *and* equal bytes).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <unordered_map>

#include "relinker/relinker.h"
#include "store/clock_floor.h"
#include "store/read_ahead.h"
#include "stream/net.h"
#include "stream/records.h"
#include "stream/folder_path_ring.h"
#include "stream/sent_contents.h"
#include "stream/stream.h"
#include "util/error.h"

namespace storemove::stream {

namespace {

constexpr size_t kReadChunk = 1 << 20;
constexpr size_t kDefaultQueryAhead = 32;
// Snapshots taken ahead hold at most about this many messages (~100 bytes each) besides the
// folder being written, whatever query_ahead says: memory stays bounded by big folders too.
constexpr size_t kMaxMessagesAhead = size_t{1} << 17;

class BackupSession {
 public:
  BackupSession(store::Store& store, const BackupOptions& options, format::Encoder& encoder)
      : store_(store),
        options_(options),
        encoder_(encoder),
        progress_("backup", options.live_progress),
        folder_paths_(options.folder_paths_kept ? options.folder_paths_kept : kDefaultFolderPathsKept, kFolderPathBytes),
        digests_(options.sent_contents_capacity ? options.sent_contents_capacity : SentContents::kDefaultCapacity),
        link_window_(options.link_window ? std::min(options.link_window, format::kLinkCheckWindow)
                                         : format::kLinkCheckWindow),
        query_ahead_(options.query_ahead ? options.query_ahead : kDefaultQueryAhead) {}

  SessionReport Run() {
    std::string groups_file = options_.groups_file.empty() ? store_.root() + "/config/backup-groups.conf"
                                                           : options_.groups_file;
    Selection selection(options_.names, ReadBackupGroups(groups_file), groups_file);
    if (!options_.only_users) selection.RequireEveryNameMatches(store_);  // before the stream begins
    format::StreamHeader header;
    header.kind = options_.manifest ? format::StreamKind::kManifest
                  : options_.oracle ? format::StreamKind::kSession
                                    : format::StreamKind::kFull;
    // Before the first folder is read: from here on nothing is committed with a save time before
    // `created`, so a later `backup -d created` takes everything this one did not (clock_floor.h).
    std::string floor_note;
    header.created = store::RaiseClockFloor(store_.root(), ::time(nullptr), &floor_note);
    if (!floor_note.empty()) report_.notes.push_back(floor_note);
    // A manifest carries no mail, and raises the floor all the same: chained from, it skipped what
    // was stored between the last real backup and it (helper-98).
    if (!options_.manifest) report_.started = header.created;
    header.since = options_.since;
    header.source_host = options_.source_host;
    header.store_id = store_.store_id();
    header.selection = options_.names;
    encoder_.WriteHeader(header);

    // Two scans of the users instead of a list in memory: the first only sums quota usage for
    // the ETA (close enough). The scan reads users in batches and never keeps its cursor open
    // while the callback reads files.
    auto wanted = [&](const store::UserInfo& u) {
      return selection.WantsUser(u) && (!options_.only_users || options_.only_users->count(u.user));
    };
    uint64_t expected_bytes = 0;
    ForEachWantedUser(selection, [&](const store::UserInfo& u) { expected_bytes += u.quota_used; }, {});
    progress_.set_total(0, expected_bytes);
    // Users are taken kUsersAhead behind the scan, while prefetch threads read the folder
    // indexes of those ahead: on a cold disk each index is a few dependent reads, which one
    // thread would wait for one after another.
    std::deque<store::UserInfo> ahead;
    auto take = [&] {
      WriteUserFolders(selection, ahead.front());
      ahead.pop_front();
    };
    {
      store::Prefetcher prefetch(store_.root(), std::clamp<size_t>((options_.reads ? options_.reads : kDefaultReads) / 2, 1, 8),
                                 kUsersAhead);
      ForEachWantedUser(
          selection,
          [&](const store::UserInfo& user) {
            ahead.push_back(user);
            prefetch.Submit([this, &selection, user] { WarmUser(selection, user); });
            if (ahead.size() > kUsersAhead) take();
          },
          [this](const store::Store::UserScanBatch& batch) { scan_.Note(batch); });
      while (!ahead.empty()) take();
    }
    ReportUsersRenamedBehindTheScan(wanted);
    while (!queue_.empty()) WriteFront();
    reader_.reset();
    encoder_.Finish();
    progress_.Finish();
    report_.seconds = progress_.seconds();
    report_.left_messages_out = report_.errors != 0;  // before a receiver's errors are added (backup --to)
    return report_;
  }

 private:
  static constexpr size_t kUsersAhead = 32;

  // The users the backup takes, in user-id order. Migrate's passes name their group's users
  // (only_users): each is looked up, not found in a scan of every user of the store (a pass of
  // a 20-user group read all 100,000 user records, twice). A member renamed or deleted meanwhile
  // is not found, as the scan would not have taken it (its new name is not a member); there is
  // no scan for a rename to pass a user over. Unlike the scan's, no error names a user renamed
  // onto a member's free name during the pass (helper-165): it is taken or not by its lookup's
  // time, as one renamed between two passes is.
  void ForEachWantedUser(const Selection& selection, const std::function<void(const store::UserInfo&)>& fn,
                         const std::function<void(const store::Store::UserScanBatch&)>& on_batch) {
    if (options_.only_users) {
      for (const std::string& name : *options_.only_users)
        if (std::optional<store::UserInfo> u = store_.FindUser(name); u && selection.WantsUser(*u)) fn(*u);
      return;
    }
    store_.ForEachUser(
        [&](const store::UserInfo& u) {
          if (selection.WantsUser(u)) fn(u);
        },
        on_batch);
  }

  // Reads what WriteUserFolders will read, into the page cache: the user's folder list, and asks
  // for the index of each folder that will be opened (a snapshot here, as before 2026-12-02, did
  // every folder's mboxlist lookups, lock and parse twice: docs/performance.md, "The index hints").
  void WarmUser(const Selection& selection, const store::UserInfo& user) {
    for (const store::FolderInfo& f : store_.ListFolders(user.user, ListingDetail()))
      if (selection.WantsFolder(user, f.folder) && !SkippedUnopened(f)) store_.HintFolderIndex(f);
  }

  // A listing reads each folder's index header only where SkippedUnopened needs its
  // HIGHESTMODSEQ; otherwise the snapshot reads the index anyway (one open and lock per folder
  // instead of two: docs/performance.md, "Where a cold backup's CPU goes").
  store::Store::FolderDetail ListingDetail() const {
    return options_.since_modseq && options_.skip_unchanged ? store::Store::FolderDetail::kWithIndex
                                                            : store::Store::FolderDetail::kRecordOnly;
  }

  void WriteUserFolders(const Selection& selection, const store::UserInfo& user) {
    if (options_.before_user_listed) options_.before_user_listed(user.user);
    std::vector<store::FolderInfo> folders = store_.ListFolders(user.user, ListingDetail());
    const bool has_no_folder = folders.empty();
    std::erase_if(folders, [&](const store::FolderInfo& f) { return !selection.WantsFolder(user, f.folder); });
    if (folders.empty()) {
      // A user without any mailbox is a record all the same: one whose mail moved to another
      // host keeps it, marked moved:HOST, so that deliveries wait instead of bouncing. It was in
      // no backup, and after a restore of the store that mail bounced (helper-97). Not for a
      // migrate's passes (only_users): a user moves with its mail there. Nor in a manifest, which
      // verify compares user by user with what `verify --source` compares, mailboxes (helper-98).
      if (has_no_folder && !options_.only_users && !options_.manifest && selection.WantsFolder(user, "INBOX") &&
          store_.FindUser(user.user)) {
        queue_.push_back(Pending{user, nullptr});
        return;
      }
      UserGoneIfGone(user.user);
      return;
    }
    // An idle user's record is written only with its first folder that is written.
    if (options_.skip_idle_users && options_.skip_unchanged)
      idle_user_ = user;
    else
      queue_.push_back(Pending{user, nullptr});
    // A folder renamed between the listing and its snapshot is under neither name in the
    // listing's view: when one has gone, the user's folders are listed again and the names not
    // seen yet are taken, except the new name of a folder already taken (renamed after its
    // snapshot: it goes under the name it had), recognised as the same folder (UIDVALIDITY and
    // creation time, which a rename keeps) whose name is no longer listed. New folders come
    // along; a deleted one is simply gone. When in doubt a folder is taken: twice in a stream
    // costs bytes, a folder left out loses mail.
    // A name found gone is not taken: listed again (a folder moved to another partition keeps
    // its name, and so does one renamed away and back), it is taken then. It used to count as
    // seen, and such a folder was left out of a stream that ended with 0 (found by review,
    // helper-52).
    std::set<std::string> names;
    std::map<FolderIdentity, std::string> taken;  // identity -> name it was taken under
    bool gone = false;
    auto take = [&](const store::FolderInfo& f) {
      if (std::optional<FolderIdentity> id = Enqueue(f)) {
        names.insert(f.folder);
        taken.emplace(*id, f.folder);
      } else {
        gone = true;
      }
    };
    for (const store::FolderInfo& f : folders) take(f);
    for (int round = 0; gone && round < kListingRounds; ++round) {
      gone = false;
      // With each index's header: a record alone does not carry the UIDVALIDITY.
      const std::vector<store::FolderInfo> now = store_.ListFolders(user.user, store::Store::FolderDetail::kWithIndex);
      if (now.empty()) {
        UserGoneIfGone(user.user);
        break;
      }
      std::set<std::string> listed;
      for (const store::FolderInfo& f : now) listed.insert(f.folder);
      for (const store::FolderInfo& f : now) {
        if (!selection.WantsFolder(user, f.folder) || names.count(f.folder)) continue;
        auto it = taken.find(FolderIdentity{f.uidvalidity, f.created});
        if (it != taken.end() && !listed.count(it->second)) continue;  // renamed after it was taken
        take(f);
      }
    }
    if (gone) {
      // Still moving after every listing: left out with an error, never silently.
      for (const store::FolderInfo& f : store_.ListFolders(user.user, store::Store::FolderDetail::kRecordOnly))
        if (selection.WantsFolder(user, f.folder) && !names.count(f.folder)) {
          ++report_.errors;
          report_.error_lines.push_back(f.Mailbox() + ": renamed or moved again and again while backup listed it; left "
                                                      "out (run the backup again)");
        }
    }
    idle_user_.reset();
  }

  // A user whose folders vanished while backup ran was deleted or renamed (an administrator's
  // operation, storemove delete or rename). Which one, the store no longer says, and a renamed
  // user's new name may be behind the scan: an error line, never a stream that looks complete.
  void UserGoneIfGone(const std::string& user) {
    if (store_.FindUser(user)) return;
    ++report_.errors;
    report_.error_lines.push_back("user " + user +
                                  " was deleted or renamed while backup ran; if renamed, its mail is not in this stream "
                                  "(run the backup again)");
  }

  // A user renamed while the scan ran, from a name the scan had not read yet to one it had
  // passed, is in the stream under neither name. The scan notes where it stood whenever the
  // store's rename generation moved; each user renamed meanwhile (its record keeps its last
  // renames: generation and name before) is then judged: its present name read after its last
  // rename, or the name it had when the scan began read before the first rename since, is in
  // the stream; neither is an error line, never a silent gap. When unsure (a rename between a
  // batch's read and the generation's, a name held only between two renames, a history longer
  // than the record keeps), it counts as passed over.
  class ScanPositions {
   public:
    void Note(const store::Store::UserScanBatch& b) {
      if (!last_) first_generation_ = b.renames_before;
      const bool moved = b.renames_before != b.renames_after ||
                         (last_ && (last_->batch.renames_after != b.renames_before ||
                                    last_->batch.renames_before != last_->batch.renames_after));
      if (moved) {
        if (last_ && (kept_.empty() || kept_.back().number != last_->number)) kept_.push_back(*last_);
        kept_.push_back(Step{number_, b});
      }
      last_ = Step{number_++, b};
    }
    // Whether no rename happened while the batches were read.
    bool Still() const { return !last_ || last_->batch.renames_after == first_generation_; }
    uint64_t first_generation() const { return first_generation_; }
    // After the scan: keeps the last batch too (what was read before a rename after the others).
    void Finish() {
      if (last_ && (kept_.empty() || kept_.back().number != last_->number)) kept_.push_back(*last_);
    }
    // Whether the scan read `name` in a batch begun after rename `generation`.
    bool ReadAfter(const std::string& name, uint64_t generation) const {
      for (const Step& s : kept_)
        if (s.batch.renames_before >= generation) return s.batch.from_start || name > s.batch.after;
      return false;
    }
    // Whether the scan read `name` in a batch finished before rename `generation`.
    bool ReadBefore(const std::string& name, uint64_t generation) const {
      for (auto it = kept_.rbegin(); it != kept_.rend(); ++it)
        if (it->batch.renames_after < generation) return it->batch.end || name <= it->batch.last;
      return false;
    }

   private:
    struct Step {
      uint64_t number = 0;
      store::Store::UserScanBatch batch;
    };
    uint64_t number_ = 0;
    uint64_t first_generation_ = 0;
    std::optional<Step> last_;
    std::vector<Step> kept_;  // the batches around each move of the generation: a few per rename
  };

  template <typename Wanted>
  void ReportUsersRenamedBehindTheScan(const Wanted& wanted) {
    if (scan_.Still()) return;
    scan_.Finish();
    store_.ForEachUser([&](const store::UserInfo& u) {
      // The renames since the scan began (later ones too: the name read may be the one before).
      const auto first = std::find_if(u.renames.begin(), u.renames.end(), [&](const store::UserRename& r) {
        return r.generation > scan_.first_generation();
      });
      if (first == u.renames.end() || !wanted(u)) return;
      if (scan_.ReadAfter(u.user, u.renames.back().generation)) return;
      const bool start_name_known = first != u.renames.begin() || !u.renames_truncated;
      if (start_name_known && scan_.ReadBefore(first->from, first->generation)) return;
      ++report_.errors;
      report_.error_lines.push_back("user " + u.user + " (renamed from " + first->from +
                                    " while backup ran) is not in this stream under either name; run the backup again");
    });
  }

  // The listing read HIGHESTMODSEQ from the index header: an unchanged folder is skipped with
  // that one comparison, without opening it or reading its records.
  bool SkippedUnopened(const store::FolderInfo& info) const {
    if (!options_.since_modseq || !options_.skip_unchanged) return false;
    auto it = options_.since_modseq->find(info.Mailbox());
    return it != options_.since_modseq->end() && it->second != 0 && it->second == info.highest_modseq &&
           SameFolderAsSince(info);
  }

  // The folder since_modseq's value was read from, as far as since_uidvalidity knows.
  bool SameFolderAsSince(const store::FolderInfo& info) const {
    if (!options_.since_uidvalidity) return true;
    auto it = options_.since_uidvalidity->find(info.Mailbox());
    return it == options_.since_uidvalidity->end() || it->second == info.uidvalidity;
  }

  void WriteUser(const store::UserInfo& u) {
    format::UserRecord r;
    r.user = u.user;
    r.partition = u.partition;
    r.status = u.status.ToString();
    r.quota_limit = u.quota_limit;
    r.quota_used = u.quota_used;
    r.created = u.created;
    r.subscriptions = store_.Subscriptions(u.user);
    encoder_.WriteUser(r);
    ++report_.users;
  }

  // What a rename keeps of a folder (its name and its files' directory change): UIDVALIDITY and
  // creation time. Not unique (an import keeps the source's UIDVALIDITY, and makes many folders
  // in one second), so it is only used where a wrong match costs bytes, not mail.
  struct FolderIdentity {
    uint32_t uidvalidity = 0;
    int64_t created = 0;
    auto operator<=>(const FolderIdentity&) const = default;
  };

  // A folder read ahead of its data: its snapshot, and the questions asked about it.
  struct Ahead {
    std::unique_ptr<store::Folder> folder;
    std::shared_ptr<const UniqueFd> dir;  // the folder's directory, for reads still in flight
    uint64_t serial = 0;                   // tags its reads
    store::FolderSnapshot snap;
    uint64_t since = 0;  // incremental from this modseq; 0 = complete
    uint32_t since_uidnext = 0;  // with since: messages below it existed then (0 = unknown)
    std::vector<std::pair<uint64_t, std::vector<std::pair<Digest, uint64_t>>>> asked;  // ticket, contents
    // The folder renamed after its snapshot: where its files are now (looked for once).
    struct Relocated {
      std::unique_ptr<store::Folder> folder;
      std::unordered_map<uint32_t, std::pair<Digest, uint64_t>> records;  // UID -> digest, size
    };
    bool looked_for_rename = false;
    std::vector<Relocated> relocated;
    bool deleted = false;  // gone, and no longer in the mboxlist
    bool reported_gone = false;
  };
  // The stream's order: a user record, then that user's folders (each with its snapshot).
  struct Pending {
    std::optional<store::UserInfo> user;
    std::unique_ptr<Ahead> folder;
  };

  // Takes the folder's snapshot now and asks the receiver about its contents, so the answer
  // travels while earlier folders are written: no round trip per folder (docs/transport.md).
  // What identifies it across a rename; nullopt when the folder is gone since the listing
  // (deleted, or renamed).
  std::optional<FolderIdentity> Enqueue(const store::FolderInfo& info) {
    if (SkippedUnopened(info)) {  // a listing with the index's header
      if (options_.on_folder) options_.on_folder(info.Mailbox(), info.highest_modseq, info.uidnext, info.uidvalidity);
      return FolderIdentity{info.uidvalidity, info.created};
    }
    if (options_.before_folder_opened) options_.before_folder_opened(info.Mailbox());
    auto ahead = std::make_unique<Ahead>();
    try {
      ahead->folder = store_.OpenFolder(info.user, info.folder);
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;
      return std::nullopt;
    }
    try {
      ahead->snap = ahead->folder->Snapshot();
    } catch (const Error& e) {
      // Renamed or moved between its record and its index: gone from this name for now.
      if (e.code() != Errc::kNotFound) throw;
      return std::nullopt;
    }
    const store::FolderInfo& now = ahead->snap.info;
    if (options_.since_modseq) {
      auto it = options_.since_modseq->find(now.Mailbox());
      // A receiver "ahead" of the source (a folder recreated, or an index from before modseqs)
      // gets the folder complete.
      if (it != options_.since_modseq->end() && it->second != 0 && it->second <= now.highest_modseq &&
          SameFolderAsSince(now)) {
        ahead->since = it->second;
        if (options_.since_uidnext) {
          auto u = options_.since_uidnext->find(now.Mailbox());
          if (u != options_.since_uidnext->end() && u->second <= now.uidnext) ahead->since_uidnext = u->second;
        }
      }
    }
    const bool unchanged = ahead->since != 0 && ahead->since == now.highest_modseq;
    const FolderIdentity identity{now.uidvalidity, now.created};
    if (unchanged && options_.skip_unchanged) {
      if (options_.on_folder) options_.on_folder(now.Mailbox(), now.highest_modseq, now.uidnext, now.uidvalidity);
      return identity;
    }
    if (options_.oracle && !options_.manifest && !unchanged) Ask(*ahead);
    queued_messages_ += ahead->snap.messages.size();
    ++queued_folders_;
    if (idle_user_) {
      queue_.push_back(Pending{std::move(idle_user_), nullptr});
      idle_user_.reset();
    }
    if (!options_.manifest) {
      ahead->dir = store::ReadAhead::ShareDirectory(ahead->folder->dir_fd());
      ahead->serial = ++folders_enqueued_;
      feed_.push_back(ahead.get());
    }
    queue_.push_back(Pending{std::nullopt, std::move(ahead)});
    while (queued_folders_ >= query_ahead_ || (queued_folders_ > 1 && queued_messages_ > kMaxMessagesAhead))
      WriteFront();
    return identity;
  }

  // Writes the queue's first entry; a folder is written only once its questions are answered.
  void WriteFront() {
    Pending p = std::move(queue_.front());
    queue_.pop_front();
    if (p.user) {
      WriteUser(*p.user);
      return;
    }
    --queued_folders_;
    queued_messages_ -= p.folder->snap.messages.size();
    WriteFolder(*p.folder);
    // The reads never run behind the writing: a folder written is done for the feed too.
    if (!feed_.empty() && feed_.front() == p.folder.get()) {
      feed_.pop_front();
      feed_next_.reset();
    }
  }

  static uint64_t ReadTag(const Ahead& a, uint32_t uid) { return a.serial << 32 | uid; }

  // The next message file the stream will need, in the order WriteFolder takes them: every
  // message that goes as data, folder after folder of the queue (docs/performance.md, "On disk").
  bool NextRead(store::ReadRequest* r) {
    while (!feed_.empty()) {
      const Ahead& a = *feed_.front();
      if (!feed_next_) feed_next_ = a.snap.messages.begin();
      while (*feed_next_ != a.snap.messages.end()) {
        const store::MessageMeta m = **feed_next_;  // a copy: the cursor moves on at once
        ++*feed_next_;
        if (!SendsData(a, m)) continue;
        r->dir = a.dir;
        r->name = store::MessageRelPath(m.uid);
        r->shown = a.folder->path() + "/" + r->name;
        r->size = m.size;
        r->tag = ReadTag(a, m.uid);
        return true;
      }
      feed_.pop_front();
      feed_next_.reset();
    }
    return false;
  }

  // Whether a message of this folder goes as data (message, link or held record) or, in an
  // incremental folder, as a meta record (the receiver holds it; at most its flags changed).
  bool SendsData(const Ahead& a, const store::MessageMeta& m) const {
    // Changed since, and new since (a flag change of a message the receiver holds is a meta record).
    if (a.since) return m.modseq > a.since && m.uid >= a.since_uidnext;
    // -d: what was stored here since the date, and every message of a folder made since. A
    // message restored (or migrated) into this store keeps its save time from elsewhere, older
    // than the date, and would be in no backup of the chain: its stored-at time is the restore's
    // (0 in an index written before that field: the save time stands in). The folder rule
    // takes a folder published since whole: one built while a backup ran, unlisted by it, whose
    // first batches were stored before that backup began (Store::PublishFolder dates it).
    return !(options_.since && std::max(m.save_time, m.stored_at) < options_.since &&
             a.snap.info.created < options_.since);
  }

  void WriteFolder(Ahead& a) {
    store::Folder& folder = *a.folder;
    const store::FolderSnapshot& snap = a.snap;
    format::FolderRecord r;
    r.user = snap.info.user;
    r.folder = snap.info.folder;
    r.partition = snap.info.partition;
    r.uidvalidity = snap.info.uidvalidity;
    r.uidnext = snap.info.uidnext;
    r.count = snap.info.count;
    r.bytes = snap.info.bytes;
    r.last_append = snap.info.last_append;
    r.created = snap.info.created;
    r.acl = snap.info.acl;
    r.user_flag_names = snap.info.user_flag_names;
    r.peruser = store_.PerUser(snap.info.Mailbox());
    r.modseq = snap.info.highest_modseq;
    r.since_modseq = a.since;
    encoder_.WriteFolder(r);
    ++report_.folders;
    const uint32_t folder_index = folder_paths_.Add(folder.path());
    for (auto& [ticket, contents] : a.asked) {
      std::vector<bool> have = options_.oracle->Answer(ticket);
      for (size_t i = 0; i < contents.size() && i < have.size(); ++i)
        if (have[i]) receiver_has_.push_back(contents[i]);
    }
    std::sort(receiver_has_.begin(), receiver_has_.end());  // looked up by binary search below
    const uint64_t errors_before = report_.errors;
    if (!r.unchanged()) {
      for (const store::MessageMeta& m : snap.messages) {
        if (SendsData(a, m)) {
          WriteMessage(a, folder_index, m);
        } else if (a.since) {
          encoder_.WriteMeta(ToRecord(m));
          ++report_.metas;
        }
      }
    }
    // A file or pipe stream has a summary only where messages were left out (stream-format.md,
    // folder-end): its restore then finds the folder short of its source and says so. It exited
    // 0 with no word, and the chain's next restore took the folder for whole (helper-97).
    if (options_.summaries || report_.errors != errors_before)
      encoder_.EndFolder(ToField(store::Summarize(snap)));
    else
      encoder_.EndFolder();
    receiver_has_.clear();
    if (options_.on_folder) options_.on_folder(snap.info.Mailbox(), snap.info.highest_modseq, snap.info.uidnext, snap.info.uidvalidity);
  }

  // The folder's directory no longer holds its index: the folder was deleted or renamed.
  static bool FolderGone(const store::Folder& folder) {
    return ::faccessat(folder.dir_fd(), "store.idx", F_OK, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT;
  }

  static constexpr int kRelocationLooks = 8;
  static constexpr int kListingRounds = 8;

  // A folder renamed (or moved to another partition) after its snapshot keeps its identity and
  // its files (store-format.md §6.8): the message is read where that folder now is, from a
  // folder of the same identity whose index has the message's UID with its digest and size.
  // Where a message of a folder gone from its directory is now (OpenAfterRename).
  enum class Relocation {
    kFound,      // the fd: read where the folder now is
    kExpunged,   // a folder of the identity is there and no longer lists the UID so
    kMovedOn,    // it listed the UID, but moved on before the file was opened
    kNoFolder,   // no folder of the identity found: deleted, or between two places
  };
  // Looked up once per folder, again when `fresh`.
  Relocation OpenAfterRename(Ahead& a, const store::MessageMeta& m, bool fresh, UniqueFd* fd) {
    if (fresh) {
      a.looked_for_rename = false;
      a.relocated.clear();
    }
    bool moved_on = false;
    if (!a.looked_for_rename) {
      a.looked_for_rename = true;
      std::vector<store::FolderInfo> folders;
      try {
        folders = store_.ListFolders(a.snap.info.user, store::Store::FolderDetail::kWithIndex);
      } catch (const Error& e) {
        // A folder of the user between its record and its index (moved meanwhile): look again.
        if (e.code() != Errc::kNotFound) throw;
        a.looked_for_rename = false;
        return Relocation::kMovedOn;
      }
      for (const store::FolderInfo& f : folders) {
        if (f.uidvalidity != a.snap.info.uidvalidity || f.created != a.snap.info.created) continue;
        try {
          Ahead::Relocated r;
          r.folder = store_.OpenFolder(f.user, f.folder);
          for (const store::MessageMeta& mm : r.folder->Snapshot().messages) r.records.emplace(mm.uid, std::pair{mm.digest, mm.size});
          a.relocated.push_back(std::move(r));
        } catch (const Error& e) {
          if (e.code() != Errc::kNotFound) throw;
          moved_on = true;  // gone between the listing and its open
        }
      }
    }
    for (const Ahead::Relocated& r : a.relocated) {
      auto it = r.records.find(m.uid);
      if (it == r.records.end() || it->second != std::pair{m.digest, m.size}) continue;
      if ((*fd = r.folder->OpenMessage(m.uid)).valid()) return Relocation::kFound;
      moved_on = true;
    }
    if (moved_on) return Relocation::kMovedOn;
    return a.relocated.empty() ? Relocation::kNoFolder : Relocation::kExpunged;
  }

  // Whether the mboxlist may still hold this folder: a record of the user's created when it was
  // whose index is unreadable now (a move between two places) or has its UIDVALIDITY. The
  // creation time is in the record; the UIDVALIDITY only in the index, which may be in flight.
  bool StillRecorded(const Ahead& a) {
    std::map<std::string, uint32_t> readable;  // folder -> UIDVALIDITY, where the index was read
    for (const store::FolderInfo& f : store_.ListFolders(a.snap.info.user, store::Store::FolderDetail::kWithIndex))
      readable.emplace(f.folder, f.uidvalidity);
    for (const store::FolderInfo& f : store_.ListFolders(a.snap.info.user, store::Store::FolderDetail::kRecordOnly)) {
      if (f.created != a.snap.info.created) continue;
      auto it = readable.find(f.folder);
      if (it == readable.end() || it->second == a.snap.info.uidvalidity) return true;
    }
    return false;
  }

  void ReportError(const store::Folder& folder, const store::MessageMeta& m, const std::string& what) {
    ++report_.errors;
    report_.error_lines.push_back(folder.Mailbox() + " UID " + std::to_string(m.uid) + ": " + what);
  }

  void WriteMessage(Ahead& a, uint32_t folder_index, const store::MessageMeta& m) {
    store::Folder& folder = *a.folder;
    format::MessageRecord rec = ToRecord(m);
    if (options_.manifest) {
      encoder_.BeginMessage(rec);
      encoder_.EndMessage();
      Count(m.size, false);
      return;
    }
    if (!reader_) {
      store::ReadAheadOptions read_options;
      read_options.threads = options_.reads ? options_.reads : kDefaultReads;
      reader_ = std::make_unique<store::ReadAhead>([this](store::ReadRequest* r) { return NextRead(r); }, read_options);
    }
    store::ReadResult& file = file_;  // one result, so its buffer is reused
    if (!reader_->Next(&file) || file.tag != ReadTag(a, m.uid))
      Throw(Errc::kInvalidArgument, "backup: internal error: reads out of step at " + folder.Mailbox() + " UID " +
                                        std::to_string(m.uid));
    UniqueFd fd = std::move(file.fd);
    struct stat& st = file.st;
    if (!fd.valid()) {
      try {
        fd = folder.OpenMessage(m.uid);  // tells "expunged meanwhile" from damage
      } catch (const Error& e) {
        if (e.code() != Errc::kCorrupt) throw;
        ReportError(folder, m, "message file " + folder.MessagePath(m.uid) +
                                   " is missing though store.idx lists it (damaged store); left out");
        return;
      }
      if (!fd.valid() && FolderGone(folder)) {
        // Where the folder is now. It may move on while it is read (moved to another partition
        // and back, renamed twice), and a lookup may meet it between two places: looked up
        // again, never taken for deleted while the mboxlist still records it. That left the
        // rest of the folder out of a stream that ended with 0 (found by review, helper-52).
        // Still not found after every look: an error, never silence.
        bool deleted = a.deleted;
        for (int look = 0; look < kRelocationLooks && !fd.valid() && !deleted; ++look) {
          Relocation where = Relocation::kMovedOn;
          try {
            where = OpenAfterRename(a, m, /*fresh=*/look > 0, &fd);
          } catch (const Error& e) {
            if (e.code() != Errc::kCorrupt) throw;
          }
          if (where == Relocation::kExpunged) return;  // expunged after its snapshot
          if (where == Relocation::kNoFolder && !StillRecorded(a)) deleted = a.deleted = true;
        }
        if (!fd.valid() && !deleted) {
          ReportError(folder, m, "the mailbox was moved or renamed while backup read it and could not be found again; "
                                 "the message is left out (run the backup again)");
          return;
        }
        if (!fd.valid()) {
          // Not found under another name: deleted after its snapshot, a mailbox gone like an
          // expunged message, while its user remains; with its user gone, deleted or renamed
          // (an administrator's operation), which the store no longer tells apart.
          if (!a.reported_gone && !store_.FindUser(a.snap.info.user)) {
            a.reported_gone = true;
            ReportError(folder, m, "its user was deleted or renamed while backup read the mailbox; the rest of it is left "
                                   "out (run the backup again)");
          }
          return;
        }
      }
      if (!fd.valid()) return;  // expunged after the snapshot (its record is gone): not part of the folder any more
      if (::fstat(fd.get(), &st) != 0) ThrowErrno("stat " + folder.MessagePath(m.uid));
      file.whole = false;
    }
    if (uint64_t(st.st_size) != m.size) {
      ReportError(folder, m, "message file " + folder.MessagePath(m.uid) + " has " + std::to_string(st.st_size) +
                           " bytes, the index says " + std::to_string(m.size) + "; left out");
      return;
    }
    // Same digest as content already sent: a link once the two are proven the same, by being
    // one file (a hard-linked single-instance source, as Sun's imsbackup links) or by equal bytes.
    const SentContents::Entry* sent = digests_.Find(m.digest);
    const std::optional<std::string_view> sent_folder = sent ? folder_paths_.Find(sent->folder) : std::nullopt;
    if (!sent_folder) sent = nullptr;  // its path is gone
    // Restore links only within the last kLinkCheckWindow contents (docs/stream-format.md §7.4):
    // older content is sent again, and its entry then names the new copy.
    bool renew = false;
    if (sent && last_content_id_ - sent->content_id >= link_window_) {
      sent = nullptr;
      renew = true;
    }
    if (sent) {
      const std::string earlier = std::string(*sent_folder) + "/" + store::MessageRelPath(sent->uid);
      struct stat est;
      bool same = st.st_nlink > 1 && ::stat(earlier.c_str(), &est) == 0 && est.st_ino == st.st_ino &&
                  est.st_dev == st.st_dev;
      if (!same) {
        UniqueFd efd = TryOpenAt(AT_FDCWD, earlier, O_RDONLY, 0, earlier);
        same = efd.valid() && relinker::SameContent(efd.get(), fd.get());  // sizes first, then bytes
      }
      if (same) {
        rec.content_id = sent->content_id;
        encoder_.WriteLink(rec);
        Count(m.size, true);
        return;
      }
    }
    bool held = std::binary_search(receiver_has_.begin(), receiver_has_.end(), std::pair{m.digest, m.size});
    if (!(held ? SendHeld(folder, fd.get(), file, m, rec) : SendBody(folder, fd.get(), file, m, rec))) return;
    uint64_t content_id = last_content_id_;
    if (content_id > UINT32_MAX) Throw(Errc::kInvalidArgument, "backup: more than 2^32 messages in one stream");
    if (renew)
      digests_.Renew(m.digest, static_cast<uint32_t>(content_id), folder_index, m.uid);
    else
      digests_.Insert(m.digest, static_cast<uint32_t>(content_id), folder_index, m.uid);
  }

  // Reads the file, checks it against the recorded digest, and sends it as a message record.
  bool SendBody(store::Folder& folder, int fd, const store::ReadResult& file, const store::MessageMeta& m,
                format::MessageRecord rec) {
    const std::string path = folder.MessagePath(m.uid);
    if (file.whole) {  // read ahead, and hashed, by the reader threads
      if (file.digest != m.digest) {
        ReportError(folder, m, "message file " + path + " does not match its recorded digest; left out");
        return false;
      }
      last_content_id_ = encoder_.BeginMessage(rec);
      encoder_.BodyChunk(file.data.data(), file.data.size());
      encoder_.EndMessage();
      Count(m.size, false);
      return true;
    }
    if (m.size <= kReadChunk) {
      buf_.resize(m.size);
      size_t got = 0;
      while (got < m.size) {
        size_t n = ReadSome(fd, buf_.data() + got, m.size - got, path);
        if (n == 0) break;
        got += n;
      }
      if (got != m.size || DigestOf(buf_.data(), m.size) != m.digest) {
        ReportError(folder, m, "message file " + path + " does not match its recorded digest; left out");
        return false;
      }
      last_content_id_ = encoder_.BeginMessage(rec);
      encoder_.BodyChunk(buf_.data(), m.size);
      encoder_.EndMessage();
      Count(m.size, false);
      return true;
    }
    // Large message: streamed in chunks; a mismatch found at the end cannot be taken back.
    Hasher hasher;
    last_content_id_ = encoder_.BeginMessage(rec);
    buf_.resize(kReadChunk);
    uint64_t left = m.size;
    while (left > 0) {
      size_t n = ReadSome(fd, buf_.data(), std::min<uint64_t>(left, kReadChunk), path);
      if (n == 0) Throw(Errc::kCorrupt, "message file " + path + " shrank while it was read");
      hasher.Update(buf_.data(), n);
      encoder_.BodyChunk(buf_.data(), n);
      left -= n;
    }
    if (hasher.Final() != m.digest)
      Throw(Errc::kCorrupt, "message file " + path + " (" + folder.Mailbox() + " UID " + std::to_string(m.uid) +
                                ") does not match its recorded digest");
    encoder_.EndMessage();
    Count(m.size, false);
    return true;
  }

  // Asks which of this folder's contents, not yet sent in this stream, the receiver already
  // holds. The stream is not flushed first: the receiver answers a QUERY when it arrives, from
  // its repository, whatever it has restored so far. Content sent earlier in this stream goes as
  // a link anyway, so a question asked before that content was sent costs nothing.
  // A content twice in one batch is asked once; across batches it may be asked again (a few
  // bytes), which keeps this set to one batch: it held every content of the folder, ~56 bytes
  // a message (8.4 MB at 150,000, heaptrack of a migrate; helper-92).
  void Ask(Ahead& a) {
    std::vector<std::pair<Digest, uint64_t>> ask;
    std::set<std::pair<Digest, uint64_t>> asked;
    auto send = [&] {
      if (ask.empty()) return;
      a.asked.emplace_back(options_.oracle->Ask(a.snap.info.user, a.snap.info.partition, ask), ask);
      ask.clear();
      asked.clear();
    };
    for (const store::MessageMeta& m : a.snap.messages) {
      if (!SendsData(a, m)) continue;
      if (digests_.Find(m.digest) || !asked.insert({m.digest, m.size}).second) continue;
      ask.emplace_back(m.digest, m.size);
      if (ask.size() == kMaxOracleBatch) send();
    }
    send();
  }

  // Content the receiver holds: read to check the recorded digest and to compute the SHA-256
  // the receiver proves its own copy against; sent as a held record, without the body.
  bool SendHeld(store::Folder& folder, int fd, const store::ReadResult& file, const store::MessageMeta& m,
                const format::MessageRecord& rec) {
    const std::string path = folder.MessagePath(m.uid);
    net::Sha256 sha;
    bool same;
    if (file.whole) {
      sha.Update(file.data.data(), file.data.size());
      same = file.digest == m.digest;
    } else {
      Hasher hasher;
      buf_.resize(kReadChunk);
      uint64_t total = 0;
      for (size_t n; (n = ReadSome(fd, buf_.data(), buf_.size(), path)) > 0; total += n) {
        hasher.Update(buf_.data(), n);
        sha.Update(buf_.data(), n);
      }
      same = total == m.size && hasher.Final() == m.digest;
    }
    if (!same) {
      ReportError(folder, m, "message file " + path + " does not match its recorded digest; left out");
      return false;
    }
    format::HeldRecord held;
    static_cast<format::MessageRecord&>(held) = rec;
    held.sha256 = sha.Final();
    last_content_id_ = encoder_.WriteHeld(held);
    Count(m.size, false, true);
    return true;
  }

  void Count(uint64_t size, bool link, bool held = false) {
    if (link) {
      ++report_.links;
    } else {
      ++report_.messages;
      if (held)
        ++report_.held;
      else
        report_.body_bytes += size;
    }
    report_.message_bytes += size;
    progress_.Add(1, size);
    if (options_.on_progress) options_.on_progress(1, size);
  }

  store::Store& store_;
  const BackupOptions& options_;
  format::Encoder& encoder_;
  Progress progress_;
  SessionReport report_;
  // The paths of the last folders (16,384 by default, as many as 1 MiB holds), by folder index,
  // for the table of sent contents: bounded like that table (16,384 folders are ~230,000
  // messages of a typical store). Content whose folder's path is gone is sent again, as when the
  // table forgets it.
  static constexpr uint32_t kDefaultFolderPathsKept = 16384;
  static constexpr size_t kFolderPathBytes = size_t{1} << 20;
  FolderPathRing folder_paths_;
  SentContents digests_;
  uint64_t link_window_;  // links name one of the last link_window_ contents
  size_t query_ahead_;    // folders asked about before their data is written
  ScanPositions scan_;
  std::optional<store::UserInfo> idle_user_;  // skip_idle_users: a record not written yet
  std::deque<Pending> queue_;
  size_t queued_folders_ = 0, queued_messages_ = 0;
  uint64_t last_content_id_ = 0;
  std::string buf_;
  // The open folder's contents the receiver holds, sorted: 24 bytes each (a std::set took ~80).
  std::vector<std::pair<Digest, uint64_t>> receiver_has_;
  // Reads ahead: the queued folders whose files are still to be asked for, the next message of
  // the first, and the reader (declared last: its threads stop before the folders go).
  std::deque<const Ahead*> feed_;
  // The next read of the feed's first folder (an iterator: a spooled snapshot is read in slices).
  std::optional<store::MessageList::const_iterator> feed_next_;
  uint64_t folders_enqueued_ = 0;
  store::ReadResult file_;
  std::unique_ptr<store::ReadAhead> reader_;
};

}  // namespace

void CheckBackupSelection(store::Store& store, const BackupOptions& options) {
  std::string groups_file =
      options.groups_file.empty() ? store.root() + "/config/backup-groups.conf" : options.groups_file;
  Selection(options.names, ReadBackupGroups(groups_file), groups_file).RequireEveryNameMatches(store);
}

SessionReport Backup(store::Store& store, const BackupOptions& options, format::Encoder& encoder) {
  return BackupSession(store, options, encoder).Run();
}

}  // namespace storemove::stream
