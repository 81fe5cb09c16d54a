// storemove migrate: moves backup groups to another server while the service stays up
// (stream/migrate.h describes the phases).
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

#include "stream/migrate.h"
#include "stream/migrate_dry_run.h"
#include "tools/commands.h"
#include "tools/session_io.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/interrupt.h"
#include "util/plural.h"

namespace storemove::tools {
namespace {
// What an admin finds at the destination after a run cut off (helper-119 asked).
constexpr const char* kCopiesStayHeld =
    "the copies made at the destination stay on hold there (their users are served here) until a run switches "
    "them, but for a group whose switch was sent and not finished (the report says so: its users may be active there "
    "as well, until a run adopts them)";

struct MigrateCliOptions {
  std::string store_dir;
  std::string groups_file;
  int jobs = 1;
  int retries = 2;
  double retry_delay = 1;
  std::string to;
  std::string key, cert, cert_key, ca;
  bool insecure = false;
  int timeout = 60;
  std::string compress = "1";
  bool delete_source = false;
  std::string moved_host;
  std::string partition;
  bool json = false;
  std::string report_file;
  double lock_wait = 0;
  bool verbose = false;
  bool abort = false;
  bool dry_run = false;
  bool allow_empty_groups = false;
  int max_passes = 4;
  uint64_t settle = 200;
  std::optional<std::string> deadline;  // given at all: "" is refused, not taken as none
  std::vector<std::string> groups;
};

// SIGINT, SIGTERM and SIGHUP (unless ignored: nohup) become a cancellation of the migration (its sessions are cut off, its held
// users put back) instead of killing the process with users left on hold. The signals are
// blocked in every thread and read from a signalfd by a watcher thread.
class SignalWatcher {
 public:
  explicit SignalWatcher(stream::net::Cancellation* cancel) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (SighupStops()) sigaddset(&set, SIGHUP);  // a closed terminal: SIGHUP killed it, users left on hold
    if (::pthread_sigmask(SIG_BLOCK, &set, &old_) != 0) ThrowErrno("pthread_sigmask");
    signal_fd_ = UniqueFd(::signalfd(-1, &set, SFD_CLOEXEC));
    stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    if (!signal_fd_.valid() || !stop_fd_.valid()) ThrowErrno("signalfd");
    thread_ = std::thread([this, cancel] {
      pollfd p[2] = {{signal_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
      while (::poll(p, 2, -1) < 0 && errno == EINTR) {
      }
      signalfd_siginfo info;
      if (!(p[0].revents & POLLIN) || ::read(signal_fd_.get(), &info, sizeof info) != sizeof info) return;
      cancel->Cancel(std::string("interrupted by SIG") + ::sigabbrev_np(int(info.ssi_signo)));
    });
  }
  ~SignalWatcher() {
    uint64_t one = 1;
    (void)!::write(stop_fd_.get(), &one, sizeof one);
    thread_.join();
    // A signal that came too late to cancel anything stays pending and is dropped here.
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t old_;
  UniqueFd signal_fd_, stop_fd_;
  std::thread thread_;
};

// Test seam (STOREMOVE_TEST_HOLD_FD=N): once a group's users are on hold, write "hold GROUP\n"
// to fd N and wait until the test writes a byte to it (or closes it) or a signal cancels the run.
// It lets a test signal or kill -9 the process at a known point of the hold phase.
void PauseInHold(int fd, const stream::net::Cancellation& cancel, const std::string& group) {
  std::string line = "hold " + group + "\n";
  (void)!::write(fd, line.data(), line.size());
  pollfd p[2] = {{fd, POLLIN, 0}, {cancel.fd(), POLLIN, 0}};
  while (::poll(p, 2, -1) < 0 && errno == EINTR) {
  }
  char c;
  if (p[0].revents) (void)!::read(fd, &c, 1);
}

int RunAbort(const MigrateCliOptions& o) {
  auto source = OpenStore(o.store_dir);
  std::vector<std::string> lines = stream::AbortMigrations(*source);
  for (const std::string& line : lines) std::printf("migrate --abort: %s\n", line.c_str());
  if (lines.empty()) std::printf("migrate --abort: no interrupted migration in %s\n", source->root().c_str());
  return 0;
}

// --report FILE: the JSON report, written atomically (a fleet job's result, docs/fleet.md), or on
// stdout for "-". A run that ends in an error leaves a report too, naming it, so that a fleet's
// merged report counts the job as failed instead of missing.
void WriteReport(const std::string& file, const std::string& json) {
  if (file == "-") {
    std::printf("%s\n", json.c_str());
  } else {
    WriteFileAtomic(file, json + "\n", 0644);
  }
}

// A --report FILE that could not be written at the end is refused before anything moves: a
// migration that switched its users and then exited 66 ("open ...: no such file") looked like a
// configuration failure, with no report to read (helper-55). The probe leaves nothing behind.
void CheckReportWritable(const std::string& file) {
  if (file.empty() || file == "-") return;
  if (IsDirectory(file)) Throw(Errc::kInvalidArgument, "--report " + file + ": is a directory; nothing was migrated");
  const std::string probe = file + ".tmp.probe." + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    Throw(Errc::kInvalidArgument, "--report " + file + ": cannot be written (" + std::strerror(errno) +
                                      "); nothing was migrated");
  ::close(fd);
  ::unlink(probe.c_str());
}

int RunMigrateOnce(const MigrateCliOptions& o, bool* report_written) {
  if (o.to.empty()) Throw(Errc::kInvalidArgument, "migrate: --to HOST:PORT is required (or --abort)");
  // Stored as the users' status at the switch: checked as `user --status moved:HOST` checks it,
  // before the store is opened.
  if (!o.moved_host.empty()) stream::CheckMovedHost(o.moved_host);
  auto source = OpenStore(o.store_dir);
  stream::MigrateOptions options;
  options.groups_file = o.groups_file.empty() ? source->root() + "/config/backup-groups.conf" : o.groups_file;
  options.groups = o.groups;
  options.allow_empty_groups = o.allow_empty_groups;
  if (o.jobs < 1 || o.jobs > 64) Throw(Errc::kInvalidArgument, "--jobs: 1-64");
  if (o.retries < 0 || o.retries > 100) Throw(Errc::kInvalidArgument, "--retries: 0-100");
  options.jobs = o.jobs;
  options.retries = o.retries;
  if (!(o.retry_delay >= 0.01 && o.retry_delay <= 3600)) Throw(Errc::kInvalidArgument, "--retry-delay: 0.01-3600 seconds");
  options.retry_delay_ms = int(o.retry_delay * 1000);
  options.max_retry_delay_ms = std::max(options.retry_delay_ms, 30000);
  options.delete_source = o.delete_source;
  options.to = stream::net::ParseEndpoint(o.to);
  options.client.credentials.key_file = o.key;
  options.client.credentials.cert_file = o.cert;
  options.client.credentials.cert_key_file = o.cert_key;
  options.client.credentials.ca_file = o.ca;
  options.client.credentials.insecure = o.insecure;
  options.client.timeout_seconds = o.timeout;
  // As backup --to: a source folder locked longer than a session survives a silent client fails
  // the attempt with the folder named (retried later), not with a broken pipe. Set before any
  // job thread starts.
  source->set_folder_lock_wait(o.timeout);
  // A session's connection also carries the server's answers: its output time is not the link's,
  // so adapt is refused (named in the error: helper-72 was offered it by the error text).
  const Compression compression = ParseCompression(o.compress, /*adapt_allowed=*/false);
  options.client.compress_level = compression.level;
  options.moved_host = o.moved_host;
  options.partition = o.partition;
  options.live = o.verbose || ::isatty(STDERR_FILENO);
  if (!(o.lock_wait >= 0 && o.lock_wait <= 86400)) Throw(Errc::kInvalidArgument, "--lock-wait: 0-86400 seconds");
  options.lock_wait_ms = int64_t(o.lock_wait * 1000);
  if (o.max_passes < 0 || o.max_passes > 100) Throw(Errc::kInvalidArgument, "--max-passes: 0-100");
  options.max_online_passes = o.max_passes;
  options.settle_messages = o.settle;
  if (o.deadline) options.deadline = stream::ParseDeadline(*o.deadline, stream::WallClock::now());
  if (o.dry_run) {
    // The run's own status when it would refuse a group, so `migrate --dry-run && migrate` stops
    // there (helper-169: exit 0 under "WILL FAIL").
    if (!stream::WriteMigratePlan(*source, options, o.json, stdout)) return 0;
    std::fflush(stdout);
    std::fprintf(stderr, "storemove: migrate --dry-run: the run would refuse a group (WILL FAIL above)\n");
    return ExitStatus(Errc::kInvalidArgument);
  }
  stream::net::Cancellation cancel;
  options.client.cancel = &cancel;
  options.on_wait = [](const std::string& why) { std::fprintf(stderr, "storemove migrate: %s\n", why.c_str()); };
  // Said when it happens, also under the live line (which shows only "retry-wait"; helper-79):
  // the line is cleared first and redrawn after.
  const bool live = options.live;
  options.on_retry = [live](const std::string& what) {
    std::fprintf(stderr, "%sstoremove migrate: %s\n", live ? "\r\033[K" : "", what.c_str());
  };
  options.on_notice = options.on_retry;
  options.on_destination_down = [&options](const std::string& why) {
    std::fprintf(stderr, "storemove migrate: destination %s is down (%s): no further group starts unless it answers\n",
                 options.to.ToString().c_str(), why.c_str());
  };
  if (const char* hook = std::getenv("STOREMOVE_TEST_HOLD_FD")) {
    int fd = std::atoi(hook);
    options.on_hold = [fd, &cancel](const std::string& group) { PauseInHold(fd, cancel, group); };
  }
  stream::MigrateReport report;
  {
    SignalWatcher watcher(&cancel);
    report = stream::Migrate(*source, options);
  }
  // Decided before the report is written, which says it: a script reading only the report
  // (a fleet's summary) knew a failed run's status but not a finished one's.
  const bool failed_on_its_own =
      std::any_of(report.groups.begin(), report.groups.end(), [](const stream::GroupReport& g) {
        return g.FailedOnItsOwn();
      });
  report.exit_status = report.interrupted ? ExitStatus(Errc::kInterrupted)
                       : failed_on_its_own ? 1
                       : !report.destination_unreachable.empty() || report.deadline_reached ||
                               !report.source_recovered.empty()
                           ? ExitStatus(Errc::kTempFail)
                       : report.ok() ? 0
                                     : 1;
  if (!o.report_file.empty()) {
    *report_written = true;  // tried once: a failure below is not hidden by a second try
    try {
      WriteReport(o.report_file, report.Json());
    } catch (const Error& e) {
      // The migration's result is not lost with its file: the text report, then the failure.
      std::printf("%s", report.Text().c_str());
      Throw(Errc::kIo, std::string("migrate ran to its end (the report above) but --report was not written: ") +
                          e.what());
    }
  }
  // The window ended with groups left: a planned stop, not a failure; the next window's rerun
  // goes on (75, as a busy lock: a fleet's runner retries it, docs/fleet.md). A group that failed
  // on its own (a user live at the destination: not retried) keeps the run's status 1, so that
  // nobody reruns it in a loop.
  // So is a destination found down (every attempt of a group without an answer): the
  // groups after it did not start, and the run that follows once it answers goes on.
  // The report on stdout, unless --report - put it there already.
  auto print_report = [&] {
    if (o.report_file != "-") std::printf("%s", o.json ? (report.Json() + "\n").c_str() : report.Text().c_str());
  };
  // Said only where a group began (its passes may have made copies) and did not switch.
  bool copies_left = false;
  for (const stream::GroupReport& g : report.groups) copies_left |= !g.ok && g.attempts > 0;
  const std::string copies_note = copies_left ? std::string("; ") + kCopiesStayHeld : std::string();
  if (report.interrupted) {
    print_report();  // its table too, as after a deadline (helper-120: only --report FILE had it)
    Throw(Errc::kInterrupted, "migrate " + cancel.why() + ": " + Counted(report.users_put_back, "user") +
                                  " put back to their status before the hold" + copies_note + "; rerun to continue");
  }
  if (!report.destination_unreachable.empty() && !failed_on_its_own) {
    print_report();
    size_t left = 0;
    for (const stream::GroupReport& g : report.groups) left += !g.ok;
    Throw(Errc::kTempFail, "migrate: destination " + options.to.ToString() + " was down (" +
                               report.destination_unreachable + "): " + std::to_string(left) + " of " +
                               std::to_string(report.groups.size()) + " groups not migrated, their users served by " +
                               source->root() + " as before; rerun when it answers");
  }
  // Another process recovered the source's environment under the run: nothing the next run
  // cannot finish, and nothing of the destination's doing.
  if (!report.source_recovered.empty() && !failed_on_its_own) {
    print_report();
    size_t left = 0;
    for (const stream::GroupReport& g : report.groups) left += !g.ok;
    Throw(Errc::kTempFail, "migrate: the database environment of " + source->root() +
                               " was recovered under this run by another process, or is stuck on one that died "
                               "inside it (" + report.source_recovered + "): " + std::to_string(left) + " of " +
                               std::to_string(report.groups.size()) + " groups not migrated, " +
                               Counted(report.users_put_back, "user") + " put back to their status before the hold" +
                               (report.source_not_reopened.empty()
                                    ? ""
                                    : "; the environment could not be opened again (" + report.source_not_reopened +
                                          "): users this run held stay on hold until migrate runs again") +
                               "; run migrate again to continue");
  }
  if (report.deadline_reached && !failed_on_its_own) {
    print_report();
    Throw(Errc::kTempFail, "migrate reached its deadline (" + report.deadline + ") before every group was done: " +
                               Counted(report.users_put_back, "user") +
                               " put back to their status before the hold" + copies_note + "; rerun to continue");
  }
  print_report();
  if (report.ok()) return 0;
  // Said on stderr too, in the one line every failure ends with: under cron the report may go
  // where nobody looks (helper-60).
  size_t failed = 0, down = 0, stopped = 0, recovered = 0;
  for (const stream::GroupReport& g : report.groups) {
    if (g.ok) continue;
    if (g.destination_unreachable) ++down;
    else if (g.stopped_by_deadline) ++stopped;
    else if (g.stopped_by_source) ++recovered;
    else ++failed;
  }
  std::string also;  // groups left for a reason that is not theirs
  if (down) also += "; " + std::to_string(down) + " not migrated because " + options.to.ToString() + " was down";
  if (stopped) also += "; " + std::to_string(stopped) + " stopped by the deadline";
  if (recovered) also += "; " + std::to_string(recovered) + " stopped when another process recovered the source store";
  std::fflush(stdout);
  std::fprintf(stderr, "storemove: migrate: %zu of %zu groups failed (the report says why)%s; their users are served by "
                       "%s as before\n",
               failed, report.groups.size(), also.c_str(), source->root().c_str());
  return 1;
}

int RunMigrate(const MigrateCliOptions& o) {
  if (o.abort) return RunAbort(o);
  if (!o.dry_run) CheckReportWritable(o.report_file);
  bool written = false;
  try {
    return RunMigrateOnce(o, &written);
  } catch (const Error& e) {
    if (!o.report_file.empty() && !written) {
      try {
        WriteReport(o.report_file, stream::FailedMigrateJson(e.what(), ExitStatus(e.code()), o.groups));
      } catch (const Error& report_error) {
        Throw(e.code(), std::string(e.what()) + "; --report not written either: " + report_error.what());
      }
    }
    throw;
  }
}

}  // namespace

void AddMigrateCommand(CLI::App& root, Action* chosen) {
  auto o = std::make_shared<MigrateCliOptions>();
  CLI::App* c = root.add_subcommand(
      "migrate", "move backup groups to another server while users stay online: copy, catch up online, hold for a final "
      "incremental pass proven by folder summaries, switch");
  AddStoreOption(c, &o->store_dir);
  c->add_option("--groups", o->groups_file, "backup groups file (default STORE/config/backup-groups.conf)")->type_name("FILE");
  c->add_option("--jobs,-j", o->jobs, "groups migrated at once (default 1)");
  c->add_option("--to", o->to, "destination server (storemove serve)")->type_name("HOST:PORT");
  c->add_flag("--abort", o->abort,
              "put back the users a killed migrate left on hold (from STORE/migrate-journal) and stop");
  c->add_option("--key", o->key, "pre-shared key file (storemove keygen)")->type_name("FILE");
  c->add_option("--cert", o->cert, "client certificate (mutual TLS)")->type_name("FILE");
  c->add_option("--cert-key", o->cert_key, "client certificate's private key (PEM; mode 0600)")->type_name("FILE");
  c->add_option("--ca", o->ca, "CA certificate that signed the server's certificate")->type_name("FILE");
  c->add_flag("--insecure", o->insecure, "plain TCP without TLS (trusted test networks only)");
  c->add_option("--timeout", o->timeout, "seconds without progress before a session is abandoned (default 60)")
      ->check(CLI::Range(1, 86400));
  c->add_option("--compress", o->compress, "zstd level 1-19 for the sessions, or none (default 1)")->type_name("LEVEL|none");
  c->add_option("--retries", o->retries,
                "further attempts for a group that failed on the network, the server or verification (default 2); "
                "configuration errors (credentials, authentication, names) stop at once; once a group's last attempt got no "
                "answer (no connection, or one silent until --timeout), the destination is taken for down: the groups not yet started are not started (exit 75)");
  c->add_option("--retry-delay", o->retry_delay,
                "seconds before the first retry, doubled before each next one up to 30 s (default 1)");
  c->add_flag("--delete-source", o->delete_source, "delete verified users from this store after the switch");
  c->add_option("--moved-host", o->moved_host, "host recorded as moved:HOST (default: the --to host); letters, digits and . - : _ [ ] only, as "
              "user --status moved:HOST (else exit 64 before anything)")->type_name("HOST");
  c->add_option("--partition", o->partition, "destination partition for new users")->type_name("NAME");
  c->add_option("--max-passes", o->max_passes,
                "online incremental passes after the copy, at most (default 4; 0 = hold right after the copy)");
  c->add_option("--settle", o->settle,
                "hold the group once an online pass carried at most this many messages (default 200)");
  c->add_flag("--dry-run", o->dry_run,
              "print what would be done (groups, users, messages and bytes, destination, steps) and stop: no "
              "connection, nothing changed; exit 64 when the run would refuse a group");
  c->add_flag("--json", o->json, "print the final report as JSON");
  c->add_option("--report", o->report_file,
                "also write the JSON report to FILE, atomically, even when the run ends in an error (\"-\": on stdout, "
                "instead of the text report); a fleet job's result (docs/fleet.md)")
      ->type_name("FILE");
  // Neither --abort nor --dry-run migrates anything: a report file would not be written, and a
  // fleet would count the job as missing. Refused before anything, as any usage error.
  c->get_option("--report")->excludes("--abort")->excludes("--dry-run");
  c->add_option("--lock-wait", o->lock_wait,
                "seconds to wait for a group another migrate is moving before giving up (default 0)");
  c->add_option("--deadline", o->deadline,
                 "end of the maintenance window: +DURATION (+90m, +2h30m, +45s), HH:MM[:SS] (the next one) or "
                 "YYYY-MM-DDTHH:MM[:SS] (local time), or @SECONDS since the epoch (may have passed); then nothing new "
                 "starts, running groups are cut off and their held users put back (exit 75)")
      ->type_name("TIME");
  c->add_flag("-v,--verbose", o->verbose, "live display on stderr even when it is not a terminal");
  c->add_flag("--allow-empty-groups", o->allow_empty_groups,
              "a group named that holds no user of this store is done (users 0, exit 0) instead of refused as a "
              "typo (exit 64): for one groups file shared by many back-ends (storemove plan's jobs pass it)");
  c->add_option("groups", o->groups, "groups to migrate (default: every group in the file)");
  c->callback([o, chosen] { *chosen = [o] { return RunMigrate(*o); }; });
}

}  // namespace storemove::tools
