// Passes that read message files many at once (store/read_ahead.h) on a real disk, with the
// files' pages evicted so the reads go through the reader threads: backup, verify and relink
// give exactly what one read at a time gives, and damaged or missing files are still reported
// as such. (On tmpfs the files are read on the pass's own thread; every other test covers that.)
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "format/zstd_codec.h"
#include "relinker/relink.h"
#include "store/generate.h"
#include "stream/stream.h"
#include "tests/support/store_checks.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"
#include "util/fs.h"

namespace storemove::stream {
namespace {

using storemove::testing::ExpectEqualStores;
namespace fs = std::filesystem;

using storemove::testing::DiskDir;

// Writes back and drops every message file's pages (every file's, with every_file), so the next
// read must go to the disk.
void Evict(const std::string& root, bool every_file = false) {
  UniqueFd dir = OpenDirectory(root);
  ASSERT_EQ(::syncfs(dir.get()), 0);
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file() || (!every_file && e.path().extension() != ".msg")) continue;
    UniqueFd fd = OpenFile(e.path().string(), O_RDONLY);
    ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  }
}

std::unique_ptr<store::Store> MakeSource(const std::string& dir) {
  auto s = store::Store::Init(dir, {"primary"});
  store::GenerateOptions g;
  g.users = 8;
  g.messages_per_user = 60;
  g.dup_rate = 0.2;
  g.single_instance = true;
  g.corpus_dir = fs::exists(STOREMOVE_CORPUS) ? STOREMOVE_CORPUS : "";
  g.seed = 11;
  store::Generate(*s, g);
  // A message over the whole-read limit (1 MiB): opened and hinted by the threads, streamed by the pass.
  std::string user;
  s->ForEachUser([&](const store::UserInfo& u) { user = u.user; });
  auto inbox = s->OpenFolder(user, "INBOX");
  std::string big = "From: a@example.com\r\nSubject: big\r\n\r\n";
  while (big.size() < (3u << 20)) big += "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
  auto writer = inbox->NewMessage();
  writer->Write(big);
  std::vector<store::StagedMessage> batch{writer->Finish({})};
  inbox->Commit(batch);
  return s;
}

std::string BackupToString(store::Store& s, size_t reads, SessionReport* report = nullptr, bool background = false) {
  format::StringSink sink;
  format::ZstdCompressSink z(sink, 1, 0, background);
  format::Encoder enc(z);
  BackupOptions options;
  options.reads = reads;
  SessionReport r = Backup(s, options, enc);
  z.Finish();
  if (report) *report = r;
  return sink.Take();
}

void RestoreFromString(store::Store& s, const std::string& bytes) {
  format::StringSource src(bytes);
  format::DecompressingSource in(src);
  format::Decoder dec(in);
  Restore(&s, dec, {});
}

TEST(DiskReads, BackupWithColdFilesRestoresExactlyWhatOneReadAtATimeDoes) {
  DiskDir dir;
  auto source = MakeSource(dir / "src");
  // Last: compression on its own thread (what `backup -f` does for a store on a disk).
  for (auto [reads, background] : {std::pair{size_t{1}, false}, std::pair{size_t{16}, false},
                                   std::pair{size_t{64}, false}, std::pair{size_t{16}, true}}) {
    Evict(dir / "src");
    SessionReport report;
    const std::string stream = BackupToString(*source, reads, &report, background);
    EXPECT_EQ(report.errors, 0u);
    auto restored =
        store::Store::Init(dir / ("dst" + std::to_string(reads) + (background ? "bg" : "")), {"primary"});
    RestoreFromString(*restored, stream);
    ExpectEqualStores(*restored, *source);
  }
}

