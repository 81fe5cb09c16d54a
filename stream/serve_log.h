// Where `storemove serve` logs, one line per event with a syslog(3) priority:
// - a file (--log FILE): "2024-07-01T10:00:00Z text" lines, appended; reopened on request (SIGHUP,
//   after logrotate renamed it), so the new lines go to the new file;
// - standard error: the same lines; under systemd, when JOURNAL_STREAM names standard error,
//   "<6>text" lines instead (sd-daemon(3) priority prefixes, no time: journald stamps each line);
// - syslog(3) (--log syslog), ident "storemove", facility LOG_DAEMON;
// - a std::ostream (tests, in-process servers): timestamped lines.
// Lines are written whole under a lock: sessions log from their own threads.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>

namespace storemove::stream::net {

// syslog(3) priorities, the numbers of the "<N>" prefixes.
enum class LogPriority { kError = 3, kWarning = 4, kNotice = 5, kInfo = 6, kDebug = 7 };

class ServeLog {
 public:
  // `target`: "" (standard error), "syslog", or a file path (opened now: kIo if it cannot be).
  static std::unique_ptr<ServeLog> Open(const std::string& target);
  // Lines to `out`, which must outlive the log.
  explicit ServeLog(std::ostream& out);
  ~ServeLog();
  ServeLog(const ServeLog&) = delete;
  ServeLog& operator=(const ServeLog&) = delete;

  void Line(LogPriority priority, const std::string& text);
  void Info(const std::string& text) { Line(LogPriority::kInfo, text); }

  // Async-signal-safe: asks for the file to be reopened by the next Line() or ReopenIfRequested().
  void RequestReopen() { reopen_requested_.store(true); }
  // Reopens the file if asked to (a no-op for other targets) and says so in the new file. A file
  // that cannot be opened leaves the old one in use, with a line saying why.
  void ReopenIfRequested();

 private:
  enum class Target { kStream, kStderr, kJournal, kSyslog, kFile };
  ServeLog(Target target, std::string path, int fd);
  void WriteLocked(LogPriority priority, const std::string& text);
  void ReopenLocked();

  Target target_;
  std::ostream* stream_ = nullptr;  // kStream
  std::string path_;                // kFile
  int fd_ = -1;                     // kFile, kStderr, kJournal
  std::atomic<bool> reopen_requested_{false};
  std::mutex mutex_;
};

}  // namespace storemove::stream::net
