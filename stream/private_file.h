// Files that hold secrets (pre-shared keys, IMAP passwords): refused when group or others may
// read them, as ssh refuses a private key.
#pragma once

#include <string>

namespace storemove::stream {

// The file's bytes (at most `limit`); Errc::kAuth "<what> <path> is accessible by group or others
// (mode 0644); refusing it: chmod 600 <path>" when its mode allows group or other access.
std::string ReadPrivateFile(const std::string& path, const std::string& what, size_t limit = 64 << 10);

}  // namespace storemove::stream
