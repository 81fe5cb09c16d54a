// The zstd wrapping: round trips, interoperability with the zstd CLI, corrupt input.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

#include "format/format.h"
#include "format/zstd_codec.h"
#include "tests/format/stream_testing.h"
#include "util/bytes.h"
#include "util/error.h"

namespace storemove::format {
namespace {

using namespace testing;  // NOLINT: the helpers of stream_testing.h

// The offset sweeps below decode the stream once per byte. The normal build (CI) visits every
// offset; an ASan or TSan build, 10-20x slower, visits every 7th (a different residue each
// sweep would be no better: memory errors do not depend on which byte is damaged), which keeps
// them under the sanitized builds' test timeout on a 2-core machine.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr size_t kSweepStride = 7;
#else
constexpr size_t kSweepStride = 1;
#endif

class TempDir {
 public:
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string base = tmp && *tmp ? tmp : std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string pattern = base + "/format_test.XXXXXX";
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp " + pattern);
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name, std::string_view contents) const {
    std::string path = path_ + "/" + name;
    std::ofstream(path, std::ios::binary).write(contents.data(), std::streamsize(contents.size()));
    return path;
  }

 private:
  std::string path_;
};

// Runs a shell command and returns its standard output; fails the test on a non-zero exit.
std::string RunCommand(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) {
    ADD_FAILURE() << "popen " << command;
    return out;
  }
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  EXPECT_EQ(pclose(pipe), 0) << command;
  return out;
}

bool HaveZstdCli() { return std::system("zstd --version >/dev/null 2>&1") == 0; }

std::string Compress(std::string_view plain, int level = 3, int threads = 0) {
  StringSink out;
  ZstdCompressSink zstd(out, level, threads);
  zstd.Write(plain.data(), plain.size());
  zstd.Finish();
  return out.Take();
}

// The sample written straight through a compressing sink, with a Flush() in the middle.
std::string EncodeSampleCompressed(int threads) {
  StringSink out;
  ZstdCompressSink zstd(out, 3, threads);
  Encoder encoder(zstd);
  Sample s = MakeSample();
  encoder.WriteHeader(s.header);
  encoder.WriteUser(s.users[0]);
  encoder.Flush();
  encoder.WriteUser(s.users[1]);
  encoder.WriteFolder(s.folders[0]);
  MessageRecord first = s.messages[1];
  first.content_id = 0;  // the first message of this stream
  encoder.BeginMessage(first);
  encoder.BodyChunk(s.bodies[1]);
  encoder.EndMessage();
  encoder.EndFolder();
  encoder.Finish();
  zstd.Finish();
  EXPECT_EQ(zstd.bytes_in(), encoder.bytes());
  EXPECT_EQ(zstd.bytes_out(), out.data().size());
  return out.Take();
}

// The same records without compression.
std::string EncodeSamplePlain() {
  StringSink out;
  Encoder encoder(out);
  Sample s = MakeSample();
  encoder.WriteHeader(s.header);
  encoder.WriteUser(s.users[0]);
  encoder.WriteUser(s.users[1]);
  encoder.WriteFolder(s.folders[0]);
  MessageRecord first = s.messages[1];
  first.content_id = 0;  // the first message of this stream
  encoder.BeginMessage(first);
  encoder.BodyChunk(s.bodies[1]);
  encoder.EndMessage();
  encoder.EndFolder();
  encoder.Finish();
  return out.Take();
}

Decoded DecodeWrapped(std::string_view data, size_t step = SIZE_MAX, bool worker = false) {
  TrickleSource in(data, step);
  DecompressingSource source(in, worker);
  return DecodeAll(source);
}

std::string CorruptWrapped(std::string_view data, bool worker = false) {
  try {
    DecodeWrapped(data, SIZE_MAX, worker);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kCorrupt) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("stream: ", 0), 0u) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "decoded without an error";
  return "";
}

