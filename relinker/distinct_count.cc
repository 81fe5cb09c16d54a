#include "relinker/distinct_count.h"

#include <algorithm>
#include <limits>
#include <queue>

#include "util/error.h"

namespace storemove::relinker {

namespace {

bool KeyLess(const DistinctCounter::Value& a, const DistinctCounter::Value& b) { return a.key < b.key; }
bool KeyEqual(const DistinctCounter::Value& a, const DistinctCounter::Value& b) { return a.key == b.key; }

// Values read back from the file at once for all runs together, while merging.
constexpr size_t kMergeBufferValues = 64 * 1024;  // 2 MiB

// One run being merged: a window of its values, refilled from the file.
struct RunCursor {
  uint64_t next = 0;  // next value of the run to read from the file
  uint64_t end = 0;
  std::vector<DistinctCounter::Value> window;
  size_t pos = 0;
};

}  // namespace

DistinctCounter::DistinctCounter(size_t in_memory) : in_memory_(std::max<size_t>(in_memory, 2)) {}

void DistinctCounter::Add(const Value& value) {
  if (buffer_.capacity() == 0) buffer_.reserve(std::min<size_t>(in_memory_, kDefaultInMemory));
  buffer_.push_back(value);
  if (buffer_.size() < in_memory_) return;
  SortAndDeduplicate();
  // Mostly repeats (one content in many folders): the buffer goes on; else it becomes a run.
  if (buffer_.size() > in_memory_ / 2) Spill();
}

void DistinctCounter::SortAndDeduplicate() {
  std::sort(buffer_.begin(), buffer_.end(), KeyLess);
  buffer_.erase(std::unique(buffer_.begin(), buffer_.end(), KeyEqual), buffer_.end());
}

// Writes the sorted buffer as one run. Where the file cannot be made or written, every value
// comes back into memory and no run is written again.
void DistinctCounter::Spill() {
  if (buffer_.empty()) return;
  if (!fd_.valid()) {
    fd_ = OpenAnonymousTemporary(&shown_);
    if (!fd_.valid()) {
      in_memory_ = std::numeric_limits<size_t>::max();
      return;
    }
  }
  try {
    PwriteAll(fd_.get(), buffer_.data(), buffer_.size() * sizeof(Value), static_cast<off_t>(written_ * sizeof(Value)),
              shown_);
  } catch (const Error&) {  // a full or failing $TMPDIR
    std::vector<Value> all(written_);
    if (written_ != 0) PreadAll(fd_.get(), all.data(), written_ * sizeof(Value), 0, "relink's survey in " + shown_);
    all.insert(all.end(), buffer_.begin(), buffer_.end());
    buffer_ = std::move(all);
    SortAndDeduplicate();
    written_ = 0;
    runs_.clear();
    fd_.reset();
    in_memory_ = std::numeric_limits<size_t>::max();
    return;
  }
  runs_.emplace_back(written_, buffer_.size());
  written_ += buffer_.size();
  buffer_.clear();
}

DistinctCounter::Result DistinctCounter::Count() {
  Result result;
  SortAndDeduplicate();
  if (!runs_.empty()) Spill();
  if (runs_.empty()) {  // everything in memory
    for (const Value& v : buffer_) {
      ++result.distinct;
      result.weight += v.weight;
    }
    buffer_ = {};
    return result;
  }
  buffer_ = {};

  // A k-way merge of the sorted runs; a key is new when it differs from the last one taken.
  const size_t window = std::max<size_t>(64, kMergeBufferValues / runs_.size());
  std::vector<RunCursor> cursors(runs_.size());
  auto refill = [&](RunCursor& c) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(window, c.end - c.next));
    c.window.resize(n);
    if (n != 0)
      PreadAll(fd_.get(), c.window.data(), n * sizeof(Value), static_cast<off_t>(c.next * sizeof(Value)),
               "relink's survey in " + shown_);
    c.next += n;
    c.pos = 0;
    return n != 0;
  };
  auto later = [&](size_t a, size_t b) { return KeyLess(cursors[b].window[cursors[b].pos], cursors[a].window[cursors[a].pos]); };
  std::priority_queue<size_t, std::vector<size_t>, decltype(later)> heap(later);
  for (size_t i = 0; i < runs_.size(); ++i) {
    cursors[i].next = runs_[i].first;
    cursors[i].end = runs_[i].first + runs_[i].second;
    if (refill(cursors[i])) heap.push(i);
  }
  bool any = false;
  Value last;
  while (!heap.empty()) {
    const size_t i = heap.top();
    heap.pop();
    RunCursor& c = cursors[i];
    const Value& v = c.window[c.pos];
    if (!any || !KeyEqual(v, last)) {
      ++result.distinct;
      result.weight += v.weight;
      last = v;
      any = true;
    }
    if (++c.pos < c.window.size() || refill(c)) heap.push(i);
  }
  runs_.clear();
  fd_.reset();
  written_ = 0;
  return result;
}

}  // namespace storemove::relinker
