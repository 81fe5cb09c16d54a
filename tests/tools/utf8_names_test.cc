// UTF-8 user ids (RFC 6531 addresses) and folder names through the real binary: deliver, import
// (mbox and Maildir), backup | restore, verify, restore -t, export, list, users and groups; and
// hostile names refused with one line, the store untouched. Migrate is in
// tests/stream/migrate_test.cc (Migrate.Utf8UserAndFoldersMoveAndSwitch).
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "format/format.h"
#include "interop/modified_utf7.h"
#include "store/store.h"
#include "tests/support/temp_dir.h"
#include "tests/tools/cli_runner.h"

namespace storemove::tools {
namespace {

using storemove::testing::CliResult;
using storemove::testing::IsOneErrorLine;
using storemove::testing::RunCli;
using storemove::testing::TempDir;
namespace fs = std::filesystem;

const std::string kJorg = "j\xc3\xb6rg@ex\xc3\xa4mple.org";                        // jörg@exämple.org
const std::string kTaro = "\xe5\xa4\xaa\xe9\x83\x8e@\xe4\xbe\x8b\xe3\x81\x88.jp";  // 太郎@例え.jp
const std::string kDrafts = "Entw\xc3\xbcrfe";                                      // Entwürfe
const std::string kTaipei = "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/\xe5\x8f\xb0\xe5\x8c\x97";  // 日本語/台北
const std::string kSmile = "\xf0\x9f\x98\x80 smile";                                // 😀 smile

std::string Message(const std::string& subject, int n) {
  return "From: " + kJorg + "\r\nTo: " + kTaro + "\r\nSubject: " + subject + " " + std::to_string(n) +
         "\r\nDate: Tue, 1 Jul 2024 10:00:00 +0000\r\n\r\nGr\xc3\xbc\xc3\x9f" "e " + std::to_string(n) + "\r\n";
}

std::string Mbox(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += "From a@b Tue Jul  1 10:00:00 2024\n" + Message("mbox", i) + "\n";
  return out;
}

// A Maildir++ tree with INBOX and one folder whose name is UTF-8 (stored in modified UTF-7).
void WriteMaildir(const std::string& dir, const std::string& folder) {
  for (const std::string& d : {dir, dir + "/." + interop::EncodeModifiedUtf7(folder)}) {
    for (const char* sub : {"cur", "new", "tmp"}) fs::create_directories(d + "/" + sub);
  }
  std::ofstream(dir + "/cur/1719828000.1.host:2,Sa") << Message("maildir inbox", 1);  // Seen and keyword 0
  std::ofstream(dir + "/dovecot-keywords") << "0 $Work\n";
  std::ofstream(dir + "/." + interop::EncodeModifiedUtf7(folder) + "/cur/1719828000.2.host:2,F") << Message("maildir", 2);
}

std::set<std::string> Mailboxes(const std::string& root) {
  CliResult r = RunCli({"list", "--store", root, "--json"});
  EXPECT_EQ(r.status, 0) << r.Describe();
  std::set<std::string> out;
  for (const auto& m : nlohmann::json::parse(r.out)) out.insert(m.at("mailbox").get<std::string>());
  return out;
}

TEST(Utf8Names, UserAndFoldersThroughDeliverImportBackupRestoreVerifyExport) {
  TempDir tmp;
  const std::string src = tmp / "src", dst = tmp / "dst";
  ASSERT_EQ(RunCli({"init", "--store", src}).status, 0);
  for (int i = 0; i < 3; ++i) {
    CliResult r = RunCli({"deliver", "--store", src, "--user", kJorg, "--create"}, Message("inbox", i));
    ASSERT_EQ(r.status, 0) << r.Describe();
    r = RunCli({"deliver", "--store", src, "--user", kJorg, "--folder", kDrafts, "--create"}, Message("drafts", i));
    ASSERT_EQ(r.status, 0) << r.Describe();
  }
  std::ofstream(tmp / "in.mbox") << Mbox(4);
  CliResult r = RunCli({"import", "--store", src, "-u", kJorg, "-s", tmp / "in.mbox", "-d", kTaipei});
  ASSERT_EQ(r.status, 0) << r.Describe();
  WriteMaildir(tmp / "maildir", kSmile);
  r = RunCli({"deliver", "--store", src, "--user", kTaro, "--create"}, Message("taro", 0));
  ASSERT_EQ(r.status, 0) << r.Describe();
  r = RunCli({"import", "--store", src, "-u", kTaro, "--maildir", tmp / "maildir"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  const std::set<std::string> expected = {"user/" + kJorg + "/INBOX", "user/" + kJorg + "/" + kDrafts,
                                          "user/" + kJorg + "/" + kTaipei, "user/" + kTaro + "/INBOX",
                                          "user/" + kTaro + "/" + kSmile};
  EXPECT_EQ(Mailboxes(src), expected);

  // backup | restore into a fresh store, then verify proves it equal.
  r = RunCli({"backup", "--store", src, "-f", tmp / "s.zst"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  ASSERT_EQ(RunCli({"init", "--store", dst}).status, 0);
  r = RunCli({"restore", "--store", dst, "-f", tmp / "s.zst"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(Mailboxes(dst), expected);
  r = RunCli({"verify", "--store", dst, "--source", src});
  EXPECT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.err.find("equal"), std::string::npos) << r.Describe();

  // The table of contents names them as they are, with ISO 8601 dates; --json is JSON Lines.
  r = RunCli({"restore", "-f", tmp / "s.zst", "-t"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("mailbox user/" + kJorg + "/" + kDrafts + " "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" 2024-07-01T10:00:00Z\n"), std::string::npos) << r.out;  // an mbox message's internal date
  // Flags by name, keywords after them, "-" for none.
  EXPECT_NE(r.out.find(" Seen,$Work "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" Flagged "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" - "), std::string::npos) << r.out;
  r = RunCli({"restore", "-f", tmp / "s.zst", "-t", "--json"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  std::istringstream lines(r.out);
  std::set<std::string> toc_mailboxes;
  size_t messages = 0, seen_work = 0;
  for (std::string line; std::getline(lines, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j["type"] == "mailbox") toc_mailboxes.insert(j["mailbox"].get<std::string>());
    if (j["type"] == "message" || j["type"] == "link") {
      ++messages;
      if (j["flags"] == nlohmann::json::array({"Seen", "$Work"})) ++seen_work;
      EXPECT_EQ(j["sent_date"], "2024-07-01T10:00:00Z") << line;  // the Date: header
      EXPECT_TRUE(std::regex_match(j["internal_date"].get<std::string>(),
                                   std::regex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")))
          << line;
    }
    if (j["type"] == "stream") {
      EXPECT_TRUE(j["created"].get<std::string>().ends_with("Z")) << line;
    }
  }
  EXPECT_EQ(toc_mailboxes, expected);
  EXPECT_EQ(messages, 3u + 3u + 4u + 1u + 2u);
  EXPECT_EQ(seen_work, 1u);

  // export writes the UTF-8 names as they are (mbox) and in modified UTF-7 (maildir).
  r = RunCli({"export", "--store", dst, "-u", kJorg, "-d", tmp / "out"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_TRUE(fs::is_regular_file(fs::path(tmp / "out") / kDrafts)) << r.Describe();
  EXPECT_TRUE(fs::is_regular_file(fs::path(tmp / "out") / kTaipei)) << r.Describe();
  r = RunCli({"export", "--store", dst, "-u", kTaro, "-d", tmp / "md", "--format", "maildir"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_TRUE(fs::is_directory(fs::path(tmp / "md") / ("." + interop::EncodeModifiedUtf7(kSmile)) / "cur"))
      << r.Describe();

  // users and groups show them; a group pattern can name non-ASCII bytes.
  std::ofstream(src + "/config/backup-groups.conf") << "umlaut=.*\xc3\xb6.*\nrest=.*\n";
  r = RunCli({"groups", "--store", src, "--json"});
  ASSERT_EQ(r.status, 0) << r.Describe();
  nlohmann::json g = nlohmann::json::parse(r.out);
  EXPECT_EQ(g["groups"][0]["members"], nlohmann::json::array({kJorg}));
  EXPECT_EQ(g["groups"][1]["members"], nlohmann::json::array({kTaro}));
  r = RunCli({"users", "--store", dst});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find(kJorg + " "), std::string::npos) << r.out;
}

TEST(Utf8Names, HostileNamesAreRefusedWithOneLineAndNothingWritten) {
  TempDir tmp;
  const std::string root = tmp / "store";
  ASSERT_EQ(RunCli({"init", "--store", root}).status, 0);
  ASSERT_EQ(RunCli({"deliver", "--store", root, "--user", kJorg, "--create"}, Message("x", 0)).status, 0);
  const std::set<std::string> before = Mailboxes(root);
  const std::vector<std::string> bad_users = {"j\xf6rg", "a\xc0\xaf" "b", "a\xed\xa0\x80", "a\xf4\x90\x80\x80",
                                              "a\xc2\x85", "a/b", "..", "a\x7f", ""};
  for (const std::string& user : bad_users) {
    CliResult r = RunCli({"deliver", "--store", root, "--user", user, "--create"}, Message("x", 1));
    EXPECT_EQ(r.status, 64) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    EXPECT_NE(r.err.find("invalid user id"), std::string::npos) << r.Describe();
  }
  const std::vector<std::string> bad_folders = {"caf\xe9", "a/../b", "x\xc2\x9f", "\xc0\xae\xc0\xae", "a//b",
                                                "x\x01", "/x"};
  std::ofstream(tmp / "in.mbox") << Mbox(1);
  for (const std::string& folder : bad_folders) {
    CliResult r = RunCli({"deliver", "--store", root, "--user", kJorg, "--folder", folder, "--create"}, Message("x", 1));
    EXPECT_EQ(r.status, 64) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
    r = RunCli({"import", "--store", root, "-u", kJorg, "-s", tmp / "in.mbox", "-d", folder});
    EXPECT_EQ(r.status, 64) << r.Describe();
    EXPECT_TRUE(IsOneErrorLine(r)) << r.Describe();
  }
  // The shown name never carries the raw control or malformed bytes.
  CliResult r = RunCli({"deliver", "--store", root, "--user", kJorg, "--folder", "x\xc2\x85y", "--create"}, Message("x", 1));
  EXPECT_NE(r.err.find("x\\xc2\\x85y"), std::string::npos) << r.Describe();
  EXPECT_EQ(Mailboxes(root), before);

  // A stream is only structure-checked (docs/stream-format.md §13): restore refuses a name that
  // is not UTF-8 before it writes anything of that user.
  for (const auto& [user, folder] : std::vector<std::pair<std::string, std::string>>{
           {kJorg, "caf\xe9"}, {"j\xf6rg", "INBOX"}, {kJorg, "a\xc2\x85"}, {kJorg, "x/\xed\xa0\x80"}}) {
    format::StringSink sink;
    format::Encoder enc(sink);
    enc.WriteHeader({});
    format::UserRecord u;
    u.user = user;
    u.partition = "primary";
    u.status = "active";
    enc.WriteUser(u);
    format::FolderRecord f;
    f.user = user;
    f.folder = folder;
    f.partition = "primary";
    f.uidvalidity = 1;
    f.uidnext = 1;
    enc.WriteFolder(f);
    enc.EndFolder();
    enc.Finish();
    std::ofstream(tmp / "bad.stream", std::ios::binary | std::ios::trunc) << sink.data();
    r = RunCli({"restore", "--store", root, "-f", tmp / "bad.stream"});
    EXPECT_NE(r.status, 0) << r.Describe();
    EXPECT_LT(r.status, 128) << r.Describe();
    EXPECT_NE(r.err.find("invalid"), std::string::npos) << r.Describe();
    EXPECT_EQ(Mailboxes(root), before) << r.Describe();
  }
}

}  // namespace
}  // namespace storemove::tools
