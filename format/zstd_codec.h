// zstd wrapping of a byte stream (docs/stream-format.md §10). The compressed form is
// plain zstd frames (content checksum on), so `zstd -d` reads what ZstdCompressSink writes.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "format/adaptive_level.h"
#include "format/format.h"

typedef struct ZSTD_CCtx_s ZSTD_CCtx;
typedef struct ZSTD_DCtx_s ZSTD_DCtx;

namespace storemove::format {

// ZstdCompressSink's adaptive level (its constructor says what it does).
struct ZstdAdaptOptions {
  bool on = false;
  // A decision per window of at least this much input and this long.
  uint64_t window_bytes = uint64_t{4} << 20;
  uint64_t window_ns = 100'000'000;
  // When given, how idle the machine was since it was last called (CpuIdleMeter; -1 for not
  // known); only the compressing thread calls it.
  std::function<double()> cpu_idle_share;
};

// Compresses everything written into one zstd frame (an adaptive level may start more: below).
// Data leaves only when zstd's output
// buffer fills, on Flush() (ends a block, keeps the frame open) and on Finish() (ends the
// frame). Destroying the sink without Finish() leaves an unterminated frame, which readers reject.
class ZstdCompressSink final : public ByteSink {
 public:
  static constexpr int kWindowLog = 25;  // 32 MiB window, long-distance matching on
  // The job of a zstd worker thread (--threads, --compress adapt): small, to bound memory.
  static constexpr int kWorkerJobSize = 512 << 10;
  // level: ZSTD_minCLevel()..ZSTD_maxCLevel() (0 = zstd default 3); threads: worker threads, 0 = in
  // the calling thread. Throws kInvalidArgument for values zstd refuses.
  //
  // With `background` set, one thread of its own compresses (and writes `out`) while the caller
  // goes on: Write copies into a short queue of 256 KiB chunks (at most ~1.3 MiB held), Flush and
  // Finish wait until everything queued is written. The output is byte for byte what the calling
  // thread would write. An error of the thread (a write to `out` failing) is thrown by the next
  // Write, Flush or Finish. Only for a one-way output (a file or a pipe): a caller that also uses
  // `out` itself, or waits for an answer over the same channel, must not have writes running behind.
  //
  // With `adapt.on` (needs `background`) the level moves with where the time goes (AdaptiveLevel):
  // down while Write waits for the thread, up while the thread waits for `out`. Each change
  // takes effect at zstd's next job (zstd's own worker thread, jobs of 512 KiB) within the frame;
  // only a step onto or off the lowest rung, which has no long window, starts a new frame. The
  // output is plain zstd frames still, but no longer the same bytes from run to run.
  using Adapt = ZstdAdaptOptions;
  ZstdCompressSink(ByteSink& out, int level, int threads, bool background = false, Adapt adapt = {});
  ~ZstdCompressSink() override;
  ZstdCompressSink(const ZstdCompressSink&) = delete;
  ZstdCompressSink& operator=(const ZstdCompressSink&) = delete;

  void Write(const void* data, size_t size) override;
  void Flush() override;
  void Finish();  // ends the frame and flushes `out`; later writes start a new frame

  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t bytes_out() const { return bytes_out_; }
  // The adaptive level's record (null without `adapt.on`); read it after Flush or Finish.
  const AdaptiveLevel* adaptive() const { return adaptive_.get(); }

 private:
  struct Worker;
  void Compress(const void* data, size_t size, int mode);  // mode: ZSTD_EndDirective
  void WriteOut();
  void Submit(int mode);  // hands the pending chunk to the worker (background only)
  void WaitIdle();        // until the worker has written everything submitted
  void RunWorker();
  void SetParameter(int param, int value, const char* what);  // a ZSTD_cParameter; throws what zstd refuses
  void Configure(int level);       // before a frame: the parameters of `level`
  void SetLevel(int level);        // adapt: within a frame, from zstd's next job on
  void SetLevelTuning(int level);  // the parameters that go with a level
  void AdaptAfter(size_t size, int mode);  // the worker, after a chunk: maybe change the level

