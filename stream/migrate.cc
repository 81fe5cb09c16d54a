#include "stream/migrate.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "store/admin.h"
#include "stream/hold_journal.h"
#include "stream/journal_file.h"
#include "stream/members_file.h"
#include "stream/switch_record.h"
#include "util/sectioned_list.h"
#include "util/error.h"
#include "util/iso_time.h"
#include "util/fs.h"
#include "util/printable.h"
#include "util/version.h"
#include "util/plural.h"

namespace storemove::stream {

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Adds the seconds from its construction to its destruction to *into, however the scope ends.
class PhaseTimer {
 public:
  explicit PhaseTimer(double* into) : into_(into), start_(Clock::now()) {}
  ~PhaseTimer() { *into_ += Since(start_); }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

 private:
  double* into_;
  Clock::time_point start_;
};

// --- the hold journal -------------------------------------------------------------------------
// STORE/migrate-journal/GROUP.hold lists the users a migrate put on hold and their status
// before, written (durably) before the first of them is held, so that a run killed with -9
// leaves what its successor (or `migrate --abort`) needs to give them their service back
// (its format: stream/hold_journal.h).

std::string JournalDir(const store::Store& s) { return s.root() + "/migrate-journal"; }
std::string JournalPath(const store::Store& s, const std::string& group) {
  return JournalDir(s) + "/" + group + ".hold";
}

using Held = std::map<std::string, store::UserStatus>;  // user -> status before the hold

void WriteJournal(const store::Store& s, const std::string& group, const std::string& to, const Held& held) {
  WriteFileAtomic(JournalPath(s, group), FormatHoldJournal({group, to, held}), 0600);
}

// Removes one of the journal directory's files durably; one already gone is fine.
void RemoveJournalFile(const store::Store& s, const std::string& path) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return;
    ThrowErrno("remove " + path);
  }
  FsyncPath(JournalDir(s));
}

void RemoveJournal(const store::Store& s, const std::string& group) { RemoveJournalFile(s, JournalPath(s, group)); }

Held ReadJournal(const std::string& path) { return ParseHoldJournal(ReadJournalFile(path), path).before; }

// Sets the users still on hold back to their status before; returns how many. Users the run
// has moved meanwhile keep `moved`. Errors go to *errors (the journal then stays). Each user put
// back is also added to *put_back, when given.
uint64_t PutBack(store::Store& s, const Held& held, std::vector<std::string>* errors,
                 std::set<std::string>* put_back = nullptr, const store::Store::LockWait& wait = {}) {
  uint64_t n = 0;
  for (const auto& [user, before] : held) {
    try {
      std::optional<store::UserInfo> u = s.FindUser(user);
      if (!u || u->status.state != store::UserState::kHold) continue;
      if (before.state != store::UserState::kHold) s.SetUserStatus(user, before, wait);
      ++n;
      if (put_back) put_back->insert(user);
    } catch (const Error& e) {
      errors->push_back("putting " + user + " back to " + before.ToString() + ": " + e.what());
    }
  }
  return n;
}

// One migrate per group at a time: STORE/migrate-journal/GROUP.lock, held for the whole run. A
// second migrate of the same group would take the first's journal for a killed run's and give its
// held users their service back in the middle of its catch-up. Migrates of other groups of the
// same store may run at once (a fleet runs one job per group: docs/fleet.md); the kernel drops the
// lock of a killed process.
std::string GroupLockPath(const store::Store& s, const std::string& group) {
  return JournalDir(s) + "/" + group + ".lock";
}

// The lock of `group`, or an invalid fd when another process holds it (after waiting up to
// wait_ms, in steps of 100 ms; a cancellation ends the wait).
UniqueFd TryLockGroup(const store::Store& s, const std::string& group, int64_t wait_ms = 0,
                      net::Cancellation* cancel = nullptr) {
  MakeDirs(JournalDir(s), 0700);
  std::string path = GroupLockPath(s, group);
  UniqueFd fd = OpenFile(path, O_RDWR | O_CREAT, 0600);
  const auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) ThrowErrno("lock " + path);
    if (Clock::now() >= deadline) return UniqueFd();
    if (cancel ? cancel->WaitFor(100) : (std::this_thread::sleep_for(std::chrono::milliseconds(100)), false))
      return UniqueFd();
  }
  return fd;
}

[[noreturn]] void ThrowGroupBusy(const store::Store& s, const std::string& group) {
  Throw(Errc::kTempFail, "another storemove migrate is running on " + s.root() + " (group " + group + ": " +
                             GroupLockPath(s, group) + " is locked)");
}

// --- the users each running migrate has claimed ------------------------------------------------
// Two migrates of the same users through two groups files (other group names, so other locks)
// would each hold, copy and switch them, and the loser's last line would say its users are served
// by the source while they are moved (helper-69). So each run writes the users of each group it
// migrates to STORE/migrate-journal/GROUP.members, under migrate-journal/claims.lock, after reading
// those of every group whose lock another live run holds: a user claimed already refuses the run
// before anything is held or sent. A members file whose group lock nobody holds is a finished or
// killed run's: removed. Their format: stream/members_file.h.

std::string MembersPath(const store::Store& s, const std::string& group) {
  return JournalDir(s) + "/" + group + ".members";
}

// migrate-journal/claims.lock, held by others for a directory listing at most: whoever reads or
// removes members files holds it (ClaimMembers, AbortMigrations).
UniqueFd LockClaims(const store::Store& s) {
  const std::string claims = JournalDir(s) + "/claims.lock";
  UniqueFd fd = OpenFile(claims, O_RDWR | O_CREAT, 0600);
  while (::flock(fd.get(), LOCK_EX) != 0)
    if (errno != EINTR) ThrowErrno("lock " + claims);
  return fd;
}

// Every GROUP.members file of the journal directory, in name order.
std::vector<std::filesystem::path> MembersFiles(const store::Store& s) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(JournalDir(s)))
    if (entry.path().extension() == ".members") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

// `member_of`: which of `groups` a user another run claimed would be in (nullopt: none of
// them); `members`: each group's users, section g for groups[g], read once into its members file.
void ClaimMembers(const store::Store& s, const std::map<std::string, UniqueFd>& locks,
                  const std::vector<BackupGroup>& groups,
                  const std::function<std::optional<size_t>(const std::string&)>& member_of, SectionedList& members,
                  const std::string& groups_file) {
  MakeDirs(JournalDir(s), 0700);
  const UniqueFd claims = LockClaims(s);
  for (const std::filesystem::path& path : MembersFiles(s)) {
    const std::string group = path.stem().string();
    if (locks.count(group)) continue;  // ours: written anew below
    if (UniqueFd other = TryLockGroup(s, group); other.valid()) {
      RemoveJournalFile(s, path);
      continue;
    }
    for (const std::string& user : ParseMembersFile(ReadJournalFile(path), path.string()))
      if (const std::optional<size_t> g = member_of(user))
        Throw(Errc::kTempFail, "migrate: user " + user + " of group " + groups[*g].name + " (" + groups_file +
                                   ") is being migrated by another storemove migrate, as a member of its group " +
                                   group + " (" + path.string() + "); nothing was migrated");
  }
  members.Finish();
  for (size_t g = 0; g < groups.size(); ++g)
    WriteMembersFile(MembersPath(s, groups[g].name), [&](const std::function<void(std::string_view)>& write) {
      members.Read(g, write);
    });
}

// Removes a run's members files when it ends, however it ends, before its group locks go (a
// killed run's are removed by the next run that finds their locks free).
class MembersClaim {
 public:
  MembersClaim(const store::Store& s, std::vector<std::string> groups) : store_(s), groups_(std::move(groups)) {}
  ~MembersClaim() {
    for (const std::string& group : groups_) ::unlink(MembersPath(store_, group).c_str());
  }

 private:
  const store::Store& store_;
  std::vector<std::string> groups_;
};

std::vector<std::string> JournalGroups(const store::Store& s) {
  std::vector<std::string> groups;
  MakeDirs(JournalDir(s), 0700);
  for (const auto& entry : std::filesystem::directory_iterator(JournalDir(s)))
    if (entry.path().extension() == ".hold") groups.push_back(entry.path().stem().string());
  std::sort(groups.begin(), groups.end());
  return groups;
}

// Applies and removes the journal a killed run left for `group` (whose lock the caller holds).
std::string RecoverJournal(store::Store& s, const std::string& group) {
  std::string path = JournalPath(s, group);
  Held held;
  try {
    held = ReadJournal(path);
  } catch (const Error& e) {
    if (e.code() != Errc::kCorrupt) throw;
    // The way out, said (helper-125): nobody knows the users' statuses before but the file.
    Throw(Errc::kCorrupt, std::string(e.what()) + "; nobody was put back from it: set the group's users held by it "
                                                  "back by hand (storemove user --group GROUP --status active), then "
                                                  "remove the file");
  }
  std::vector<std::string> errors;
  uint64_t n = PutBack(s, held, &errors);
  if (!errors.empty()) Throw(Errc::kIo, "migrate journal " + path + ": " + errors.front() + " (the journal is kept; rerun)");
  RemoveJournal(s, group);
  return "group " + group + ": an interrupted migrate had left " + std::to_string(n) + " of " +
         Counted(held.size(), "user") + " on hold; put back to their status before (" + path + ")";
}

