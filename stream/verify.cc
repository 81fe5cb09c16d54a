// verify: proves a destination store holds what the source holds.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <set>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>

#include "store/names.h"
#include "store/read_ahead.h"
#include "stream/records.h"
#include "stream/stream.h"
#include "util/error.h"
#include "util/file_digest.h"
#include "util/interrupt.h"
#include "util/iso_time.h"
#include "util/fs.h"
#include "util/version.h"

namespace storemove::stream {

namespace {

// How often a source folder found gone between its open and its snapshot is opened again.
constexpr int kReopenAttempts = 8;

// Subscriptions and per-user data are sets (the mboxlist keeps them in key order, one of each):
// compared as such, so a manifest that lists them in another order or twice is not a difference.
template <typename T>
std::vector<T> AsSet(std::vector<T> items) {
  std::sort(items.begin(), items.end());
  items.erase(std::unique(items.begin(), items.end()), items.end());
  return items;
}

// A name that is no IMAP keyword is left out, as a restore leaves it out (and the summary).
std::string Names(uint64_t bits, const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < 64; ++i) {
    if (!(bits & (uint64_t(1) << i))) continue;
    if (i < names.size() && !store::IsUserFlagName(names[i])) continue;
    if (!out.empty()) out += ' ';
    out += i < names.size() ? names[i] : "(bit " + std::to_string(i) + ", no keyword)";
  }
  return out;
}

// The keywords of `bits` by name, as a set: a restore that merges into a folder gives names
// other bits, which is no difference. Names are compared exactly, as migrate's proof
// (store::Summarize) compares them: `$junk` and `$Junk` may be two flags of one folder
// (helper-150). A bit without a name, or whose name is no IMAP keyword, is no keyword: a
// restore leaves it out (helper-151).
std::set<std::string> KeywordSet(uint64_t bits, const std::vector<std::string>& names) {
  std::set<std::string> out;
  for (size_t i = 0; i < 64 && i < names.size(); ++i)
    if ((bits & (uint64_t(1) << i)) && store::IsUserFlagName(names[i])) out.insert(names[i]);
  return out;
}

// The digest of a file read ahead: computed by the reader, or here for a file too large to
// have been read whole (or not of the expected size).
Digest DigestOfFile(const store::ReadResult& file, const std::string& shown) {
  return file.whole ? file.digest : storemove::DigestOfFile(file.fd.get(), shown);
}

// A prefetch hint: lists the user's folders and asks for the index of each one `wanted` takes
// (all without it), so that the pass finds them in the page cache.
void ReadFolderIndexes(store::Store& store, const std::string& user,
                       const std::function<bool(const std::string& folder)>& wanted) {
  for (const store::FolderInfo& f : store.ListFolders(user, store::Store::FolderDetail::kRecordOnly))
    if (!wanted || wanted(f.folder)) store.HintFolderIndex(f);
}

// Destination message files whose bytes are still to be proven, in the order the checks found
// them; read kChecksAhead ahead by the reader's threads (on a disk, one file at a time would
// wait for each), so a difference may be reported a few folders after the folder's own lines.
class ByteChecks {
 public:
  ByteChecks(store::Store& store, size_t reads) : store_(store), reads_(reads ? reads : kDefaultReads) {}

  void Add(const store::Folder& folder, std::shared_ptr<const UniqueFd>& dir, uint32_t uid, uint64_t size,
           const Digest& digest, std::string where) {
    if (!dir) dir = store::ReadAhead::ShareDirectory(folder.dir_fd());
    to_read_.push_back({dir, folder.MessagePath(uid), store::MessageRelPath(uid), size, digest, std::move(where),
                        folder.user(), folder.folder(), uid});
  }

  // Proves the pending checks until at most `keep` are left; differences go to `diff(line,
  // mailbox, user)`, the mailbox "" for a line not about one message. Each leaves the user's
  // message unproven.
  template <typename Diff>
  void Settle(size_t keep, Diff diff) {
    while (to_read_.size() + reading_.size() > keep) {
      if (!reader_) {
        store::ReadAheadOptions options;
        options.threads = reads_;
        reader_ = std::make_unique<store::ReadAhead>([this](store::ReadRequest* r) { return NextRead(r); }, options);
      }
      store::ReadResult& file = file_;  // one result, so its buffer is reused
      if (!reader_->Next(&file)) Throw(Errc::kInvalidArgument, "verify: internal error: byte checks out of step");
      const Check& c = reading_.front();
      if (!file.fd.valid() && FolderLeftItsDirectory(c)) {
        // Moved to another partition (or renamed, deleted) after its snapshot: a partition move
        // keeps the name, so the file is read where the record now leads. Each of a moved
        // folder's files read "message file is missing" (helper-71: 2,068 lines for one INBOX
        // while its user was moved between partitions, the store intact).
        if (!Relocate(c, &file)) {
          if (gone_.insert(c.user + '\0' + c.folder).second)
            diff("mailbox user/" + c.user + "/" + c.folder + " was moved, renamed or deleted while verify read "
                 "it; its messages from " + c.where + " on are not proven (run verify again)",
                 "", c.user);
          reading_.pop_front();
          continue;
        }
      }
      const std::string mailbox = "user/" + c.user + "/" + c.folder;
      if (!file.fd.valid())
        diff(c.where + ": message file is missing", mailbox, c.user);
      else if (!S_ISREG(file.st.st_mode))  // a device would be read for ever
        diff(c.where + ": message file " + c.shown + " is not a regular file", mailbox, c.user);
      else if (uint64_t(file.st.st_size) != c.size)  // nothing to read: another size is other bytes
        diff(c.where + ": message file has " + std::to_string(file.st.st_size) + " bytes, the source's index says " +
                 std::to_string(c.size),
             mailbox, c.user);
      else if (DigestOfFile(file, c.shown) != c.digest)
        diff(c.where + ": message bytes do not match the source", mailbox, c.user);
      reading_.pop_front();
    }
  }

