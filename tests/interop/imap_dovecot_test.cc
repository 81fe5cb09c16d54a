// ImapClient against a real Dovecot on loopback (tests/support/dovecot_server.h), skipped when
// /usr/sbin/dovecot is absent: the Maildir++ tree is written here file by file (UIDs, UIDVALIDITY
// and keywords fixed by dovecot-uidlist and dovecot-keywords, internal dates by mtime), then read
// back over IMAP: login as the user and as a master user for them, LIST/LSUB, EXAMINE, FETCH of
// metadata and of every body byte for byte (after Dovecot's LF -> CRLF, see dovecot_test.py).
#include <fcntl.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "interop/imap_client.h"
#include "tests/support/imap_collector.h"
#include "tests/support/dovecot_server.h"
#include "tests/support/socket_channel.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"

namespace storemove::interop {
namespace {

namespace fs = std::filesystem;
using storemove::testing::DovecotServer;
using storemove::testing::SocketChannel;
using storemove::testing::TempDir;

struct Mail {
  uint32_t uid;
  std::string bytes;         // as in the file
  std::string info;          // after ":2,"
  int64_t date;              // mtime = INTERNALDATE
  std::vector<std::string> flags;  // as Dovecot sends them, sorted
};

struct Folder {
  std::string path;     // UTF-8, '/'-separated
  std::string dir;      // Maildir++ directory under the user's root ("" for INBOX)
  std::string name;     // as Dovecot lists it
  uint32_t uidvalidity;
  std::vector<Mail> mails;
};

std::string ToCrlf(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) out.push_back('\r');
    out.push_back(s[i]);
  }
  return out;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  out.close();
  ASSERT_TRUE(out) << path;
}

// Writes one folder's Maildir++ directory with a dovecot-uidlist naming each file's UID.
void WriteFolder(const std::string& root, const Folder& f) {
  const std::string dir = f.dir.empty() ? root : root + "/" + f.dir;
  for (const char* sub : {"cur", "new", "tmp"}) fs::create_directories(dir + "/" + sub);
  std::string uidlist = "3 V" + std::to_string(f.uidvalidity) + " N" +
                        std::to_string(f.mails.empty() ? 1 : f.mails.back().uid + 1) + "\n";
  for (const Mail& m : f.mails) {
    const std::string base = std::to_string(m.date) + ".M" + std::to_string(m.uid) + "P1.test";
    const std::string file = dir + "/cur/" + base + ":2," + m.info;
    WriteFile(file, m.bytes);
    timespec times[2] = {{m.date, 0}, {m.date, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, file.c_str(), times, 0), 0);
    uidlist += std::to_string(m.uid) + " :" + base + "\n";
  }
  WriteFile(dir + "/dovecot-uidlist", uidlist);
  WriteFile(dir + "/dovecot-keywords", "0 $Forwarded\n1 custom\n");
}

using storemove::testing::ImapCollector;

class ImapDovecot : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!DovecotServer::Available(&why)) GTEST_SKIP() << why;
    std::string big;
    for (int i = 0; big.size() < (size_t(5) << 20); ++i) big += "line " + std::to_string(i) + " of a large message\n";
    folders_ = {
        {"INBOX", "", "INBOX", 1111, {}},
        {"Sent", ".Sent", "Sent", 2222, {}},
        {"Archive/2023", ".Archive.2023", "Archive/2023", 3333, {}},
        {"Entw\xc3\xbcrfe", ".Entw&APw-rfe", "Entw&APw-rfe", 4444, {}},
        {"a.b", ".a\\2eb", "a.b", 5555, {}},
    };
    folders_[0].mails = {
        {1, "Subject: one\r\n\r\nCRLF body\r\n", "S", 1000000000, {"\\Seen"}},
        {2, "Subject: two\n\nbare LF body\nsecond line\n", "FRab", 1100000000,
         {"$Forwarded", "\\Answered", "\\Flagged", "custom"}},
        {5, "Subject: big\n\n" + big, "", 1200000000, {}},
    };
    folders_[1].mails = {{3, "Subject: sent\r\n\r\n8-bit \xc3\xa4\r\n", "S", 1300000000, {"\\Seen"}}};
    folders_[3].mails = {{1, "Subject: draft\r\n\r\n", "DS", 1400000000, {"\\Draft", "\\Seen"}}};
    for (uint32_t uid = 1; uid <= 2100; ++uid)  // several pipelined commands; odd UIDs only
      if (uid % 2 == 1) folders_[2].mails.push_back({uid, "Subject: m" + std::to_string(uid) + "\r\n\r\nx\r\n", "",
                                                     1500000000 + uid, {}});
    const std::string root = mail_.path() + "/alice";
    for (const Folder& f : folders_) WriteFolder(root, f);
    WriteFile(root + "/subscriptions", "INBOX\nSent\n");
    DovecotServer::Options options;
    options.mail_root = mail_.path();
    options.users = {{"alice", "alice-secret"}, {"bob", "bob \"secret\""}};
    options.master_user = "admin";
    options.master_password = "admin-secret";
    dovecot_.Start(options);
    shown_ = "imap://127.0.0.1:" + std::to_string(dovecot_.port());
  }

  std::unique_ptr<SocketChannel> Connect(const char* source = "127.0.0.1") {
    return std::make_unique<SocketChannel>(SocketChannel::Connect(dovecot_.port(), source));
  }

  void CheckMailbox(ImapClient& client) {
    const std::vector<ImapFolder> listed = client.ListFolders();
    std::map<std::string, ImapFolder> by_path;
    for (const ImapFolder& f : listed) by_path[f.path] = f;
    for (const Folder& f : folders_) {
      SCOPED_TRACE(f.path);
      ASSERT_TRUE(by_path.count(f.path)) << "not listed";
      const ImapFolder& got = by_path[f.path];
      EXPECT_EQ(got.name, f.name);
      EXPECT_EQ(got.delimiter, '/');
      EXPECT_TRUE(got.selectable);
      EXPECT_EQ(got.subscribed, f.path == "INBOX" || f.path == "Sent");
      const ImapMailboxStatus status = client.Examine(got.name);
      EXPECT_EQ(status.uidvalidity, f.uidvalidity);
      EXPECT_EQ(status.exists, f.mails.size());
      EXPECT_EQ(status.uidnext, f.mails.empty() ? 1 : f.mails.back().uid + 1);
      if (f.mails.empty()) continue;

      ImapCollector meta;
      client.FetchMeta(1, meta);
      ImapCollector full;
      std::vector<uint32_t> uids;
      for (const Mail& m : f.mails) uids.push_back(m.uid);
      client.FetchBodies(uids, full);
      ASSERT_EQ(meta.messages.size(), f.mails.size());
      ASSERT_EQ(full.bodies.size(), f.mails.size());
      for (const Mail& m : f.mails) {
        SCOPED_TRACE(m.uid);
        for (ImapCollector* c : {&meta, &full}) {
          const ImapMessage& got_m = c->messages[m.uid];
          EXPECT_EQ(got_m.flags, m.flags);
          EXPECT_EQ(got_m.internal_date, m.date);
          EXPECT_EQ(got_m.size, ToCrlf(m.bytes).size());
        }
        EXPECT_TRUE(full.bodies[m.uid] == ToCrlf(m.bytes)) << full.bodies[m.uid].size() << " bytes";
      }
    }
    // Archive, the parent of Archive/2023, is no folder: listed as not selectable.
    ASSERT_TRUE(by_path.count("Archive"));
    EXPECT_FALSE(by_path["Archive"].selectable);
  }

  TempDir mail_;
  DovecotServer dovecot_;
  std::vector<Folder> folders_;
  std::string shown_;
};

