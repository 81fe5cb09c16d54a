#include "interop/keyword_bits.h"

#include <algorithm>

#include "store/index.h"

namespace storemove::interop {

namespace {
constexpr size_t kUserFlags = 64;  // bits of MessageMeta::user_flags
}  // namespace

std::optional<size_t> KeywordBits::Bit(std::string_view name) {
  // Not an IMAP keyword: a restore leaves such a name out (stream-format.md), and until
  // 2026-12-06 refused the whole folder for it (helper-93).
  if (!store::IsUserFlagName(name)) return std::nullopt;
  if (const std::optional<size_t> bit = store::FindUserFlagName(names_, name)) return bit;
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