  static constexpr size_t kChecksAhead = 1024;

 private:
  struct Check {
    std::shared_ptr<const UniqueFd> dir;
    std::string shown, name;
    uint64_t size;
    Digest digest;
    std::string where;
    std::string user, folder;
    uint32_t uid;
  };

  // The folder's directory no longer holds its index: it was moved, renamed or deleted after
  // the snapshot (a file missing beside an index is damage, store-format.md §6.2).
  static bool FolderLeftItsDirectory(const Check& c) {
    return ::faccessat(c.dir->get(), "store.idx", F_OK, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT;
  }

  // Opens the message where the folder's record now leads (a move may be met between its two
  // places: looked for again, as backup does). False when it is not found there.
  bool Relocate(const Check& c, store::ReadResult* file) {
    if (gone_.count(c.user + '\0' + c.folder)) return false;
    for (int attempt = 1; attempt <= kReopenAttempts; ++attempt) {
      try {
        std::unique_ptr<store::Folder> now = store_.OpenFolder(c.user, c.folder);
        UniqueFd fd = now->OpenMessage(c.uid);
        if (!fd.valid()) continue;  // expunged there since, or the folder moved on again
        if (::fstat(fd.get(), &file->st) != 0) ThrowErrno("stat " + now->MessagePath(c.uid));
        file->fd = std::move(fd);
        file->whole = false;  // DigestOfFile reads it
        return true;
      } catch (const Error& e) {
        if (e.code() != Errc::kNotFound && e.code() != Errc::kCorrupt) throw;
        if (!store_.FindFolder(c.user, c.folder, store::Store::FolderDetail::kRecordOnly)) return false;
      }
    }
    return false;
  }

  bool NextRead(store::ReadRequest* r) {
    if (to_read_.empty()) return false;
    reading_.push_back(std::move(to_read_.front()));
    to_read_.pop_front();
    const Check& c = reading_.back();
    r->dir = c.dir;
    r->name = c.name;
    r->shown = c.shown;
    r->size = c.size;
    return true;
  }

  store::Store& store_;
  const size_t reads_;
  std::set<std::string> gone_;  // folders (user NUL folder) reported moved or gone meanwhile
  std::deque<Check> to_read_;  // not asked for yet
  std::deque<Check> reading_;  // asked for, in the reader's order
  store::ReadResult file_;
  std::unique_ptr<store::ReadAhead> reader_;  // last: its threads stop before the checks go
};

// Statuses that differ only as a migration makes them: the destination's copy is active while
// the source has the user on hold (copy, catch-up, verify) or moved to another host (after the
// switch). Anything else — a held or moved destination, an active source with a destination
// that is not — is a difference.
bool StatusesAgree(const store::UserStatus& dst, const store::UserStatus& src, bool strict) {
  // State and host only: the rest (which store's migration made a copy, whether only its passes
  // wrote it) is provenance, not shown in the line, and differs after every migration: a migrated
  // user compared with its source set active again read "status is active, source has active"
  // (helper-68).
  if (dst.state == src.state && store::UserStatus::SameHost(dst.host, src.host)) return true;  // DNS: any case
  return !strict && dst.state == store::UserState::kActive &&
         (src.state == store::UserState::kHold || src.state == store::UserState::kMoved);
}

// The source's side of one folder, from a snapshot or from a manifest's records.
struct SourceFolder {
  store::FolderInfo info;
  store::MessageList messages;  // sorted by UID
  std::vector<std::pair<std::string, std::string>> peruser;
  // The source folder's directory when the source is a store (verify --source), else none: a
  // destination folder that is that very directory (a partition linked or bind-mounted to the
  // source's) would compare the source with itself, and delete would then remove the only copy.
  std::optional<std::pair<dev_t, ino_t>> directory;
};

// The source's side of one user.
struct SourceUser {
  std::string user;
  store::UserStatus status;
  uint64_t quota_limit = 0;
  std::vector<std::string> subscriptions;
};

class Checker {
 public:
  Checker(store::Store& dst, const VerifyOptions& options)
      : dst_(dst), options_(options), bytes_(dst, options.reads), progress_("verify", options.live_progress) {
    if (options.input_total) progress_.set_input_total(options.input_total);
    if (options.input_consumed) progress_.set_input_source(options.input_consumed);
  }
  Progress& progress() { return progress_; }
  VerifyReport& report() {
    bytes_.Settle(0, Differ());
    // A source or manifest of no users (an empty store, the wrong host's manifest) proves
    // nothing about the destination: not "equal".
    if (report_.users == 0) Diff("nothing compared: the source holds no users; a verify of nothing proves nothing");
    progress_.Finish();
    return report_;
  }

