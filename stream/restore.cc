// The restore side: records -> store, with imsrestore's semantics (sun-store.md §2) and
// restore-time single instance through the partition's digest repository.
#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "store/admin.h"
#include "store/stale_temporaries.h"
#include "store/writeback.h"
#include "stream/content_filter.h"
#include "stream/net.h"
#include "stream/records.h"
#include "stream/stream.h"
#include "stream/toc.h"
#include "util/digest.h"
#include "util/error.h"
#include "util/file_digest.h"
#include "util/iso_time.h"
#include "util/plural.h"
#include "util/printable.h"
#include "util/read_block.h"
#include "stream/progress.h"
#include "stream/skipped_contents.h"

namespace storemove::stream {

namespace {

// One old=new of a -m map into *map, checked: two valid user ids, `from` not mapped before, and
// `to` not the name of another (*targets: new -> old). Two users into one mailbox tree would
// merge their mail beyond telling apart.
void AddUserMapping(const std::string& from, const std::string& to, std::map<std::string, std::string>* map,
                    std::map<std::string, std::string>* targets) {
  store::ValidateNewUserId(from);  // a map's own ids: a stray byte-order mark is refused, named
  store::ValidateNewUserId(to);
  if (auto [it, fresh] = map->emplace(from, to); !fresh)
    Throw(Errc::kInvalidArgument, from + " is mapped twice (to " + it->second + " and to " + to + ")");
  if (auto [it, fresh] = targets->emplace(to, from); !fresh)
    Throw(Errc::kInvalidArgument, it->second + " and " + from + " would both be restored as " + to + "; their mail would merge");
}

}  // namespace

std::map<std::string, std::string> ReadUserMap(const std::string& path) {
  std::map<std::string, std::string> map;
  std::map<std::string, std::string> targets;  // new -> old
  std::ifstream in(path);
  if (!in) Throw(Errc::kNotFound, "cannot read map file " + path);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    // A byte-order mark (Windows editors write one) made the first line's old id "\uFEFFjoe", a
    // valid id no stream has: joe was restored as joe, into another user's mail (helper-103).
    if (lineno == 1 && line.starts_with("\xEF\xBB\xBF")) line.erase(0, 3);
    if (line.empty() || line[0] == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos)
      Throw(Errc::kInvalidArgument, path + " line " + std::to_string(lineno) + ": expected old=new");
    try {
      AddUserMapping(line.substr(0, eq), line.substr(eq + 1), &map, &targets);
    } catch (const Error& e) {
      Throw(e.code(), path + " line " + std::to_string(lineno) + ": " + e.what());
    }
  }
  return map;
}

void CheckUserMap(const std::map<std::string, std::string>& user_map) {
  std::map<std::string, std::string> map, targets;
  for (const auto& [from, to] : user_map) AddUserMapping(from, to, &map, &targets);
}

std::string RestorePartition(store::Store& store, const RestoreOptions& options, const std::string& user,
                             const std::string& source_partition) {
  if (std::optional<store::UserInfo> existing = store.FindUser(user)) return existing->partition;
  if (!options.partition.empty()) return options.partition;
  // Looked up, not listed: asked for every new user of the stream.
  return store.HasPartition(source_partition) ? source_partition : store.DefaultPartition();
}

namespace {


std::string Today() {
  std::time_t t = std::time(nullptr);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y%m%d", &tm);
  return buf;
}

// Which stream a folder came from (FolderInfo::origin): a digest of what tells two backups
// apart, the same for every read of one stream file.
std::string OriginOf(const format::StreamHeader& h) {
  std::string id;
  for (const std::string& part : {std::to_string(static_cast<int>(h.kind)), std::to_string(h.created),
                                  std::to_string(h.since), h.source_host, h.store_id}) {
    id += std::to_string(part.size()) + ":" + part;
  }
  for (const std::string& name : h.selection) id += std::to_string(name.size()) + ":" + name;
  return DigestOf(id).Hex();
}

// A user that exists here may be mirrored over by a migrate only while it is a copy: on hold
// (as every pass leaves it until the switch), or adopted (its switch was begun by an attempt of
// this very migration that did not finish).
void CheckCopyOnHold(const store::UserInfo& here, const RestoreOptions& options) {
  // Only a copy this source's migration made may be adopted (its origin, kept by the switch, is
  // this source): a record names the source's own users, and a record gone wrong (or naming
  // another store that serves this address now) must not let a pass mirror over a user made
  // here or by another store's migration (helper-152). A source without a store id makes copies
  // of no origin, which cannot be told from users made here: taken as before (helper-153: with
  // a non-empty origin required, such a migration could never finish a switch cut off).
  if (options.adopt.count(here.user) && here.status.origin_store == options.copy_source) return;
  if (here.status.state == store::UserState::kHold) {
    // A copy another store's migration made stays that store's, held by hand or not: its
    // folders' UIDs and UIDVALIDITYs are the other store's, and a mirror pass would mix the two
    // stores' mail (helper-58, helper-59). A copy of unknown origin (held by hand, made by an
    // older version) may be taken over, as before.
    const std::string& of = here.status.origin_store;
    if (of.empty() || options.copy_source.empty() || of == options.copy_source) return;
    Throw(Errc::kExists,
          "user " + EscapeControls(here.user) + " is on hold here as a copy of another store (store id " +
              EscapeControls(of) + "; this one is " + EscapeControls(options.copy_source) +
              "), made by that store's migration: two stores' users of one id would mix their mail in it, so "
              "nothing is written. Migrate this store into another destination, or, if its mail is to replace "
              "that copy, delete the copy here first (storemove delete --force USER on this store)");
  }
  Throw(Errc::kExists,
        "user " + EscapeControls(here.user) + " is live here (status " + here.status.ToString() +
            "), not a copy a migrate is making (those stay on hold until the switch): a pass would overwrite its "
            "mail, so nothing is written. If the user came back to the source and this copy is to be replaced, or an "
            "older storemove's unfinished migration left it active, set it to hold here first (storemove user USER "
            "--status hold on this store); else migrate it from here");
}

// A per-folder error that -c y lets the restore skip.
struct FolderError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class RestoreSession {
  // The identity of a file: what a link must find again to use it.
  struct FileId {
    uint64_t dev = 0, ino = 0;
    static FileId Of(const struct stat& st) { return {uint64_t(st.st_dev), uint64_t(st.st_ino)}; }
    bool empty() const { return dev == 0 && ino == 0; }
    bool operator==(const FileId&) const = default;
  };
  struct FileIdHash {
    size_t operator()(const FileId& f) const { return std::hash<uint64_t>()(f.ino * 0x9e3779b97f4a7c15ull ^ f.dev); }
  };

 public:
  RestoreSession(store::Store* store, format::Decoder& decoder, const RestoreOptions& options, std::ostream* toc)
      : store_(store),
        decoder_(decoder),
        options_(options),
        toc_(toc ? std::make_unique<TocWriter>(*toc, options.toc_json) : nullptr),
        progress_("restore", options.live_progress) {
    if (!options.names.empty()) selection_.emplace(options.names, options.groups, options.groups_file);
    for (const std::string& name : options.names)  // "user/joe" as given, no wildcard (not user/*/INBOX)
      if (name.starts_with("user/") && name.find_first_of("/*%", 5) == std::string::npos && name.size() > 5)
        bare_user_names_.insert(name.substr(5));
    if (options.input_total) progress_.set_input_total(options.input_total);
    if (options.input_consumed) progress_.set_input_source(options.input_consumed);
    if (store_) writeback_.emplace(*store_);
  }

  SessionReport Run() {
    using Event = format::Decoder::Event;
    for (;;) {
      Event ev;
      try {
        ev = decoder_.Next();
      } catch (const Error& e) {
        AbandonFolder();  // a corrupt or truncated stream: no staged file of the open folder left behind
        if (!store_ || report_.folders == 0) throw;
        // What the operator needs next: the error alone did not say that a rerun finishes it (helper-97).
        const bool open = in_folder_ && !skipping_;
        const uint64_t whole = (selection_ ? report_.selected_folders : report_.folders) - (open ? 1 : 0);
        Throw(e.code(), std::string(e.what()) + "; restored before it: " + Counted(whole, "folder") + ", each whole" +
                            (open ? " (the one it was in is not visible)" : "") +
                            ": a rerun with the complete stream finishes");
      }
      switch (ev) {
        case Event::kHeader:
          if (toc_) PrintHeader();
          OnHeader();
          break;
        case Event::kUser: OnUser(decoder_.user()); break;
        case Event::kFolder:
          in_folder_ = true;
          Guard([&] { OnFolder(decoder_.folder()); });
          break;
        case Event::kMessage:
          // Content ids count every message record of the stream, whatever happens to it here.
          NewContent();
          ++folder_carried_;
          if (skipping_) KeepSkipped(decoder_.message());
          Guard([&] { OnMessage(decoder_.message()); });
          break;
        case Event::kBody:
          if (skipping_) skipped_.Append(decoder_.body());
          Guard([&] { OnBody(decoder_.body()); });
          break;
        case Event::kMessageEnd:
          if (skipping_) skipped_.End();
          Guard([&] { OnMessageEnd(); });
          break;
        case Event::kLink:
          ++folder_carried_;
          Guard([&] { OnLink(decoder_.link()); });
          break;
        case Event::kHeld:
          NewContent();  // a held record takes a content id too
          ++folder_carried_;
          Guard([&] { OnHeld(decoder_.held()); });
          break;
        case Event::kMeta:
          ++folder_carried_;
          Guard([&] { OnMeta(decoder_.meta()); });
          break;
        case Event::kFolderEnd:
          Guard([&] { OnFolderEnd(); });
          skipping_ = false;
          in_folder_ = false;
          break;
        case Event::kEnd:
          CountBareUser();  // before Finish: a user made here is checkpointed and its quota counted
          Finish();
          NoteUsersMadeMoved();
          NoteRecordsOfMovedUsersLeftOut();
          // A typo in the map (jeo=jim) left joe restored as joe without a word, -t too (helper-103).
          for (const auto& [from, to] : options_.user_map)
            if (!mapped_seen_.count(from))
              AddNote("-m " + from + "=" + to + ": the stream has no user record or folder of " + from +
                      ": that line restored nobody as " + to);
          if (selection_ && (report_.selected_folders != 0 || selected_bare_users_ != 0)) {
            // One name of several that selected nothing (a typo) was silent: the others' mail came,
            // exit 0 (helper-105). Said, exit 66, as one name alone is; what the others selected stays.
            names_matched_.resize(selection_->names());
            for (size_t i = 0; i < names_matched_.size(); ++i) {
              if (names_matched_[i]) continue;
              CountError(Errc::kNotFound);
              AddErrorLine("'" + selection_->name(i) +
                           "' selects no mailbox of the stream (names as the stream has them, before -m); the "
                           "mailboxes the other names select are restored");
            }
          }
          if (selection_ && report_.selected_folders == 0 && selected_bare_users_ == 0) {
            std::string names;
            for (const std::string& name : options_.names) names += (names.empty() ? "'" : ", '") + EscapeControls(name) + "'";
            Throw(Errc::kNotFound, "restore: " + names + " select" + (options_.names.size() == 1 ? "s" : "") +
                                       " no mailbox of the stream (names as the stream has them, before -m; "
                                       "user/NAME is the INBOX, user/NAME/* every folder); nothing restored");
          }
          return report_;
      }
    }
  }

 private:
  enum class Mode { kNew, kMerge, kAppend };

  // A damaged stream stops a restore even with -c y, and so does a server session's giving up
  // on a user another writer holds: skipping would only wait again for the user's next folder.
  bool StopsTheRestore(const Error& e) const {
    return !options_.continue_on_error || e.code() == Errc::kCorrupt || gave_up_on_user_;
  }

  // Runs a folder step; a problem with this folder either stops the restore or, with -c y,
  // is reported while the rest of the folder's records are read and dropped.
  template <class F>
  void Guard(F&& step) {
    if (skipping_) return;
    try {
      step();
    } catch (const Error& e) {
      if (refusing_user_) {
        refusing_user_ = false;
        AbandonFolder();
        throw;
      }
      if (StopsTheRestore(e)) {
        AbandonFolder();
        // The one line the administrator sees names the mailbox (a refused ACL or flag name
        // does not by itself).
        // A folder the stream cannot have here (a name, ACL or flag an older version accepted)
        // says that -c y skips it: the users after it were left unrestored without a word of the
        // way round. Not a full disk or an I/O error, which every later folder would meet too.
        const bool skippable = !options_.continue_on_error && e.code() == Errc::kInvalidArgument &&
                               !gave_up_on_user_ && !options_.accept_held && !current_mailbox_.empty();
        const std::string hint = skippable ? "; restore -c y skips such a folder and goes on" : "";
        if (current_mailbox_.empty() || std::string_view(e.what()).find(current_mailbox_) != std::string_view::npos) {
          if (hint.empty()) throw;
          Throw(e.code(), e.what() + hint);
        }
        Throw(e.code(), EscapeControls(current_mailbox_) + ": " + e.what() + hint);
      }
      CountError(e.code());
      AddErrorLine(current_mailbox_ + ": " + e.what() + "; folder skipped");
      AbandonFolder();
      skipping_ = true;
    }
  }

