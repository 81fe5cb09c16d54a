#include "store/writeback.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "store/sync.h"
#include "util/error.h"
#include "util/fault.h"

namespace storemove::store {

BackgroundWriteback::BackgroundWriteback(Store& store, uint64_t every_bytes) : every_bytes_(every_bytes) {
  for (StoreFilesystem& f : OpenStoreFilesystems(store)) {
    if (OnMemoryFilesystem(f.dir.get())) continue;
    filesystems_.push_back(std::move(f.dir));
    names_.push_back(f.name);
  }
  if (!filesystems_.empty()) thread_ = std::thread([this] { Loop(); });
}

BackgroundWriteback::~BackgroundWriteback() { EndRounds(); }

void BackgroundWriteback::EndRounds() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void BackgroundWriteback::Wrote(uint64_t bytes) {
  if (!thread_.joinable()) return;
  since_last_ += bytes;
  if (since_last_ < every_bytes_) return;
  since_last_ = 0;
  {
    std::lock_guard lock(mu_);
    requested_ = true;  // one in progress: the next starts when it ends
  }
  cv_.notify_one();
}

void BackgroundWriteback::Stop() {
  EndRounds();
  std::lock_guard lock(mu_);
  if (!error_.empty()) Throw(Errc::kIo, error_);
}

uint64_t BackgroundWriteback::runs() const {
  std::lock_guard lock(mu_);
  return runs_;
}

void BackgroundWriteback::WaitForRuns(uint64_t n) {
  std::unique_lock lock(mu_);
  ran_.wait(lock, [&] { return runs_ >= n; });
}

void BackgroundWriteback::Loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return requested_ || stop_; });
    if (stop_) return;
    requested_ = false;
    lock.unlock();
    std::string failed;
    for (size_t i = 0; i < filesystems_.size(); ++i) {
      int err = fault::Check(fault::Op::kFsync);
      if (err == 0 && ::syncfs(filesystems_[i].get()) != 0) err = errno;
      if (err && failed.empty()) failed = "syncfs " + names_[i] + ": " + std::strerror(err);
    }
    lock.lock();
    ++runs_;
    if (error_.empty()) error_ = failed;
    ran_.notify_all();
  }
}

}  // namespace storemove::store
