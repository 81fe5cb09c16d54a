// The pre-shared key file of the transport (--key FILE, made by `storemove keygen`): 64 hex
// digits, the 32 bytes of a TLS 1.3 external PSK, then a newline (any trailing whitespace).
#pragma once

#include <string>
#include <string_view>

namespace storemove::stream {

inline constexpr size_t kPskKeyBytes = 32;
// A key file is read up to one byte past this: anything longer is no key file keygen wrote.
inline constexpr size_t kMaxKeyFileBytes = 200;

// The key of the key file text `text` (read from `path`, named in errors); kInvalidArgument
// "key file PATH: expected 64 hex digits ..." for anything else, whose message never shows the
// text (it may be a key with a typo). The caller wipes `text`; the key made here is wiped when
// it is refused.
std::string ParsePskKey(std::string_view text, const std::string& path);

}  // namespace storemove::stream
