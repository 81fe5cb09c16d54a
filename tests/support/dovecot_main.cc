// test-dovecot --mail-root DIR --passwords FILE [--master USER:PASSWORD]
// A real Dovecot for bench scripts (tests/support/dovecot_server.h): serves the Maildir++ tree of
// each user of FILE (USER<TAB>PASSWORD lines) at DIR/USER on 127.0.0.1, prints the port on
// standard output, and runs until SIGINT or SIGTERM.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "tests/support/dovecot_server.h"
#include "util/error.h"

int main(int argc, char** argv) {
  storemove::testing::DovecotServer::Options options;
  std::string passwords;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--mail-root") {
      options.mail_root = value;
    } else if (flag == "--passwords") {
      passwords = value;
    } else if (flag == "--master" && value.find(':') != std::string::npos) {
      options.master_user = value.substr(0, value.find(':'));
      options.master_password = value.substr(value.find(':') + 1);
    } else {
      std::cerr << "test-dovecot: unknown option " << flag << "\n";
      return 64;
    }
  }
  if (options.mail_root.empty() || passwords.empty() || argc % 2 == 0) {
    std::cerr << "usage: test-dovecot --mail-root DIR --passwords FILE [--master USER:PASSWORD]\n";
    return 64;
  }
  std::ifstream in(passwords);
  for (std::string line; std::getline(in, line);) {
    const size_t tab = line.find('\t');
    if (tab != std::string::npos) options.users[line.substr(0, tab)] = line.substr(tab + 1);
  }
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop, nullptr);  // before any thread or child exists
  try {
    storemove::testing::DovecotServer server;
    server.Start(options);
    std::printf("%d\n", server.port());
    std::fflush(stdout);
    int sig;
    sigwait(&stop, &sig);
  } catch (const storemove::Error& e) {
    std::cerr << "test-dovecot: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