TEST(Zstd, CompressedRoundTrip) {
  std::string plain = EncodeSample();
  Decoded expected = DecodeAll(plain);
  for (int threads : {0, 2}) {
    StringSink out;
    ZstdCompressSink zstd(out, 3, threads);
    Encoder encoder(zstd);
    WriteSample(MakeSample(), encoder);
    zstd.Finish();
    const std::string& compressed = out.data();
    ASSERT_GE(compressed.size(), 4u);
    EXPECT_EQ(GetU32(reinterpret_cast<const uint8_t*>(compressed.data())), ZSTD_MAGICNUMBER);

    for (bool worker : {false, true}) {
      StringSource in(compressed);
      DecompressingSource source(in, worker);
      Decoded d = DecodeAll(source);
      EXPECT_TRUE(source.compressed());
      EXPECT_EQ(source.bytes_in(), compressed.size());
      EXPECT_EQ(d.messages, expected.messages) << threads << worker;
      EXPECT_EQ(d.bodies, expected.bodies) << threads << worker;
      EXPECT_EQ(d.trailer, expected.trailer) << threads << worker;
      EXPECT_EQ(DecodeWrapped(compressed, 1, worker).trailer, expected.trailer) << "one byte per read";
    }
  }
}

// A decompression worker that cannot be started (EAGAIN: ulimit -v or -u) is an exception the
// command says in one line. The destructor then joined a thread that never ran, which threw out
// of it, and the process aborted without a word (helper-102). In a child whose address space is
// capped just above what it uses, so that the worker's stack cannot be mapped.
TEST(Zstd, AWorkerThatCannotStartIsAnExceptionNotAnAbort) {
  const std::string compressed = Compress(EncodeSample());
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    size_t used_kib = 0;
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.starts_with("VmSize:")) used_kib = std::stoul(line.substr(7));
    struct rlimit cap = {(used_kib + 1024) * 1024, RLIM_INFINITY};
    if (used_kib == 0 || ::setrlimit(RLIMIT_AS, &cap) != 0) ::_exit(4);
    int caught = 3;  // nothing thrown
    try {
      StringSource in(compressed);
      DecompressingSource source(in, true);
      DecodeAll(source);
    } catch (const std::system_error&) {
      caught = 0;
    } catch (const std::bad_alloc&) {
      caught = 1;
    } catch (const Error& e) {
      caught = e.code() == Errc::kTempFail ? 2 : 5;  // zstd's own allocation failed first: said as a limit
    }
    ::_exit(caught);  // after the destructor: an abort there is a signal, not this status
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus)) << "killed by signal " << WTERMSIG(wstatus);
  // Run alone (as ctest runs it), the thread is what cannot be had; after other tests in one
  // process, the heap may already lack room for zstd's window: an out-of-memory Error, no abort.
  EXPECT_TRUE(WEXITSTATUS(wstatus) == 0 || WEXITSTATUS(wstatus) == 2)
      << WEXITSTATUS(wstatus) << ": 0 thread refused, 1 bad_alloc, 2 out of memory (Error), 3 nothing thrown, 4 no cap, "
      << "5 another Error";
}

TEST(Zstd, PlainStreamPassesThrough) {
  std::string plain = EncodeSample();
  Decoded expected = DecodeAll(plain);
  for (size_t step : {size_t{1}, size_t{2}, size_t{5}, SIZE_MAX}) {
    TrickleSource in(plain, step);
    DecompressingSource source(in);
    Decoded d = DecodeAll(source);
    EXPECT_FALSE(source.compressed());
    EXPECT_EQ(source.bytes_in(), plain.size());
    EXPECT_EQ(d.bodies, expected.bodies) << step;
    EXPECT_EQ(d.trailer, expected.trailer) << step;
  }
}

TEST(Zstd, FlushKeepsOneFrame) {
  std::string compressed = EncodeSampleCompressed(0);
  EXPECT_EQ(ZSTD_findFrameCompressedSize(compressed.data(), compressed.size()), compressed.size());
  EXPECT_EQ(DecodeWrapped(compressed).trailer, DecodeAll(EncodeSamplePlain()).trailer);
}

TEST(Zstd, CliDecodesOurOutputToTheExactStream) {
  if (!HaveZstdCli()) GTEST_SKIP() << "zstd CLI not installed";
  TempDir dir;
  std::string plain = EncodeSamplePlain();
  for (int threads : {0, 2}) {
    std::string path = dir.File("sample.zst", EncodeSampleCompressed(threads));
    std::string decoded = RunCommand("zstd -d -c -q '" + path + "'");
    EXPECT_EQ(decoded, plain) << "threads " << threads;
  }
}