  // A user of the source: whether to look for mailboxes only the destination has of it (false
  // when it is missing; its folders are then reported missing too). A user without mailboxes
  // (`bare`: moved away, its mailboxes deleted; its record defers late mail) is compared by its
  // record where the destination has it: a migration leaves such a user behind, and a migrated
  // one lives here with mailboxes and subscriptions of its own (helper-109, helper-110: both
  // read as differences); missing here, it is one only with --strict-status. That holds for a
  // user whose mail lives elsewhere (moved, or held by a migration); an active one without
  // mailboxes is an account like any other (helper-111).
  bool CheckUser(const SourceUser& su, bool bare = false) {
    const std::optional<store::UserInfo> du = dst_.FindUser(su.user);
    const bool away = bare && su.status.state != store::UserState::kActive;
    if (!du && away && !options_.strict_status) return false;
    ++report_.users;
    if (!bare && su.status.state == store::UserState::kMoved) ++report_.switched_users;
    if (!du) {
      Unproven(su.user, "user " + su.user + " is missing");
      return false;
    }
    if (!StatusesAgree(du->status, su.status, options_.strict_status))
      Diff("user " + su.user + ": status is " + du->status.ToString() + ", source has " + su.status.ToString());
    if (du->quota_limit != su.quota_limit)
      Diff("user " + su.user + ": quota limit is " + std::to_string(du->quota_limit) + ", source has " +
           std::to_string(su.quota_limit));
    if (away && du->status.state == store::UserState::kActive) return false;
    if (AsSet(dst_.Subscriptions(su.user)) != AsSet(su.subscriptions)) Diff("user " + su.user + ": subscriptions differ");
    return true;
  }