TEST_F(ImapDovecot, UserReadsEverythingByteForByte) {
  auto channel = Connect();
  ImapClient client(*channel, shown_);
  client.ReadGreeting();
  EXPECT_TRUE(client.HasCapability("AUTH=PLAIN"));
  client.Login("alice", "alice-secret");
  EXPECT_TRUE(client.HasCapability("IMAP4REV1"));
  CheckMailbox(client);
  EXPECT_GT(client.bytes_in(), uint64_t(5) << 20);
  try {
    client.Examine("no such folder");
    ADD_FAILURE() << "EXAMINE of a missing folder succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kNotFound) << e.what();
  }
  client.Logout();
}

TEST_F(ImapDovecot, MasterUserActsForTheUser) {
  auto channel = Connect();
  ImapClient client(*channel, shown_);
  client.ReadGreeting();
  client.LoginAs("alice", "admin", "admin-secret");
  CheckMailbox(client);
  client.Logout();
}

TEST_F(ImapDovecot, RefusedLogins) {
  struct Try {
    const char* user;
    const char* admin;  // nullptr: Login
    const char* password;
  };
  // Each from an address of its own: Dovecot delays the next login from an address after a
  // failure (anvil's auth penalty, up to 15 s).
  int source = 10;
  for (const Try& t : {Try{"alice", nullptr, "wrong"}, Try{"alice", "admin", "wrong"}, Try{"mallory", "admin", "admin-secret"},
                       Try{"alice", "bob", "bob \"secret\""}}) {
    SCOPED_TRACE(std::string(t.user) + " " + (t.admin ? t.admin : "-"));
    auto channel = Connect(("127.0.0." + std::to_string(source++)).c_str());
    ImapClient client(*channel, shown_);
    client.ReadGreeting();
    try {
      if (t.admin) {
        client.LoginAs(t.user, t.admin, t.password);
      } else {
        client.Login(t.user, t.password);
      }
      ADD_FAILURE() << "login succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kAuth) << e.what();
      EXPECT_EQ(std::string(e.what()).find(t.password), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(t.user), std::string::npos) << e.what();
    }
  }
  // A password that needs quoting, through LOGIN's sibling PLAIN: accepted.
  auto channel = Connect();
  ImapClient client(*channel, shown_);
  client.ReadGreeting();
  client.Login("bob", "bob \"secret\"");
  client.Logout();
}

// The TLS option of DovecotServer (moveuser's tests use it): Dovecot offers STARTTLS and accepts
// it. The handshake itself is stream/'s business; this channel only records the call.
TEST(ImapDovecotTls, StartTlsOffered) {
  std::string why;
  if (!DovecotServer::Available(&why)) GTEST_SKIP() << why;
  TempDir tmp;
  const std::string cert = tmp / "cert.pem", key = tmp / "key.pem";
  const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -keyout " +
                              key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  ::chmod(key.c_str(), 0644);  // Dovecot's config process reads it
  fs::create_directories(tmp / "mail");
  DovecotServer dovecot;
  DovecotServer::Options options;
  options.mail_root = tmp / "mail";
  options.users = {{"alice", "pw"}};
  options.tls_cert = cert;
  options.tls_key = key;
  dovecot.Start(options);
  SocketChannel channel(SocketChannel::Connect(dovecot.port()));
  ImapClient client(channel, "imap://127.0.0.1:" + std::to_string(dovecot.port()));
  client.ReadGreeting();
  EXPECT_TRUE(client.HasCapability("STARTTLS"));
  client.StartTls();
  EXPECT_EQ(channel.tls_started, 1);
}

}  // namespace
}  // namespace storemove::interop
