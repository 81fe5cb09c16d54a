// A stored message as an IMAP server sends it: RFC 3501 wants every line to end in CRLF, so a
// server that keeps bare LFs (Dovecot's Maildir, an mbox) turns each into CR LF when it serves
// BODY[] and counts RFC822.SIZE that way; Dovecot also sends a NUL byte as 0x80. A message
// imported from such a server's files (`import --maildir`) is therefore, byte for byte, not the
// message a pull from the running server gets; its wire form is (docs/moveuser.md "Line endings").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/digest.h"

namespace storemove::interop {

struct WireForm {
  uint64_t size = 0;
  Digest digest;  // XXH3-128 of the wire form's bytes
};

// The wire form of the file's bytes (pread from offset 0). kIo naming `shown` on a read error.
WireForm WireFormOfFile(int fd, const std::string& shown);

// The same for bytes in memory (tests, small messages).
WireForm WireFormOf(std::string_view bytes);

}  // namespace storemove::interop
