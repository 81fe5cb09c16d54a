// Mailbox names in modified UTF-7 (RFC 3501 §5.1.3): how IMAP servers send folder names and how
// Dovecot names Maildir++ folder directories (mailbox_list_utf8 = no, its default).
//
// Printable ASCII (0x20..0x7e) stands for itself except '&', which is written "&-"; any other run
// of characters is "&" + base64 of its UTF-16BE code units (',' instead of '/', no padding) + "-".
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace storemove::interop {

// Valid UTF-8 -> modified UTF-7. A byte that is not part of valid UTF-8 is written "\xx" (two
// lowercase hex digits), Dovecot's listescape form, so that no name is lost; such names do not
// decode back to the same bytes.
std::string EncodeModifiedUtf7(std::string_view utf8);

// Modified UTF-7 -> UTF-8. nullopt when `text` is not modified UTF-7: a byte outside printable
// ASCII, '&' without its closing '-', a character outside the base64 alphabet, leftover bits
// that are not zero, an odd number of bytes, or an unpaired surrogate.
std::optional<std::string> TryDecodeModifiedUtf7(std::string_view text);
// The same; throws Errc::kCorrupt "not modified UTF-7: <text, control characters escaped>".
std::string DecodeModifiedUtf7(std::string_view text);

// The UTF-8 sequence at text[i]: its length and code point; nullopt if it is not valid UTF-8
// (truncated, overlong, surrogate, above U+10FFFF).
std::optional<std::pair<size_t, char32_t>> DecodeUtf8(std::string_view text, size_t i);
// Appends the UTF-8 encoding of a code point (which must be valid: <= U+10FFFF, no surrogate).
void AppendUtf8(char32_t cp, std::string* out);

}  // namespace storemove::interop
