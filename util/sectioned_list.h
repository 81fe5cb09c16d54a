// Items in numbered sections, read back a section at a time, each section's items in the order
// they were added: a listing grouped by section (each backup group's users) made in one pass
// over something read in another order (the store's users), without holding it. Past
// `memory_budget` the items go through util/external_sort.h's runs on disk, so memory stays
// near the budget however many items come.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "util/external_sort.h"

namespace storemove {

class SectionedList {
 public:
  explicit SectionedList(size_t sections, size_t memory_budget = 4 << 20);

  void Add(size_t section, std::string_view item);
  uint64_t count(size_t section) const { return counts_.at(section); }

  // Ends adding: sorts what is in memory and opens the runs on disk, so that a listing can find
  // their errors before it writes its first line. Read calls it when it was not.
  void Finish();
  // Calls `each` for the items of `section`, in the order added. Ends adding; sections are
  // read in increasing order, each at most once (a section passed over is skipped).
  void Read(size_t section, const std::function<void(std::string_view)>& each);

 private:
  std::vector<uint64_t> counts_;
  ExternalSorter sorter_;
  bool reading_ = false;
  size_t next_section_ = 0;    // the lowest section Read may still be called for
  bool have_pending_ = false;  // an item read past the end of the last section read
  size_t pending_section_ = 0;
  std::string pending_item_;
};

}  // namespace storemove