// --- the switch record -------------------------------------------------------------------------
// STORE/migrate-journal/GROUP.switch lists the users whose switch an attempt has begun (written
// durably just before the destination is told to make them active, removed once the source has
// them moved). An attempt or run that stopped in between leaves the destination's copies active
// while the source puts the users back: those copies are this migration's, never live (the
// source never said "moved", so no mail went there), and the next attempt's passes adopt them.
// Its format: stream/switch_record.h. A run that failed after sending the switch and put its
// users back at the source itself keeps it marked failed-run: their destination copies may be
// active, and no one else has touched them.

std::string SwitchPath(const store::Store& s, const std::string& group) {
  return JournalDir(s) + "/" + group + ".switch";
}

// `to_store`: the destination's store id from its READY ("" if it gave none that can be kept).
void WriteSwitchRecord(const store::Store& s, const std::string& group, const std::string& to,
                       const std::string& to_store, const std::vector<std::string>& users) {
  WriteFileAtomic(SwitchPath(s, group), FormatSwitchRecord({false, to, to_store, users}), 0600);
}

// The store id a session's server gave, if it can stand in a switch record; else "".
std::string DestinationStoreId(const net::Session& session) {
  return IsRecordableStoreId(session.server_store_id()) ? session.server_store_id() : "";
}

void RemoveSwitchRecord(const store::Store& s, const std::string& group) { RemoveJournalFile(s, SwitchPath(s, group)); }

std::string SwitchRecordMagic(const store::Store& s, const std::string& group) {
  const std::string path = SwitchPath(s, group);
  if (!PathExists(path)) return "";
  const std::string text = ReadJournalFile(path);
  return text.substr(0, text.find('\n'));
}

// The run that wrote the record failed after it: marks it for the next run to believe, and
// returns it (the users named: their copies at the destination may be active). None without a
// record (trusted for a recovered journal, but no switch was sent); kCorrupt for one it cannot read.
std::optional<SwitchRecord> KeepSwitchRecordOfFailedRun(const store::Store& s, const std::string& group) {
  const std::string path = SwitchPath(s, group);
  if (!PathExists(path)) return std::nullopt;
  SwitchRecord record = ParseSwitchRecord(ReadJournalFile(path), path);
  if (!record.failed_run) {
    record.failed_run = true;
    WriteFileAtomic(path, FormatSwitchRecord(record), 0600);
  }
  return record;
}

// Before a run recovers a killed run's hold journal. The switch record beside it is sure while
// every user it names is still on hold, as the killed run left them, and is then marked as a
// failed run's, so that the next run still believes it if this run is killed before it finishes
// the group. Otherwise someone acted since: the switch reached the source (moved), or the users
// were taken back by hand, and their copies may be live and have taken mail (helper-124,
// helper-125); the record proves nothing and is removed, as ReadSwitchRecord removes a stale one.
// `migrate --abort` removes the records of the journals it recovers.
void KeepSwitchRecordOfRecoveredJournal(store::Store& s, const std::string& group) {
  const std::string path = SwitchPath(s, group);
  if (!PathExists(path)) return;
  for (const std::string& user : ParseSwitchRecord(ReadJournalFile(path), path).users) {
    std::optional<store::UserInfo> u = s.FindUser(user);
    if (u && u->status.state != store::UserState::kHold) {
      RemoveSwitchRecord(s, group);
      return;
    }
  }
  KeepSwitchRecordOfFailedRun(s, group);
}

// Whether any of a switch record's users is moved at the source: the switch reached the source,
// and their destination copies are live (the record is stale).
bool AnyUserMoved(store::Store& s, const SwitchRecord& record) {
  return std::any_of(record.users.begin(), record.users.end(), [&](const std::string& user) {
    std::optional<store::UserInfo> u = s.FindUser(user);
    return u && u->status.state == store::UserState::kMoved;
  });
}

// The users of `group`'s switch record aimed at the destination at `to` whose store id is
// `to_store` ("" if unknown; SwitchRecordNames) that are not moved at the source (a moved one was
// switched: its destination copy is live). Empty without a record.
// The record is believed only while what it describes is certain: written by this run, or left
// with the hold journal of a run killed during its hold (recovered by this run before anything
// else could change the users). Otherwise, or once any of its users is moved (the switch reached
// the source), it is stale and removed: kept, it would let a later migration take over a copy
// that has become live at the destination (found by review, helper-45).
std::set<std::string> ReadSwitchRecord(store::Store& s, const std::string& group, const std::string& to,
                                       const std::string& to_store, bool trusted) {
  std::set<std::string> users;
  std::string path = SwitchPath(s, group);
  if (!PathExists(path)) return users;
  if (!trusted) {
    RemoveSwitchRecord(s, group);
    return users;
  }
  const SwitchRecord record = ParseSwitchRecord(ReadJournalFile(path), path);
  if (AnyUserMoved(s, record)) {  // the switch was done: nothing to adopt
    RemoveSwitchRecord(s, group);
    return {};
  }
  for (const std::string& user : record.users)
    if (s.FindUser(user)) users.insert(user);
  // Another destination's. Matched by the store: the chaos test's rerun, sent to the restarted
  // server through a new port, refused the copies as live for ever (they stay active there).
  if (!SwitchRecordNames(record, to, to_store)) return {};
  return users;
}

// Counters one group's worker updates and the display thread reads.
struct LiveGroup {
  std::atomic<uint64_t> messages{0}, bytes{0};
  std::atomic<const char*> phase{"waiting"};
  uint64_t total_bytes = 0;
  // Since when this attempt's users are on hold (the group's own thread only): a failed group
  // reports how long its users were held too (helper-79: "held 0.00s" after 10.5 s on hold).
  std::optional<std::chrono::steady_clock::time_point> held_since;
};

// --deadline: calls `fire` once at `when`, from its own thread, unless destroyed first.
class DeadlineTimer {
 public:
  DeadlineTimer(std::optional<WallClock::time_point> when, std::function<void()> fire) {
    if (!when) return;
    thread_ = std::thread([this, at = *when, fire = std::move(fire)] {
      std::unique_lock<std::mutex> lock(mutex_);
      if (cv_.wait_until(lock, at, [this] { return over_; })) return;
      lock.unlock();
      fire();
    });
  }
  ~DeadlineTimer() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      over_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool over_ = false;  // under mutex_
  std::thread thread_;
};

class Migration {
 public:
  Migration(store::Store& source, const MigrateOptions& options)
      : source_(source), options_(options), client_(options.client) {
    client_.cancel = &cancel_;
    if (options_.client.cancel) options_.client.cancel->AddChild(&cancel_);
  }
  ~Migration() {
    if (options_.client.cancel) options_.client.cancel->RemoveChild(&cancel_);
  }

