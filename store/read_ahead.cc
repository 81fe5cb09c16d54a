#include "store/read_ahead.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "util/error.h"

namespace storemove::store {

ReadAhead::ReadAhead(Source source, ReadAheadOptions options) : source_(std::move(source)), options_(options) {
  // Threads start lazily, with the first request: a pass with nothing to read costs nothing.
}

ReadAhead::~ReadAhead() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    todo_.clear();
  }
  work_ready_.notify_all();
  for (std::thread& t : workers_) t.join();
}

std::shared_ptr<const UniqueFd> ReadAhead::ShareDirectory(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) ThrowErrno("dup directory descriptor");
  return std::make_shared<const UniqueFd>(copy);
}

// The window's cost in bytes: what a whole read will hold.
static uint64_t Cost(const ReadRequest& r, uint64_t whole_limit) {
  return r.mode == ReadMode::kRead && r.size <= whole_limit ? r.size : 0;
}

void ReadAhead::TopUp() {
  size_t added = 0;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (window_.size() >= options_.max_files) break;
      // One file is always allowed, whatever its size, so a big one cannot stall the pass.
      if (!window_.empty() && window_bytes_ >= options_.max_bytes) break;
    }
    auto slot = std::make_shared<Slot>();
    if (!source_(&slot->request)) break;
    slot->result.tag = slot->request.tag;
    std::lock_guard lock(mu_);
    window_bytes_ += Cost(slot->request, options_.whole_file_limit);
    window_.push_back(slot);
    todo_.push_back(std::move(slot));
    ++added;
  }
  if (added == 0) return;
  if (workers_.size() < options_.threads) {
    size_t want = std::min(options_.threads, workers_.size() + added);
    while (workers_.size() < want) workers_.emplace_back([this] { Work(); });
  }
  if (added == 1)
    work_ready_.notify_one();
  else
    work_ready_.notify_all();
}

bool ReadAhead::Next(ReadResult* out) {
  TopUp();
  std::shared_ptr<Slot> slot;
  {
    std::unique_lock lock(mu_);
    if (window_.empty()) return false;
    slot = window_.front();
    slot_done_.wait(lock, [&] { return slot->done; });
    window_.pop_front();
    window_bytes_ -= Cost(slot->request, options_.whole_file_limit);
  }
  if (slot->error) std::rethrow_exception(slot->error);
  *out = std::move(slot->result);
  return true;
}

void ReadAhead::Work() {
  for (;;) {
    std::shared_ptr<Slot> slot;
    {
      std::unique_lock lock(mu_);
      work_ready_.wait(lock, [&] { return stopping_ || !todo_.empty(); });
      if (stopping_) return;
      slot = std::move(todo_.front());
      todo_.pop_front();
    }
    try {
      Read(*slot);
    } catch (...) {
      slot->error = std::current_exception();
    }
    {
      std::lock_guard lock(mu_);
      slot->done = true;
    }
    slot_done_.notify_all();
  }
}

void ReadAhead::Read(Slot& slot) const {
  const ReadRequest& r = slot.request;
  ReadResult& result = slot.result;
  result.fd = TryOpenAt(r.dir->get(), r.name, O_RDONLY, 0, r.shown);
  if (!result.fd.valid()) return;
  if (::fstat(result.fd.get(), &result.st) != 0) ThrowErrno("stat " + r.shown);
  const uint64_t size = uint64_t(result.st.st_size);
  // A file whose size is not the expected one is left to the consumer, which reports it.
  if (r.mode == ReadMode::kStat) return;
  if (r.mode == ReadMode::kHint || size != r.size || size > options_.whole_file_limit) {
    // The kernel reads it ahead while the consumer works on earlier files.
    ::posix_fadvise(result.fd.get(), 0, off_t(std::min<uint64_t>(size, options_.whole_file_limit)),
                    POSIX_FADV_WILLNEED);
    return;
  }
  result.data.resize(size);
  // pread: the descriptor's offset stays at 0 for a consumer that reads it again.
  for (uint64_t got = 0; got < size;) {
    ssize_t n = ::pread(result.fd.get(), result.data.data() + got, size - got, off_t(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowErrno("read " + r.shown);
    if (n == 0) {  // shrank under us: the consumer sees the short file through fd
      result.data.clear();
      return;
    }
    got += uint64_t(n);
  }
  result.digest = DigestOf(result.data.data(), result.data.size());
  result.whole = true;
}

Prefetcher::Prefetcher(size_t threads, size_t max_queued) : threads_(threads), max_queued_(max_queued) {}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    queue_.clear();
  }
  ready_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void Prefetcher::Submit(std::function<void()> hint) {
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= max_queued_) return;
    queue_.push_back(std::move(hint));
  }
  if (workers_.size() < threads_) workers_.emplace_back([this] { Work(); });
  ready_.notify_one();
}

void Prefetcher::Work() {
  for (;;) {
    std::function<void()> hint;
    {
      std::unique_lock lock(mu_);
      ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      hint = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      hint();
    } catch (...) {
      // Only a hint: the pass meets the same error, if it is one, on its own read.
    }
  }
}

}  // namespace storemove::store
