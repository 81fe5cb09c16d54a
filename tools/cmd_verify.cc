// storemove verify: proves a destination store holds what the source holds, either by opening
// both stores (--source) or against a manifest stream from the source host (--manifest).
#include <unistd.h>

#include <cstdio>

#include "format/zstd_codec.h"
#include "store/admin.h"
#include "stream/stream.h"
#include "stream/transport.h"
#include "tools/commands.h"
#include "tools/session_io.h"
#include "util/error.h"
#include "util/interrupt.h"
#include "util/plural.h"
#include "util/record_spool.h"

namespace storemove::tools {
namespace {

// Lines printed about single messages of one mailbox (all with --all-differences): a badly damaged
// store's thousands of them flooded the terminal and hid the other differences.
constexpr size_t kDifferencesPerMailbox = 20;

// A user compared whole and its fingerprint from before the comparison, as spooled.
struct VerifiedUser {
  std::string user;
  store::UserFingerprint fingerprint;

  static std::string Encode(const std::string& user, const store::UserFingerprint& f) {
    std::string out;
    store::AppendFingerprint(&out, f);
    return out + user;
  }
  static VerifiedUser Decode(std::string_view record) {
    if (record.size() < store::kFingerprintSize)
      Throw(Errc::kCorrupt, "verify: a user record read back from its temporary file is short");
    return {std::string(record.substr(store::kFingerprintSize)),
            store::ReadFingerprint(reinterpret_cast<const uint8_t*>(record.data()))};
  }
};

struct VerifyCliOptions {
  std::string store_dir;
  std::string source_dir;
  std::string manifest;
  bool json = false;
  bool no_bytes = false;
  bool strict_status = false;
  bool all_differences = false;
  bool verbose = false;
  size_t reads = 0;
  std::vector<std::string> names;
};

int RunVerify(const VerifyCliOptions& o) {
  StopAtSafePointOnSignal();  // a signal unwinds: the environment is closed (util/interrupt.h)
  if (o.source_dir.empty() == o.manifest.empty())
    Throw(Errc::kInvalidArgument, "verify: give exactly one of --source DIR or --manifest FILE|-");
  if (!o.source_dir.empty()) stream::RefuseSameStore(RequireStoreDir(o.store_dir), o.source_dir);
  auto destination = OpenStore(o.store_dir);
  stream::VerifyOptions options;
  if (!o.names.empty()) options.names = o.names;
  options.check_bytes = !o.no_bytes;
  options.strict_status = o.strict_status;
  options.reads = o.reads;
  // What Listing prints of each mailbox is all that is kept (JSON lists every difference).
  options.differences_kept_per_mailbox = o.json || o.all_differences ? 0 : kDifferencesPerMailbox;
  options.live_progress = o.verbose || ::isatty(STDERR_FILENO);
  stream::VerifyReport report;
  if (!o.source_dir.empty()) {
    auto source = OpenStore(o.source_dir);  // waits said on stderr
    // Each user's fingerprint is taken before its comparison, so that one that changes meanwhile
    // is not recorded. Those compared whole wait in a spool (memory, then a temporary file) for
    // the end: they are recorded only if the whole run is equal.
    RecordSpool compared_whole(1 << 20);
    std::string fingerprinted;
    store::UserFingerprint fingerprint;
    if (!o.no_bytes) {  // which records nothing
      options.before_user = [&](const std::string& user) {
        fingerprinted.clear();
        try {
          fingerprint = store::FingerprintUser(*source, user);
          fingerprinted = user;
        } catch (const Error& e) {
          // A folder deleted or renamed as it was read: the user is changing, so it is not
          // recorded; the comparison says what it finds.
          if (e.code() != Errc::kNotFound && e.code() != Errc::kTempFail) throw;
        }
      };
      options.compared_whole = [&](const std::string& user) {
        if (user == fingerprinted) compared_whole.Append(VerifiedUser::Encode(user, fingerprint));
      };
    }
    // A user whose mail this run finds not all at the destination loses its verification record
    // at once (an interrupted run has removed it too): an earlier verify, of this destination or
    // another, no longer lets `storemove delete` remove the source's copy (helper-169).
    std::string last_unproven;
    uint64_t forgotten = 0;
    options.unproven = [&](const std::string& user) {
      if (user == last_unproven) return;  // a user's differences come together, but for the byte checks
      last_unproven = user;
      try {
        if (store::ForgetVerified(*source, user)) ++forgotten;
      } catch (const Error& e) {
        std::fprintf(stderr, "storemove: verify: user %s was verified before and differs now, but its record stays: %s\n",
                     user.c_str(), e.what());
      }
    };
    report = stream::CompareStores(*destination, *source, options);
    if (forgotten)
      std::fprintf(stderr,
                   "verify: %s verified before (by verify or migrate) no longer %s: %s mail is not all at %s; "
                   "storemove delete refuses %s until a verify finds %s equal (or --force)\n",
                   Counted(forgotten, "user").c_str(), forgotten == 1 ? "counts as verified" : "count as verified",
                   forgotten == 1 ? "its" : "their", destination->root().c_str(), forgotten == 1 ? "it" : "them",
                   forgotten == 1 ? "it" : "them");
    if (report.equal() && !o.no_bytes) {
      // Recorded in the source, which guards `storemove delete` of these users: only users whose
      // every folder was compared (a verify of one mailbox proves nothing about the others).
      RecordSpool::Reader reader(compared_whole, 0, compared_whole.end());
      for (std::string_view record; reader.Next(&record);) {
        const VerifiedUser v = VerifiedUser::Decode(record);
        try {
          store::RecordVerified(*source, v.user, destination->root(), v.fingerprint);
        } catch (const Error& e) {
          std::fprintf(stderr, "storemove: verify: %s\n", e.what());
        }
      }
    }
  } else {
    if (!o.names.empty()) Throw(Errc::kInvalidArgument, "verify: with --manifest the manifest decides what is checked");
    UniqueFd fd = stream::OpenInput(o.manifest);
    InputProgress(fd.get(), &options.input_total, &options.input_consumed);
    stream::FdSource source(fd.get(), o.manifest == "-" ? "standard input" : o.manifest);
    format::DecompressingSource input(source, /*worker=*/true);  // a one-way file or pipe
    if (options.input_consumed) options.input_consumed = [&input] { return input.input_delivered(); };
    format::Decoder decoder(input);
    report = NamingInput(source.name(), [&] { return stream::VerifyManifest(*destination, decoder, options); });
  }
  if (o.json) {
    std::printf("%s\n", report.Json().c_str());
  } else {
    for (const std::string& line : report.Listing(o.all_differences ? 0 : kDifferencesPerMailbox))
      std::printf("%s\n", line.c_str());
    std::fprintf(stderr, "verify: %s, %s, %s (%s) checked: %s\n", Counted(report.users, "user").c_str(),
                 Counted(report.folders, "folder").c_str(), Counted(report.messages, "message").c_str(),
                 HumanBytes(report.bytes).c_str(),
                 report.equal() ? "equal" : Counted(report.difference_count(), "difference").c_str());
    // After a migration's switch the destination is live: its new mail is "not in the source"
    // (helper-69 asked for the hint).
    if (!report.equal() && report.switched_users)
      std::fprintf(stderr,
                   "verify: note: %llu of the users compared are moved at the source (switched): mail delivered, "
                   "flags changed and messages expunged at the destination since their switch are listed too; "
                   "a verify before they are served proves the copy\n",
                   (unsigned long long)report.switched_users);
  }
  return report.equal() ? 0 : 1;
}

}  // namespace

void AddVerifyCommand(CLI::App& root, Action* chosen) {
  auto o = std::make_shared<VerifyCliOptions>();
  CLI::App* c = root.add_subcommand("verify", "check that a destination store holds exactly what the source holds");
  AddStoreOption(c, &o->store_dir);
  c->add_option("--source", o->source_dir, "the source store, opened directly")->type_name("DIR");
  c->add_option("--manifest", o->manifest, "a manifest stream from `backup --manifest` (- for stdin)")->type_name("FILE|-");
  c->add_flag("--json", o->json, "print the result as JSON");
  c->add_flag("-v,--verbose", o->verbose,
              "live progress on stderr even when it is not a terminal (ETA from the source's bytes, or the "
              "manifest file's size)");
  c->add_option("--reads", o->reads, "destination message files opened at once, while the kernel reads their data (default 16)")
      ->check(CLI::Range(1, 1024));
  c->add_flag("--no-bytes", o->no_bytes, "compare index records only; do not re-read destination messages (records nobody as verified)");
  c->add_flag("--strict-status", o->strict_status,
              "compare user statuses exactly (by default a destination user that is active while the source has "
              "it on hold or moved:HOST, as a migration leaves it, is not a difference)");
  c->add_flag("--all-differences", o->all_differences,
              "print every difference (by default at most 20 lines about single messages per mailbox, then one "
              "\"... and N more differences in MAILBOX\" line; --json lists them all)");
  c->add_option("names", o->names, "with --source: what to compare, as for backup (default /)");
  c->callback([o, chosen] { *chosen = [o] { return RunVerify(*o); }; });
}

}  // namespace storemove::tools