  std::set<std::string> map_targets_;               // the -m map's new names
  std::set<std::string> mapped_seen_;               // the -m map's old names the stream has
  std::map<std::string, std::string> restored_as_;  // such a name -> the stream's user restored as it
  std::set<std::string> created_as_mapped_;         // users this restore created under a -m name
  // copy_on_hold: the users this session checked and marked as its copies (OnUser), each with
  // whether the copy is untouched (UserStatus::untouched_copy): only such a copy's folders are
  // replaced when the source re-created them. A folder of any other user is checked before it
  // is written (a stream whose folder comes without its user).
  std::set<std::string> moved_by_stream_;  // users moved here by this stream's kept status (OnUser)
  std::map<std::string, bool> copies_claimed_;
  std::string MapUser(const std::string& user) const {
    auto it = options_.user_map.find(user);
    return it == options_.user_map.end() ? user : it->second;
  }

  std::string MapMailbox(const std::string& mailbox) const {
    if (!mailbox.starts_with("user/")) return mailbox;
    size_t slash = mailbox.find('/', 5);
    std::string user = mailbox.substr(5, slash == std::string::npos ? std::string::npos : slash - 5);
    std::string rest = slash == std::string::npos ? "" : mailbox.substr(slash);
    return "user/" + MapUser(user) + rest;
  }

  // Held records say "you hold these bytes"; only a peer that proved it holds the key may say
  // that (docs/stream-format.md §13). A file or pipe stream of the session kind is refused
  // before anything is written.
  void OnHeader() {
    origin_ = OriginOf(decoder_.header());
    if (store_ && decoder_.header().kind == format::StreamKind::kManifest)
      Throw(Errc::kInvalidArgument, "stream: a manifest (no message bodies) cannot be restored; it is for "
                                    "storemove verify --manifest");
    if (store_ && decoder_.header().kind == format::StreamKind::kSession && !options_.accept_held)
      Throw(Errc::kCorrupt, "stream: a session stream (with held records) is accepted only from an authenticated "
                            "network session, not from a file or pipe");
  }

  void PrintHeader() { toc_->Header(decoder_.header()); }

  // Counts a message for the live line; the input read so far gives the ETA of a file.
  void Advance(uint64_t size) {
    progress_.Add(1, size);
  }

  // Whether every folder `user` has here holds mail of store `store_id` alone (its chain record,
  // store::FolderCoverage: restored from that store's streams), and it has one at least.
  bool HoldsOnlyMailOf(const std::string& user, const std::string& store_id) {
    if (store_id.empty()) return false;
    const std::vector<store::FolderInfo> folders = store_->ListFolders(user, store::Store::FolderDetail::kRecordOnly);
    if (folders.empty()) return false;
    for (const store::FolderInfo& f : folders)
      if (f.coverage.store_id != store_id) return false;
    return true;
  }

  // restore NAMES: a selected user record no folder followed (a user without mailboxes, moved
  // away) is what the names selected, not "nothing" (helper-99: exit 66 after making the user).
  // A deferred user record (OnUser) that no folder followed: a user without mailboxes, made now.
  void CountBareUser() {
    if (bare_candidate_) {
      ++selected_bare_users_;
      selection_->MarkNamesSelecting(StreamUser(stream_user_), "INBOX", names_matched_);
      if (deferred_user_) ApplyUser(*deferred_user_, MapUser(deferred_user_->user));
    }
    bare_candidate_ = false;
    deferred_user_.reset();
  }

  void OnUser(const format::UserRecord& r) {
    ++report_.users;
    CountBareUser();
    stream_user_ = r.user;
    stream_user_partition_ = r.partition;
    if (options_.user_map.count(r.user)) mapped_seen_.insert(r.user);
    if (selection_ && !selection_->WantsUser(StreamUser(r.user))) return;  // restore NAMES: not this one
    bare_candidate_ = selection_ && selection_->WantsFolder(StreamUser(r.user), "INBOX");
    std::string user = MapUser(r.user);
    // -m alice=bob with bob in the stream too (and not mapped away): bob's records would land in
    // alice's restored tree, or the other way round. The second one stops the restore before
    // anything of it is written; `-t -m` finds the clash without writing anything. A stream
    // names its users only as it goes, so the first one's mail is in already: the line says so.
    // Only names the map sends someone to can clash, so the memory stays the map's size.
    if (map_targets_.empty())
      for (const auto& [from, to] : options_.user_map) map_targets_.insert(to);
    if (map_targets_.count(user) != 0) {
      auto [it, fresh] = restored_as_.emplace(user, r.user);
      if (!fresh && it->second != r.user) {
        std::string already;
        if (store_ && it->second == user)  // the first was the stream's own `user`: its own mail, nothing else
          already = "; nothing of " + EscapeControls(r.user) + " was written";
        else if (store_)
          already = created_as_mapped_.count(user)
                        ? "; " + EscapeControls(it->second) + "'s mail is restored as " + EscapeControls(user) +
                              " already, a user this restore created: remove it (storemove delete --store " +
                              EscapeControls(store_->root()) + " --force " + EscapeControls(user) + ") before running it again with a corrected map"
                        : "; " + EscapeControls(it->second) + "'s folders are restored into " + EscapeControls(user) +
                              " already, which existed before this restore";
        Throw(Errc::kInvalidArgument, "stream users " + EscapeControls(it->second) + " and " + EscapeControls(r.user) +
                                          " would both be restored as " + EscapeControls(user) +
                                          " (restore -m); their mail would merge: map one of them elsewhere" + already);
      }
    }
    if (toc_) toc_->User(user, r);
    if (!store_) return;
    // What the record's application could refuse without looking at the store is checked now,
    // for every record: restore NAMES defers a record of a user not here yet (below), and drops
    // it when a later record of the user comes before a selected folder; a run over the result
    // (the user here, every record applied) must not then refuse what the first run passed.
    format::UserRecord checked = r;
    if (!CheckUserRecord(checked, user)) return;
    // restore NAMES, and the user is not here: made at its first selected folder that passes the
    // folder record's checks, or (a user without mailboxes) once no folder of it followed, so that
    // names selecting none of its folders (a typo, exit 66; user/ann of a stream with no INBOX of
    // ann; a refused folder) make nobody (helper-100, -105: an empty active user was left, taking
    // deliveries).
    if (selection_) {
      bool here = true;  // unless known absent: a bad id's error is ApplyUser's, with -c y's handling
      try {
        here = store_->FindUser(user).has_value();
      } catch (const Error&) {
      }
      if (!here) {
        deferred_user_ = std::move(checked);
        return;
      }
    }
    ApplyUser(checked, user);
  }

  // A subscription the store cannot hold (a crafted or damaged stream's) is left out with a
  // note, as a keyword that is not an IMAP atom is (MergedUserFlagNames): the user and its mail
  // do not depend on it. A status ApplyUser would read and cannot refuses the record, as
  // ApplyUser would. False: refused (said, or thrown as ApplyUser's errors are).
  bool CheckUserRecord(format::UserRecord& r, const std::string& user) {
    size_t kept = 0, left_out = 0;
    std::string first_reason;
    for (size_t i = 0; i < r.subscriptions.size(); ++i) {
      try {
        store::ParseMailboxName(MapMailbox(r.subscriptions[i]));
      } catch (const Error& e) {
        if (left_out++ == 0) first_reason = e.what();
        continue;
      }
      if (kept != i) r.subscriptions[kept] = std::move(r.subscriptions[i]);
      ++kept;
    }
    r.subscriptions.resize(kept);
    if (left_out != 0)
      AddNote("user " + user + ": " + Counted(left_out, "subscription") +
              " left out, not a mailbox name the store can hold (" + first_reason + ")");
    // Parsed as ApplyUser parses it: with --keep-status, or (a move) unless a migrate's copy.
    if (!options_.keep_status && (options_.copy_on_hold || !r.status.starts_with("moved:"))) return true;
    try {
      store::UserStatus::Parse(r.status);
    } catch (const Error& e) {
      HandleUserError(e, r.user, user);
      return false;
    }
    return true;
  }

  // A user record's error: stops the restore, or (-c y) is counted and said.
  void HandleUserError(const Error& e, const std::string& stream_user, const std::string& user) {
    if (StopsTheRestore(e)) {
      if (std::string_view(e.what()).find(user) != std::string_view::npos) throw;
      Throw(e.code(), "user " + EscapeControls(user) + ": " + e.what());
    }
    CountError(e.code());
    AddErrorLine("user " + stream_user + ": " + e.what() + "; skipped");
  }

  // The user record's part in the store: made, its status, quota and subscriptions.
  void ApplyUser(const format::UserRecord& r, const std::string& user) {
    try {
      store::ValidateUserId(user);
      WriteUser(user);
      // Read only when kept: an unknown status is no reason to refuse a user whose status is not.
      std::optional<store::UserStatus> status;
      if (options_.keep_status) status = store::UserStatus::Parse(r.status);
      std::optional<store::UserInfo> existing = store_->FindUser(user);
      // A user the stream says has moved to another host, without --keep-status (helper-97, -98,
      // -99, -100). Its folders are restored as any user's (they are what this host held of it,
      // and later users' messages may link to their bodies):
      //  - not here: made moved (made active, it took deliveries that belong on that host, and
      //    the user's mail was split between the two);
      //  - here, moved to that host: a rerun of that; as it is;
      //  - here, moved elsewhere: refused at its first folder (a user without mailboxes, moved
      //    away, has none: nothing is split, nothing refused);
      //  - here, active or on hold (the host it moved to, say): status, quota and subscriptions
      //    stay, and a note says what the stream says.
      const bool stream_says_moved = !status && !options_.copy_on_hold && r.status.starts_with("moved:");
      bool refusal_deferred = false;
      if (stream_says_moved) {
        const store::UserStatus moved = store::UserStatus::Parse(r.status);
        if (!existing) {
          status = moved;
          // Said once a host (one host however spelt, as SameHost compares), at the end.
          std::string host = moved.host;
          std::transform(host.begin(), host.end(), host.begin(), [](unsigned char c) { return std::tolower(c); });
          if (!host.empty() && host.back() == '.') host.pop_back();  // one final dot, as SameHost
          auto& [shown, count, names] = made_moved_[host];
          if (shown.empty()) shown = r.status;
          if (++count <= kNamesShown) names.push_back(user);
        } else if (existing->status.state == store::UserState::kMoved) {
          if (store::UserStatus::SameHost(existing->status.host, moved.host))
            status = moved;
          else
            refusal_deferred = true;
        } else {
          AddNote("user " + user + ": the stream says " + r.status + "; here it is " + existing->status.ToString() +
                  " and stays so (storemove user " + user + " --status " + r.status + " if it moved)");
        }
      }
      // A user marked moved here lives on another host: mail restored here would split it between
      // the two (import and moveuser refuse it too). Unless the stream itself says moved and its
      // status is kept: a rerun of such a restore (its first run made the user moved).
      if (status && status->state == store::UserState::kMoved &&
          (!existing || existing->status.state != store::UserState::kMoved ||
           store::UserStatus::SameHost(existing->status.host, status->host))) {
        moved_by_stream_.insert(user);
        refusals_at_first_folder_.erase(user);
      } else if (existing && existing->status.state == store::UserState::kMoved && !r.status.starts_with("moved:") &&
                 !options_.copy_on_hold && HoldsOnlyMailOf(user, decoder_.header().store_id)) {
        // Moved here by an earlier stream of this source's chain, which now says it came back
        // (helper-101: the chain stopped with 64, --keep-status too). Its mail is that source's.
        moved_by_stream_.insert(user);
        if (!status)
          AddNote("user " + user + ": " + existing->status.ToString() + " here, the stream says " + r.status +
                  "; left so (restore --keep-status, or storemove user " + user +
                  " --status active --include-moved, takes deliveries here)");
      } else if (refusal_deferred ||
                 (existing && !options_.copy_on_hold && existing->status.state == store::UserState::kMoved)) {
        // A user moved elsewhere here, or one moved here whose record is no move: refused at its
        // first folder (a user without mailboxes in the stream splits nothing), and nothing of
        // the record (quota, subscriptions) is applied to a user who lives on another host. A
        // later record of the user saying it moved to that host takes the refusal back: the
        // stream's last word, which restore NAMES may have applied alone when it made the user
        // (a rerun refused what the first run had passed; found by the restore fuzz target).
        try {
          store_->RefuseIfMoved(user, "a restore");
        } catch (const Error& e) {
          if (e.code() != Errc::kInvalidArgument) throw;  // the store's failure stops as ever
          refusals_at_first_folder_[user] = {r.user, e.what()};
        }
        return;
      }
      if (options_.copy_on_hold) {
        // A migrate's copy: on hold until the switch, marked as this source's; a user live here,
        // or another source's copy, is never mirrored over. Checked and claimed under the user's
        // write lock (WriteUser), so two sessions cannot both take one user.
        if (existing) CheckCopyOnHold(*existing, options_);
        // Untouched (only this store's passes wrote to it) when this pass makes it, or when it was
        // so and still is; not a copy held by hand, written by another writer, adopted after an
        // interrupted switch (it was active here), or of unknown origin: it may hold mail of its
        // own (helper-60, -61).
        const bool untouched =
            !options_.copy_source.empty() &&
            (!existing || (existing->status.state == store::UserState::kHold && existing->status.untouched_copy &&
                           existing->status.origin_store == options_.copy_source));
        status = store::UserStatus{store::UserState::kHold, "", options_.copy_source, untouched};
        copies_claimed_[user] = untouched;
        if (existing && existing->status == *status) status.reset();
      }
      // restore NAMES takes mailboxes, not a user who is here already: its status and quota stay
      // (a folder's recovery, or a typo that selects nothing and exits 66, removed the quota and
      // with --keep-status made a held user active, helper-84). A user it creates is the stream's.
      const bool keeps_user_record = existing && (selection_ || stream_says_moved) && !options_.copy_on_hold;
      if (keeps_user_record) status.reset();
      if (!existing) {
        if (user != r.user) created_as_mapped_.insert(user);
        // Every folder of a user made here is new, its bytes counted exactly as it is published
        // (Store::PublishFolder): nothing for a recount to correct.
        quota_counted_ = true;
        // Made on hold, or moved (--keep-status): never active for a moment (helper-98).
        const bool made_so = options_.copy_on_hold || (status && status->state == store::UserState::kMoved);
        store_->CreateUser(user, RestorePartition(*store_, options_, user, r.partition), false,
                           made_so ? *status : store::UserStatus{});
        if (made_so) status.reset();
      }
      if (status) {
        store::Store::LockWait wait;
        wait.on_wait = options_.on_wait;
        wait.timeout_seconds = options_.lock_timeout_seconds;
        wait.cancelled = options_.lock_cancelled;
        store_->SetUserStatus(user, *status, wait);
      }
      // The source's limit, "none" (0) included: a quota removed at the source stayed at every
      // destination it had reached, deferring mail as over quota there (helper-81).
      const uint64_t quota_here = existing ? existing->quota_limit : 0;  // a new user has none
      if (!keeps_user_record && quota_here != r.quota_limit) store_->SetQuotaLimit(user, r.quota_limit);
      for (const std::string& mailbox : r.subscriptions) store_->Subscribe(user, MapMailbox(mailbox));
    } catch (const Error& e) {
      HandleUserError(e, r.user, user);
    }
  }

