// The store on tmpfs: store.idx parsing (Folder::Snapshot) and writing (Folder::Commit),
// staging message files, and backup / restore of one folder through the stream library.
#include <benchmark/benchmark.h>

#include <map>
#include <memory>

#include "bench/bench_support.h"
#include "format/zstd_codec.h"
#include "store/store.h"
#include "stream/stream.h"

namespace storemove::bench {
namespace {

// --- store.idx ---------------------------------------------------------------------------

// One store whose folders of N messages are built on first use and kept for the process.
class SnapshotFixture {
 public:
  store::Folder& FolderOf(int64_t messages) {
    auto it = folders_.find(messages);
    if (it != folders_.end()) return *it->second;
    const std::string user = "snap" + std::to_string(messages);
    store_->CreateUser(user);
    auto folder = store_->OpenFolder(user, "INBOX");
    std::vector<std::string> bodies;
    for (int64_t i = 0; i < messages; ++i) bodies.push_back(MessageOfSize(2048, uint64_t(i)));
    Deliver(*folder, bodies, 1024);
    return *folders_.emplace(messages, std::move(folder)).first->second;
  }

 private:
  ScratchDir dir_;
  std::unique_ptr<store::Store> store_ = store::Store::Init(dir_.path() + "/store", {"primary"});
  std::map<int64_t, std::unique_ptr<store::Folder>> folders_;
};

SnapshotFixture& Snapshots() {
  static SnapshotFixture fixture;
  return fixture;
}

// Reading a folder's whole index (header, names, every record) plus its mboxlist entry.
void BM_FolderSnapshot(benchmark::State& state) {
  store::Folder& folder = Snapshots().FolderOf(state.range(0));
  for (auto _ : state) {
    store::FolderSnapshot snap = folder.Snapshot();
    if (snap.messages.size() != size_t(state.range(0))) state.SkipWithError("snapshot lost messages");
    benchmark::DoNotOptimize(snap);
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_FolderSnapshot)->ArgName("messages")->Arg(100)->Arg(1000)->Arg(10000);

// The folder summary (store::Summarize) migrate compares during the hold, from a snapshot
// already taken; every fourth message carries two of three user flags.
void BM_FolderSummarize(benchmark::State& state) {
  store::FolderSnapshot snap = Snapshots().FolderOf(state.range(0)).Snapshot();
  snap.info.user_flag_names = {"$Junk", "work", "$Forwarded"};
  for (size_t i = 0; i < snap.messages.size(); i += 4) snap.messages.mutable_records()[i].user_flags = 0b101;
  for (auto _ : state) benchmark::DoNotOptimize(store::Summarize(snap));
  state.SetItemsProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_FolderSummarize)->ArgName("messages")->Arg(100)->Arg(1000)->Arg(10000);

// One flag change (a new modseq: header, then the record) in a folder of N messages.
void BM_FolderSetFlags(benchmark::State& state) {
  store::Folder& folder = Snapshots().FolderOf(state.range(0));
  uint8_t flags = 0;
  for (auto _ : state) {
    flags ^= store::kSeen;
    folder.SetFlags(1, flags, 0);
  }
}
BENCHMARK(BM_FolderSetFlags)->ArgName("messages")->Arg(100)->Arg(10000);

// Every message's flags changed in one call, as restore and moveuser apply a folder's flag
// changes ("mark all read" before a migration's pass): N changes for one read of the index,
// where N calls of BM_FolderSetFlags read it N times.
void BM_FolderSetFlagsOfAll(benchmark::State& state) {
  store::Folder& folder = Snapshots().FolderOf(state.range(0));
  std::vector<store::FlagChange> changes;
  for (const store::MessageMeta& m : folder.Snapshot().messages) changes.push_back({m.uid, 0, 0});
  uint8_t flags = 0;
  for (auto _ : state) {
    flags ^= store::kSeen;
    for (store::FlagChange& change : changes) change.flags = flags;
    folder.SetFlags(changes);
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(changes.size()));
}
BENCHMARK(BM_FolderSetFlagsOfAll)->ArgName("messages")->Arg(10000)->Unit(benchmark::kMillisecond);

// Making a batch of staged 2 KiB messages visible: renames, the index append, the quota update.
// Staging happens outside the timed region.
void BM_FolderCommit(benchmark::State& state) {
  ScratchDir dir;
  auto st = store::Store::Init(dir.path() + "/store", {"primary"});
  st->CreateUser("commit");
  auto folder = st->OpenFolder("commit", "INBOX");
  const std::string body = MessageOfSize(2048, 3);
  std::vector<store::StagedMessage> staged;
  for (auto _ : state) {
    state.PauseTiming();
    for (int64_t i = 0; i < state.range(0); ++i) {
      auto writer = folder->NewMessage();
      writer->Write(body);
      staged.push_back(writer->Finish({}));
    }
    state.ResumeTiming();
    folder->Commit(staged);
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_FolderCommit)->ArgName("batch")->Arg(1)->Arg(64)->Arg(512);

// Writing one message file under a temporary name (create, write, hash, close): restore's
// per-message cost before the commit.
void BM_StageMessage(benchmark::State& state) {
  ScratchDir dir;
  auto st = store::Store::Init(dir.path() + "/store", {"primary"});
  st->CreateUser("stage");
  auto folder = st->OpenFolder("stage", "INBOX");
  const std::string body = MessageOfSize(size_t(state.range(0)), 5);
  std::vector<store::StagedMessage> staged;
  for (auto _ : state) {
    auto writer = folder->NewMessage();
    writer->Write(body);
    staged.push_back(writer->Finish({}));
    if (staged.size() == 256) {
      state.PauseTiming();
      folder->Discard(staged);
      state.ResumeTiming();
    }
  }
  folder->Discard(staged);
  state.SetItemsProcessed(int64_t(state.iterations()));
  state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_StageMessage)->ArgName("msg_bytes")->Arg(2 << 10)->Arg(64 << 10);

// --- backup and restore of one folder ----------------------------------------------------------

constexpr int kFolderMessages = 1000;

// A source store with one user whose INBOX holds 1,000 messages taken evenly from the sample,
// and its backup stream at each compression level asked for.
class FolderFixture {
 public:
  FolderFixture() {
    source_->CreateUser("bench");
    auto inbox = source_->OpenFolder("bench", "INBOX");
    const auto& sample = SampleMessages();
    std::vector<std::string> bodies;
    for (int i = 0; i < kFolderMessages; ++i) {
      // A unique first line, as a delivering MTA's Received: header makes every copy unique.
      bodies.push_back("X-Bench-Delivery: " + std::to_string(i) + "\r\n" + sample[i * sample.size() / kFolderMessages]);
      bytes_ += bodies.back().size();
    }
    Deliver(*inbox, bodies);
  }

  store::Store& source() { return *source_; }
  uint64_t bytes() const { return bytes_; }

  const std::string& Stream(int level) {
    auto it = streams_.find(level);
    if (it != streams_.end()) return it->second;
    format::StringSink sink;
    WriteBackup(sink, level);
    return streams_.emplace(level, sink.Take()).first->second;
  }

  void WriteBackup(format::ByteSink& sink, int level) {
    stream::BackupOptions options;
    options.source_host = "bench";
    if (level == 0) {
      format::Encoder encoder(sink);
      stream::Backup(*source_, options, encoder);
      return;
    }
    format::ZstdCompressSink zstd(sink, level, 0);
    format::Encoder encoder(zstd);
    stream::Backup(*source_, options, encoder);
    zstd.Finish();
  }

 private:
  ScratchDir dir_;
  std::unique_ptr<store::Store> source_ = store::Store::Init(dir_.path() + "/source", {"primary"});
  uint64_t bytes_ = 0;
  std::map<int, std::string> streams_;
};

FolderFixture& Folder1000() {
  static FolderFixture fixture;
  return fixture;
}

void CompressionArgs(benchmark::internal::Benchmark* b) { b->ArgName("zstd_level")->Arg(0)->Arg(3); }

// Backup of the folder (snapshot, read, verify digest, encode, compress) into a null sink.
void BM_BackupFolder(benchmark::State& state) {
  FolderFixture& f = Folder1000();
  for (auto _ : state) {
    NullSink sink;
    f.WriteBackup(sink, int(state.range(0)));
    benchmark::DoNotOptimize(sink.bytes());
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * kFolderMessages);
  state.SetBytesProcessed(int64_t(state.iterations() * f.bytes()));
}
BENCHMARK(BM_BackupFolder)->Apply(CompressionArgs)->Unit(benchmark::kMillisecond);

// Restore of the folder's stream into a fresh empty store; creating and removing the
// destination store is outside the timed region.
void BM_RestoreFolder(benchmark::State& state) {
  FolderFixture& f = Folder1000();
  const std::string& bytes = f.Stream(int(state.range(0)));
  for (auto _ : state) {
    state.PauseTiming();
    auto dir = std::make_unique<ScratchDir>();
    auto destination = store::Store::Init(dir->path() + "/store", {"primary"});
    state.ResumeTiming();

    format::StringSource source(bytes);
    format::DecompressingSource input(source);
    format::Decoder decoder(input);
    stream::SessionReport report = stream::Restore(destination.get(), decoder, {});
    if (report.messages + report.links != kFolderMessages) state.SkipWithError("restore lost messages");

    state.PauseTiming();
    destination.reset();
    dir.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * kFolderMessages);
  state.SetBytesProcessed(int64_t(state.iterations() * f.bytes()));
}
BENCHMARK(BM_RestoreFolder)->Apply(CompressionArgs)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace storemove::bench
