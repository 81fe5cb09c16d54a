// Dovecot's subscriptions file (`subscriptions` in a Maildir++ root, `.subscriptions` in an mbox
// tree), split into its name lines; each caller reads a name by its own layout's rules.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace storemove::interop {

struct SubscriptionLines {
  int version = 1;                     // 2: "V<TAB>2", an empty line, then the names
  std::vector<std::string_view> lines;  // every line of the file, a CR before its LF taken off
  size_t first = 0;                    // the index in `lines` of the first name line
};

// `text` split into lines. A first line "V<TAB>..." is a version header: "V<TAB>2" followed by an
// empty line is version 2; any other is a version this reader does not know, a warning naming
// `shown` and nullopt (another version's lines are not ours to guess at). `versioned` false (a
// Courier file) reads every line as a name.
std::optional<SubscriptionLines> SplitSubscriptions(std::string_view text, const std::string& shown, bool versioned,
                                                    std::vector<std::string>* warnings);

}  // namespace storemove::interop
