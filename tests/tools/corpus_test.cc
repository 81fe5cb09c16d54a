// The real corpus end to end: every message file delivered, every mbox imported, every byte read
// back and checked (sha256 against MANIFEST.tsv, or against an independent parse of the mbox).
#include <fcntl.h>
#include <openssl/evp.h>

#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include <gtest/gtest.h>

#include "store/generate.h"
#include "interop/mbox.h"
#include "store/store.h"
#include "tests/support/store_checks.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/plural.h"

namespace storemove::store {
namespace {

using storemove::testing::ReadMessage;
using storemove::testing::CliResult;
using storemove::testing::RunCli;
using storemove::testing::RunCliWithStdinFile;
using storemove::testing::TempDir;
namespace fs = std::filesystem;

const std::string kCorpus = STOREMOVE_CORPUS;

std::string Sha256Hex(std::string_view bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), md, &length, EVP_sha256(), nullptr) != 1) {
    ADD_FAILURE() << "EVP_Digest failed";
    return "";
  }
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

// "enron-mbox-derived" for <corpus>/enron-mbox-derived/messages/x.
std::string SourceOf(const std::string& path) {
  std::string rel = path.substr(kCorpus.size() + 1);
  return rel.substr(0, rel.find('/'));
}

uint32_t UidFromVerboseDeliver(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(R"(uid (\d+))"))) return 0;
  return static_cast<uint32_t>(std::stoul(m[1]));
}

class Corpus : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!IsDirectory(kCorpus)) GTEST_SKIP() << "corpus absent: " << kCorpus;
    entries_ = ReadCorpusManifests(kCorpus);
    store_ = Store::Init(root_, {"primary"});
  }
  TempDir dir_;
  const std::string root_ = dir_ / "store";
  std::vector<CorpusEntry> entries_;
  std::unique_ptr<Store> store_;
};

TEST_F(Corpus, EveryMessageFileIsDeliveredAndReadBackByteForByte) {
  ASSERT_GT(entries_.size(), 10000u);
  // One folder per source; the bulk goes through the library (10k process spawns would be slow).
  std::map<std::string, std::map<uint32_t, const CorpusEntry*>> by_source;  // source -> uid -> entry
  {
    std::map<std::string, std::vector<const CorpusEntry*>> grouped;
    for (const CorpusEntry& e : entries_) grouped[SourceOf(e.path)].push_back(&e);
    std::vector<char> buffer(1 << 16);
    for (const auto& [source, list] : grouped) {
      auto folder = store_->CreateFolder("corpus", source);
      std::vector<StagedMessage> batch;
      std::vector<const CorpusEntry*> batch_entries;
      auto commit = [&] {
        std::vector<uint32_t> uids = folder->Commit(batch);
        ASSERT_EQ(uids.size(), batch_entries.size());
        for (size_t i = 0; i < uids.size(); ++i) by_source[source][uids[i]] = batch_entries[i];
        batch.clear();
        batch_entries.clear();
      };
      for (const CorpusEntry* e : list) {
        UniqueFd in = OpenFile(e->path, O_RDONLY);
        auto writer = folder->NewMessage();
        while (size_t n = ReadSome(in.get(), buffer.data(), buffer.size(), e->path)) writer->Write(buffer.data(), n);
        batch.push_back(writer->Finish(MessageMeta{}));
        batch_entries.push_back(e);
        if (batch.size() == 256) commit();
      }
      commit();
    }
  }

  size_t checked = 0;
  for (const auto& [source, uids] : by_source) {
    auto folder = store_->OpenFolder("corpus", source);
    FolderSnapshot snap = folder->Snapshot();
    ASSERT_EQ(snap.messages.size(), uids.size()) << source;
    for (const MessageMeta& m : snap.messages) {
      const CorpusEntry* e = uids.at(m.uid);
      const std::string bytes = ReadMessage(*folder, m.uid);
      EXPECT_EQ(m.size, e->bytes) << e->path;
      EXPECT_EQ(Sha256Hex(bytes), e->sha256) << e->path;
      EXPECT_EQ(m.digest, DigestOf(bytes)) << e->path;
      EXPECT_LE(m.header_size, m.size) << e->path;
      ++checked;
    }
  }
  EXPECT_EQ(checked, entries_.size());
}

TEST_F(Corpus, SampleDeliveredThroughTheCli) {
  std::vector<const CorpusEntry*> non_empty;
  for (const CorpusEntry& e : entries_) {
    if (e.bytes > 0) non_empty.push_back(&e);
  }
  constexpr size_t kSample = 50;
  ASSERT_GT(non_empty.size(), kSample);
  store_.reset();  // the CLI opens the store itself
  std::vector<std::pair<const CorpusEntry*, uint32_t>> delivered;
  for (size_t i = 0; i < kSample; ++i) {
    const CorpusEntry* e = non_empty[i * non_empty.size() / kSample];
    CliResult r = RunCliWithStdinFile(
        {"deliver", "--store", root_, "--user", "sample", "--create", "--folder", SourceOf(e->path), "-v"}, e->path);
    ASSERT_EQ(r.status, 0) << e->path << "\n" << r.Describe();
    const uint32_t uid = UidFromVerboseDeliver(r.out);
    ASSERT_NE(uid, 0u) << r.out;
    delivered.emplace_back(e, uid);
  }
  store_ = Store::Open(root_);
  for (const auto& [e, uid] : delivered) {
    auto folder = store_->OpenFolder("sample", SourceOf(e->path));
    EXPECT_EQ(Sha256Hex(ReadMessage(*folder, uid)), e->sha256) << e->path;
  }
}