  MigrateReport Run() {
    auto start = Clock::now();
    if (options_.deadline) {
      report_.deadline = DeadlineText(*options_.deadline);
      report_.deadline_utc = IsoUtcTime(int64_t(WallClock::to_time_t(*options_.deadline)));
    }
    // The deadline cuts off whatever waits (a session's read, a lock, a retry's delay) at once;
    // every step also checks the clock itself before it starts (Cancelled).
    DeadlineTimer timer(options_.deadline, [this] { ReachDeadline(); });
    CheckMovedHost(MovedHost());  // recorded as moved:HOST at the switch: refused before anything
    net::CheckClientCredentials(options_.client.credentials);  // a bad key file fails here, once
    if (!PathExists(options_.groups_file))
      Throw(Errc::kNotFound, "migrate: no backup groups file " + options_.groups_file +
                                 " (NAME=REGEX lines; --groups FILE names another)");
    std::vector<BackupGroup> all = ReadBackupGroups(options_.groups_file);
    if (all.empty()) Throw(Errc::kInvalidArgument, "migrate: no backup groups in " + options_.groups_file);
    std::vector<BackupGroup> groups = all;
    if (!options_.groups.empty()) {
      groups.clear();
      for (const std::string& name : options_.groups) {
        auto it = std::find_if(all.begin(), all.end(), [&](const BackupGroup& g) { return g.name == name; });
        if (it == all.end()) Throw(Errc::kInvalidArgument, "migrate: no group '" + name + "' in " + options_.groups_file);
        if (std::none_of(groups.begin(), groups.end(), [&](const BackupGroup& g) { return g.name == name; }))
          groups.push_back(*it);
      }
    }
    // The groups' locks, in the file's order (two waiting runs never hold each other's), then
    // what killed runs left on hold: the journals of our groups, and of others no run holds.
    std::map<std::string, UniqueFd> locks;
    for (const BackupGroup& g : all) {
      if (std::none_of(groups.begin(), groups.end(), [&](const BackupGroup& m) { return m.name == g.name; })) continue;
      UniqueFd fd = TryLockGroup(source_, g.name, options_.lock_wait_ms, &cancel_);
      if (!fd.valid()) {
        if (Cancelled())
          Throw(deadline_reached_ ? Errc::kTempFail : Errc::kInterrupted,
                "migrate " + cancel_.why() + " while waiting for the lock of group " + g.name +
                    "; nothing was migrated");
        ThrowGroupBusy(source_, g.name);
      }
      locks.emplace(g.name, std::move(fd));
    }
    // Every session, set-status included, names the source store: its own server refuses it.
    client_.source_store_id = source_.store_id();
    // A failed run's switch record (KeepSwitchRecordOfFailedRun) is believed by the next run of
    // its group: that run put its users back itself, so nothing else has changed them since.
    for (const auto& [group, fd] : locks)
      if (SwitchRecordMagic(source_, group) == kFailedSwitchMagic) switch_trusted_.insert(group);
    // A switch record beside a recovered journal, its users still held, is sure (its run was
    // killed during its hold), and is marked as a failed run's before the journal goes:
    // this run may be killed too before it finishes the group, and the next run, finding the
    // record without a journal, took it for a stale one and refused the copies as live for ever.
    // A record that cannot be read is left as it is: the users still go back (helper-124: another
    // group's unreadable record stopped the run and left that group's users on hold).
    auto keep_record = [&](const std::string& group) {
      try {
        KeepSwitchRecordOfRecoveredJournal(source_, group);
      } catch (const Error& e) {
        report_.recovered.push_back("group " + group + ": its switch record was left as it is: " + e.what());
      }
    };
    for (const std::string& group : JournalGroups(source_)) {
      if (locks.count(group)) {
        switch_trusted_.insert(group);
        keep_record(group);
        report_.recovered.push_back(RecoverJournal(source_, group));
      } else if (UniqueFd other = TryLockGroup(source_, group); other.valid()) {
        keep_record(group);
        // Another group's damaged journal is that group's to repair: said, and this run goes on.
        try {
          report_.recovered.push_back(RecoverJournal(source_, group));
        } catch (const Error& e) {
          report_.recovered.push_back("group " + group + ": " + e.what());
        }
      }
    }
    // Each user belongs to the first group of the file that matches it, whichever groups this run
    // migrates: overlapping patterns never have two runs (or two jobs of one) migrate a user.
    // The members are not held for the run (~100 bytes a user: 100 MB for a million): they go
    // through a SectionedList (memory up to 4 MiB, the rest in a temporary file) into each
    // group's members file, which each group's migration reads (UsersToMove).
    live_ = std::vector<LiveGroup>(groups.size());
    std::optional<SectionedList> members(std::in_place, groups.size());
    // The first group of the file that matches the user, as an index into `groups`; nullopt
    // when that group is not migrated here, and for a user in no group.
    auto group_of = [&](const std::string& user, bool* in_a_group) -> std::optional<size_t> {
      for (const BackupGroup& first : all) {
        if (!GroupMatches(first, user)) continue;
        if (in_a_group) *in_a_group = true;
        for (size_t g = 0; g < groups.size(); ++g)
          if (groups[g].name == first.name) return g;
        return std::nullopt;
      }
      return std::nullopt;
    };
    source_.ForEachUser([&](const store::UserInfo& u) {
      bool in_a_group = false;
      if (const std::optional<size_t> g = group_of(u.user, &in_a_group)) {
        members->Add(*g, u.user);
        live_[*g].total_bytes += u.quota_used;
        return;
      }
      if (in_a_group) return;
      ++report_.users_in_no_group;
      if (report_.no_group_names.size() < MigrateReport::kNoGroupNamesShown) report_.no_group_names.push_back(u.user);
    });
    // A group named on the command line that holds nobody is a typo in its pattern, not a group
    // done: refused before anything is connected to, as `user --group` refuses it (helper-69:
    // "ok", exit 0). Run without names, a groups file shared by a fleet has groups of other
    // back-ends: only a file none of whose groups holds a user here is refused.
    // A fleet plan's jobs name every group of a shared file and allow_empty_groups (helper-72:
    // their jobs for other back-ends' groups exited 64 at every rerun, the fleet never done).
    const bool named = !options_.groups.empty();
    for (size_t g = 0; g < groups.size(); ++g)
      if (members->count(g) == 0 && named && !options_.allow_empty_groups)
        Throw(Errc::kInvalidArgument, "migrate: group '" + groups[g].name + "' (" + groups[g].regex + ") of " +
                                          options_.groups_file +
                                          " holds no user of this store (its pattern matches none, or only users of groups above it: a "
                                          "typo?); nothing was migrated");
    bool none = true;
    for (size_t g = 0; g < groups.size(); ++g) none = none && members->count(g) == 0;
    if (!named && none)
      Throw(Errc::kInvalidArgument, "migrate: no group of " + options_.groups_file +
                                        " holds a user of this store; nothing was migrated");
    std::vector<std::string> claimed;
    for (const BackupGroup& g : groups) claimed.push_back(g.name);
    // A user another run claimed is ours if its first group is one of ours: every user of our
    // lists, and also one created or deleted since our read (helper-166: checked against the
    // store's users then, a user deleted after our read and made again during both runs was
    // both runs'). A refusal is exit 75, to run again once the other run is done.
    auto member_of = [&](const std::string& user) { return group_of(user, nullptr); };
    // Before the files are written: one that fails leaves none of this run's behind.
    MembersClaim claim(source_, std::move(claimed));  // released before `locks`
    ClaimMembers(source_, locks, groups, member_of, *members, options_.groups_file);
    members.reset();
    report_.groups.resize(groups.size());
    for (size_t g = 0; g < groups.size(); ++g) report_.groups[g].name = groups[g].name;

    std::atomic<bool> done{false};
    std::thread display;
    if (options_.live || (options_.deadline && options_.on_notice)) display = std::thread([&] { Display(done); });
    std::vector<size_t> order(groups.size());
    std::iota(order.begin(), order.end(), size_t{0});
    while (!order.empty()) {
      std::atomic<size_t> next{0};
      std::vector<std::thread> workers;
      int jobs = std::max(1, std::min<int>(options_.jobs, int(order.size())));
      for (int j = 0; j < jobs; ++j)
        workers.emplace_back([&] {
          for (size_t i; (i = next++) < order.size();) RunGroup(order[i]);
        });
      for (auto& w : workers) w.join();
      // The destination answered again after it was found down (helper-62: it came back while
      // another group retried): the groups passed over meanwhile get their turn now. Each round
      // starts at least one of them, so this ends.
      order.clear();
      if (Cancelled() || destination_down_) break;
      for (size_t g = 0; g < groups.size(); ++g) {
        GroupReport& r = report_.groups[g];
        if (!r.destination_unreachable || r.attempts != 0) continue;
        r.destination_unreachable = false;
        r.errors.clear();
        order.push_back(g);
      }
    }
    done = true;
    if (display.joinable()) display.join();
    if (source_recovered_) PutBackAfterSourceRecovered();
    report_.seconds = Since(start);
    if (fatal_) {
      std::string put_back = report_.users_put_back ? "; " + std::to_string(report_.users_put_back) +
                                                          " held users put back to their status before"
                                                    : "";
      Throw(fatal_->code(), std::string(fatal_->what()) + " (not retried: fix the configuration" + put_back + ")");
    }
    report_.interrupted = options_.client.cancel && options_.client.cancel->cancelled();
    // Reached while groups were left: a deadline after the last group was done cut nothing off.
    report_.deadline_reached = false;
    for (size_t g = 0; g < report_.groups.size(); ++g) {
      GroupReport& r = report_.groups[g];
      // A signal came first: its reason. Read as stopped, not FAILED, as for the deadline
      // (helper-119: an interrupted group's JSON said FAILED).
      if (report_.interrupted && !r.ok && !r.destination_unreachable && !r.stopped_by_source &&
          (r.stopped_by_deadline || std::string_view(live_[g].phase.load()) == "interrupted" ||
           (r.attempts == 0 && std::string_view(live_[g].phase.load()) != "FAILED")))  // FAILED: an error of its own
        r.stopped_by_signal = true;
      if (report_.interrupted) r.stopped_by_deadline = false;
      report_.deadline_reached |= r.stopped_by_deadline;
    }
    return report_;
  }

 private:
  std::string MovedHost() const { return options_.moved_host.empty() ? options_.to.host : options_.moved_host; }

  // A signal, a configuration error of another group, or the deadline: the clock is read here
  // too, so that no step starts once the deadline passed, whenever the timer thread runs.
  bool Cancelled() {
    if (options_.deadline && !cancel_.cancelled() && WallClock::now() >= *options_.deadline) ReachDeadline();
    return cancel_.cancelled();
  }

  // The destination is taken for down from a group's last attempt without an answer (no
  // connection, or one silent until the timeout) until any attempt is answered (or a group whose
  // last attempt was answered ends): meanwhile no group starts. The report keeps the first finding's reason.
  void ReachDestinationDown(const std::string& why) {
    {
      std::lock_guard<std::mutex> lock(report_mutex_);
      if (report_.destination_unreachable.empty()) report_.destination_unreachable = "group " + why;
    }
    if (!destination_down_.exchange(true) && options_.on_destination_down) options_.on_destination_down("group " + why);
  }

  // Another process recovered the source's environment (a process died inside it): every group
  // stops; the first reason is the report's.
  void SourceRecovered(const std::string& why) {
    {
      std::lock_guard<std::mutex> lock(report_mutex_);
      if (report_.source_recovered.empty()) report_.source_recovered = "group " + why;
    }
    source_recovered_ = true;
    cancel_.Cancel("stopped: the source store's database environment was recovered by another process, or is "
                   "stuck on one that died inside it");
  }

