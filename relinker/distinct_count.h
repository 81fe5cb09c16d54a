// Counting the distinct values among as many as a partition holds, in bounded memory.
//
// relink's survey asks two questions of every message of a partition: how many different
// contents (digest, size), and how many bytes the different inodes take. A hash set of every
// value grows with the store (~70 B a message); a store of ten million messages would need a
// gigabyte. Here values gather in a buffer; a full buffer is sorted and deduplicated in place,
// and, unless that freed half of it, written as one sorted run to an unlinked temporary file in
// $TMPDIR (32 B a value). Count() merges the runs. Where the temporary file cannot be made or
// written, the values stay in memory, as before: the spool saves memory, it is never a new way
// to fail.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "util/fs.h"

namespace storemove::relinker {

class DistinctCounter {
 public:
  struct Value {
    std::array<uint64_t, 3> key{};  // what makes two values the same
    uint64_t weight = 0;            // summed once per distinct key (equal keys carry equal weights)
  };
  struct Result {
    uint64_t distinct = 0;
    uint64_t weight = 0;
  };

  // `in_memory`: values buffered before a run is written (32 B each).
  explicit DistinctCounter(size_t in_memory = kDefaultInMemory);

  void Add(const Value& value);
  // The distinct keys added so far and the sum of their weights. Once only: it drops the values.
  Result Count();

  // Runs written so far (for tests).
  size_t runs() const { return runs_.size(); }

  static constexpr size_t kDefaultInMemory = 64 * 1024;  // 2 MiB

 private:
  void SortAndDeduplicate();
  void Spill();

  size_t in_memory_;
  std::vector<Value> buffer_;
  UniqueFd fd_;
  std::string shown_;
  uint64_t written_ = 0;                              // values in the file
  std::vector<std::pair<uint64_t, uint64_t>> runs_;  // (first value, count) of each run
};

}  // namespace storemove::relinker
