#include "tools/run_command_line.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <system_error>

#include "tools/version_string.h"
#include "util/error.h"

namespace storemove::tools {
namespace {

// Said when the output is lost after the command's own work ended well: a rerun of an export or a
// rename would then be refused as done already.
std::string StdoutLostTail(int status, bool worked) {
  return status == 0 && worked ? " (the command itself completed)" : "";
}

int Fail(const std::string& program, std::string message, int status) {
  for (char& c : message) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  std::fprintf(stderr, "%s: %s\n", program.c_str(), message.c_str());
  return status;
}

// What a command printed must all have reached stdout: a script reads a report cut short by a
// full disk or a closed pipe (SIGPIPE ignored, as systemd's units have it) as a whole one. The
// last flush alone is not enough: a write that failed while a long output was printed sets the
// stream's error flag, and the flush of what was left may then succeed (helper-89: `users` of
// 6 KiB into /dev/full exited 0). That error's errno is gone by now, hence the general words.
int CheckStdout(const std::string& program, int status, bool worked = true) {
  if (std::fflush(stdout) != 0)
    return Fail(program, std::string("write stdout: ") + std::strerror(errno) + StdoutLostTail(status, worked),
                ExitStatus(Errc::kIo));
  if (std::ferror(stdout))
    return Fail(program, "write stdout: a write failed: the output is incomplete" + StdoutLostTail(status, worked),
                ExitStatus(Errc::kIo));
  return status;
}

// The only files storemove maps are the database environment's regions (mboxlist/__db.00N):
// a region page with no space behind it, its filesystem filled by someone else after the open
// checked for room, is a SIGBUS (helper-158: exit 135, no word). Said, and 74. Nothing is
// half-visible: the environment is recovered at the next open, as after a kill -9.
extern "C" void OnBusError(int) {
  static const char kLine[] =
      "storemove: a memory-mapped page of the store's database environment (mboxlist/__db.00N) has no storage "
      "behind it (SIGBUS): its filesystem is full, or the file was cut short; nothing half-written is visible: free "
      "space there, then run the command again\n";
  (void)!::write(STDERR_FILENO, kLine, sizeof kLine - 1);
  ::_exit(74);  // EX_IOERR, ExitStatus(Errc::kIo): nothing but async-signal-safe calls here
}

void SayBusErrors() {
  struct sigaction action {};
  action.sa_handler = OnBusError;
  action.sa_flags = SA_RESETHAND;
  ::sigemptyset(&action.sa_mask);
  ::sigaction(SIGBUS, &action, nullptr);
}

bool IsSubcommand(CLI::App& app, const std::string& word) {
  for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    if (sub->check_name(word)) return true;
  }
  return false;
}

}  // namespace

int RunCommandLine(CLI::App& app, const Action& action, int argc, char** argv) {
  // Started with descriptor 0, 1 or 2 closed (`storemove ... <&- >&- 2>&-`, a daemon that closed
  // them), the next file opened takes it: the store's Berkeley DB __db.register became
  // descriptor 2 and the command's messages were written into it, read by the next process as a
  // dead one, whose recovery ended every process on the store (helper-123). /dev/null holds them,
  // opened the wrong way round, so that using one still fails with EBADF as on a closed one: a
  // `backup -f - >&-` that wrote its stream into /dev/null exited 0 (helper-125).
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    const int null = ::open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY);
    if (null >= 0 && null != fd) {
      ::dup2(null, fd);
      ::close(null);
    }
  }
  // The store's files and directories are made 0600 and 0700; a umask that masks the owner's
  // own bits (an MTA's or a script's 0277) made `lock/db` unwritable to the owner: every later
  // delivery of a user hashed there was deferred for ever (helper-131). The group's and others'
  // bits stay the caller's to mask.
  ::umask(::umask(0) & 077);
  const std::string program = app.get_name();
  app.require_subcommand(1);
  app.set_version_flag("--version", VersionString(), "print the version and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return CheckStdout(program, app.exit(e), /*worked=*/false);  // --help, --version
    // CLI11 takes an unknown first word for a missing subcommand; name the word instead.
    if (argc > 1 && argv[1][0] != '-' && !IsSubcommand(app, argv[1])) {
      return Fail(program, std::string("unknown subcommand '") + argv[1] + "' (see " + program + " --help)",
                  ExitStatus(Errc::kInvalidArgument));
    }
    // A subcommand's own help lists its options; the program's lists only the subcommands.
    const std::string help = argc > 1 && IsSubcommand(app, argv[1]) ? program + " " + argv[1] : program;
    return Fail(program, std::string(e.what()) + " (see " + help + " --help)", ExitStatus(Errc::kInvalidArgument));
  }

  // Reader threads, folder locks and delivery gates of several groups add up: the soft limit
  // of open files (1,024 by default, kept for select(2), which storemove never uses) is raised
  // to the hard one, as systemd advises for such programs.
  struct rlimit files;
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max == RLIM_INFINITY ? files.rlim_cur : files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }

  // A file-size limit (ulimit -f) becomes EFBIG on the write, said in one line naming the file
  // with its temporaries removed, as a full disk is: SIGXFSZ killed the process without a word,
  // leaving them (helper-102).
  ::signal(SIGXFSZ, SIG_IGN);
  SayBusErrors();

  int status;
  try {
    status = action();
  } catch (const Error& e) {
    return Fail(program, e.what(), ExitStatus(e.code()));
  } catch (const std::bad_alloc&) {
    // A memory limit (ulimit -v, a unit's MemoryMax=), not a defect: said as such, and 75, as a
    // rerun with more memory finishes (helper-102: "internal error: std::bad_alloc", 70).
    return Fail(program, "out of memory (a memory limit, ulimit -v?): nothing more was done; run again with more memory",
                ExitStatus(Errc::kTempFail));
  } catch (const std::system_error& e) {
    // A thread refused (EAGAIN under ulimit -u or -v): it said only "internal error: Resource
    // temporarily unavailable" (helper-102). Only that: std::filesystem's errors are
    // system_errors too, and a permanent one is no limit to raise (review).
    if (e.code() == std::errc::resource_unavailable_try_again || e.code() == std::errc::not_enough_memory)
      return Fail(program, std::string("a system resource was refused: ") + e.what() +
                               " (a thread could not be started? ulimit -u or -v); run again with higher limits",
                  ExitStatus(Errc::kTempFail));
    return Fail(program, std::string("internal error: ") + e.what(), 70);  // EX_SOFTWARE
  } catch (const std::exception& e) {
    return Fail(program, std::string("internal error: ") + e.what(), 70);  // EX_SOFTWARE
  }
  return CheckStdout(program, status);
}

}  // namespace storemove::tools
