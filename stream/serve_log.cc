#include "stream/serve_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "util/error.h"
#include "util/foreign_link.h"
#include "util/fs.h"
#include "util/iso_time.h"

namespace storemove::stream::net {
namespace {

// The log file. Its path is followed as the administrator's, not through a link another user
// planted (helper-126 M3: root's serve appended to a file a link in a sticky directory named);
// checked at every reopen, as logrotate leaves the name free meanwhile. Throws kAuth or kIo.
UniqueFd OpenLogFile(const std::string& path) {
  RefuseForeignLink(path, "--log file");
  // 0640: the log names users and peers.
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) Throw(Errc::kIo, "cannot open " + path + ": " + std::strerror(errno));
  return UniqueFd(fd);
}

// systemd connects a service's standard error to the journal and says so in JOURNAL_STREAM
// ("device:inode" of that socket); a standard error redirected elsewhere no longer matches.
bool StderrIsJournal() {
  const char* env = std::getenv("JOURNAL_STREAM");
  if (env == nullptr) return false;
  uintmax_t dev = 0, ino = 0;
  if (std::sscanf(env, "%" SCNuMAX ":%" SCNuMAX, &dev, &ino) != 2) return false;
  struct stat st;
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  return uintmax_t(st.st_dev) == dev && uintmax_t(st.st_ino) == ino;
}

std::string Timestamp() { return IsoUtcTime(std::time(nullptr)); }

// One event, one line: an error text with a newline in it must not forge a second event.
std::string OneLine(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  return text;
}

void WriteAll(int fd, const std::string& line) {
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a log that cannot be written must not stop the server
    done += size_t(n);
  }
}

}  // namespace

std::unique_ptr<ServeLog> ServeLog::Open(const std::string& target) {
  if (target.empty())
    return std::unique_ptr<ServeLog>(new ServeLog(StderrIsJournal() ? Target::kJournal : Target::kStderr, "",
                                                  STDERR_FILENO));
  if (target == "syslog") {
    ::openlog("storemove", LOG_PID, LOG_DAEMON);
    return std::unique_ptr<ServeLog>(new ServeLog(Target::kSyslog, "", -1));
  }
  UniqueFd fd;
  try {
    fd = OpenLogFile(target);
  } catch (const Error& e) {
    Throw(e.code(), std::string("--log: ") + e.what());
  }
  return std::unique_ptr<ServeLog>(new ServeLog(Target::kFile, target, fd.release()));
}

ServeLog::ServeLog(std::ostream& out) : target_(Target::kStream), stream_(&out) {}

ServeLog::ServeLog(Target target, std::string path, int fd) : target_(target), path_(std::move(path)), fd_(fd) {}

ServeLog::~ServeLog() {
  if (target_ == Target::kFile && fd_ >= 0) ::close(fd_);
  if (target_ == Target::kSyslog) ::closelog();
}

void ServeLog::Line(LogPriority priority, const std::string& text) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (reopen_requested_.exchange(false)) ReopenLocked();
  WriteLocked(priority, text);
}

void ServeLog::ReopenIfRequested() {
  if (!reopen_requested_.exchange(false)) return;
  std::lock_guard<std::mutex> lock(mutex_);
  ReopenLocked();
}

void ServeLog::ReopenLocked() {
  if (target_ != Target::kFile) return;
  int fd = -1;
  try {
    fd = OpenLogFile(path_).release();
  } catch (const Error& e) {
    WriteLocked(LogPriority::kError, std::string("storemove serve: reopening the log: ") + e.what() +
                                         "; still writing to the file open before");
    return;
  }
  ::close(fd_);
  fd_ = fd;
  WriteLocked(LogPriority::kNotice, "storemove serve: log reopened");
}

void ServeLog::WriteLocked(LogPriority priority, const std::string& text) {
  switch (target_) {
    case Target::kStream:
      *stream_ << Timestamp() << " " << OneLine(text) << "\n";
      stream_->flush();
      break;
    case Target::kStderr:
    case Target::kFile: WriteAll(fd_, Timestamp() + " " + OneLine(text) + "\n"); break;
    case Target::kJournal: WriteAll(fd_, "<" + std::to_string(int(priority)) + ">" + OneLine(text) + "\n"); break;
    case Target::kSyslog: ::syslog(int(priority), "%s", OneLine(text).c_str()); break;
  }
}

}  // namespace storemove::stream::net
