#include "tools/session_io.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <vector>

#include "util/error.h"
#include "util/local_time.h"

namespace storemove::tools {

Compression ParseCompression(const std::string& text, bool adapt_allowed) {
  if (text == "none") return {0, false};
  if (text == "adapt" && adapt_allowed) return {1, true};
  bool digits = !text.empty() && text.size() <= 2 && text.find_first_not_of("0123456789") == std::string::npos;
  int level = digits ? std::stoi(text) : -1;
  if (level < 1 || level > 19)
    Throw(Errc::kInvalidArgument, "--compress: '" + text + "' is not a level 1-19" +
                                      (adapt_allowed ? ", adapt or none" : " or none (adapt is for backup -f only)"));
  return {level, false};
}

int64_t ParseBackupDate(const std::string& text) {
  if (text.empty()) Throw(Errc::kInvalidArgument, "-d needs a date (YYYYMMDD[:HHMMSS]); leave -d out for a full backup");
  int y, mo, d, h = 0, mi = 0, s = 0;
  char tail;
  const bool dated_only = std::sscanf(text.c_str(), "%4d%2d%2d%c", &y, &mo, &d, &tail) == 3 && text.size() == 8;
  bool ok = dated_only;
  if (!ok) ok = std::sscanf(text.c_str(), "%4d%2d%2d:%2d%2d%2d%c", &y, &mo, &d, &h, &mi, &s, &tail) == 6 && text.size() == 15;
  if (!ok || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59)
    Throw(Errc::kInvalidArgument, "-d: '" + text + "' is not YYYYMMDD[:HHMMSS]");
  // A date that does not exist is refused, not moved (mktime makes 20260230 March 2nd).
  if (!IsCalendarDate(y, mo, d))
    Throw(Errc::kInvalidArgument, "-d: '" + text + "' is not a date (" + std::to_string(mo) + "/" + std::to_string(y) +
                                      " has no day " + std::to_string(d) + ")");
  // No message was stored before 1970 (save times count from it); year 0000 was a typo.
  if (y < 1970)
    Throw(Errc::kInvalidArgument, "-d: '" + text + "' is before 1970, when no message can have been stored; leave -d out for a full backup");
  const LocalDateTime at{y, mo, d, h, mi, s};
  const std::vector<int64_t> instants = LocalInstants(at);
  // An hour the clocks repeat (autumn) shows this time twice: the earlier instant, in every
  // zone. A dated backup must not miss mail; what it holds twice, restore finds already present.
  if (!instants.empty()) return instants.front();
  if (dated_only) {
    // Midnight skipped by a change of the clocks (Santiago, Havana): the day begins at the jump.
    // A day skipped entirely (Samoa, 2011-12-30) is no day to count from.
    const int64_t start = LocalClockReaches(at);
    const std::time_t t = static_cast<std::time_t>(start);
    std::tm tm{};
    if (::localtime_r(&t, &tm) != nullptr && tm.tm_year == y - 1900 && tm.tm_mon == mo - 1 && tm.tm_mday == d)
      return start;
    Throw(Errc::kInvalidArgument, "-d: '" + text + "': no such local day in " + LocalZoneName() + ": the clocks skipped it");
  }
  Throw(Errc::kInvalidArgument, "-d: '" + text + "': no such local time in " + LocalZoneName() + ": the clocks moved forward");
}

void ReportSession(const stream::SessionReport& report, const std::string& verb, bool json) {
  std::string line = json ? report.Json(verb) : report.Summary(verb);
  std::fprintf(stderr, "%s\n", line.c_str());
  if (json) return;
  for (const std::string& n : report.notes) std::fprintf(stderr, "storemove: %s: note: %s\n", verb.c_str(), n.c_str());
  for (const std::string& e : report.error_lines) std::fprintf(stderr, "storemove: %s: %s\n", verb.c_str(), e.c_str());
}

void InputProgress(int fd, uint64_t* total, std::function<uint64_t()>* consumed) {
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) return;
  *total = uint64_t(st.st_size);
  *consumed = [fd] {
    off_t at = ::lseek(fd, 0, SEEK_CUR);
    return at < 0 ? uint64_t(0) : uint64_t(at);
  };
}

std::string HostName() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

}  // namespace storemove::tools
