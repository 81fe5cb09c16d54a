#include <strings.h>

#include <cctype>

#include "store/store.h"
#include "util/error.h"
#include "util/printable.h"

namespace storemove::store {

namespace {
const char* const kFlagNames[7] = {"Recent", "Deleted", "Seen", "Answered", "Flagged", "Draft", "Archived"};

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}
}  // namespace

std::optional<size_t> FindUserFlagName(const std::vector<std::string>& names, std::string_view name) {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return i;
  for (size_t i = 0; i < names.size(); ++i)
    if (EqualsIgnoreCase(names[i], name)) return i;
  return std::nullopt;
}

std::string FlagBits(uint8_t flags) {
  std::string out(7, '0');
  for (int i = 0; i < 7; ++i)
    if (flags & (1 << i)) out[i] = '1';
  return out;
}

std::string FlagNames(uint8_t flags) {
  std::string out;
  for (int i = 0; i < 7; ++i) {
    if (!(flags & (1 << i))) continue;
    if (!out.empty()) out += ',';
    out += kFlagNames[i];
  }
  return out;
}

uint8_t ParseFlagNames(std::string_view names) {
  uint8_t flags = 0;
  size_t pos = 0;
  while (pos < names.size()) {
    size_t end = names.find_first_of(", ", pos);
    if (end == std::string_view::npos) end = names.size();
    std::string_view word = names.substr(pos, end - pos);
    pos = end + 1;
    if (word.empty()) continue;
    if (word[0] == '\\') word.remove_prefix(1);
    int found = -1;
    for (int i = 0; i < 7; ++i)
      if (EqualsIgnoreCase(word, kFlagNames[i])) found = i;
    if (found < 0)
      Throw(Errc::kInvalidArgument, "unknown flag '" + std::string(word) +
                                        "' (known: Recent Deleted Seen Answered Flagged Draft Archived)");
    flags |= static_cast<uint8_t>(1 << found);
  }
  return flags;
}

std::string UserStatus::ToString() const {
  switch (state) {
    case UserState::kActive: return "active";
    case UserState::kHold: return "hold";
    case UserState::kMoved: return "moved:" + host;
  }
  return "active";
}

bool UserStatus::SameHost(std::string_view a, std::string_view b) {
  // A DNS name in any case, with or without its root's dot (mail2.example.com.): helper-105.
  if (a.size() > 1 && a.back() == '.') a.remove_suffix(1);
  if (b.size() > 1 && b.back() == '.') b.remove_suffix(1);
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

UserStatus UserStatus::Parse(std::string_view text) {
  if (text == "active") return {UserState::kActive, ""};
  if (text == "hold") return {UserState::kHold, ""};
  if (text.starts_with("moved:") && text.size() > 6 && text.size() <= 260) {
    std::string host(text.substr(6));
    for (unsigned char c : host)
      if (!(std::isalnum(c) || c == '.' || c == '-' || c == ':' || c == '_' || c == '[' || c == ']'))
        Throw(Errc::kInvalidArgument, "invalid host in status '" + EscapeControls(text) + "'");
    return {UserState::kMoved, host};
  }
  Throw(Errc::kInvalidArgument, "invalid user status '" + EscapeControls(text) + "' (active, hold or moved:HOST)");
}

}  // namespace storemove::store
