#include "bench/bench_support.h"

#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "store/generate.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::bench {
namespace {

constexpr uint64_t kSampleBudget = uint64_t{24} << 20;  // bytes of messages kept in memory

std::string CorpusDir() {
  const char* env = ::getenv("STOREMOVE_CORPUS");
  return env && *env ? env : STOREMOVE_CORPUS;
}

// Plain-text mail with a lognormal body size around the corpus median (~1.6 KB).
std::string SyntheticMessage(std::mt19937_64& rng, uint64_t n) {
  static constexpr const char* kWords[] = {"the",     "mailbox", "server", "message", "quota",  "folder",
                                           "restore", "backup",  "stream", "partition", "please", "meeting",
                                           "report",  "invoice", "attached", "regards", "tomorrow", "review"};
  std::lognormal_distribution<double> size_dist(std::log(1600.0), 1.1);
  size_t body = static_cast<size_t>(std::clamp(size_dist(rng), 40.0, 2e6));
  std::string m = "From: sender" + std::to_string(n % 97) + "@example.org\r\nTo: user@example.com\r\n" +
                  "Subject: message " + std::to_string(n) + "\r\nDate: Mon, 3 Jun 2024 10:00:00 +0000\r\n" +
                  "Message-ID: <" + std::to_string(n) + "@example.org>\r\n\r\n";
  size_t column = 0;
  for (size_t start = m.size(); m.size() - start < body;) {
    const char* w = kWords[rng() % std::size(kWords)];
    m += w;
    column += std::strlen(w) + 1;
    if (column > 70) {
      m += "\r\n";
      column = 0;
    } else {
      m += ' ';
    }
  }
  return m;
}

struct Sample {
  std::vector<std::string> messages;
  std::string origin;
};

Sample LoadSample() {
  Sample s;
  const std::string dir = CorpusDir();
  if (std::filesystem::is_directory(dir)) {
    std::vector<store::CorpusEntry> entries = store::ReadCorpusManifests(dir);
    uint64_t total = 0;
    for (const auto& e : entries) total += e.bytes;
    // Every stride-th entry: an even sample across sources, about kSampleBudget bytes.
    const size_t stride = std::max<uint64_t>(1, (total + kSampleBudget - 1) / kSampleBudget);
    for (size_t i = 0; i < entries.size(); i += stride)
      if (entries[i].bytes > 0) s.messages.push_back(ReadFile(entries[i].path));
    s.origin = dir;
  }
  if (s.messages.empty()) {
    std::mt19937_64 rng(42);
    uint64_t bytes = 0;
    for (uint64_t n = 0; bytes < kSampleBudget; ++n) {
      s.messages.push_back(SyntheticMessage(rng, n));
      bytes += s.messages.back().size();
    }
    s.origin = "synthetic";
  }
  return s;
}

const Sample& TheSample() {
  static const Sample sample = LoadSample();
  return sample;
}

}  // namespace

const std::vector<std::string>& SampleMessages() { return TheSample().messages; }
const std::string& SampleOrigin() { return TheSample().origin; }

std::string MessageOfSize(size_t size, uint64_t seed) {
  const auto& sample = SampleMessages();
  std::string out;
  out.reserve(size);
  for (size_t i = seed % sample.size(); out.size() < size; i = (i + 1) % sample.size())
    out.append(sample[i], 0, size - out.size());
  return out;
}

ScratchDir::ScratchDir() {
  std::string base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
  std::string templ = base + "/storemove-bench-XXXXXX";
  if (!::mkdtemp(templ.data())) ThrowErrno("mkdtemp " + templ);
  path_ = templ;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void Deliver(store::Folder& folder, const std::vector<std::string>& bodies, size_t batch) {
  std::vector<store::StagedMessage> staged;
  for (const std::string& body : bodies) {
    auto writer = folder.NewMessage();
    writer->Write(body);
    staged.push_back(writer->Finish({}));
    if (staged.size() == batch) folder.Commit(staged);
  }
  folder.Commit(staged);
}

}  // namespace storemove::bench
