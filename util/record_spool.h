// Records appended in order and read back in order, for scratch data that may outgrow memory
// (a Maildir tree's scan, the runs of util/external_sort.h). Up to `memory_budget` bytes stay
// in memory; past that everything goes to one unlinked temporary file in $TMPDIR (else /tmp),
// written through a small buffer. Where no temporary file can be made, or a write to it fails
// (a full $TMPDIR), the records from there on stay in memory, as the store's MessageList and
// relink's DistinctCounter keep theirs: the spool saves memory, it is never a new way to fail.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/fs.h"

namespace storemove {

class RecordSpool {
 public:
  explicit RecordSpool(size_t memory_budget) : memory_budget_(memory_budget) {}
  RecordSpool(const RecordSpool&) = delete;
  RecordSpool& operator=(const RecordSpool&) = delete;

  void Append(std::string_view record);
  // The position after the last record: a Reader reads the records between two positions.
  uint64_t end() const { return file_bytes_ + memory_.size(); }
  bool spilled() const { return file_.valid(); }  // a temporary file was made for the records

  // Reads the records in [begin, end) in order. The spool must not be appended to while a
  // Reader of it is in use (a record in memory is referred to, not copied).
  class Reader {
   public:
    Reader(RecordSpool& spool, uint64_t begin, uint64_t end, size_t buffer_size = 64 << 10);
    // The next record, valid until the next call; false at `end`.
    bool Next(std::string_view* record);

   private:
    // Makes `need` bytes from pos_ readable in buffer_ (file only).
    void Fill(size_t need);
    const RecordSpool& spool_;
    uint64_t pos_, end_;
    std::string buffer_;
    uint64_t buffer_start_ = 0;  // spool position of buffer_[0]
  };

 private:
  void Flush();  // the write buffer into the file
  size_t memory_budget_;
  bool temporary_failed_ = false;  // no file could be made or written: memory from here on
  UniqueFd file_;
  std::string file_dir_;   // for messages
  uint64_t file_bytes_ = 0;  // the records before this position are in the file, the rest in memory_
  std::string memory_;
};

}  // namespace storemove
