// util/record_spool.h. A record is its length (4 bytes, little-endian) and its bytes.
#include "util/record_spool.h"


#include "util/bytes.h"
#include "util/error.h"

namespace storemove {

namespace {
constexpr size_t kWriteBuffer = 256 << 10;

std::string Shown(const std::string& dir) { return "a temporary file in " + dir; }
}  // namespace

void RecordSpool::Append(std::string_view record) {
  if (record.size() > UINT32_MAX) Throw(Errc::kInvalidArgument, "a spooled record over 4 GiB");
  AppendU32(&memory_, static_cast<uint32_t>(record.size()));
  memory_.append(record);
  if (temporary_failed_) return;
  if (!file_.valid() && memory_.size() > memory_budget_) {
    file_ = OpenAnonymousTemporary(&file_dir_);
    temporary_failed_ = !file_.valid();
  }
  if (file_.valid() && memory_.size() >= kWriteBuffer) Flush();
}

void RecordSpool::Flush() {
  if (!file_.valid() || temporary_failed_ || memory_.empty()) return;
  try {
    PwriteAll(file_.get(), memory_.data(), memory_.size(), static_cast<off_t>(file_bytes_), Shown(file_dir_));
  } catch (const Error&) {
    // What a failed write left past file_bytes_ is never read: memory_ keeps those records.
    temporary_failed_ = true;
    return;
  }
  file_bytes_ += memory_.size();
  memory_.clear();
  if (memory_.capacity() > 2 * kWriteBuffer) memory_.shrink_to_fit();  // what it held before the spill
}

RecordSpool::Reader::Reader(RecordSpool& spool, uint64_t begin, uint64_t end, size_t buffer_size)
    : spool_(spool), pos_(begin), end_(end) {
  spool.Flush();
  if (begin < spool.file_bytes_) buffer_.reserve(buffer_size);
}

void RecordSpool::Reader::Fill(size_t need) {
  const uint64_t have_end = buffer_start_ + buffer_.size();
  if (pos_ >= buffer_start_ && pos_ + need <= have_end) return;
  // Records never straddle file_bytes_: each write holds whole records.
  const uint64_t in_file = std::min(end_, spool_.file_bytes_) - pos_;
  if (need > in_file) Throw(Errc::kCorrupt, "a spooled record cut short");
  const size_t want = static_cast<size_t>(std::min<uint64_t>(std::max(need, buffer_.capacity()), in_file));
  buffer_.resize(want);
  PreadAll(spool_.file_.get(), buffer_.data(), want, static_cast<off_t>(pos_), Shown(spool_.file_dir_));
  buffer_start_ = pos_;
}

bool RecordSpool::Reader::Next(std::string_view* record) {
  if (pos_ >= end_) return false;
  if (end_ - pos_ < 4) Throw(Errc::kCorrupt, "a spooled record cut short");
  const char* head;
  const bool in_file = pos_ < spool_.file_bytes_;
  if (in_file) {
    Fill(4);
    head = buffer_.data() + (pos_ - buffer_start_);
  } else {
    head = spool_.memory_.data() + (pos_ - spool_.file_bytes_);
  }
  const uint32_t size = GetU32(reinterpret_cast<const uint8_t*>(head));
  if (end_ - pos_ - 4 < size) Throw(Errc::kCorrupt, "a spooled record cut short");
  if (in_file) {
    Fill(4 + size);
    *record = std::string_view(buffer_.data() + (pos_ - buffer_start_) + 4, size);
  } else {
    *record = std::string_view(spool_.memory_.data() + (pos_ - spool_.file_bytes_) + 4, size);
  }
  pos_ += 4 + size;
  return true;
}

}  // namespace storemove
