#include "interop/mbox_status.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "store/store.h"

namespace storemove::interop {

std::optional<std::string_view> HeaderField(std::string_view message, std::string_view name) {
  for (size_t pos = 0; pos < message.size();) {
    size_t eol = message.find('\n', pos);
    std::string_view line = message.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line.empty()) return std::nullopt;  // the end of the header
    if (line.size() > name.size() && line[name.size()] == ':' &&
        std::equal(name.begin(), name.end(), line.begin(),
                   [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b)); })) {
      std::string_view value = line.substr(name.size() + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
      return value;
    }
    if (eol == std::string_view::npos) break;
    pos = eol + 1;
  }
  return std::nullopt;
}

// The header stays as it is (the message's bytes are never changed); only the flags are taken
// (helper-73: every message of a Dovecot-written mbox arrived unread).
uint8_t FlagsFromStatusHeaders(std::string_view message, bool thunderbird) {
  uint8_t flags = 0;
  if (auto status = HeaderField(message, "Status"))
    if (status->find('R') != std::string_view::npos) flags |= store::kSeen;
  if (auto x = HeaderField(message, "X-Status")) {
    if (x->find('A') != std::string_view::npos) flags |= store::kAnswered;
    if (x->find('F') != std::string_view::npos) flags |= store::kFlagged;
    if (x->find('D') != std::string_view::npos) flags |= store::kDeleted;
    if (x->find('T') != std::string_view::npos) flags |= store::kDraft;
  }
  // Thunderbird keeps its flags in "X-Mozilla-Status: XXXX" (4 hex digits): 0x0001 read,
  // 0x0002 replied, 0x0004 marked, 0x0008 deleted (not yet compacted away). Its exports came in
  // unread, and its deleted messages as live mail (helper-133). Only in its own files: the field
  // leaks into messages sent on and archived elsewhere, where 0009 made a list's message
  // \Deleted, for the next expunge (helper-137).
  if (auto mozilla = thunderbird ? HeaderField(message, "X-Mozilla-Status") : std::nullopt) {
    std::string_view hex = *mozilla;
    while (!hex.empty() && (hex.back() == ' ' || hex.back() == '\t')) hex.remove_suffix(1);
    unsigned bits = 0;
    const auto [end, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), bits, 16);
    if (ec == std::errc() && end == hex.data() + hex.size() && hex.size() == 4) {
      if (bits & 0x0001) flags |= store::kSeen;
      if (bits & 0x0002) flags |= store::kAnswered;
      if (bits & 0x0004) flags |= store::kFlagged;
      if (bits & 0x0008) flags |= store::kDeleted;
    }
  }
  return flags;
}

}  // namespace storemove::interop
