#include "stream/psk_key.h"

#include <openssl/crypto.h>

#include <cctype>

#include "util/error.h"

namespace storemove::stream {

std::string ParsePskKey(std::string_view text, const std::string& path) {
  if (text.size() > kMaxKeyFileBytes)
    Throw(Errc::kInvalidArgument, "key file " + path + ": longer than " + std::to_string(kMaxKeyFileBytes) +
                                      " bytes; expected 64 hex digits (make one with storemove keygen)");
  size_t size = text.size();
  while (size > 0 && std::isspace(static_cast<unsigned char>(text[size - 1]))) --size;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  // Made at its full size first: grown by push_back, its reallocations left freed copies of its
  // first bytes.
  std::string key(kPskKeyBytes, '\0');
  bool ok = size == 2 * kPskKeyBytes;
  for (size_t i = 0; ok && i < size; i += 2) {
    int hi = hex(text[i]), lo = hex(text[i + 1]);
    ok = hi >= 0 && lo >= 0;
    key[i / 2] = char(hi << 4 | lo);
  }
  if (!ok) {
    OPENSSL_cleanse(key.data(), key.size());
    Throw(Errc::kInvalidArgument, "key file " + path + ": expected 64 hex digits (make one with storemove keygen)");
  }
  return key;
}

}  // namespace storemove::stream
