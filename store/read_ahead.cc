#include "store/read_ahead.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "util/error.h"

namespace storemove::store {

// The window holds an open descriptor per file: at most a 16th of the process's limit, so that
// several passes in one process (migrate's groups), each with its folders and delivery gates
// open, stay well within it (storemove raises its soft limit to the hard one at start).
static ReadAheadOptions WithinDescriptorLimit(ReadAheadOptions options) {
  struct rlimit files;
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY)
    options.max_files = std::min<size_t>(options.max_files, std::max<size_t>(4, size_t(files.rlim_cur / 16)));
  return options;
}

ReadAhead::ReadAhead(Source source, ReadAheadOptions options)
    : source_(std::move(source)), options_(WithinDescriptorLimit(options)) {
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

// The window's cost in bytes: what the kernel is asked to read ahead for it.
static uint64_t Cost(const ReadRequest& r, uint64_t whole_limit) {
  return r.mode == ReadMode::kStat ? 0 : std::min(r.size, whole_limit);
}

void ReadAhead::TopUp() {
  size_t added = 0;
  {
    // Refilled in batches: each hand-over wakes workers, and a wake-up costs a context switch
    // ("Reading many files at once" in docs/performance.md). A window running low is refilled at once.
    std::lock_guard lock(mu_);
    const size_t batch = std::min(options_.refill_batch, options_.max_files / 2);
    if (window_.size() + batch > options_.max_files && window_.size() > options_.threads) return;
  }
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
    {
      std::lock_guard lock(mu_);
      slot->out_of_descriptors = out_of_descriptors_;
    }
    // What is in memory is opened on this thread: a hand-over to another would only add work. A
    // memory filesystem's files are opened and read when they are taken; a disk's files whose
    // path is cached are opened now. Either way the data is read by Next().
    bool done = false;
    slot->direct = slot->out_of_descriptors || (options_.read_cached_inline && OnMemoryFilesystem(slot->request.dir));
    if (!slot->direct && options_.read_cached_inline) {
      if (WorthTryingCached()) done = OpenIfCached(*slot);
      cached_misses_ = done ? 0 : cached_misses_ + 1;
    }
    std::lock_guard lock(mu_);
    window_bytes_ += Cost(slot->request, options_.whole_file_limit);
    slot->done = done;
    window_.push_back(slot);
    if (!done && !slot->direct) {
      todo_.push_back(std::move(slot));
      ++added;
    }
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
    if (!slot->direct && !slot->done) {
      awaited_ = slot.get();
      slot_done_.wait(lock, [&] { return slot->done; });
      awaited_ = nullptr;
    }
    if (slot->out_of_descriptors && !slot->direct) {
      // Left to us by a thread at the descriptor limit. Once the threads' opens in flight have
      // ended, the later files opened ahead give their descriptors back (they are opened again
      // when taken), so that this open, and the pass's own, find one free.
      awaited_ = slot.get();
      slot_done_.wait(lock, [&] { return opening_ == 0; });
      awaited_ = nullptr;
      for (std::shared_ptr<Slot>& later : window_) {
        if (!later->done || later->direct || !later->result.fd.valid()) continue;
        later->result.fd.reset();
        later->deferred = false;
        later->out_of_descriptors = true;
      }
      slot->direct = true;
    }
    window_.pop_front();
    window_bytes_ -= Cost(slot->request, options_.whole_file_limit);
  }
  Release(*out);  // first: the read below takes the buffer just given back
  if (!slot->error && (slot->direct || slot->deferred)) {
    try {
      if (slot->direct) Open(*slot);
      ReadWhole(*slot);
    } catch (...) {
      slot->error = std::current_exception();
    }
  }
  if (slot->error) {
    Release(slot->result);
    std::rethrow_exception(slot->error);
  }
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
      ++opening_;
    }
    try {
      Open(*slot);
    } catch (...) {
      slot->error = std::current_exception();
    }
    bool wake;
    {
      std::lock_guard lock(mu_);
      --opening_;
      if (slot->out_of_descriptors && !out_of_descriptors_) {
        // The files no thread has picked yet go to the consumer as well: opened here they would
        // take the descriptors it needs.
        out_of_descriptors_ = true;
        for (std::shared_ptr<Slot>& later : todo_) {
          later->out_of_descriptors = true;
          later->direct = true;
          later->done = true;
        }
        todo_.clear();
      }
      slot->done = true;
      // The consumer waits for its slot, or (out of descriptors) for the opens in flight to end.
      wake = awaited_ != nullptr && (awaited_->done || (out_of_descriptors_ && opening_ == 0));
    }
    if (wake) slot_done_.notify_one();
  }
}

// Buffers are at least this large, so that one serves many later files.
constexpr size_t kMinBuffer = 16 << 10;

