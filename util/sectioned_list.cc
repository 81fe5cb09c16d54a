// util/sectioned_list.h. An item is sorted by its section number, 4 bytes big-endian, so the
// sorter's bytewise order is the sections' order; items of one section keep their order.
#include "util/sectioned_list.h"

#include "util/error.h"

namespace storemove {
namespace {

std::string SectionKey(size_t section) {
  std::string key(4, '\0');
  for (int i = 0; i < 4; ++i) key[size_t(i)] = char((section >> (8 * (3 - i))) & 0xff);
  return key;
}

size_t SectionOf(std::string_view key) {
  if (key.size() != 4) Throw(Errc::kCorrupt, "a sectioned list's key is not 4 bytes");
  size_t section = 0;
  for (unsigned char c : key) section = section << 8 | c;
  return section;
}

}  // namespace

SectionedList::SectionedList(size_t sections, size_t memory_budget) : counts_(sections), sorter_(memory_budget) {
  if (sections > UINT32_MAX) Throw(Errc::kInvalidArgument, "a sectioned list of more than 2^32 sections");
}

void SectionedList::Add(size_t section, std::string_view item) {
  if (reading_) Throw(Errc::kInvalidArgument, "SectionedList::Add after Finish");
  ++counts_.at(section);
  sorter_.Add(SectionKey(section), item);
}

void SectionedList::Finish() {
  if (reading_) return;
  sorter_.Finish();
  reading_ = true;
}

void SectionedList::Read(size_t section, const std::function<void(std::string_view)>& each) {
  if (section >= counts_.size() || section < next_section_)
    Throw(Errc::kInvalidArgument, "SectionedList::Read out of order");
  Finish();
  next_section_ = section + 1;
  if (have_pending_) {
    if (pending_section_ > section) return;
    have_pending_ = false;
    if (pending_section_ == section) each(pending_item_);
  }
  std::string_view key, item;
  while (sorter_.Next(&key, &item)) {
    const size_t of = SectionOf(key);
    if (of < section) continue;
    if (of > section) {
      have_pending_ = true;
      pending_section_ = of;
      pending_item_.assign(item);
      return;
    }
    each(item);
  }
}

}  // namespace storemove
