// storemove migrate: the online procedure (sun-ms63 admin guide 20.15.1), one connection per
// backup group, N groups at a time (docs/migration.md):
//   copy (bulk pass, users active) -> incremental passes while the delta shrinks (users active)
//   -> hold -> final incremental pass, every folder proven by its summary -> switch (destination
//   active in one round trip, source moved:HOST) -> optionally delete the source copy.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "stream/deadline.h"
#include "stream/net.h"
#include "stream/stream.h"

namespace storemove::stream {

struct MigrateOptions {
  std::string groups_file;            // NAME=ERE lines; users in no group are not migrated
  std::vector<std::string> groups;    // only these groups (empty = all in the file)
  // A group named in `groups` that holds no user of this store is done (users 0), not refused as
  // a typo in its pattern: one groups file shared by a fleet's back-ends (storemove plan's jobs).
  bool allow_empty_groups = false;
  int jobs = 1;                       // groups migrated at once
  int retries = 2;                    // further attempts for a failed group (network, server, verification errors)
  int retry_delay_ms = 1000;          // before the first retry; doubled before each next one...
  int max_retry_delay_ms = 30000;     // ...up to this
  bool delete_source = false;         // delete verified users from the source at the end
  net::Endpoint to;
  net::ClientOptions client;
  std::string moved_host;             // recorded as moved:HOST on the source (default: to.host)
  std::string partition;              // destination partition for new users ("" = same name or default)
  bool live = false;                  // live display on stderr
  // How long to wait for a group another migrate is moving (its lock) before kTempFail: a fleet
  // job rerun while its predecessor still runs (its ssh was cut) waits for it instead of failing.
  int64_t lock_wait_ms = 0;
  // Online incremental passes after the copy, at most; they stop early once a pass carried at
  // most settle_messages messages (or no fewer than the pass before): then the group is held.
  int max_online_passes = 4;
  uint64_t settle_messages = 200;
  // The end of the maintenance window (--deadline): from then on no group, attempt, pass or hold
  // starts, and what runs is cut off as a signal cuts it (sessions shut down, users on hold put
  // back to their status before): every group not switched by then is served by the source as
  // before. The report says deadline_reached; a rerun continues.
  std::optional<WallClock::time_point> deadline;
  // Told once why the hold, the switch or a put-back waits for a user's delivery gate (a delivery
  // stuck between its status check and its commit): the CLI prints it on stderr. That wait is
  // cut off by a cancellation (SIGTERM) and gives up after client.timeout_seconds (kTempFail
  // naming the user: the attempt fails, its users are put back).
  std::function<void(const std::string&)> on_wait;
  // Told of each failed attempt that will be retried, and when: the CLI prints it on stderr when
  // there is no live display, so a run under cron or GNU parallel does not wait minutes in silence.
  std::function<void(const std::string&)> on_retry;
  // Told once, with --deadline, when the groups left will not be done by then at the rate so far
  // (after the first seconds): the CLI prints it on stderr.
  std::function<void(const std::string&)> on_notice;
  // Told when a group's last attempt got no answer and the groups not started yet wait for
  // the destination to answer (each time it is found down again): the CLI prints it on stderr.
  std::function<void(const std::string& why)> on_destination_down;
  // Test seam: called once a group's users are on hold (journal written), before the catch-up.
  std::function<void(const std::string& group)> on_hold;
  // Tests: called once the destination answered the switch, before the source's transaction; a
  // throw stands for a connection lost at that moment.
  std::function<void(const std::string& group)> after_switch_sent;
  // Test seam: called after each online pass (1 = the copy), before the next one or the hold.
  std::function<void(const std::string& group, int pass)> on_pass;
  // Told as a pass reads messages for the stream (the group's count so far, every attempt):
  // tests make a pass outlast the deadline in its middle.
  std::function<void(const std::string& group, uint64_t messages)> on_progress;
};

struct PhaseTimes {
  double copy = 0;         // the bulk pass
  double catch_up = 0;     // the online incremental passes
  double hold = 0;         // setting the group on hold (journal and statuses)
  double final_pass = 0;   // the held, final incremental pass with every folder's summary
  double switch_over = 0;  // destination active, source moved
  double remove = 0;       // --delete-source
};

struct GroupReport {
  std::string name;
  uint64_t users = 0;            // users migrated in this run
  uint64_t already_moved = 0;    // users found moved (to any host) by an earlier run
  // With --delete-source: users moved by an earlier run whose mailboxes are still here (only the
  // users a run moves are deleted by it; `storemove delete` removes these).
  uint64_t moved_with_mailboxes = 0;
  uint64_t messages = 0;         // messages carried (every pass)
  uint64_t bytes_raw = 0;        // message bytes carried
  uint64_t bytes_sent = 0;       // bytes on the wire
  uint64_t dedupe_saved = 0;     // message bytes not sent as bodies (links, held, already present)
  int attempts = 0;
  std::vector<int64_t> retry_delays_ms;  // the wait before each retry
  bool ok = false;
  bool stopped_by_deadline = false;  // not ok because the deadline came (attempts 0: not started)
  // Not ok because --to could not be reached: its last attempt got no answer (attempts
  // 0: not started, because another group's attempts had found the destination down).
  bool destination_unreachable = false;
  // Not ok because another process recovered the source's database environment under the run
  // (MigrateReport::source_recovered): every group stops, its held users put back.
  bool stopped_by_source = false;
  // Not ok because a signal (SIGINT, SIGTERM) stopped the run (attempts 0: not started); its
  // held users were put back, as for the deadline.
  bool stopped_by_signal = false;
  int passes = 0;                // passes of the successful attempt (copy, online, final)
  std::vector<uint64_t> pass_messages;  // messages (and links) each of those passes carried
  // Seconds the users were held: from the first user set on hold to the last one switched.
  double hold_seconds = 0;
  PhaseTimes times;
  std::vector<std::string> errors;
  // Mailboxes a pass of this run copied that the source no longer had at the final pass
  // (deleted or renamed meanwhile): removed from the destination's copy before the switch, or
  // left there (mailbox, why: the copy was written by something else, an older server).
  std::vector<std::string> removed_at_destination;
  // Users of the group renamed or deleted at the source before its hold: neither held nor
  // switched; their copies at the destination stay on hold.
  std::vector<std::string> vanished_users;
  std::vector<std::pair<std::string, std::string>> left_at_destination;
  // Not ok for a reason of its own: not the deadline, a destination down or a recovered source.
  bool FailedOnItsOwn() const {
    return !ok && !stopped_by_deadline && !destination_unreachable && !stopped_by_source && !stopped_by_signal;
  }
};

struct MigrateReport {
  std::vector<GroupReport> groups;
  uint64_t users_in_no_group = 0;
  std::vector<std::string> no_group_names;  // the first kNoGroupNamesShown of them, to name them
  static constexpr size_t kNoGroupNamesShown = 20;
  double seconds = 0;
  std::vector<std::string> recovered;  // what the start put back from a killed run's journals
  bool interrupted = false;            // options.client.cancel was cancelled (a signal)
  bool deadline_reached = false;       // options.deadline came before every group was done
  // The status the command exits with (tools/cmd_migrate.cc decides it before the report is
  // written): 0, 1 (a group failed on its own), 75 (deadline, destination down), 130 ...
  int exit_status = 0;
  std::string deadline;                // DeadlineText of options.deadline ("" without one): the text report's
  std::string deadline_utc;            // the same instant in ISO 8601 UTC: the JSON report's (no zone abbreviation)
  // Why the destination was found down: the last error of the first group that ran out of
  // attempts without one connection ("" if none did). No group starts after that.
  std::string destination_unreachable;
  // Why the run stopped early: another process recovered the source store's database environment
  // under it (a process died inside it), so every call through the run's handles failed. The
  // first group's error ("" if it did not happen). Not retried: the next run goes on.
  std::string source_recovered;
  // Why the environment could not be opened again after that ("" when it was): stuck on a process
  // that died inside it. The users the run held stay on hold until the next run (or migrate
  // --abort) puts them back from the journals.
  std::string source_not_reopened;
  uint64_t users_put_back = 0;         // users of failed or interrupted groups set back from hold
  bool ok() const;
  std::string Text() const;
  std::string Json() const;
};

// The JSON report of a run that ended in an error before it had a report (a busy lock, a
// configuration error, an interruption): {"ok": false, "error": ..., "exit_status": ...,
// "groups_requested": [...], "groups": []}.
std::string FailedMigrateJson(const std::string& error, int exit_status, const std::vector<std::string>& groups);

// Errors that a retry cannot cure (bad credentials or key file mode, authentication refused, an
// unknown partition or name, a destination that is the source itself) stop the whole migration
// at once: other groups are cut off, held users put back, and Migrate throws that error.
// Runs the migration under its groups' locks (STORE/migrate-journal/GROUP.lock; kTempFail when
// another migrate holds one after lock_wait_ms): migrates of other groups of the store may run at
// once. First puts back what a killed run left on hold (the journals of its groups and of groups
// no migrate holds). A user belongs to the first group of the file that matches it, even when
// only later groups are migrated.
// Before a group's users are set to hold, their previous statuses go to a journal
// (STORE/migrate-journal/GROUP.hold, durable); a group that fails or is interrupted sets them back
// and removes it, as does the switch once the users are moved.
MigrateReport Migrate(store::Store& source, const MigrateOptions& options);

// Throws kInvalidArgument (one line, the value escaped) unless `host` is what
// `storemove user --status moved:HOST` accepts: migrate --moved-host, checked before anything.
void CheckMovedHost(const std::string& host);

// `storemove user --status` (one user or many): kTempFail, one line naming the user, the group and
// its journal, when a running migrate (its group lock is held) has one of `users` on hold. Its
// switch would refuse a user given its service back meanwhile; the administrator waits for it or
// stops it instead (SIGTERM puts its users back). A killed run's journal does not refuse anything.
void CheckNotHeldByRunningMigrate(store::Store& source, const std::vector<std::string>& users);

// `migrate --abort`: under the journals' group locks (kTempFail when a migrate holds one), puts
// every user a killed migrate left on hold back to the status its journal recorded, and removes
// the journals. One line per journal.
std::vector<std::string> AbortMigrations(store::Store& source);

}  // namespace storemove::stream