TEST(DiskReads, DamagedAndMissingColdFilesAreReportedAndLeftOut) {
  DiskDir dir;
  auto source = MakeSource(dir / "src");
  std::string user;
  source->ForEachUser([&](const store::UserInfo& u) { user = u.user; });
  auto inbox = source->OpenFolder(user, "INBOX");
  const auto messages = inbox->Snapshot().messages;
  ASSERT_GE(messages.size(), 3u);
  // A file cut short, and one gone (a damaged store); the rest must still be sent.
  ASSERT_EQ(::truncate(inbox->MessagePath(messages[0].uid).c_str(), off_t(messages[0].size / 2)), 0);
  ASSERT_EQ(::unlink(inbox->MessagePath(messages[1].uid).c_str()), 0);
  Evict(dir / "src");
  SessionReport report;
  const std::string stream = BackupToString(*source, 16, &report);
  ASSERT_EQ(report.errors, 2u);
  std::string lines;
  for (const std::string& l : report.error_lines) lines += l + "\n";
  EXPECT_NE(lines.find("UID " + std::to_string(messages[0].uid) + ": message file"), std::string::npos) << lines;
  EXPECT_NE(lines.find("UID " + std::to_string(messages[1].uid) + ": message file"), std::string::npos) << lines;
  EXPECT_NE(lines.find("is missing though store.idx lists it"), std::string::npos) << lines;
  auto restored = store::Store::Init(dir / "dst", {"primary"});
  RestoreFromString(*restored, stream);
  auto copy = restored->OpenFolder(user, "INBOX")->Snapshot().messages;
  EXPECT_EQ(copy.size(), messages.size() - 2);
}

// Same size, one byte different: only re-reading the bytes finds it. A copy first, so that a
// content shared by hard links elsewhere is not changed with it.
void FlipOneByteOfACopy(const std::string& path) {
  std::string bytes = ReadFile(path);
  bytes[bytes.size() / 2] ^= 1;
  ASSERT_EQ(::unlink(path.c_str()), 0);
  UniqueFd fd = OpenFile(path, O_WRONLY | O_CREAT | O_EXCL);
  WriteAll(fd.get(), bytes.data(), bytes.size(), path);
}

TEST(DiskReads, VerifyWithColdFilesFindsTheOneChangedByte) {
  DiskDir dir;
  auto source = MakeSource(dir / "src");
  auto destination = store::Store::Init(dir / "dst", {"primary"});
  RestoreFromString(*destination, BackupToString(*source, 1));
  std::string user;
  destination->ForEachUser([&](const store::UserInfo& u) { user = u.user; });
  auto folder = destination->OpenFolder(user, "INBOX");
  const store::MessageMeta victim = folder->Snapshot().messages.at(2);
  FlipOneByteOfACopy(folder->MessagePath(victim.uid));
  for (size_t reads : {size_t{1}, size_t{16}}) {
    Evict(dir / "dst");
    VerifyOptions options;
    options.reads = reads;
    VerifyReport report = CompareStores(*destination, *source, options);
    ASSERT_EQ(report.differences.size(), 1u) << reads;
    EXPECT_EQ(report.differences[0],
              "mailbox user/" + user + "/INBOX UID " + std::to_string(victim.uid) + ": message bytes do not match the source");
  }
}

// verify --manifest reads the destination's folder indexes ahead of the checks, from a scan of
// the destination's users; a manifest of some users only must end all the same.
TEST(DiskReads, VerifyManifestWithColdIndexesFindsTheOneChangedByteAndEnds) {
  DiskDir dir;
  auto source = MakeSource(dir / "src");
  auto destination = store::Store::Init(dir / "dst", {"primary"});
  RestoreFromString(*destination, BackupToString(*source, 1));
  std::vector<std::string> users;
  destination->ForEachUser([&](const store::UserInfo& u) { users.push_back(u.user); });
  ASSERT_GE(users.size(), 3u);
  const std::string user = users[users.size() / 2];
  auto folder = destination->OpenFolder(user, "INBOX");
  const store::MessageMeta victim = folder->Snapshot().messages.at(1);
  FlipOneByteOfACopy(folder->MessagePath(victim.uid));
  const std::string difference =
      "mailbox user/" + user + "/INBOX UID " + std::to_string(victim.uid) + ": message bytes do not match the source";
  auto manifest = [&](const std::set<std::string>* only) {
    format::StringSink sink;
    format::Encoder enc(sink);
    BackupOptions o;
    o.manifest = true;
    o.only_users = only;
    Backup(*source, o, enc);
    return sink.Take();
  };
  const std::set<std::string> last_two{users[users.size() / 2], users.back()};
  for (const std::set<std::string>* only : {static_cast<const std::set<std::string>*>(nullptr), &last_two}) {
    const std::string m = manifest(only);
    Evict(dir / "dst", /*every_file=*/true);  // the folder indexes too
    format::StringSource in(m);
    format::Decoder dec(in);
    VerifyReport report = VerifyManifest(*destination, dec, {});
    ASSERT_EQ(report.differences, std::vector<std::string>{difference}) << (only ? "two users" : "all users");
    EXPECT_EQ(report.users, only ? 2u : users.size());
  }
}

