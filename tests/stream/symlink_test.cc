// Planted directory symlinks inside a store (issue 10 item 3): a bucket, hash, user, folder or
// =digest directory replaced by a symlink to a directory outside the store must never redirect a
// write (or a read) out of the store. Every store path is resolved beneath the store root without
// following symlinks; meeting one fails with one line naming it.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "format/format.h"
#include "relinker/relink.h"
#include "store/store.h"
#include "stream/stream.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/fs_testing.h"

namespace storemove {
namespace {

using testing::CliResult;
using testing::TempDir;
namespace fs = std::filesystem;

constexpr const char* kRefused = "is a symbolic link; refusing to follow it";

std::string Msg(const std::string& tag) {
  return "From: a@example.com\r\nTo: b@example.com\r\nSubject: " + tag + "\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n" +
         "body of " + tag + "\r\n" + std::string(2000, 'x') + "\r\n";
}

void Deliver(store::Store& s, const std::string& user, const std::string& folder, const std::string& bytes) {
  auto f = s.CreateFolder(user, folder);
  auto w = f->NewMessage();
  w->Write(bytes);
  std::vector<store::StagedMessage> batch{w->Finish({})};
  f->Commit(batch);
}

// Everything below `dir` (a planted symlink's target): must stay empty.
std::vector<std::string> Contents(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out.push_back(e.path().string());
  return out;
}

std::string Shared() { return Msg("shared by joe and ann"); }

// joe: INBOX (3, one shared with ann), Sent (1); ann: INBOX (1, the shared one).
std::string BackupOfSource(const std::string& dir) {
  auto src = store::Store::Init(dir, {});
  Deliver(*src, "joe", "INBOX", Msg("one"));
  Deliver(*src, "joe", "INBOX", Shared());
  Deliver(*src, "joe", "INBOX", Msg("three"));
  Deliver(*src, "joe", "Sent", Msg("sent"));
  Deliver(*src, "ann", "INBOX", Shared());
  format::StringSink sink;
  format::Encoder enc(sink);
  stream::Backup(*src, {}, enc);
  return sink.Take();
}

struct Plant {
  std::string name;
  std::string rel;  // below partition/primary
};

std::vector<Plant> Plants() {
  const std::string hash = store::HashDir("joe");
  const std::string h1 = hash.substr(0, 2);
  const std::string user = "=user/" + hash + "/=joe";
  const std::string digest = DigestOf(Shared()).Hex();
  return {
      {"HashDirFirstLevel", "=user/" + h1},
      {"HashDir", "=user/" + hash},
      {"UserDir", user},
      {"FolderDir", user + "/+Sent"},
      {"BucketDir", user + "/00"},
      {"DigestRepository", "=digest"},
      {"DigestHashDir", "=digest/" + digest.substr(0, 2)},
  };
}

// Makes `rel` below the destination's partition a symlink to `outside`.
std::string PlantAt(const std::string& store_dir, const std::string& rel, const std::string& outside) {
  std::string path = store_dir + "/partition/primary/" + rel;
  fs::remove_all(path);  // init made =digest (with its marker): the plant replaces it
  fs::create_directories(fs::path(path).parent_path());
  fs::create_directory_symlink(outside, path);
  return path;
}

class PlantedSymlink : public ::testing::TestWithParam<Plant> {};

// Restores a source into a store with `plant` planted: the restore must refuse the symlink by
// name, in one line, and write nothing outside the store.
void ExpectRestoreRefuses(const Plant& plant) {
  TempDir tmp, outside;
  const std::string stream = BackupOfSource(tmp / "src");
  auto dst = store::Store::Init(tmp / "dst", {});
  const std::string planted = PlantAt(tmp / "dst", plant.rel, outside.path());
  std::string error;
  try {
    format::StringSource in(stream);
    format::Decoder dec(in);
    stream::SessionReport r = stream::Restore(dst.get(), dec, {}, nullptr);
    for (const std::string& line : r.error_lines) error += line;
  } catch (const Error& e) {
    error = e.what();
    EXPECT_EQ(e.code(), Errc::kCorrupt) << error;
  }
  EXPECT_TRUE(Contents(outside.path()).empty()) << "restore wrote through " << planted << ": "
                                                << Contents(outside.path()).front();
  EXPECT_NE(error.find(planted + " " + kRefused), std::string::npos) << "error: " << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
}

TEST_P(PlantedSymlink, RestoreRefusesAndWritesNothingOutside) { ExpectRestoreRefuses(GetParam()); }

TEST_P(PlantedSymlink, CliRestoreExitsNonZeroWithOneLine) {
  TempDir tmp, outside;
  {
    std::ofstream(tmp / "stream.sm", std::ios::binary) << BackupOfSource(tmp / "src");
  }
  store::Store::Init(tmp / "dst", {});
  const std::string planted = PlantAt(tmp / "dst", GetParam().rel, outside.path());
  CliResult r = testing::RunCli({"restore", "--store", tmp / "dst", "--file", tmp / "stream.sm"}, "");
  EXPECT_NE(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find(planted + " " + kRefused), std::string::npos) << r.Describe();
  EXPECT_TRUE(Contents(outside.path()).empty()) << r.Describe();
}

// Kernels before 5.6 have no openat2: the O_NOFOLLOW walk must refuse the same symlinks.
TEST_P(PlantedSymlink, RestoreRefusesWithoutOpenat2) {
  struct Restore {
    ~Restore() { UseOpenat2ForTesting(true); }
  } restore;
  UseOpenat2ForTesting(false);
  ExpectRestoreRefuses(GetParam());
}

// Without a planted symlink, the walk restores everything (the fallback is not a refusal of all).
TEST(PlantedSymlinkFallback, CleanRestoreWithoutOpenat2) {
  struct Restore {
    ~Restore() { UseOpenat2ForTesting(true); }
  } restore;
  UseOpenat2ForTesting(false);
  TempDir tmp;
  const std::string stream = BackupOfSource(tmp / "src");
  auto dst = store::Store::Init(tmp / "dst", {});
  format::StringSource in(stream);
  format::Decoder dec(in);
  stream::SessionReport r = stream::Restore(dst.get(), dec, {}, nullptr);
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(dst->OpenFolder("joe", "INBOX")->Snapshot().messages.size(), 3u);
  EXPECT_EQ(dst->OpenFolder("ann", "INBOX")->Snapshot().messages.size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Store, PlantedSymlink, ::testing::ValuesIn(Plants()),
                         [](const ::testing::TestParamInfo<Plant>& p) { return p.param.name; });

// deliver --create into a user whose hash or user directory was replaced by a symlink.
TEST(PlantedSymlinkDeliver, RefusedWithOneLine) {
  const std::string hash = store::HashDir("joe");
  for (const std::string& rel : {"=user/" + hash, "=user/" + hash + "/=joe", "=user/" + hash + "/=joe/+Lists"}) {
    TempDir tmp, outside;
    store::Store::Init(tmp.path(), {});
    const std::string planted = PlantAt(tmp.path(), rel, outside.path());
    CliResult r = testing::RunCli({"deliver", "--store", tmp.path(), "--user", "joe", "--folder", "Lists", "--create"},
                                  Msg("delivered"));
    EXPECT_NE(r.status, 0) << rel << "\n" << r.Describe();
    EXPECT_NE(r.err.find(planted + " " + kRefused), std::string::npos) << r.Describe();
    EXPECT_TRUE(Contents(outside.path()).empty()) << rel << "\n" << r.Describe();
  }
}

// relink adds repository entries: a planted =digest directory must not receive them.
// Both layouts: the flat one init makes, and a format 1.0 partition's nested one.
TEST(PlantedSymlinkRelink, RepositoryEntriesStayInside) {
  const std::string digest = DigestOf(Msg("dup")).Hex();
  const std::string h1 = "=digest/" + digest.substr(0, 2);
  for (const std::string& rel : {std::string("=digest"), h1, h1 + "/" + digest.substr(2, 2)}) {
    TempDir tmp, outside;
    auto s = store::Store::Init(tmp.path(), {});
    const bool nested = std::count(rel.begin(), rel.end(), '/') == 2;
    if (nested) fs::remove_all(tmp / "partition/primary/=digest");
    Deliver(*s, "joe", "INBOX", Msg("dup"));
    Deliver(*s, "ann", "INBOX", Msg("dup"));
    const std::string planted = PlantAt(tmp.path(), rel, outside.path());
    std::string error;
    try {
      relinker::Relink(*s, {});
    } catch (const Error& e) {
      error = e.what();
    }
    EXPECT_TRUE(Contents(outside.path()).empty()) << rel;
    EXPECT_NE(error.find(planted + " " + kRefused), std::string::npos) << rel << ": " << error;
  }
}

// Reading goes through the same resolution: a folder whose bucket is a symlink to another
// user's bucket is not read through it.
TEST(PlantedSymlinkRead, OpenMessageRefuses) {
  TempDir tmp, outside;
  auto s = store::Store::Init(tmp.path(), {});
  Deliver(*s, "joe", "INBOX", Msg("one"));
  auto f = s->OpenFolder("joe", "INBOX");
  const std::string bucket = f->path() + "/00";
  fs::rename(bucket, outside / "00");
  fs::create_directory_symlink(outside / "00", bucket);
  try {
    f->OpenMessage(1);
    ADD_FAILURE() << "opened a message through " << bucket;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), bucket + " " + kRefused);
  }
}

}  // namespace
}  // namespace storemove