  void CheckFolder(const SourceFolder& s) {
    ThrowIfInterrupted("verifying (nobody was recorded as verified)");
    ++report_.folders;
    uint64_t folder_bytes = 0;
    for (const store::MessageMeta& m : s.messages) folder_bytes += m.size;
    progress_.Add(s.messages.size(), folder_bytes);
    const std::string mailbox = s.info.Mailbox();
    std::unique_ptr<store::Folder> dfolder;
    store::FolderSnapshot d;
    // A folder moved to another partition between its open and its snapshot is opened again
    // where its record now leads, as the source's are (helper-71: "no longer exists", exit 66,
    // while a destination user was moved between partitions).
    for (int attempt = 1;; ++attempt) {
      try {
        dfolder = dst_.OpenFolder(s.info.user, s.info.folder);
        d = dfolder->Snapshot();
        break;
      } catch (const Error& e) {
        if (e.code() != Errc::kNotFound) throw;
        const bool recorded = dst_.FindFolder(s.info.user, s.info.folder, store::Store::FolderDetail::kRecordOnly).has_value();
        if (recorded && attempt < kReopenAttempts) continue;
        Unproven(s.info.user,
                 recorded ? "mailbox " + mailbox + " was moved again and again while verify read it; not compared (run "
                                                   "verify again)"
                          : "mailbox " + mailbox + " is missing");
        report_.messages += s.messages.size();
        report_.bytes += folder_bytes;  // the source's, as for the folders compared (helper-72)
        return;
      }
    }
    if (options_.after_destination_snapshot) options_.after_destination_snapshot(mailbox);
    if (s.directory) {
      struct stat st;
      if (::fstat(dfolder->dir_fd(), &st) != 0) ThrowErrno("stat " + dfolder->path());
      if (std::pair(st.st_dev, st.st_ino) == *s.directory)
        Throw(Errc::kInvalidArgument, "source and destination are the same files: mailbox " + mailbox + " is " +
                                          dfolder->path() + " in both stores (a partition linked or mounted to the "
                                          "source's); a store compared with itself proves nothing");
    }
    auto field = [&](const char* name, auto dv, auto sv) {
      if (dv != sv) Diff("mailbox " + mailbox + ": " + name + " is " + std::to_string(dv) + ", source has " + std::to_string(sv));
    };
    field("UIDVALIDITY", d.info.uidvalidity, s.info.uidvalidity);
    field("UIDNEXT", d.info.uidnext, s.info.uidnext);
    field("message count", d.info.count, s.info.count);
    field("bytes", d.info.bytes, s.info.bytes);
    if (d.info.last_append != s.info.last_append)  // a time as the save times are shown (helper-72: raw seconds)
      Diff("mailbox " + mailbox + ": last append time is " + IsoUtcTime(d.info.last_append) + ", source has " +
           IsoUtcTime(s.info.last_append));
    if (d.info.acl != s.info.acl) Diff("mailbox " + mailbox + ": ACL is '" + d.info.acl + "', source has '" + s.info.acl + "'");
    if (AsSet(dst_.PerUser(mailbox)) != AsSet(s.peruser)) Diff("mailbox " + mailbox + ": per-user data differs");

    std::shared_ptr<const UniqueFd> dir;  // shared by the folder's byte checks
    // The same message on both sides: everything but its UID compared.
    auto compare_matched = [&](const store::MessageMeta& sm, const store::MessageMeta& dm, const std::string& where) {
      if (dm.flags != sm.flags)
        Diff(where + ": flags are " + store::FlagNames(dm.flags) + ", source has " + store::FlagNames(sm.flags),
             mailbox);
      if (KeywordSet(dm.user_flags, d.info.user_flag_names) != KeywordSet(sm.user_flags, s.info.user_flag_names))
        Diff(where + ": user flags are '" + Names(dm.user_flags, d.info.user_flag_names) + "', source has '" +
                 Names(sm.user_flags, s.info.user_flag_names) + "'",
             mailbox);
      if (dm.internal_date != sm.internal_date) Diff(where + ": internal date differs", mailbox);
      // Each said by name: after a Maildir export and import only the save time differs (Maildir
      // has no place for it), which "dates or header size differ" did not tell apart.
      if (dm.sent_date != sm.sent_date) Diff(where + ": sent date (Date: header) differs", mailbox);
      if (dm.header_size != sm.header_size) Diff(where + ": header size differs", mailbox);
      if (dm.save_time != sm.save_time)
        Diff(where + ": save time is " + IsoUtcTime(dm.save_time) + ", source has " + IsoUtcTime(sm.save_time),
             mailbox);
      if (options_.check_bytes) {
        bytes_.Add(*dfolder, dir, dm.uid, sm.size, sm.digest, where);
        // Within the folder too: a check costs ~300 bytes, and a 640,000-message folder's
        // queued whole took 190 MB (helper-65's review).
        bytes_.Settle(ByteChecks::kChecksAhead, Differ());
      }
    };
    if (d.info.uidvalidity != s.info.uidvalidity) {
      for (const store::MessageMeta& sm : s.messages) {
        ++report_.messages;
        report_.bytes += sm.size;
      }
      CompareByContent(mailbox, s, d, compare_matched);
      bytes_.Settle(ByteChecks::kChecksAhead, Differ());
      return;
    }
    // Both sides are sorted by UID (Snapshot): one merge, no map of either (at 640,000 messages
    // a map cost 60 MB more than the snapshots themselves).
    auto next = d.messages.begin();
    auto destination_only = [&](uint32_t below) {
      for (; next != d.messages.end() && next->uid < below; ++next)
        Diff("mailbox " + mailbox + " UID " + std::to_string(next->uid) + " is not in the source", mailbox);
    };
    for (const store::MessageMeta& sm : s.messages) {
      ++report_.messages;
      report_.bytes += sm.size;
      std::string where = "mailbox " + mailbox + " UID " + std::to_string(sm.uid);
      destination_only(sm.uid);
      if (next == d.messages.end() || next->uid != sm.uid) {
        Unproven(s.info.user, where + " is missing", mailbox);
        continue;
      }
      const store::MessageMeta dm = *next;
      ++next;
      if (dm.digest != sm.digest || dm.size != sm.size) {
        Unproven(s.info.user,
                 where + ": content differs (" + std::to_string(dm.size) + " bytes, source " + std::to_string(sm.size) + ")",
                 mailbox);
        continue;
      }
      compare_matched(sm, dm, where);
    }
    destination_only(UINT32_MAX);
    if (next != d.messages.end())
      Diff("mailbox " + mailbox + " UID " + std::to_string(next->uid) + " is not in the source", mailbox);
    bytes_.Settle(ByteChecks::kChecksAhead, Differ());
  }