  // The stream's user as restore NAMES see it: its own id and the partition its record names.
  store::UserInfo StreamUser(const std::string& user) const {
    store::UserInfo info;
    info.user = user;
    if (user == stream_user_) info.partition = stream_user_partition_;
    return info;
  }

  void OnFolder(const format::FolderRecord& r) {
    ++report_.folders;
    bare_candidate_ = false;
    if (options_.user_map.count(r.user)) mapped_seen_.insert(r.user);  // a stream may omit the user record
    if (selection_) {
      const store::UserInfo owner = StreamUser(r.user);
      if (!selection_->WantsUser(owner) || !selection_->WantsFolder(owner, r.folder)) {
        skipping_ = true;  // its bodies are kept for the selected folders' links to them
        // `user/joe` is joe's INBOX (as in backup), where `delete user/joe` is all of joe: said,
        // since the other folders were not restored without a word (helper-97).
        if (bare_user_names_.count(r.user)) ++inbox_only_skipped_[r.user];
        return;
      }
      ++report_.selected_folders;
      selection_->MarkNamesSelecting(owner, r.folder, names_matched_);
      if (bare_user_names_.count(r.user) && ::strcasecmp(r.folder.c_str(), "INBOX") == 0) inbox_restored_.insert(r.user);
    }
    user_ = MapUser(r.user);
    current_mailbox_ = "user/" + user_ + "/" + r.folder;
    folder_record_ = r;
    if (toc_) toc_->Folder(current_mailbox_, r);
    source_mailbox_ = "user/" + r.user + "/" + r.folder;
    unsettled_marked_ = false;
    not_whole_ = false;
    committed_here_ = false;
    if (!store_) return;
    if (RefusedUser()) return;
    store::ValidateUserId(user_);
    store::ValidateFolderName(r.folder);
    // A folder made with a fresh UIDVALIDITY instead would not be recognised by a rerun, which
    // would then append every message again (IMAP's UIDVALIDITY is never 0; ours neither).
    if (r.uidvalidity == 0) Throw(Errc::kInvalidArgument, "stream: folder record with UIDVALIDITY 0");
    // What is stored after the folder is published must be valid before anything is written.
    store::ValidateAcl(r.acl);
    // A name that is not an IMAP keyword (a store an earlier import or pull wrote, or a crafted
    // stream) is left out, with a note; refusing it lost the whole folder (helper-93).
    std::vector<std::string> kept_names;
    for (const std::string& name : r.user_flag_names)
      if (store::IsUserFlagName(name)) kept_names.push_back(name);
    store::ValidateUserFlagNames(kept_names);  // none twice, at most 64
    for (const auto& [reader, data] : r.peruser) store::ValidateUserId(MapUser(reader));
    if (deferred_user_ && deferred_user_->user == r.user) {
      const format::UserRecord u = std::move(*deferred_user_);
      deferred_user_.reset();
      ApplyUser(u, user_);
      if (RefusedUser()) return;  // made moved by another process meanwhile
    }
    std::optional<store::UserInfo> owner = store_->FindUser(user_);
    if (!owner) Throw(Errc::kNoUser, "no user record for " + user_ + " before its folder");
    if (owner->status.state == store::UserState::kMoved && !options_.copy_on_hold && !moved_by_stream_.count(user_))
      store_->RefuseIfMoved(user_, "a restore");
    WriteUser(user_);  // a stream may omit the user record
    if (options_.copy_on_hold && !copies_claimed_.count(user_))
      if (std::optional<store::UserInfo> here = store_->FindUser(user_)) CheckCopyOnHold(*here, options_);
    folder_name_ = r.folder;
    std::optional<store::FolderInfo> existing = store_->FindFolder(user_, folder_name_);
    // -n: beside an existing mailbox, unless this stream made it of this very folder (a rerun of
    // an interrupted -n restore completes what its first run made instead of dating it again; the
    // folder of another stream user mapped here, -m, goes beside, helper-105).
    if (existing && options_.rename_existing && existing->origin != RestoredOrigin()) {
      folder_name_ = DatedName(r.folder);
      current_mailbox_ = "user/" + user_ + "/" + folder_name_;
      existing = store_->FindFolder(user_, folder_name_);
    }
    // A migrate's copy of a folder with another UIDVALIDITY than the source's: the source deleted
    // and re-created that folder since the copy was made. In an untouched copy (only this
    // store's passes wrote to it) it is replaced by the source's folder; appended to, it mixed
    // both and every final pass failed on its summary. Any other copy may hold mail of its own
    // (delivered here while it was live, imported): refused, nothing of the folder written.
    if (options_.copy_on_hold && existing && existing->uidvalidity != r.uidvalidity) {
      auto claimed = copies_claimed_.find(user_);
      const bool ours = claimed != copies_claimed_.end() && claimed->second;
      if (!ours || folder_name_ == "INBOX")
        Throw(Errc::kExists, current_mailbox_ + " here has UIDVALIDITY " + std::to_string(existing->uidvalidity) +
                                 ", the source's " + std::to_string(r.uidvalidity) +
                                 ": it is not a copy of the source's folder (re-created there since, or another "
                                 "folder's), and " +
                                 (ours ? std::string("an INBOX is not replaced on its own")
                                       : std::string("this copy was not made and kept on hold by this store's "
                                                     "migration (it may hold mail of its own)")) +
                                 ", so nothing of this folder is written. If the source's folder is to replace it, "
                                 "delete the copy here (storemove delete --force on this store) and run again");
      store::DeleteFolder(*store_, user_, folder_name_, &*write_lock_);
      existing.reset();
    }
    // A migrate's copy never loses mail that only this side has: a UIDNEXT above the source's
    // means messages were added here (a delivery after an earlier switch), which a mirror would
    // expunge. Refused before the folder changes.
    if (options_.copy_on_hold && existing && existing->uidvalidity == r.uidvalidity && r.uidnext != 0 &&
        existing->uidnext > r.uidnext)
      Throw(Errc::kExists, current_mailbox_ + " holds mail here that the source does not (UIDNEXT " +
                               std::to_string(existing->uidnext) + " here, " + std::to_string(r.uidnext) +
                               " at the source): it was delivered here after an earlier switch; refusing to "
                               "mirror over it. Bring that mail to the source first, or leave the user here");
    present_.clear();
    present_in_stream_.clear();
    unclaimed_.clear();
    uidnext_raised_ = false;
    folder_carried_ = 0;
    coverage_before_ = existing ? existing->coverage : store::FolderCoverage{};
    same_uidvalidity_here_ = existing && existing->uidvalidity == r.uidvalidity;
    side_copy_ = folder_name_ != r.folder;  // -n's NAME.YYYYMMDD
    // An incremental or unchanged block describes changes to the folder the receiver holds
    // (docs/stream-format.md §13): without that folder (same uidvalidity) it does not settle it.
    const bool mergeable = existing && existing->uidvalidity == r.uidvalidity && !options_.skip_existing_check;
    if (r.since_modseq != 0 && !mergeable) {
      MarkUnsettled();
      if (r.unchanged()) return;  // nothing to apply; the folder stays as it is (or absent)
    }
    if (!existing) {
      mode_ = Mode::kNew;
      // Its keywords are in its first index: a second write of it cost a new user's folder 11
      // system calls.
      folder_ = store_->CreateUnpublishedFolder(user_, folder_name_, r.uidvalidity,
                                                MergedUserFlagNames({}, r.user_flag_names));
    } else {
      quota_counted_ = false;  // a folder that was there: its changes are counted as they commit
      folder_ = store_->OpenFolder(user_, folder_name_);
      store::FolderSnapshot snap = folder_->Snapshot();
      mode_ = existing->uidvalidity == r.uidvalidity && !options_.skip_existing_check ? Mode::kMerge : Mode::kAppend;
      // In UID order (the snapshot's), ~56 bytes a message: a rerun over a folder of a million
      // took ~220 bytes each in a hash map (helper-92).
      if (mode_ == Mode::kMerge) {
        present_.reserve(snap.messages.size());
        for (const store::MessageMeta& m : snap.messages)
          present_.push_back({m.uid, m.flags, m.size, m.user_flags, m.save_time, m.internal_date, m.digest});
        if (!std::is_sorted(present_.begin(), present_.end(), [](const Present& a, const Present& b) { return a.uid < b.uid; }))
          Throw(Errc::kCorrupt, current_mailbox_ + ": the folder's snapshot is not in UID order");  // Snapshot() sorts
        // A UID twice (a damaged index): its first record stands for it, as the map kept it, so
        // --mirror does not take the second for one the stream left out (helper-95).
        present_.erase(std::unique(present_.begin(), present_.end(),
                                   [](const Present& a, const Present& b) { return a.uid == b.uid; }),
                       present_.end());
        present_in_stream_.assign(present_.size(), false);
      }
      // Messages a rerun must not append again: in append mode all of the folder's (an earlier,
      // interrupted run appended some); in a merge those above the source's UIDs (where an
      // earlier run put the stream's messages whose UID here held other bytes). Unless -i.
      if (!options_.skip_existing_check) {
        for (const store::MessageMeta& m : snap.messages)
          if (mode_ == Mode::kAppend || (r.uidnext != 0 && m.uid >= r.uidnext))
            unclaimed_.push_back({m.digest, m.size, m.uid, false, m.save_time, m.internal_date});
        std::sort(unclaimed_.begin(), unclaimed_.end());  // by content, then UID
      }
      if (std::vector<std::string> merged = MergedUserFlagNames(snap.info.user_flag_names, r.user_flag_names);
          merged != snap.info.user_flag_names)
        folder_->SetUserFlagNames(merged);
    }
    std::string partition = store_->FindUser(user_)->partition;
    // One Repository per partition for the session: it keeps the bucket directories it links into open.
    if (!repository_ || partition_path_ != store_->PartitionPath(partition)) {
      partition_path_ = store_->PartitionPath(partition);
      repository_ = std::make_unique<relinker::Repository>(partition_path_, options_.repository);
    }
    // Into a partition whose repository was empty when this session first used it (a fresh
    // destination), looking up each new content would only miss: content repeated within the
    // stream comes as links, and other sessions' content as held records.
    auto known = empty_repository_.find(partition);
    if (known == empty_repository_.end())
      known = empty_repository_.emplace(partition, repository_->Empty()).first;
    repository_was_empty_ = known->second;
  }

