// Builds realistic stores for tests and benchmarks (storemove gen).
//
// Everything that ends up in the store (user ids, folders, message bytes, flags, dates) is a pure
// function of the options, so two runs with the same seed build the same store. Only UIDVALIDITY
// of the INBOX (chosen by Store::CreateUser) and the store's own bookkeeping times differ.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "store/store.h"

namespace storemove::store {

struct GenerateOptions {
  uint32_t users = 10;
  uint32_t messages_per_user = 10;
  // Share (0..1) of deliveries that are copies of a "list message" delivered to many users with
  // the same bytes, like a mailing list post.
  double dup_rate = 0;
  // Copies of a list message are hard links to the first copy in the same partition, as in a
  // store where Sun's relinker runs at delivery; otherwise every copy is a separate file.
  bool single_instance = false;
  // Root of a corpus of real messages (folders with MANIFEST.tsv); empty = synthesized messages.
  std::string corpus_dir;
  uint64_t seed = 1;
  // Partitions the users are spread over; empty = every partition of the store.
  std::vector<std::string> partitions;
  // Called after each message is staged (its bytes), for a live progress line; the total is
  // users * messages_per_user.
  std::function<void(uint64_t bytes)> on_message;
};

struct GenerateReport {
  uint64_t users = 0;
  uint64_t folders = 0;     // folders that exist for the generated users (INBOX included)
  uint64_t messages = 0;    // deliveries
  uint64_t bytes = 0;       // bytes delivered (each copy counted)
  uint64_t duplicates = 0;  // deliveries repeating the bytes of an earlier one (list copies)
  uint64_t links = 0;       // of those, how many were stored as hard links
  double seconds = 0;
};

GenerateReport Generate(Store& store, const GenerateOptions& options);

// One message file of the corpus, as listed in a source folder's MANIFEST.tsv.
struct CorpusEntry {
  std::string path;    // absolute
  uint64_t bytes = 0;
  std::string sha256;  // lower-case hex
};
// Every entry of every <corpus_dir>/*/MANIFEST.tsv, sources in name order, entries in manifest
// order. kNotFound when the directory holds no manifest; kCorrupt naming the line when one is bad.
std::vector<CorpusEntry> ReadCorpusManifests(const std::string& corpus_dir);

}  // namespace storemove::store
