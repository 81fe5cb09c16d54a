// storemove backup: imsbackup. Writes the selected part of a store as a checksummed stream,
// zstd-compressed unless --compress none, to a file or standard output.
#include <fcntl.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <optional>

#include "format/zstd_codec.h"
#include "store/clock_floor.h"
#include "stream/net.h"
#include "stream/transport.h"
#include "tools/backup_output.h"
#include "tools/commands.h"
#include "tools/session_io.h"
#include "util/cpu_idle.h"
#include "util/error.h"
#include "util/interrupt.h"
#include "util/fs.h"
#include "util/local_time.h"

namespace storemove::tools {
namespace {

struct BackupCliOptions {
  std::string store_dir;
  std::string file;
  std::string names_file;
  std::string since;
  bool since_given = false;  // -d "" is a mistake, not a full backup
  std::string compress = "1";
  int threads = 0;
  size_t reads = 0;
  std::string groups;
  bool manifest = false;
  bool allow_gap = false;
  bool verbose = false;
  bool json = false;
  std::vector<std::string> names;
  std::string to;  // HOST:PORT of a storemove serve, instead of -f
  stream::net::Credentials credentials;
  int timeout = 60;
};

// Ctrl-C, SIGTERM or SIGHUP of a backup to standard output, a device or a server: one line, not a
// silent death (helper-159). Backup writes nothing to the store; `-f FILE` has its own handler,
// which also removes its temporary file (tools/backup_output.cc).
void OnInterruptedStream(int signo) {
  static const char kLine[] =
      "storemove: backup interrupted; the stream it was writing is cut short (a restore of it stops at the cut, "
      "exit 65): run the backup again\n";
  (void)!::write(STDERR_FILENO, kLine, sizeof kLine - 1);
  ::_exit(128 + signo);
}

int RunBackup(const BackupCliOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);  // a dead reader becomes an EPIPE error, not a silent death
  OnStopSignals(OnInterruptedStream);
  auto store = OpenStore(o.store_dir);
  stream::BackupOptions options;
  options.names = o.names;
  std::vector<size_t> name_lines;  // -u: the file's line of options.names[o.names.size() + i]
  if (!o.names_file.empty()) {
    std::ifstream in(o.names_file);
    if (!in) Throw(Errc::kNotFound, "-u: cannot read " + o.names_file);
    size_t line_number = 0;
    for (std::string line; std::getline(in, line);) {
      ++line_number;
      if (line_number == 1 && line.starts_with("\xEF\xBB\xBF")) line.erase(0, 3);  // a byte-order mark
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      // A bare user id is all of that user's mailboxes: the Sun chapter's files of user names
      // (helper-78: "invalid backup name" for each). Blanks around it go, as in the users files
      // of `user --users-file` and `moveuser --users` (a mailbox name may end in a blank).
      if (line.find('/') == std::string::npos) {
        const size_t first = line.find_first_not_of(" \t"), last = line.find_last_not_of(" \t");
        if (first == std::string::npos) continue;
        line = line.substr(first, last + 1 - first);
        if (line[0] == '#') continue;
        try {
          store::ValidateUserId(line);
        } catch (const Error& e) {
          Throw(e.code(), "-u " + o.names_file + " line " + std::to_string(line_number) + ": " + e.what());
        }
        line = "user/" + line + "/*";
      }
      options.names.push_back(line);
      name_lines.push_back(line_number);
    }
    // Not "/": a file of blank or comment lines, or an empty one (a list that came out empty),
    // backed up the whole store, exit 0 (helper-163).
    if (name_lines.empty())
      Throw(Errc::kInvalidArgument, "-u " + o.names_file + ": no names or user ids in it; nothing was written");
  }
  if (options.names.empty()) options.names.push_back("/");
  options.groups_file = o.groups;
  std::string since_note;
  if (o.since_given) {
    options.since = ParseBackupDate(o.since);
    // A typo of the year: a stream that can hold nothing, which restores "fine" (helper-81).
    // The store's clock floor counts as now: the start of a backup that ran under a clock a little
    // ahead is a date messages were stored at since (store/clock_floor.h).
    if (options.since > std::max<int64_t>(::time(nullptr), store::ReadClockFloor(store->root())))
      Throw(Errc::kInvalidArgument, "-d " + o.since + " is in the future: no message was stored at or after it, so the "
                                                      "backup would hold none; nothing was written");
    // After the start of every backup of this store so far: what was stored between is in
    // neither, and a restore of the chain finds the gap only then (helper-97). Said now; not
    // refused, since a dated backup is also a way to take recent mail out of a store.
    if (const int64_t last = store::ReadClockFloor(store->root()); last != 0 && options.since > last)
      since_note = "-d " + o.since + " is after the start of this store's latest backup (" + CompactLocalTime(last) +
                   ", as -d takes it): mail stored between the two is in neither; for the next backup of a chain "
                   "give that start";
  }
  options.manifest = o.manifest;
  options.reads = o.reads;
  options.source_host = HostName();
  options.live_progress = o.verbose || ::isatty(STDERR_FILENO);
  const Compression compression = ParseCompression(o.compress);
  const int level = compression.level;
  if (o.threads < 0 || o.threads > 64) Throw(Errc::kInvalidArgument, "--threads: 0-64");
  // Before anything is opened: an output written in place (a FIFO, a device) is not touched.
  if (compression.adapt && o.threads != 0) Throw(Errc::kInvalidArgument, "--compress adapt: without --threads");