  // With every worker stopped, the environment is opened again and each stopped group's users go
  // back from its journal, as the next run's start would put them back.
  // Recovered again meanwhile (helper-116: a second recovery during the put-back left users on
  // hold under "served as before"): opened once more, a few times.
  void PutBackAfterSourceRecovered() {
    std::vector<size_t> pending;
    for (size_t g = 0; g < report_.groups.size(); ++g)
      if (report_.groups[g].stopped_by_source || give_back_later_.count(report_.groups[g].name)) pending.push_back(g);
    constexpr int kOpenings = 3;
    for (int opening = 1; !pending.empty(); ++opening) {
      if (opening > kOpenings) {
        report_.source_not_reopened = "recovered again under each of " + std::to_string(kOpenings) + " openings";
        return;
      }
      try {
        source_.ReopenEnvironment();
      } catch (const Error& e) {
        // Nothing more goes through this Store (it has no environment now).
        report_.source_not_reopened = e.what();
        return;
      }
      std::vector<size_t> again;
      for (size_t g : pending) {
        GroupReport& r = report_.groups[g];
        try {
          if (r.attempts == 0) (void)UsersToMove(r, OwnMembers(r.name));  // not started: the report still counts its users
          const std::string journal = JournalPath(source_, r.name);
          std::set<std::string> put_back;
          if (!GiveBack(r, PathExists(journal) ? ReadJournal(journal) : Held{}, put_back)) again.push_back(g);
        } catch (const Error& e) {
          if (source_.EnvironmentStuck()) again.push_back(g);
          else r.errors.push_back(e.what());
        }
      }
      pending = std::move(again);
    }
  }

  void ReachDeadline() {
    if (cancel_.cancelled()) return;  // a signal first: it is the reason
    deadline_reached_ = true;
    cancel_.Cancel("reached its deadline (" + report_.deadline + ")");
  }

  // How the hold and the switch wait for a user's delivery gate: told once why, cut off by a
  // cancellation (a signal, another group's configuration error), given up after the session
  // timeout (kTempFail naming the user).
  store::Store::LockWait GateWait() {
    store::Store::LockWait wait;
    wait.on_wait = options_.on_wait;
    wait.timeout_seconds = options_.client.timeout_seconds;
    wait.cancelled = [this] { return Cancelled(); };
    return wait;
  }
  // Putting users back happens after a cancellation too: bounded, but not cut off.
  store::Store::LockWait PutBackWait() {
    store::Store::LockWait wait;
    wait.on_wait = options_.on_wait;
    wait.timeout_seconds = options_.client.timeout_seconds;
    return wait;
  }

  // What a retry may cure: the network, the server's state, a verification difference (the next
  // catch-up sends what was missing). Not the configuration.
  static bool Retryable(Errc code) {
    switch (code) {
      case Errc::kIo:
      case Errc::kTempFail:
      case Errc::kProtocol:
      case Errc::kCorrupt:
      case Errc::kDatabase: return true;
      default: return false;
    }
  }

  // A failure outside an attempt (the source read before or after one, with nothing held) is the
  // group's error: thrown out of a worker, it ended the process (std::terminate).
  void RunGroup(size_t g) {
    try {
      RunGroupAttempts(g);
    } catch (const Error& e) {
      GroupReport& r = report_.groups[g];
      r.errors.push_back(e.what());
      if (source_.EnvironmentStuck()) {
        SourceRecovered(r.name + ": " + e.what());
        r.stopped_by_source = true;
        live_[g].phase = "source-recovered";
      } else {
        live_[g].phase = "FAILED";
      }
    }
  }

  void RunGroupAttempts(size_t g) {
    GroupReport& r = report_.groups[g];
    LiveGroup& live = live_[g];
    Held held;  // users this run put on hold, and their status before (until put back or moved)
    // Users an attempt put on hold and a failure put back since (a retry's, or the last): the
    // report's count, whichever attempt put them back (a signal during the hold with retries
    // left puts them back on the retry path, and the last PutBack then finds nobody held).
    std::set<std::string> put_back;
    r.attempts = 0;
    int64_t delay = options_.retry_delay_ms;
    std::string last_error;  // "attempt N: why", for the retry's line
    // The group failed on its own (refused, misconfigured, out of retries), not because the run
    // was cut off: a deadline that comes afterwards does not make it "stopped (deadline)".
    bool failed_on_its_own = false;
    bool answered = false;  // the server at --to answered this attempt (net::ClientOptions::on_answered)
    // The group's users. A members file that cannot be read fails this group alone, before
    // anything is held: not retried, and no "destination down" for the groups after it as a
    // failure before any answer would be (helper-166).
    std::set<std::string> members;
    try {
      members = OwnMembers(r.name);
    } catch (const Error& e) {
      r.errors.push_back(e.what());
      live.phase = "FAILED";
      return;
    }
    // Nobody left to move (an earlier run moved them all) needs no session: the group is done,
    // also when the run is cut off before it starts (helper-79: a finished fleet rerun past its
    // deadline exited 75, "not started (deadline)", its report saying nothing was moved).
    if (Cancelled() && !source_recovered_ && UsersToMove(r, members).empty()) {
      try {
        (void)ReadSwitchRecord(source_, r.name, options_.to.ToString(), "", SwitchTrusted(r.name));  // a stale one goes
        r.ok = true;
        live.phase = "done";
        return;
      } catch (const Error& e) {
        r.errors.push_back(e.what());
      }
    }
    // A switch record this run believes but cannot read fails every attempt the same way: said
    // once, not retried as a network fault is (helper-152, helper-153: three attempts and their
    // back-off for a damaged local file). Nothing is held yet.
    bool record_unreadable = false;
    if (const std::string path = SwitchPath(source_, r.name); SwitchTrusted(r.name) && PathExists(path)) {
      try {
        (void)ParseSwitchRecord(ReadJournalFile(path), path);
      } catch (const Error& e) {
        if (e.code() != Errc::kCorrupt) throw;
        r.errors.push_back(e.what());
        failed_on_its_own = record_unreadable = true;
      }
    }
    while (!Cancelled() && !record_unreadable) {
      // Another group ran out of attempts without one answer: the destination is down, and
      // each group would spend its own retries (minutes each) finding that out again. A group
      // with nobody left to move needs no connection.
      if (r.attempts == 0 && destination_down_ && !UsersToMove(r, members).empty()) {
        r.destination_unreachable = true;
        break;
      }
      ++r.attempts;
      answered = false;
      try {
        MigrateGroup(r, members, live, held, &answered);
        r.ok = true;
        live.phase = "done";
        if (answered) destination_down_ = false;  // it answered, whatever another group found meanwhile
        return;
      } catch (const Error& e) {
        // Cut off (a signal, the deadline, another group's configuration error): the reason
        // first, then what the cut session saw ("closed the connection" alone misled, helper-60).
        r.errors.push_back("attempt " + std::to_string(r.attempts) + ": " +
                           (Cancelled() && e.what() != cancel_.why() ? "cut off (" + cancel_.why() + "): " : "") +
                           e.what());
        last_error = r.errors.back();
        // Another process recovered the source's environment under this run: every call through
        // its handles fails now, so a retry fails at once, and its destination was never the
        // cause (helper-108: retried, then "destination down"). The run stops as if killed here.
        if (source_.EnvironmentStuck()) {
          SourceRecovered(r.name + ": " + e.what());
          break;
        }
        // A user live at the destination (CheckCopiesOnHold): this group needs somebody to act
        // first; a retry would be refused the same way, and the other groups are not concerned.
        if (e.code() == Errc::kExists && !Cancelled()) {
          failed_on_its_own = true;
          break;
        }
        if (!Retryable(e.code()) && !Cancelled()) {
          failed_on_its_own = true;
          {
            std::lock_guard<std::mutex> lock(report_mutex_);
            if (!fatal_) fatal_ = std::make_unique<Error>(e.code(), "group " + r.name + ": " + e.what());
          }
          cancel_.Cancel("stopped by a configuration error in group " + r.name);
          break;
        }
      }
      if (r.attempts > options_.retries) {
        failed_on_its_own = !Cancelled();
        if (failed_on_its_own && !answered) {
          r.destination_unreachable = true;
          ReachDestinationDown(r.name + ": " + last_error);
        } else if (answered) {
          destination_down_ = false;
        }
        break;
      }
      // The next attempt copies online again: give the users their service back meanwhile, so
      // they are never held for more than one final pass.
      if (!held.empty()) {
        std::vector<std::string> errors;
        PutBack(source_, held, &errors, &put_back, PutBackWait());
        NoteHoldEnded(r, live);
        if (!errors.empty() && source_.EnvironmentStuck()) {
          // Found first by the put-back: the users go back from the journal once the store is open again.
          SourceRecovered(r.name + ": " + errors.front());
          break;
        }
        if (errors.empty()) {
          try {
            RemoveJournal(source_, r.name);
            held.clear();
          } catch (const Error& e) {
            r.errors.push_back(e.what());
          }
        }
        r.errors.insert(r.errors.end(), errors.begin(), errors.end());
      }
      // Exponential backoff, so a refused or unreachable server is not hammered; a signal ends it.
      live.phase = "retry-wait";
      if (options_.on_retry && !Cancelled())
        options_.on_retry("group " + r.name + ": " + last_error + "; attempt " + std::to_string(r.attempts + 1) +
                          " of " + std::to_string(options_.retries + 1) + " in " +
                          (delay < 1000 ? std::to_string(delay) + " ms" : std::to_string((delay + 999) / 1000) + " s"));
      r.retry_delays_ms.push_back(delay);
      if (cancel_.WaitFor(delay)) break;
      delay = std::min<int64_t>(delay * 2, options_.max_retry_delay_ms);
    }
    // Not finished: what its passes sent before they were cut off counts too (the passes that
    // completed were accounted by the session's report; a cut one has none). "messages 0, raw
    // 0 B" for a group stopped after seconds of copying was false (helper-69).
    r.messages = std::max<uint64_t>(r.messages, live.messages);
    r.bytes_raw = std::max<uint64_t>(r.bytes_raw, live.bytes);
    if (source_recovered_ && !failed_on_its_own && !r.destination_unreachable) {
      // Nothing more goes through the dead handles: the users go back from the group's journal
      // once every worker has stopped and the store is open again (PutBackAfterSourceRecovered).
      r.stopped_by_source = true;
      live.phase = "source-recovered";
      NoteHoldEnded(r, live);
      std::lock_guard<std::mutex> lock(report_mutex_);
      report_.users_put_back += put_back.size();  // by a retry's put-back before it met the recovery
      return;
    }
    r.stopped_by_deadline = !failed_on_its_own && !r.destination_unreachable && deadline_reached_;
    if (r.attempts == 0) (void)UsersToMove(r, members);  // not started: the report still counts its users
    if (r.stopped_by_deadline) live.phase = "deadline";
    else if (r.destination_unreachable) live.phase = "unreachable";
    else live.phase = !Cancelled() || failed_on_its_own ? "FAILED" : "interrupted";
    // Give the users their service back on the source: their mail was only held.
    NoteHoldEnded(r, live);
    GiveBack(r, held, put_back);
  }

