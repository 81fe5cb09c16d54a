// A command speaking IMAP on its standard input and output: the tunnel of `moveuser --tunnel`
// (mbsync's Tunnel, offlineimap's preauthtunnel), e.g. `doveadm exec imap -u %u` on the old host
// or `ssh old doveadm exec imap -u %u`. The command runs under bash -p -c (/bin/sh -c without bash) with a pipe each way:
// pipes, not a socket, because Dovecot's imap run as root refuses a socket on its stdout as
// started from inetd. It stays in this process's group (ssh may ask on the terminal) and writes
// its stderr to ours. Reads and writes that make no progress for the timeout throw kTempFail, as
// a silent server's do; if this process dies, the command reads end of file.
#pragma once

#include <sys/types.h>

#include <string>

#include "interop/imap_client.h"
#include "util/fs.h"

namespace storemove::stream {

// SIGTERM to every command a CommandChannel runs now: for a signal handler that is about to
// _exit (moveuser's SIGINT/SIGTERM), so that a command not reading its input does not outlive
// it (helper-160). Async-signal-safe.
void StopRunningCommands();

class CommandChannel final : public interop::ImapChannel {
 public:
  // Starts `command`; `shown` names it in errors ("tunnel 'doveadm exec imap -u ann'").
  CommandChannel(const std::string& command, std::string shown, int timeout_seconds);
  ~CommandChannel() override;  // Finish(1) unless finished; never throws
  CommandChannel(const CommandChannel&) = delete;
  CommandChannel& operator=(const CommandChannel&) = delete;

  size_t Read(void* data, size_t size) override;  // 1..size; 0 once the command closed its stdout
  void Write(const void* data, size_t size) override;
  void StartTls() override;  // kProtocol: a tunnel carries no TLS (the command is the link)

  // Closes both pipes (the command reads end of file), waits up to `grace_seconds` for it to
  // exit, then SIGTERM, then after 2 s SIGKILL, and reaps it. Returns how it ended: "" for exit
  // status 0, else "exited with status N" or "was killed by signal SIGNAME". Never throws.
  std::string Finish(int grace_seconds);
  // Finish() had to signal the command: how it ended is this side's doing.
  bool stopped_here() const { return stopped_here_; }

 private:
  void WaitReady(int fd, short events, const char* what);

  std::string shown_;
  int timeout_seconds_;
  UniqueFd to_command_, from_command_;
  pid_t pid_ = -1;
  std::string ended_;
  bool stopped_here_ = false;
};

}  // namespace storemove::stream
