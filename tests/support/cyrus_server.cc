#include "tests/support/cyrus_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <db.h>

#include <chrono>
#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <utility>
#include <thread>

#include "tests/support/imap_filler.h"
#include "tests/support/server_process.h"
#include "util/error.h"

namespace storemove::testing {

namespace {

namespace fs = std::filesystem;

// The SASL realm of the sasldb entries; imapd looks users up in its servername's realm.
constexpr const char* kServerName = "storemove-test";

// The sasldb saslpasswd2 would write, without its ~120 ms of SASL plugin loading per user: a
// Berkeley DB hash whose keys are "<user>\0<realm>\0userPassword" and values the plaintext
// passwords (db5.3_dump -p of a saslpasswd2-made file shows exactly that).
void WriteSaslDb(const std::string& path, const std::map<std::string, std::string>& passwords) {
  DB* db = nullptr;
  int rc = ::db_create(&db, nullptr, 0);
  if (rc == 0) rc = db->open(db, nullptr, path.c_str(), nullptr, DB_HASH, DB_CREATE | DB_EXCL, 0640);
  for (auto it = passwords.begin(); rc == 0 && it != passwords.end(); ++it) {
    std::string key = it->first + '\0' + kServerName + '\0' + "userPassword";
    std::string value = it->second;
    DBT k{}, v{};
    k.data = key.data();
    k.size = u_int32_t(key.size());
    v.data = value.data();
    v.size = u_int32_t(value.size());
    rc = db->put(db, nullptr, &k, &v, 0);
  }
  const int closed = db ? db->close(db, 0) : 0;
  if (rc != 0 || closed != 0)
    Throw(Errc::kIo, "cannot write the sasldb " + path + ": " + ::db_strerror(rc != 0 ? rc : closed));
}

}  // namespace

bool CyrusServer::Available(std::string* why) {
  for (const char* binary : {kMaster, kImapd}) {
    if (::access(binary, X_OK) != 0) {
      *why = std::string(binary) +
             " absent (scripts/install-deps installs cyrus-common and unpacks cyrus-imapd's imapd "
             "under /opt/storemove-test)";
      return false;
    }
  }
  if (::getuid() == 0 && ::getpwnam("cyrus") == nullptr) {
    *why = "running as root needs the account 'cyrus' (made by cyrus-common): Cyrus will not run as root";
    return false;
  }
  return true;
}

void CyrusServer::Start(const Options& options) {
  std::string why;
  if (!Available(&why)) Throw(Errc::kNotFound, "cyrus: " + why);
  const std::string base = fs::exists("/dev/shm") ? "/dev/shm" : fs::temp_directory_path().string();
  std::string templ = base + "/storemove-cyrus-XXXXXX";
  if (!::mkdtemp(templ.data())) ThrowErrno("mkdtemp " + templ);
  dir_ = templ;
  // imapd binds its IDLE socket under <configdirectory>/socket and fails the bind without it.
  for (const char* sub : {"/conf/socket", "/conf/db", "/spool", "/sieve", "/tmp", "/run"})
    fs::create_directories(dir_ + sub);
  // The recovery stamp `ctl_cyrusdb -r` leaves (4 bytes, network order: skiplist databases older
  // than it need recovery): without it every imapd logs a DBERROR. The databases are new.
  const uint32_t stamp = htonl(uint32_t(::time(nullptr)));
  WriteTestFile(dir_ + "/conf/db/skipstamp", std::string(reinterpret_cast<const char*>(&stamp), sizeof stamp), 0644);

  // Cyrus switches from root to cyrus_user and refuses to stay root; anyone else runs it as
  // themselves.
  std::string cyrus_user;
  if (::getuid() == 0) {
    cyrus_user = "cyrus";
  } else {
    const passwd* me = ::getpwuid(::getuid());
    cyrus_user = me ? me->pw_name : std::to_string(::getuid());
  }
  port_ = FreeLoopbackPort();

  std::ostringstream c;
  c << "# throw-away configuration of tests/support/cyrus_server.cc\n"
    << "configdirectory: " << dir_ << "/conf\n"
    << "defaultpartition: default\n"
    << "partition-default: " << dir_ << "/spool\n"
    << "sievedir: " << dir_ << "/sieve\n"
    << "temp_path: " << dir_ << "/tmp\n"
    << "lmtpsocket: " << dir_ << "/conf/socket/lmtp\n"
    << "idlesocket: " << dir_ << "/conf/socket/idle\n"
    << "notifysocket: " << dir_ << "/conf/socket/notify\n"
    << "cyrus_user: " << cyrus_user << "\n"
    << "servername: " << kServerName << "\n"
    << "admins: " << options.admin << "\n"
    // Plaintext passwords on loopback without TLS; PLAIN also carries the admin's authorization
    // identity.
    << "allowplaintext: yes\n"
    << "sasl_pwcheck_method: auxprop\n"
    << "sasl_auxprop_plugin: sasldb\n"
    << "sasl_sasldb_path: " << dir_ << "/sasldb2\n"
    << "sasl_mech_list: PLAIN LOGIN\n"
    // Tests fail logins on purpose: no 3 s pause after each.
    << "failedloginpause: 0\n"
    // The 3.x defaults, explicit: folders beside INBOX, '/' between levels.
    << "altnamespace: yes\n"
    << "unixhierarchysep: yes\n"
    // Keep what clients append byte for byte: no 8-bit header munging (default on) or rejection.
    << "munge8bit: no\n"
    << "reject8bit: no\n"
    << "virtdomains: off\n";
  if (!options.tls_cert.empty()) {
    // Copied in: the caller's files may sit where the cyrus account cannot read.
    fs::create_directories(dir_ + "/tls");
    for (const auto& [from, to] : {std::pair{options.tls_cert, "/tls/cert.pem"}, std::pair{options.tls_key, "/tls/key.pem"}}) {
      std::error_code ec;
      if (!fs::copy_file(from, dir_ + to, ec)) Throw(Errc::kIo, "cannot copy " + from + ": " + ec.message());
    }
    fs::permissions(dir_ + "/tls/key.pem", static_cast<fs::perms>(0600));
    c << "tls_server_cert: " << dir_ << "/tls/cert.pem\n"
      << "tls_server_key: " << dir_ << "/tls/key.pem\n"
      << "tls_session_timeout: 0\n";  // no session cache database to keep
  }
  WriteTestFile(dir_ + "/imapd.conf", c.str(), 0644);

  const std::string config = dir_ + "/imapd.conf";
  std::ostringstream m;
  m << "# throw-away configuration of tests/support/cyrus_server.cc: IMAP only, no START tasks (the\n"
    << "# databases are new), no events.\n"
    << "SERVICES {\n"
    << "  imap cmd=\"" << kImapd << " -C " << config << "\" listen=\"127.0.0.1:" << port_
    << "\" prefork=0\n"
    << "}\n";
  WriteTestFile(dir_ + "/cyrus.conf", m.str(), 0644);

  std::map<std::string, std::string> passwords = options.users;
  passwords[options.admin] = options.admin_password;
  WriteSaslDb(dir_ + "/sasldb2", passwords);
  if (::getuid() == 0) {
    const passwd* cyrus = ::getpwnam("cyrus");
    ChownTree(dir_, cyrus->pw_uid, cyrus->pw_gid);
  }

  const std::string log = dir_ + "/master.log";
  const std::string syslog_file = dir_ + "/syslog.log";
  const std::string pidfile = dir_ + "/run/master.pid";
  const std::string cyrus_conf = dir_ + "/cyrus.conf";
  pid_ = ::fork();
  if (pid_ < 0) ThrowErrno("fork");
  if (pid_ == 0) {
    ::setsid();  // its own process group: Stop() can kill every child
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::unsetenv("CYRUS_USER");  // would override cyrus_user
    // Cyrus's syslog messages into syslog.log (cyrus_syslog.cc); master passes both on to imapd.
    ::setenv("LD_PRELOAD", CYRUS_SYSLOG_LIB, 1);
    ::setenv("STOREMOVE_SYSLOG_FILE", syslog_file.c_str(), 1);
    ::execl(kMaster, kMaster, "-C", config.c_str(), "-M", cyrus_conf.c_str(), "-p", pidfile.c_str(), "-L",
            log.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Ready when an imapd greets: the first connection is the administrator's own, so no imapd is
  // spent on a probe (each costs ~100 ms of loading on this machine).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::unique_ptr<ImapFiller> admin;
  while (!admin) {
    try {
      admin = std::make_unique<ImapFiller>(port_);
    } catch (const Error& e) {
      // Refused (not listening yet) is retried; a wrong greeting or a BYE will not get better.
      if (e.code() != Errc::kIo) Throw(e.code(), std::string("cyrus imapd: ") + e.what() + ": " + Log());
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        Throw(Errc::kIo, "cyrus master exited before serving: " + Log());
      }
      if (std::chrono::steady_clock::now() > deadline)
        Throw(Errc::kTempFail, "cyrus did not serve IMAP on port " + std::to_string(port_) + " within 30 s (" +
                                   e.what() + "): " + Log());
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling interval of a bounded wait
    }
  }
  // Users' INBOXes: the administrator sees the internal namespace, where user u's INBOX is user/u.
  if (!options.users.empty()) {
    admin->Login(options.admin, options.admin_password);
    for (const auto& [user, password] : options.users) admin->Create("user/" + user);
  }
  admin->Logout();
}

void CyrusServer::Stop() {
  StopProcessGroup(&pid_);
  RemoveServerDir(&dir_, "CYRUS_TEST_KEEP");
}

std::string CyrusServer::Log() const { return OneLineLog(dir_, {"/master.log", "/syslog.log"}); }

}  // namespace storemove::testing