  // Puts a failed group's held users back to their status before, removes its journal, and
  // keeps a switch record this run sent for the next run.
  // False when the put-back met an environment recovered (again) under the run: the group's users
  // go back from its journal once the store is open again (PutBackAfterSourceRecovered).
  bool GiveBack(GroupReport& r, const Held& held, std::set<std::string>& put_back) {
    std::vector<std::string> errors;
    PutBack(source_, held, &errors, &put_back, PutBackWait());
    {
      std::lock_guard<std::mutex> lock(report_mutex_);
      report_.users_put_back += put_back.size();
    }
    // The environment was recovered under the run, found here first (a group cut off by a signal
    // or the deadline, or failed on its own): its users go back from the journal once the store
    // is open again (helper-115: left on hold, "0 users put back", exit 130).
    if (!errors.empty() && source_.EnvironmentStuck()) {
      {
        std::lock_guard<std::mutex> lock(report_mutex_);
        give_back_later_.insert(r.name);
      }
      SourceRecovered(r.name + ": " + errors.front());
      return false;
    }
    r.errors.insert(r.errors.end(), errors.begin(), errors.end());
    if (errors.empty()) {
      try {
        RemoveJournal(source_, r.name);
        // The switch was sent (its record is this run's) but not finished: the destination may
        // have made the copies active. Kept for the next run, which adopts them (puts them on
        // hold there again); without it the rerun took them for users live at the destination.
        if (SwitchTrusted(r.name)) {
          const std::optional<SwitchRecord> record = KeepSwitchRecordOfFailedRun(source_, r.name);
          const std::optional<std::string> here = DestinationStore(r.name);
          if (record && !record->users.empty() && here && !SwitchRecordNames(*record, options_.to.ToString(), *here))
            // A record of another destination (one replaced since, or this run's --to names
            // another): a rerun here never adopts (helper-152: it said "run migrate again").
            r.errors.push_back("the switch record names another destination, " + record->to +
                               (record->store_id.empty() ? "" : " (store " + record->store_id + ")") + ", than " +
                               options_.to.ToString() +
                               (here->empty() ? ", which gives no store id" : " (store " + *here + ")") + ": " +
                               std::to_string(record->users.size()) +
                               " users may be active there as well as here; a run to that destination adopts and "
                               "finishes them; if it is gone for good, remove the record (" +
                               SwitchPath(source_, r.name) + ")");
          else if (record && !record->users.empty())
            r.errors.push_back("the switch was sent to " + record->to + " and not finished: " +
                               std::to_string(record->users.size()) +
                               " users may be active there as well as here; run migrate again to adopt and finish "
                               "them (" + SwitchPath(source_, r.name) + ")");
        }
      } catch (const Error& e) {
        // A record it cannot read failed the attempts already, with this very line.
        if (std::none_of(r.errors.begin(), r.errors.end(),
                         [&](const std::string& said) { return said.find(e.what()) != std::string::npos; }))
          r.errors.push_back(e.what());
      }
    }
    return true;
  }

  void CheckCancelled() {
    if (Cancelled()) Throw(Errc::kInterrupted, cancel_.why());
  }

