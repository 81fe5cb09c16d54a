// The pre-shared key file of the transport (--key FILE of serve, backup --to, migrate, verify;
// stream/psk_key.h ParsePskKey): a file the administrator copies between hosts, mistyped,
// truncated or with a BOM or CRLF. Invariants: only storemove::Error escapes, with one line
// naming the file and never showing its text (a key with a typo is still nearly the key); a key
// accepted is 32 bytes whose hex is the text's first 64 characters, followed by whitespace alone.
#include <cctype>

#include "stream/psk_key.h"
#include "tests/fuzz/fuzz_support.h"

namespace st = storemove::stream;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return -1;
  const std::string path = "/etc/storemove/psk.key";
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string key;
  bool ok = storemove::fuzz::OnlyStoremoveErrors("key", [&] {
    try {
      key = st::ParsePskKey(text, path);
    } catch (const storemove::Error& e) {
      const std::string what = e.what();
      FUZZ_CHECK(what.starts_with("key file " + path + ": "));
      // The message is one of the parser's own, with nothing of the text in it.
      FUZZ_CHECK(what.ends_with("expected 64 hex digits (make one with storemove keygen)"));
      throw;
    }
  });
  if (!ok) return 0;
  FUZZ_CHECK(key.size() == st::kPskKeyBytes && size >= 2 * st::kPskKeyBytes && size <= st::kMaxKeyFileBytes);
  static const char* kHex = "0123456789abcdef";
  for (size_t i = 0; i < st::kPskKeyBytes; ++i) {
    const unsigned char b = static_cast<unsigned char>(key[i]);
    FUZZ_CHECK(std::tolower(static_cast<unsigned char>(text[2 * i])) == kHex[b >> 4]);
    FUZZ_CHECK(std::tolower(static_cast<unsigned char>(text[2 * i + 1])) == kHex[b & 15]);
  }
  for (size_t i = 2 * st::kPskKeyBytes; i < size; ++i) FUZZ_CHECK(std::isspace(static_cast<unsigned char>(text[i])));
  return 0;
}
