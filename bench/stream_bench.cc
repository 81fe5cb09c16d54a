// The backup stream in memory: encoder and validating decoder throughput over realistic message
// sizes, and the zstd wrapping at the levels and thread counts the CLI offers.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>

#include "bench/bench_support.h"
#include "format/format.h"
#include "format/zstd_codec.h"
#include "stream/stream.h"
#include "util/digest.h"

namespace storemove::bench {
namespace {

// Messages with their digests computed once, so the benchmarks time the stream code only.
struct Messages {
  std::vector<std::string> bodies;
  std::vector<Digest> digests;
  uint64_t bytes = 0;
};

Messages MakeMessages(std::vector<std::string> bodies) {
  Messages m;
  m.bodies = std::move(bodies);
  for (const std::string& b : m.bodies) {
    m.digests.push_back(DigestOf(b));
    m.bytes += b.size();
  }
  return m;
}

// range(0) == 0: the corpus sample as it is; otherwise about 8 MiB of messages of that size.
const Messages& MessagesFor(int64_t size) {
  static std::map<int64_t, Messages> cache;
  auto it = cache.find(size);
  if (it != cache.end()) return it->second;
  std::vector<std::string> bodies;
  if (size == 0) {
    bodies = SampleMessages();
  } else {
    const size_t count = std::max<int64_t>(4, (int64_t{8} << 20) / size);
    for (size_t i = 0; i < count; ++i) bodies.push_back(MessageOfSize(size_t(size), i));
  }
  return cache.emplace(size, MakeMessages(std::move(bodies))).first->second;
}

// One user with one folder holding every message: what backup writes for a mailbox.
void EncodeFolder(format::Encoder& encoder, const Messages& m) {
  format::StreamHeader header;
  header.created = 1700000000;
  header.source_host = "bench";
  header.store_id = "bench-store";
  header.selection = {"/"};
  encoder.WriteHeader(header);
  format::UserRecord user;
  user.user = "bench";
  user.partition = "primary";
  user.status = "active";
  encoder.WriteUser(user);
  format::FolderRecord folder;
  folder.user = "bench";
  folder.folder = "INBOX";
  folder.partition = "primary";
  folder.uidvalidity = 1700000000;
  folder.uidnext = uint32_t(m.bodies.size() + 1);
  folder.count = uint32_t(m.bodies.size());
  folder.bytes = m.bytes;
  encoder.WriteFolder(folder);
  for (size_t i = 0; i < m.bodies.size(); ++i) {
    format::MessageRecord r;
    r.uid = uint32_t(i + 1);
    r.flags = 0x04;
    r.internal_date = r.save_time = 1700000000 + int64_t(i);
    r.size = m.bodies[i].size();
    r.header_size = uint32_t(std::min<size_t>(m.bodies[i].size(), 600));
    r.digest = m.digests[i];
    encoder.BeginMessage(r);
    encoder.BodyChunk(m.bodies[i]);
    encoder.EndMessage();
  }
  encoder.EndFolder();
  encoder.Finish();
}

std::string EncodedStream(int64_t size) {
  format::StringSink sink;
  format::Encoder encoder(sink);
  EncodeFolder(encoder, MessagesFor(size));
  return sink.Take();
}

void SizeArgs(benchmark::internal::Benchmark* b) {
  b->ArgName("msg_bytes");
  for (int64_t size : {0, 1 << 10, 4 << 10, 64 << 10, 1 << 20}) b->Arg(size);
}

void SetMessageCounters(benchmark::State& state, const Messages& m) {
  state.SetBytesProcessed(int64_t(state.iterations() * m.bytes));
  state.SetItemsProcessed(int64_t(state.iterations() * m.bodies.size()));
}

void BM_Encode(benchmark::State& state) {
  const Messages& m = MessagesFor(state.range(0));
  for (auto _ : state) {
    NullSink sink;
    format::Encoder encoder(sink);
    EncodeFolder(encoder, m);
    benchmark::DoNotOptimize(sink.bytes());
  }
  SetMessageCounters(state, m);
}
BENCHMARK(BM_Encode)->Apply(SizeArgs);

void BM_Decode(benchmark::State& state) {
  const Messages& m = MessagesFor(state.range(0));
  const std::string stream = EncodedStream(state.range(0));
  for (auto _ : state) {
    format::StringSource source(stream);
    format::Decoder decoder(source);
    uint64_t body = 0;
    for (auto ev = decoder.Next(); ev != format::Decoder::Event::kEnd; ev = decoder.Next())
      if (ev == format::Decoder::Event::kBody) body += decoder.body().size();
    if (body != m.bytes) state.SkipWithError("decoded a different number of body bytes");
  }
  SetMessageCounters(state, m);
}
BENCHMARK(BM_Decode)->Apply(SizeArgs);

// What a `backup -u FILE` of one name per user costs to select: every user of the store asks
// the selection whether it is wanted. Linear in the users since names of one user are indexed by
// it; it was quadratic (32,000 names: 24 s of a 26 s backup, helper-65). range(0) = users = names.
void BM_SelectionOfOneNamePerUser(benchmark::State& state) {
  const int64_t users = state.range(0);
  std::vector<std::string> names;
  std::vector<store::UserInfo> infos(static_cast<size_t>(users));
  for (int64_t i = 0; i < users; ++i) {
    infos[size_t(i)].user = "u" + std::to_string(1000000 + i);
    infos[size_t(i)].partition = "primary";
    names.push_back("/primary/user/" + infos[size_t(i)].user);
  }
  const stream::Selection selection(names, {});
  for (auto _ : state) {
    int64_t wanted = 0;
    for (const store::UserInfo& u : infos) wanted += selection.WantsUser(u) && selection.WantsFolder(u, "INBOX");
    if (wanted != users) state.SkipWithError("a named user was not selected");
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * users);
}
BENCHMARK(BM_SelectionOfOneNamePerUser)->ArgName("users")->Arg(2000)->Arg(32000)->Unit(benchmark::kMillisecond);

// Compression of the encoded corpus-sample stream: range(0) = level, range(1) = worker threads.
void BM_ZstdCompress(benchmark::State& state) {
  const std::string stream = EncodedStream(0);
  uint64_t out = 0;
  for (auto _ : state) {
    NullSink sink;
    format::ZstdCompressSink zstd(sink, int(state.range(0)), int(state.range(1)));
    for (size_t off = 0; off < stream.size(); off += 1 << 20)
      zstd.Write(stream.data() + off, std::min<size_t>(1 << 20, stream.size() - off));
    zstd.Finish();
    out = sink.bytes();
  }
  state.SetBytesProcessed(int64_t(state.iterations() * stream.size()));
  state.counters["ratio"] = double(out) / double(stream.size());
}
BENCHMARK(BM_ZstdCompress)
    ->ArgNames({"level", "threads"})
    ->ArgsProduct({{1, 3, 6}, {0, 2}})
    ->UseRealTime();  // with workers the time is spent in other threads

void BM_ZstdDecompress(benchmark::State& state) {
  const std::string stream = EncodedStream(0);
  format::StringSink compressed;
  {
    format::ZstdCompressSink zstd(compressed, int(state.range(0)), 0);
    zstd.Write(stream.data(), stream.size());
    zstd.Finish();
  }
  std::string buf(1 << 20, '\0');
  for (auto _ : state) {
    format::StringSource source(compressed.data());
    format::DecompressingSource input(source);
    uint64_t total = 0;
    for (size_t n; (n = input.Read(buf.data(), buf.size())) > 0;) total += n;
    if (total != stream.size()) state.SkipWithError("decompressed a different size");
  }
  state.SetBytesProcessed(int64_t(state.iterations() * stream.size()));
}
BENCHMARK(BM_ZstdDecompress)->ArgName("level")->Arg(1)->Arg(3)->Arg(6);

// What `backup | restore` does in memory: encode + zstd 3, then decompress + decode.
void BM_EncodeZstdDecode(benchmark::State& state) {
  const Messages& m = MessagesFor(0);
  for (auto _ : state) {
    format::StringSink compressed;
    {
      format::ZstdCompressSink zstd(compressed, 3, 0);
      format::Encoder encoder(zstd);
      EncodeFolder(encoder, m);
      zstd.Finish();
    }
    format::StringSource source(compressed.data());
    format::DecompressingSource input(source);
    format::Decoder decoder(input);
    while (decoder.Next() != format::Decoder::Event::kEnd) {
    }
  }
  SetMessageCounters(state, m);
}
BENCHMARK(BM_EncodeZstdDecode);

}  // namespace
}  // namespace storemove::bench