  if (o.to.empty() == o.file.empty()) Throw(Errc::kInvalidArgument, "give either -f FILE|- or --to HOST:PORT");
  if (o.allow_gap && o.to.empty())
    Throw(Errc::kInvalidArgument, "--allow-gap: with --to only (a file's restore takes restore --allow-gap)");
  // A name that selects nothing, before any output exists; one from -u says its line, which
  // "'user/nosuchuser/*' selects nothing" alone did not (helper-97).
  try {
    stream::CheckBackupSelection(*store, options);
  } catch (const Error& e) {
    for (size_t i = 0; i < name_lines.size(); ++i)
      if (std::string_view(e.what()).find("'" + options.names[o.names.size() + i] + "'") != std::string_view::npos)
        Throw(e.code(), std::string(e.what()) + " (-u " + o.names_file + " line " + std::to_string(name_lines[i]) + ")");
    throw;
  }
  if (!o.to.empty()) {
    if (o.timeout < 1) Throw(Errc::kInvalidArgument, "--timeout: at least 1 second");
    if (o.manifest) Throw(Errc::kInvalidArgument, "--manifest cannot be sent with --to (storemove verify checks remotely)");
    stream::net::ClientOptions client;
    client.credentials = o.credentials;
    client.timeout_seconds = o.timeout;
    // A folder lock held by a stopped process would outlast the server's session, which drops a
    // silent client: the wait ends here first, with the folder named and 75 (helper-66: it used
    // to end in "Broken pipe", 74, once the session was gone).
    store->set_folder_lock_wait(o.timeout);
    if (compression.adapt)
      Throw(Errc::kInvalidArgument, "--compress adapt: for -f only (a session with --to keeps one level)");
    client.compress_level = level;
    client.threads = o.threads;
    // The server's sessions are all busy: it says so (PROGRESS) for as long as the wait lasts,
    // which --timeout does not cut. Said once, so that the wait is not silence (helper-114).
    client.on_waiting_for_slot = [to = o.to] {
      std::fprintf(stderr, "storemove: backup: every session of %s is busy (its --max-sessions): waiting for one "
                           "to end (the server says it is waiting)\n", to.c_str());
    };
    stream::RestoreOptions remote;
    remote.allow_gap = o.allow_gap;
    stream::SessionReport report =
        stream::net::SendBackup(*store, options, stream::net::ParseEndpoint(o.to), client, remote);
    if (!since_note.empty()) report.notes.insert(report.notes.begin(), since_note);
    ReportSession(report, "backup", o.json);
    return report.errors ? ExitStatus(report.first_error.value_or(Errc::kCorrupt)) : 0;
  }
  BackupOutput out(o.file);
  stream::FdSink sink(out.fd(), out.shown());
  stream::SessionReport report;
  if (level > 0) {
    // A file or pipe is one-way: compression runs beside the reading of a store on a disk,
    // whose reads wait (zstd's own worker threads, --threads, replace that thread). A store in
    // memory never waits: there the thread would only cost its queue (~1.5 MiB) and hand-overs.
    // An adaptive level needs that thread: it watches the queue in front of it.
    const bool background = compression.adapt || (o.threads == 0 && !PathOnMemoryFilesystem(store->root()));
    std::optional<CpuIdleMeter> cpu;  // read by the compressing thread alone
    format::ZstdCompressSink::Adapt adapt;
    if (compression.adapt) {
      cpu.emplace();
      adapt.on = true;
      adapt.cpu_idle_share = [&cpu] { return cpu->IdleShareSinceLast(); };
    }
    format::ZstdCompressSink zsink(sink, level, o.threads, background, std::move(adapt));
    format::Encoder encoder(zsink);
    report = stream::Backup(*store, options, encoder);
    zsink.Finish();
    if (const format::AdaptiveLevel* adaptive = zsink.adaptive(); adaptive && o.verbose)
      std::fprintf(stderr, "storemove: backup: zstd levels %d to %d, %zu changes, ended at %d\n", adaptive->lowest(),
                   adaptive->highest(), adaptive->changes(), adaptive->level());
  } else {
    format::Encoder encoder(sink);
    report = stream::Backup(*store, options, encoder);
  }
  sink.Flush();
  report.stream_bytes = sink.bytes();
  const std::string written = out.Commit(report.errors == 0);
  if (!since_note.empty()) report.notes.insert(report.notes.begin(), since_note);
  ReportSession(report, "backup", o.json);
  if (report.errors && written != out.shown())
    std::fprintf(stderr, "storemove: backup: messages were left out (listed above); the stream is %s, and %s was left as it was\n",
                 written.c_str(), o.file.c_str());
  return report.errors ? ExitStatus(Errc::kCorrupt) : 0;
}

}  // namespace