  // -n: the origin of a folder restored from the current stream folder (FolderInfo::origin): the
  // stream and the stream's mailbox it holds, so that a rerun finds it again whatever its name,
  // and never takes it for another one's (helper-103, -105).
  std::string RestoredOrigin(const std::string& source_mailbox) const { return origin_ + ">" + source_mailbox; }
  std::string RestoredOrigin() const { return RestoredOrigin(source_mailbox_); }

  // -n: where the stream's `folder` goes beside the one here. The folder this stream made of it
  // before (a rerun, after midnight too); else NAME.YYYYMMDD of today, or NAME.YYYYMMDD-2, -3 ...
  // when that name is taken: a folder of the user's own by that name, or the stream's own
  // NAME.YYYYMMDD, took the restored mail into it (helper-103). The folders this stream made for
  // the user are listed once per user.
  std::string DatedName(const std::string& folder) {
    if (dated_user_ != user_) {
      dated_user_ = user_;
      dated_.clear();
      const std::string ours = RestoredOrigin("");
      for (const store::FolderInfo& f : store_->ListFolders(user_, store::Store::FolderDetail::kRecordOnly))
        if (f.origin.starts_with(ours)) dated_.emplace(f.origin.substr(ours.size()), f.folder);
    }
    if (auto it = dated_.find(source_mailbox_); it != dated_.end()) return it->second;
    const std::string date = "." + (options_.today.empty() ? Today() : options_.today);
    std::string name = WithSuffix(folder, date);
    for (int n = 2; store_->FindFolder(user_, name); ++n) name = WithSuffix(folder, date + "-" + std::to_string(n));
    return name;
  }

  // `folder` + `suffix`; a name at the length limits has no room for the suffix, so its last
  // component is cut (at a UTF-8 character's start) until the whole fits. Without the cut a
  // folder of a 249-byte name was refused as "too long" by every restore -n (exit 64).
  static std::string WithSuffix(const std::string& folder, const std::string& suffix) {
    const size_t slash = folder.rfind('/');
    const size_t component = slash == std::string::npos ? 0 : slash + 1;
    std::string base = folder;
    auto fits = [&] {
      try {
        store::ValidateFolderName(base + suffix);
        return true;
      } catch (const Error&) {
        return false;
      }
    };
    // A zero-width joiner (U+200D) left at the end joins the next character of an emoji
    // sequence that was cut off: it goes too (helper-124).
    auto ends_in_joiner = [&] { return base.size() > component + 3 && base.ends_with("\xe2\x80\x8d"); };
    for (bool cut = false; base.size() > component + 1 && (!fits() || (cut && ends_in_joiner())); cut = true) {
      unsigned char dropped;
      do {
        dropped = static_cast<unsigned char>(base.back());
        base.pop_back();
      } while ((dropped & 0xc0) == 0x80 && base.size() > component + 1);
    }
    return base + suffix;
  }

  // The keywords a folder that has `have` holds once the stream's `incoming` are added to it.
  // Stream user-flag bit i becomes destination bit flag_map_[i] (identity when empty; -1: a name
  // the store does not keep, whose bit is cleared).
  std::vector<std::string> MergedUserFlagNames(const std::vector<std::string>& have,
                                               const std::vector<std::string>& incoming) {
    flag_map_.clear();
    const bool all_kept = std::all_of(incoming.begin(), incoming.end(), store::IsUserFlagName);
    if (incoming.empty() || (have == incoming && all_kept)) return have;
    if (have.empty() && all_kept) return incoming;  // a new folder
    std::vector<std::string> merged = have;
    for (const std::string& name : incoming) {
      if (!store::IsUserFlagName(name)) {
        AddNote(current_mailbox_ + ": keyword '" + name +
                "' is not an IMAP keyword (RFC 3501 atom): its messages are restored without it");
        flag_map_.push_back(-1);
        continue;
      }
      // The same spelling only, unlike keywords from outside (store::FindUserFlagName): a restore
      // copies a store, whose folder may hold `A` and `a` apart, and migrate's proof
      // (store::Summarize) and verify compare names exactly (helper-150).
      auto it = std::find(merged.begin(), merged.end(), name);
      if (it == merged.end()) {
        if (merged.size() >= 64) Throw(Errc::kInvalidArgument, "more than 64 user flags after merging");
        merged.push_back(name);
        it = merged.end() - 1;
      }
      flag_map_.push_back(int(it - merged.begin()));
    }
    return merged;
  }

  uint64_t MapUserFlags(uint64_t flags) const {
    // A bit beyond the folder record's names means no keyword (a crafted or damaged stream):
    // kept, it would turn into whatever name the folder gains later.
    const size_t named = folder_record_.user_flag_names.size();
    if (named < 64) flags &= (uint64_t(1) << named) - 1;
    if (flag_map_.empty()) return flags;
    uint64_t out = 0;
    for (size_t i = 0; i < flag_map_.size(); ++i)
      if (flag_map_[i] >= 0 && (flags & (uint64_t(1) << i))) out |= uint64_t(1) << flag_map_[i];
    return out;
  }

  // Decides the UID a message gets: its own (new/merge) or the next one (append); nullopt when
  // it is already present (same UID, same digest) and only its flags may need updating.
  // present_uid_ is the UID of the folder's copy; claimed_ when it is not the stream's UID (a
  // copy that an earlier run appended: taken once, for one message of the stream).
  struct Present;
  bool AlreadyPresent(const format::MessageRecord& r, store::MessageMeta* meta) {
    meta->user_flags = MapUserFlags(r.user_flags);
    claimed_ = false;
    present_uid_ = r.uid;
    if (mode_ == Mode::kNew) return false;
    if (mode_ == Mode::kMerge) {
      const Present* have = MarkInStream(r.uid);
      if (!have) return false;
      if (have->digest == r.digest && have->size == r.size && SameArrival(have->save_time, have->internal_date, r))
        return true;
    }
    meta->uid = 0;  // appended: a new UID (in a merge: same UID, other content, keep both)
    if (mode_ == Mode::kMerge && !uidnext_raised_) {
      // Above every UID of the source, so the copy takes none a later message of the stream
      // brings, and a rerun finds it among the copies past the source's UIDs (unclaimed_).
      folder_->RaiseUidNext(folder_record_.uidnext);
      uidnext_raised_ = true;
    }
    // The copies with this content, by UID: the last one not taken that arrived as r did.
    const Unclaimed first{r.digest, r.size, 0, false, 0, 0}, last{r.digest, r.size, UINT32_MAX, false, 0, 0};
    const auto begin = std::lower_bound(unclaimed_.begin(), unclaimed_.end(), first);
    const auto end = std::upper_bound(begin, unclaimed_.end(), last);
    auto copy = std::find_if(std::make_reverse_iterator(end), std::make_reverse_iterator(begin), [&](const Unclaimed& c) {
      return !c.taken && SameArrival(c.save_time, c.internal_date, r);
    });
    if (copy == std::make_reverse_iterator(begin)) return false;
    present_uid_ = copy->uid;
    copy->taken = true;
    claimed_ = true;
    if (mode_ == Mode::kMerge) MarkInStream(present_uid_);  // the stream's now: --mirror keeps it
    return true;
  }

  // A message found present at the stream's own UID takes the stream's flags. (A copy claimed at
  // another UID keeps its own: it is the folder's message, the stream's is only like it.)
  void UpdatePresentFlags(uint32_t uid) {
    const Present* have = FindPresent(uid);
    if (have && (have->flags != meta_.flags || have->user_flags != meta_.user_flags))
      QueueFlagChange(uid, meta_.flags, meta_.user_flags);
  }

  const Present* FindPresent(uint32_t uid) const {
    const auto it = std::lower_bound(present_.begin(), present_.end(), uid,
                                     [](const Present& p, uint32_t u) { return p.uid < u; });
    return it != present_.end() && it->uid == uid ? &*it : nullptr;
  }
  // The folder's message `uid` is part of the source folder: not expunged by --mirror.
  const Present* MarkInStream(uint32_t uid) {
    const Present* p = FindPresent(uid);
    if (p) present_in_stream_[static_cast<size_t>(p - present_.data())] = true;
    return p;
  }

  // Flag changes go to store.idx in batches: one read of the index per batch, not per message
  // (a folder whose every flag changed made a pass quadratic: 20,000 changes took 11.6 s).
  void QueueFlagChange(uint32_t uid, uint8_t flags, uint64_t user_flags) {
    pending_flags_.push_back({uid, flags, user_flags});
    if (pending_flags_.size() >= kFlagChangesPerBatch) ApplyFlagChanges();
  }

  void ApplyFlagChanges() {
    if (pending_flags_.empty()) return;
    Commit();  // pending appends first, so a flag change lands on a committed record
    report_.flags_updated += folder_->SetFlags(pending_flags_);
    pending_flags_.clear();
  }

  // A copy in the folder with the stream message's bytes is that message only if it arrived when
  // the stream's did: the same save time (restore carries it) or the same internal date (which
  // export, import --maildir and moveuser keep, where the save time is theirs: a Maildir move
  // then a restore duplicated every message, helper-84). Bytes alone are not enough: a second
  // copy of a message (the same bytes under a new UID, delivered later, in a later incremental)
  // was taken for the first one's restored copy and never restored, exit 0 (helper-81). A stream
  // without save times (0: the restore stored its own) is matched by bytes, as before.
  static bool SameArrival(int64_t save_time, int64_t internal_date, const format::MessageRecord& r) {
    return r.save_time == 0 || save_time == r.save_time || (r.internal_date != 0 && internal_date == r.internal_date);
  }

  void OnMessage(const format::MessageRecord& r) {
    message_ = r;
    if (toc_) toc_->Message("message", r);
    Advance(r.size);
    ++report_.messages;
    report_.message_bytes += r.size;
    if (!store_ || decoder_.header().kind == format::StreamKind::kManifest) {
      action_ = Action::kIgnore;
      return;
    }
    meta_ = ToMeta(r);
    if (AlreadyPresent(r, &meta_)) {
      UniqueFd have = folder_->OpenMessageFile(present_uid_);
      if (!have.valid()) {
        // Listed with these very bytes but its file is lost (damage, docs/store-format.md
        // §6.2): the stream carries them, so a rerun puts the file back under its UID, the
        // stream's or, claimed, the one an earlier run appended it at (that copy was appended
        // again, its record left without a file, exit 0: helper-157).
        action_ = Action::kRepair;
        writer_ = folder_->NewMessage();
        return;
      }
      // Compare while reading, to prove the existing file really holds these bytes before it
      // serves as the repository copy for later links to this content.
      if (::fstat(have.get(), &present_stat_) != 0) ThrowErrno("stat " + folder_->MessagePath(present_uid_));
      if (uint64_t(present_stat_.st_size) != r.size) {
        // Not the recorded size: damaged (or appended to). The stream's bytes replace it.
        StartRepairOfDamaged();
        return;
      }
      action_ = Action::kVerifyPresent;
      matcher_.emplace(std::move(have), r.size);
      return;
    }
    UniqueFd candidate;
    if (!repository_was_empty_ || written_.MayContain(r.digest)) candidate = repository_->OpenEntry(r.digest, r.size);
    if (candidate.valid()) {
      action_ = Action::kMatch;
      matcher_.emplace(std::move(candidate), r.size);
    } else {
      action_ = Action::kWrite;
      writer_ = folder_->NewMessage(mode_ == Mode::kNew ? meta_.uid : 0);
      written_.Add(r.digest);
    }
  }

