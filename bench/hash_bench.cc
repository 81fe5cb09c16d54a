// Content hashing: XXH3-128 (util/digest.h, every message on both sides) against SHA-256
// (OpenSSL), which network sessions compute for held records.
#include <openssl/evp.h>

#include <benchmark/benchmark.h>

#include <algorithm>

#include "bench/bench_support.h"
#include "util/digest.h"

namespace storemove::bench {
namespace {

void SizeArgs(benchmark::internal::Benchmark* b) {
  b->ArgName("msg_bytes");
  for (int64_t size : {1 << 10, 16 << 10, 1 << 20}) b->Arg(size);
}

void BM_Xxh3_128(benchmark::State& state) {
  const std::string data = MessageOfSize(size_t(state.range(0)), 1);
  for (auto _ : state) benchmark::DoNotOptimize(DigestOf(data));
  state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Xxh3_128)->Apply(SizeArgs);

// The incremental Hasher in 64 KiB pieces, as MessageWriter and the stream hashers use it.
void BM_Xxh3_128_Streaming(benchmark::State& state) {
  const std::string data = MessageOfSize(size_t(state.range(0)), 1);
  Hasher hasher;
  for (auto _ : state) {
    hasher.Reset();
    for (size_t off = 0; off < data.size(); off += 64 << 10)
      hasher.Update(data.data() + off, std::min<size_t>(64 << 10, data.size() - off));
    benchmark::DoNotOptimize(hasher.Final());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Xxh3_128_Streaming)->Apply(SizeArgs);

void BM_Sha256(benchmark::State& state) {
  const std::string data = MessageOfSize(size_t(state.range(0)), 1);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  for (auto _ : state) {
    if (!EVP_Digest(data.data(), data.size(), md, &md_len, EVP_sha256(), nullptr)) {
      state.SkipWithError("EVP_Digest failed");
      break;
    }
    benchmark::DoNotOptimize(md);
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Sha256)->Apply(SizeArgs);

}  // namespace
}  // namespace storemove::bench
