// Shared fixtures of the micro-benchmarks: realistic message bytes (the shared corpus when it is
// there, synthetic mail text otherwise), scratch directories on tmpfs, and a counting sink.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/format.h"
#include "store/store.h"

namespace storemove::bench {

// A sample of whole messages, about `budget` bytes, deterministic for a given corpus. Taken
// evenly across every corpus source (so sizes follow the corpus distribution), or synthesized
// when the corpus is absent. Loaded once per process.
const std::vector<std::string>& SampleMessages();
// Where SampleMessages() came from: the corpus path, or "synthetic".
const std::string& SampleOrigin();
// `size` bytes of mail-like text (headers and prose cut from the sample), for fixed-size cases.
std::string MessageOfSize(size_t size, uint64_t seed);

// A directory under /dev/shm (or $TMPDIR), removed with everything in it on destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Throws the bytes away, counting them.
class NullSink final : public format::ByteSink {
 public:
  void Write(const void*, size_t size) override { bytes_ += size; }
  uint64_t bytes() const { return bytes_; }

 private:
  uint64_t bytes_ = 0;
};

// Commits `bodies` into `folder` as new messages, `batch` per Commit().
void Deliver(store::Folder& folder, const std::vector<std::string>& bodies, size_t batch = 512);

}  // namespace storemove::bench