  void OnBody(std::string_view body) {
    report_.body_bytes += body.size();
    switch (action_) {
      case Action::kIgnore: return;
      case Action::kWrite:
      case Action::kRepair: writer_->Write(body); return;
      case Action::kVerifyPresent:
        if (!matcher_->Feed(body.data(), body.size())) {
          // Listed with this digest but other bytes. A file whose bytes do not have the digest
          // its record lists is damaged: the stream's bytes replace it. One that has it is a
          // collision of the digest: both are kept, the stream's as a new message.
          const bool damaged = !FileHasDigest(matcher_->file(), message_.digest, message_.size);
          meta_.uid = 0;
          SwitchToWriting();
          if (damaged) action_ = Action::kRepairDamaged;
          writer_->Write(body);
        }
        return;
      case Action::kRepairDamaged: writer_->Write(body); return;
      case Action::kMatch:
        if (!matcher_->Feed(body.data(), body.size())) {
          SwitchToWriting();
          writer_->Write(body);
        }
        return;
    }
  }

  // The present file (at present_uid_) is damaged: the stream's bytes are written and replace it.
  void StartRepairOfDamaged() {
    action_ = Action::kRepairDamaged;
    writer_ = folder_->NewMessage();
  }

  bool FileHasDigest(int fd, const Digest& digest, uint64_t size) {
    // A device or FIFO in a message file's place (damage) would be read for ever: not the bytes.
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || uint64_t(st.st_size) != size) return false;
    uint64_t total = 0;
    const Digest have = DigestOfFile(fd, folder_->MessagePath(present_uid_), &total);
    return total == size && have == digest;
  }

  // Stops comparing: writes the prefix that matched, then the caller writes the rest.
  void SwitchToWriting() {
    writer_ = folder_->NewMessage();
    uint64_t prefix = matcher_->matched_bytes();
    ReadBlock buf;
    for (uint64_t off = 0; off < prefix;) {
      size_t n = size_t(std::min<uint64_t>(prefix - off, buf.size()));
      PreadAll(matcher_->file(), buf.data(), n, off_t(off), repository_->root());
      writer_->Write(buf.data(), n);
      off += n;
    }
    matcher_.reset();
    action_ = Action::kWrite;
  }

  void OnMessageEnd() {
    switch (action_) {
      case Action::kIgnore: return;
      case Action::kRepair:
      case Action::kRepairDamaged: {
        store::StagedMessage staged = writer_->Finish(meta_);
        writer_.reset();
        if (staged.meta.digest != message_.digest || staged.meta.size != message_.size) {
          std::vector<store::StagedMessage> drop{std::move(staged)};
          folder_->Discard(drop);
          Throw(Errc::kCorrupt, "stream: message UID " + std::to_string(message_.uid) + " of " + current_mailbox_ +
                                    " does not match its digest after writing");
        }
        staged.meta.uid = present_uid_;
        const bool damaged = action_ == Action::kRepairDamaged;
        if (folder_->RepairMissingFile(staged, damaged ? &present_stat_ : nullptr)) {
          ++report_.repaired;
          ++report_.skipped;
          // The repaired file holds the bytes the stream just delivered: later links may use it.
          ProveCommitted(present_uid_, message_.digest, contents_, /*replace_entry=*/false);
        } else if (claimed_) {
          // The copy was expunged (or changed) meanwhile: the stream's message is not in the folder.
          ReportMessageError(message_, "its copy (UID " + std::to_string(present_uid_) +
                                           ") changed while its file was put back; not restored, a rerun restores it");
        }
        return;
      }
      case Action::kVerifyPresent: {
        ++report_.skipped;
        if (!claimed_) UpdatePresentFlags(message_.uid);
        // The present file holds the bytes the stream just delivered (compared while reading).
        ProveCommitted(present_uid_, message_.digest, contents_, /*replace_entry=*/false);
        matcher_.reset();
        return;
      }
      case Action::kMatch: {
        if (matcher_->CompleteMatch()) {
          const std::string entry = repository_->EntryPath(message_.digest);
          UniqueFd matched(::dup(matcher_->file()));
          if (!matched.valid()) ThrowErrno("dup " + entry);
          matcher_.reset();
          if (std::optional<store::StagedMessage> staged = StageProvenLink(entry, matched.get())) {
            ++report_.linked;
            Stage(std::move(*staged), message_.digest, contents_);
            return;
          }
          // The repository copy is full (link limit) or was replaced: copy the bytes just compared.
          CopyFrom(std::move(matched), entry, message_.digest, /*replace_entry=*/true, contents_);
          return;
        }
        SwitchToWriting();  // fewer bytes than the candidate
        [[fallthrough]];
      }
      case Action::kWrite: {
        store::StagedMessage staged = writer_->Finish(meta_);
        writer_.reset();
        if (staged.meta.digest != message_.digest || staged.meta.size != message_.size)
          Throw(Errc::kCorrupt, "stream: message UID " + std::to_string(message_.uid) + " of " + current_mailbox_ +
                                    " does not match its digest after writing");
        Stage(std::move(staged), message_.digest, contents_);
        return;
      }
    }
  }

  // Writes a new copy of proven content (a full repository file, or one on another partition),
  // which becomes the proven file of content id `content_id` once committed.
  void CopyFrom(UniqueFd in, const std::string& path, const Digest& digest, bool replace_entry, uint64_t content_id) {
    Stage(WriteCopy(std::move(in), path, digest), digest, content_id, replace_entry);
  }
  // The bytes of `in` (proven content) written as a staged message of meta_.
  store::StagedMessage WriteCopy(UniqueFd in, const std::string& path, const Digest& digest) {
    writer_ = folder_->NewMessage();
    ReadBlock buf;
    for (;;) {
      size_t n = ReadSome(in.get(), buf.data(), buf.size(), path);
      if (n == 0) break;
      writer_->Write(buf.data(), n);
    }
    store::StagedMessage staged = writer_->Finish(meta_);
    writer_.reset();
    if (staged.meta.digest != digest) {
      std::vector<store::StagedMessage> drop{std::move(staged)};
      folder_->Discard(drop);
      Throw(Errc::kCorrupt, "file " + path + " does not match its digest");
    }
    return staged;
  }

  // The folder lists the link's message with these very bytes (at the stream's UID, or a copy an
  // earlier run appended, present_uid_), but its file is lost or damaged (`mine`: the file found
  // there, or none): `staged`, the stream's bytes, takes its place, as OnMessage repairs a content
  // record's file. A link record appended the bytes under a new UID instead, leaving the record
  // without its file, exit 0 (helper-155, helper-156). `copied`: `staged` is a copy, not a link to
  // the content's file, so it becomes that file for the content's later links (else each of them
  // copied again: disk use went up 3.5x, helper-156). A record changed meanwhile (expunged) is an
  // error: the message is not in the folder, and the rerun restores it.
  void RepairPresent(const format::LinkRecord& r, store::StagedMessage staged, const UniqueFd& mine, bool copied,
                     bool replace_entry) {
    struct stat damaged {};
    const bool found = mine.valid() && ::fstat(mine.get(), &damaged) == 0;
    staged.meta.uid = present_uid_;
    if (!folder_->RepairMissingFile(staged, found ? &damaged : nullptr)) {
      ReportMessageError(r, "its copy (UID " + std::to_string(present_uid_) +
                                ") changed while its file was put back; not restored, a rerun restores it");
      return;
    }
    ++report_.repaired;
    ++report_.skipped;
    if (copied) ProveCommitted(present_uid_, r.digest, r.content_id, replace_entry);
    if (!claimed_) UpdatePresentFlags(r.uid);
  }

  // Whether the folder's present copy of a link's message, not the content's bytes, is damaged
  // (repaired in place) rather than another message whose bytes have the same digest, a
  // collision, which is kept beside the stream's (as OnMessage keeps both).
  bool PresentCopyDamaged(const UniqueFd& mine, const format::LinkRecord& r) {
    return !mine.valid() || !FileHasDigest(mine.get(), r.digest, r.size);
  }

  // Hard-links `path` into the folder if it is still the file open as `proven` (a path can be
  // replaced between a proof and the link); nullopt when it is not, or cannot be linked.
  std::optional<store::StagedMessage> StageProvenLink(const std::string& path, int proven) {
    struct stat want;
    if (::fstat(proven, &want) != 0) ThrowErrno("stat " + path);
    return StageProvenLink(path, want);
  }
  // The same, `want` being the proven file's stat.
  std::optional<store::StagedMessage> StageProvenLink(const std::string& path, const struct stat& want) {
    std::optional<store::StagedMessage> staged = repository_->StageLink(*folder_, path, meta_);
    if (!staged) return std::nullopt;
    struct stat linked;
    if (::fstatat(folder_->dir_fd(), staged->temp_name.c_str(), &linked, AT_SYMLINK_NOFOLLOW) != 0 ||
        linked.st_ino != want.st_ino || linked.st_dev != want.st_dev) {
      std::vector<store::StagedMessage> drop{std::move(*staged)};
      folder_->Discard(drop);
      return std::nullopt;
    }
    return staged;
  }

  // A link names content this stream delivered earlier (content id C). It is restored from the
  // file this session wrote or proved for C, never from whatever the store holds under C's
  // digest: a crafted stream may name another user's digest and size (both visible in a
  // manifest), and XXH3 is not collision resistant (docs/stream-format.md §13).
  void OnLink(const format::LinkRecord& r) {
    if (toc_) toc_->Message("link", r);
    Advance(r.size);
    ++report_.links;
    report_.message_bytes += r.size;
    if (!store_ || decoder_.header().kind == format::StreamKind::kManifest) return;
    message_ = r;
    meta_ = ToMeta(r);
    const bool present = AlreadyPresent(r, &meta_);  // also notes the UID as part of the stream
    if (unproven_.count(r.content_id)) {
      ReportMessageError(r, "link to held content " + r.digest.Hex() + " that failed its proof; not restored");
      return;
    }
    if (!ProvenSlot(r.content_id))
      Throw(Errc::kCorrupt, "stream: link uid " + std::to_string(r.uid) + " names content_id " +
                                std::to_string(r.content_id) + ", older than the last " +
                                std::to_string(format::kLinkCheckWindow) +
                                " contents; restore links only to content this stream delivered");
    if (ProvenSlot(r.content_id)->empty()) Commit();  // the content may still be in this batch
    const FileId want = Current(*ProvenSlot(r.content_id));
    if (want.empty()) {
      if (std::optional<SkippedContents::Range> kept = skipped_.Find(r.content_id)) {
        RestoreFromSkipped(r, *kept, present);
        return;
      }
      if (skipped_.dropped_for_room())
        ReportMessageError(r, "link to content_id " + std::to_string(r.content_id) +
                                  ", whose body came in a folder this restore skipped and could not keep (it keeps " +
                                  HumanBytes(double(skipped_.max_bytes())) +
                                  " of skipped bodies at most: 1 GiB, or a quarter of the store's free space); not "
                                  "restored: select that folder too, restore the whole stream, or free space first");
      else if (folder_->unpublished())
        // A new folder is skipped whole (Guard, -c y): published without these messages, it was
        // a half-restored mailbox in plain view (helper-158: 17 of 26 after a full disk failed
        // the folders their bodies came in). A rerun restores it whole.
        Throw(Errc::kIo, "UID " + std::to_string(r.uid) + ": a link to content_id " + std::to_string(r.content_id) +
                             ", which this restore did not restore (its folder failed)");
      else
        // A folder merged into is visible already, its batches committed as they come: the rest
        // of its messages still come (skipping them left 11 of 52 on every rerun, helper-160).
        ReportMessageError(r, "link to content_id " + std::to_string(r.content_id) +
                                  ", which this restore did not restore (its folder failed); not restored");
      return;
    }
    std::string source;
    struct stat have;
    UniqueFd fd = OpenProven(r, want, &source, &have);
    if (!fd.valid()) {
      ReportMessageError(r, "the file restored for content_id " + std::to_string(r.content_id) +
                                " was replaced meanwhile; not restored, a rerun restores it");
      return;
    }
    // The decoder checks a link against recent contents only (docs/stream-format.md §7.4).
    if (uint64_t(have.st_size) != r.size)
      Throw(Errc::kCorrupt, "stream: link uid " + std::to_string(r.uid) + " names content of " + std::to_string(r.size) +
                                " bytes, but " + source + " has " + std::to_string(have.st_size));
    if (!source.starts_with(partition_path_ + "/")) {
      // C's file is on another partition: hard links stay within a partition, so this one's
      // entry is used when it holds the same bytes, else a copy is made (and becomes C's file).
      const std::string local = repository_->EntryPath(r.digest);
      UniqueFd local_fd = TryOpenAt(AT_FDCWD, local, O_RDONLY, 0, local);
      if (local_fd.valid() && relinker::SameContent(local_fd.get(), fd.get())) {
        if (::fstat(local_fd.get(), &have) != 0) ThrowErrno("stat " + local);
        source = local;
        fd = std::move(local_fd);
      }
    }
    if (present) {
      // Present with the same digest (at the stream's UID, or a copy an earlier run appended
      // elsewhere, present_uid_): kept if it holds the very bytes of content C.
      UniqueFd mine = folder_->OpenMessageFile(present_uid_);
      if (mine.valid() && relinker::SameContent(mine.get(), fd.get())) {
        ++report_.skipped;
        if (!claimed_) UpdatePresentFlags(r.uid);
        return;
      }
      if (PresentCopyDamaged(mine, r)) {  // lost or damaged: put back at its UID
        std::optional<store::StagedMessage> staged;
        if (source.starts_with(partition_path_ + "/")) staged = StageProvenLink(source, have);
        const bool copied = !staged;
        const bool replace_entry = source == repository_->EntryPath(r.digest);
        RepairPresent(r, copied ? WriteCopy(std::move(fd), source, r.digest) : std::move(*staged), mine, copied,
                      replace_entry);
        return;
      }
      meta_.uid = 0;
    }
    if (source.starts_with(partition_path_ + "/")) {
      if (std::optional<store::StagedMessage> staged = StageProvenLink(source, have)) {
        ++report_.linked;
        Stage(std::move(*staged), r.digest, 0);
        return;
      }
    }
    // Full (link limit) or on another filesystem: a copy, which becomes C's file from now on.
    CopyFrom(std::move(fd), source, r.digest, /*replace_entry=*/source == repository_->EntryPath(r.digest), r.content_id);
  }