  // A failed attempt's users are back: the group's hold figure is how long they were held.
  static void NoteHoldEnded(GroupReport& r, LiveGroup& live) {
    if (!live.held_since) return;
    r.hold_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - *live.held_since).count();
    live.held_since.reset();
  }

  bool SwitchTrusted(const std::string& group) {
    std::lock_guard<std::mutex> lock(switch_trusted_mutex_);
    return switch_trusted_.count(group) > 0;
  }

  // The store id the server of the group's last session gave ("" none); nullopt before any.
  std::optional<std::string> DestinationStore(const std::string& group) {
    std::lock_guard<std::mutex> lock(switch_trusted_mutex_);
    auto it = destination_store_.find(group);
    return it == destination_store_.end() ? std::nullopt : std::optional<std::string>(it->second);
  }

  // The users this run claimed for `group`: its members file (ClaimMembers), which nobody else
  // removes while the group's lock is held.
  std::set<std::string> OwnMembers(const std::string& group) const {
    const std::string path = MembersPath(source_, group);
    return ParseMembersFile(ReadJournalFile(path), path);
  }

  // The group's `members` to migrate (r.users; r.already_moved counts those moved to any host).
  std::set<std::string> UsersToMove(GroupReport& r, const std::set<std::string>& members) {
    std::set<std::string> users;
    r.already_moved = 0;
    for (const std::string& user : members) {
      std::optional<store::UserInfo> u = source_.FindUser(user);
      if (!u) continue;  // deleted by an earlier run after its verification
      if (u->status.state == store::UserState::kMoved) {
        ++r.already_moved;
        // A second wave with --delete-source deleted nothing and said nothing (helper-154).
        if (options_.delete_source && !source_.ListFolders(user).empty()) ++r.moved_with_mailboxes;
        continue;
      }
      users.insert(user);
    }
    r.users = users.size();
    return users;
  }

  void MigrateGroup(GroupReport& r, const std::set<std::string>& members, LiveGroup& live, Held& held,
                    bool* answered) {
    CheckCancelled();
    // Users an earlier run finished are left alone: a rerun resumes. So is a user moved to any
    // host, not only this run's --to or --moved-host: the same server under another name (or a
    // run that named another --moved-host) holds the live mailbox, which a mirror pass from
    // here would overwrite with this copy, expunging the mail it accepted since.
    std::set<std::string> users = UsersToMove(r, members);
    r.passes = 0;
    r.pass_messages.clear();
    r.hold_seconds = 0;
    if (users.empty()) {
      (void)ReadSwitchRecord(source_, r.name, options_.to.ToString(), "", SwitchTrusted(r.name));  // removes a stale one
      return;
    }
    std::vector<std::string> user_list(users.begin(), users.end());
    // The hold takes every user's delivery gate at once (Store::LockGates): a group too large for
    // the open-file limit is refused now, not after its whole copy (helper-65: 17 s of copying,
    // then exit 64).
    EnsureDescriptors(user_list.size(), "holding the delivery gates of " +
                                            std::to_string(user_list.size()) + " users");

    // One connection for every pass and the switch: one handshake, and the switch is one round trip.
    net::ClientOptions client = client_;
    client.on_answered = [this, answered] {
      *answered = true;
      destination_down_ = false;  // it answers: the groups after this one start again
    };
    // The destination's session slots are all busy (its --max-sessions): the group waits its turn.
    client.on_waiting_for_slot = [&live] { live.phase = "slot-wait"; };
    net::Session session(options_.to, client);
    {
      std::lock_guard<std::mutex> lock(switch_trusted_mutex_);
      destination_store_[r.name] = DestinationStoreId(session);
    }
    // What went on the wire, counted for an attempt that fails or is cut off too (it was 0 then).
    struct WireCount {
      GroupReport& r;
      const net::Session& session;
      const uint64_t before;
      ~WireCount() { r.bytes_sent += session.bytes_out() - before; }
    } wire{r, session, session.bytes_out()};

    // Per mailbox, the source modseq the destination is known to hold: what a pass sent and the
    // receiver settled (its summary matched). The next pass sends only what changed since.
    std::map<std::string, uint64_t> settled;
    std::map<std::string, uint32_t> settled_uidnext;  // and its UIDNEXT then (flag changes go as metas)
    std::map<std::string, uint32_t> settled_uidvalidity;  // and its UIDVALIDITY (a re-created folder is another)
    struct Seen {
      uint64_t modseq;
      uint32_t uidnext, uidvalidity;
    };
    std::map<std::string, Seen> seen;  // this pass: what each folder was read at
    BackupOptions backup;
    backup.only_users = &users;
    backup.source_host = "migrate";
    backup.since_modseq = &settled;
    backup.summaries = true;
    backup.since_uidnext = &settled_uidnext;
    backup.since_uidvalidity = &settled_uidvalidity;
    backup.on_folder = [&](const std::string& mailbox, uint64_t modseq, uint32_t uidnext, uint32_t uidvalidity) {
      seen[mailbox] = {modseq, uidnext, uidvalidity};
    };
    backup.on_progress = [&](uint64_t m, uint64_t b) {
      live.messages += m;
      live.bytes += b;
      if (options_.on_progress) options_.on_progress(r.name, live.messages);
    };
    RestoreOptions remote;
    remote.partition = options_.partition;
    remote.keep_status = true;  // a server without copy_on_hold mirrors the source's statuses
    // The destination keeps its copies on hold until the switch, and refuses the pass (before
    // writing anything) for a user live there: switched by an earlier migration, or another
    // back-end's user of the same id. A mirror pass would expunge the mail it accepted.
    remote.copy_on_hold = true;
    remote.copy_users = user_list;
    remote.adopt =
        ReadSwitchRecord(source_, r.name, options_.to.ToString(), DestinationStoreId(session), SwitchTrusted(r.name));
    // Every pass makes the destination's folders exact mirrors (expunges included).
    remote.mirror = true;

    // One pass; returns what it carried plus the folders still unsettled (the work left).
    // Every pass leaves out folders unchanged since the destination settled them (their
    // summary matched then, and the source modseq is the same: one comparison). The held pass
    // also leaves out users with nothing changed, and any summary difference fails it.
    backup.skip_unchanged = true;
    auto pass = [&](bool final) -> uint64_t {
      seen.clear();
      backup.skip_idle_users = final;
      remote.strict_summaries = final;
      SessionReport s = session.Restore(source_, backup, remote);
      Account(r, s);
      ++r.passes;
      r.pass_messages.push_back(s.messages + s.links);
      for (const auto& [mailbox, mark] : seen) {
        if (mark.modseq == 0) continue;  // an index without modseqs: sent whole each time
        settled[mailbox] = mark.modseq;
        settled_uidnext[mailbox] = mark.uidnext;
        settled_uidvalidity[mailbox] = mark.uidvalidity;
      }
      for (const std::string& mailbox : s.unsettled) {  // sent complete next time
        settled.erase(mailbox);
        settled_uidnext.erase(mailbox);
        settled_uidvalidity.erase(mailbox);
      }
      if (!final && options_.on_pass) options_.on_pass(r.name, r.passes);
      return s.messages + s.links + s.unsettled.size();
    };

    // Each phase's time is counted when it ends, also by an exception: a group stopped by the
    // deadline in its copy reported "copy 0.0s" after seconds of copying (helper-69).
    uint64_t left;
    {
      PhaseTimer timer(&r.times.copy);
      live.phase = "copy";
      left = pass(false);  // nothing settled yet: every folder complete
    }

    // Online catch-up while the delta shrinks: the held pass then carries only the last changes.
    {
      PhaseTimer timer(&r.times.catch_up);
      live.phase = "catch-up";
      for (int i = 0; i < options_.max_online_passes && left > options_.settle_messages; ++i) {
        CheckCancelled();
        uint64_t now = pass(false);
        bool shrinking = now < left;
        left = now;
        if (!shrinking) break;
      }
    }

    auto t = Clock::now();
    CheckCancelled();
    live.phase = "hold";
    // A user renamed or deleted at the source since the group's users were read: not held, not
    // switched, and said in the report; its copy at the destination stays on hold. The hold of
    // a list naming it failed "no such user", taken for a configuration error that stopped every
    // group (helper-69). A new name is a user this run did not read: the next run migrates it.
    for (auto it = users.begin(); it != users.end();) {
      if (source_.FindUser(*it)) {
        ++it;
        continue;
      }
      if (std::find(r.vanished_users.begin(), r.vanished_users.end(), *it) == r.vanished_users.end())
        r.vanished_users.push_back(*it);
      it = users.erase(it);
    }
    if (users.empty()) return;
    user_list.assign(users.begin(), users.end());
    remote.copy_users = user_list;
    for (const std::string& user : users) {
      if (held.count(user)) continue;  // held by an earlier attempt: its status before is known
      if (std::optional<store::UserInfo> u = source_.FindUser(user)) held[user] = u->status;
    }
    WriteJournal(source_, r.name, options_.to.ToString(), held);  // before the first hold
    const auto held_at = Clock::now();
    try {
      source_.SetUsersStatus(user_list, store::UserStatus{store::UserState::kHold, ""},
                             store::Store::MovedUsers::kChange, GateWait());  // one transaction
    } catch (const Error& e) {
      if (e.code() != Errc::kNoUser) throw;  // renamed or deleted just now: the retry leaves it out
      Throw(Errc::kTempFail, std::string(e.what()) + " (renamed or deleted at the source as the group was held)");
    }
    live.held_since = held_at;
    r.times.hold += Since(t);
    if (options_.on_hold) options_.on_hold(r.name);

    // Everything since the last pass, and every folder's summary checked by the destination: a
    // difference fails the attempt (strict), so nobody is switched to an unequal copy.
    t = Clock::now();
    CheckCancelled();  // the deadline may have come during the hold: the users go back
    live.phase = "final";
    pass(true);
    r.times.final_pass += Since(t);
    // Passes mirror the folders they carry, not the set of folders: one this run copied that the
    // source no longer has (deleted, or renamed: a user's IMAP RENAME) stayed at the destination
    // beside the renamed copy (helper-69). The users are held and the source's folders final:
    // the destination removes those from its untouched copies, before the switch makes them live.
    // One it keeps (another writer touched the copy, or an older server) is named with why; a
    // failure here leaves them all named, and a broken session fails the switch below.
    r.left_at_destination.clear();
    r.removed_at_destination.clear();
    std::vector<std::string> gone;
    for (const auto& [mailbox, modseq] : settled) {
      auto [user, folder] = store::ParseMailboxName(mailbox);
      if (users.count(user) && !source_.FindFolder(user, folder, store::Store::FolderDetail::kRecordOnly))
        gone.push_back(mailbox);
    }
    if (!gone.empty()) {
      try {
        r.left_at_destination = session.RemoveFolders(gone);
      } catch (const Error& e) {
        for (const std::string& mailbox : gone) r.left_at_destination.emplace_back(mailbox, e.what());
      }
      for (const std::string& mailbox : gone)
        if (std::none_of(r.left_at_destination.begin(), r.left_at_destination.end(),
                         [&](const auto& kept) { return kept.first == mailbox; }))
          r.removed_at_destination.push_back(mailbox);
    }

    t = Clock::now();
    CheckCancelled();  // no switch begins after the deadline (nor after a signal)
    live.phase = "switch";
    std::vector<std::pair<std::string, store::UserStatus>> active;
    for (const std::string& user : user_list) active.emplace_back(user, store::UserStatus{});
    // Only users still on hold are switched, checked under their delivery gates, which stay held
    // from that check through the destination's switch to the source's transaction (which checks
    // again): a user given its service back during the hold may have accepted mail at the source
    // that the final pass did not carry. Then nobody is switched; the attempt fails and a retry
    // (or a rerun) holds the users again and carries that mail.
    source_.SwitchHeldUsers(user_list, store::UserStatus{store::UserState::kMoved, MovedHost()},
                            [&] {
                              {
                                std::lock_guard<std::mutex> lock(switch_trusted_mutex_);
                                switch_trusted_.insert(r.name);  // this run's own: sure for its retries
                              }
                              WriteSwitchRecord(source_, r.name, options_.to.ToString(), DestinationStoreId(session),
                                                user_list);
                              session.SetStatuses(active);
                              if (options_.after_switch_sent) options_.after_switch_sent(r.name);
                            },
                            GateWait());
    RemoveSwitchRecord(source_, r.name);  // every user is moved: their copies are live now
    r.hold_seconds = Since(held_at);
    live.held_since.reset();
    RemoveJournal(source_, r.name);  // every user is moved: nothing left to put back
    held.clear();
    // The guard of `storemove delete`: recorded after the switch, when a moved user no longer changes.
    for (const std::string& user : user_list) store::RecordVerified(source_, user, options_.to.ToString());
    r.times.switch_over += Since(t);

    if (options_.delete_source) {
      t = Clock::now();
      live.phase = "delete";
      DeleteVerified(users);
      r.times.remove += Since(t);
    }
  }

  void DeleteVerified(const std::set<std::string>& users) {
    // DeleteUser refuses a user whose state differs from what was verified.
    for (const std::string& user : users) store::DeleteUser(source_, user);
  }

  static void Account(GroupReport& r, const SessionReport& s) {
    r.messages += s.messages + s.links;
    r.bytes_raw += s.message_bytes;
    r.dedupe_saved += s.message_bytes >= s.body_bytes ? s.message_bytes - s.body_bytes : 0;
    if (s.errors) Throw(Errc::kCorrupt, std::to_string(s.errors) + " errors in the session" +
                                            (s.error_lines.empty() ? "" : ": " + s.error_lines.front()));
  }

  static bool Transferring(const char* phase) {
    return std::strcmp(phase, "copy") == 0 || std::strcmp(phase, "catch-up") == 0;
  }
  static bool Running(const char* phase) {
    for (const char* p : {"copy", "catch-up", "hold", "final", "slot-wait", "retry-wait"})
      if (std::strcmp(phase, p) == 0) return true;
    return false;
  }

  // Seconds the groups left need at one job's rate so far (bytes per second of a group
  // transferring): each running group's remaining bytes, then the groups not started, in their
  // order, each on the job that frees first. The last group's tail counts: the rate of all jobs
  // together over all the bytes left said "ETA 0s" while one group ran 5 s more (helper-79).
  double EstimateSeconds(double per_job_rate) const {
    std::vector<double> free_at;
    std::vector<double> waiting;
    for (const LiveGroup& l : live_) {
      const double left = l.total_bytes > l.bytes ? double(l.total_bytes - l.bytes) / per_job_rate : 0;
      const char* phase = l.phase.load();
      if (Running(phase)) free_at.push_back(left);
      else if (std::strcmp(phase, "waiting") == 0) waiting.push_back(left);
    }
    while (free_at.size() < size_t(std::max(1, options_.jobs))) free_at.push_back(0);
    for (double need : waiting) {
      auto first = std::min_element(free_at.begin(), free_at.end());
      *first += need;
    }
    return *std::max_element(free_at.begin(), free_at.end());
  }

  // The live line (options_.live), and the warning that the deadline will come first (said once,
  // live display or not: a run under cron or GNU parallel says it too).
  void Display(const std::atomic<bool>& done) {
    auto start = Clock::now(), last = start;
    double job_seconds = 0;  // seconds groups spent transferring, summed over the groups
    bool warned = false;
    while (!done) {
      std::string line = "\r";
      uint64_t bytes = 0, messages = 0;
      const auto now = Clock::now();
      const double tick = std::chrono::duration<double>(now - last).count();
      last = now;
      for (size_t g = 0; g < live_.size(); ++g) {
        const LiveGroup& l = live_[g];
        bytes += l.bytes;
        messages += l.messages;
        if (Transferring(l.phase.load())) job_seconds += tick;
        line += report_.groups[g].name + ":" + l.phase.load() + " ";
      }
      double secs = Since(start), rate = secs > 0 ? double(bytes) / secs : 0;
      char buf[160];
      std::snprintf(buf, sizeof buf, "| %llu msgs %s %s/s", (unsigned long long)messages,
                    HumanBytes(double(bytes)).c_str(), HumanBytes(rate).c_str());
      line += buf;
      std::optional<double> eta;
      if (job_seconds > 1 && bytes > 0) eta = EstimateSeconds(double(bytes) / job_seconds);
      if (eta && *eta >= 0.5) {
        std::snprintf(buf, sizeof buf, " ETA %.0fs", *eta);
        line += buf;
      }
      if (eta && options_.deadline && !warned && secs >= 3 && options_.on_notice && !Cancelled()) {
        const double left = std::chrono::duration<double>(*options_.deadline - WallClock::now()).count();
        if (*eta > left) {
          warned = true;
          std::snprintf(buf, sizeof buf, "%.0f s, %.0f s past the deadline", *eta, *eta - left);
          options_.on_notice("at the rate so far (" + HumanBytes(double(bytes) / job_seconds) +
                             "/s per group copying) the groups left need about " + buf + " (" + report_.deadline +
                             "): the groups not switched by then will be put back to their source and left for the "
                             "next window");
        }
      }
      if (options_.live) {
        line += "\033[K";
        (void)!::write(STDERR_FILENO, line.data(), line.size());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));  // redraw period, not synchronisation
    }
    if (options_.live) (void)!::write(STDERR_FILENO, "\r\033[K", 4);
  }

  store::Store& source_;
  const MigrateOptions& options_;
  net::ClientOptions client_;  // options_.client, with the source's store id and cancel_
  // Cuts every group off: the caller's cancellation (a signal) or a configuration error.
  net::Cancellation cancel_;
  std::unique_ptr<Error> fatal_;  // under report_mutex_: the configuration error that stopped the run
  std::atomic<bool> deadline_reached_{false};  // the deadline cancelled the run (not a signal)
  std::atomic<bool> destination_down_{false};  // ReachDestinationDown, until it answers again
  std::atomic<bool> source_recovered_{false};  // SourceRecovered
  std::set<std::string> give_back_later_;  // under report_mutex_: groups whose put-back found it (GiveBack)
  MigrateReport report_;
  // Groups whose switch record this run may believe (ReadSwitchRecord): written by this run, or
  // left by a run killed during its hold, whose journal this run recovered.
  std::set<std::string> switch_trusted_;
  // Per group, the store id its last session's server gave ("" none); absent: no session yet.
  std::map<std::string, std::string> destination_store_;
  std::mutex switch_trusted_mutex_;  // and destination_store_
  std::mutex report_mutex_;  // report_'s totals (the groups' own reports have one writer each)
  std::vector<LiveGroup> live_;
};

}  // namespace