// Access times of every file below root (nanoseconds).
std::map<std::string, int64_t> AccessTimes(const std::string& root) {
  std::map<std::string, int64_t> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    struct stat st;
    if (::stat(e.path().c_str(), &st) == 0) out[e.path().string()] = st.st_atim.tv_sec * 1000000000LL + st.st_atim.tv_nsec;
  }
  return out;
}

// Every message and index file's atime set a day before its mtime: with relatime (the usual
// mount option, and tmpfs's) the next ordinary read of each would rewrite its inode.
void AgeAccessTimes(const std::string& root, const std::string& extension) {
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file() || e.path().extension() != extension) continue;
    struct stat st;
    ASSERT_EQ(::stat(e.path().c_str(), &st), 0);
    struct timespec times[2] = {st.st_mtim, {0, UTIME_OMIT}};
    times[0].tv_sec -= 86400;
    ASSERT_EQ(::utimensat(AT_FDCWD, e.path().c_str(), times, 0), 0);
  }
}

TEST(DiskReads, BackupVerifyAndRelinkLeaveTheSourcesAccessTimesAsTheyWere) {
  DiskDir dir;
  auto source = MakeSource(dir / "src");
  auto destination = store::Store::Init(dir / "dst", {"primary"});
  RestoreFromString(*destination, BackupToString(*source, 1));
  for (const std::string& root : {dir / "src", dir / "dst"}) {
    AgeAccessTimes(root, ".msg");
    AgeAccessTimes(root, ".idx");
  }
  const auto before_source = AccessTimes(dir / "src"), before_destination = AccessTimes(dir / "dst");
  size_t aged = 0;
  for (const auto& [path, atime] : before_source) aged += path.ends_with(".msg") || path.ends_with(".idx");
  ASSERT_GT(aged, 8u * 60);
  for (size_t reads : {size_t{1}, size_t{16}}) {
    Evict(dir / "src");
    SessionReport report;
    BackupToString(*source, reads, &report);
    EXPECT_EQ(report.errors, 0u);
    Evict(dir / "dst");
    VerifyOptions options;
    options.reads = reads;
    EXPECT_TRUE(CompareStores(*destination, *source, options).differences.empty());
  }
  relinker::RelinkOptions relink;
  relink.reads = 16;
  relinker::Relink(*source, relink);
  for (const auto& [root, before] : {std::pair{dir / "src", &before_source}, std::pair{dir / "dst", &before_destination}}) {
    const auto after = AccessTimes(root);
    for (const auto& [path, atime] : *before) {
      if (!path.ends_with(".msg") && !path.ends_with(".idx")) continue;
      auto it = after.find(path);
      if (it == after.end()) continue;  // replaced by relink's link: a new name, not a read
      EXPECT_EQ(it->second, atime) << path << " was read with its access time updated";
    }
  }
}

// A file of 20 bytes in a fresh directory that every user may enter, `mode`, as a message.
std::string WriteSmallMessage(const DiskDir& dir, mode_t mode) {
  EXPECT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  const std::string path = dir / "1.msg";
  UniqueFd fd = OpenFile(path, O_WRONLY | O_CREAT | O_EXCL, mode);
  WriteAll(fd.get(), "Subject: x\r\n\r\nbody\r\n", 20, path);
  return path;
}

// The exit status of `part` run in a child process as the user and group nobody (65534);
// 10 when the child could not become nobody. Needs root.
int AsNobody(const std::function<int()>& part) {
  const pid_t child = ::fork();
  if (child < 0) return -1;
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    ::_exit(part());
  }
  int status = 0;
  if (::waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// A reader that neither owns the files nor has CAP_FOWNER may not ask for O_NOATIME; it reads
// them all the same, as any reader does.
TEST(DiskReads, AReaderThatDoesNotOwnTheFilesStillReadsThem) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  DiskDir dir;
  WriteSmallMessage(dir, 0644);
  UniqueFd root = OpenDirectory(dir.path());
  const int status = AsNobody([&] {
    int failed = 0;
    for (int round = 0; round < 2; ++round) {  // the second after the refusal has been remembered
      const int fd = OpenAtOrErrno(root.get(), "1.msg", O_RDONLY);
      char buf[32];
      if (fd < 0 || ::read(fd, buf, sizeof buf) != 20) failed |= 1 << round;
      if (fd >= 0) ::close(fd);
      const int cached = OpenIfCached(root.get(), "1.msg");
      if (cached >= 0) ::close(cached);
      if (cached < 0 && cached != -EAGAIN) failed |= 4 << round;
    }
    return failed;
  });
  EXPECT_EQ(status, 0) << "bit 0/1: open failed, bit 2/3: cached open failed, 10: setuid";
}

