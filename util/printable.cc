#include "util/printable.h"

#include <cstdio>

namespace storemove {

std::string EscapeControls(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  auto escape = [&out](unsigned char c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const auto next = i + 1 < s.size() ? static_cast<unsigned char>(s[i + 1]) : 0;
    if (c == 0xc2 && next >= 0x80 && next <= 0x9f) {  // U+0080..U+009F
      escape(c);
      escape(next);
      ++i;
    } else if (c < 0x20 || c == 0x7f) {
      escape(c);
    } else {
      out += char(c);
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
