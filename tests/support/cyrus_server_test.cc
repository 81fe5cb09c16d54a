// CyrusServer and ImapFiller against the real thing: a Cyrus started on loopback, two users filled
// with corpus messages (flags, keywords, dates) in INBOX, a UTF-8 folder and a nested one, then read
// back with interop::ImapClient, the client moveuser uses: LIST with the Cyrus namespace (folders
// beside INBOX, '/' separator, modified UTF-7 on the wire), subscriptions, FETCH of flags, dates and
// every body byte for byte (as appended: CRLF, since Cyrus refuses bare LF), and the administrator
// logging in for a user with AUTHENTICATE PLAIN's authorization identity. The filler is checked
// against Dovecot too. Skipped, with the reason, when Cyrus, Dovecot or the corpus is absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "interop/imap_client.h"
#include "tests/support/imap_collector.h"
#include "interop/modified_utf7.h"
#include "tests/support/cyrus_server.h"
#include "tests/support/dovecot_server.h"
#include "tests/support/imap_filler.h"
#include "tests/support/socket_channel.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"

namespace storemove::testing {
namespace {

namespace fs = std::filesystem;
using interop::ImapClient;
using interop::ImapFetchSink;
using interop::ImapFolder;
using interop::ImapMessage;

const std::string kCorpus = STOREMOVE_CORPUS;

std::string ToCrlf(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) out.push_back('\r');
    out.push_back(s[i]);
  }
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct Mail {
  std::string bytes;               // CRLF, as appended
  std::vector<std::string> flags;  // sorted, as the server should send them
  int64_t date;
};

struct Folder {
  std::string path;  // UTF-8, '/'-separated
  std::vector<Mail> mails;
};


// Corpus messages of several kinds: LF and CRLF, 8-bit headers, a large multipart.
const char* const kMessages[] = {
    "notmuch-lists/default/01:2,",
    "notmuch-lists/default/02:2,",
    "cyrus-cassandane/mime/headers-utf8.bin",
    "cyrus-cassandane/mime/base64-body.eml",
    "publicinbox-usrp-users/00111_334d1e7537a1.eml",
    "notmuch-lists/default/bar/17:2,",
};

// The mailboxes of one user, built from the corpus: names and flags differ per user.
std::vector<Folder> Mailboxes(const std::string& user) {
  std::vector<std::string> bytes;
  for (const char* rel : kMessages) bytes.push_back(ToCrlf(ReadFile(kCorpus + "/" + rel)));
  const int64_t day = 86400;
  const int64_t base = user == "alice" ? 1600000000 : 1700000000;
  return {
      {"INBOX",
       {{bytes[0], {"\\Seen"}, base},
        {bytes[1], {"$Forwarded", "\\Flagged", "\\Seen"}, base + day},
        {bytes[4], {}, base + 2 * day}}},
      {"Entw\xc3\xbcrfe", {{bytes[2], {"\\Draft", "custom-" + user}, base + 3 * day}}},
      {"Projects/2024",
       {{bytes[3], {"$Forwarded", "\\Answered"}, base + 4 * day}, {bytes[5], {"\\Flagged"}, base + 5 * day}}},
  };
}

class CyrusServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!CyrusServer::Available(&why)) GTEST_SKIP() << why;
  }
  CyrusServer::Options Users() {
    CyrusServer::Options o;
    o.users = {{"alice", "alice-pw"}, {"bob", "bob-pw"}};
    o.admin = "cyrusadmin";
    o.admin_password = "admin-pw";
    return o;
  }
};

TEST_F(CyrusServerTest, StartsStopsAndCreatesInboxes) {
  CyrusServer server;
  const auto t0 = std::chrono::steady_clock::now();
  server.Start(Users());
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "CyrusServer::Start with 2 users: " << ms << " ms\n";
  const int port = server.port();
  {
    ImapFiller alice(port);
    alice.Login("alice", "alice-pw");
    const auto list = alice.Command("LIST \"\" \"*\"");
    ASSERT_EQ(list.size(), 1u) << server.Log();
    EXPECT_EQ(list[0], "LIST (\\HasNoChildren) \"/\" INBOX");
    alice.Logout();
  }
  const std::string dir = server.dir();
  server.Stop();
  server.Stop();  // idempotent
  EXPECT_THROW(::close(SocketChannel::Connect(port)), Error) << "master still listening after Stop";
  EXPECT_FALSE(fs::exists(dir));
}