// The usual ownership when storemove runs as the mail user: directories above the store owned
// by root, the message files by the mail user. Opening the directories must not cost the files
// their O_NOATIME.
TEST(DiskReads, ADirectoryOwnedByRootLeavesTheMailUsersFilesAccessTimesAlone) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  DiskDir dir;
  const std::string path = WriteSmallMessage(dir, 0600);
  ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
  AgeAccessTimes(dir.path(), ".msg");
  const int64_t before = AccessTimes(dir.path()).at(path);
  UniqueFd root = OpenDirectory("/");
  const int status = AsNobody([&] {
    const int d = OpenAtOrErrno(root.get(), dir.path().substr(1), O_RDONLY | O_DIRECTORY);
    if (d < 0) return 11;
    const int fd = OpenAtOrErrno(d, "1.msg", O_RDONLY);
    char buf[32];
    return fd >= 0 && ::read(fd, buf, sizeof buf) == 20 ? 0 : 12;
  });
  ASSERT_EQ(status, 0) << "10: setuid, 11: directory, 12: file";
  EXPECT_EQ(AccessTimes(dir.path()).at(path), before) << "the file was read with its access time updated";
}

// Files of another owner among the mail user's (restored by root, say): each is read without
// O_NOATIME, and the mail user's files after it still with it.
TEST(DiskReads, AFileOfAnotherOwnerLeavesTheOthersAccessTimesAlone) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  DiskDir dir;
  WriteSmallMessage(dir, 0644);  // root's, readable by all
  const std::string path = dir / "2.msg";
  {
    UniqueFd fd = OpenFile(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    WriteAll(fd.get(), "Subject: y\r\n\r\nbody\r\n", 20, path);
  }
  ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
  AgeAccessTimes(dir.path(), ".msg");
  const int64_t before = AccessTimes(dir.path()).at(path);
  UniqueFd root = OpenDirectory(dir.path());
  const int status = AsNobody([&] {
    char buf[32];
    for (int i = 0; i < 3; ++i) {  // root's file more than once: refused each time
      const int fd = OpenAtOrErrno(root.get(), "1.msg", O_RDONLY);
      if (fd < 0 || ::read(fd, buf, sizeof buf) != 20) return 11;
      ::close(fd);
    }
    const int fd = OpenAtOrErrno(root.get(), "2.msg", O_RDONLY);
    return fd >= 0 && ::read(fd, buf, sizeof buf) == 20 ? 0 : 12;
  });
  ASSERT_EQ(status, 0) << "10: setuid, 11: root's file, 12: nobody's file";
  EXPECT_EQ(AccessTimes(dir.path()).at(path), before) << "the mail user's file was read with its access time updated";
}

TEST(DiskReads, RelinkWithColdFilesLinksWhatOneReadAtATimeLinks) {
  DiskDir dir;
  store::GenerateOptions g;
  g.users = 8;
  g.messages_per_user = 60;
  g.dup_rate = 0.3;
  g.single_instance = false;  // copies as separate files, for relink to link
  g.corpus_dir = fs::exists(STOREMOVE_CORPUS) ? STOREMOVE_CORPUS : "";
  g.seed = 5;
  std::vector<relinker::RelinkStats> stats;
  for (size_t reads : {size_t{1}, size_t{16}}) {
    auto s = store::Store::Init(dir / ("s" + std::to_string(reads)), {"primary"});
    store::Generate(*s, g);
    Evict(s->root());
    relinker::RelinkOptions options;
    options.reads = reads;
    stats.push_back(relinker::Relink(*s, options));
  }
  EXPECT_GT(stats[0].linked, 0u);
  EXPECT_EQ(stats[1].linked, stats[0].linked);
  EXPECT_EQ(stats[1].entries_added, stats[0].entries_added);
  EXPECT_EQ(stats[1].after.space_used, stats[0].after.space_used);
  EXPECT_EQ(stats[1].after.repository, stats[0].after.repository);
}

}  // namespace
}  // namespace storemove::stream