TEST(Zstd, ReadsCliOutputConcatenatedAndSkippableFrames) {
  std::string plain = EncodeSample();
  Decoded expected = DecodeAll(plain);
  if (HaveZstdCli()) {
    TempDir dir;
    std::string path = dir.File("sample", plain);
    EXPECT_EQ(DecodeWrapped(RunCommand("zstd -q -c -19 '" + path + "'")).bodies, expected.bodies);
  }
  size_t half = plain.size() / 2;
  std::string two_frames = Compress(plain.substr(0, half)) + Compress(plain.substr(half), 1);
  EXPECT_EQ(DecodeWrapped(two_frames).bodies, expected.bodies);
  EXPECT_EQ(DecodeWrapped(two_frames, 3, /*worker=*/true).bodies, expected.bodies);

  std::string skippable;
  AppendU32(&skippable, ZSTD_MAGIC_SKIPPABLE_START + 3);
  AppendU32(&skippable, 5);
  skippable += "notes";
  EXPECT_EQ(DecodeWrapped(skippable + Compress(plain)).bodies, expected.bodies);
}

TEST(Zstd, TruncationAtEveryOffsetIsCorrupt) {
  std::string compressed = EncodeSampleCompressed(0);
  for (bool worker : {false, true}) {
    for (size_t n = 0; n < compressed.size(); n += kSweepStride)
      ASSERT_FALSE(CorruptWrapped(std::string_view(compressed).substr(0, n), worker).empty()) << "cut at " << n;
    EXPECT_EQ(CorruptWrapped(std::string_view(compressed).substr(0, compressed.size() - 1), worker),
              "stream: zstd: truncated frame at byte " + std::to_string(compressed.size() - 1))
        << worker;
  }
}

// A flip in the compressed bytes is either reported or harmless: some frame-header bits (the
// window size) change how zstd decodes, not what comes out.
TEST(Zstd, ByteFlipsAreCorruptOrHarmless) {
  std::string plain = EncodeSamplePlain();
  std::string compressed = EncodeSampleCompressed(0);
  size_t harmless = 0;
  for (size_t at = 0; at < compressed.size(); at += kSweepStride) {
    for (uint8_t mask : {0x01, 0x80}) {
      std::string bad = compressed;
      bad[at] = static_cast<char>(bad[at] ^ mask);
      std::string inline_error, worker_error;
      for (bool worker : {false, true}) {
        try {
          DecodeWrapped(bad, SIZE_MAX, worker);
        } catch (const Error& e) {
          ASSERT_EQ(e.code(), Errc::kCorrupt) << e.what();
          ASSERT_EQ(std::string(e.what()).rfind("stream: ", 0), 0u) << e.what();
          (worker ? worker_error : inline_error) = e.what();
          // A zstd error names a range of compressed bytes, and the damage is in it (helper-70:
          // "at byte 393225" for a flip at byte 5, "at byte 0" for one at 40).
          const std::string what = e.what();
          if (what.starts_with("stream: zstd: ") && what.find("truncated") == std::string::npos) {
            const size_t p = what.find(" in compressed bytes ");
            ASSERT_NE(p, std::string::npos) << what;
            unsigned long long first = 0, last = 0;
            ASSERT_EQ(std::sscanf(what.c_str() + p, " in compressed bytes %llu to %llu", &first, &last), 2) << what;
            EXPECT_LE(first, at) << what;
            EXPECT_LT(at, last) << what;
          }
        }
      }
      ASSERT_EQ(inline_error.empty(), worker_error.empty()) << inline_error << " / " << worker_error;
      if (!inline_error.empty()) continue;
      StringSource in(bad);
      DecompressingSource source(in);
      std::string out(plain.size() + 1, '\0');
      size_t n = 0, got;
      while ((got = source.Read(out.data() + n, out.size() - n)) > 0) n += got;
      ASSERT_EQ(out.substr(0, n), plain) << "flip " << int(mask) << " at " << at << " changed the content unnoticed";
      ++harmless;
    }
  }
  EXPECT_LT(harmless, compressed.size() / 10);
}

