#include "format/zstd_codec.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "util/bytes.h"
#include "util/error.h"

namespace storemove::format {

ZstdCompressSink::ZstdCompressSink(ByteSink& out, int level, int threads)
    : out_(out), cctx_(ZSTD_createCCtx()), buf_(ZSTD_CStreamOutSize()) {
  if (!cctx_) throw std::bad_alloc();
  auto set = [this](ZSTD_cParameter param, int value, const char* what) {
    size_t rc = ZSTD_CCtx_setParameter(cctx_, param, value);
    if (ZSTD_isError(rc)) {
      ZSTD_freeCCtx(cctx_);
      Throw(Errc::kInvalidArgument,
            std::string("zstd: cannot use ") + what + " " + std::to_string(value) + ": " + ZSTD_getErrorName(rc));
    }
  };
  if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
    ZSTD_freeCCtx(cctx_);
    Throw(Errc::kInvalidArgument, "zstd: compression level " + std::to_string(level) + " outside " +
                                      std::to_string(ZSTD_minCLevel()) + ".." + std::to_string(ZSTD_maxCLevel()));
  }
  ZSTD_bounds workers = ZSTD_cParam_getBounds(ZSTD_c_nbWorkers);  // upper 0: libzstd without threads
  if (threads < 0 || (!ZSTD_isError(workers.error) && threads > workers.upperBound)) {
    ZSTD_freeCCtx(cctx_);
    Throw(Errc::kInvalidArgument, "zstd: " + std::to_string(threads) + " worker threads outside 0.." +
                                      std::to_string(workers.upperBound));
  }
  set(ZSTD_c_compressionLevel, level, "compression level");
  set(ZSTD_c_checksumFlag, 1, "content checksum");
  // Mail repeats itself far apart (the same list post in many mailboxes, quoted replies): a
  // 32 MiB window with long-distance matching finds it, where the default 2 MiB window does
  // not, at about 50 MiB of memory. 2^25 stays below the 2^27 that `zstd -d` accepts unasked.
  set(ZSTD_c_windowLog, kWindowLog, "window log");
  set(ZSTD_c_enableLongDistanceMatching, 1, "long-distance matching");
  if (threads != 0) set(ZSTD_c_nbWorkers, threads, "worker threads");
}

ZstdCompressSink::~ZstdCompressSink() { ZSTD_freeCCtx(cctx_); }

void ZstdCompressSink::WriteOut() {
  if (buf_used_ == 0) return;
  out_.Write(buf_.data(), buf_used_);
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
    if (ZSTD_isError(left)) Throw(Errc::kIo, std::string("zstd: compression failed: ") + ZSTD_getErrorName(left));
    if (buf_used_ == buf_.size()) WriteOut();
    bool done = directive == ZSTD_e_continue ? in.pos == in.size : left == 0;
    if (done) break;
  }
  bytes_in_ += size;
}

void ZstdCompressSink::Write(const void* data, size_t size) {
  if (size > 0) Compress(data, size, ZSTD_e_continue);
}

void ZstdCompressSink::Flush() {
  Compress(nullptr, 0, ZSTD_e_flush);
  WriteOut();
  out_.Flush();
}

void ZstdCompressSink::Finish() {
  Compress(nullptr, 0, ZSTD_e_end);
  WriteOut();
  out_.Flush();
}

DecompressingSource::DecompressingSource(ByteSource& in) : in_(in), buf_(ZSTD_DStreamInSize()) {}

DecompressingSource::~DecompressingSource() { ZSTD_freeDCtx(dctx_); }

void DecompressingSource::Fail(const char* reason) const {
  Throw(Errc::kCorrupt, std::string("stream: zstd: ") + reason + " at byte " + std::to_string(bytes_in()));
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
  dctx_ = ZSTD_createDCtx();
  if (!dctx_) throw std::bad_alloc();
  // Memory stays bounded whatever the input asks for: a larger window is refused as corrupt.
  ZSTD_DCtx_setParameter(dctx_, ZSTD_d_windowLogMax, ZstdCompressSink::kWindowLog);
  mode_ = Mode::kZstd;
  frame_open_ = true;
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
  ZSTD_outBuffer out{data, size, 0};
  while (out.pos == 0) {
    if (in_pos_ == in_size_ && !output_pending_) {
      if (eof_ || !Refill()) {
        if (frame_open_) Fail("truncated frame");
        return 0;
      }
    }
    ZSTD_inBuffer in{buf_.data(), in_size_, in_pos_};
    size_t rc = ZSTD_decompressStream(dctx_, &out, &in);
    in_pos_ = in.pos;
    if (ZSTD_isError(rc)) Fail(ZSTD_getErrorName(rc));
    frame_open_ = rc != 0;
    output_pending_ = out.pos == out.size;
  }
  return out.pos;
}

}  // namespace storemove::format
