#include "util/printable.h"

#include <cstdio>

namespace storemove {

// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong form, no
// surrogate, nothing above U+10FFFF), or 0.
static size_t Utf8SequenceAt(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0; };
  const unsigned char c = b(0);
  const auto cont = [&](size_t k) { return (b(k) & 0xc0) == 0x80; };
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    if ((c == 0xe0 && b(1) < 0xa0) || (c == 0xed && b(1) >= 0xa0)) return 0;
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if ((c == 0xf0 && b(1) < 0x90) || (c == 0xf4 && b(1) >= 0x90)) return 0;
    return 4;
  }
  return 0;
}

std::string EscapeControls(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  auto escape = [&out](unsigned char c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  };
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f)
        escape(c);
      else
        out += char(c);
      ++i;
      continue;
    }
    // A byte of no well-formed sequence would reach a terminal raw, where 0x80..0x9f are C1
    // controls (0x9b is CSI); a well-formed U+0080..U+009F is one too.
    const size_t n = Utf8SequenceAt(s, i);
    if (n == 0) {
      escape(c);
      ++i;
    } else if (n == 2 && c == 0xc2 && static_cast<unsigned char>(s[i + 1]) <= 0x9f) {
      escape(c);
      escape(static_cast<unsigned char>(s[i + 1]));
      i += 2;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string ShownName(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return EscapeControls(s);
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xc0) == 0x80) --cut;
  return EscapeControls(s.substr(0, cut)) + "...";
}

}  // namespace storemove
