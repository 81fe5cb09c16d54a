// Plumbing shared by the stream subcommands (backup, restore, verify): where bytes go and how
// the session's summary is reported.
#pragma once

#include <string>
#include <string_view>

#include "stream/stream.h"
#include "util/error.h"

namespace storemove::tools {

// --compress: "none" -> level 0 (no compression); "1".."19" -> that zstd level; "adapt" -> level
// 1 to start with, moved by where the time goes (format::AdaptiveLevel).
struct Compression {
  int level = 1;
  bool adapt = false;
};
// Runs `read` (a restore or verify of a stream) and names `input` (the file, or "standard
// input") in the stream's own errors: "storemove: s.zst: stream: zstd: truncated frame ..."
// (helper-72: they did not say which file). Errors of the store keep their own names.
template <typename F>
auto NamingInput(const std::string& input, F&& read) {
  try {
    return read();
  } catch (const Error& e) {
    if (std::string_view(e.what()).starts_with("stream: ")) Throw(e.code(), input + ": " + e.what());
    throw;
  }
}
// adapt_allowed false: "adapt" is refused (migrate's sessions keep one level).
Compression ParseCompression(const std::string& text, bool adapt_allowed = true);
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