TEST_F(CyrusServerTest, RefusesWrongPasswordsAndNonAdminProxies) {
  CyrusServer server;
  server.Start(Users());
  ImapFiller wrong(server.port());
  EXPECT_THROW(wrong.Login("alice", "bob-pw"), Error);
  ImapFiller unknown(server.port());
  EXPECT_THROW(unknown.Login("carol", "alice-pw"), Error);
  // bob is a user, not in `admins`: he may not act for alice.
  ImapFiller proxy(server.port());
  EXPECT_THROW(proxy.LoginAs("alice", "bob", "bob-pw"), Error);
  ImapFiller admin_wrong(server.port());
  EXPECT_THROW(admin_wrong.LoginAs("alice", "cyrusadmin", "alice-pw"), Error);
  // Duplicate CREATE: the server's refusal is an Error quoting it.
  ImapFiller alice(server.port());
  alice.Login("alice", "alice-pw");
  alice.Create("Sent");
  try {
    alice.Create("Sent");
    FAIL() << "second CREATE Sent accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("NO"), std::string::npos) << e.what();
  }
}

TEST_F(CyrusServerTest, FilledMailboxesReadBackExactly) {
  if (!fs::is_directory(kCorpus)) GTEST_SKIP() << "corpus absent: " << kCorpus;
  for (const char* rel : kMessages)
    if (!fs::exists(kCorpus + "/" + rel)) GTEST_SKIP() << "corpus message absent: " << kCorpus << "/" << rel;
  ASSERT_EQ(interop::EncodeModifiedUtf7("Entw\xc3\xbcrfe"), "Entw&APw-rfe");

  CyrusServer server;
  const CyrusServer::Options options = Users();
  server.Start(options);
  for (const auto& [user, password] : options.users) {
    // alice fills her own mailboxes; bob's are filled by the administrator acting for him.
    ImapFiller filler(server.port());
    if (user == "alice")
      filler.Login(user, password);
    else
      filler.LoginAs(user, options.admin, options.admin_password);
    for (const Folder& f : Mailboxes(user)) {
      const std::string name = interop::EncodeModifiedUtf7(f.path);
      if (f.path != "INBOX") {
        filler.Create(name);  // Cyrus makes the parent "Projects" on the way
        filler.Subscribe(name);
      }
      for (const Mail& m : f.mails) filler.Append(name, m.flags, m.date, m.bytes);
    }
    // The raw view: the names on the wire.
    const auto list = filler.Command("LIST \"\" \"*\"");
    std::vector<std::string> lines(list.begin(), list.end());
    std::sort(lines.begin(), lines.end());
    EXPECT_EQ(lines, (std::vector<std::string>{
                         "LIST (\\HasChildren) \"/\" Projects",
                         "LIST (\\HasNoChildren) \"/\" Entw&APw-rfe",
                         "LIST (\\HasNoChildren) \"/\" INBOX",
                         "LIST (\\HasNoChildren) \"/\" Projects/2024",
                     }))
        << user;
    filler.Logout();
  }

  for (const auto& [user, password] : options.users) {
    SCOPED_TRACE(user);
    // Read back as moveuser does: the administrator for the user.
    SocketChannel channel(SocketChannel::Connect(server.port()));
    ImapClient client(channel, "imap://127.0.0.1:" + std::to_string(server.port()));
    client.ReadGreeting();
    client.LoginAs(user, options.admin, options.admin_password);
    std::map<std::string, ImapFolder> folders;
    for (const ImapFolder& f : client.ListFolders()) folders[f.path] = f;
    ASSERT_EQ(folders.size(), 4u);
    EXPECT_EQ(folders["Entw\xc3\xbcrfe"].name, "Entw&APw-rfe");
    EXPECT_TRUE(folders["Entw\xc3\xbcrfe"].subscribed);
    EXPECT_EQ(folders["Projects/2024"].delimiter, '/');
    EXPECT_TRUE(folders["Projects/2024"].subscribed);
    EXPECT_FALSE(folders["Projects"].subscribed);
    EXPECT_TRUE(folders["INBOX"].selectable);

    for (const Folder& f : Mailboxes(user)) {
      SCOPED_TRACE(f.path);
      ASSERT_TRUE(folders.count(f.path));
      const auto status = client.Examine(folders[f.path].name);
      ASSERT_EQ(status.exists, f.mails.size());
      std::vector<uint32_t> uids;
      for (uint32_t uid = 1; uid <= f.mails.size(); ++uid) uids.push_back(uid);
      ImapCollector got;
      client.FetchBodies(uids, got);
      ASSERT_EQ(got.messages.size(), f.mails.size());
      for (size_t i = 0; i < f.mails.size(); ++i) {
        const uint32_t uid = uint32_t(i + 1);
        std::vector<std::string> want = f.mails[i].flags;
        std::sort(want.begin(), want.end());
        EXPECT_EQ(got.messages[uid].flags, want) << "uid " << uid;
        EXPECT_EQ(got.messages[uid].internal_date, f.mails[i].date) << "uid " << uid;
        EXPECT_EQ(got.messages[uid].size, f.mails[i].bytes.size()) << "uid " << uid;
        EXPECT_TRUE(got.bodies[uid] == f.mails[i].bytes) << "uid " << uid << ": body differs";
      }
    }
    client.Logout();
  }
}

