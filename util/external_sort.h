// Sorts more records than memory holds (the files of a Maildir folder of millions of messages).
// Records are a key and a value; they come back by key, bytewise, and records of equal keys in
// the order they were added. Up to `memory_budget` bytes are sorted in memory; past that each
// full batch is sorted and written to a util/record_spool.h (a run in its temporary file), and
// reading merges the runs. Memory stays near the budget however many records come.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "util/record_spool.h"

namespace storemove {

class ExternalSorter {
 public:
  explicit ExternalSorter(size_t memory_budget);
  ~ExternalSorter();
  ExternalSorter(const ExternalSorter&) = delete;
  ExternalSorter& operator=(const ExternalSorter&) = delete;

  void Add(std::string_view key, std::string_view value);
  // Ends adding; Next then gives the records in order.
  void Finish();
  // The next record, valid until the next call; false after the last.
  bool Next(std::string_view* key, std::string_view* value);

  uint64_t size() const { return count_; }
  size_t runs() const { return runs_.size(); }  // batches written out (0: all in memory)

 private:
  struct Entry {
    uint64_t offset;  // in arena_
    uint32_t key_size;
    uint32_t value_size;
  };
  void SortBatch();
  void WriteRun();
  std::string_view KeyOf(const Entry& e) const { return std::string_view(arena_).substr(e.offset, e.key_size); }

  size_t memory_budget_;
  uint64_t count_ = 0;
  std::string arena_;
  std::vector<Entry> batch_;
  size_t next_in_batch_ = 0;
  bool finished_ = false;
  RecordSpool spool_{0};
  std::vector<std::pair<uint64_t, uint64_t>> runs_;  // [begin, end) in spool_
  struct Merge;
  std::unique_ptr<Merge> merge_;
};

}  // namespace storemove