  // -c y skipped the folder that brought this content (its user is refused here, say): a copy of
  // the body kept from it, which then serves the content's later links as a restored file does.
  void KeepSkipped(const format::MessageRecord& r) {
    if (!store_ || decoder_.header().kind == format::StreamKind::kManifest) return;
    skipped_.Begin(contents_, r.size);
  }

  void RestoreFromSkipped(const format::LinkRecord& r, const SkippedContents::Range& kept, bool present) {
    UniqueFd mine;
    bool repair = false;
    if (present) {
      mine = folder_->OpenMessageFile(present_uid_);
      if (mine.valid() && skipped_.SameAs(mine.get(), kept)) {
        ++report_.skipped;
        if (!claimed_) UpdatePresentFlags(r.uid);
        return;
      }
      repair = PresentCopyDamaged(mine, r);  // lost or damaged: put back at its UID
      if (!repair) meta_.uid = 0;
    }
    writer_ = folder_->NewMessage();
    skipped_.CopyTo(kept, *writer_);
    store::StagedMessage staged = writer_->Finish(meta_);
    writer_.reset();
    if (staged.meta.digest != r.digest || staged.meta.size != r.size) {
      std::vector<store::StagedMessage> drop{std::move(staged)};
      folder_->Discard(drop);
      Throw(Errc::kCorrupt, "stream: link uid " + std::to_string(r.uid) + " names content_id " +
                                std::to_string(r.content_id) + " of digest " + r.digest.Hex() + " and " +
                                std::to_string(r.size) + " bytes; the skipped message of that id is another");
    }
    if (repair) {
      RepairPresent(r, std::move(staged), mine, /*copied=*/true, /*replace_entry=*/false);
      return;
    }
    Stage(std::move(staged), r.digest, r.content_id);
  }

  // Opens the file that is `want`: the file restored for a collided content, the repository
  // entry of the digest, or the entry on another partition (where C was first restored), and
  // fills `st` from it. The other partitions are listed only when the first two miss.
  UniqueFd OpenProven(const format::LinkRecord& r, const FileId& want, std::string* path, struct stat* st) {
    auto try_open = [&](const std::string& candidate) {
      UniqueFd fd = TryOpenAt(AT_FDCWD, candidate, O_RDONLY, 0, candidate);
      if (fd.valid() && ::fstat(fd.get(), st) == 0 && FileId::Of(*st) == want) {
        *path = candidate;
        return fd;
      }
      return UniqueFd();
    };
    if (auto it = collided_.find(r.content_id); it != collided_.end())
      if (UniqueFd fd = try_open(it->second); fd.valid()) return fd;
    const std::string own = repository_->EntryPath(r.digest);
    if (UniqueFd fd = try_open(own); fd.valid()) return fd;
    for (const std::string& p : store_->Partitions()) {
      const std::string entry = relinker::Repository(store_->PartitionPath(p)).EntryPath(r.digest);
      if (entry == own) continue;
      if (UniqueFd fd = try_open(entry); fd.valid()) return fd;
    }
    return UniqueFd();
  }

  // A message of an incremental folder that the sender says this side holds unchanged in
  // content: only its flags are applied, after checking UID, digest and size against store.idx
  // (no file is read). Anything else leaves the mailbox unsettled for the next pass.
  void OnMeta(const format::MetaRecord& r) {
    if (toc_) toc_->Message("meta", r);
    ++report_.metas;
    if (!store_ || decoder_.header().kind == format::StreamKind::kManifest || !folder_) return;
    if (mode_ != Mode::kMerge) {
      MarkUnsettled();
      return;
    }
    const Present* have = MarkInStream(r.uid);  // part of the source folder: not expunged by --mirror
    if (!have || have->digest != r.digest || have->size != r.size) {
      MarkUnsettled();
      return;
    }
    const uint64_t user_flags = MapUserFlags(r.user_flags);
    if (have->flags != r.flags || have->user_flags != user_flags) QueueFlagChange(r.uid, r.flags, user_flags);
  }

  void MarkUnsettled() {
    if (unsettled_marked_) return;
    unsettled_marked_ = true;
    report_.unsettled.push_back(source_mailbox_);
  }

  // After the folder's block is applied: the destination folder against the source's summary.
  void CheckSummary() {
    const format::FolderEnd& end = decoder_.folder_end();
    if (!end.has_summary) return;
    std::string what;
    if (!folder_) {
      what = "the destination has no folder with uidvalidity " + std::to_string(folder_record_.uidvalidity);
    } else {
      const format::FolderSummaryField mine = ToField(store::Summarize(folder_->Snapshot()));
      const format::FolderSummaryField& source = end.summary;
      auto field = [&](const char* name, uint64_t have, uint64_t want) {
        if (have == want) return;
        what += (what.empty() ? "" : ", ") + std::string(name) + " " + std::to_string(have) + " (source " +
                std::to_string(want) + ")";
      };
      field("count", mine.count, source.count);
      field("uidvalidity", mine.uidvalidity, source.uidvalidity);
      field("uidnext", mine.uidnext, source.uidnext);
      field("bytes", mine.bytes, source.bytes);
      if (mine.digest != source.digest)
        what += (what.empty() ? "" : ", ") + std::string("digest ") + mine.digest.Hex() + " (source " +
                source.digest.Hex() + ")";
    }
    if (what.empty()) return;
    // In a file or pipe from `backup` a summary marks a folder its backup could not carry whole
    // (it exited 65 and named the messages); no later pass will send them (helper-97). Unless the
    // copy equals the source, nothing proves it holds them (a folder with mail of its own, or
    // with messages the source expunged since, may have as many and lack one: helper-100): an
    // error, and the chain does not take the folder for whole (helper-98).
    if (options_.left_out_marks && folder_ && folder_record_.since_modseq == 0) {
      not_whole_ = true;
      CountError(Errc::kCorrupt);
      AddErrorLine(current_mailbox_ + ": not whole: its backup left messages of it out (it exited 65 and named them), "
                   "and this copy is not its source: here " + what +
                   ". Restore them from another backup of the folder (storemove verify --source tells which)");
      return;
    }
    if (options_.strict_summaries)
      Throw(Errc::kCorrupt, current_mailbox_ + ": summary differs from the source: " + what);
    MarkUnsettled();
  }

  // A message whose body the sender did not send because this side holds it: linked to the
  // repository entry only once the entry's SHA-256 equals the sender's (an XXH3 match proves
  // nothing). A failed proof is reported; the message is not restored.
  void OnHeld(const format::HeldRecord& r) {
    if (toc_) toc_->Message("held", r);
    Advance(r.size);
    ++report_.messages;
    ++report_.held;
    report_.message_bytes += r.size;
    if (!store_) return;
    if (!options_.accept_held)  // refused at the header already; kept next to what it guards
      Throw(Errc::kCorrupt, "stream: held record outside an authenticated network session");
    message_ = r;
    meta_ = ToMeta(r);
    if (AlreadyPresent(r, &meta_)) {
      UniqueFd have = folder_->OpenMessageFile(present_uid_);
      if (have.valid() && net::Sha256OfFile(have.get(), folder_->MessagePath(present_uid_)) == r.sha256) {
        collided_[contents_] = folder_->MessagePath(present_uid_);  // later links: the proven file
        Prove(contents_, have.get(), collided_[contents_]);
        ++report_.skipped;
        if (!claimed_) UpdatePresentFlags(r.uid);
        return;
      }
      meta_.uid = 0;
    }
    const std::string entry = repository_->EntryPath(r.digest);
    UniqueFd candidate = repository_->OpenEntry(r.digest, r.size);
    if (!candidate.valid()) {
      HeldFailed(r, "is not in the repository (" + entry + ") any more; a rerun sends it");
      return;
    }
    struct stat proven;
    if (::fstat(candidate.get(), &proven) != 0) ThrowErrno("stat " + entry);
    if (net::Sha256OfFile(candidate.get(), entry) != r.sha256) {
      // Same XXH3 and size, other bytes: a collision or a damaged entry. Dropping the entry
      // (the messages using it keep their files) lets a rerun send this body.
      struct stat now;
      UniqueFd again = TryOpenAt(AT_FDCWD, entry, O_PATH, 0, entry);
      if (again.valid() && ::fstat(again.get(), &now) == 0 && now.st_ino == proven.st_ino && now.st_dev == proven.st_dev)
        UnlinkPath(entry);
      HeldFailed(r, "differs from the sender's bytes in " + entry + " (SHA-256 mismatch); not linked");
      return;
    }
    std::optional<store::StagedMessage> staged = repository_->StageLink(*folder_, entry, meta_);
    if (!staged) {
      CopyFrom(std::move(candidate), entry, r.digest, /*replace_entry=*/true, contents_);
      return;
    }
    // The entry may have been replaced between the proof and the link: keep only the proven file.
    struct stat linked;
    if (::stat((folder_->path() + "/" + staged->temp_name).c_str(), &linked) != 0 ||
        linked.st_ino != proven.st_ino || linked.st_dev != proven.st_dev) {
      std::vector<store::StagedMessage> drop{std::move(*staged)};
      folder_->Discard(drop);
      HeldFailed(r, "was replaced in the repository while it was linked; a rerun restores it");
      return;
    }
    ++report_.linked;
    Prove(contents_, candidate.get(), entry);
    Stage(std::move(*staged), r.digest, 0);
  }

  // The held record just read (content id contents_) is not restored, nor links to it.
  void HeldFailed(const format::HeldRecord& r, const std::string& what) {
    unproven_.insert(contents_);
    ReportMessageError(r, "held content " + r.digest.Hex() + " " + what);
  }

  void CountError(Errc code) {
    if (!report_.errors++) report_.first_error = code;
  }

  void ReportMessageError(const format::MessageRecord& r, const std::string& what) {
    CountError(Errc::kCorrupt);
    AddErrorLine(current_mailbox_ + " UID " + std::to_string(r.uid) + ": " + what);
  }

  // With -c y every skipped record may add a line: at most kMaxErrorLines are kept (memory stays
  // bounded whatever the stream holds), the rest counted. Names come from the stream: control
  // characters are shown as \xNN, so a hostile name cannot forge a line or drive the terminal.
  static constexpr size_t kMaxErrorLines = 1000;
  void AddErrorLine(const std::string& line) {
    if (report_.error_lines.size() >= kMaxErrorLines) {
      ++error_lines_dropped_;
      return;
    }
    report_.error_lines.push_back(EscapeControls(line));
  }

  // `content_id`: the content this file holds and proves once committed; 0 for a link to a
  // file proven already.
  // `replace_entry`: the file replaces the repository entry (a full one) when committed.
  void Stage(store::StagedMessage staged, const Digest& digest, uint64_t content_id, bool replace_entry = false) {
    pending_.push_back(std::move(staged));
    pending_replace_.push_back(replace_entry);
    pending_digests_.push_back(digest);
    pending_content_ids_.push_back(content_id);
    pending_bytes_ += message_.size;
    if (pending_.size() >= options_.batch_messages || pending_bytes_ >= (64u << 20)) Commit();
  }

  void Commit() {
    if (pending_.empty()) return;
    std::vector<uint32_t> uids = folder_->Commit(pending_);
    committed_here_ = true;
    if (writeback_) writeback_->Wrote(pending_bytes_);
    for (size_t i = 0; i < uids.size(); ++i)
      if (pending_content_ids_[i])
        ProveCommitted(uids[i], pending_digests_[i], pending_content_ids_[i], pending_replace_[i]);
    pending_.clear();
    pending_replace_.clear();
    pending_digests_.clear();
    pending_content_ids_.clear();
    pending_bytes_ = 0;
  }

