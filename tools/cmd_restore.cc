// storemove restore: imsrestore. Applies a backup stream (zstd or plain, detected) to a store.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include <iostream>
#include <optional>

#include "format/zstd_codec.h"
#include "store/sync.h"
#include "stream/transport.h"
#include "tools/commands.h"
#include "tools/session_io.h"
#include "util/error.h"
#include "util/interrupt.h"

namespace storemove::tools {
namespace {

struct RestoreCliOptions {
  std::string store_dir;
  std::string file;
  std::string answer;
  bool skip_check = false;
  std::string map_file;
  bool rename_existing = false;
  bool keep_status = false;
  bool allow_gap = false;
  bool toc = false;
  bool verbose = false;
  bool json = false;
  std::string partition;
  int timeout = 0;  // seconds without input before giving up; 0 = wait
  std::vector<std::string> names;  // imsrestore's [path]: only these users and mailboxes
  std::string groups_file;
};

// A restore may stop at any point: what it committed is complete, nothing half-restored is
// visible, and a rerun completes it (as after kill -9). So Ctrl-C or SIGTERM stops it at once,
// with one line that says so, instead of a silent death.
void OnInterrupt(int) {
  static const char kLine[] =
      "storemove: restore interrupted; nothing half-restored is visible: run the same restore again to complete it\n";
  (void)!::write(STDERR_FILENO, kLine, sizeof kLine - 1);
  ::_exit(ExitStatus(Errc::kInterrupted));
}

// `restore -t` only lists the stream: there is nothing to complete (helper-57).
void OnListingInterrupt(int) {
  static const char kLine[] = "storemove: restore -t interrupted; the listing is incomplete (nothing was written)\n";
  (void)!::write(STDERR_FILENO, kLine, sizeof kLine - 1);
  ::_exit(ExitStatus(Errc::kInterrupted));
}

int RunRestore(const RestoreCliOptions& o) {
  OnStopSignals(o.toc ? OnListingInterrupt : OnInterrupt);
  stream::RestoreOptions options;
  options.table_of_contents = o.toc;
  options.skip_existing_check = o.skip_check;
  options.rename_existing = o.rename_existing;
  options.keep_status = o.keep_status;
  options.allow_gap = o.allow_gap;
  if (!o.map_file.empty()) options.user_map = stream::ReadUserMap(o.map_file);
  options.partition = o.partition;
  if (!o.answer.empty() && o.answer != "y" && o.answer != "n") Throw(Errc::kInvalidArgument, "-c: answer y or n");
  options.continue_on_error = o.answer == "y";
  options.live_progress = !o.toc && (o.verbose || ::isatty(STDERR_FILENO));
  options.on_wait = [](const std::string& why) { std::fprintf(stderr, "storemove restore: %s\n", why.c_str()); };
  options.names = o.names;

  std::unique_ptr<store::Store> store;
  std::optional<store::StoreSync> sync;  // opened before the first write (store/sync.h)
  if (!o.toc) {
    store = OpenStore(o.store_dir);
    if (!o.partition.empty() && !IsDirectory(store->PartitionPath(o.partition) + "/=user"))
      Throw(Errc::kNotFound, "--partition: no partition '" + o.partition + "' in " + store->root());
    sync.emplace(*store);
  }
  // /partition/group names: the groups of --groups, else of the destination store (a fleet shares one file).
  if (!o.names.empty()) {
    std::string groups = o.groups_file;
    if (groups.empty() && store) groups = store->root() + "/config/backup-groups.conf";
    if (!groups.empty()) options.groups = stream::ReadBackupGroups(groups);
    options.groups_file = groups;
  }
  UniqueFd fd = stream::OpenInput(o.file);
  options.toc_json = o.json;
  options.left_out_marks = true;  // a file or pipe: a summary there marks messages its backup left out
  InputProgress(fd.get(), &options.input_total, &options.input_consumed);
  // A stalled writer (a hung ssh link) is said after a minute, or half --timeout, and ends the
  // restore at --timeout: meanwhile the user being written stays locked (helper-66).
  stream::FdSource source(
      fd.get(), o.file == "-" ? "standard input" : o.file,
      PipeStallPolicy("restore", o.timeout, o.toc ? "" : "; the user being restored stays locked for writing meanwhile"));
  format::DecompressingSource input(source, /*worker=*/true);  // a one-way file or pipe
  // The share of the file restored: what the decoder has had, not what was read ahead of it.
  if (options.input_consumed) options.input_consumed = [&input] { return input.input_delivered(); };
  format::Decoder decoder(input);
  stream::SessionReport report = NamingInput(source.name(), [&] {
    return stream::Restore(store.get(), decoder, options, o.toc ? &std::cout : nullptr);
  });
  report.stream_bytes = source.bytes();
  if (store) {
    // One syncfs per session instead of an fsync per file: when restore reports success the
    // restored messages are on stable storage (docs/store-format.md §6.6), partitions mounted
    // elsewhere included.
    sync->Sync();
  }
  ReportSession(report, o.toc ? "toc" : "restore", o.json);
  return report.errors ? ExitStatus(report.first_error.value_or(Errc::kCorrupt)) : 0;
}

}  // namespace

void AddRestoreCommand(CLI::App& root, Action* chosen) {
  auto o = std::make_shared<RestoreCliOptions>();
  CLI::App* c = root.add_subcommand("restore", "apply a backup stream to a store (imsrestore)");
  AddStoreOption(c, &o->store_dir);
  c->add_option("-f,--file", o->file, "input file, - for standard input")->required()->type_name("FILE|-");
  c->add_option("-c", o->answer, "answer to 'continue?' after a folder fails: y skips it and goes on, n stops (default)")
      ->type_name("y|n");
  c->add_flag("-i", o->skip_check, "do not check for messages already present: append everything with new UIDs");
  c->add_option("-m", o->map_file, "rename users: file of old=new lines (a map that would merge two users into one is refused)")->type_name("MAPFILE");
  c->add_flag("-n", o->rename_existing, "restore into MAILBOX.YYYYMMDD when the mailbox exists (MAILBOX.YYYYMMDD-2, -3 ... when that is taken)");
  c->add_flag("--keep-status", o->keep_status,
              "give users the status the stream carries (hold, moved:HOST); default: new users are active, or "
              "moved:HOST when the stream says so, and existing users keep theirs");
  c->add_flag("--allow-gap", o->allow_gap,
              "restore a dated (-d) stream into mailboxes that lack the earlier part of its chain without counting "
              "each such mailbox an error (exit 66)");
  c->add_flag("-t", o->toc,
              "print the table of contents (dates in ISO 8601 UTC; with --json as JSON Lines); write nothing");
  c->add_option("--partition", o->partition, "partition for users that do not exist yet")->type_name("NAME");
  c->add_flag("-v,--verbose", o->verbose,
              "live progress on stderr even when it is not a terminal (rate; ETA when the input is a regular file)");
  c->add_flag("--json", o->json, "print the summary as JSON (on stderr)");
  AddStallTimeoutOption(c, &o->timeout, "a pipe (-f -)");
  c->add_option("names", o->names,
                "restore only these users and mailboxes of the stream, named as there (before -m): user/joe/Sent, "
                "user/joe (the INBOX), user/joe/* (all of joe's), user/*, /partition[/group[/user]] (default: all; a name that selects nothing: exit 66)");
  c->add_option("--groups", o->groups_file,
                "backup groups file for /partition/group names (default: the store's config/backup-groups.conf)")
      ->type_name("FILE");
  c->callback([o, chosen] { *chosen = [o] { return RunRestore(*o); }; });
}

}  // namespace storemove::tools
