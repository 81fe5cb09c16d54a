#include "util/interrupt.h"

#include <signal.h>
#include <string.h>

#include <atomic>

#include "util/error.h"

namespace storemove {
namespace {

std::atomic<int> g_signal{0};

void OnSignal(int signo) {
  if (g_signal.exchange(signo) != 0) {  // the second: at once
    ::signal(signo, SIG_DFL);
    ::raise(signo);
  }
}

}  // namespace

bool SighupStops() {
  struct sigaction old {};
  return ::sigaction(SIGHUP, nullptr, &old) != 0 || old.sa_handler != SIG_IGN;
}

void OnStopSignals(void (*handler)(int), int flags) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sa.sa_flags = flags;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  if (SighupStops()) ::sigaction(SIGHUP, &sa, nullptr);
}

void StopAtSafePointOnSignal() { OnStopSignals(OnSignal); }

int InterruptSignal() { return g_signal.load(std::memory_order_relaxed); }

void ThrowIfInterrupted(const std::string& doing) {
  if (const int signo = InterruptSignal())
    Throw(Errc::kInterrupted, std::string("interrupted by SIG") + ::sigabbrev_np(signo) + " while " + doing);
}

}  // namespace storemove