  // `path` is committed and holds the bytes of content `content_id` (written from the stream, or
  // compared with it): it becomes the repository entry, or proves an entry with the same bytes,
  // or (an entry with other bytes: a digest collision) serves links to this content itself.
  void ProveCommitted(uint32_t uid, const Digest& digest, uint64_t content_id, bool replace_entry) {
    const std::string path = folder_->MessagePath(uid);
    if (!replace_entry) {
      // The common case, a new content: linked from the folder's directory into the repository's
      // by one linkat(2) between open directories, and proven by one fstatat(2).
      std::string name;
      const int dir = folder_->MessageDirFd(uid, &name);
      if (repository_->AddIfMissing(digest, dir, name, path)) {
        struct stat st;
        if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) ThrowErrno("stat " + path);
        if (FileId* slot = ProvenSlot(content_id)) *slot = FileId::Of(st);
        return;
      }
    }
    UniqueFd mine = OpenFile(path, O_RDONLY);
    if (replace_entry) {
      const std::string entry = repository_->EntryPath(digest);
      struct stat old;
      const bool had = ::stat(entry.c_str(), &old) == 0;
      repository_->Replace(digest, path);
      struct stat now;
      if (::fstat(mine.get(), &now) != 0) ThrowErrno("stat " + path);
      // Links to other content ids proven by the old (full) entry follow it to this copy.
      if (had && !(FileId::Of(old) == FileId::Of(now))) replaced_[FileId::Of(old)] = FileId::Of(now);
      Prove(content_id, mine.get(), path);
      return;
    }
    const std::string entry_path = repository_->EntryPath(digest);
    UniqueFd entry = TryOpenAt(AT_FDCWD, entry_path, O_RDONLY, 0, entry_path);
    if (entry.valid() && relinker::SameContent(entry.get(), mine.get())) {
      // Another session (a parallel migrate group, a second restore) wrote this content too and
      // its copy became the entry first: this copy becomes a link to it, so the content is
      // stored once whichever session commits first.
      std::string name;
      const int dir = folder_->MessageDirFd(uid, &name);
      if (repository_->LinkToEntry(digest, entry.get(), folder_->dir_fd(), dir, name, path)) ++report_.linked;
      Prove(content_id, entry.get(), entry_path);
      return;
    }
    collided_[content_id] = path;
    Prove(content_id, mine.get(), path);
  }

  // Content ids count message and held records alike; the slot of a new one starts empty.
  void NewContent() {
    ++contents_;
    const size_t slot = size_t((contents_ - 1) % format::kLinkCheckWindow);
    if (slot >= proven_.size()) proven_.resize(slot + 1);
    proven_[slot] = FileId{};
  }

  // The file proven for a content id, within the last kLinkCheckWindow contents (the links a
  // writer sends, docs/stream-format.md §7.4); nullptr for an older or unknown id.
  FileId* ProvenSlot(uint64_t content_id) {
    if (content_id == 0 || content_id > contents_ || contents_ - content_id >= format::kLinkCheckWindow) return nullptr;
    return &proven_[size_t((content_id - 1) % format::kLinkCheckWindow)];
  }

  void Prove(uint64_t content_id, int fd, const std::string& path) {
    FileId* slot = ProvenSlot(content_id);
    if (!slot) return;
    struct stat st;
    if (::fstat(fd, &st) != 0) ThrowErrno("stat " + path);
    *slot = FileId::Of(st);
  }

  // A proven file, or the copy that replaced it in the repository when it was full.
  FileId Current(FileId id) const {
    for (size_t hops = 0; hops <= replaced_.size(); ++hops) {
      auto it = replaced_.find(id);
      if (it == replaced_.end()) break;
      id = it->second;
    }
    return id;
  }

  void OnFolderEnd() {
    if (!store_) return;
    if (!folder_) {
      CheckSummary();  // an unchanged block for a folder this side lacks
      return;
    }
    Commit();
    ApplyFlagChanges();
    // What a killed writer (this restore's predecessor, say) staged here and never committed: a
    // commit sweeps it, but a rerun that finds the folder complete makes none, and the files
    // stayed until relink's hour (helper-155). A listing of the folder's own directory, made
    // only where no commit made it already.
    if (mode_ != Mode::kNew && !committed_here_) store::RemoveTemporariesOfGoneWriters(folder_->dir_fd());
    // An incremental block names every message of the source folder; an unchanged one none.
    if (options_.mirror && mode_ == Mode::kMerge && decoder_.header().since == 0 && !folder_record_.unchanged()) {
      std::vector<uint32_t> gone;
      for (size_t i = 0; i < present_.size(); ++i)
        if (!present_in_stream_[i]) gone.push_back(present_[i].uid);
      folder_->Expunge(gone);
      report_.expunged += gone.size();
    }
    folder_->RaiseUidNext(mode_ == Mode::kAppend ? 0 : folder_record_.uidnext);
    const store::FolderCoverage coverage = CoverageAfter();
    // Marked only by -n: a plain restore's mailbox is the live one a later -n must not merge into.
    if (mode_ == Mode::kNew)
      store_->PublishFolder(*folder_, options_.rename_existing ? RestoredOrigin() : std::string(), coverage);
    else if (coverage != coverage_before_)
      store_->SetCoverage(user_, folder_name_, coverage);
    if (!folder_record_.acl.empty()) store_->SetAcl(user_, folder_name_, folder_record_.acl);
    std::string mailbox = "user/" + user_ + "/" + folder_name_;
    for (const auto& [reader, data] : folder_record_.peruser) store_->SetPerUser(mailbox, MapUser(reader), data);
    const bool settled = !unsettled_marked_;
    CheckSummary();
    // A folder that does not equal its source after all proves nothing about what it holds.
    if (settled && (unsettled_marked_ || not_whole_) && coverage != coverage_before_)
      store_->SetCoverage(user_, folder_name_, coverage_before_);
    folder_.reset();
  }

  // Another of the user's mailboxes that holds the source folder `uidvalidity` of `store_id`;
  // of several (renamed more than once), the one that holds it up to the latest time.
  std::optional<store::FolderInfo> FolderHoldingSource(const std::string& store_id, uint32_t uidvalidity) {
    std::optional<store::FolderInfo> best;
    for (store::FolderInfo& f : store_->ListFolders(user_, store::Store::FolderDetail::kRecordOnly))
      if (f.folder != folder_name_ && f.coverage.store_id == store_id && f.coverage.uidvalidity == uidvalidity &&
          (!best || f.coverage.through > best->coverage.through))
        best = std::move(f);
    return best;
  }

  static constexpr size_t kMaxNotes = 1000;
  // Users the stream has moved elsewhere, made here so: one note a host, not a line a user (a
  // store's rerun printed 60 such lines over its summary, helper-119).
  void NoteUsersMadeMoved() {
    std::vector<std::string> notes;  // put first: a few lines, which the cap on notes must not drop
    for (const auto& [host, seen] : made_moved_) {
      const auto& [status, count, names] = seen;
      if (count == 1) {
        notes.push_back("user " + names[0] + ": made here " + status + ", as the stream says (its mail lives on that host; "
                "storemove user " + names[0] + " --status active --include-moved takes deliveries here)");
        continue;
      }
      std::string list;
      for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
      if (count > names.size()) list += " and " + std::to_string(count - names.size()) + " more";
      notes.push_back(std::to_string(count) + " users made here " + status + ", as the stream says (their mail "
                      "lives on that host; storemove user USER --status active --include-moved takes one's "
                      "deliveries here): " + list);
    }
    for (std::string& n : notes) n = EscapeControls(n);
    report_.notes.insert(report_.notes.begin(), notes.begin(), notes.end());
  }
  // The open folder's user (user_) is refused (OnUser's refusal, due at its first folder, or
  // said already with -c y): the folder is skipped, or the refusal thrown.
  bool RefusedUser() {
    if (auto it = refusals_at_first_folder_.find(user_); it != refusals_at_first_folder_.end()) {
      // Moved away from here, and the stream has mail of it: refused now, in the words of its
      // record's refusal (one line, not the folder's with a -c y hint; the stream's user).
      const auto [stream_user, why] = it->second;
      refusals_at_first_folder_.erase(it);
      refused_users_.insert(user_);
      if (!options_.continue_on_error) {
        refusing_user_ = true;
        Throw(Errc::kInvalidArgument, why);
      }
      CountError(Errc::kInvalidArgument);
      AddErrorLine("user " + stream_user + ": " + why + "; skipped, with its folders");
    }
    if (!refused_users_.count(user_)) return false;
    skipping_ = true;  // said once, with the user (-c y)
    return true;
  }

  // A record of a user moved away from here that no (selected) folder followed: nothing
  // refused, nothing applied, and said (helper-148: its quota and subscriptions were dropped
  // without a word). Not for a user refused already (helper-149).
  void NoteRecordsOfMovedUsersLeftOut() {
    for (const auto& [user, refusal] : refusals_at_first_folder_)
      if (!refused_users_.count(user))
        AddNote("user " + user + ": moved away from here; the stream's record of " + refusal.first +
                " (status, quota, subscriptions) was left out, and no " + (selection_ ? "selected " : "") +
                "folder of it followed that record");
    refusals_at_first_folder_.clear();
  }
  static constexpr size_t kNamesShown = 5;
  // host (lower case, no final dot) -> the status as first seen, users, the first names
  std::map<std::string, std::tuple<std::string, size_t, std::vector<std::string>>> made_moved_;

  void AddNote(const std::string& line) {
    if (report_.notes.size() < kMaxNotes) report_.notes.push_back(EscapeControls(line));
  }

  // The chain check of dated (-d) streams: what the folder holds of its source once this
  // block is applied (store::FolderCoverage). A complete block (a full stream, or a dated one
  // that carried every message the source folder had) covers the source folder up to the
  // stream's creation; a dated block continues what the folder held only if that reaches back to
  // the stream's `since`. Otherwise messages stored at the source between the two are missing
  // here (an incremental skipped, or one of another store): reported as an error naming the
  // mailbox and the period, unless --allow-gap; the coverage stays as it was, so a restore of
  // the missing stream and then this one again completes the chain.
  store::FolderCoverage CoverageAfter() {
    const format::StreamHeader& h = decoder_.header();
    if (h.store_id.empty() || unsettled_marked_) return coverage_before_;  // no store named; not settled
    // A stream restored into the store it came from (deleted mail brought back from last
    // night's incremental): a folder of the same UIDVALIDITY is the source folder itself.
    if (h.store_id == store_->store_id() && same_uidvalidity_here_) return coverage_before_;
    const store::FolderCoverage& have = coverage_before_;
    const bool same_source = have.store_id == h.store_id && have.uidvalidity == folder_record_.uidvalidity;
    const bool complete = h.since == 0 || folder_carried_ >= folder_record_.count;
    if (complete || (same_source && have.through >= h.since))
      return {h.store_id, folder_record_.uidvalidity, same_source ? std::max(have.through, h.created) : h.created};
    // Renamed at the source since the last stream (a dated chain does not carry renames): its
    // earlier messages are here under the former name, which holds the same source folder.
    std::optional<store::FolderInfo> former;
    if (!same_source) former = FolderHoldingSource(h.store_id, folder_record_.uidvalidity);
    if (former && former->coverage.through >= h.since) {
      AddNote(current_mailbox_ + ": renamed at the source: its messages stored before " + IsoUtcTime(h.since) +
              " are here under its former name " + former->Mailbox() + " (a dated backup does not carry renames)");
      return {h.store_id, folder_record_.uidvalidity, h.created};
    }
    if (!side_copy_ && !options_.allow_gap) {
      std::string held;
      if (former)
        held = "it was renamed at the source, and its former name here, " + former->Mailbox() +
               ", holds that store's messages only up to " + IsoUtcTime(former->coverage.through);
      else if (have.empty())
        held = "no earlier backup of it from that store was restored here (or one by a version before "
               "2026-12-05)";
      else if (have.store_id != h.store_id)
        held = "it holds another store's mail (" + have.store_id + ")";
      else if (have.uidvalidity != folder_record_.uidvalidity)
        held = "it holds that store's folder of UIDVALIDITY " + std::to_string(have.uidvalidity) +
               ", not this one (re-created there since)";
      else
        held = "it holds that store's messages only up to " + IsoUtcTime(have.through);
      CountError(Errc::kNotFound);
      // The first few in full; the rest named on one line at the end: a skipped incremental made
      // one long line a mailbox, 32 for 7 users, which buried everything else (helper-97).
      if (++gap_mailboxes_ <= kFullGapLines) {
        AddErrorLine(current_mailbox_ + ": gap in the backup chain: this stream has the messages store " + h.store_id +
                     " stored since " + IsoUtcTime(h.since) + ", but " + held +
                     "; messages stored before that are missing here. Restore the full backup and every incremental "
                     "after it in order (or this stream with --allow-gap)");
      } else if (more_gaps_named_.size() < kMoreGapsNamed) {
        more_gaps_named_.push_back(current_mailbox_);
      }
    }
    return have;
  }

  // Drops what was staged for a folder that will not be completed. A new folder stays
  // unpublished (invisible); a merge keeps the messages already committed (each complete).
  void AbandonFolder() {
    if (folder_) folder_->Discard(pending_);
    pending_.clear();
    pending_replace_.clear();
    pending_digests_.clear();
    pending_content_ids_.clear();
    pending_bytes_ = 0;
    pending_flags_.clear();  // like the appends not committed: the folder is reported, a rerun applies them
    writer_.reset();
    matcher_.reset();
    folder_.reset();
  }

  // Takes the user's write lock (docs/store-format.md §6.9), first finishing the user before:
  // a stream carries a user's folders together, so the previous user is complete. One user at a
  // time: a session never waits while it holds a lock, so sessions cannot deadlock.
  void WriteUser(const std::string& user) {
    if (write_lock_ && write_lock_->user() == user) return;
    RecomputePendingQuota();
    write_lock_.reset();
    try {
      // A migrate pass keeps its own copy untouched; any other restore is a writer like import.
      write_lock_.emplace(store_->LockUserForWriting(
          user, store::Store::LockWait{options_.on_wait, options_.lock_timeout_seconds, options_.lock_cancelled,
                                       options_.copy_on_hold}));
    } catch (const Error& e) {
      gave_up_on_user_ = e.code() == Errc::kTempFail;
      throw;
    }
    quota_user_ = user;
    quota_counted_ = false;
  }

  void RecomputePendingQuota() {
    // Taken first: a count that failed stays this user's failure, not every later user's (the
    // next user's WriteUser count it again: -c y skipped every user after one whose record a
    // full disk never let be written, each "no such user: <that user>"; helper-158's run).
    const std::string user = std::exchange(quota_user_, std::string());
    if (user.empty() || std::exchange(quota_counted_, false)) return;
    // Under the user's delivery gate, waited for as the write lock was.
    store::Store::LockWait gate_wait;
    gate_wait.on_wait = options_.on_wait;
    gate_wait.timeout_seconds = options_.lock_timeout_seconds;
    gate_wait.cancelled = options_.lock_cancelled;
    try {
      store_->RecomputeQuota(user, gate_wait);
    } catch (const Error& e) {
      if (!options_.continue_on_error) throw;
      if (!store_->FindUser(user)) return;  // never made (its failure is reported): nothing to count
      CountError(e.code());
      AddErrorLine("user " + user + ": counting its quota usage: " + e.what() + " (storemove user " + user +
                   " --recount-quota counts it)");
    }
  }

  void Finish() {
    if (gap_mailboxes_ > kFullGapLines) {
      std::string names;
      for (const std::string& m : more_gaps_named_) names += (names.empty() ? "" : ", ") + m;
      const uint64_t unnamed = gap_mailboxes_ - kFullGapLines - more_gaps_named_.size();
      AddErrorLine(Counted(gap_mailboxes_ - kFullGapLines, "more mailbox", "more mailboxes") +
                   " with a gap in the backup chain, as above: " + names +
                   (unnamed ? " and " + std::to_string(unnamed) + " more" : ""));
    }
    for (const auto& [user, skipped] : inbox_only_skipped_)
      AddNote("user " + user + ": the names select its INBOX" +
              (inbox_restored_.count(user) ? "," : ", which the stream does not have,") + " not " +
              Counted(skipped, "other folder") + " of it in the stream (user/" + user + " is the INBOX; user/" + user +
              "/* names every folder)");
    if (error_lines_dropped_)
      report_.error_lines.push_back("... and " + std::to_string(error_lines_dropped_) + " more errors not listed");
    if (store_) {
      RecomputePendingQuota();
      try {
        store_->Checkpoint();
      } catch (const Error& e) {
        // With -c y the report is what says which folders failed: a checkpoint meeting the full
        // disk that failed them threw it away, one line left (helper-158). Its line joins the
        // others; without -c y it stops the restore, as any error does.
        if (!options_.continue_on_error) throw;
        CountError(e.code());
        AddErrorLine(e.what());
      }
      writeback_->Stop();  // before the caller's final sync
    }
    progress_.Finish();
    report_.seconds = progress_.seconds();
  }

  enum class Action { kIgnore, kWrite, kMatch, kVerifyPresent, kRepair, kRepairDamaged };

  store::Store* store_;
  format::Decoder& decoder_;
  const RestoreOptions& options_;
  std::unique_ptr<TocWriter> toc_;
  Progress progress_;
  SessionReport report_;
  std::string quota_user_;  // the user whose quota is recounted once its folders are in
  bool quota_counted_ = false;  // quota_user_ was made by this session: its usage is exact, no recount
  std::optional<store::Store::UserWriteLock> write_lock_;  // the user being written
  std::optional<store::BackgroundWriteback> writeback_;     // when writing to a store on a disk
  bool skipping_ = false;
  bool in_folder_ = false;  // between a folder record and its folder-end
  std::optional<Selection> selection_;  // restore NAMES
  std::string stream_user_, stream_user_partition_;  // the last user record's
  SkippedContents skipped_{store_ ? store_->root() : std::string(), options_.skipped_bodies_max_bytes};
  std::set<std::string> refused_users_;  // -c y: users refused as moved here (their folders are skipped)

  // The open folder.
  std::string user_, folder_name_, current_mailbox_;
  std::string origin_;  // OriginOf(the stream's header), kept in the folders this session makes
  std::string dated_user_;
  std::map<std::string, std::string> dated_;  // -n: stream mailbox -> dated_user_'s folder this stream made of it
  std::string source_mailbox_;     // user/U/F as the stream names it (what `unsettled` lists)
  static constexpr uint64_t kFullGapLines = 5, kMoreGapsNamed = 50;
  uint64_t gap_mailboxes_ = 0;                // mailboxes with a gap in the chain (CoverageAfter)
  std::vector<std::string> more_gaps_named_;  // those after the first kFullGapLines, up to kMoreGapsNamed
  std::optional<format::UserRecord> deferred_user_;  // restore NAMES: made at its first selected folder (OnUser)
  bool bare_candidate_ = false;        // restore NAMES: the selected user record read last has no folder yet
  uint64_t selected_bare_users_ = 0;  // ... and none came
  // Users moved away from here whose stream record is no move to that host (ApplyUser): refused
  // at their first (selected) folder (RefusedUser), in the words of the refusal; one no folder
  // follows is no refusal, only a note (NoteRecordsOfMovedUsersLeftOut).
  // user here -> the stream's name of it, the refusal
  std::map<std::string, std::pair<std::string, std::string>> refusals_at_first_folder_;
  bool refusing_user_ = false;  // OnFolder's throw is such a refusal: Guard passes it on as it is
  std::set<std::string> bare_user_names_;               // restore NAMES given as "user/NAME"
  std::vector<bool> names_matched_;       // restore NAMES: which names selected something (Selection)
  std::set<std::string> inbox_restored_;  // of bare_user_names_: those whose INBOX the stream had
  std::map<std::string, uint64_t> inbox_only_skipped_;  // ... -> that user's other folders skipped
  bool unsettled_marked_ = false;  // the open folder is in report_.unsettled already
  bool committed_here_ = false;    // a commit to the open folder swept its gone writers' temporaries
  bool not_whole_ = false;         // left_out_marks: the open folder lacks what its backup left out
  format::FolderRecord folder_record_;
  uint64_t folder_carried_ = 0;  // the folder's message, link, held and meta records: source messages
  store::FolderCoverage coverage_before_;  // the folder's before this stream (CoverageAfter)
  bool same_uidvalidity_here_ = false;     // the folder here has the stream folder's UIDVALIDITY
  bool side_copy_ = false;  // -n restores this folder beside the existing one, as NAME.YYYYMMDD
  Mode mode_ = Mode::kNew;
  std::unique_ptr<store::Folder> folder_;
  std::string partition_path_;  // of the open folder
  std::unique_ptr<relinker::Repository> repository_;
  // A merge folder's messages before the stream, in UID order, and which of them the stream named.
  struct Present {
    uint32_t uid;
    uint8_t flags;
    uint64_t size, user_flags;
    int64_t save_time, internal_date;  // SameArrival
    Digest digest;
  };
  std::vector<Present> present_;
  std::vector<bool> present_in_stream_;
  // Copies in the folder a stream message may be found as, sorted by content, then UID.
  struct Unclaimed {
    Digest digest;
    uint64_t size;
    uint32_t uid;
    bool taken;                        // claimed by a message of this stream
    int64_t save_time, internal_date;  // SameArrival
    bool operator<(const Unclaimed& o) const {
      return std::tie(digest.bytes, size, uid) < std::tie(o.digest.bytes, o.size, o.uid);
    }
  };
  std::vector<Unclaimed> unclaimed_;
  std::map<std::string, bool> empty_repository_;  // partition -> repository empty at first use
  bool repository_was_empty_ = false;
  ContentFilter written_;  // contents this session wrote: where a look-up may find them after all
  std::vector<int> flag_map_;
  std::vector<store::StagedMessage> pending_;
  static constexpr size_t kFlagChangesPerBatch = 4096;
  std::vector<store::FlagChange> pending_flags_;  // of messages present before the stream
  std::vector<Digest> pending_digests_;
  std::vector<uint64_t> pending_content_ids_;  // content id of new content, 0 for links
  uint64_t pending_bytes_ = 0;
  std::vector<bool> pending_replace_;

  // The open message.
  format::MessageRecord message_;
  store::MessageMeta meta_;
  Action action_ = Action::kIgnore;
  std::unique_ptr<store::MessageWriter> writer_;
  std::optional<relinker::IncomingMatcher> matcher_;
  uint32_t present_uid_ = 0;   // the folder's copy of the open message (kVerifyPresent, kRepairDamaged)
  bool claimed_ = false;       // present_uid_ is not the stream's UID (AlreadyPresent)
  bool gave_up_on_user_ = false;  // a bounded wait for a user's write lock ended: the restore stops
  bool uidnext_raised_ = false;  // the merged folder's uidnext is past the source's already
  struct stat present_stat_ {};  // of the present file found damaged (kRepairDamaged)
  size_t error_lines_dropped_ = 0;

  // Content ids handed out so far (the decoder checks links against them); the few contents
  // whose digest collided with other bytes in the repository.
  uint64_t contents_ = 0;
  std::unordered_map<uint64_t, std::string> collided_;
  // By content id (a ring over the last kLinkCheckWindow ids, 16 bytes each): the file this
  // session wrote or proved to hold that content, the only file a link to it may use.
  std::vector<FileId> proven_;
  std::unordered_map<FileId, FileId, FileIdHash> replaced_;  // full entries -> their copies (rare)
  std::unordered_set<uint64_t> unproven_;  // content ids of held records whose proof failed
};

}  // namespace

