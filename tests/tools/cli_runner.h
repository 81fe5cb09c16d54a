// Runs the real storemove binary (STOREMOVE_BIN) with arguments and stdin, capturing its exit
// status, stdout and stderr through temporary files (no pipes, so no deadlock on big output).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/temp_dir.h"

namespace storemove::testing {

struct CliResult {
  int status = -1;  // exit status, or 128 + signal number
  std::string out;
  std::string err;
  long peak_rss_kib = -1;  // the process's own peak resident set (wait4), KiB
  std::string Describe() const { return "exit " + std::to_string(status) + "\nstdout:\n" + out + "\nstderr:\n" + err; }
};

// What every failing command must print: one line, "storemove: ..." (the error naming what and where).
inline bool IsOneErrorLine(const CliResult& r) {
  return r.err.starts_with("storemove: ") && r.err.back() == '\n' && r.err.find('\n') == r.err.size() - 1;
}

inline std::string SlurpFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Waits up to `patience` until the file at `path` (a process's log) holds `part`: rereads it
// whenever its directory reports a change, never on a timer alone.
inline bool WaitForFile(const std::string& path, const std::string& part, std::chrono::seconds patience) {
  int in = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (in < 0) throw std::runtime_error("inotify_init1");
  const std::string dir = path.substr(0, path.rfind('/'));
  ::inotify_add_watch(in, dir.c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE);
  const auto deadline = std::chrono::steady_clock::now() + patience;
  bool found = false;
  while (!(found = SlurpFile(path).find(part) != std::string::npos) && std::chrono::steady_clock::now() < deadline) {
    pollfd p{in, POLLIN, 0};
    ::poll(&p, 1, 1000);  // a change wakes it; the timeout only bounds a lost race with the read above
    char buf[4096];
    while (::read(in, buf, sizeof buf) > 0) {
    }
  }
  ::close(in);
  return found;
}

// `env` entries are "NAME=value"; STOREMOVE_STORE is always cleared first so the caller's
// environment cannot leak into a test. `stdin_path` (if not empty) is a file fed as stdin.
// RunProgram... run `program` (another binary of the package) the same way.
inline CliResult RunProgramWithStdinFile(const std::string& program, const std::vector<std::string>& args,
                                         const std::string& stdin_path, const std::vector<std::string>& env = {}) {
  TempDir io;
  const std::string in_path = stdin_path.empty() ? io / "stdin" : stdin_path;
  if (stdin_path.empty()) std::ofstream(in_path, std::ios::binary).flush();
  const std::string out_path = io / "stdout", err_path = io / "stderr";
  std::vector<std::string> argv_storage = {program};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int in = ::open(in_path.c_str(), O_RDONLY);
    int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in < 0 || out < 0 || err < 0) ::_exit(126);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::unsetenv("STOREMOVE_STORE");
    for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int wstatus = 0;
  struct rusage usage {};
  while (::wait4(pid, &wstatus, 0, &usage) < 0) {
    if (errno != EINTR) throw std::runtime_error("wait4 failed");
  }
  CliResult r;
  r.status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
  r.peak_rss_kib = usage.ru_maxrss;
  r.out = SlurpFile(out_path);
  r.err = SlurpFile(err_path);
  return r;
}

inline CliResult RunCliWithStdinFile(const std::vector<std::string>& args, const std::string& stdin_path,
                                     const std::vector<std::string>& env = {}) {
  return RunProgramWithStdinFile(STOREMOVE_BIN, args, stdin_path, env);
}

inline CliResult RunProgram(const std::string& program, const std::vector<std::string>& args,
                            const std::string& stdin_data = "", const std::vector<std::string>& env = {}) {
  TempDir io;
  const std::string in_path = io / "stdin-data";
  std::ofstream(in_path, std::ios::binary) << stdin_data;
  return RunProgramWithStdinFile(program, args, in_path, env);
}

inline CliResult RunCli(const std::vector<std::string>& args, const std::string& stdin_data = "",
                        const std::vector<std::string>& env = {}) {
  return RunProgram(STOREMOVE_BIN, args, stdin_data, env);
}

// Starts the storemove binary without waiting for it, standard output and error to `out`.
// batch_fd >= 0 becomes STOREMOVE_TEST_BATCH_FD: the test seam of import and moveuser, where the
// child writes a byte after each committed batch and waits for one back (a kill lands there).
inline pid_t SpawnCli(const std::vector<std::string>& args, const std::string& out, int batch_fd = -1) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (batch_fd >= 0) ::setenv("STOREMOVE_TEST_BATCH_FD", std::to_string(batch_fd).c_str(), 1);
    ::unsetenv("STOREMOVE_STORE");
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<std::string> storage = args;
    storage.insert(storage.begin(), STOREMOVE_BIN);
    std::vector<char*> argv;
    for (std::string& a : storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

}  // namespace storemove::testing
