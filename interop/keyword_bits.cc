#include "interop/keyword_bits.h"

#include <algorithm>

#include "store/index.h"

namespace storemove::interop {

namespace {
constexpr size_t kUserFlags = 64;  // bits of MessageMeta::user_flags
}  // namespace

bool IsImapKeyword(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name) {
    if (c <= 0x20 || c >= 0x7f) return false;
    if (std::string_view("(){%*\"\\]").find(static_cast<char>(c)) != std::string_view::npos) return false;
  }
  return true;
}

std::optional<size_t> KeywordBits::Bit(std::string_view name) {
  if (name.empty() || name.size() > store::index::kMaxUserFlagName || name.find('\0') != std::string_view::npos)
    return std::nullopt;
  const auto it = std::find(names_.begin(), names_.end(), name);
  if (it != names_.end()) return static_cast<size_t>(it - names_.begin());
  if (names_.size() == kUserFlags) return std::nullopt;
  names_.emplace_back(name);
  changed_ = true;
  return names_.size() - 1;
}

void KeywordBits::Save(store::Folder& folder) {
  if (!changed_) return;
  folder.SetUserFlagNames(names_);
  changed_ = false;
}

}  // namespace storemove::interop