TEST(Zstd, GarbageAfterTheFrameIsCorrupt) {
  std::string compressed = EncodeSampleCompressed(0);
  std::string error = CorruptWrapped(compressed + "junk after the frame");
  EXPECT_TRUE(error.starts_with("stream: zstd: ")) << error;
  EXPECT_NE(error.find(" at byte " + std::to_string(compressed.size())), std::string::npos) << error;
}

TEST(Zstd, LargeMessageThroughWorkerThreads) {
  constexpr size_t kSize = 6 << 20;
  std::string body;
  for (size_t i = 0; body.size() < kSize; ++i) body += "line " + std::to_string(i * 7919 % 100003) + " of text\n";
  body.resize(kSize);
  StringSink out;
  ZstdCompressSink zstd(out, 1, 2);
  Encoder encoder(zstd);
  encoder.WriteHeader(StreamHeader{});
  FolderRecord folder;
  folder.user = "u";
  folder.folder = "INBOX";
  encoder.WriteFolder(folder);
  MessageRecord m;
  m.uid = 1;
  m.size = body.size();
  m.digest = DigestOf(body);
  encoder.BeginMessage(m);
  encoder.BodyChunk(body);
  encoder.EndMessage();
  encoder.EndFolder();
  encoder.Finish();
  zstd.Finish();
  EXPECT_LT(out.data().size(), body.size() / 4) << "text should compress";
  Decoded d = DecodeWrapped(out.data());
  ASSERT_EQ(d.bodies.size(), 1u);
  EXPECT_TRUE(d.bodies[0] == body);
  EXPECT_EQ(d.body_events, 6u);
  // The decompression worker: many blocks, full queues both ways, reads of every size.
  for (size_t step : {size_t{1000}, size_t{65536}, SIZE_MAX}) {
    Decoded w = DecodeWrapped(out.data(), step, /*worker=*/true);
    ASSERT_EQ(w.bodies.size(), 1u);
    EXPECT_TRUE(w.bodies[0] == body) << step;
    EXPECT_EQ(w.trailer, d.trailer) << step;
  }
  // Cut in the middle: the bytes before the cut still decode, then the truncation is reported.
  std::string cut = out.data().substr(0, out.data().size() / 2);
  EXPECT_EQ(CorruptWrapped(cut, /*worker=*/true), "stream: zstd: truncated frame at byte " + std::to_string(cut.size()));
}

// The bytes of a compressed prefix a decoder can already give (after a Flush: all of them).
std::string DecompressPrefix(const std::string& compressed) {
  ZSTD_DStream* d = ZSTD_createDStream();
  ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, ZstdCompressSink::kWindowLog);
  std::string plain;
  std::vector<char> buf(1 << 16);
  ZSTD_inBuffer in{compressed.data(), compressed.size(), 0};
  for (;;) {
    ZSTD_outBuffer out{buf.data(), buf.size(), 0};
    size_t rc = ZSTD_decompressStream(d, &out, &in);
    EXPECT_FALSE(ZSTD_isError(rc)) << ZSTD_getErrorName(rc);
    plain.append(buf.data(), out.pos);
    if (ZSTD_isError(rc) || (in.pos == in.size && out.pos < out.size)) break;
  }
  ZSTD_freeDStream(d);
  return plain;
}

