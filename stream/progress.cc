#include "stream/progress.h"

#include <unistd.h>

#include <cstdio>

namespace storemove::stream {

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

Progress::Progress(std::string label, bool live)
    : label_(std::move(label)), live_(live), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

void Progress::set_total(uint64_t messages, uint64_t bytes) {
  total_messages_ = messages;
  total_bytes_ = bytes;
}

void Progress::Add(uint64_t messages, uint64_t bytes) {
  messages_ += messages;
  bytes_ += bytes;
  Draw(false);
}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::Draw(bool force) {
  if (!live_) return;
  auto now = std::chrono::steady_clock::now();
  if (!force && now - last_draw_ < std::chrono::milliseconds(200)) return;
  last_draw_ = now;
  double secs = seconds();
  double rate = secs > 0 ? double(bytes_) / secs : 0;
  char line[256];
  int n = std::snprintf(line, sizeof line, "\r%s: %llu messages, %s, %s/s", label_.c_str(),
                        static_cast<unsigned long long>(messages_), HumanBytes(double(bytes_)).c_str(),
                        HumanBytes(rate).c_str());
  std::string out(line, size_t(n));
  if (wire_bytes_) out += ", " + HumanBytes(double(wire_bytes_)) + " on the wire";
  if (total_bytes_ && rate > 0 && bytes_ <= total_bytes_) {
    std::snprintf(line, sizeof line, ", %.0f%%, ETA %.0fs", 100.0 * double(bytes_) / double(total_bytes_),
                  double(total_bytes_ - bytes_) / rate);
    out += line;
  }
  out += "\033[K";
  (void)!::write(STDERR_FILENO, out.data(), out.size());
}

void Progress::Finish() {
  if (!live_) return;
  const char* clear = "\r\033[K";
  (void)!::write(STDERR_FILENO, clear, 4);
}

}  // namespace storemove::stream
