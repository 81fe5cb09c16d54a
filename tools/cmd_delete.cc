// storemove delete: deletes users and mailboxes (Sun's mboxutil -d). A user is deleted only
// when its mailboxes were verified at a destination and have not changed since (storemove
// verify records that), unless --force; a single mailbox is ordinary admin work and unguarded.
#include <cstdio>

#include "store/admin.h"
#include "tools/commands.h"
#include "util/error.h"
#include "util/interrupt.h"
#include "util/iso_time.h"
#include "util/plural.h"

namespace storemove::tools {
namespace {

struct DeleteOptions {
  std::string store_dir;
  std::vector<std::string> names;
  bool force = false;
};

void PrintError(std::string message) {
  for (char& c : message)
    if (c == '\n' || c == '\r') c = ' ';
  std::fprintf(stderr, "storemove: %s\n", message.c_str());
}

int RunDelete(const DeleteOptions& options) {
  StopAtSafePointOnSignal();  // a signal unwinds: the environment is closed (util/interrupt.h)
  // Every name is checked before anything is deleted: one bad name deletes nothing.
  std::vector<store::AdminTarget> targets;
  for (const std::string& name : options.names) targets.push_back(store::ParseAdminTarget(name));
  store::StoreOptions open;
  open.frees_space = true;  // a full store: deleting is how space is made (it may use the reserve)
  auto store = OpenStore(options.store_dir, open);

  int status = 0;
  for (const store::AdminTarget& target : targets) {
    try {
      if (target.whole_user()) {
        // Where it was verified, said with the deletion: the guard knows a copy was proven, not
        // that it is the one the user's moved:HOST serves (helper-169).
        std::string verified;
        if (!options.force) {
          if (const std::optional<store::VerifiedInfo> v = store::GetVerified(*store, target.user))
            verified = " (verified at " + v->destination + " on " + IsoUtcTime(v->verified_at) + ")";
        }
        for (const std::string& mailbox : store::DeleteUser(*store, target.user, {options.force}))
          std::printf("deleted %s\n", mailbox.c_str());
        // A moved user's record stays, so that deliveries get "moved to HOST" (docs/migration.md):
        // said, since "deleted user" read as if it were gone (helper-72).
        std::optional<store::UserInfo> kept = store->FindUser(target.user);
        if (kept && kept->status.state == store::UserState::kMoved)
          std::printf("deleted the mailboxes of user %s%s; its record stays, marked moved:%s, for deliveries\n",
                      target.user.c_str(), verified.c_str(), kept->status.host.c_str());
        else
          std::printf("deleted user %s%s\n", target.user.c_str(), verified.c_str());
      } else {
        std::printf("deleted %s\n", store::DeleteFolder(*store, target.user, target.folder).c_str());
      }
      std::fflush(stdout);
    } catch (const Error& e) {
      // Gone already: a run killed after its commit may have left the files (helper-96), which
      // only this rerun can find.
      if (e.code() == Errc::kNotFound) {
        const std::string what =
            target.whole_user() ? "user " + target.user : "user/" + target.user + "/" + target.folder;
        try {
          if (const size_t swept = store::RemoveLeftoversOfDeleted(*store, target.user, target.folder)) {
            std::printf("deleted %s: its record was gone already (an interrupted delete); removed the files of %s it "
                        "left\n",
                        what.c_str(), Counted(swept, "folder").c_str());
            std::fflush(stdout);
            continue;
          }
        } catch (const Error& sweep_error) {
          // Said as what it is: the bare unlink error did not say whose leftovers (helper-105).
          PrintError(what + " is deleted from the mailbox list already (an interrupted delete), but the files it "
                            "left could not all be removed: " + sweep_error.what());
          if (status == 0) status = ExitStatus(sweep_error.code());
          continue;
        }
      }
      PrintError(e.what());
      if (status == 0) status = ExitStatus(e.code());
    }
  }
  return status;
}

}  // namespace

void AddDeleteCommand(CLI::App& root, Action* chosen) {
  auto options = std::make_shared<DeleteOptions>();
  CLI::App* command = root.add_subcommand(
      "delete", "delete users (only once verified at a destination and moved away, unless --force) and mailboxes (mboxutil -d)");
  AddStoreOption(command, &options->store_dir);
  command->add_option("names", options->names, "a user (joe or user/joe) or one mailbox (user/joe/Sent)")
      ->required()
      ->type_name("USER|MAILBOX");
  command->add_flag("--force", options->force, "delete users even if not verified, changed since verified, or still active or on hold here");
  command->footer(
      "Exit status: 0 all deleted (a name deleted by an earlier run that was interrupted: the files it left are "
      "removed now); 64 a bad name (nothing deleted); 66 no such user or mailbox; 74 deleted, but not all of its "
      "files could be removed (the line says why; a rerun removes them once that is mended); 75 a user was "
      "refused because it has not been verified, or changed since it was verified at a destination, or is still "
      "active or on hold here (its mail would bounce once its record is gone: set it moved:HOST first, and its "
      "record stays to defer late mail). One line "
      "per deleted object on stdout, one per error on stderr; the first error's status is returned.");
  command->callback([options, chosen] { *chosen = [options] { return RunDelete(*options); }; });
}

}  // namespace storemove::tools
