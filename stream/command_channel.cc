// A command on two pipes (stream/command_channel.h).
#include "stream/command_channel.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "util/error.h"

extern char** environ;

namespace storemove::stream {
namespace {

// The commands running now, for StopRunningCommands (a signal handler reads it): lock-free.
constexpr size_t kMaxTracked = 512;  // --jobs is at most 256
std::atomic<pid_t> g_running[kMaxTracked];

void Track(pid_t pid) {
  for (std::atomic<pid_t>& slot : g_running) {
    pid_t none = 0;
    if (slot.compare_exchange_strong(none, pid)) return;
  }
}

void Untrack(pid_t pid) {
  for (std::atomic<pid_t>& slot : g_running) {
    pid_t mine = pid;
    if (slot.compare_exchange_strong(mine, 0)) return;
  }
}

// Waits up to `seconds` for `pid` to end and reaps it; false if it is still running. A pidfd
// (Linux 5.3) makes the wait a poll; without one, waitpid is asked every 20 ms.
bool WaitFor(pid_t pid, int seconds, int* status) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  UniqueFd owned(pidfd >= 0 ? pidfd : -1);
  for (;;) {
    const pid_t got = ::waitpid(pid, status, WNOHANG);
    if (got == pid) return true;
    if (got < 0 && errno != EINTR) {
      *status = 0;  // not ours to reap after all: nothing more to wait for
      return true;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (owned.valid()) {
      pollfd p{owned.get(), POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
    } else {
      std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(left, std::chrono::milliseconds(20)));
    }
  }
}

// The parent of `pid` from /proc/PID/stat (its 4th field, after the command name in parentheses,
// which may itself hold ')'), or 0. Async-signal-safe: open, read and close only.
pid_t ParentOf(pid_t pid) {
  char path[32] = "/proc/";
  char digits[16];
  int n = 0;
  for (pid_t v = pid; v > 0 && n < 15; v /= 10) digits[n++] = char('0' + v % 10);
  size_t at = 6;
  while (n > 0) path[at++] = digits[--n];
  for (const char* tail = "/stat"; *tail;) path[at++] = *tail++;
  path[at] = '\0';
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  const ssize_t got = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (got <= 0) return 0;
  const char* end = buf + got;
  const char* p = end;
  while (p > buf && p[-1] != ')') --p;  // after the last ')': " S PPID ..."
  if (p == buf || end - p < 4) return 0;
  p += 3;
  pid_t parent = 0;
  for (; p < end && *p >= '0' && *p <= '9'; ++p) parent = parent * 10 + (*p - '0');
  return parent;
}

// Sends `sig` to `root` and every process below it. The command runs under a shell, in this
// process group (so that ssh can ask at the terminal): a pipeline's parts, a subshell, a
// command with another after it are the shell's children, which a signal to the shell alone
// left running (helper-163). They are found first, by their parents in /proc (passes until no
// new one: a descendant is listed after its parent), then all signalled; a process that forks
// meanwhile may leave a new child unsignalled. Async-signal-safe (moveuser's SIGTERM handler
// calls it): raw getdents64, fixed arrays, no allocation. Without /proc, `root` alone.
void SignalTree(pid_t root, int sig) {
  constexpr size_t kMaxTree = 256;
  pid_t tree[kMaxTree];
  size_t size = 0;
  tree[size++] = root;
  auto in_tree = [&](pid_t pid) { return std::find(tree, tree + size, pid) != tree + size; };
  for (bool grew = true; grew && size < kMaxTree;) {
    grew = false;
    const int dir = ::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) break;
    alignas(8) char buf[8192];
    for (long got; (got = ::syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0;) {
      for (long offset = 0; offset < got;) {
        // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name
        unsigned short reclen;
        std::memcpy(&reclen, buf + offset + 16, sizeof reclen);
        const char* name = buf + offset + 19;
        offset += reclen;
        pid_t pid = 0;
        for (; *name >= '0' && *name <= '9'; ++name) pid = pid * 10 + (*name - '0');
        if (*name != '\0' || pid <= 0 || in_tree(pid)) continue;
        const pid_t parent = ParentOf(pid);
        if (parent > 0 && in_tree(parent) && size < kMaxTree) {
          tree[size++] = pid;
          grew = true;
        }
      }
    }
    ::close(dir);
  }
  for (size_t i = 0; i < size; ++i) ::kill(tree[i], sig);
}

std::string Describe(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status) == 0 ? "" : "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = ::sigabbrev_np(WTERMSIG(status));
    return "was killed by signal " + (name ? std::string("SIG") + name : std::to_string(WTERMSIG(status)));
  }
  return "ended";
}

}  // namespace

