// storemove: the command-line front end. Every failure ends as one line
// "storemove: <message>" on stderr and a sysexits(3) status (storemove::ExitStatus).
#include "tools/commands.h"
#include "tools/run_command_line.h"

int main(int argc, char** argv) {
  using namespace storemove;
  CLI::App app{"storemove: Sun-Messaging-Server-style mail store tools", "storemove"};
  tools::Action action;
  tools::AddInitCommand(app, &action);
  tools::AddDeliverCommand(app, &action);
  tools::AddImportCommand(app, &action);
  tools::AddExportCommand(app, &action);
  tools::AddListCommand(app, &action);
  tools::AddUserCommand(app, &action);
  tools::AddUsersCommand(app, &action);
  tools::AddGroupsCommand(app, &action);
  tools::AddGenCommand(app, &action);
  tools::AddBackupCommand(app, &action);
  tools::AddRestoreCommand(app, &action);
  tools::AddServeCommand(app, &action);
  tools::AddKeygenCommand(app, &action);
  tools::AddRelinkCommand(app, &action);
  tools::AddVerifyCommand(app, &action);
  tools::AddMigrateCommand(app, &action);
  tools::AddDeleteCommand(app, &action);
  tools::AddRenameCommand(app, &action);
  tools::AddMoveUserCommand(app, &action);
  tools::AddConfigCommand(app, &action);
  tools::AddPlanCommand(app, &action);
  tools::AddReportCommand(app, &action);
  return tools::RunCommandLine(app, action, argc, argv);
}
