// MessageList: a snapshot's messages in UID order, held in memory up to a bound and beyond it
// in a private temporary file read back in slices, so that the memory a pass over one folder
// takes does not grow with the folder (docs/performance.md, "Large folders").
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "store/message_meta.h"
#include "util/fs.h"

namespace storemove::store {

class MessageList {
 public:
  // Records read back from the temporary file at a time (~88 KiB decoded).
  static constexpr size_t kSliceRecords = 1024;

  MessageList() = default;
  // A list made by hand (tests, a stream's folder): held in memory, in the order given.
  MessageList(std::vector<MessageMeta> messages) : memory_(std::move(messages)) {}  // NOLINT: implicit by design
  MessageList(std::initializer_list<MessageMeta> messages) : memory_(messages) {}

  size_t size() const { return spool_ ? spool_->count : memory_.size(); }
  bool empty() const { return size() == 0; }
  // Whether the records live in a temporary file (for tests and reports).
  bool spooled() const { return spool_ != nullptr; }

  // By value: a spooled list has no record in memory to refer to. Each call of a spooled list
  // reads its record; passes go through iterators, which read slices.
  MessageMeta operator[](size_t i) const;
  MessageMeta at(size_t i) const;
  MessageMeta front() const { return (*this)[0]; }
  MessageMeta back() const { return (*this)[size() - 1]; }

  // An input iterator: what *it refers to stays valid until the iterator moves or dies.
  class const_iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = MessageMeta;
    using difference_type = std::ptrdiff_t;
    using pointer = const MessageMeta*;
    using reference = const MessageMeta&;

    const_iterator() = default;
    // A copy starts without the original's slice (it reads its own when dereferenced).
    const_iterator(const const_iterator& o) : list_(o.list_), pos_(o.pos_) {}
    const_iterator& operator=(const const_iterator& o) {
      list_ = o.list_;
      pos_ = o.pos_;
      slice_first_ = kNone;
      return *this;
    }
    const_iterator(const_iterator&&) = default;
    const_iterator& operator=(const_iterator&&) = default;

    reference operator*() const;
    pointer operator->() const { return &**this; }
    const_iterator& operator++() {
      ++pos_;
      return *this;
    }
    void operator++(int) { ++pos_; }
    bool operator==(const const_iterator& o) const { return pos_ == o.pos_; }
    size_t position() const { return pos_; }

   private:
    friend class MessageList;
    static constexpr size_t kNone = ~size_t{0};
    const_iterator(const MessageList* list, size_t pos) : list_(list), pos_(pos) {}
    const MessageList* list_ = nullptr;
    size_t pos_ = 0;
    mutable std::vector<MessageMeta> slice_;
    mutable size_t slice_first_ = kNone;
  };
  const_iterator begin() const { return const_iterator(this, 0); }
  const_iterator end() const { return const_iterator(this, size()); }

  friend bool operator==(const MessageList& a, const MessageList& b);
  // Every record in memory: for tests and lists known to be small.
  std::vector<MessageMeta> ToVector() const { return std::vector<MessageMeta>(begin(), end()); }

  // The records of an in-memory list, for code that edits a hand-made list; a spooled list is
  // first read into memory (tests only: that is the memory the spool saves).
  std::vector<MessageMeta>& mutable_records();

 private:
  friend class MessageListBuilder;
  struct Spool {
    UniqueFd fd;
    size_t count = 0;
    std::string shown;  // the temporary file's directory, for messages
  };
  void ReadRecords(size_t first, size_t n, MessageMeta* out) const;
  std::vector<MessageMeta> memory_;
  std::shared_ptr<const Spool> spool_;
};

// Collects records in any order and makes a MessageList sorted by UID. Up to `in_memory`
// records are kept in memory; beyond that they go to a temporary file in $TMPDIR (/tmp) when
// they arrive in UID order (the order an index is written in). Records out of order, or a
// temporary file that cannot be made or written, leave them in memory as before.
class MessageListBuilder {
 public:
  explicit MessageListBuilder(size_t in_memory) : in_memory_(in_memory) {}
  void Add(const MessageMeta* records, size_t n);
  MessageList Finish();

 private:
  void Flush();
  void Unspool();
  size_t in_memory_;
  bool sorted_ = true;
  uint32_t last_uid_ = 0;
  std::vector<MessageMeta> pending_;
  UniqueFd fd_;
  size_t written_ = 0;
  std::string shown_;
};

}  // namespace storemove::store
