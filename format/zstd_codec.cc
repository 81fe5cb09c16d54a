#include "format/zstd_codec.h"

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_customMem (exported by the shared library since 1.4)
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <thread>

#include "util/bytes.h"
#include "util/error.h"
#include "util/large_memory.h"

namespace storemove::format {
namespace {

// zstd's window (32 MiB) and match tables in huge pages: ~8,000 fewer page faults per context.
void* ZstdAllocate(void*, size_t size) { return AllocateSized(size); }
void ZstdFree(void*, void* p) { FreeSized(p); }
constexpr ZSTD_customMem kZstdMemory{ZstdAllocate, ZstdFree, nullptr};

uint64_t NowNs() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

}  // namespace

// The background compressor's queue: chunks of what was written, in order, each with the
// directive to compress it with; buffers are reused.
struct ZstdCompressSink::Worker {
  static constexpr size_t kChunkSize = size_t{256} << 10;
  static constexpr size_t kMaxQueued = 4;
  struct Chunk {
    std::vector<uint8_t> bytes;
    int mode = 0;
  };

  std::mutex mutex;
  std::condition_variable changed;  // any change below; both sides wait on it
  std::deque<Chunk> queue;
  std::vector<std::vector<uint8_t>> spare;
  uint64_t writer_waited_ns = 0;  // adapt: Write's time waiting for room, this window
  bool busy = false;  // the thread holds a chunk
  bool stop = false;  // the sink is going away
  std::exception_ptr error;
  std::thread thread;
};

ZstdCompressSink::ZstdCompressSink(ByteSink& out, int level, int threads, bool background, Adapt adapt)
    : out_(out), cctx_(ZSTD_createCCtx_advanced(kZstdMemory)), buf_(ZSTD_CStreamOutSize()), adapt_(std::move(adapt)) {
  if (!cctx_) throw std::bad_alloc();
  try {
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
      Throw(Errc::kInvalidArgument, "zstd: compression level " + std::to_string(level) + " outside " +
                                        std::to_string(ZSTD_minCLevel()) + ".." + std::to_string(ZSTD_maxCLevel()));
    ZSTD_bounds workers = ZSTD_cParam_getBounds(ZSTD_c_nbWorkers);  // upper 0: libzstd without threads
    if (threads < 0 || (!ZSTD_isError(workers.error) && threads > workers.upperBound))
      Throw(Errc::kInvalidArgument, "zstd: " + std::to_string(threads) + " worker threads outside 0.." +
                                        std::to_string(workers.upperBound));
    if (adapt_.on && (!background || threads != 0))
      Throw(Errc::kInvalidArgument, "zstd: an adaptive level needs the background thread and no worker threads");
    if (adapt_.on && !ZSTD_isError(workers.error) && workers.upperBound < 1)
      Throw(Errc::kInvalidArgument, "zstd: an adaptive level needs libzstd built with threads");
    if (adapt_.on) {
      adaptive_ = std::make_unique<AdaptiveLevel>(level);
      level = adaptive_->level();
    }
    threads_ = threads;
    Configure(level);
  } catch (...) {
    ZSTD_freeCCtx(cctx_);
    throw;
  }
  if (background) {
    worker_ = std::make_unique<Worker>();
    pending_.reserve(Worker::kChunkSize);
    try {
      worker_->thread = std::thread([this] { RunWorker(); });
    } catch (...) {  // no thread (EAGAIN under ulimit -v or -u): said by the caller, nothing leaked
      worker_.reset();
      ZSTD_freeCCtx(cctx_);
      throw;
    }
  }
}

// Memory the process could not get (ulimit -v), or zstd's own worker threads not started, is a
// limit, said as such with 75 (a rerun with more finishes): it was 74, "Allocation error" (review).
[[noreturn]] static void ThrowCompressionError(const char* what, size_t zstd_error) {
  if (ZSTD_getErrorCode(zstd_error) == ZSTD_error_memory_allocation)
    Throw(Errc::kTempFail, std::string("zstd: ") + what + ": out of memory (a memory limit, ulimit -v?): run again "
                                                           "with more memory");
  Throw(Errc::kIo, std::string("zstd: ") + what + ": " + ZSTD_getErrorName(zstd_error));
}

void ZstdCompressSink::SetParameter(int param, int value, const char* what) {
  size_t rc = ZSTD_CCtx_setParameter(cctx_, static_cast<ZSTD_cParameter>(param), value);
  if (ZSTD_isError(rc))
    Throw(Errc::kInvalidArgument,
          std::string("zstd: cannot use ") + what + " " + std::to_string(value) + ": " + ZSTD_getErrorName(rc));
}

void ZstdCompressSink::Configure(int level) {
  ZSTD_CCtx_reset(cctx_, ZSTD_reset_parameters);
  auto set = [this](ZSTD_cParameter param, int value, const char* what) { SetParameter(param, value, what); };
  set(ZSTD_c_compressionLevel, level, "compression level");
  set(ZSTD_c_checksumFlag, 1, "content checksum");
  if (adaptive_ ? adaptive_->long_window() : level >= 0) {
    // Mail repeats itself far apart (the same list post in many mailboxes, quoted replies): a
    // 32 MiB window with long-distance matching finds it, where the default 2 MiB window does
    // not, at about 50 MiB of memory. 2^25 stays below the 2^27 that `zstd -d` accepts unasked.
    // The fast (negative) levels are for a compressor that holds the pass back: without it
    // (an adaptive level: on its lowest rung only, AdaptiveLevel::kLadder).
    set(ZSTD_c_windowLog, kWindowLog, "window log");
    set(ZSTD_c_enableLongDistanceMatching, 1, "long-distance matching");
  }
  SetLevelTuning(level);
  if (threads_ != 0) {
    // Jobs of 512 KiB, not zstd's own size for a 32 MiB window with long-distance matching,
    // whose buffers took a backup with 2 workers to 66-81 MiB (helper-53); now about 2 MiB a
    // worker on top of the single-threaded backup: 54-62 MiB with 2 workers. The stream is
    // 0.4 % larger.
    set(ZSTD_c_nbWorkers, threads_, "worker threads");
    set(ZSTD_c_jobSize, kWorkerJobSize, "job size");
  }
  if (adaptive_) {
    // zstd takes a new level within a frame only from its own worker thread, at its next job:
    // one thread, jobs of 512 KiB (history is kept across jobs: the same ratio, ~2 MiB more,
    // which keeps a backup under 64 MiB).
    set(ZSTD_c_nbWorkers, 1, "worker threads");
    set(ZSTD_c_jobSize, kWorkerJobSize, "job size");
  }
}

void ZstdCompressSink::SetLevel(int level) {
  size_t rc = ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
  if (ZSTD_isError(rc)) ThrowCompressionError("cannot change the level", rc);
  SetLevelTuning(level);
}

void ZstdCompressSink::SetLevelTuning(int level) {
  auto set = [this](ZSTD_cParameter param, int value, const char* what) { SetParameter(param, value, what); };
  if (level == 1) {
    // The default level, tuned on real mail (docs/performance.md, "Stream size"): libzstd's
    // level 1 hashes 2^14 positions of 6 bytes; mail repeats in shorter tokens (header names,
    // addresses, base64 line starts) spread wider. 2^16 positions of 5 bytes make the stream
    // 2.9 % smaller for ~13 % more compressor CPU (level 3: 4.4 % smaller for ~40 % more).
    set(ZSTD_c_hashLog, 16, "hash log");
    set(ZSTD_c_minMatch, 5, "minimum match");
  } else if (adaptive_) {
    set(ZSTD_c_hashLog, 0, "hash log");  // 0: the level's own
    set(ZSTD_c_minMatch, 0, "minimum match");
  }
}

ZstdCompressSink::~ZstdCompressSink() {
  if (worker_) {  // without Finish: what is still queued is dropped, the frame stays unended
    {
      std::lock_guard lock(worker_->mutex);
      worker_->stop = true;
    }
    worker_->changed.notify_all();
    worker_->thread.join();
  }
  ZSTD_freeCCtx(cctx_);
}

void ZstdCompressSink::RunWorker() {
  Worker& w = *worker_;
  bool failed = false;  // after an error the rest is drained unwritten, so the writer never blocks
  for (;;) {
    Worker::Chunk chunk;
    {
      std::unique_lock lock(w.mutex);
      w.changed.wait(lock, [&] { return w.stop || !w.queue.empty(); });
      if (w.stop) return;
      chunk = std::move(w.queue.front());
      w.queue.pop_front();
      w.busy = true;
    }
    w.changed.notify_all();  // room in the queue
    std::exception_ptr error;
    if (!failed) {
      try {
        const uint64_t start = adaptive_ ? NowNs() : 0;
        Compress(chunk.bytes.data(), chunk.bytes.size(), chunk.mode);
        if (chunk.mode != ZSTD_e_continue) WriteOut();
        if (adaptive_) {
          busy_ns_ += NowNs() - start;
          AdaptAfter(chunk.bytes.size(), chunk.mode);
        }
      } catch (...) {
        error = std::current_exception();
        failed = true;
      }
    }
    {
      std::lock_guard lock(w.mutex);
      w.busy = false;
      if (error && !w.error) w.error = error;
      chunk.bytes.clear();
      w.spare.push_back(std::move(chunk.bytes));
    }
    w.changed.notify_all();
  }
}

void ZstdCompressSink::Submit(int mode) {
  Worker& w = *worker_;
  std::exception_ptr error;
  {
    std::unique_lock lock(w.mutex);
    auto room = [&] { return w.error || w.queue.size() < Worker::kMaxQueued; };
    if (adaptive_ && !room()) {
      const uint64_t start = NowNs();
      w.changed.wait(lock, room);
      w.writer_waited_ns += NowNs() - start;
    }
    w.changed.wait(lock, room);
    error = w.error;
    if (!error) {
      w.queue.push_back({std::move(pending_), mode});
      if (!w.spare.empty()) {
        pending_ = std::move(w.spare.back());
        w.spare.pop_back();
      } else {
        pending_ = {};
        pending_.reserve(Worker::kChunkSize);
      }
    }
  }
  if (error) std::rethrow_exception(error);
  w.changed.notify_all();
}

void ZstdCompressSink::WaitIdle() {
  Worker& w = *worker_;
  std::exception_ptr error;
  {
    std::unique_lock lock(w.mutex);
    w.changed.wait(lock, [&] { return w.error || (w.queue.empty() && !w.busy); });
    error = w.error;
  }
  if (error) std::rethrow_exception(error);
}

void ZstdCompressSink::AdaptAfter(size_t size, int mode) {
  Worker& w = *worker_;
  const uint64_t now = NowNs();
  if (window_start_ns_ == 0) window_start_ns_ = now;
  window_bytes_ += size;
  if (window_bytes_ < adapt_.window_bytes || now - window_start_ns_ < adapt_.window_ns) return;
  AdaptiveLevel::Window window;
  window.wall_seconds = static_cast<double>(now - window_start_ns_) / 1e9;
  window.output_waited_seconds = static_cast<double>(output_waited_ns_) / 1e9;
  window.compress_seconds = static_cast<double>(busy_ns_ - std::min(busy_ns_, output_waited_ns_)) / 1e9;
  if (adapt_.cpu_idle_share) window.cpu_idle_share = adapt_.cpu_idle_share();
  {
    std::lock_guard lock(w.mutex);
    window.writer_waited_seconds = static_cast<double>(w.writer_waited_ns) / 1e9;
    w.writer_waited_ns = 0;
  }
  const int before = adaptive_->level();
  const bool long_before = adaptive_->long_window();
  const int level = adaptive_->Next(window);
  if (level != before && adaptive_->long_window() == long_before) {
    SetLevel(level);
  } else if (level != before) {  // the long window goes on or off: only with a new frame
    if (mode != ZSTD_e_end) {    // (Finish has just ended one)
      Compress(nullptr, 0, ZSTD_e_end);
      WriteOut();
    }
    Configure(level);
  }
  // The next window starts here: the frame's end, written above, belongs to this one.
  window_start_ns_ = NowNs();
  window_bytes_ = 0;
  output_waited_ns_ = 0;
  busy_ns_ = 0;
}

void ZstdCompressSink::WriteOut() {
  if (buf_used_ == 0) return;
  if (adaptive_ && worker_) {
    const uint64_t start = NowNs();
    out_.Write(buf_.data(), buf_used_);
    output_waited_ns_ += NowNs() - start;
  } else {
    out_.Write(buf_.data(), buf_used_);
  }
  bytes_out_ += buf_used_;
  buf_used_ = 0;
}

void ZstdCompressSink::Compress(const void* data, size_t size, int mode) {
  const auto directive = static_cast<ZSTD_EndDirective>(mode);
  ZSTD_inBuffer in{data, size, 0};
  for (;;) {
    ZSTD_outBuffer out{buf_.data(), buf_.size(), buf_used_};
    size_t left = ZSTD_compressStream2(cctx_, &out, &in, directive);
    buf_used_ = out.pos;
    if (ZSTD_isError(left)) ThrowCompressionError("compression failed", left);
    if (buf_used_ == buf_.size()) WriteOut();
    bool done = directive == ZSTD_e_continue ? in.pos == in.size : left == 0;
    if (done) break;
  }
  bytes_in_ += size;
}

void ZstdCompressSink::Write(const void* data, size_t size) {
  if (!worker_) {
    if (size > 0) Compress(data, size, ZSTD_e_continue);
    return;
  }
  const auto* bytes = static_cast<const uint8_t*>(data);
  while (size > 0) {
    size_t take = std::min(size, Worker::kChunkSize - pending_.size());
    pending_.insert(pending_.end(), bytes, bytes + take);
    bytes += take;
    size -= take;
    if (pending_.size() == Worker::kChunkSize) Submit(ZSTD_e_continue);
  }
}

void ZstdCompressSink::Flush() {
  if (worker_) {
    Submit(ZSTD_e_flush);
    WaitIdle();  // the thread has written its last bytes: `out` is the caller's again
  } else {
    Compress(nullptr, 0, ZSTD_e_flush);
    WriteOut();
  }
  out_.Flush();
}

void ZstdCompressSink::Finish() {
  if (worker_) {
    Submit(ZSTD_e_end);
    WaitIdle();
  } else {
    Compress(nullptr, 0, ZSTD_e_end);
    WriteOut();
  }
  out_.Flush();
}

// Compressed chunks go to the worker, decompressed blocks come back; both queues are short and
// their buffers are reused, so memory stays bounded (~3 MiB: kMaxChunks * 128 KiB and at most
// kMaxBlocks + 4 blocks) whatever the stream.
struct DecompressingSource::Worker {
  static constexpr size_t kMaxChunks = 8;
  static constexpr size_t kMaxBlocks = 4;
  static constexpr size_t kBlockSize = size_t{256} << 10;
  struct Block {
    std::unique_ptr<uint8_t[]> bytes;  // kBlockSize, uninitialised
    size_t size = 0;
    uint64_t input_end = 0;  // the input offset zstd had reached when the block was queued
  };