TEST_F(Corpus, EveryMboxIsImportedAsAnIndependentParseSeesIt) {
  std::vector<std::string> mboxes;
  for (const auto& source : fs::directory_iterator(kCorpus)) {
    const fs::path dir = source.path() / "mbox";
    if (!fs::is_directory(dir)) continue;
    for (const auto& file : fs::directory_iterator(dir)) {
      if (file.is_regular_file()) mboxes.push_back(file.path().string());
    }
  }
  std::sort(mboxes.begin(), mboxes.end());
  ASSERT_GT(mboxes.size(), 50u);
  store_.reset();

  uint64_t total = 0;
  size_t not_mbox = 0;
  for (const std::string& path : mboxes) {
    const std::string folder_name = "Imports/" + SourceOf(path) + "/" + fs::path(path).filename().string();
    CliResult r = RunCli({"import", "--store", root_, "-u", "importer", "-s", path, "-d", folder_name});

    // What the importer stored, in UID order, must be exactly what a reader of the file yields.
    std::vector<interop::MboxMessage> expected;
    bool is_mbox = true;
    try {
      UniqueFd fd = OpenFile(path, O_RDONLY);
      interop::MboxReader reader(fd.get(), path);
      interop::MboxMessage m;
      while (reader.Next(&m)) expected.push_back(m);
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), Errc::kCorrupt) << e.what();
      is_mbox = false;
    }
    if (!is_mbox) {
      // Some skeleton "mbox" files are not mboxes (no "From " line first): refused, nothing created.
      ++not_mbox;
      EXPECT_EQ(r.status, 65) << path << "\n" << r.Describe();
      EXPECT_TRUE(r.err.starts_with("storemove: ") && r.err.find('\n') == r.err.size() - 1) << r.err;
      EXPECT_FALSE(Store::Open(root_)->FindFolder("importer", folder_name).has_value()) << path;
      continue;
    }
    ASSERT_EQ(r.status, 0) << path << "\n" << r.Describe();
    EXPECT_NE(r.out.find("imported " + Counted(expected.size(), "message") + " ("), std::string::npos)
        << path << ": " << r.out;
    auto store = Store::Open(root_);
    auto folder = store->OpenFolder("importer", folder_name);
    FolderSnapshot snap = folder->Snapshot();
    ASSERT_EQ(snap.messages.size(), expected.size()) << path;
    for (size_t i = 0; i < expected.size(); ++i) {
      const MessageMeta& m = snap.messages[i];
      EXPECT_EQ(ReadMessage(*folder, m.uid), expected[i].bytes) << path << " message " << i;
      if (expected[i].envelope_date != 0) {
        EXPECT_EQ(m.internal_date, expected[i].envelope_date) << path << " " << i;
      }
    }
    total += expected.size();
  }
  EXPECT_GT(total, 6000u) << "the Enron mboxes alone hold more";
  EXPECT_LT(not_mbox, 6u);
}

TEST_F(Corpus, GeneratedStoreUsesCorpusBytes) {
  std::set<std::string> known;
  for (const CorpusEntry& e : entries_) known.insert(e.sha256);
  GenerateOptions options;
  options.users = 20;
  options.messages_per_user = 20;
  options.dup_rate = 0.15;
  options.single_instance = true;
  options.corpus_dir = kCorpus;
  const GenerateReport report = Generate(*store_, options);
  EXPECT_EQ(report.messages, 400u);
  EXPECT_GT(report.links, 0u);
  size_t checked = 0;
  store_->ForEachFolder([&](const FolderInfo& info) {
    auto folder = store_->OpenFolder(info.user, info.folder);
    for (const MessageMeta& m : folder->Snapshot().messages) {
      const std::string bytes = ReadMessage(*folder, m.uid);
      ASSERT_TRUE(bytes.starts_with("Received: ")) << info.Mailbox() << " " << m.uid;
      size_t end = bytes.find('\n');
      while (end != std::string::npos && end + 1 < bytes.size() && bytes[end + 1] == '\t') {
        end = bytes.find('\n', end + 1);
      }
      ASSERT_NE(end, std::string::npos);
      EXPECT_EQ(known.count(Sha256Hex(std::string_view(bytes).substr(end + 1))), 1u) << info.Mailbox() << " " << m.uid;
      ++checked;
    }
  });
  EXPECT_EQ(checked, 400u);
}

}  // namespace
}  // namespace storemove::store
