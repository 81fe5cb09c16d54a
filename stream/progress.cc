#include "stream/progress.h"

#include <unistd.h>

#include <cmath>
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

std::optional<double> EstimateSecondsLeft(uint64_t done, uint64_t total, double seconds) {
  if (total == 0 || done == 0 || done > total || !(seconds > 0)) return std::nullopt;
  return double(total - done) * seconds / double(done);
}

std::string FormatDuration(double seconds) {
  long s = std::lround(std::max(0.0, seconds));
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%lds", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  return buf;
}

std::string FormatProgressLine(const ProgressFigures& f) {
  double rate = f.seconds > 0 ? double(f.bytes) / f.seconds : 0;
  std::string out = f.label + ": " + std::to_string(f.messages) + " messages, " + HumanBytes(double(f.bytes)) + ", " +
                    HumanBytes(rate) + "/s";
  if (f.wire_bytes) out += ", " + HumanBytes(double(f.wire_bytes)) + " on the wire";
  uint64_t done = 0, total = 0;
  if (f.total_bytes) done = f.bytes, total = f.total_bytes;
  else if (f.total_messages) done = f.messages, total = f.total_messages;
  else if (f.total_input_bytes) done = f.input_bytes, total = f.total_input_bytes;
  if (std::optional<double> left = EstimateSecondsLeft(done, total, f.seconds)) {
    char pct[16];
    std::snprintf(pct, sizeof pct, "%.0f%%", 100.0 * double(done) / double(total));
    out += std::string(", ") + pct + ", ETA " + FormatDuration(*left);
  }
  return out;
}

Progress::Progress(std::string label, bool live)
    : live_(live), start_(std::chrono::steady_clock::now()), pass_start_(start_), last_draw_(start_) {
  figures_.label = std::move(label);
}

void Progress::set_total(uint64_t messages, uint64_t bytes) {
  figures_.total_messages = messages;
  figures_.total_bytes = bytes;
}

void Progress::Restart(std::string label, uint64_t total_messages, uint64_t total_bytes) {
  figures_.label = std::move(label);
  figures_.messages = figures_.bytes = 0;
  set_total(total_messages, total_bytes);
  pass_start_ = std::chrono::steady_clock::now();
  Draw(true);
}

void Progress::Add(uint64_t messages, uint64_t bytes) {
  figures_.messages += messages;
  figures_.bytes += bytes;
  Draw(false);
}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::Draw(bool force) {
  if (!live_) return;
  auto now = std::chrono::steady_clock::now();
  // The first figures at once (a short run shows a line too), then at most five lines a second.
  if (!force && drawn_ && now - last_draw_ < std::chrono::milliseconds(200)) return;
  drawn_ = true;
  last_draw_ = now;
  figures_.seconds = std::chrono::duration<double>(now - pass_start_).count();
  if (input_source_) figures_.input_bytes = input_source_();
  std::string out = "\r" + FormatProgressLine(figures_) + "\033[K";
  (void)!::write(STDERR_FILENO, out.data(), out.size());
}

void Progress::Finish() {
  if (!live_) return;
  const char* clear = "\r\033[K";
  (void)!::write(STDERR_FILENO, clear, 4);
}

}  // namespace storemove::stream