void StopRunningCommands() {
  for (std::atomic<pid_t>& slot : g_running)
    if (const pid_t pid = slot.load(); pid > 0) SignalTree(pid, SIGTERM);
}

CommandChannel::CommandChannel(const std::string& command, std::string shown, int timeout_seconds)
    : shown_(std::move(shown)), timeout_seconds_(timeout_seconds) {
  int in[2], out[2];  // in: the command's stdin; out: its stdout
  if (::pipe2(in, O_CLOEXEC) != 0) ThrowErrno("pipe for " + shown_);
  UniqueFd in_read(in[0]), in_write(in[1]);
  if (::pipe2(out, O_CLOEXEC) != 0) ThrowErrno("pipe for " + shown_);
  UniqueFd out_read(out[0]), out_write(out[1]);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  // The command gets its stdin and stdout and our stderr, nothing more: not the store's files
  // (libdb opens its own without close-on-exec), not other users' pipes.
  posix_spawn_file_actions_adddup2(&actions, in_read.get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_write.get(), STDOUT_FILENO);
  posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
  // This process ignores SIGPIPE (a closed pipe is an error here, not a death) and may block
  // signals in worker threads: the command starts with the defaults.
  sigset_t defaults, none;
  sigemptyset(&defaults);
  for (int s : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&defaults, s);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  // bash, where there is one (Debian's is essential), runs a command's last simple command in its
  // own process (exec), so the process this one stops is the command and not a shell whose
  // child outlives it (dash forks `ssh ...`: helper-161, a hung one kept running after the
  // timeout). It stays in this process group, so that ssh can still ask at the terminal. -p:
  // as dash, no $BASH_ENV read first (what it prints came before the greeting: helper-163) and
  // no functions taken from the environment in place of commands.
  const bool bash = ::access("/bin/bash", X_OK) == 0;
  std::string sh = bash ? "/bin/bash" : "/bin/sh", privileged = "-p", dash_c = "-c", text = command;
  char* with_bash[] = {sh.data(), privileged.data(), dash_c.data(), text.data(), nullptr};
  char* with_sh[] = {sh.data(), dash_c.data(), text.data(), nullptr};
  char** argv = bash ? with_bash : with_sh;
  const int err = ::posix_spawn(&pid_, sh.c_str(), &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (err != 0) {
    pid_ = -1;
    ThrowErrno("start " + shown_, err);
  }
  Track(pid_);
  to_command_ = std::move(in_write);
  from_command_ = std::move(out_read);
  // Non-blocking, so a write into a full pipe waits in poll (with the timeout), not in write.
  for (int fd : {to_command_.get(), from_command_.get()}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

CommandChannel::~CommandChannel() { Finish(1); }

void CommandChannel::WaitReady(int fd, short events, const char* what) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, timeout_seconds_ * 1000);
    if (n > 0) return;  // ready, or closed (POLLHUP/POLLERR): the read or write says which
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowErrno(std::string(what) + " " + shown_);
    Throw(Errc::kTempFail, std::string(what) + " " + shown_ + ": timed out after " + std::to_string(timeout_seconds_) +
                               " s without data");
  }
}

size_t CommandChannel::Read(void* data, size_t size) {
  if (size == 0) return 0;
  for (;;) {
    const ssize_t n = ::read(from_command_.get(), data, size);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno != EAGAIN) ThrowErrno("read from " + shown_);
    WaitReady(from_command_.get(), POLLIN, "read from");
  }
}

void CommandChannel::Write(const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(to_command_.get(), p, size);
    if (n > 0) {
      p += n;
      size -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EPIPE) Throw(Errc::kTempFail, "write to " + shown_ + ": the command closed its input");
    if (n < 0 && errno != EAGAIN) ThrowErrno("write to " + shown_);
    WaitReady(to_command_.get(), POLLOUT, "write to");
  }
}

void CommandChannel::StartTls() { Throw(Errc::kProtocol, shown_ + ": STARTTLS over a tunnel (the command is the link)"); }

std::string CommandChannel::Finish(int grace_seconds) {
  if (pid_ < 0) return ended_;
  to_command_.reset();
  from_command_.reset();
  int status = 0;
  if (!WaitFor(pid_, grace_seconds, &status)) {
    stopped_here_ = true;
    SignalTree(pid_, SIGTERM);
    if (!WaitFor(pid_, 2, &status)) {
      SignalTree(pid_, SIGKILL);
      WaitFor(pid_, 3600, &status);  // SIGKILL cannot be refused: this returns at once
    }
  }
  Untrack(pid_);
  pid_ = -1;
  ended_ = Describe(status);
  return ended_;
}

}  // namespace storemove::stream
