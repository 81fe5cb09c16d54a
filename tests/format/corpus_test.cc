// Every file of the shared corpus through encoder, zstd and decoder, byte for byte.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "format/format.h"
#include "format/zstd_codec.h"
#include "util/digest.h"
#include "util/fs.h"

namespace storemove::format {
namespace {

namespace fs = std::filesystem;

struct Expected {
  std::string path;
  uint32_t uid;
  bool link;
  uint64_t content_id;
};

uint32_t HeaderSize(std::string_view m) {
  size_t lf = m.find("\n\n"), crlf = m.find("\r\n\r\n");
  size_t end = std::min(lf == m.npos ? m.size() : lf + 2, crlf == m.npos ? m.size() : crlf + 4);
  return static_cast<uint32_t>(end);
}

TEST(FormatCorpus, EveryCorpusFileRoundTrips) {
  const fs::path root = STOREMOVE_CORPUS;
  if (!fs::is_directory(root)) GTEST_SKIP() << "corpus absent: " << root.string();

  // One folder per corpus source directory, files in path order.
  std::map<std::string, std::vector<std::string>> folders;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.symlink_status().type() != fs::file_type::regular) continue;
    fs::path relative = entry.path().lexically_relative(root);
    std::string folder = std::distance(relative.begin(), relative.end()) > 1 ? relative.begin()->string() : "INBOX";
    folders[folder].push_back(entry.path().string());
  }
  size_t total_files = 0;
  for (auto& [folder, files] : folders) {
    std::sort(files.begin(), files.end());
    total_files += files.size();
  }
  ASSERT_GT(total_files, 1000u);

  // Identical content goes once; later copies are links, as `storemove backup` writes them.
  StringSink compressed;
  ZstdCompressSink zstd(compressed, 1, 0);
  Encoder encoder(zstd);
  StreamHeader header;
  header.source_host = "corpus";
  encoder.WriteHeader(header);
  std::vector<Expected> expected;
  std::map<std::pair<Digest, uint64_t>, std::pair<uint64_t, std::string>> by_content;
  std::vector<std::string> content_path = {""};  // by content_id
  uint64_t body_bytes = 0, links = 0;
  for (const auto& [name, files] : folders) {
    FolderRecord folder;
    folder.user = "corpus";
    folder.folder = name;
    folder.count = static_cast<uint32_t>(files.size());
    encoder.WriteFolder(folder);
    uint32_t uid = 0;
    for (const std::string& path : files) {
      std::string bytes = ReadFile(path);
      MessageRecord m;
      m.uid = ++uid;
      m.size = bytes.size();
      m.header_size = HeaderSize(bytes);
      m.digest = DigestOf(bytes);
      m.internal_date = 1700000000 + uid;
      auto same = by_content.find({m.digest, m.size});
      if (same != by_content.end() && ReadFile(same->second.second) == bytes) {
        m.content_id = same->second.first;
        encoder.WriteLink(m);
        expected.push_back({path, m.uid, true, m.content_id});
        ++links;
        continue;
      }
      uint64_t id = encoder.BeginMessage(m);
      encoder.BodyChunk(bytes);
      encoder.EndMessage();
      by_content.emplace(std::pair{m.digest, m.size}, std::pair{id, path});
      content_path.push_back(path);
      expected.push_back({path, m.uid, false, id});
      body_bytes += bytes.size();
    }
    encoder.EndFolder();
  }
  encoder.Finish();
  zstd.Finish();

  StringSource in(compressed.data());
  DecompressingSource source(in);
  Decoder decoder(source);
  size_t next = 0;
  std::string file;
  uint64_t offset = 0;
  Hasher hasher;
  size_t failures = 0;
  for (Decoder::Event event; (event = decoder.Next()) != Decoder::Event::kEnd && failures < 5;) {
    switch (event) {
      case Decoder::Event::kMessage: {
        ASSERT_LT(next, expected.size());
        const Expected& want = expected[next++];
        EXPECT_FALSE(want.link) << want.path;
        EXPECT_EQ(decoder.message().uid, want.uid) << want.path;
        EXPECT_EQ(decoder.message().content_id, want.content_id) << want.path;
        file = ReadFile(want.path);
        offset = 0;
        hasher.Reset();
        break;
      }
      case Decoder::Event::kBody:
        hasher.Update(decoder.body().data(), decoder.body().size());
        if (decoder.body() != std::string_view(file).substr(offset, decoder.body().size())) {
          ADD_FAILURE() << "bytes differ in " << expected[next - 1].path << " at " << offset;
          ++failures;
        }
        offset += decoder.body().size();
        break;
      case Decoder::Event::kMessageEnd:
        EXPECT_EQ(offset, file.size()) << expected[next - 1].path;
        EXPECT_EQ(hasher.Final(), DigestOf(file)) << expected[next - 1].path;
        EXPECT_EQ(decoder.message().digest, DigestOf(file)) << expected[next - 1].path;
        break;
      case Decoder::Event::kLink: {
        ASSERT_LT(next, expected.size());
        const Expected& want = expected[next++];
        EXPECT_TRUE(want.link) << want.path;
        EXPECT_EQ(decoder.link().uid, want.uid) << want.path;
        ASSERT_LT(decoder.link().content_id, content_path.size());
        EXPECT_EQ(ReadFile(content_path[decoder.link().content_id]), ReadFile(want.path)) << want.path;
        break;
      }
      default: break;
    }
  }
  EXPECT_EQ(failures, 0u);
  EXPECT_EQ(next, total_files);
  EXPECT_EQ(decoder.trailer().messages + decoder.trailer().links, total_files);
  EXPECT_GT(links, 0u) << "the corpus holds duplicate files, which must travel as links";
  EXPECT_EQ(decoder.trailer().links, links);
  EXPECT_EQ(decoder.trailer().body_bytes, body_bytes);
  EXPECT_EQ(decoder.trailer().folders, folders.size());
}

}  // namespace
}  // namespace storemove::format
