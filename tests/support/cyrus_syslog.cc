// Cyrus logs only through syslog(3), and tests have no syslog daemon: preloaded (LD_PRELOAD) into
// Cyrus's master and imapd by tests/support/cyrus_server.cc, this library appends each message as
// one line "ident[pid]: text" to the file named by STOREMOVE_SYSLOG_FILE instead, so a server that
// fails says why in CyrusServer::Log(). Debug messages are dropped. Fortified builds (Debian's)
// call __syslog_chk, so that is replaced too.
#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace {

const char* g_ident = "cyrus";

void Log(int priority, const char* format, va_list args) {
  if (LOG_PRI(priority) == LOG_DEBUG) return;
  const int saved = errno;  // for %m, which glibc's printf expands
  const char* path = std::getenv("STOREMOVE_SYSLOG_FILE");
  if (path == nullptr) return;
  char line[4096];
  int n = std::snprintf(line, sizeof line, "%s[%d]: ", g_ident, int(::getpid()));
  if (n < 0 || size_t(n) >= sizeof line) return;
  errno = saved;
  const int m = std::vsnprintf(line + n, sizeof line - size_t(n), format, args);
  if (m < 0) return;
  n = size_t(n) + size_t(m) >= sizeof line - 1 ? int(sizeof line - 2) : n + m;
  line[n++] = '\n';
  const int fd = ::open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  const ssize_t written = ::write(fd, line, size_t(n));  // one write: lines of processes do not mix
  (void)written;
  ::close(fd);
  errno = saved;
}

}  // namespace

extern "C" {

void openlog(const char* ident, int, int) {
  if (ident != nullptr) g_ident = ident;
}

void closelog(void) {}

void vsyslog(int priority, const char* format, va_list args) { Log(priority, format, args); }

void syslog(int priority, const char* format, ...) {
  va_list args;
  va_start(args, format);
  Log(priority, format, args);
  va_end(args);
}

void __vsyslog_chk(int priority, int, const char* format, va_list args) { Log(priority, format, args); }

void __syslog_chk(int priority, int, const char* format, ...) {
  va_list args;
  va_start(args, format);
  Log(priority, format, args);
  va_end(args);
}

}  // extern "C"
