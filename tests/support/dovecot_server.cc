#include "tests/support/dovecot_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/support/server_process.h"
#include "util/error.h"

namespace storemove::testing {

namespace {

namespace fs = std::filesystem;

bool Connects(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// An account Dovecot may switch to: only root can switch at all.
std::string Account(const char* name) {
  if (::getuid() != 0) return "";
  const passwd* pw = ::getpwnam(name);
  return pw ? pw->pw_name : "";
}

}  // namespace

bool DovecotServer::Available(std::string* why) {
  if (::access(kBinary, X_OK) != 0) {
    *why = std::string(kBinary) + " absent (scripts/install-deps installs dovecot-imapd)";
    return false;
  }
  if (::getuid() == 0 && ::getpwnam("nobody") == nullptr) {
    *why = "running as root needs the unprivileged account 'nobody' for Dovecot's mail processes";
    return false;
  }
  return true;
}

void DovecotServer::Start(const Options& options) {
  std::string why;
  if (!Available(&why)) Throw(Errc::kNotFound, "dovecot: " + why);
  const std::string base = fs::exists("/dev/shm") ? "/dev/shm" : fs::temp_directory_path().string();
  std::string templ = base + "/storemove-dovecot-XXXXXX";
  if (!::mkdtemp(templ.data())) ThrowErrno("mkdtemp " + templ);
  dir_ = templ;
  fs::create_directories(dir_ + "/run");
  fs::create_directories(dir_ + "/state");
  for (const auto& [user, password] : options.users) {
    fs::create_directories(dir_ + "/home/" + user);
    fs::create_directories(options.mail_root + "/" + user);
  }

  // Who the mail processes run as: the current user, or `nobody` for root (who then hands over
  // the mail tree and the homes).
  uid_t mail_uid = ::getuid();
  gid_t mail_gid = ::getgid();
  if (mail_uid == 0) {
    const passwd* nobody = ::getpwnam("nobody");
    mail_uid = nobody->pw_uid;
    mail_gid = nobody->pw_gid;
    ChownTree(options.mail_root, mail_uid, mail_gid);
    ChownTree(dir_ + "/home", mail_uid, mail_gid);
  }
  // Dovecot's auth process (default_internal_user) reads the passwd files: let it pass through.
  fs::permissions(dir_, static_cast<fs::perms>(0711));

  std::string passwd_text;
  for (const auto& [user, password] : options.users) passwd_text += user + ":{PLAIN}" + password + "::::::\n";
  WriteTestFile(dir_ + "/passwd", passwd_text, 0644);
  if (!options.master_user.empty())
    WriteTestFile(dir_ + "/master-users", options.master_user + ":{PLAIN}" + options.master_password + "::::::\n", 0644);

  const passwd* me = ::getpwuid(::getuid());
  const group* my_group = ::getgrgid(::getgid());
  const std::string me_name = me ? me->pw_name : std::to_string(::getuid());
  const std::string group_name = my_group ? my_group->gr_name : std::to_string(::getgid());
  const std::string internal = Account("dovecot");
  const std::string login = Account("dovenull");
  port_ = FreeLoopbackPort();

  std::ostringstream c;
  c << "# throw-away configuration of tests/support/dovecot_server.cc\n"
    << "base_dir = " << dir_ << "/run\n"
    << "state_dir = " << dir_ << "/state\n"
    << "log_path = " << dir_ << "/dovecot.log\n"
    << "info_log_path = " << dir_ << "/dovecot.log\n"
    << "protocols = imap\n"
    << "listen = 127.0.0.1\n"
    << "disable_plaintext_auth = no\n"
    << "auth_mechanisms = plain\n"
    // Tests try wrong passwords on purpose: no 2 s delay per failure (anvil's growing penalty per
    // address remains: connect from another loopback address after a failure).
    << "auth_failure_delay = 0\n"
    << "default_internal_user = " << (internal.empty() ? me_name : internal) << "\n"
    << "default_internal_group = " << (internal.empty() ? group_name : "dovecot") << "\n"
    << "default_login_user = " << (login.empty() ? me_name : login) << "\n"
    << "mail_uid = " << mail_uid << "\n"
    << "mail_gid = " << mail_gid << "\n"
    << "first_valid_uid = 1\n"
    << "first_valid_gid = 1\n"
    << "mail_location = maildir:" << options.mail_root << "/%u\n"
    << "mail_plugins = listescape\n"
    << "namespace inbox {\n  inbox = yes\n  separator = " << options.separator << "\n}\n";
  if (options.tls_cert.empty()) {
    c << "ssl = no\n";
  } else {
    c << "ssl = yes\nssl_cert = <" << options.tls_cert << "\nssl_key = <" << options.tls_key << "\n";
  }
  if (!options.master_user.empty()) {
    // Master users authenticate as themselves and act for the authorization identity (SASL PLAIN
    // authzid, or LOGIN "user*admin"); pass = yes then checks the user exists in the next passdb.
    c << "auth_master_user_separator = *\n"
      << "passdb {\n  driver = passwd-file\n  master = yes\n  pass = yes\n"
      << "  args = scheme=PLAIN username_format=%u " << dir_ << "/master-users\n}\n";
  }
  c << "passdb {\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u " << dir_ << "/passwd\n}\n"
    << "userdb {\n  driver = static\n  args = home=" << dir_ << "/home/%u\n}\n"
    << "# No chroot: only root can chroot, and the test may run as another user.\n"
    << "service imap-login {\n  chroot =\n  inet_listener imap {\n    address = 127.0.0.1\n    port = " << port_
    << "\n  }\n  inet_listener imaps {\n    port = 0\n  }\n}\n"
    << "service anvil {\n  chroot =\n}\n";
  WriteTestFile(dir_ + "/dovecot.conf", c.str(), 0644);

  const std::string out = dir_ + "/dovecot.out";
  const std::string config = dir_ + "/dovecot.conf";
  pid_ = ::fork();
  if (pid_ < 0) ThrowErrno("fork");
  if (pid_ == 0) {
    ::setsid();  // its own process group: Stop() can kill every child
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execl(kBinary, kBinary, "-F", "-c", config.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!Connects(port_)) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      Throw(Errc::kIo, "dovecot exited before listening: " + Log());
    }
    if (std::chrono::steady_clock::now() > deadline)
      Throw(Errc::kTempFail, "dovecot did not listen on port " + std::to_string(port_) + " within 30 s: " + Log());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling interval of a bounded wait
  }
}

void DovecotServer::Stop() {
  StopProcessGroup(&pid_);
  RemoveServerDir(&dir_, "DOVECOT_TEST_KEEP");
}

std::string DovecotServer::Log() const { return OneLineLog(dir_, {"/dovecot.out", "/dovecot.log"}); }

}  // namespace storemove::testing