 private:
  // `mailbox` when the line is about one message of it (verify caps those per mailbox), else "".
  void Diff(const std::string& line, const std::string& mailbox = "") {
    report_.Add(line, mailbox, options_.differences_kept_per_mailbox);
  }
  // A difference that leaves some of the user's mail at the source unproven at the destination.
  void Unproven(const std::string& user, const std::string& line, const std::string& mailbox = "") {
    Diff(line, mailbox);
    if (options_.unproven) options_.unproven(user);
  }
  // Unproven, for ByteChecks::Settle.
  std::function<void(const std::string&, const std::string&, const std::string&)> Differ() {
    return [this](const std::string& line, const std::string& mailbox, const std::string& user) {
      Unproven(user, line, mailbox);
    };
  }

  // Another UIDVALIDITY (the mailbox was made here first, and a restore appended the source's
  // messages under new UIDs): a UID names another message on each side, and comparing by UID
  // told of dates that differ, never of a message that is missing (helper-81). Matched by
  // content instead: bytes (digest, size) and save time, then bytes alone (a save time that
  // differs is then said); what is left is missing here, or here only. A key per message (40
  // bytes); the records themselves are read from the snapshots by position.
  template <typename CompareMatched>
  void CompareByContent(const std::string& mailbox, const SourceFolder& s, const store::FolderSnapshot& d,
                        const CompareMatched& compare_matched) {
    struct Key {
      Digest digest;
      uint64_t size;
      int64_t save_time;
      uint32_t uid;
      uint32_t pos;  // in its snapshot
    };
    auto keys = [](const store::MessageList& messages) {
      std::vector<Key> out;
      out.reserve(messages.size());
      uint32_t pos = 0;
      for (const store::MessageMeta& m : messages) out.push_back({m.digest, m.size, m.save_time, m.uid, pos++});
      return out;
    };
    std::vector<Key> source = keys(s.messages), here = keys(d.messages);
    std::vector<std::pair<uint32_t, uint32_t>> matched;  // positions: source, here
    // One merge of both sides sorted by `key`; the unmatched are left for the next.
    auto pass = [&](auto key) {
      auto by = [&](const Key& a, const Key& b) { return std::pair(key(a), a.uid) < std::pair(key(b), b.uid); };
      std::sort(source.begin(), source.end(), by);
      std::sort(here.begin(), here.end(), by);
      std::vector<Key> source_left, here_left;
      size_t i = 0, j = 0;
      while (i < source.size() || j < here.size()) {
        if (j == here.size() || (i < source.size() && key(source[i]) < key(here[j])))
          source_left.push_back(source[i++]);
        else if (i == source.size() || key(here[j]) < key(source[i]))
          here_left.push_back(here[j++]);
        else
          matched.emplace_back(source[i++].pos, here[j++].pos);
      }
      source.swap(source_left);
      here.swap(here_left);
    };
    pass([](const Key& k) { return std::tuple(k.digest.bytes, k.size, k.save_time); });
    pass([](const Key& k) { return std::tuple(k.digest.bytes, k.size); });
    std::sort(matched.begin(), matched.end());
    for (const auto& [source_pos, here_pos] : matched) {
      const store::MessageMeta sm = s.messages[source_pos], dm = d.messages[here_pos];
      compare_matched(sm, dm, "mailbox " + mailbox + " source UID " + std::to_string(sm.uid) + " (UID " +
                                  std::to_string(dm.uid) + " here)");
    }
    auto by_uid = [](const Key& a, const Key& b) { return a.uid < b.uid; };
    std::sort(source.begin(), source.end(), by_uid);
    for (const Key& m : source)
      Unproven(s.info.user, "mailbox " + mailbox + " source UID " + std::to_string(m.uid) + " (" + std::to_string(m.size) +
           " bytes, saved " + IsoUtcTime(m.save_time) +
           ") is missing (fewer messages here have its bytes; the UIDVALIDITY differs, so compared by content)",
           mailbox);
    std::sort(here.begin(), here.end(), by_uid);
    for (const Key& m : here)
      Diff("mailbox " + mailbox + " UID " + std::to_string(m.uid) + " is not in the source (compared by content)",
           mailbox);
  }

 public:
  // A folder of a user being compared that the source does not have.
  void DestinationOnly(const store::FolderInfo& f) {
    Diff("mailbox " + f.Mailbox() + " is at the destination only (the source has no such mailbox)");
  }
  // The destination's own account of a user compared whole: the bytes in use its quota record
  // says against what its mailboxes hold (store.idx headers, as Store::RecomputeQuota counts).
  // Usage set too high defers every delivery as over quota; it read "equal" (helper-107).
  void CheckQuotaUsed(const std::string& user) {
    const uint64_t held = dst_.FolderBytes(user);
    const std::optional<store::UserInfo> du = dst_.FindUser(user);
    if (du && du->quota_used != held)
      Diff("user " + user + ": quota usage here is " + std::to_string(du->quota_used) + " bytes, its mailboxes here hold " +
           std::to_string(held) + " (storemove user " + user + " --recount-quota, or a rerun of the restore of the user, counts it again)");
  }

