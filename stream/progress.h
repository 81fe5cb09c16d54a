// Live progress on a terminal and the end-of-session summary.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace storemove::stream {

// One moment of a long pass: what the live line shows. Pure data, so the line and its ETA are
// computed (and tested) without a clock or a terminal.
struct ProgressFigures {
  std::string label;
  uint64_t messages = 0, bytes = 0;
  double seconds = 0;           // since the start
  uint64_t wire_bytes = 0;      // 0 = not shown
  // The ETA needs a total: bytes first, else messages, else the input read (a restore from a
  // regular file: its size is known, what the stream holds is not). 0 = unknown.
  uint64_t total_messages = 0, total_bytes = 0;
  uint64_t input_bytes = 0, total_input_bytes = 0;
};

// Seconds left at the rate so far (done / seconds), or nothing when there is no total, nothing
// done yet, no time elapsed, or more done than the total (an estimate that was short).
std::optional<double> EstimateSecondsLeft(uint64_t done, uint64_t total, double seconds);
// "7s", "3m05s", "2h03m"; for durations a human reads.
std::string FormatDuration(double seconds);
// "restore: 1200 messages, 3.4 MiB, 1.1 MiB/s, 40%, ETA 5s" (no trailing newline, no escapes).
std::string FormatProgressLine(const ProgressFigures& f);

class Progress {
 public:
  // `live`: redraw one status line on stderr (a TTY, or -v); `label` prefixes it.
  Progress(std::string label, bool live);
  void set_total(uint64_t messages, uint64_t bytes);  // enables the ETA
  // The ETA from input consumed instead (the line still counts messages and bytes).
  void set_input_total(uint64_t bytes) { figures_.total_input_bytes = bytes; }
  void set_input(uint64_t bytes) { figures_.input_bytes = bytes; }
  // Asked for the input read so far only when a line is drawn (an lseek(2) per message would
  // cost a system call per message for a figure shown five times a second).
  void set_input_source(std::function<uint64_t()> source) { input_source_ = std::move(source); }
  void set_label(std::string label) { figures_.label = std::move(label); }
  // Back to zero with a new label and total, for a tool whose passes each cover everything.
  void Restart(std::string label, uint64_t total_messages, uint64_t total_bytes);
  void Add(uint64_t messages, uint64_t bytes);
  void AddWire(uint64_t bytes) { figures_.wire_bytes = bytes; }
  void Finish();  // clears the live line
  uint64_t messages() const { return figures_.messages; }
  uint64_t bytes() const { return figures_.bytes; }
  double seconds() const;

 private:
  void Draw(bool force);
  bool live_;
  bool drawn_ = false;
  ProgressFigures figures_;
  std::function<uint64_t()> input_source_;
  std::chrono::steady_clock::time_point start_, pass_start_, last_draw_;
};

std::string HumanBytes(double bytes);

}  // namespace storemove::stream
