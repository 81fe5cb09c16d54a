// A pid no process has: a child that has exited and been reaped. For the writers' temporaries
// (`tmp.<pid>.<token>`) of a process that is gone.
#pragma once

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace storemove::testing {

inline pid_t GonePid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

}  // namespace storemove::testing
