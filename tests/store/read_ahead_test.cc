// ReadAhead (store/read_ahead.h): results in the order asked whatever the threads do, each
// file's bytes and digest exact, the window's bounds kept, and every odd file (missing, larger
// than the whole-read limit, not of the expected size, a symlink) handed over as such.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <random>

#include "store/read_ahead.h"
#include "tests/support/temp_dir.h"
#include "util/digest.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {
namespace {

using storemove::testing::TempDir;
namespace fs = std::filesystem;

std::string Content(size_t i, size_t size) {
  std::string s(size, '\0');
  std::mt19937_64 rng(i);
  for (char& c : s) c = char('a' + rng() % 26);
  return s;
}

void Write(const std::string& path, const std::string& data) {
  UniqueFd fd = OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC);
  WriteAll(fd.get(), data.data(), data.size(), path);
}

struct Files {
  TempDir dir;
  UniqueFd dirfd;
  std::shared_ptr<const UniqueFd> shared;
  std::vector<std::string> names;
  std::vector<std::string> contents;

  explicit Files(size_t count, size_t max_size = 5000) {
    std::mt19937 rng(42);
    for (size_t i = 0; i < count; ++i) {
      names.push_back(std::to_string(i) + ".msg");
      contents.push_back(Content(i, rng() % max_size));
      Write(dir / names.back(), contents.back());
    }
    dirfd = OpenDirectory(dir.path());
    shared = ReadAhead::ShareDirectory(dirfd.get());
  }

  // A source asking for every file in turn, `expected` giving the size it claims.
  ReadAhead::Source Source(size_t* next, ReadMode mode = ReadMode::kRead,
                           std::function<uint64_t(size_t)> expected = nullptr) {
    return [this, next, mode, expected](ReadRequest* r) {
      if (*next >= names.size()) return false;
      size_t i = (*next)++;
      r->dir = shared;
      r->name = names[i];
      r->shown = dir / names[i];
      r->size = expected ? expected(i) : contents[i].size();
      r->mode = mode;
      r->tag = i;
      return true;
    };
  }
};

// The files are on tmpfs, all in memory: every test but the first sends them through the threads.
ReadAheadOptions Threaded() {
  ReadAheadOptions options;
  options.read_cached_inline = false;
  return options;
}

TEST(ReadAhead, ResultsComeInTheOrderAskedWithExactBytesAndDigests) {
  Files files(2000);
  for (size_t threads : {0, 1, 3, 16, 64}) {
    size_t next = 0;
    ReadAheadOptions options = Threaded();
    options.threads = std::max<size_t>(threads, 1);
    options.read_cached_inline = threads == 0;  // 0: read on the consumer's thread, as they are in memory
    ReadAhead reader(files.Source(&next), options);
    for (size_t i = 0; i < files.names.size(); ++i) {
      ReadResult r;
      ASSERT_TRUE(reader.Next(&r)) << i;
      ASSERT_EQ(r.tag, i);
      ASSERT_TRUE(r.fd.valid());
      ASSERT_TRUE(r.whole);
      ASSERT_EQ(r.data, files.contents[i]) << "threads " << threads << " file " << i;
      ASSERT_EQ(r.digest, DigestOf(files.contents[i]));
      ASSERT_EQ(uint64_t(r.st.st_size), files.contents[i].size());
    }
    ReadResult r;
    EXPECT_FALSE(reader.Next(&r));
  }
}

TEST(ReadAhead, TheWindowNeverHoldsMoreThanItsFilesOrBytes) {
  Files files(300, 40000);
  size_t next = 0;
  ReadAheadOptions options = Threaded();
  options.threads = 8;
  options.max_files = 10;
  options.max_bytes = 100000;
  size_t asked = 0, taken = 0;
  uint64_t asked_bytes = 0, taken_bytes = 0;
  auto inner = files.Source(&next);
  ReadAhead reader(
      [&](ReadRequest* r) {
        if (!inner(r)) return false;
        // Asked for while the window is within its bounds: at most max_files outstanding, and
        // bytes beyond max_bytes only by the one request that crossed it.
        EXPECT_LT(asked - taken, options.max_files);
        EXPECT_LT(asked_bytes - taken_bytes, options.max_bytes);
        ++asked;
        asked_bytes += r->size;
        return true;
      },
      options);
  ReadResult r;
  while (reader.Next(&r)) {
    ++taken;
    taken_bytes += r.data.size();
  }
  EXPECT_EQ(taken, files.names.size());
}

