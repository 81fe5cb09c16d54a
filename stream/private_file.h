// Files that hold secrets (pre-shared keys, certificate keys, IMAP passwords): refused when group
// or others may read them, or another user owns them, as ssh refuses a private key.
#pragma once

#include <string>

namespace storemove::stream {

// The file's bytes (at most `limit`); Errc::kAuth "<what> <path> is accessible by group or others
// (mode 0644); refusing it: chmod 600 <path>" when its mode allows group or other access, and
// "<what> <path> is owned by joe (uid 1001), not by this user or root; refusing it: chown ..."
// when its owner is neither the effective user nor root; "<what> <path>: its directory D may be
// written by group or others (mode 0777), who could replace the file; refusing it: chmod go-w D"
// when its directory lets other users swap it (not sticky), or a directory above it that another
// user owns does ("the directory on its path D, owned by joe (uid 1001), ..."). Once it reads a
// secret the process is no longer dumpable (PR_SET_DUMPABLE 0): no core file, no ptrace by this
// user, holds it.
std::string ReadPrivateFile(const std::string& path, const std::string& what, size_t limit = 64 << 10);

}  // namespace storemove::stream
