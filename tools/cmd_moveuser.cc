// storemove moveuser: Sun's MoveUser, pulling users' mailboxes from any IMAP server
// (stream/moveuser.h, docs/moveuser.md).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include <nlohmann/json.hpp>

#include "relinker/arrival.h"
#include "store/sync.h"
#include "stream/command_channel.h"
#include "stream/moveuser.h"
#include "tools/commands.h"
#include "util/error.h"
#include "util/interrupt.h"
#include "util/version.h"
#include "util/plural.h"

namespace storemove::tools {
namespace {

struct MoveUserCliOptions {
  std::string store_dir;
  stream::ImapSource source;
  std::string user, users_file, password_file, admin_password_file;
  int jobs = 1;
  bool hold = false;
  bool json = false;
};

// Folders appear only when complete and a rerun fetches only what is missing, so Ctrl-C or
// SIGTERM stops at once, with one line that says so.
void OnInterrupt(int) {
  static const char kLine[] =
      "storemove: moveuser interrupted; nothing half-pulled is visible: run the same moveuser again to complete it\n";
  (void)!::write(STDERR_FILENO, kLine, sizeof kLine - 1);
  stream::StopRunningCommands();  // --tunnel's, which need not be reading their input (helper-160)
  ::_exit(ExitStatus(Errc::kInterrupted));
}

nlohmann::json ToJson(const stream::MoveUserResult& r) {
  nlohmann::json j = {{"user", r.user},
                      {"folders", r.folders},
                      {"folders_created", r.folders_created},
                      {"folders_gone", r.folders_gone},
                      {"messages", r.messages},
                      {"bytes", r.bytes},
                      {"already_present", r.already_present},
                      {"flags_updated", r.flags_updated},
                      {"uid_conflicts", r.uid_conflicts},
                      {"lf_copies", r.lf_copies},
                      {"keywords_dropped", r.keywords_dropped},
                      {"left_on_hold", r.left_on_hold},
                      {"seconds", r.seconds}};
  if (!r.error.empty()) {
    j["error"] = r.error;
    j["permanent"] = r.permanent;
  }
  return j;
}

int RunMoveUser(MoveUserCliOptions& o) {
  OnStopSignals(OnInterrupt);
  const std::string& root = RequireStoreDir(o.store_dir);
  if (o.user.empty() == o.users_file.empty()) Throw(Errc::kInvalidArgument, "moveuser needs --user USER or --users FILE");
  const bool tunnel = !o.source.tunnel.empty();
  if (tunnel == !o.source.url.empty()) Throw(Errc::kInvalidArgument, "moveuser needs --from URL or --tunnel COMMAND");
  if (tunnel && (o.source.insecure || !o.source.ca_file.empty()))
    Throw(Errc::kInvalidArgument, "moveuser --tunnel speaks no TLS (the command is the link): --insecure and --ca-file "
                                  "do not apply");
  const bool admin = !o.source.admin.empty();
  if (admin != !o.admin_password_file.empty() || (admin && !o.password_file.empty()) ||
      (!tunnel && !admin && o.password_file.empty()))
    Throw(Errc::kInvalidArgument, std::string("moveuser needs --password-file FILE, or --admin USER with "
                                              "--admin-password-file FILE") +
                                      (tunnel ? " (or neither, for a command that logs in itself: PREAUTH)" : ""));
  if (admin) o.source.admin_password = stream::ReadPasswordFile(o.admin_password_file);
  const std::vector<stream::ImapAccount> accounts =
      stream::ReadAccounts(o.user, o.users_file, o.password_file, admin || o.password_file.empty());
  // A closed stdout (`moveuser ... | head`) is an error said at the end (CheckStdout), and a
  // tunnel's command that closed its input that user's failure: neither a silent death that
  // leaves a user on hold and the rest unpulled (helper-159: exit 141, nothing said).
  ::signal(SIGPIPE, SIG_IGN);
  if (tunnel) {
    stream::TunnelCommand(o.source.tunnel, "u");  // a bad '%' escape fails before the store is touched
    // One command for every user: were it to log in by itself, each would get the same mailbox.
    if (accounts.size() > 1 && stream::TunnelCommand(o.source.tunnel, "a") == stream::TunnelCommand(o.source.tunnel, "b"))
      Throw(Errc::kInvalidArgument, "moveuser --tunnel with --users: the command must name the user with %u");
  } else {
    stream::ParseImapUrl(o.source.url);  // a bad URL fails before the store is touched
  }

  // No fsync per file: one syncfs of the store's filesystems before success, as restore.
  auto store = store::Store::Open(
      root, {store::Durability::kNone,
             [](const std::string& why) { std::fprintf(stderr, "storemove moveuser: %s\n", why.c_str()); }});
  store::StoreSync sync(*store);  // opened before the first write (store/sync.h)
  stream::MoveUserOptions options;
  options.jobs = o.jobs;
  options.hold = o.hold;
  relinker::ArrivalLinker linker(*store);  // the store's local.store.relinker.* settings
  options.on_arrival = linker.Hook();
  if (const char* hook = std::getenv("STOREMOVE_TEST_BATCH_FD")) {
    // Test seam (tests/tools/moveuser_test.py): after each committed batch, say so on this
    // descriptor and wait for a byte back, so a test can kill the pull right there.
    const int fd = std::atoi(hook);
    options.after_batch = [fd](const std::string&, const std::string&, uint64_t) {
      char c = 'b';
      if (::write(fd, &c, 1) == 1) (void)!::read(fd, &c, 1);
    };
  }
  const bool json = o.json;
  options.on_user = [json](const stream::MoveUserResult& r) {
    if (json) return;
    if (!r.error.empty()) {
      std::fprintf(stderr, "storemove moveuser: %s: %s\n", r.user.c_str(), r.error.c_str());
      return;
    }
    std::printf("%s: %s (%llu new), %s, %s", r.user.c_str(), Counted(r.folders, "folder").c_str(),
                static_cast<unsigned long long>(r.folders_created), Counted(r.messages, "message").c_str(),
                HumanBytes(r.bytes).c_str());
    if (r.folders_gone)
      std::printf(", %s deleted at the source meanwhile (not pulled)", Counted(r.folders_gone, "folder").c_str());
    if (r.already_present) std::printf(", %llu already present", static_cast<unsigned long long>(r.already_present));
    if (r.flags_updated) std::printf(", %s updated", Counted(r.flags_updated, "flag").c_str());
    if (r.uid_conflicts)
      std::printf(", %llu under a UID taken here (kept apart)", static_cast<unsigned long long>(r.uid_conflicts));
    if (r.lf_copies)
      std::printf(", %llu here already with the LF line ends of the server's files",
                  static_cast<unsigned long long>(r.lf_copies));
    if (r.keywords_dropped)
      std::printf(", %s dropped (64 per folder)", Counted(r.keywords_dropped, "keyword").c_str());
    if (r.left_on_hold) std::printf(", left on hold (held by someone else, not by a pull)");
    std::printf(", %.2f s\n", r.seconds);
    std::fflush(stdout);
  };
  const stream::MoveUserReport report = stream::MoveUsers(*store, o.source, accounts, options);
  sync.Sync();
  if (o.json) {
    nlohmann::json users = nlohmann::json::array();
    for (const stream::MoveUserResult& r : report.users) users.push_back(ToJson(r));
    nlohmann::json out = {{"source", tunnel ? "tunnel " + o.source.tunnel : o.source.url}, {"users", users},     {"failed", report.failed},
                          {"failed_permanently", report.failed_permanently},
                          {"messages", report.messages}, {"bytes", report.bytes}, {"seconds", report.seconds},
                          {"storemove_version", Version()}};
    if (linker.enabled()) out["arrival_links"] = linker.counters().linked;
    std::printf("%s\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    if (linker.enabled()) std::printf("single instance on arrival: %s\n", linker.counters().ToString().c_str());
    const std::string permanent =
        report.failed_permanently == 0
            ? ""
            : ", " + std::to_string(report.failed_permanently) +
                  " of them until changed: credentials, a name or a reply at the source, or the user's status here "
                  "(each user's line says which)";
    std::printf("moveuser: %s (%llu failed%s), %s, %s in %.2f s\n", Counted(report.users.size(), "user").c_str(),
                static_cast<unsigned long long>(report.failed), permanent.c_str(),
                Counted(report.messages, "message").c_str(), HumanBytes(report.bytes).c_str(), report.seconds);
  }
  // 75 while a rerun may finish the job; 65 when only somebody's change at the source or in the
  // password file can, so that a retry loop around moveuser does not spin for ever.
  if (report.failed > report.failed_permanently) return ExitStatus(Errc::kTempFail);
  return report.failed ? ExitStatus(Errc::kCorrupt) : 0;
}

}  // namespace

void AddMoveUserCommand(CLI::App& root, Action* chosen) {
  auto o = std::make_shared<MoveUserCliOptions>();
  CLI::App* command = root.add_subcommand(
      "moveuser",
      "pull users' mailboxes from an IMAP server into the store (MoveUser)\n"
      "  --from imap://HOST[:PORT]   STARTTLS (certificate checked), or imaps://HOST[:PORT]\n"
      "  --user USER --password-file F            one user, F's first line is the password\n"
      "  --users FILE --password-file F           user ids, one per line; F holds USER<TAB>PASSWORD lines\n"
      "  --admin ADMIN --admin-password-file F    log in as ADMIN acting for each user (SASL PLAIN authzid)\n"
      "  --tunnel 'doveadm exec imap -u %u'       instead of --from: a command speaking IMAP on stdin/stdout,\n"
      "                                           logged in already (PREAUTH), so no password is needed\n"
      "Every folder, message (bytes as the server sends them), flag, keyword, internal date and subscription.\n"
      "A new folder appears only when complete, with the source's UIDVALIDITY and UIDs; a rerun fetches only\n"
      "what is missing. Exit 0 = every user complete and on disk; 75 = a user failed, a rerun may finish it;\n"
      "65 = every failed user needs a change first (credentials refused, a folder name the store cannot take, a user\n"
      "marked moved here); 77 = a password file others may read or another user owns (chmod 600, chown), or in a\n"
      "directory others may write to (chmod go-w);\n"
      "64 = a bad option or file.");
  AddStoreOption(command, &o->store_dir);
  command->add_option("--from", o->source.url, "the IMAP server: imap://HOST[:PORT] or imaps://HOST[:PORT]")
      ->type_name("URL");
  command->add_option("--tunnel", o->source.tunnel,
                      "instead of --from: a shell command whose stdin and stdout speak IMAP, run once per user, %u the "
                      "user id (e.g. 'doveadm exec imap -u %u', 'ssh old /usr/lib/dovecot/imap -u %u')")
      ->type_name("COMMAND");
  command->add_option("--user", o->user, "the user to pull (the same id in the store)")->type_name("USER");
  command->add_option("--users", o->users_file, "file of user ids, one per line")->type_name("FILE");
  command->add_option("--password-file", o->password_file, "the user's password, or USER<TAB>PASSWORD lines (mode 0600)")
      ->type_name("FILE");
  command->add_option("--admin", o->source.admin, "administrator (Dovecot master user, Cyrus admin) acting for each user")
      ->type_name("USER");
  command->add_option("--admin-password-file", o->admin_password_file, "the administrator's password (mode 0600)")
      ->type_name("FILE");
  command->add_option("--ca-file", o->source.ca_file, "trust the CAs in this PEM file instead of the system's")
      ->type_name("FILE");
  command->add_flag("--insecure", o->source.insecure, "imap:// without STARTTLS: passwords in plain text (trusted links only)");
  command->add_option("-j,--jobs", o->jobs, "users pulled at once (default 1)")->check(CLI::Range(1, 256));
  command->add_option("--timeout", o->source.timeout_seconds, "seconds without progress (a read, a write, or an answer to the command) before a user fails (default 60)")
      ->check(CLI::Range(1, 86400));
  command->add_flag("--allow-size-mismatch", o->source.allow_size_mismatch,
                    "store a body whose length is not its RFC822.SIZE as sent (Exchange), instead of refusing it");
  command->add_flag("--hold", o->hold, "set each destination user on hold during its pull and active after; a user on hold that no pull held (by "
                   "hand, a migration's copy) stays on hold (its line says \"left on hold\")");
  command->add_flag("--json", o->json, "print the report as JSON");
  command->callback([o, chosen] { *chosen = [o] { return RunMoveUser(*o); }; });
}

}  // namespace storemove::tools