SessionReport Restore(store::Store* store, format::Decoder& decoder, const RestoreOptions& options,
                      std::ostream* toc) {
  if (!store && !options.table_of_contents) Throw(Errc::kInvalidArgument, "restore needs a store");
  return RestoreSession(store, decoder, options, toc).Run();
}

void CheckCopiesOnHold(store::Store& store, const RestoreOptions& options) {
  if (!options.copy_on_hold) return;
  // Every refused user at once: one per run made an administrator rerun once per user (helper-85).
  std::optional<Error> first;
  std::vector<std::string> others;
  for (const std::string& user : options.copy_users) {
    store::ValidateUserId(user);
    std::optional<store::UserInfo> here = store.FindUser(user);
    if (!here) continue;
    try {
      CheckCopyOnHold(*here, options);
    } catch (const Error& e) {
      if (!first) first = e;
      else others.push_back(EscapeControls(user));
    }
  }
  if (!first) return;
  if (others.empty()) throw *first;
  constexpr size_t kNamed = 10;
  std::string named;
  for (size_t i = 0; i < others.size() && i < kNamed; ++i) named += (i ? ", " : "") + others[i];
  if (others.size() > kNamed) named += ", ...";
  Throw(first->code(), std::string(first->what()) + ". Refused too, " + std::to_string(others.size()) + " more user" +
                           (others.size() == 1 ? "" : "s") + " of the group: " + named +
                           " (to set many at once: storemove user --users-file FILE --status hold)");
}

}  // namespace storemove::stream
