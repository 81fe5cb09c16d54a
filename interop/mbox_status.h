// What an mbox message's header says of it: its fields, and the flags mail programs keep there
// (import reads them; export compares them with the store's).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace storemove::interop {

// The value of the header field `name` (case-insensitive) within the message's header (up to
// its first empty line), without the leading blanks; nullopt when absent.
std::optional<std::string_view> HeaderField(std::string_view message, std::string_view name);

// The flags mail programs keep in an mbox message's header (mutt, Pine, UW-IMAP, Dovecot,
// Thunderbird's "Status"): Status R = read; X-Status A answered, F flagged, D deleted, T draft;
// and, where `thunderbird` (the message's envelope line is Thunderbird's "From - DATE"),
// X-Mozilla-Status (4 hex digits) 0001 read, 0002 answered, 0004 flagged, 0008 deleted.
uint8_t FlagsFromStatusHeaders(std::string_view message, bool thunderbird = false);

}  // namespace storemove::interop
