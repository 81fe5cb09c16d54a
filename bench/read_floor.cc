// read_floor: the fastest in-order reader of many small files we know on this kind of machine,
// doing nothing with what it reads. scripts/bench-disk times it cold as the floor for backup:
// what is left between it and `storemove backup` is the store's own work (indexes, records,
// hashing, compression), not the reading.
//
//   find S -name '*.msg' -print0 | sort -zV | read_floor [THREADS] [WINDOW]
//
// THREADS threads (16) open the files ahead and ask the kernel for their data
// (posix_fadvise WILLNEED), at most WINDOW (128) files ahead; the main thread reads each whole
// file in the given order from the page cache into one buffer, as storemove's read-ahead does
// (docs/performance.md, "Reading many files at once"). Prints the files and bytes read.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kNotYet = -2;

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 16;
  const size_t window = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 128;
  if (threads < 1 || window < 1) {
    std::fprintf(stderr, "usage: read_floor [THREADS>0] [WINDOW>0] < NUL-separated paths\n");
    return 2;
  }
  std::vector<std::string> paths;
  for (std::string path; std::getline(std::cin, path, '\0');) paths.push_back(std::move(path));

  std::vector<std::atomic<int>> fds(paths.size());
  for (auto& fd : fds) fd = kNotYet;
  std::atomic<size_t> next_to_open{0}, consumed{0};
  std::mutex mutex;
  std::condition_variable room, opened;
  std::vector<std::thread> openers;
  for (int i = 0; i < threads; ++i)
    openers.emplace_back([&] {
      for (size_t k; (k = next_to_open++) < paths.size();) {
        {
          std::unique_lock lock(mutex);
          room.wait(lock, [&] { return k < consumed.load() + window; });
        }
        int fd = ::open(paths[k].c_str(), O_RDONLY | O_CLOEXEC);
        if (fd >= 0) ::posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
        {
          std::lock_guard lock(mutex);
          fds[k] = fd >= 0 ? fd : -1;
        }
        opened.notify_one();
      }
    });

  std::vector<char> buffer;
  unsigned long long bytes = 0, failed = 0;
  for (size_t k = 0; k < paths.size(); ++k) {
    int fd = fds[k].load();
    if (fd == kNotYet) {
      std::unique_lock lock(mutex);
      opened.wait(lock, [&] { return fds[k].load() != kNotYet; });
      fd = fds[k].load();
    }
    struct stat st;
    if (fd < 0 || ::fstat(fd, &st) != 0) {
      ++failed;
    } else {
      if (buffer.size() < size_t(st.st_size) + 1) buffer.resize(size_t(st.st_size) + 1);
      ssize_t got = ::pread(fd, buffer.data(), buffer.size(), 0);
      if (got < 0) ++failed; else bytes += size_t(got);
    }
    if (fd >= 0) ::close(fd);
    {
      std::lock_guard lock(mutex);
      consumed = k + 1;
    }
    if ((k + 1) % 16 == 0 || k + 1 == paths.size()) room.notify_all();
  }
  for (auto& t : openers) t.join();
  std::fprintf(stderr, "read_floor: %zu files, %llu bytes, %llu unreadable\n", paths.size(), bytes, failed);
  return failed ? 1 : 0;
}
