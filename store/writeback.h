// Starting a bulk load's disk writes while it goes on (restore). Bulk writes are made durable by
// one syncfs(2) per store filesystem before success is reported (store/sync.h); until then the
// kernel holds the dirty pages (for 30 s, or up to a tenth of memory), so the whole load reached
// the disk inside that final call, after the CPU work. A syncfs on a thread of its own every
// `every_bytes` written overlaps those writes with the rest of the load and leaves the final
// call little to do. The durability contract is unchanged: success still waits for the final
// syncfs. On a memory filesystem (tmpfs) nothing is done.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/store.h"
#include "util/fs.h"

namespace storemove::store {

class BackgroundWriteback {
 public:
  static constexpr uint64_t kDefaultEveryBytes = 32u << 20;

  explicit BackgroundWriteback(Store& store, uint64_t every_bytes = kDefaultEveryBytes);
  ~BackgroundWriteback();  // waits for a syncfs in progress
  BackgroundWriteback(const BackgroundWriteback&) = delete;
  BackgroundWriteback& operator=(const BackgroundWriteback&) = delete;

  // `bytes` more were written; asks for a syncfs once every_bytes have accumulated (never waits).
  void Wrote(uint64_t bytes);
  // Ends the background rounds, waiting for one in progress, and throws what any of them failed
  // with (a write error of the disk). Called before the load's final sync (store::StoreSync):
  // checked while a round still ran, an error that round met would be lost. Wrote does nothing
  // afterwards.
  void Stop();
  // How many background syncfs rounds have run, and a wait for the nth (tests).
  uint64_t runs() const;
  void WaitForRuns(uint64_t n);
  // False on a memory filesystem: there is nothing to start early.
  bool active() const { return thread_.joinable(); }

 private:
  void Loop();
  void EndRounds();  // joins the thread; a round in progress finishes first

  std::vector<UniqueFd> filesystems_;  // one directory per disk filesystem of the store
  std::vector<std::string> names_;
  uint64_t every_bytes_;
  uint64_t since_last_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;   // a request or stop_
  std::condition_variable ran_;  // a round ended
  bool requested_ = false;
  bool stop_ = false;
  uint64_t runs_ = 0;
  std::string error_;
  std::thread thread_;
};

}  // namespace storemove::store
