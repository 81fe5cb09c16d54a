// MessageList and its builder: records beyond a bound go to an unlinked temporary file.
#include "store/message_list.h"

#include <algorithm>
#include <cerrno>

#include "util/error.h"

namespace storemove::store {

void MessageList::ReadRecords(size_t first, size_t n, MessageMeta* out) const {
  PreadAll(spool_->fd.get(), out, n * sizeof(MessageMeta), static_cast<off_t>(first * sizeof(MessageMeta)),
           "a snapshot's records in a temporary file in " + spool_->shown);
}

MessageMeta MessageList::operator[](size_t i) const {
  if (!spool_) return memory_[i];
  MessageMeta m;
  ReadRecords(i, 1, &m);
  return m;
}

MessageMeta MessageList::at(size_t i) const {
  if (i >= size())
    Throw(Errc::kInvalidArgument, "record " + std::to_string(i) + " of a list of " + std::to_string(size()));
  return (*this)[i];
}

bool operator==(const MessageList& a, const MessageList& b) {
  if (a.size() != b.size()) return false;
  for (auto i = a.begin(), j = b.begin(); i != a.end(); ++i, ++j)
    if (!(*i == *j)) return false;
  return true;
}

std::vector<MessageMeta>& MessageList::mutable_records() {
  if (spool_) {
    std::vector<MessageMeta> all(spool_->count);
    if (!all.empty()) ReadRecords(0, all.size(), all.data());
    memory_ = std::move(all);
    spool_.reset();
  }
  return memory_;
}

const MessageMeta& MessageList::const_iterator::operator*() const {
  if (!list_->spool_) return list_->memory_[pos_];
  if (slice_first_ == kNone || pos_ < slice_first_ || pos_ >= slice_first_ + slice_.size()) {
    const size_t n = std::min(kSliceRecords, list_->spool_->count - pos_);
    slice_.resize(n);
    list_->ReadRecords(pos_, n, slice_.data());
    slice_first_ = pos_;
  }
  return slice_[pos_ - slice_first_];
}

void MessageListBuilder::Add(const MessageMeta* records, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (records[i].uid <= last_uid_ && (written_ + pending_.size() + i) > 0) sorted_ = false;
    last_uid_ = records[i].uid;
  }
  if (!sorted_ && fd_.valid()) Unspool();
  pending_.insert(pending_.end(), records, records + n);
  if (sorted_ && written_ + pending_.size() > in_memory_) Flush();
}

// Writes the pending records to the temporary file (made on the first call). Where that
// fails, the records stay in memory: the spool saves memory, it is never a new way to fail.
void MessageListBuilder::Flush() {
  if (!fd_.valid()) {
    fd_ = OpenAnonymousTemporary(&shown_);
    if (!fd_.valid()) {
      in_memory_ = ~size_t{0};
      return;
    }
  }
  try {
    PwriteAll(fd_.get(), pending_.data(), pending_.size() * sizeof(MessageMeta),
              static_cast<off_t>(written_ * sizeof(MessageMeta)), shown_);
  } catch (const Error&) {  // a full or failing $TMPDIR
    Unspool();
    in_memory_ = ~size_t{0};
    return;
  }
  written_ += pending_.size();
  pending_.clear();
  pending_.shrink_to_fit();
}

// Brings what was written back into memory, before the pending records, and drops the file.
void MessageListBuilder::Unspool() {
  std::vector<MessageMeta> all(written_);
  if (written_ != 0)
    PreadAll(fd_.get(), all.data(), written_ * sizeof(MessageMeta), 0,
             "a snapshot's records in a temporary file in " + shown_);
  all.insert(all.end(), pending_.begin(), pending_.end());
  pending_ = std::move(all);
  written_ = 0;
  fd_.reset();
}

MessageList MessageListBuilder::Finish() {
  MessageList list;
  if (fd_.valid()) {
    if (!pending_.empty()) Flush();
    if (fd_.valid()) {
      auto spool = std::make_shared<MessageList::Spool>();
      spool->fd = std::move(fd_);
      spool->count = written_;
      spool->shown = shown_;
      list.spool_ = std::move(spool);
      return list;
    }
  }
  if (!sorted_)
    std::stable_sort(pending_.begin(), pending_.end(),
                     [](const MessageMeta& a, const MessageMeta& b) { return a.uid < b.uid; });
  list.memory_ = std::move(pending_);
  return list;
}

}  // namespace storemove::store
