// storemove user: shows a user, or sets the status (active | hold | moved:HOST) and quota that
// LDAP's mailUserStatus and quota attributes would hold in a Sun deployment.
#include <cstdio>

#include <nlohmann/json.hpp>

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
  bool json = false;
};

int RunUser(const UserOptions& options) {
  store::ValidateUserId(options.user);
  // Parse everything before changing anything, so a bad value leaves the user untouched.
  std::optional<store::UserStatus> status;
  if (!options.status.empty()) status = store::UserStatus::Parse(options.status);
  std::optional<uint64_t> quota;
  if (!options.quota.empty()) quota = ParseByteCount(options.quota, "--quota");

  auto store = OpenStore(options.store_dir);

  if (!store->FindUser(options.user)) Throw(Errc::kNotFound, "user " + options.user + " does not exist");
  if (status) store->SetUserStatus(options.user, *status);
  if (quota) store->SetQuotaLimit(options.user, *quota);

  std::optional<store::UserInfo> info = store->FindUser(options.user);
  if (!info) Throw(Errc::kNotFound, "user " + options.user + " does not exist");
  std::vector<store::FolderInfo> folders = store->ListFolders(options.user);
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
    std::printf("%s\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  uint64_t messages = 0;
  for (const store::FolderInfo& folder : folders) messages += folder.count;
  std::printf("user:      %s\n", info->user.c_str());
  std::printf("partition: %s\n", info->partition.c_str());
  std::printf("status:    %s\n", info->status.ToString().c_str());
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
  CLI::App* command = root.add_subcommand("user", "show a user, or set its status and quota");
  AddStoreOption(command, &options->store_dir);
  command->add_option("user", options->user, "user id")->required()->type_name("USER");
  command->add_option("--status", options->status, "set the status: active, hold or moved:HOST")
      ->type_name("STATUS");
  command->add_option("--quota", options->quota, "set the quota limit in bytes (K/M/G suffixes; 0 = none)")
      ->type_name("BYTES");
  command->add_flag("--json", options->json, "print JSON");
  command->callback([options, chosen] { *chosen = [options] { return RunUser(*options); }; });
}

}  // namespace storemove::tools