void AddBackupCommand(CLI::App& root, Action* chosen) {
  auto o = std::make_shared<BackupCliOptions>();
  CLI::App* c = root.add_subcommand("backup", "write part of a store as a backup stream (imsbackup)");
  AddStoreOption(c, &o->store_dir);
  c->add_option("-f,--file", o->file, "output file, - for standard output")->type_name("FILE|-");
  c->add_option("--to", o->to, "send to a storemove serve instead, which restores it")->type_name("HOST:PORT");
  c->add_option("--key", o->credentials.key_file, "--to: pre-shared key file (storemove keygen)")->type_name("FILE");
  c->add_option("--cert", o->credentials.cert_file, "--to: client certificate (PEM)")->type_name("FILE");
  c->add_option("--cert-key", o->credentials.cert_key_file, "--to: its private key (PEM; mode 0600)")->type_name("FILE");
  c->add_option("--ca", o->credentials.ca_file, "--to: CA that signed the server's certificate")->type_name("FILE");
  c->add_flag("--insecure", o->credentials.insecure, "--to: plain TCP, no authentication (trusted links only)");
  c->add_option("--timeout", o->timeout, "--to: seconds without progress before giving up (default 60)");
  c->add_option("-u", o->names_file,
                "file listing the names to back up, one per line: names as above, or a user id alone (all of its "
                "mailboxes, as Sun's files of user names)")->type_name("FILE");
  CLI::Option* since = c->add_option("-d", o->since,
                                     "only messages stored at or after this local time (the earlier one in an hour the clocks "
                                     "repeat; refused when in the future, before 1970 or skipped by the clocks)")
                           ->type_name("YYYYMMDD[:HHMMSS]");
  c->add_option("--compress", o->compress, "zstd level 1-19, adapt (from level 1, lower while compressing holds the backup back, higher while the output does; "
                 "-f only, without --threads), "
                 "or none (default 1: with the 32 MiB long-distance window it already beats tar | zstd -3)")->type_name("LEVEL|adapt|none");
  c->add_option("--threads", o->threads, "zstd worker threads (default 0: compress in the main thread); each adds about 2 MiB of memory");
  c->add_option("--reads", o->reads, "message files opened at once, ahead of the stream, while the kernel reads their data (default 16)")
      ->check(CLI::Range(1, 1024));
  c->add_option("--groups", o->groups, "backup groups file (default STORE/config/backup-groups.conf)")->type_name("FILE");
  c->add_flag("--manifest", o->manifest, "write a manifest: every record but no message bodies (for verify)");
  c->add_flag("--allow-gap", o->allow_gap,
              "with --to and -d: the server restores into mailboxes that lack the earlier part of the dated chain "
              "without counting each an error (restore --allow-gap)");
  c->add_flag("-v,--verbose", o->verbose, "live progress on stderr even when it is not a terminal");
  c->add_flag("--json", o->json, "print the summary as JSON (on stderr)");
  c->add_option("names", o->names,
                "what to back up: /, /PARTITION, /PARTITION/GROUP, /PARTITION/GROUP/USER, or a mailbox "
                "user/USER/FOLDER (wildcards: * crosses levels, % does not; user/USER and user/% are INBOXes, user/* is every mailbox); default /");
  c->callback([o, chosen, since] {
    o->since_given = since->count() > 0;
    *chosen = [o] { return RunBackup(*o); };
  });
}

}  // namespace storemove::tools
