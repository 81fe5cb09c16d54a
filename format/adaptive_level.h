// The compression level of a one-way stream chosen from where its time goes, as `zstd --adapt`
// does: lower while the writer waits for the compressor, higher while the compressor waits for
// the output. Pure: the caller measures, this decides (docs/stream-format.md §10).
#pragma once

#include <cstddef>

namespace storemove::format {

class AdaptiveLevel {
 public:
  // One measuring window: its wall time, the part of it the writer spent waiting for room in
  // the compressor's queue, the part the compressor's thread spent waiting for the output to
  // take its bytes, and the part it spent compressing; and the machine's idle share over it
  // (-1: not known).
  struct Window {
    double wall_seconds = 0;
    double writer_waited_seconds = 0;
    double output_waited_seconds = 0;
    double compress_seconds = 0;
    double cpu_idle_share = -1;
  };

  // The levels it moves between, lowest first, all with the 32 MiB long-distance window but
  // the lowest: long-distance matching costs ~0.25 CPU-seconds per 150 MiB at any level, and
  // the lowest rung is for a compressor that must cost next to nothing. zstd turns the window
  // on or off only between frames, so stepping onto or off the lowest rung starts a frame.
  static constexpr int kLadder[] = {-50, -10, -3, 1, 3, 6, 9};
  static constexpr size_t kRungs = sizeof(kLadder) / sizeof(kLadder[0]);
  static constexpr size_t kShortWindowRungs = 1;
  // A window is output-bound when the output took this share of it and twice the compressing
  // time: writing then costs more than compressing harder does (an output in memory or a fast
  // pipe costs little a byte, and never sends the level up). It is compressor-bound when the
  // writer waited this share and compressing took twice as long as writing. In between (a
  // link that takes the bytes about as fast as they come) the level stays.
  static constexpr double kOutputBound = 0.25;
  static constexpr double kOutputOverCompress = 2.0;
  static constexpr double kWriterBound = 0.10;
  static constexpr double kCompressOverOutput = 2.0;
  // It is compressor-bound too when the processors were mostly busy while the output
  // took little: the compressor's cycles then come out of the work beside it (the reads of a
  // cold store on two cores), though the writer may not wait for it.
  static constexpr double kCpuIdleFloor = 0.25;
  static constexpr double kOutputLight = 0.15;
  // Buffers downstream (a socket's few MiB) take bursts at no cost, so one window can look
  // compressor-bound on a slow link: a change waits for windows in a row...
  static constexpr int kWindowsBeforeUp = 3;
  static constexpr int kWindowsBeforeDown = 2;
  // ...except down when the writer waited this share (or the processors were idle less than
  // this share) while the output took less than that,
  static constexpr double kCpuIdleClearly = 0.10;
  static constexpr double kWriterClearly = 0.25;
  static constexpr double kOutputFree = 0.05;
  // and up when the output took this share and this many times the compressing.
  static constexpr double kOutputClearly = 0.5;
  static constexpr double kOutputClearlyOverCompress = 4.0;

  // Starts at `level`'s rung: the lowest at or above it, the highest for a level above them all.
  explicit AdaptiveLevel(int level);

  // Takes one window's figures; returns the level for the next window.
  int Next(const Window& window);

  int level() const { return kLadder[rung_]; }
  bool long_window() const { return rung_ >= kShortWindowRungs; }
  int lowest() const { return kLadder[lowest_]; }    // the lowest level chosen so far
  int highest() const { return kLadder[highest_]; }  // the highest
  size_t changes() const { return changes_; }

 private:
  size_t rung_ = 0, lowest_ = 0, highest_ = 0;
  int output_bound_windows_ = 0;
  int compressor_bound_windows_ = 0;
  size_t changes_ = 0;
};

}  // namespace storemove::format
