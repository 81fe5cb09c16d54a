// storemove user: shows a user, or sets the status (active | hold | moved:HOST) and quota that
// LDAP's mailUserStatus and quota attributes would hold in a Sun deployment.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "stream/migrate.h"
#include "stream/user_views.h"
#include "tools/commands.h"
#include "util/error.h"
#include "util/version.h"

namespace storemove::tools {
namespace {

struct UserOptions {
  std::string store_dir;
  std::string user;
  std::string status;
  std::string quota;
  std::string group;       // bulk: the users of this backup group
  std::string groups_file;
  std::string users_file;  // bulk: the users listed in this file
  bool include_moved = false;  // bulk: change users already moved away too
  bool recount_quota = false;
  bool json = false;
  int lock_wait = 60;  // seconds a status change waits for a delivery gate
};

// A status change waits for the users' delivery gates: says once why, and gives up (exit 75,
// naming the user) after --lock-wait seconds; Ctrl-C ends it as it ends the command.
store::Store::LockWait GateWait(const UserOptions& options) {
  if (options.lock_wait < 0 || options.lock_wait > 86400)
    Throw(Errc::kInvalidArgument, "--lock-wait: 0-86400 seconds");
  store::Store::LockWait wait;
  wait.on_wait = [](const std::string& why) { std::fprintf(stderr, "storemove user: %s\n", why.c_str()); };
  wait.timeout_seconds = options.lock_wait;
  return wait;
}

// --status for many users at once: every id checked and every user found before the one
// transaction that changes them all (or nobody).
int RunBulkStatus(const UserOptions& options) {
  if (!options.user.empty() || (!options.group.empty() && !options.users_file.empty()))
    Throw(Errc::kInvalidArgument, "user: give one of USER, --group or --users-file");
  if (options.status.empty()) Throw(Errc::kInvalidArgument, "user: --group and --users-file need --status");
  if (!options.quota.empty()) Throw(Errc::kInvalidArgument, "user: --quota is set one user at a time");
  if (options.recount_quota) Throw(Errc::kInvalidArgument, "user: --recount-quota counts one user at a time");
  store::UserStatus status = store::UserStatus::Parse(options.status);
  const store::Store::LockWait wait = GateWait(options);
  std::vector<std::string> users;
  if (!options.users_file.empty()) users = stream::ReadUsersFile(options.users_file);
  auto store = OpenStore(options.store_dir);
  if (!options.group.empty()) {
    std::string file =
        options.groups_file.empty() ? store->root() + "/config/backup-groups.conf" : options.groups_file;
    users = stream::GroupUsers(*store, file, options.group);
  }
  stream::CheckNotHeldByRunningMigrate(*store, users);  // its switch would refuse them anyway
  stream::StatusChange change = stream::SetStatusOf(*store, users, status, options.include_moved, wait);
  std::printf("%s", options.json ? (stream::StatusChangeJson(change) + "\n").c_str()
                                 : stream::StatusChangeText(change).c_str());
  return 0;
}

int RunUser(const UserOptions& options) {
  if (!options.group.empty() || !options.users_file.empty()) return RunBulkStatus(options);
  if (options.user.empty()) Throw(Errc::kInvalidArgument, "user: give USER, --group or --users-file");
  store::ValidateUserId(options.user);
  // Parse everything before changing anything, so a bad value leaves the user untouched.
  std::optional<store::UserStatus> status;
  if (!options.status.empty()) status = store::UserStatus::Parse(options.status);
  std::optional<uint64_t> quota;
  if (!options.quota.empty()) quota = ParseByteCount(options.quota, "--quota");
  const store::Store::LockWait wait = GateWait(options);

  // A folder lock held for long delays only the report, after the change is committed: the wait
  // line says so, so that nobody takes a Ctrl-C for undoing it (helper-52).
  bool changed = false;
  store::StoreOptions store_options;
  store_options.on_wait = [&changed](const std::string& why) {
    std::fprintf(stderr, "storemove: %s%s\n", why.c_str(),
                 changed && why.starts_with("waiting") ? " (the change is made already; only this report waits)" : "");
  };
  auto store = OpenStore(options.store_dir, store_options);

  // 67 (EX_NOUSER), as deliver and the bulk form answer.
  const std::optional<store::UserInfo> before = store->FindUser(options.user);
  if (!before) Throw(Errc::kNoUser, "user " + options.user + " does not exist");
  // A user moved away lives at its new host: a status or quota set here would not follow it, and
  // making it active here splits its mail between two live stores (helper-75: exit 0, then
  // deliveries landed on both). The administrator who means it says --include-moved.
  if (before->status.state == store::UserState::kMoved && !options.include_moved) {
    const std::string who = "user " + options.user + " has moved to " + before->status.host;
    if (status && status->state != store::UserState::kMoved)
      Throw(Errc::kInvalidArgument,
            who + ": its mailbox is live there, with any mail delivered there since the move; made " +
                status->ToString() + " here, its mail would be split between two stores. Bring that mail here "
                "first (docs/migration.md), then run again with --include-moved");
    if (quota)
      Throw(Errc::kInvalidArgument, who + ": set its quota there, where its mailbox is; a quota set here does not "
                                          "follow it (--include-moved sets it here all the same)");
  }
  if (status) {
    stream::CheckNotHeldByRunningMigrate(*store, {options.user});  // its switch would refuse it anyway
    store->SetUserStatus(options.user, *status, wait);
    changed = true;
  }
  if (quota) {
    store->SetQuotaLimit(options.user, *quota);
    changed = true;
  }
  std::optional<std::pair<uint64_t, uint64_t>> recounted;
  if (options.recount_quota) {
    // A moved user too: the count changes nothing but the usage, which is this store's own.
    // reconstruct -q's repair in Sun's store: a writer killed between its commit and its quota update leaves the
    // usage short (and the quota soft by that much); only a restore of the user recounted it.
    recounted = store->RecountQuota(options.user, wait);
    changed = true;
    if (!options.json)
      std::printf("quota usage recounted: %llu bytes (was %llu)\n", static_cast<unsigned long long>(recounted->second),
                  static_cast<unsigned long long>(recounted->first));
  }

  std::optional<store::UserInfo> info = store->FindUser(options.user);
  if (!info) Throw(Errc::kNoUser, "user " + options.user + " does not exist");
  // JSON names the folders only: their records, no index (and so no folder lock) read.
  std::vector<store::FolderInfo> folders = store->ListFolders(
      options.user, options.json ? store::Store::FolderDetail::kRecordOnly : store::Store::FolderDetail::kWithIndex);
  if (options.json) {
    nlohmann::json folder_names = nlohmann::json::array();
    for (const store::FolderInfo& folder : folders) folder_names.push_back(folder.folder);
    nlohmann::json out = {{"user", info->user},
                          {"partition", info->partition},
                          {"status", info->status.ToString()},
                          {"quota_limit", info->quota_limit},
                          {"quota_used", info->quota_used},
                          {"created", IsoTime(info->created)},
                          {"folders", folder_names},
                          {"storemove_version", Version()}};
    if (recounted) out["quota_recount"] = {{"was", recounted->first}, {"now", recounted->second}};
    std::printf("%s\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  uint64_t messages = 0;
  for (const store::FolderInfo& folder : folders) messages += folder.count;
  std::printf("user:      %s\n", info->user.c_str());
  std::printf("partition: %s\n", info->partition.c_str());
  std::printf("status:    %s%s\n", info->status.ToString().c_str(),
              info->status.held_by_pull ? " (by a moveuser --hold pull not completed: the pull that completes it lifts it)"
                                        : "");
  if (info->quota_limit == 0) {
    std::printf("quota:     none\n");
  } else {
    std::printf("quota:     %llu bytes (%s)\n", static_cast<unsigned long long>(info->quota_limit),
                HumanBytes(info->quota_limit).c_str());
  }
  std::printf("used:      %llu bytes (%s)\n", static_cast<unsigned long long>(info->quota_used),
              HumanBytes(info->quota_used).c_str());
  std::printf("created:   %s\n", IsoTime(info->created).c_str());
  std::printf("folders:   %zu (%llu messages)\n", folders.size(), static_cast<unsigned long long>(messages));
  for (const store::FolderInfo& folder : folders) std::printf("  %s\n", folder.Mailbox().c_str());
  return 0;
}

}  // namespace

void AddUserCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<UserOptions>();
  CLI::App* command = root.add_subcommand(
      "user", "show a user, or set its status and quota; set the status of a group's or a file's users at once");
  AddStoreOption(command, &options->store_dir);
  command->add_option("user", options->user, "user id")->type_name("USER");
  command->add_option("--status", options->status, "set the status: active, hold or moved:HOST")
      ->type_name("STATUS");
  command->add_option("--quota", options->quota, "set the quota limit in bytes (K/M/G suffixes; 0 = none)")
      ->type_name("BYTES");
  command->add_option("--group", options->group,
                      "with --status: every user of this backup group (as `storemove groups` lists them)")
      ->type_name("GROUP");
  command->add_option("--groups", options->groups_file, "NAME=ERE lines (default STORE/config/backup-groups.conf)")
      ->type_name("FILE");
  command->add_option("--users-file", options->users_file,
                      "with --status: every user id of FILE (one per line, # comments; - reads standard input); all or nobody")
      ->type_name("FILE");
  command->add_flag("--include-moved", options->include_moved,
                    "change users already moved away too (with --group/--users-file: left alone otherwise; for one USER: "
                    "refused otherwise, since a moved user's mailbox is live at its new host)");
  command->add_option("--lock-wait", options->lock_wait,
                      "with --status or --recount-quota: seconds to wait for a delivery holding a user's delivery gate "
                      "(and, with --recount-quota, for a restore or import writing the user, and for a folder's lock: one "
                      "budget for them all) before giving up with exit 75 (default 60; 0 = no limit)");
  command->add_flag("--recount-quota", options->recount_quota,
                    "count the bytes in use again from the user's mailboxes (after a crash or kill)");
  command->add_flag("--json", options->json, "print JSON");
  command->callback([options, chosen] { *chosen = [options] { return RunUser(*options); }; });
}

}  // namespace storemove::tools
