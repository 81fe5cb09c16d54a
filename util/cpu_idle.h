// How idle this machine's processors were: the share of CPU time, over all of them, spent idle
// or waiting for I/O since the last look (/proc/stat). An adaptive compressor asks it whether
// its cycles come out of idle time or out of the work beside it.
#pragma once

#include <cstdint>
#include <string_view>

namespace storemove {

class CpuIdleMeter {
 public:
  CpuIdleMeter();  // takes the first look
  // Idle share (0..1) since the previous call (or construction); -1 when /proc/stat cannot be
  // read or no time has passed.
  double IdleShareSinceLast();

  struct Sample {
    uint64_t idle = 0, total = 0;  // clock ticks, all processors
  };
  // The first line of /proc/stat ("cpu  user nice system idle iowait irq softirq steal ...");
  // false when it is not one.
  static bool Parse(std::string_view line, Sample* sample);

 private:
  static bool Read(Sample* sample);
  Sample last_;
  bool valid_ = false;
};

}  // namespace storemove