TEST(ReadAhead, OddFilesAreHandedOverForTheConsumerToJudge) {
  Files files(6, 2000);
  // 1: missing; 2: larger than the whole-read limit; 3: not the expected size; 4: a symlink.
  ASSERT_EQ(::unlink((files.dir / files.names[1]).c_str()), 0);
  Write(files.dir / files.names[2], std::string(3000, 'x'));
  files.contents[2] = std::string(3000, 'x');
  ASSERT_EQ(::unlink((files.dir / files.names[4]).c_str()), 0);
  ASSERT_EQ(::symlink((files.dir / files.names[0]).c_str(), (files.dir / files.names[4]).c_str()), 0);
  size_t next = 0;
  ReadAheadOptions options = Threaded();
  options.whole_file_limit = 2048;
  ReadAhead reader(files.Source(&next, ReadMode::kRead, [&](size_t i) { return i == 3 ? 1 : files.contents[i].size(); }),
                   options);
  ReadResult r;
  ASSERT_TRUE(reader.Next(&r));
  EXPECT_TRUE(r.whole);
  ASSERT_TRUE(reader.Next(&r));
  EXPECT_FALSE(r.fd.valid());
  ASSERT_TRUE(reader.Next(&r));
  EXPECT_TRUE(r.fd.valid());
  EXPECT_FALSE(r.whole);
  EXPECT_EQ(r.st.st_size, 3000);
  EXPECT_TRUE(r.data.empty());
  ASSERT_TRUE(reader.Next(&r));
  EXPECT_TRUE(r.fd.valid());
  EXPECT_FALSE(r.whole);
  // The descriptor is at offset 0 for a consumer that reads it itself.
  std::string buf(10, '\0');
  EXPECT_EQ(::read(r.fd.get(), buf.data(), buf.size()), ssize_t(std::min<size_t>(10, files.contents[3].size())));
  try {
    reader.Next(&r);
    FAIL() << "a symlink was followed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kCorrupt) << e.what();
  }
  ASSERT_TRUE(reader.Next(&r));  // the reader goes on after an error
  EXPECT_TRUE(r.whole);
  EXPECT_EQ(r.data, files.contents[5]);
}

TEST(ReadAhead, StatAndHintModesOpenWithoutReading) {
  Files files(50);
  for (ReadMode mode : {ReadMode::kStat, ReadMode::kHint}) {
    size_t next = 0;
    ReadAhead reader(files.Source(&next, mode), Threaded());
    ReadResult r;
    size_t n = 0;
    while (reader.Next(&r)) {
      EXPECT_TRUE(r.fd.valid());
      EXPECT_FALSE(r.whole);
      EXPECT_EQ(uint64_t(r.st.st_size), files.contents[n].size());
      ++n;
    }
    EXPECT_EQ(n, files.names.size());
  }
}

// The threads only open files and ask the kernel for their data; the consumer reads each one
// whole when it takes it, into the buffer its previous result gives back: however many files
// are in flight, a pass's memory holds one file's bytes, not the window's.
TEST(ReadAhead, EveryWholeReadGoesIntoTheOneBufferTheConsumerGivesBack) {
  Files files(400, 16 << 10);
  for (bool threaded : {true, false}) {
    size_t next = 0;
    ReadAheadOptions options = threaded ? Threaded() : ReadAheadOptions{};
    options.max_bytes = 64 << 20;
    ReadAhead reader(files.Source(&next), options);
    ReadResult r;
    const char* buffer = nullptr;
    for (size_t i = 0; i < files.names.size(); ++i) {
      ASSERT_TRUE(reader.Next(&r));
      ASSERT_TRUE(r.whole);
      ASSERT_EQ(r.data, files.contents[i]);
      if (!buffer) buffer = r.buffer.get();
      EXPECT_EQ(r.buffer.get(), buffer) << "file " << i << (threaded ? ", threads" : ", consumer");
    }
  }
}

