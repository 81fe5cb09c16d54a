// Plumbing shared by the stream subcommands (backup, restore, verify): where bytes go and how
// the session's summary is reported.
#pragma once

#include <string>

#include "stream/stream.h"

namespace storemove::tools {

// --compress: "none" -> level 0 (no compression); "1".."19" -> that zstd level; "adapt" -> level
// 1 to start with, moved by where the time goes (format::AdaptiveLevel).
struct Compression {
  int level = 1;
  bool adapt = false;
};
Compression ParseCompression(const std::string& text);
// YYYYMMDD[:HHMMSS] in local time -> unix seconds (imsbackup -d).
int64_t ParseBackupDate(const std::string& text);
// Prints the one-line summary (or JSON) on stderr.
void ReportSession(const stream::SessionReport& report, const std::string& verb, bool json);
std::string HostName();

// When `fd` is a regular file: its size (the total a live line's ETA needs; a stream announces
// none) and a function giving the offset the kernel keeps for it (how much the decompressing
// thread has read). Leaves both alone for a pipe or socket.
void InputProgress(int fd, uint64_t* total, std::function<uint64_t()>* consumed);

}  // namespace storemove::tools
