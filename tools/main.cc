// storemove: the command-line front end. Every failure ends as one line
// "storemove: <message>" on stderr and a sysexits(3) status (storemove::ExitStatus).
#include <cerrno>
#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "tools/commands.h"
#include "tools/version_string.h"
#include "util/error.h"

namespace {

int Fail(std::string message, int status) {
  for (char& c : message) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  std::fprintf(stderr, "storemove: %s\n", message.c_str());
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace storemove;
  CLI::App app{"storemove: Sun-Messaging-Server-style mail store tools", "storemove"};
  app.require_subcommand(1);
  app.set_version_flag("--version", tools::VersionString(), "print the version and exit");
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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    return Fail(std::string(e.what()) + " (see storemove --help)", ExitStatus(Errc::kInvalidArgument));
  }

  // Reader threads, folder locks and delivery gates of several groups add up: the soft limit
  // of open files (1,024 by default, kept for select(2), which storemove never uses) is raised
  // to the hard one, as systemd advises for such programs.
  struct rlimit files;
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max == RLIM_INFINITY ? files.rlim_cur : files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }

  int status;
  try {
    status = action();
  } catch (const Error& e) {
    return Fail(e.what(), ExitStatus(e.code()));
  } catch (const std::exception& e) {
    return Fail(std::string("internal error: ") + e.what(), 70);  // EX_SOFTWARE
  }
  if (std::fflush(stdout) != 0) {
    return Fail(std::string("write stdout: ") + std::strerror(errno), ExitStatus(Errc::kIo));
  }
  return status;
}
