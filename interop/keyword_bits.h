// A folder's user-flag names while messages are added to it from outside (moveuser's IMAP
// keywords, an mbox's X-Keywords): the names the folder has, then each new keyword as it first
// appears, written to the folder before the first message that uses it is committed.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/store.h"

namespace storemove::interop {

class KeywordBits {
 public:
  explicit KeywordBits(std::vector<std::string> names) : names_(std::move(names)) {}

  // The user-flag bit of keyword `name`, a new name taking the next free bit; nullopt when the
  // store cannot keep it (not an IMAP keyword, longer than a user-flag name may be, or the
  // folder has its 64 already): the caller counts it as dropped.
  std::optional<size_t> Bit(std::string_view name);
  // Writes the names to the folder if a new one came (before a commit that uses it).
  void Save(store::Folder& folder);
  const std::vector<std::string>& names() const { return names_; }

 private:
  std::vector<std::string> names_;
  bool changed_ = false;
};

}  // namespace storemove::interop