  ByteSink& out_;
  ZSTD_CCtx* cctx_;
  std::vector<uint8_t> buf_;
  size_t buf_used_ = 0;
  std::atomic<uint64_t> bytes_in_ = 0;   // counted by the thread that compresses
  std::atomic<uint64_t> bytes_out_ = 0;
  std::vector<uint8_t> pending_;  // background: bytes written, not yet handed over
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<AdaptiveLevel> adaptive_;
  Adapt adapt_;
  int threads_ = 0;
  uint64_t output_waited_ns_ = 0;  // adapt, the worker's: time in out_.Write this window
  uint64_t busy_ns_ = 0;           // time compressing and writing this window
  uint64_t window_start_ns_ = 0;
  uint64_t window_bytes_ = 0;
};

// Reads a stream that is either zstd-compressed (it starts with a zstd frame magic, or a
// skippable-frame magic) or not (anything else passes through untouched). Concatenated frames
// are accepted. Corrupt or truncated zstd input throws Error(kCorrupt,
// "stream: zstd: <reason> at byte X"), X counting compressed bytes.
//
// With `worker` set, zstd decompression runs on a thread of its own (the two sides of a
// `backup | restore` pipe then use both cores); the calling thread still does every read of
// `in`, so the worker never blocks on I/O and destruction never waits for input. Only for a
// one-way input (a file or pipe): reads of `in` happen ahead of the consumer's need, which a
// conversation over the same channel (a network session waiting for an answer) must not have.
class DecompressingSource final : public ByteSource {
 public:
  explicit DecompressingSource(ByteSource& in, bool worker = false);
  ~DecompressingSource() override;
  DecompressingSource(const DecompressingSource&) = delete;
  DecompressingSource& operator=(const DecompressingSource&) = delete;

  size_t Read(void* data, size_t size) override;

  bool compressed() const { return mode_ == Mode::kZstd; }  // known after the first Read()
  uint64_t bytes_in() const { return consumed_ + in_pos_; }  // input bytes consumed
  // The input bytes behind the output handed out so far: bytes_in() without what the worker
  // holds decompressed ahead (up to ~1 MiB, which at small messages is thousands of them: a
  // restore's progress said 100 % at 82 % of them, helper-162). Asked on the reading thread
  // (the first Read sets up the worker); the figure itself is atomic.
  uint64_t input_delivered() const {
    return worker_ ? delivered_.load(std::memory_order_relaxed) : bytes_in();
  }

 private:
  enum class Mode { kUnknown, kPlain, kZstd };
  struct Worker;
  void Detect();
  bool Refill();
  size_t ReadFromWorker(void* data, size_t size);
  void RunWorker(uint64_t offset);
  // After ZSTD_decompressStream, `at` the input offset it reached: is a frame open, and where
  // does the current one begin?
  void NoteFrame(size_t rc, bool moved, uint64_t at);
  [[noreturn]] void Fail(const char* reason) const;
  [[noreturn]] static void Fail(const char* reason, uint64_t at);
  [[noreturn]] void FailInFrame(size_t zstd_error, uint64_t end) const;  // a ZSTD_isError code

  ByteSource& in_;
  std::unique_ptr<Worker> worker_;  // set with `worker` once the input is known to be zstd
  std::atomic<uint64_t> delivered_{0};  // input_delivered() with a worker
  bool want_worker_;
  ZSTD_DCtx* dctx_ = nullptr;
  Mode mode_ = Mode::kUnknown;
  std::vector<uint8_t> buf_;
  size_t in_pos_ = 0, in_size_ = 0;  // unread input is buf_[in_pos_, in_size_)
  uint64_t consumed_ = 0;            // input bytes before buf_[0]
  bool eof_ = false;
  bool frame_open_ = false;      // inside a frame: the input must not end here
  // Input offset where the current frame began: zstd notices damage only at a block's or the
  // frame's checksum, up to a frame (~ the whole stream) after it, so an error names both.
  uint64_t frame_start_ = 0;
  bool output_pending_ = false;  // the last call filled the output, zstd may hold more
};

}  // namespace storemove::format
