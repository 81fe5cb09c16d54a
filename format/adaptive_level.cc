#include "format/adaptive_level.h"

namespace storemove::format {

AdaptiveLevel::AdaptiveLevel(int level) {
  while (rung_ + 1 < kRungs && kLadder[rung_] < level) ++rung_;
  lowest_ = highest_ = rung_;
}

int AdaptiveLevel::Next(const Window& window) {
  if (window.wall_seconds <= 0) return level();
  const double output_share = window.output_waited_seconds / window.wall_seconds;
  const double writer_share = window.writer_waited_seconds / window.wall_seconds;
  const bool output_bound =
      output_share >= kOutputBound && window.output_waited_seconds >= kOutputOverCompress * window.compress_seconds;
  const bool known_idle = window.cpu_idle_share >= 0;
  const bool writer_held =
      writer_share >= kWriterBound && window.compress_seconds >= kCompressOverOutput * window.output_waited_seconds;
  const bool cpu_held = known_idle && window.cpu_idle_share < kCpuIdleFloor && output_share < kOutputLight;
  const bool compressor_bound = !output_bound && (writer_held || cpu_held);
  // Held back much while the output is all but free: no burst of a buffer downstream (a
  // socket's, a pipe's) explains that, so act on one window.
  const bool clearly_compressor_bound =
      compressor_bound && output_share < kOutputFree &&
      (writer_share >= kWriterClearly || (known_idle && window.cpu_idle_share < kCpuIdleClearly));
  // And up at once when the output took most of the window, many times the compressing.
  const bool clearly_output_bound = output_bound && output_share >= kOutputClearly &&
                                    window.output_waited_seconds >= kOutputClearlyOverCompress * window.compress_seconds;
  output_bound_windows_ = output_bound ? output_bound_windows_ + 1 : 0;
  compressor_bound_windows_ = compressor_bound ? compressor_bound_windows_ + 1 : 0;
  size_t next = rung_;
  if ((clearly_output_bound || output_bound_windows_ >= kWindowsBeforeUp) && rung_ + 1 < kRungs)
    next = rung_ + 1;
  else if ((clearly_compressor_bound || compressor_bound_windows_ >= kWindowsBeforeDown) && rung_ > 0)
    next = rung_ - 1;
  if (next != rung_) {
    rung_ = next;
    output_bound_windows_ = compressor_bound_windows_ = 0;
    ++changes_;
    if (rung_ < lowest_) lowest_ = rung_;
    if (rung_ > highest_) highest_ = rung_;
  }
  return level();
}

}  // namespace storemove::format
