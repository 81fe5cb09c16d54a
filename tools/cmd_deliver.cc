// storemove deliver: the ims-ms channel's final delivery of one message from stdin.
//
// Exit statuses are what an MTA's program mailer expects (sysexits):
//   0  delivered and durable (files, store.idx and mboxlist synced before exit; when a call
//      after the commit is stuck on a process that died, the message file and store.idx are
//      synced and the quota update may be left short, which RecomputeQuota corrects)
//   67 EX_NOUSER    unknown user (without --create): the MTA bounces
//   75 EX_TEMPFAIL  user on hold, user moved to another host, over quota, or without its INBOX
//                   yet (a restore or import of the user not finished): the MTA queues the
//                   message and retries; for "moved" it re-resolves mailHost first, so the
//                   message names the new host ("user X has moved to HOST").
//   66 EX_NOINPUT   the folder does not exist (without --create)
//   64 EX_USAGE     bad user or folder name, bad --flags or --date
// Those four are the only final answers. Anything else that goes wrong (a full disk, an I/O
// error, a damaged store.idx, a broken STORE/config/store.conf, the database) is 75 too: an MTA
// bounces on 74, 65 or 70, and the mail must wait in its queue while the administrator repairs.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <vector>

#include "relinker/arrival.h"
#include "store/mboxlist.h"
#include "store/settings.h"
#include "tools/commands.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/wait_budget.h"