// Compression on a thread of its own writes exactly what the calling thread writes: the same
// frame, byte for byte, whatever the sizes of the writes, with flushes that hand over
// everything written so far.
// A pipe whose writer has sent everything but keeps it open: its bytes, then Read() waits until
// the test lets it end. Ready() says whether a Read would wait, as poll(2) does for FdSource.
class HeldOpenSource final : public ByteSource {
 public:
  explicit HeldOpenSource(std::string data, size_t piece) : data_(std::move(data)), piece_(piece) {}
  size_t Read(void* out, size_t size) override {
    if (pos_ == data_.size()) {
      std::unique_lock lock(mutex_);
      waited_ = true;
      released_cv_.wait(lock, [&] { return released_; });
      return 0;
    }
    const size_t n = std::min({size, piece_, data_.size() - pos_});
    std::memcpy(out, data_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  bool Ready() override {
    std::lock_guard lock(mutex_);
    return pos_ < data_.size() || released_;
  }
  void Release() {
    std::lock_guard lock(mutex_);
    released_ = true;
    released_cv_.notify_all();
  }

 private:
  std::string data_;
  size_t piece_, pos_ = 0;
  std::mutex mutex_;
  std::condition_variable released_cv_;
  bool released_ = false, waited_ = false;
};

// `(cat stream.zst; sleep 600) | restore -f -` applied nothing for ten minutes: the consumer,
// holding decompressed blocks, read its input first and waited there for the writer. Every
// decompressed byte must be readable while the writer still holds the pipe open.
TEST(Zstd, TheWorkerServesEveryByteBeforeTheInputEnds) {
  std::string plain;
  for (size_t i = 0; plain.size() < (3u << 20); ++i) plain += "row " + std::to_string(i * 2654435761u % 1000003) + "\n";
  const std::string compressed = Compress(plain, 1);
  for (size_t piece : {size_t{1} << 10, size_t{64} << 10, compressed.size()}) {
    HeldOpenSource source(compressed, piece);
    DecompressingSource input(source, /*worker=*/true);
    auto all = std::async(std::launch::async, [&] {
      std::string got(plain.size(), '\0');
      size_t at = 0;
      while (at < got.size()) {
        const size_t n = input.Read(got.data() + at, got.size() - at);
        if (n == 0) break;
        at += n;
      }
      got.resize(at);
      return got;
    });
    // A bound for the failure only: the bytes come at once when they come at all.
    const bool served = all.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
    EXPECT_TRUE(served) << "piece " << piece << ": decompressed bytes held back until the input ends";
    source.Release();
    EXPECT_TRUE(all.get() == plain) << "piece " << piece;
    char more;
    EXPECT_EQ(input.Read(&more, 1), 0u) << "piece " << piece;
  }
}

// A restore's progress is the input behind what the decoder has had, not what was read ahead of
// it: the worker holds up to ~1 MiB decompressed, thousands of small messages (helper-162: 100 %
// with 18 % of the messages to go). Incompressible bytes, so input and output keep step.
TEST(Zstd, InputDeliveredFollowsTheOutputHandedOut) {
  std::string plain(size_t{8} << 20, '\0');
  uint64_t x = 88172645463325252ull;
  for (char& c : plain) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<char>(x);
  }
  const std::string compressed = Compress(plain, 1);
  StringSource source(compressed);
  DecompressingSource input(source, /*worker=*/true);
  std::string chunk(size_t{64} << 10, '\0');
  uint64_t out = 0, last = 0;
  for (;;) {
    const size_t n = input.Read(chunk.data(), chunk.size());
    if (n == 0) break;
    out += n;
    const uint64_t delivered = input.input_delivered();
    EXPECT_GE(delivered, last) << "at " << out;
    EXPECT_LE(delivered, input.bytes_in()) << "at " << out;
    // Behind what was handed out by at most one block (256 KiB) and zstd's framing.
    EXPECT_LE(delivered, out + (size_t{256} << 10) + 4096) << "at " << out << " of " << compressed.size();
    last = delivered;
  }
  EXPECT_EQ(out, plain.size());
  EXPECT_EQ(input.input_delivered(), compressed.size());
}

TEST(Zstd, BackgroundCompressionWritesTheSameBytes) {
  std::string text;
  for (size_t i = 0; text.size() < (size_t{3} << 20); ++i) text += "Received: from host" + std::to_string(i * 7919 % 100003) + "\r\n";
  for (int level : {1, 3}) {
    StringSink fore_out, back_out;
    ZstdCompressSink fore(fore_out, level, 0);
    ZstdCompressSink back(back_out, level, 0, /*background=*/true);
    size_t pos = 0, step = 1;
    while (pos < text.size()) {
      size_t n = std::min(step, text.size() - pos);
      fore.Write(text.data() + pos, n);
      back.Write(text.data() + pos, n);
      pos += n;
      step = step * 7 % 400009 + 1;  // 1 byte to ~400 KiB: within, across and beyond a chunk
      if (pos > text.size() / 2 && pos - n <= text.size() / 2) {
        fore.Flush();
        back.Flush();
        EXPECT_EQ(back_out.data(), fore_out.data()) << "level " << level << ", at the flush";
        EXPECT_EQ(DecompressPrefix(back_out.data()), text.substr(0, pos)) << "a flush hands over every byte";
      }
    }
    fore.Finish();
    back.Finish();
    EXPECT_EQ(back.bytes_in(), text.size());
    EXPECT_EQ(back.bytes_out(), back_out.data().size());
    EXPECT_EQ(back_out.data(), fore_out.data()) << "level " << level;
    EXPECT_EQ(DecompressPrefix(back_out.data()), text);
  }
}

// A write error of the compressing thread (a closed pipe, a full disk) reaches the caller, and
// a sink dropped without Finish neither hangs nor writes on.
TEST(Zstd, BackgroundCompressionReportsTheOutputsError) {
  class FailingSink final : public ByteSink {
   public:
    void Write(const void*, size_t size) override {
      written += size;
      if (written > 100000) Throw(Errc::kIo, "write standard output: Broken pipe");
    }
    size_t written = 0;
  };
  std::string noise(1 << 20, '\0');
  uint64_t x = 88172645463325252ull;
  for (char& c : noise) {  // incompressible: every chunk reaches the output
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = char(x);
  }
  FailingSink failing;
  ZstdCompressSink zstd(failing, 1, 0, /*background=*/true);
  std::string error;
  try {
    for (int i = 0; i < 64; ++i) zstd.Write(noise.data(), noise.size());
    zstd.Finish();
  } catch (const Error& e) {
    error = e.what();
    EXPECT_EQ(e.code(), Errc::kIo);
  }
  EXPECT_EQ(error, "write standard output: Broken pipe");

  StringSink out;
  {
    ZstdCompressSink dropped(out, 1, 0, /*background=*/true);
    for (int i = 0; i < 8; ++i) dropped.Write(noise.data(), noise.size());
  }
  EXPECT_TRUE(ZSTD_isError(ZSTD_findFrameCompressedSize(out.data().data(), out.data().size())))
      << "dropped without Finish: the frame stays unended";
}

// Text that compresses like mail (words of a vocabulary, in no order a short window predicts):
// level 1 takes it at ~250 MB/s here, far slower than the writer copies it.
std::string WordSoup(size_t size) {
  std::vector<std::string> words;
  uint64_t x = 0x9E3779B97F4A7C15ull;
  auto next = [&x] {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return x;
  };
  for (int i = 0; i < 4096; ++i) {
    std::string word;
    for (uint64_t n = 2 + next() % 9; n > 0; --n) word += char('a' + next() % 26);
    words.push_back(word);
  }
  std::string text;
  text.reserve(size + 16);
  while (text.size() < size) text += words[next() % words.size()] + (next() % 12 == 0 ? "\r\n" : " ");
  return text;
}

std::string Inflate(std::string_view compressed) {
  TrickleSource in(compressed, SIZE_MAX);
  DecompressingSource source(in);
  std::string plain;
  std::vector<char> buf(1 << 16);
  while (size_t n = source.Read(buf.data(), buf.size())) plain.append(buf.data(), n);
  return plain;
}

// A frame whose content ends exactly where the reader's buffer fills (64 KiB reads here, the
// worker's 256 KiB blocks) is whole: zstd, asked once more for what it might hold, answers
// with the size of a next frame's header, which is no frame begun. It was read as truncated.
TEST(Zstd, AFrameThatEndsWhereTheReadersBufferFillsIsWhole) {
  for (size_t size : {size_t{1} << 20, size_t{3} << 18, size_t{5} << 16}) {
    const std::string text = WordSoup(size).substr(0, size);
    ASSERT_EQ(text.size(), size);
    StringSink out;
    ZstdCompressSink zstd(out, 3, 0);
    zstd.Write(text.data(), text.size());
    zstd.Finish();
    zstd.Write(text.data(), text.size());  // a second frame, ending the same way
    zstd.Finish();
    for (bool worker : {false, true}) {
      TrickleSource in(out.data(), SIZE_MAX);
      DecompressingSource source(in, worker);
      std::string plain;
      std::vector<char> buf(1 << 16);
      try {
        while (size_t n = source.Read(buf.data(), buf.size())) plain.append(buf.data(), n);
      } catch (const Error& e) {
        ADD_FAILURE() << size << " bytes, worker " << worker << ": " << e.what();
      }
      EXPECT_TRUE(plain == text + text) << size << " bytes, worker " << worker;
    }
  }
}

ZstdCompressSink::Adapt AdaptOn() {
  ZstdCompressSink::Adapt adapt;
  adapt.on = true;
  return adapt;
}

// The compressed size of `text` at one level, as the adaptive sinks below compare theirs.
size_t FixedLevelSize(const std::string& text, int level) {
  StringSink out;
  ZstdCompressSink zstd(out, level, 0);
  zstd.Write(text.data(), text.size());
  zstd.Finish();
  return out.data().size();
}

// The zstd frames `data` is made of, or 0 when it is not whole frames.
size_t CountFrames(std::string_view data) {
  size_t frames = 0;
  while (!data.empty()) {
    const size_t n = ZSTD_findFrameCompressedSize(data.data(), data.size());
    if (ZSTD_isError(n)) return 0;
    data.remove_prefix(n);
    ++frames;
  }
  return frames;
}

// Written faster than level 1 compresses, into an output that takes everything at once: the
// writer waits for the compressor, so the level goes down (within the frame, but for the
// lowest rung, which starts one).
TEST(Zstd, AnAdaptiveLevelGoesDownWhileTheCompressorHoldsTheWriterBack) {
  // Memory written once ahead: no page faults or reallocation while the bytes arrive.
  class FastSink final : public ByteSink {
   public:
    explicit FastSink(size_t capacity) : bytes(capacity, '\0') {}
    void Write(const void* data, size_t size) override {
      if (size > bytes.size() - used) Throw(Errc::kIo, "FastSink: full");
      std::memcpy(bytes.data() + used, data, size);
      used += size;
    }
    std::string bytes;
    size_t used = 0;
  };
  const std::string text = WordSoup(size_t{64} << 20);  // windows of >= 100 ms: several
  FastSink out(text.size() + (size_t{1} << 20));
  ZstdCompressSink zstd(out, 1, 0, /*background=*/true, AdaptOn());
  for (size_t pos = 0; pos < text.size(); pos += 65536) zstd.Write(text.data() + pos, std::min<size_t>(65536, text.size() - pos));
  zstd.Finish();
  ASSERT_NE(zstd.adaptive(), nullptr);
  EXPECT_LT(zstd.adaptive()->lowest(), 1);
  EXPECT_EQ(zstd.adaptive()->highest(), 1);
  EXPECT_GE(zstd.adaptive()->changes(), 1u);
  EXPECT_EQ(zstd.bytes_in(), text.size());
  EXPECT_EQ(zstd.bytes_out(), out.used);
  EXPECT_TRUE(Inflate(std::string_view(out.bytes.data(), out.used)) == text);
  // The lower levels reached zstd: more bytes than level 1 throughout.
  EXPECT_GT(out.used, FixedLevelSize(text, 1));
}

// An output that takes its bytes slowly (a link: 10 ms a write of up to 128 KiB, ~13 MB/s): the compressor waits for it,
// so the level goes up and the bytes sent shrink.
TEST(Zstd, AnAdaptiveLevelGoesUpWhileTheOutputHoldsItBack) {
  class SlowSink final : public ByteSink {
   public:
    void Write(const void* data, size_t size) override {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      bytes.append(static_cast<const char*>(data), size);
    }
    std::string bytes;
  };
  const std::string text = WordSoup(size_t{24} << 20);
  SlowSink out;
  ZstdCompressSink zstd(out, 1, 0, /*background=*/true, AdaptOn());
  for (size_t pos = 0; pos < text.size(); pos += 65536) zstd.Write(text.data() + pos, std::min<size_t>(65536, text.size() - pos));
  zstd.Flush();  // a flush mid-way keeps the frame going
  zstd.Finish();
  ASSERT_NE(zstd.adaptive(), nullptr);
  EXPECT_GT(zstd.adaptive()->highest(), 1);
  EXPECT_EQ(zstd.adaptive()->lowest(), 1);
  EXPECT_EQ(ZSTD_findFrameCompressedSize(out.bytes.data(), out.bytes.size()), out.bytes.size())
      << "one frame: levels change within it";
  // The higher levels reached zstd, within the frame: fewer bytes than level 1 throughout.
  EXPECT_LT(out.bytes.size(), FixedLevelSize(text, 1));
  EXPECT_TRUE(Inflate(out.bytes) == text);
}

// Down to the lowest rung (no long window: a new frame) while the processors are busy and the
// output free, and up again once the output turns slow (another frame): every step reaches
// zstd, and the frames together are the bytes written. Windows of 1 MiB, no time floor.
TEST(Zstd, AnAdaptiveLevelStepsOntoAndOffTheLowestRungWithNewFrames) {
  // Memory written once ahead (no page faults while the bytes arrive), until it turns slow.
  class TurningSink final : public ByteSink {
   public:
    explicit TurningSink(size_t capacity) : bytes(capacity, '\0') {}
    void Write(const void* data, size_t size) override {
      if (used >= size_t{6} << 20) std::this_thread::sleep_for(std::chrono::milliseconds(25));
      if (size > bytes.size() - used) Throw(Errc::kIo, "TurningSink: full");
      std::memcpy(bytes.data() + used, data, size);
      used += size;
    }
    std::string_view written() const { return std::string_view(bytes.data(), used); }
    std::string bytes;
    size_t used = 0;
  };
  const std::string text = WordSoup(size_t{24} << 20);
  TurningSink out(text.size() + (size_t{1} << 20));
  int calls = 0;  // the compressing thread's alone
  ZstdCompressSink::Adapt adapt = AdaptOn();
  adapt.window_bytes = size_t{1} << 20;
  adapt.window_ns = 0;
  adapt.cpu_idle_share = [&calls] { return ++calls <= 6 ? 0.0 : 1.0; };  // busy, then idle
  ZstdCompressSink zstd(out, 1, 0, /*background=*/true, std::move(adapt));
  for (size_t pos = 0; pos < text.size(); pos += 65536) zstd.Write(text.data() + pos, std::min<size_t>(65536, text.size() - pos));
  zstd.Finish();
  ASSERT_NE(zstd.adaptive(), nullptr);
  EXPECT_EQ(zstd.adaptive()->lowest(), -50);
  // Failed once in a full ctest -j2 beside a loaded machine (2026-12-07), 0 of 18 runs alone or
  // beside four busy loops: the highest rung and the count of changes tell whether it never
  // rose or came back down.
  EXPECT_GT(zstd.adaptive()->level(), -50) << "back up once the output turned slow; highest "
                                           << zstd.adaptive()->highest() << ", " << zstd.adaptive()->changes()
                                           << " changes, " << calls << " windows";
  EXPECT_GE(CountFrames(out.written()), 3u) << "onto the lowest rung and off it: a frame each";
  EXPECT_TRUE(Inflate(out.written()) == text);
}

TEST(Zstd, AnAdaptiveLevelNeedsTheBackgroundThread) {
  StringSink out;
  for (auto [threads, background] : {std::pair{0, false}, std::pair{2, true}}) {
    try {
      ZstdCompressSink zstd(out, 1, threads, background, AdaptOn());
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument);
      EXPECT_STREQ(e.what(), "zstd: an adaptive level needs the background thread and no worker threads");
    }
  }
}

TEST(Zstd, BadParametersAreRejected) {
  StringSink out;
  for (auto [level, threads] : {std::pair{ZSTD_maxCLevel() + 1, 0}, std::pair{3, -1}}) {
    try {
      ZstdCompressSink zstd(out, level, threads);
      ADD_FAILURE() << "level " << level << " threads " << threads << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument) << e.what();
    }
  }
}

}  // namespace
}  // namespace storemove::format
