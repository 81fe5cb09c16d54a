// A listening socket on a free loopback port, nobody accepting yet: for tests that play a server
// (one that closes, resets, or never answers).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>

#include "util/fs.h"

namespace storemove::testing {

// Invalid on failure; `*port` is set on success.
inline UniqueFd LoopbackListener(uint16_t* port, int backlog = 4) {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (!listener.valid() || ::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::listen(listener.get(), backlog) != 0 || ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0)
    return UniqueFd();
  *port = ntohs(sa.sin_port);
  return listener;
}

}  // namespace storemove::testing
