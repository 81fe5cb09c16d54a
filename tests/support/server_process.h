// What the test servers (DovecotServer, CyrusServer) share: a free loopback port, files and trees
// handed to the account the server runs as, stopping a server's process group, and its logs as
// one line for error messages.
#pragma once

#include <sys/types.h>

#include <initializer_list>
#include <string>

namespace storemove::testing {

// A port on 127.0.0.1 that was free a moment ago (bound, read, closed).
int FreeLoopbackPort();
// Writes `text` to `path` with exactly `mode`; kIo when it cannot.
void WriteTestFile(const std::string& path, const std::string& text, mode_t mode);
// lchown of `root` and everything below it.
void ChownTree(const std::string& root, uid_t uid, gid_t gid);
// SIGTERM to *pid, a bounded wait (20 s) for it to exit, then SIGKILL to its process group (its
// stragglers, or itself after the deadline); *pid becomes -1. Nothing when *pid <= 0.
void StopProcessGroup(pid_t* pid);
// Removes *dir (unless the environment variable `keep_variable` is set) and clears it.
void RemoveServerDir(std::string* dir, const char* keep_variable);
// The last 4,000 bytes of these files below `dir`, newlines as '|': one line for an error message.
std::string OneLineLog(const std::string& dir, std::initializer_list<const char*> files);

}  // namespace storemove::testing