bool MigrateReport::ok() const {
  if (interrupted) return false;
  for (const GroupReport& g : groups)
    if (!g.ok) return false;
  return true;
}

namespace {

nlohmann::json LeftJson(const std::vector<std::pair<std::string, std::string>>& left) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [mailbox, why] : left) out.push_back({{"mailbox", mailbox}, {"why", why}});
  return out;
}

std::string Result(const GroupReport& g) {
  if (g.ok) return g.attempts > 1 ? "ok after " + std::to_string(g.attempts) + " attempts" : "ok";
  if (g.stopped_by_deadline) return g.attempts == 0 ? "not started (deadline)" : "stopped (deadline)";
  if (g.destination_unreachable) return g.attempts == 0 ? "not started (destination down)" : "FAILED (destination down)";
  if (g.stopped_by_source) return g.attempts == 0 ? "not started (source recovered)" : "stopped (source recovered)";
  if (g.stopped_by_signal) return g.attempts == 0 ? "not started (interrupted)" : "stopped (interrupted)";
  return g.attempts == 0 ? "not started" : "FAILED";
}

}  // namespace

std::string MigrateReport::Text() const {
  std::string out;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%-12s %6s %6s %9s %10s %10s %10s %6s %7s %7s %7s  %s\n", "group", "users", "done",
                "messages", "raw", "sent", "deduped", "passes", "copy", "catchup", "held", "result");
  out += buf;
  for (const GroupReport& g : groups) {
    std::snprintf(buf, sizeof buf, "%-12s %6llu %6llu %9llu %10s %10s %10s %6d %6.1fs %6.1fs %6.2fs  %s\n",
                  g.name.c_str(), (unsigned long long)g.users, (unsigned long long)g.already_moved,
                  (unsigned long long)g.messages, HumanBytes(double(g.bytes_raw)).c_str(),
                  HumanBytes(double(g.bytes_sent)).c_str(), HumanBytes(double(g.dedupe_saved)).c_str(), g.passes,
                  g.times.copy, g.times.catch_up, g.hold_seconds,
                  Result(g).c_str());
    out += buf;
    for (const std::string& e : g.errors) out += "  " + g.name + ": " + e + "\n";
    if (g.moved_with_mailboxes)
      out += "  " + g.name + ": " + Counted(g.moved_with_mailboxes, "user") + " moved by an earlier run still " +
             (g.moved_with_mailboxes == 1 ? "has its" : "have their") +
             " mailboxes here: --delete-source deletes only the users a run moves; once verified, remove them "
             "with storemove delete USER... (storemove users --status moved lists them)\n";
    for (const std::string& u : g.vanished_users)
      out += "  " + g.name + ": user " + u + " was renamed or deleted at the source during the migration: not " +
             "switched; its copy at the destination stays on hold (remove it there with storemove delete --force " +
             u + "); a new name is migrated by the next run\n";
    for (const std::string& m : g.removed_at_destination)
      out += "  " + g.name + ": " + m + " was deleted or renamed at the source during the migration; removed at " +
             "the destination before the switch\n";
    for (const auto& [m, why] : g.left_at_destination)
      out += "  " + g.name + ": " + m + " was deleted or renamed at the source during the migration; the " +
             "destination keeps the copy made before (" + why + "; verify lists it; remove it there with " +
             "storemove delete " + m + ")\n";
  }
  for (const std::string& line : recovered) out += "recovered: " + line + "\n";
  if (users_in_no_group) {
    out += std::to_string(users_in_no_group) + (users_in_no_group == 1 ? " user is" : " users are") +
           " in no group and were not migrated:";
    for (const std::string& name : no_group_names) out += " " + name;
    if (users_in_no_group > no_group_names.size())
      out += " and " + std::to_string(users_in_no_group - no_group_names.size()) + " more";
    out += "\n";
  }
  if (users_put_back)
    out += Counted(users_put_back, "user") + " of groups that failed or stopped " + (users_put_back == 1 ? "was" : "were") +
           " put back to their status before the hold\n";
  if (deadline_reached) {
    size_t cut = 0, not_started = 0;  // "3 groups stopped by it" counted two that never started (helper-84)
    for (const GroupReport& g : groups)
      if (g.stopped_by_deadline) ++(g.attempts == 0 ? not_started : cut);
    std::string which = cut ? Counted(cut, "group") + " cut off" : "";
    if (not_started) which += (which.empty() ? "" : " and ") + Counted(not_started, "group") + " not started";
    out += "deadline " + deadline + " reached: " + which +
           ", served by this store as before; rerun to continue\n";
  }
  size_t down = 0;
  for (const GroupReport& g : groups) down += g.destination_unreachable;
  if (down) {
    size_t not_started = 0;
    for (const GroupReport& g : groups) not_started += g.destination_unreachable && g.attempts == 0;
    out += "destination down (" + destination_unreachable + ")" +
           (not_started ? ": " + std::to_string(not_started) + (not_started == 1 ? " group" : " groups") + " not started"
                        : std::string()) +
           "; their users are served by this store as before; rerun when it answers\n";
  }
  if (!source_recovered.empty())
    out += "source store's database environment recovered under the run by another process, or stuck on one "
           "that died inside it (" + source_recovered + "): its groups stopped; " +
           (source_not_reopened.empty()
                ? "their users served by this store as before; run migrate again\n"
                : "opening it again failed (" + source_not_reopened +
                      "): the users this run held stay on hold until migrate runs again (or migrate --abort)\n");
  // A group that failed for itself, not one the deadline stopped, a destination that was down or
  // a source recovered under the run.
  bool failed = false;
  for (const GroupReport& g : groups) failed |= g.FailedOnItsOwn();
  std::snprintf(buf, sizeof buf, "migrate: %s in %.1f s\n",
                ok()                    ? "all groups done"
                : failed                ? "SOME GROUPS FAILED"
                : interrupted           ? "interrupted"
                : down                  ? "stopped: the destination is down"
                : !source_recovered.empty() ? "stopped: the source store was recovered under the run"
                                        : "stopped at the deadline",
                seconds);
  out += buf;
  return out;
}