namespace storemove::tools {
namespace {

struct DeliverOptions {
  std::string store_dir;
  std::string user;
  std::string folder = "INBOX";
  std::string flags;
  std::string date;
  bool create = false;
  bool verbose = false;
  // A folder lock held this long (a stopped process, a partition move copying the folder) ends
  // the delivery with 75, so the MTA retries later instead of waiting without limit (helper-66).
  int lock_wait = 300;
};

// Throws the temporary failure an MTA retries when the user may not receive mail now.
void CheckAcceptsMail(const store::UserInfo& user) {
  switch (user.status.state) {
    case store::UserState::kActive:
      return;
    case store::UserState::kHold:
      Throw(Errc::kTempFail, "user " + user.user + " is on hold; delivery deferred");
    case store::UserState::kMoved:
      Throw(Errc::kTempFail, "user " + user.user + " has moved to " + user.status.host + "; delivery deferred");
  }
}

// A final answer for the MTA (bounce): the only errors RunDeliver lets through as they are.
class Refusal : public Error {
 public:
  using Error::Error;
};

[[noreturn]] void Refuse(Errc code, const std::string& message) { throw Refusal(code, message); }

// A crash is never a delivery's answer: an MTA bounces a command killed by a signal (Exim's
// pipe transport by default), and one was seen inside libdb, attaching to an environment
// another process was recovering (helper-131: 67 SIGSEGVs in ~1,000 deliveries killed at
// random around them). Before the commit the message is not stored: 75, the MTA retries; after
// it, it is, and 0 keeps the MTA from delivering it twice (as the store's guard does).
extern "C" void DeliveryCrashed(int) {
  const bool committed = store::Store::Db::Committed();
  const char* text = committed ? "storemove deliver: warning: crashed after the message was committed (exit 0)\n"
                               : "storemove deliver: crashed (a fault inside the process, e.g. in libdb while another "
                                 "process recovered the database environment); delivery deferred (exit 75)\n";
  (void)!::write(STDERR_FILENO, text, std::strlen(text));
  ::_exit(committed ? 0 : 75);
}

void AnswerCrashesAsDeferrals() {
  // Its own stack, so that a stack overflow is answered too (helper-135).
  static char alternate_stack[64 << 10];
  stack_t stack{};
  stack.ss_sp = alternate_stack;
  stack.ss_size = sizeof alternate_stack;
  ::sigaltstack(&stack, nullptr);
  struct sigaction action {};
  action.sa_handler = DeliveryCrashed;
  action.sa_flags = SA_RESETHAND | SA_ONSTACK;  // a fault inside the handler ends the process as before
  ::sigemptyset(&action.sa_mask);
  for (const int signal : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) ::sigaction(signal, &action, nullptr);
}

int DeliverOnce(const DeliverOptions& options) {
  uint8_t flags = 0;
  int64_t internal_date = 0;
  const int64_t now = UnixNow();
  // --lock-wait bounds the waits together (folder locks, the user's delivery gate), so an MTA's
  // delivery agent returns within it, not once per lock (helper-145). The time stdin takes to
  // arrive is not a wait (helper-148).
  const auto started = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration reading{};
  auto wait_left = [&] { return SecondsLeft(options.lock_wait, std::chrono::steady_clock::now() - started - reading); };
  try {
    store::ValidateUserId(options.user);
    store::ValidateFolderName(options.folder);
    if (!options.flags.empty()) flags = store::ParseFlagNames(options.flags);
    internal_date = options.date.empty() ? now : ParseTime(options.date, "--date");
  } catch (const Error& e) {
    Refuse(e.code(), e.what());
  }
  const std::string& root = RequireStoreDir(options.store_dir);
  // Stuck after the commit (the quota update, the close, on a mutex of a process that died), the
  // store's guard ends this process with 0: the MTA must not deliver the message a second time.
  store::Store::Db::EndWithSuccessOnceCommitted();
  AnswerCrashesAsDeferrals();

  // A wait that lasts (a folder being moved, a stopped process) goes to the MTA's log once.
  auto tell = [](const std::string& why) { std::fprintf(stderr, "storemove deliver: %s\n", why.c_str()); };
  auto store = store::Store::Open(root, {store::Durability::kBatch, tell, options.lock_wait});
  store::Settings settings;
  try {
    settings = store::ReadSettings(*store);
  } catch (const Error& e) {
    Throw(Errc::kTempFail, std::string(e.what()) + "; delivery deferred");
  }
  // Single instance on arrival (local.store.relinker.enabled): identical content becomes a hard
  // link to the partition's repository entry, bytes proven equal first.
  relinker::ArrivalLinker linker(*store, settings);
  if (std::optional<store::UserInfo> user = store->FindUser(options.user)) {
    CheckAcceptsMail(*user);
  } else if (options.create) {
    store->CreateUser(options.user);  // with its INBOX, as every account has one
  } else {
    Refuse(Errc::kNoUser, "user " + options.user + " does not exist (deliver --create creates it)");
  }
  std::unique_ptr<store::Folder> folder;
  if (options.create) {
    folder = store->CreateFolder(options.user, options.folder);
  } else if (store->FindFolder(options.user, options.folder)) {
    try {
      folder = store->OpenFolder(options.user, options.folder);
    } catch (const Error& e) {  // renamed or deleted since it was found: try again, never bounce
      if (e.code() != Errc::kNotFound) throw;
      Throw(Errc::kTempFail, std::string(e.what()) + " (renamed or deleted meanwhile; try again)");
    }
  } else if (store::NormalizeFolder(options.folder) == "INBOX") {
    // A user without an INBOX is being built by a restore or an import (its INBOX is published
    // whole at the end), or such a run stopped and its rerun finishes it, or a restore brought
    // other mailboxes of the user only: mail waits in the MTA's queue rather than bouncing, and
    // the message says what makes the INBOX.
    Throw(Errc::kTempFail, "mailbox user/" + options.user +
                               "/INBOX does not exist yet (a restore or import of the user has not finished: its "
                               "rerun makes it; or a restore brought other mailboxes only: deliver --create makes "
                               "an empty one); retry later");
  } else {
    Refuse(Errc::kNotFound, "mailbox user/" + options.user + "/" + options.folder +
                                " does not exist (deliver --create creates it)");
  }
  const std::string mailbox = folder->Mailbox();

  // Streamed straight into the staged file: a message of any size needs only this buffer.
  std::unique_ptr<store::MessageWriter> writer = folder->NewMessage();
  std::vector<char> buffer(1 << 16);
  uint64_t received = 0;
  // A first line "From SENDER DATE" is the mbox envelope line an MTA puts before the message
  // (Postfix's local(8) for mailbox_command, its pipe(8) with flags=F, procmail), not part of
  // it: no header line begins so. It became the message's first header line (helper-131).
  size_t held = 0;  // bytes at buffer's start not yet known to be past that line
  bool first_line_done = false;
  const auto read_started = std::chrono::steady_clock::now();
  for (;;) {
    size_t n = ReadSome(0, buffer.data() + held, buffer.size() - held, "stdin");
    if (!first_line_done) {
      held += n;
      const std::string_view head(buffer.data(), held);
      const size_t newline = head.find('\n');
      const bool envelope = head.starts_with("From ");
      const bool could_be = held < 5 && std::string_view("From ").starts_with(head);
      if (n != 0 && newline == std::string_view::npos && held < buffer.size() && (envelope || could_be)) continue;
      first_line_done = true;
      // Whatever follows "From ": an MTA's message always has a header (Received: at least),
      // and pipelines write the line without a date too ("From sender", helper-137).
      const size_t skip = envelope && newline != std::string_view::npos ? newline + 1 : 0;
      n = held - skip;
      if (n != 0) std::memmove(buffer.data(), buffer.data() + skip, n);
      held = 0;
      if (n == 0) continue;
    }
    if (n == 0) break;
    writer->Write(buffer.data(), n);
    received += n;
  }
  if (received == 0) Refuse(Errc::kCorrupt, "stdin: empty message; nothing delivered to " + mailbox);
  reading = std::chrono::steady_clock::now() - read_started;

  store::MessageMeta meta;
  meta.flags = flags;
  meta.internal_date = internal_date;  // the save time is the commit's (Folder::Commit)
  std::vector<store::StagedMessage> batch;
  // Staged files not committed are removed whatever fails before the commit: the gate or the
  // user's record (a Berkeley DB panic left tmp.PID.TOKEN in the folder until relink's hour;
  // helper-71). Commit and Discard empty the batch.
  struct DiscardUnlessCommitted {
    store::Folder& folder;
    std::vector<store::StagedMessage>& batch;
    ~DiscardUnlessCommitted() {
      if (batch.empty()) return;
      try {
        folder.Discard(batch);
      } catch (...) {  // the failure already being reported matters more
      }
    }
  } discard_unless_committed{*folder, batch};
  store::StagedMessage staged = writer->Finish(meta);
  try {
    batch.push_back(linker.Arrived(*folder, staged));
  } catch (const Error& e) {
    // Linking only saves space: a repository it cannot use (damage, a planted symlink) must not
    // bounce or delay mail. The copy is delivered and the reason logged through the MTA.
    std::fprintf(stderr, "storemove deliver: warning: delivering a copy, not linked: %s\n", e.what());
    batch.push_back(staged);
  }

  // Status check and commit under the user's delivery gate: a migration that sets `hold` waits
  // for this delivery to finish, and a delivery that starts later sees `hold`.
  // Held exclusively for moments (a status change, a recount); by a migration stopped in its
  // switch, for as long as it stays stopped: then deferred, as a locked folder is.
  store::Store::LockWait gate_wait;
  gate_wait.on_wait = tell;
  gate_wait.timeout_seconds = wait_left();
  store::Store::UserGate gate = store->LockUserForDelivery(options.user, gate_wait);
  store->set_folder_lock_wait(wait_left());  // Commit's folder lock: what is left of --lock-wait
  std::optional<store::UserInfo> user = store->FindUser(options.user);
  if (user) {
    try {
      CheckAcceptsMail(*user);
    } catch (...) {
      folder->Discard(batch);
      throw;
    }
  }
  // Quota is soft, as in Sun's store: checked against the usage before this message.
  if (user && user->quota_limit != 0 && user->quota_used + received > user->quota_limit) {
    folder->Discard(batch);
    Throw(Errc::kTempFail, "user " + options.user + " is over quota (" + std::to_string(user->quota_used) + " + " +
                               std::to_string(received) + " > " + std::to_string(user->quota_limit) +
                               " bytes); delivery deferred");
  }
  std::vector<uint32_t> uids;
  try {
    uids = folder->Commit(batch);
  } catch (const Error& e) {
    // Every name and option was checked above: what Commit refuses now is the mailbox's state
    // (its UIDs used up), which an administrator repairs. 64 would make the MTA bounce the mail.
    if (e.code() != Errc::kInvalidArgument) throw;
    Throw(Errc::kTempFail, std::string(e.what()) + "; delivery deferred");
  }
  if (options.verbose) {
    // The message is delivered and durable: a line that cannot be written (a closed or full
    // stdout) is warned about, never a failure, which the MTA would retry as a duplicate or
    // bounce (helper-123: exit 74 after the delivery).
    char line[1024];
    const int n = std::snprintf(line, sizeof line, "delivered %llu bytes to %s uid %u%s\n",
                                static_cast<unsigned long long>(received), mailbox.c_str(), uids.at(0),
                                linker.counters().linked ? " (a link to identical content)" : "");
    const size_t size = std::min(sizeof line - 1, size_t(std::max(n, 0)));
    ::signal(SIGPIPE, SIG_IGN);  // a closed pipe is EPIPE here, not a death after the delivery
    try {
      WriteAll(STDOUT_FILENO, line, size, "stdout");
    } catch (const Error& e) {
      std::fprintf(stderr, "storemove deliver: warning: delivered as uid %u, but -v could not print it: %s\n",
                   uids.at(0), e.what());
    }
  }
  return 0;
}

int RunDeliver(const DeliverOptions& options) {
  try {
    return DeliverOnce(options);
  } catch (const Refusal&) {
    throw;
  } catch (const Error& e) {
    // Whatever fails once the message is committed (its index append, the commit point) is not
    // the delivery's answer: 75 would make the MTA deliver it twice.
    if (store::Store::Db::Committed()) {
      std::fprintf(stderr, "storemove deliver: warning: delivered; then: %s (the user's quota usage may be short: "
                           "storemove user %s --recount-quota)\n",
                   e.what(), options.user.c_str());
      return 0;
    }
    if (e.code() == Errc::kTempFail || e.code() == Errc::kInterrupted) throw;
    Throw(Errc::kTempFail, std::string(e.what()) + "; delivery deferred");
  } catch (const std::bad_alloc&) {
    if (store::Store::Db::Committed()) {  // as any error after the commit point (helper-160)
      std::fprintf(stderr, "storemove deliver: warning: delivered; then ran out of memory (the user's quota usage may "
                           "be short: storemove user %s --recount-quota)\n",
                   options.user.c_str());
      return 0;
    }
    Throw(Errc::kTempFail, "out of memory; delivery deferred");
  }
}

}  // namespace

void AddDeliverCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<DeliverOptions>();
  CLI::App* command = root.add_subcommand(
      "deliver", "deliver one message from stdin to a user's folder (exit 67 unknown user, 75 hold/moved/over quota/INBOX not restored yet)");
  AddStoreOption(command, &options->store_dir);
  command->add_option("--user,-u", options->user, "recipient user id (joe or joe@example.com)")
      ->required()
      ->type_name("USER");
  command->add_option("--folder,-d", options->folder, "folder to deliver to (default: INBOX)")->type_name("FOLDER");
  command->add_option("--flags", options->flags, "system flags to set, e.g. Seen,Flagged")->type_name("NAMES");
  command->add_option("--date", options->date, "internal date: RFC 5322 date or unix seconds (default: now); after 1970-01-01T00:00:00Z, "
                      "not after 9999-12-31T23:59:59Z")
      ->type_name("DATE");
  command->add_flag("--create", options->create, "create a missing user and folder (any depth)");
  command->add_flag("-v,--verbose", options->verbose, "print the UID assigned");
  command
      ->add_option("--lock-wait", options->lock_wait,
                   "seconds to wait, in all, for the folder locks and the user's delivery gate other processes hold "
                   "(a rename, an import, a migration's switch) before deferring (75); 0 = no limit, at most 604800 "
                   "(default 300)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0, kMaxWaitSeconds, "SECONDS"));  // not 0 to DBL_MAX's 309 digits
  command->footer(
      "Exit status: 0 delivered and durable; 67 unknown user (bounce); 75 user on hold, moved to another "
      "host (the message names it), over quota, without its INBOX yet (a restore or import of the user "
      "not finished), a folder or the user's delivery gate held by another process for over --lock-wait seconds, a folder whose UIDs are used up, or anything else that fails (a full disk, an I/O error, a "
      "damaged store, no store at --store): the mail waits in the MTA's queue; 66 folder missing; 65 empty message (an "
      "empty stdin is a broken pipe, not mail; import keeps an mbox's empty messages and counts them); "
      "64 bad name or option.\n");
  command->callback([options, chosen] { *chosen = [options] { return RunDeliver(*options); }; });
}

}  // namespace storemove::tools
