#include "util/cpu_idle.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>

namespace storemove {

CpuIdleMeter::CpuIdleMeter() { valid_ = Read(&last_); }

double CpuIdleMeter::IdleShareSinceLast() {
  Sample now;
  if (!Read(&now)) return -1;
  const bool had = valid_;
  const Sample before = last_;
  last_ = now;
  valid_ = true;
  if (!had || now.total <= before.total) return -1;
  // iowait may go backwards on a tickless kernel: then no idle time is counted for the interval.
  const uint64_t idle = now.idle > before.idle ? now.idle - before.idle : 0;
  const double share = static_cast<double>(idle) / static_cast<double>(now.total - before.total);
  return share > 1 ? 1 : share;
}

bool CpuIdleMeter::Parse(std::string_view line, Sample* sample) {
  if (line.substr(0, 4) != "cpu ") return false;
  line.remove_prefix(4);
  Sample s;
  int fields = 0;
  while (!line.empty() && line.front() != '\n') {
    if (line.front() == ' ') {
      line.remove_prefix(1);
      continue;
    }
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), value);
    if (ec != std::errc()) return false;
    line.remove_prefix(static_cast<size_t>(end - line.data()));
    // user nice system idle iowait irq softirq steal guest guest_nice: guest time is already
    // in user and nice, so it is not added twice.
    if (fields < 8) s.total += value;
    if (fields == 3 || fields == 4) s.idle += value;
    ++fields;
  }
  if (fields < 5) return false;
  *sample = s;
  return true;
}

bool CpuIdleMeter::Read(Sample* sample) {
  int fd = ::open("/proc/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 0) return false;
  return Parse(std::string_view(buf, static_cast<size_t>(n)), sample);
}

}  // namespace storemove