std::string MigrateReport::Json() const {
  nlohmann::json j;
  j["storemove_version"] = Version();
  j["ok"] = ok();
  j["exit_status"] = exit_status;  // as a failed run's report has it (FailedMigrateJson)
  j["seconds"] = seconds;
  j["users_in_no_group"] = users_in_no_group;
  j["users_in_no_group_names"] = no_group_names;
  j["recovered"] = recovered;
  j["interrupted"] = interrupted;
  // ISO 8601 UTC ("2026-12-05T07:37:03Z"): "2026-12-05 04:07:03 NST" named a zone a reader
  // elsewhere cannot resolve. The fleet report shows it as it comes, either form.
  j["deadline"] = deadline_utc.empty() ? nlohmann::json(nullptr) : nlohmann::json(deadline_utc);
  j["deadline_reached"] = deadline_reached;
  j["destination_unreachable"] =
      destination_unreachable.empty() ? nlohmann::json(nullptr) : nlohmann::json(destination_unreachable);
  j["source_recovered"] = source_recovered.empty() ? nlohmann::json(nullptr) : nlohmann::json(source_recovered);
  j["source_not_reopened"] =
      source_not_reopened.empty() ? nlohmann::json(nullptr) : nlohmann::json(source_not_reopened);
  j["users_put_back"] = users_put_back;
  for (const GroupReport& g : groups) {
    j["groups"].push_back({{"name", g.name},
                           {"ok", g.ok},
                           {"result", Result(g)},
                           {"attempts", g.attempts},
                           {"users", g.users},
                           {"already_moved", g.already_moved},
                           {"moved_with_mailboxes", g.moved_with_mailboxes},
                           {"messages", g.messages},
                           {"bytes_raw", g.bytes_raw},
                           {"bytes_sent", g.bytes_sent},
                           {"dedupe_saved", g.dedupe_saved},
                           {"passes", g.passes},
                           {"pass_messages", g.pass_messages},
                           {"hold_seconds", g.hold_seconds},
                           {"phase_seconds",
                            {{"copy", g.times.copy},
                             {"catch_up", g.times.catch_up},
                             {"hold", g.times.hold},
                             {"final", g.times.final_pass},
                             {"switch", g.times.switch_over},
                             {"delete", g.times.remove}}},
                           {"errors", g.errors},
                           {"vanished_users", g.vanished_users},
                           {"removed_at_destination", g.removed_at_destination},
                           {"left_at_destination", LeftJson(g.left_at_destination)}});
  }
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string FailedMigrateJson(const std::string& error, int exit_status, const std::vector<std::string>& groups) {
  nlohmann::json j;
  j["ok"] = false;
  j["error"] = error;
  j["exit_status"] = exit_status;
  j["groups_requested"] = groups;
  j["groups"] = nlohmann::json::array();
  j["storemove_version"] = Version();
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

void CheckMovedHost(const std::string& host) {
  try {
    store::UserStatus::Parse("moved:" + host);
  } catch (const Error&) {
    Throw(Errc::kInvalidArgument, "--moved-host: invalid host '" + EscapeControls(host) +
                                      "' (1-254 letters, digits and . - : _ [ ], as in storemove user --status moved:HOST)");
  }
}

MigrateReport Migrate(store::Store& source, const MigrateOptions& options) {
  return Migration(source, options).Run();
}

void CheckNotHeldByRunningMigrate(store::Store& source, const std::vector<std::string>& users) {
  if (!PathExists(JournalDir(source))) return;
  const std::set<std::string> wanted(users.begin(), users.end());
  for (const std::string& group : JournalGroups(source)) {
    const std::string path = JournalPath(source, group);
    Held held;
    try {
      held = ReadJournal(path);
    } catch (const Error&) {
      continue;  // removed meanwhile (the run switched or put back its users), or not ours to judge
    }
    auto it = std::find_if(held.begin(), held.end(), [&](const auto& entry) { return wanted.count(entry.first) > 0; });
    if (it == held.end()) continue;
    if (TryLockGroup(source, group).valid()) continue;  // a killed run's: the next migrate or --abort puts back
    Throw(Errc::kTempFail, "user " + it->first + " is on hold for a running storemove migrate (group " + group + ", " +
                               path + "); wait for it to finish, or stop it (SIGTERM puts its users back)");
  }
}

std::vector<std::string> AbortMigrations(store::Store& source) {
  // Every journal's group is locked first: a running migrate's journal is no killed run's.
  std::vector<std::string> groups = JournalGroups(source);
  std::vector<UniqueFd> locks;
  for (const std::string& group : groups) {
    locks.push_back(TryLockGroup(source, group));
    if (!locks.back().valid()) ThrowGroupBusy(source, group);
  }
  std::vector<std::string> lines;
  // A switch record beside an aborted journal proves nothing any more (the copies it names may
  // take mail once the users are back here, docs/migration.md): removed, also when a run that
  // recovered the journal before and was killed had marked it a failed run's (helper-124);
  // before the journal, so that a kill between the two leaves no record (helper-125).
  // A journal that cannot be read does not stop the others (helper-125): named at the end.
  std::optional<Error> first_failure;
  size_t failures = 0;
  for (const std::string& group : groups) {
    try {
      // A switch sent and not finished (no user of it moved): its copies at the destination may
      // be active, and every later run refuses them as live. Said, with what to do (helper-153).
      std::optional<std::string> sent;
      try {
        const std::string path = SwitchPath(source, group);
        if (PathExists(path)) {
          const SwitchRecord record = ParseSwitchRecord(ReadJournalFile(path), path);
          if (!AnyUserMoved(source, record) && !record.users.empty())
            sent = "group " + group + ": its switch had been sent to " + record.to + " for " +
                   Counted(record.users.size(), "user") + " (" + path +
                   ", removed): their copies there may be active; before migrating them again, put them on hold "
                   "there (storemove user --users-file FILE --status hold, on that store)";
        }
      } catch (const Error&) {  // an unreadable record is removed all the same
      }
      RemoveSwitchRecord(source, group);
      lines.push_back(RecoverJournal(source, group));
      if (sent) lines.push_back(*sent);
    } catch (const Error& e) {
      if (!first_failure) first_failure = e;
      ++failures;
    }
  }
  if (first_failure)
    Throw(first_failure->code(), std::string(first_failure->what()) +
                                     (failures > 1 ? " (and " + std::to_string(failures - 1) + " more journals)" : "") +
                                     (lines.empty() ? "" : "; the other journals' users were put back"));
  // A killed run's members files too, whose group lock nobody holds (helper-119: left until the
  // next migrate, where the documentation says the run's end removes them).
  // Under claims.lock, each with its group lock held until it is gone, as ClaimMembers does: a
  // migrate starting meanwhile must not lose the claim it just wrote (helper-120).
  if (!IsDirectory(JournalDir(source))) return lines;
  const UniqueFd claims = LockClaims(source);
  for (const std::filesystem::path& path : MembersFiles(source)) {
    const std::string group = path.stem().string();
    // Locked above (a second flock of this process would fail), or free and locked now.
    const bool ours = std::find(groups.begin(), groups.end(), group) != groups.end();
    UniqueFd lock = ours ? UniqueFd() : TryLockGroup(source, group);
    if (!ours && !lock.valid()) continue;  // a running migrate's claim
    RemoveJournalFile(source, path);
    if (!ours) lines.push_back("group " + group + ": removed the members file a killed migrate left (nobody was on hold)");
  }
  return lines;
}

}  // namespace storemove::stream