 private:
  store::Store& dst_;
  const VerifyOptions& options_;
  VerifyReport report_;
  ByteChecks bytes_;
  Progress progress_;
};


}  // namespace

void RefuseSameStore(const std::string& destination_root, const std::string& source_root) {
  if (SameFile(destination_root, source_root))
    Throw(Errc::kInvalidArgument, "source and destination are the same store: " + destination_root + " and " +
                                      source_root + " are one directory (a store compared with itself proves nothing)");
}

VerifyReport CompareStores(store::Store& destination, store::Store& source, const VerifyOptions& options) {
  RefuseSameStore(destination.root(), source.root());
  Selection selection(options.names, ReadBackupGroups(source.root() + "/config/backup-groups.conf"));
  // A mistyped name would otherwise compare nothing and call that equal.
  selection.RequireEveryNameMatches(source, "verify");
  Checker checker(destination, options);
  // The users' bytes in use are the total (as backup's): the selection may take fewer folders.
  // A pass of its own, summing as it goes: the users are not kept (they were listed first, 39 MB
  // of records at 100,000 users, ~390 MB at a million).
  uint64_t expected_bytes = 0;
  source.ForEachUser([&](const store::UserInfo& u) {
    if (selection.WantsUser(u)) expected_bytes += u.quota_used;
  });
  checker.progress().set_total(0, expected_bytes);
  // Both stores' folder indexes of the users kUsersAhead ahead are read by prefetch threads:
  // on a cold disk each is a few dependent reads.
  constexpr size_t kUsersAhead = 32;
  store::Prefetcher prefetch(source.root(), std::clamp<size_t>((options.reads ? options.reads : kDefaultReads) / 2, 1, 8),
                             2 * kUsersAhead);
  auto warm = [&](const store::UserInfo& u) {
    for (store::Store* s : {&source, &destination})
      prefetch.Submit([s, &selection, u] {
        ReadFolderIndexes(*s, u.user, [&](const std::string& folder) { return selection.WantsFolder(u, folder); });
      });
  };
  auto compare = [&](const store::UserInfo& u) {
    if (options.before_user) options.before_user(u.user);
    // The names only (each folder's counters come from its snapshot below), sorted for the
    // look-ups: a user of 40,000 folders held their records twice over (helper-162).
    std::vector<std::string> folders;
    size_t all_folders = 0;
    {
      std::vector<store::FolderInfo> listed = source.ListFolders(u.user, store::Store::FolderDetail::kRecordOnly);
      all_folders = listed.size();
      for (store::FolderInfo& f : listed)
        if (selection.WantsFolder(u, f.folder)) folders.push_back(std::move(f.folder));
    }
    std::sort(folders.begin(), folders.end());
    if (folders.empty()) {
      // A user without mailboxes is its record, compared wherever a name would take its INBOX,
      // as backup takes it: its record changed at the destination went unnoticed (helper-107).
      if (all_folders == 0 && selection.WantsFolder(u, "INBOX") &&
          checker.CheckUser({u.user, u.status, u.quota_limit, source.Subscriptions(u.user)}, /*bare=*/true))
        for (const store::FolderInfo& f : destination.ListFolders(u.user, store::Store::FolderDetail::kRecordOnly))
          if (selection.WantsFolder(u, f.folder)) checker.DestinationOnly(f);
      return;
    }
    const bool user_present = checker.CheckUser({u.user, u.status, u.quota_limit, source.Subscriptions(u.user)});
    for (const std::string& name : folders) {
      // A folder moved to another partition between its open and its snapshot (the move keeps
      // its name) is opened again where its record now leads; it used to end the run with
      // "no longer exists" (66) on an unchanged store (found by review, helper-52).
      store::FolderSnapshot snap;
      struct stat st;
      for (int attempt = 1;; ++attempt) {
        try {
          std::unique_ptr<store::Folder> folder = source.OpenFolder(u.user, name);
          if (::fstat(folder->dir_fd(), &st) != 0) ThrowErrno("stat " + folder->path());
          snap = folder->Snapshot();
          break;
        } catch (const Error& e) {
          if (e.code() != Errc::kNotFound || attempt == kReopenAttempts) throw;
        }
      }
      checker.CheckFolder({snap.info, std::move(snap.messages), source.PerUser("user/" + u.user + "/" + name),
                           std::pair(st.st_dev, st.st_ino)});
    }
    // A folder deleted at the source after the copy (or made at the destination only).
    if (user_present)
      for (const store::FolderInfo& f : destination.ListFolders(u.user, store::Store::FolderDetail::kRecordOnly))
        if (selection.WantsFolder(u, f.folder) && !std::binary_search(folders.begin(), folders.end(), f.folder))
          checker.DestinationOnly(f);
    if (folders.size() == all_folders) {
      if (options.compared_whole) options.compared_whole(u.user);
      if (user_present) checker.CheckQuotaUsed(u.user);
    }
  };
  // The users in the scan's order, each compared once kUsersAhead more are read (and warmed).
  // A user deleted between its read and its comparison is compared as it is then (without
  // mailboxes), as when the users were listed first; one made meanwhile is compared if the scan
  // had not passed its place.
  std::deque<store::UserInfo> ahead;
  source.ForEachUser([&](const store::UserInfo& u) {
    if (!selection.WantsUser(u)) return;
    warm(u);
    ahead.push_back(u);
    if (ahead.size() > kUsersAhead) {
      compare(ahead.front());
      ahead.pop_front();
    }
  });
  for (; !ahead.empty(); ahead.pop_front()) compare(ahead.front());
  return std::move(checker.report());
}

// Reads the destination's folder indexes of the users ahead of the manifest's on prefetch
// threads: on a cold disk each is a few dependent reads, which the checks would otherwise wait for
// one after another. A manifest lists its users in the order of its store's user scan, the key
// order the destination's scan has too, so a scan of the destination kept kUsersAhead users ahead
// of the checks warms what they will read. The destination may hold users the manifest does not
// name (a manifest of a group, a destination serving others too): those warmed and then passed
// over are wasted reads, so once they outnumber the users warmed and then checked by
// kUsersAhead, the warming stops (only hints, whose errors are ignored).
class DestinationWarmer {
 public:
  DestinationWarmer(store::Store& destination, size_t reads)
      : destination_(destination),
        prefetch_(destination.root(), std::clamp<size_t>((reads ? reads : kDefaultReads) / 2, 1, 8), 2 * kUsersAhead),
        scan_(prefetch_.enabled() ? std::thread([this] { Scan(); }) : std::thread()) {}
  ~DestinationWarmer() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    moved_.notify_all();
    if (scan_.joinable()) scan_.join();
  }
  DestinationWarmer(const DestinationWarmer&) = delete;
  DestinationWarmer& operator=(const DestinationWarmer&) = delete;

