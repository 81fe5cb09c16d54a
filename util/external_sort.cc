// util/external_sort.h. A run's record is the key's size (4 bytes, little-endian), the key and
// the value.
#include "util/external_sort.h"

#include <algorithm>
#include <queue>

#include "util/bytes.h"
#include "util/error.h"

namespace storemove {

struct ExternalSorter::Merge {
  struct Head {
    std::string_view key, value;
    size_t run;
  };
  // The smallest key first; of equal keys the earlier run's, which was added first.
  struct Later {
    bool operator()(const Head& a, const Head& b) const { return a.key != b.key ? a.key > b.key : a.run > b.run; }
  };
  std::vector<RecordSpool::Reader> readers;
  std::priority_queue<Head, std::vector<Head>, Later> heads;
  bool pending = false;  // the record last returned is still to be replaced by its run's next
  size_t pending_run = 0;

  bool Advance(size_t run) {
    std::string_view record;
    if (!readers[run].Next(&record)) return false;
    if (record.size() < 4) Throw(Errc::kCorrupt, "a sorted run's record cut short");
    const uint32_t key_size = GetU32(reinterpret_cast<const uint8_t*>(record.data()));
    if (record.size() - 4 < key_size) Throw(Errc::kCorrupt, "a sorted run's record cut short");
    heads.push({record.substr(4, key_size), record.substr(4 + key_size), run});
    return true;
  }
};

ExternalSorter::ExternalSorter(size_t memory_budget) : memory_budget_(memory_budget) {}
ExternalSorter::~ExternalSorter() = default;

void ExternalSorter::Add(std::string_view key, std::string_view value) {
  if (finished_) Throw(Errc::kInvalidArgument, "ExternalSorter::Add after Finish");
  if (key.size() > UINT32_MAX / 2 || value.size() > UINT32_MAX / 2)
    Throw(Errc::kInvalidArgument, "a record to sort over 2 GiB");
  batch_.push_back({arena_.size(), static_cast<uint32_t>(key.size()), static_cast<uint32_t>(value.size())});
  arena_.append(key);
  arena_.append(value);
  ++count_;
  if (arena_.size() + batch_.size() * sizeof(Entry) >= memory_budget_) WriteRun();
}

void ExternalSorter::SortBatch() {
  std::stable_sort(batch_.begin(), batch_.end(),
                   [this](const Entry& a, const Entry& b) { return KeyOf(a) < KeyOf(b); });
}

void ExternalSorter::WriteRun() {
  if (batch_.empty()) return;
  SortBatch();
  const uint64_t begin = spool_.end();
  std::string record;
  for (const Entry& e : batch_) {
    record.clear();
    AppendU32(&record, e.key_size);
    record.append(arena_, e.offset, size_t{e.key_size} + e.value_size);
    spool_.Append(record);
  }
  runs_.emplace_back(begin, spool_.end());
  batch_.clear();
  arena_.clear();
}

void ExternalSorter::Finish() {
  if (finished_) return;
  finished_ = true;
  if (runs_.empty()) {
    SortBatch();
    return;
  }
  WriteRun();
  batch_.shrink_to_fit();
  arena_.shrink_to_fit();
  merge_ = std::make_unique<Merge>();
  // The runs share the budget for their read buffers.
  const size_t buffer = std::clamp<size_t>(memory_budget_ / runs_.size(), 4 << 10, 64 << 10);
  merge_->readers.reserve(runs_.size());
  for (const auto& [begin, end] : runs_) merge_->readers.emplace_back(spool_, begin, end, buffer);
  for (size_t run = 0; run < runs_.size(); ++run) merge_->Advance(run);
}

bool ExternalSorter::Next(std::string_view* key, std::string_view* value) {
  if (!finished_) Throw(Errc::kInvalidArgument, "ExternalSorter::Next before Finish");
  if (!merge_) {
    if (next_in_batch_ == batch_.size()) return false;
    const Entry& e = batch_[next_in_batch_++];
    *key = KeyOf(e);
    *value = std::string_view(arena_).substr(e.offset + e.key_size, e.value_size);
    return true;
  }
  // The run of the record returned last moves on only now: its reader's buffer held that record.
  if (merge_->pending) {
    merge_->pending = false;
    merge_->Advance(merge_->pending_run);
  }
  if (merge_->heads.empty()) return false;
  const Merge::Head head = merge_->heads.top();
  merge_->heads.pop();
  *key = head.key;
  *value = head.value;
  merge_->pending = true;
  merge_->pending_run = head.run;
  return true;
}

}  // namespace storemove
