// Concurrent reads of message files in the order a pass needs them.
//
// On a disk each cold message file costs a directory lookup, an inode read and a data read: a
// pass that opens one file at a time waits for each in turn, while the disk could serve dozens
// at once. ReadAhead keeps a bounded window of upcoming files being opened by a pool of threads,
// which ask the kernel to read their data (posix_fadvise WILLNEED: no thread waits for it); the
// pass takes the results one by one, in the order it asked for them, and reads each whole file
// from the page cache then, into one reused buffer. The window is bounded in files and in bytes
// asked for, never by the store (docs/performance.md, "On disk").
#pragma once

#include <sys/stat.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "util/digest.h"
#include "util/fs.h"

namespace storemove::store {

struct ReadAheadOptions {
  size_t threads = 16;                        // opens in flight at once
  size_t max_files = 128;                     // files opened ahead of the consumer
  // Bytes the kernel is asked to read ahead of the consumer, into the page cache (not this
  // process's memory: the consumer reads each file when it takes it, into one reused buffer).
  uint64_t max_bytes = uint64_t{8} << 20;
  uint64_t whole_file_limit = uint64_t{1} << 20;  // larger files: opened and hinted, streamed by the consumer
  size_t refill_batch = 16;                   // requests handed to the threads at once
  // Files already in memory are read on the consumer's thread as they are asked for; false sends
  // every file through the threads (tests, whose files are all in memory).
  bool read_cached_inline = true;
};

// What is done with a file ahead of the consumer.
enum class ReadMode : uint8_t {
  kRead,  // opened, stat'ed, hinted, and read whole by Next() (up to whole_file_limit; a larger one is only hinted)
  kHint,  // opened, stat'ed, and the kernel asked to read its data ahead (posix_fadvise)
  kStat,  // opened and stat'ed only: its inode is in memory when the consumer gets to it
};

// One file: `name` relative to the directory `dir` (resolved beneath it, no symlink followed),
// `shown` for messages. `size` is what the caller expects (the index's size): a whole read is
// only done when the file has that size.
struct ReadRequest {
  std::shared_ptr<const UniqueFd> dir;
  std::string name;
  std::string shown;
  uint64_t size = 0;
  ReadMode mode = ReadMode::kRead;
  uint64_t tag = 0;  // the caller's, returned with the result
};

struct ReadResult {
  uint64_t tag = 0;
  UniqueFd fd;              // invalid: the file does not exist
  struct stat st {};        // valid with fd
  bool whole = false;       // data holds the whole file (st.st_size bytes), digest its XXH3-128
  std::string_view data;    // in buffer: valid until this result is passed to Next() again
  Digest digest;
  // data's storage: given back to the reader by the next Next() into this result, so a pass
  // that keeps one ReadResult reuses a few buffers instead of allocating (and zeroing) one per file.
  std::unique_ptr<char[]> buffer;
  size_t capacity = 0;
};

class ReadAhead {
 public:
  // Called on the consumer's thread for the next request in consumption order; false when it
  // has none now (it is asked again on the next Next()).
  using Source = std::function<bool(ReadRequest*)>;

  explicit ReadAhead(Source source, ReadAheadOptions options = {});
  ~ReadAhead();
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;

  // The result of the oldest request not taken yet, once its read is done; false when there is
  // none (the source had nothing more). A read's error (other than "missing") is rethrown here.
  bool Next(ReadResult* out);

  // The directory fd a request may hold beyond the life of the object that opened `fd`.
  static std::shared_ptr<const UniqueFd> ShareDirectory(int fd);

 private:
  struct Slot {
    ReadRequest request;
    ReadResult result;
    std::exception_ptr error;
    bool done = false;
    bool direct = false;    // opened and read by the consumer when it takes it (a memory filesystem, or out of descriptors)
    bool deferred = false;  // opened, its data asked for: the consumer reads it whole when it takes it
    bool out_of_descriptors = false;  // a thread's open failed with EMFILE/ENFILE: the consumer opens it
  };
  void TopUp();
  void Work();
  bool OpenIfCached(Slot& slot);
  bool WorthTryingCached() const;
  static constexpr size_t kCachedMissesBeforeProbing = 8, kCachedProbeEvery = 16;
  bool OnMemoryFilesystem(const std::shared_ptr<const UniqueFd>& dir);
  bool WantsWholeRead(const ReadRequest& r, uint64_t size) const;
  void Open(Slot& slot);
  void ReadWhole(Slot& slot);
  // Buffers for whole reads (the consumer's thread only), reused.
  void Acquire(ReadResult& result, size_t size);
  void Release(ReadResult& result);

  Source source_;
  const ReadAheadOptions options_;
  std::mutex mu_;
  std::condition_variable work_ready_, slot_done_;
  std::deque<std::shared_ptr<Slot>> window_;  // in consumption order
  std::deque<std::shared_ptr<Slot>> todo_;    // not picked by a worker yet
  size_t opening_ = 0;                        // slots a worker has picked and not finished
  // A thread ran out of descriptors (the process is at its limit): from then on the consumer
  // opens every file itself, one at a time, as a pass without read-ahead would.
  bool out_of_descriptors_ = false;
  // The slot the consumer sleeps on: a worker wakes it only for that one, not for every read
  // done out of order (each wake-up is a context switch).
  const Slot* awaited_ = nullptr;
  uint64_t window_bytes_ = 0;
  std::unique_ptr<char[]> spare_;  // given back by the consumer, for its next whole read
  size_t spare_capacity_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  // Whether the last directory asked about is on a memory filesystem (consumer's thread only).
  std::shared_ptr<const UniqueFd> memory_fs_dir_;
  bool memory_fs_ = false;
  // Consecutive requests found not in memory (consumer's thread only): on a cold store the
  // attempt is a wasted system call per file, so after a run of misses only every
  // kCachedProbeEvery-th request tries it, until one hits.
  size_t cached_misses_ = 0;
};

// Hints run by a few threads ahead of a pass: e.g. "read this user's folder indexes", so that
// the pass finds them in the page cache. A hint's errors are ignored (the pass meets them itself
// when it does the real read); hints beyond `max_queued` are dropped.
class Prefetcher {
 public:
  // Hints for files below `dir`; none when dir is on a memory filesystem, where they would
  // only repeat the pass's own work.
  Prefetcher(const std::string& dir, size_t threads, size_t max_queued);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  void Submit(std::function<void()> hint);
  bool enabled() const { return enabled_; }  // false on a memory filesystem: hints are dropped

 private:
  void Work();

  const size_t threads_, max_queued_;
  const bool enabled_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace storemove::store