  // The checks are at `user` (users come in key order).
  void UserChecked(const std::string& user) {
    {
      std::lock_guard lock(mu_);
      checked_ = user;
      for (auto it = ahead_.begin(); it != ahead_.end() && *it <= user; it = ahead_.erase(it))
        ++(*it == user ? used_ : wasted_);
      if (wasted_ > used_ + kUsersAhead) stopping_ = true;
    }
    moved_.notify_one();
  }

 private:
  static constexpr size_t kUsersAhead = 32;
  struct Stopped {};

  void Scan() {
    try {
      destination_.ForEachUser([this](const store::UserInfo& u) {
        {
          std::unique_lock lock(mu_);
          moved_.wait(lock, [this] { return stopping_ || ahead_.size() < kUsersAhead; });
          if (stopping_) throw Stopped{};
          if (!checked_.empty() && u.user <= checked_) return;  // the checks are past it already
          ahead_.insert(u.user);
        }
        prefetch_.Submit([this, user = u.user] { ReadFolderIndexes(destination_, user, nullptr); });
      });
    } catch (...) {
      // Stopped, or a scan that failed: only hints, the checks meet any real error themselves.
    }
  }

  store::Store& destination_;
  store::Prefetcher prefetch_;
  std::mutex mu_;
  std::condition_variable moved_;
  std::set<std::string> ahead_;  // warmed, not reached by the checks yet (at most kUsersAhead)
  std::string checked_;          // the user the checks are at
  size_t used_ = 0, wasted_ = 0;
  bool stopping_ = false;
  std::thread scan_;  // last: started once everything it uses is built, joined first
};

