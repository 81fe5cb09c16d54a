// Counts in the lines people read: "1 message", "2 messages" (JSON keeps the plain numbers).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace storemove {

// `n` and the noun, with an 's' unless n is 1 (or `plural` when given: "mailboxes").
inline std::string Counted(uint64_t n, std::string_view noun, std::string_view plural = {}) {
  if (n != 1 && !plural.empty()) return std::to_string(n) + " " + std::string(plural);
  std::string out = std::to_string(n) + " " + std::string(noun);
  if (n != 1) out.push_back('s');
  return out;
}

}  // namespace storemove