// The consumer's thread only. A pass that keeps one ReadResult gives its buffer back with each
// Next(), which takes it again: one buffer, grown to the largest file read whole.
void ReadAhead::Acquire(ReadResult& result, size_t size) {
  if (spare_ && spare_capacity_ >= size) {
    result.buffer = std::move(spare_);
    result.capacity = spare_capacity_;
    spare_capacity_ = 0;
    return;
  }
  // Rounded up so that a buffer serves many later files; never zeroed (it is read into).
  result.capacity = std::max<size_t>(size, kMinBuffer);
  result.buffer = std::make_unique_for_overwrite<char[]>(result.capacity);
}

void ReadAhead::Release(ReadResult& result) {
  result.data = {};
  result.whole = false;
  if (!result.buffer) return;
  if (result.capacity > spare_capacity_) {  // the larger one is kept
    spare_ = std::move(result.buffer);
    spare_capacity_ = result.capacity;
  }
  result.buffer.reset();
  result.capacity = 0;
}

// Reads size bytes from offset 0 (pread: the descriptor's offset stays at 0 for a consumer that
// reads it again); the count read, short when the file shrank.
static ssize_t ReadFully(int fd, char* data, size_t size, const std::string& shown) {
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::pread(fd, data + got, size - got, off_t(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowErrno("read " + shown);
    if (n == 0) break;
    got += size_t(n);
  }
  return ssize_t(got);
}

bool ReadAhead::OnMemoryFilesystem(const std::shared_ptr<const UniqueFd>& dir) {
  if (dir != memory_fs_dir_) {
    memory_fs_dir_ = dir;
    memory_fs_ = storemove::OnMemoryFilesystem(dir->get());
  }
  return memory_fs_;
}

bool ReadAhead::WorthTryingCached() const {
  return cached_misses_ < kCachedMissesBeforeProbing || cached_misses_ % kCachedProbeEvery == 0;
}

bool ReadAhead::OpenIfCached(Slot& slot) {
  const ReadRequest& r = slot.request;
  ReadResult& result = slot.result;
  int fd = storemove::OpenIfCached(r.dir->get(), r.name);
  if (fd < 0) return false;  // not in memory, or an error the thread's open will name
  result.fd.reset(fd);
  if (::fstat(fd, &result.st) != 0) return false;
  const uint64_t size = uint64_t(result.st.st_size);
  if (r.mode == ReadMode::kHint || size > options_.whole_file_limit) return false;  // the thread hints it
  slot.deferred = WantsWholeRead(r, size);
  // A cached path says nothing about the data: after a `du` or `find` of the store every inode is
  // in memory and no data is. Asked for now, it is read while the pass works on earlier files
  // (on data already cached the call only looks it up).
  if (slot.deferred) ::posix_fadvise(fd, 0, off_t(size), POSIX_FADV_WILLNEED);
  return true;
}

bool ReadAhead::WantsWholeRead(const ReadRequest& r, uint64_t size) const {
  // A file whose size is not the expected one is left to the consumer, which reports it.
  return r.mode == ReadMode::kRead && size == r.size && size <= options_.whole_file_limit;
}

void ReadAhead::Open(Slot& slot) {
  const ReadRequest& r = slot.request;
  ReadResult& result = slot.result;
  if (!result.fd.valid()) {
    const int fd = OpenAtOrErrno(r.dir->get(), r.name, O_RDONLY);
    if ((fd == -EMFILE || fd == -ENFILE) && !slot.direct) {  // a thread's: the consumer opens it
      slot.out_of_descriptors = true;
      return;
    }
    if (fd == -ENOENT) return;
    if (fd < 0) ThrowErrno("open " + r.shown, -fd);
    result.fd.reset(fd);
  }
  if (::fstat(result.fd.get(), &result.st) != 0) ThrowErrno("stat " + r.shown);
  const uint64_t size = uint64_t(result.st.st_size);
  if (r.mode == ReadMode::kStat) return;
  slot.deferred = WantsWholeRead(r, size);
  // The kernel reads the data while this thread goes on to the next file: no thread waits for
  // it, and the consumer finds it in the page cache (a whole read is done there, ReadWhole).
  if (!slot.direct)
    ::posix_fadvise(result.fd.get(), 0, off_t(std::min<uint64_t>(size, options_.whole_file_limit)),
                    POSIX_FADV_WILLNEED);
}

void ReadAhead::ReadWhole(Slot& slot) {
  if (!slot.deferred) return;
  const ReadRequest& r = slot.request;
  ReadResult& result = slot.result;
  const uint64_t size = uint64_t(result.st.st_size);
  Acquire(result, size);
  // Short: the file shrank under us, and the consumer sees that through fd.
  if (ReadFully(result.fd.get(), result.buffer.get(), size, r.shown) != ssize_t(size)) return;
  result.data = std::string_view(result.buffer.get(), size);
  result.digest = DigestOf(result.data.data(), result.data.size());
  result.whole = true;
}

Prefetcher::Prefetcher(const std::string& dir, size_t threads, size_t max_queued)
    : threads_(threads), max_queued_(max_queued), enabled_(!PathOnMemoryFilesystem(dir)) {}

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
  if (!enabled_) return;
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
