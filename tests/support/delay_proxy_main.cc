// delay-proxy --listen HOST:PORT --to HOST:PORT --rtt-ms N [--window BYTES]
// Puts N ms of round-trip time between a client and a server on this machine (bench scripts,
// manual runs; tests/support/delay_proxy.h). Prints the bound port on standard output, then
// forwards until SIGINT or SIGTERM.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "tests/support/delay_proxy.h"
#include "util/error.h"

namespace {

[[noreturn]] void Usage(const std::string& why) {
  std::cerr << "delay-proxy: " << why
            << "\nusage: delay-proxy --listen HOST:PORT --to HOST:PORT --rtt-ms N [--window BYTES]\n";
  std::exit(64);
}

void Split(const std::string& text, std::string* host, uint16_t* port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) Usage("'" + text + "' is not HOST:PORT");
  *host = text.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  std::string p = text.substr(colon + 1);
  if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos || std::stoul(p) > 65535)
    Usage("'" + text + "': the port must be 0-65535");
  *port = uint16_t(std::stoul(p));
}

uint64_t Number(const std::string& text, const char* what) {
  if (text.empty() || text.size() > 12 || text.find_first_not_of("0123456789") != std::string::npos)
    Usage(std::string(what) + " must be a number, not '" + text + "'");
  return std::stoull(text);
}

}  // namespace

int main(int argc, char** argv) {
  storemove::testing::DelayProxyOptions options;
  bool listen = false, to = false, rtt = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) Usage(arg + " needs a value");
    std::string value = argv[++i];
    if (arg == "--listen") {
      Split(value, &options.listen_host, &options.listen_port);
      listen = true;
    } else if (arg == "--to") {
      Split(value, &options.target_host, &options.target_port);
      to = true;
    } else if (arg == "--rtt-ms") {
      options.rtt_ms = int(Number(value, "--rtt-ms"));
      rtt = true;
    } else if (arg == "--window") {
      options.window = Number(value, "--window");
    } else {
      Usage("unknown option " + arg);
    }
  }
  if (!listen || !to || !rtt) Usage("--listen, --to and --rtt-ms are required");
  if (options.target_port == 0) Usage("--to needs a port");

  // The signals are taken with sigwait, so no thread of the proxy is interrupted by them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  try {
    storemove::testing::DelayProxy proxy(options);
    std::printf("%u\n", unsigned(proxy.port()));
    std::fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    proxy.Stop();
  } catch (const storemove::Error& e) {
    std::cerr << "delay-proxy: " << e.what() << "\n";
    return 74;
  }
  return 0;
}