// The TLS option (moveuser tests pull with STARTTLS and the certificate checked): Cyrus offers
// STARTTLS and completes a handshake with the given certificate, verified by openssl s_client
// against it as the trusted CA; plaintext logins stay allowed for --insecure.
TEST_F(CyrusServerTest, StartTlsWithTheGivenCertificate) {
  TempDir tmp;
  const std::string cert = tmp / "cert.pem", key = tmp / "key.pem";
  const std::string make = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
                           "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout " +
                           key + " -out " + cert + " >/dev/null 2>&1";
  if (std::system(make.c_str()) != 0) GTEST_SKIP() << "openssl could not make a certificate: " << make;
  CyrusServer server;
  CyrusServer::Options options = Users();
  options.tls_cert = cert;
  options.tls_key = key;
  server.Start(options);
  {
    ImapFiller plain(server.port());
    const auto caps = plain.Command("CAPABILITY");
    ASSERT_EQ(caps.size(), 1u);
    EXPECT_NE(caps[0].find(" STARTTLS"), std::string::npos) << caps[0];
    plain.Login("alice", "alice-pw");
  }
  const std::string out = tmp / "s_client.out";
  const std::string check = "echo a LOGOUT | openssl s_client -connect 127.0.0.1:" + std::to_string(server.port()) +
                            " -starttls imap -ign_eof -CAfile " + cert + " -verify_return_error -verify_ip 127.0.0.1 >" +
                            out + " 2>&1";
  // Not its exit status: Cyrus closes after LOGOUT without a TLS close_notify, which s_client
  // reports as an error or not depending on timing. The verdict and the tagged answer to the
  // LOGOUT sent over TLS are what count.
  const int status = std::system(check.c_str());
  const std::string said = ReadFile(out);
  EXPECT_NE(said.find("Verify return code: 0 (ok)"), std::string::npos) << status << ": " << said << server.Log();
  EXPECT_NE(said.find("\na OK"), std::string::npos) << status << ": " << said << server.Log();
}

TEST(ImapFillerDovecot, FillsDovecotToo) {
  std::string why;
  if (!DovecotServer::Available(&why)) GTEST_SKIP() << why;
  TempDir tmp;
  DovecotServer server;
  DovecotServer::Options o;
  o.mail_root = tmp.path();  // handed to nobody by Start: its parent must stay traversable
  o.users = {{"alice", "alice-pw"}};
  o.master_user = "admin";
  o.master_password = "admin-pw";
  server.Start(o);
  const std::string message = "Subject: filled\r\n\r\nbody\r\n";
  {
    ImapFiller filler(server.port());
    filler.LoginAs("alice", "admin", "admin-pw");
    filler.Create("Entw&APw-rfe/2024");
    filler.Subscribe("Entw&APw-rfe/2024");
    filler.Append("Entw&APw-rfe/2024", {"\\Seen", "$Forwarded", "custom"}, 1500000000, message);
    filler.Logout();
  }
  SocketChannel channel(SocketChannel::Connect(server.port()));
  ImapClient client(channel, "dovecot");
  client.ReadGreeting();
  client.Login("alice", "alice-pw");
  bool found = false;
  for (const ImapFolder& f : client.ListFolders())
    if (f.path == "Entw\xc3\xbcrfe/2024") found = f.subscribed;
  EXPECT_TRUE(found);
  client.Examine("Entw&APw-rfe/2024");
  ImapCollector got;
  client.FetchBodies({1}, got);
  ASSERT_EQ(got.bodies.size(), 1u);
  EXPECT_EQ(got.bodies[1], message);
  EXPECT_EQ(got.messages[1].flags, (std::vector<std::string>{"$Forwarded", "\\Seen", "custom"}));
  EXPECT_EQ(got.messages[1].internal_date, 1500000000);
}

}  // namespace
}  // namespace storemove::testing
