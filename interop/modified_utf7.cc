#include "interop/modified_utf7.h"

#include <cstdint>

#include "util/error.h"

namespace storemove::interop {

namespace {

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == ',') return 63;
  return -1;
}

void AppendEscape(unsigned char c, std::string* out) {
  static const char* kHex = "0123456789abcdef";  // Dovecot writes "%02x"
  out->push_back('\\');
  out->push_back(kHex[c >> 4]);
  out->push_back(kHex[c & 15]);
}

// Decodes one base64 run (between '&' and '-') of UTF-16BE units into UTF-8.
bool DecodeRun(std::string_view run, std::string* out) {
  uint32_t bits = 0;
  int nbits = 0;
  char32_t high = 0;  // a pending high surrogate
  for (char c : run) {
    const int v = Base64Value(c);
    if (v < 0) return false;
    bits = (bits << 6) | static_cast<uint32_t>(v);
    nbits += 6;
    if (nbits < 16) continue;
    nbits -= 16;
    const char32_t unit = (bits >> nbits) & 0xffff;
    bits &= (1u << nbits) - 1;
    if (high != 0) {
      if (unit < 0xdc00 || unit > 0xdfff) return false;
      AppendUtf8(0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00), out);
      high = 0;
    } else if (unit >= 0xd800 && unit <= 0xdbff) {
      high = unit;
    } else if (unit >= 0xdc00 && unit <= 0xdfff) {
      return false;
    } else {
      AppendUtf8(unit, out);
    }
  }
  // What is left must be padding: fewer than 6 bits... of zeros, and no surrogate half open.
  return high == 0 && nbits < 6 && bits == 0;
}

std::string Shown(std::string_view text) {
  std::string out;
  for (unsigned char c : text.substr(0, 200)) {
    if (c < 0x20 || c == 0x7f) {
      AppendEscape(c, &out);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

}  // namespace

std::optional<std::pair<size_t, char32_t>> DecodeUtf8(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return std::pair<size_t, char32_t>{1, lead};
  size_t length;
  char32_t cp;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
    cp = lead & 0x1f;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    cp = lead & 0x0f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    cp = lead & 0x07;
  } else {
    return std::nullopt;
  }
  if (i + length > text.size()) return std::nullopt;
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return std::nullopt;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[length] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return std::nullopt;
  return std::pair<size_t, char32_t>{length, cp};
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

std::string EncodeModifiedUtf7(std::string_view utf8) {
  std::string out;
  std::string units;  // UTF-16BE bytes of the pending non-ASCII run
  auto flush = [&] {
    if (units.empty()) return;
    out.push_back('&');
    size_t i = 0;
    for (; i + 3 <= units.size(); i += 3) {
      const uint32_t v = uint32_t(uint8_t(units[i])) << 16 | uint32_t(uint8_t(units[i + 1])) << 8 | uint8_t(units[i + 2]);
      for (int shift = 18; shift >= 0; shift -= 6) out.push_back(kBase64[(v >> shift) & 63]);
    }
    const size_t rest = units.size() - i;
    if (rest > 0) {
      uint32_t v = uint32_t(uint8_t(units[i])) << 16;
      if (rest == 2) v |= uint32_t(uint8_t(units[i + 1])) << 8;
      out.push_back(kBase64[(v >> 18) & 63]);
      out.push_back(kBase64[(v >> 12) & 63]);
      if (rest == 2) out.push_back(kBase64[(v >> 6) & 63]);
    }
    out.push_back('-');
    units.clear();
  };
  auto unit = [&](uint32_t u) {
    units.push_back(static_cast<char>(u >> 8));
    units.push_back(static_cast<char>(u & 0xff));
  };
  for (size_t i = 0; i < utf8.size();) {
    const auto decoded = DecodeUtf8(utf8, i);
    if (!decoded) {
      flush();
      AppendEscape(static_cast<unsigned char>(utf8[i]), &out);
      ++i;
      continue;
    }
    const char32_t cp = decoded->second;
    if (cp >= 0x20 && cp <= 0x7e) {
      flush();
      out += cp == '&' ? "&-" : std::string(1, static_cast<char>(cp));
    } else if (cp >= 0x10000) {
      unit(0xd800 + ((cp - 0x10000) >> 10));
      unit(0xdc00 + ((cp - 0x10000) & 0x3ff));
    } else {
      unit(cp);
    }
    i += decoded->first;
  }
  flush();
  return out;
}

std::optional<std::string> TryDecodeModifiedUtf7(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (c < 0x20 || c > 0x7e) return std::nullopt;
    if (c != '&') {
      out.push_back(c);
      ++i;
      continue;
    }
    const size_t end = text.find('-', i + 1);
    if (end == std::string_view::npos) return std::nullopt;
    if (end == i + 1) {
      out.push_back('&');
    } else if (!DecodeRun(text.substr(i + 1, end - i - 1), &out)) {
      return std::nullopt;
    }
    i = end + 1;
  }
  return out;
}

std::string DecodeModifiedUtf7(std::string_view text) {
  std::optional<std::string> out = TryDecodeModifiedUtf7(text);
  if (!out) Throw(Errc::kCorrupt, "not modified UTF-7: " + Shown(text));
  return *std::move(out);
}

}  // namespace storemove::interop