// Each file in the window holds a descriptor: a low limit narrows the window, never fails a read.
TEST(ReadAhead, TheWindowStaysWithinASixteenthOfTheDescriptorLimit) {
  Files files(300);
  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  struct rlimit low = saved;
  low.rlim_cur = 512;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  size_t next = 0, asked = 0, taken = 0, widest = 0;
  auto inner = files.Source(&next);
  {
    ReadAheadOptions options = Threaded();
    options.max_files = 128;
    ReadAhead reader(
        [&](ReadRequest* r) {
          if (!inner(r)) return false;
          widest = std::max(widest, ++asked - taken);
          return true;
        },
        options);
    ReadResult r;
    while (reader.Next(&r)) {
      ASSERT_EQ(r.data, files.contents[taken]);
      ++taken;
    }
  }
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  EXPECT_EQ(taken, files.names.size());
  EXPECT_LE(widest, 512u / 16);
  EXPECT_GE(widest, 16u);
}

// Threads that run out of descriptors (another part of the process holds the rest) leave their
// files to the consumer, which opens each once the files before it are closed, and the window
// shrinks: every file arrives, where the first EMFILE used to end the pass.
TEST(ReadAhead, ThreadsOutOfDescriptorsLeaveTheirFilesToTheConsumer) {
  Files files(300);
  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  size_t next = 0, taken = 0;
  std::string failure;
  {
    ReadAheadOptions options = Threaded();
    options.max_files = 128;
    ReadAhead reader(files.Source(&next), options);  // its window sized under the limit as it is
    size_t open = 0;
    for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
      (void)entry;
      ++open;
    }
    struct rlimit low = saved;
    low.rlim_cur = open + 6;  // room for a few of the window's files only
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
    try {
      ReadResult r;
      while (reader.Next(&r)) {
        if (r.data != files.contents[taken]) failure = "file " + std::to_string(taken) + " differs";
        ++taken;
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  EXPECT_EQ(failure, "");
  EXPECT_EQ(taken, files.names.size());
}

TEST(ReadAhead, ASourceThatRunsDryIsAskedAgainLater) {
  Files files(20);
  size_t next = 0, allowed = 0;
  auto inner = files.Source(&next);
  ReadAhead reader([&](ReadRequest* r) { return next < allowed && inner(r); }, Threaded());
  ReadResult r;
  EXPECT_FALSE(reader.Next(&r));
  for (allowed = 5; allowed <= 20; allowed += 5)
    for (size_t i = allowed - 5; i < allowed; ++i) {
      ASSERT_TRUE(reader.Next(&r));
      EXPECT_EQ(r.tag, i);
    }
  EXPECT_FALSE(reader.Next(&r));
}

TEST(ReadAhead, DestroyedWithReadsInFlightItStopsCleanly) {
  Files files(500);
  for (int round = 0; round < 20; ++round) {
    size_t next = 0;
    ReadAhead reader(files.Source(&next), Threaded());
    ReadResult r;
    ASSERT_TRUE(reader.Next(&r));
  }
}

TEST(Prefetcher, RunsHintsOnItsThreadsAndIgnoresTheirErrors) {
  std::atomic<int> ran{0};
  {
    Prefetcher prefetch("/", 4, 1000);
    for (int i = 0; i < 100; ++i)
      prefetch.Submit([&ran, i] {
        ++ran;
        if (i % 7 == 0) Throw(Errc::kIo, "a hint that fails");
      });
    // Hints are not waited for; a second object proves nothing is left running after the first.
  }
  EXPECT_LE(ran.load(), 100);
  std::atomic<int> all{0};
  {
    Prefetcher prefetch("/", 2, 1000);
    std::mutex mu;
    std::condition_variable cv;
    int done = 0;
    for (int i = 0; i < 50; ++i)
      prefetch.Submit([&] {
        ++all;
        std::lock_guard lock(mu);
        ++done;
        cv.notify_all();
      });
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done == 50; });
  }
  EXPECT_EQ(all.load(), 50);
}

}  // namespace
}  // namespace storemove::store