  std::mutex mutex;
  std::condition_variable changed;          // any change below; both sides wait on it
  std::deque<std::vector<uint8_t>> chunks;  // compressed; an empty chunk marks the end of input
  std::deque<Block> blocks;                 // decompressed, in order
  std::vector<Block> spare_blocks;          // consumed, for the worker to fill again
  std::vector<std::vector<uint8_t>> spare_chunks;
  bool input_ended = false;   // the end mark is queued (consumer side only)
  bool output_ended = false;  // the worker has queued every block, or failed
  bool stop = false;          // the consumer is going away
  bool busy = false;          // the worker holds a chunk: more blocks may come without input
  std::exception_ptr error;   // a corrupt or truncated frame, thrown to the consumer
  Block current;              // the block being read by the consumer
  size_t current_pos = 0;
  std::thread thread;
};

DecompressingSource::DecompressingSource(ByteSource& in, bool worker)
    : in_(in), want_worker_(worker), buf_(ZSTD_DStreamInSize()) {}

DecompressingSource::~DecompressingSource() {
  if (worker_) {
    {
      std::lock_guard lock(worker_->mutex);
      worker_->stop = true;
    }
    worker_->changed.notify_all();
    worker_->thread.join();
  }
  ZSTD_freeDCtx(dctx_);
}

// The worker: decompresses chunk after chunk into blocks. It waits only for the queues, never
// for input, so the destructor's join returns promptly.
void DecompressingSource::RunWorker(uint64_t offset) {
  Worker& w = *worker_;
  Worker::Block block;
  auto take_spare = [&] {
    std::lock_guard lock(w.mutex);
    if (!w.spare_blocks.empty()) {
      block = std::move(w.spare_blocks.back());
      w.spare_blocks.pop_back();
    }
  };
  auto push_block = [&](uint64_t input_end) {  // false when the consumer is going away
    std::unique_lock lock(w.mutex);
    w.changed.wait(lock, [&] { return w.stop || w.blocks.size() < Worker::kMaxBlocks; });
    if (w.stop) return false;
    block.input_end = input_end;
    w.blocks.push_back(std::move(block));
    block = {};
    w.changed.notify_all();
    return true;
  };
  try {
    for (;;) {
      std::vector<uint8_t> chunk;
      {
        std::unique_lock lock(w.mutex);
        w.changed.wait(lock, [&] { return w.stop || !w.chunks.empty(); });
        if (w.stop) return;
        chunk = std::move(w.chunks.front());
        w.chunks.pop_front();
        w.busy = true;
        w.changed.notify_all();
      }
      if (chunk.empty()) {  // end of input
        if (block.size > 0 && !push_block(offset)) return;
        if (frame_open_) Fail("truncated frame", offset);
        std::lock_guard lock(w.mutex);
        w.output_ended = true;
        w.changed.notify_all();
        return;
      }
      ZSTD_inBuffer in{chunk.data(), chunk.size(), 0};
      for (;;) {
        if (!block.bytes) take_spare();
        if (!block.bytes) block.bytes = std::make_unique_for_overwrite<uint8_t[]>(Worker::kBlockSize);
        ZSTD_outBuffer out{block.bytes.get(), Worker::kBlockSize, block.size};
        const size_t in_before = in.pos, out_before = out.pos;
        size_t rc = ZSTD_decompressStream(dctx_, &out, &in);
        block.size = out.pos;
        if (ZSTD_isError(rc)) FailInFrame(rc, offset + chunk.size());
        NoteFrame(rc, in.pos != in_before || out.pos != out_before, offset + in.pos);
        const bool full = out.pos == out.size;  // zstd may hold more output
        // A partly filled block goes out when the chunk is used up: the consumer may be waiting.
        if ((full || (in.pos == in.size && block.size > 0)) && !push_block(offset + in.pos)) return;
        if (in.pos == in.size && !full) break;
      }
      offset += chunk.size();
      std::lock_guard lock(w.mutex);
      w.busy = false;
      w.changed.notify_all();
      if (w.spare_chunks.size() < Worker::kMaxChunks) w.spare_chunks.push_back(std::move(chunk));
    }
  } catch (...) {
    std::lock_guard lock(w.mutex);
    w.error = std::current_exception();
    w.output_ended = true;
    w.changed.notify_all();
  }
}

// A frame is open from its first byte read until zstd says it is done (0). A call that only
// drains what an ended frame left in zstd (its output filled the caller's buffer exactly) takes
// no input and gives no output, and returns the size of the next frame's header: that frame has
// not begun, and an input that ends there is whole.
void DecompressingSource::NoteFrame(size_t rc, bool moved, uint64_t at) {
  if (rc == 0) {
    frame_open_ = false;
    frame_start_ = at;  // the next frame begins here
  } else if (moved) {
    frame_open_ = true;
  }
}

// A zstd error found in the input up to `end`: zstd notices damage at a block's or its frame's
// checksum, and does not say where in the bytes given to it, so the range is from the start of
// the frame (helper-70: a flipped bit at byte 5 was reported "at byte 393225", one at 40 "at byte 0").
void DecompressingSource::FailInFrame(size_t zstd_error, uint64_t end) const {
  // Memory the process could not get (ulimit -v) is no damage of the stream: exit 65 told the
  // operator a good backup was corrupt (helper-102).
  if (ZSTD_getErrorCode(zstd_error) == ZSTD_error_memory_allocation)
    Throw(Errc::kTempFail, "stream: zstd: out of memory decompressing the frame that begins at byte " +
                               std::to_string(frame_start_) + " (a memory limit, ulimit -v?); the stream itself "
                               "is not known to be damaged: run again with more memory");
  const char* reason = ZSTD_getErrorName(zstd_error);
  Throw(Errc::kCorrupt, std::string("stream: zstd: ") + reason + " in compressed bytes " + std::to_string(frame_start_) +
                            " to " + std::to_string(end) + " (in the zstd frame that begins at byte " +
                            std::to_string(frame_start_) + ")");
}

// The consumer: serves decompressed blocks and keeps the worker fed, reading `in` itself.
size_t DecompressingSource::ReadFromWorker(void* data, size_t size) {
  Worker& w = *worker_;
  for (;;) {
    if (w.current_pos < w.current.size) {
      size_t n = std::min(size, w.current.size - w.current_pos);
      std::memcpy(data, w.current.bytes.get() + w.current_pos, n);
      w.current_pos += n;
      return n;
    }
    std::vector<uint8_t> chunk;
    {
      std::unique_lock lock(w.mutex);
      if (w.current.bytes && w.spare_blocks.size() < 2) {
        w.current.size = 0;
        w.spare_blocks.push_back(std::move(w.current));
      }
      w.current = {};
      w.current_pos = 0;
      if (!w.blocks.empty()) {
        w.current = std::move(w.blocks.front());
        w.blocks.pop_front();
        delivered_.store(w.current.input_end, std::memory_order_relaxed);
        w.changed.notify_all();
      } else if (w.error) {
        std::rethrow_exception(w.error);
      } else if (w.output_ended) {
        delivered_.store(bytes_in(), std::memory_order_relaxed);
        return 0;
      }
      // Keep the worker fed: one read of `in` per block handed out, or while waiting.
      auto room = [&] { return !w.input_ended && w.chunks.size() < Worker::kMaxChunks; };
      if (!room()) {
        // Wait for output, or for room to feed the worker (it may need more input to produce any).
        if (!w.current.bytes) w.changed.wait(lock, [&] { return !w.blocks.empty() || w.output_ended || room(); });
        continue;
      }
      // A read of `in` may wait for its writer, which may keep the pipe open long after the last
      // byte (`(cat stream; sleep 600) | restore`): while a block can be served, or the worker may
      // still make one from input it has, read only what is there already.
      const bool worker_may_output = w.busy || !w.chunks.empty();
      if ((w.current.bytes || worker_may_output) && !in_.Ready()) {
        if (!w.current.bytes)
          w.changed.wait(lock, [&] {
            return !w.blocks.empty() || w.output_ended || w.error || (!w.busy && w.chunks.empty());
          });
        continue;
      }
      if (!w.spare_chunks.empty()) {
        chunk = std::move(w.spare_chunks.back());
        w.spare_chunks.pop_back();
      }
    }
    chunk.resize(buf_.size());
    size_t got = in_.Read(chunk.data(), chunk.size());
    chunk.resize(got);
    consumed_ += got;
    std::lock_guard lock(w.mutex);
    if (got == 0) w.input_ended = true;
    w.chunks.push_back(std::move(chunk));
    w.changed.notify_all();
  }
}

void DecompressingSource::Fail(const char* reason) const { Fail(reason, bytes_in()); }

void DecompressingSource::Fail(const char* reason, uint64_t at) {
  Throw(Errc::kCorrupt, std::string("stream: zstd: ") + reason + " at byte " + std::to_string(at));
}

// Looks at the first 4 bytes: a zstd frame (or skippable frame) magic selects decompression.
void DecompressingSource::Detect() {
  while (in_size_ < 4) {
    size_t got = in_.Read(buf_.data() + in_size_, buf_.size() - in_size_);
    if (got == 0) {
      eof_ = true;
      break;
    }
    in_size_ += got;
  }
  uint32_t magic = in_size_ >= 4 ? GetU32(buf_.data()) : 0;
  bool zstd = in_size_ >= 4 && (magic == ZSTD_MAGICNUMBER ||
                                (magic & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START);
  if (!zstd) {
    mode_ = Mode::kPlain;
    return;
  }
  dctx_ = ZSTD_createDCtx_advanced(kZstdMemory);
  if (!dctx_) throw std::bad_alloc();
  // Memory stays bounded whatever the input asks for: a larger window is refused as corrupt.
  ZSTD_DCtx_setParameter(dctx_, ZSTD_d_windowLogMax, ZstdCompressSink::kWindowLog);
  mode_ = Mode::kZstd;
  frame_open_ = true;
  if (want_worker_) {
    worker_ = std::make_unique<Worker>();
    // The bytes read while detecting are the first chunk.
    worker_->chunks.emplace_back(buf_.begin() + static_cast<std::ptrdiff_t>(in_pos_),
                                 buf_.begin() + static_cast<std::ptrdiff_t>(in_size_));
    const uint64_t offset = consumed_ + in_pos_;
    consumed_ += in_size_;
    in_pos_ = in_size_ = 0;
    if (eof_) {
      worker_->chunks.emplace_back();
      worker_->input_ended = true;
    }
    try {
      worker_->thread = std::thread([this, offset] { RunWorker(offset); });
    } catch (...) {
      // No thread (EAGAIN under ulimit -v or -u): the destructor's join of none threw
      // std::system_error out of it, and the process aborted without a line (helper-102).
      worker_.reset();
      throw;
    }
  }
}

bool DecompressingSource::Refill() {
  consumed_ += in_size_;
  in_pos_ = in_size_ = 0;
  size_t got = in_.Read(buf_.data(), buf_.size());
  if (got == 0) {
    eof_ = true;
    return false;
  }
  in_size_ = got;
  return true;
}

size_t DecompressingSource::Read(void* data, size_t size) {
  if (size == 0) return 0;
  if (mode_ == Mode::kUnknown) Detect();
  if (mode_ == Mode::kPlain) {
    if (in_pos_ < in_size_) {  // bytes read while detecting
      size_t n = std::min(size, in_size_ - in_pos_);
      std::memcpy(data, buf_.data() + in_pos_, n);
      in_pos_ += n;
      return n;
    }
    if (eof_) return 0;
    size_t got = in_.Read(data, size);
    consumed_ += got;
    eof_ = got == 0;
    return got;
  }
  if (worker_) return ReadFromWorker(data, size);
  ZSTD_outBuffer out{data, size, 0};
  while (out.pos == 0) {
    if (in_pos_ == in_size_ && !output_pending_) {
      if (eof_ || !Refill()) {
        if (frame_open_) Fail("truncated frame");
        return 0;
      }
    }
    ZSTD_inBuffer in{buf_.data(), in_size_, in_pos_};
    const size_t out_before = out.pos;
    size_t rc = ZSTD_decompressStream(dctx_, &out, &in);
    if (ZSTD_isError(rc)) FailInFrame(rc, consumed_ + in_size_);
    NoteFrame(rc, in.pos != in_pos_ || out.pos != out_before, consumed_ + in.pos);
    in_pos_ = in.pos;
    output_pending_ = out.pos == out.size;
  }
  return out.pos;
}

}  // namespace storemove::format
