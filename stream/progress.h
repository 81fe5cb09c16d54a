// Live progress on a terminal and the end-of-session summary.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace storemove::stream {

class Progress {
 public:
  // `live`: redraw one status line on stderr (a TTY, or -v); `label` prefixes it.
  Progress(std::string label, bool live);
  void set_total(uint64_t messages, uint64_t bytes);  // enables the ETA
  void Add(uint64_t messages, uint64_t bytes);
  void AddWire(uint64_t bytes) { wire_bytes_ = bytes; }
  void Finish();  // clears the live line
  uint64_t messages() const { return messages_; }
  uint64_t bytes() const { return bytes_; }
  double seconds() const;

 private:
  void Draw(bool force);
  std::string label_;
  bool live_;
  uint64_t messages_ = 0, bytes_ = 0, wire_bytes_ = 0;
  uint64_t total_messages_ = 0, total_bytes_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string HumanBytes(double bytes);

}  // namespace storemove::stream