VerifyReport VerifyManifest(store::Store& destination, format::Decoder& manifest, const VerifyOptions& options) {
  using Event = format::Decoder::Event;
  Checker checker(destination, options);
  DestinationWarmer warmer(destination, options.reads);
  SourceFolder folder;
  // The manifest's records of one folder: spooled beyond a bound, as a snapshot's are.
  std::optional<store::MessageListBuilder> records;
  auto open_records = [&]() -> store::MessageListBuilder& {
    if (!records) records.emplace(destination.snapshot_records_in_memory());
    return *records;
  };
  auto add = [&](const store::MessageMeta& m) { open_records().Add(&m, 1); };
  for (;;) {
    switch (manifest.Next()) {
      case Event::kHeader:
        if (manifest.header().since)
          Throw(Errc::kInvalidArgument, "verify: the manifest is incremental (-d); a full manifest is needed");
        break;
      case Event::kUser: {
        const format::UserRecord& r = manifest.user();
        warmer.UserChecked(r.user);
        checker.CheckUser({r.user, store::UserStatus::Parse(r.status), r.quota_limit, r.subscriptions});
        break;
      }
      case Event::kFolder: {
        const format::FolderRecord& r = manifest.folder();
        // An unchanged folder lists no messages: only a complete block describes the folder.
        if (r.unchanged())
          Throw(Errc::kInvalidArgument, "verify: the manifest's folder user/" + r.user + "/" + r.folder +
                                            " is an unchanged block (no messages); a complete manifest is needed");
        folder = SourceFolder{};
        folder.info.user = r.user;
        folder.info.folder = r.folder;
        folder.info.partition = r.partition;
        folder.info.uidvalidity = r.uidvalidity;
        folder.info.uidnext = r.uidnext;
        folder.info.count = r.count;
        folder.info.bytes = r.bytes;
        folder.info.last_append = r.last_append;
        folder.info.acl = r.acl;
        folder.info.user_flag_names = r.user_flag_names;
        folder.peruser = r.peruser;
        records.reset();
        break;
      }
      case Event::kMessage: add(ToMeta(manifest.message())); break;
      case Event::kLink: add(ToMeta(manifest.link())); break;
      case Event::kHeld: add(ToMeta(manifest.held())); break;
      case Event::kMeta: add(ToMeta(manifest.meta())); break;
      case Event::kBody:
      case Event::kMessageEnd: break;
      case Event::kFolderEnd:
        store::ValidateUserId(folder.info.user);
        store::ValidateStoredFolderName(folder.info.folder);
        // CheckFolder merges by UID; a manifest lists a folder's messages in UID order, and one
        // that does not is sorted (in memory) by Finish, so it is still compared message by message.
        folder.messages = open_records().Finish();
        records.reset();
        checker.CheckFolder(folder);
        break;
      case Event::kEnd: return std::move(checker.report());
    }
  }
}

void VerifyReport::Add(const std::string& line, const std::string& mailbox, size_t keep_per_mailbox) {
  ++lines_added;
  if (!mailbox.empty() && keep_per_mailbox != 0 && kept_per_mailbox[mailbox]++ >= keep_per_mailbox) {
    LeftOut& out = left_out[mailbox];
    ++out.count;
    out.before = differences.size();
    out.order = lines_added;
    ++left_out_total;
    return;
  }
  differences.push_back(line);
  difference_mailboxes.push_back(mailbox);
}

std::vector<std::string> VerifyReport::Listing(size_t per_mailbox) const {
  if (per_mailbox == 0) return differences;
  // Each mailbox's lines about single messages, and where its last one is: its count of the
  // lines left out follows that one. Where lines were left out as they came (Add), the last of
  // a mailbox is one of those, which came before the kept line `before`.
  std::map<std::string, std::pair<size_t, size_t>> of;  // mailbox: lines, index of the last
  for (size_t i = 0; i < differences.size(); ++i)
    if (i < difference_mailboxes.size() && !difference_mailboxes[i].empty()) {
      auto& [lines, last] = of[difference_mailboxes[i]];
      ++lines;
      last = i;
    }
  std::map<size_t, std::vector<std::pair<uint64_t, std::string>>> counted_before;  // kept line: (order, mailbox)
  for (const auto& [mailbox, counted] : left_out) {
    of[mailbox].first += counted.count;
    counted_before[counted.before].emplace_back(counted.order, mailbox);
  }
  std::vector<std::string> out;
  auto count_line = [&](const std::string& mailbox) {
    const size_t more = of.at(mailbox).first - per_mailbox;
    out.push_back("... and " + std::to_string(more) + " more difference" + (more == 1 ? "" : "s") + " in " + mailbox);
  };
  auto counts_before = [&](size_t i) {
    auto it = counted_before.find(i);
    if (it == counted_before.end()) return;
    std::sort(it->second.begin(), it->second.end());
    for (const auto& [order, mailbox] : it->second)
      if (of.at(mailbox).first > per_mailbox) count_line(mailbox);
  };
  std::map<std::string, size_t> shown;
  for (size_t i = 0; i < differences.size(); ++i) {
    counts_before(i);
    const std::string* mailbox = i < difference_mailboxes.size() && !difference_mailboxes[i].empty()
                                     ? &difference_mailboxes[i]
                                     : nullptr;
    if (!mailbox) {
      out.push_back(differences[i]);
      continue;
    }
    if (shown[*mailbox]++ < per_mailbox) out.push_back(differences[i]);
    const auto& [lines, last] = of.at(*mailbox);
    if (i == last && lines > per_mailbox && !left_out.count(*mailbox)) count_line(*mailbox);
  }
  counts_before(differences.size());
  return out;
}

std::string VerifyReport::Json() const {
  nlohmann::json j = {{"users", users},     {"folders", folders},       {"messages", messages},
                      {"bytes", bytes},     {"equal", equal()},         {"differences", differences},
                      {"switched_users", switched_users},
                      {"storemove_version", Version()}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace storemove::stream
