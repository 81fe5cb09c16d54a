// Dovecot's subscriptions file (`subscriptions` in a Maildir++ root, `.subscriptions` in an mbox
// tree), split into its name lines; each caller reads a name by its own layout's rules.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace storemove::interop {

// A subscriptions file over this is refused, not read: a binary or foreign file in a user's
// home is no list of folders, and reading it whole would let it take the memory.
constexpr size_t kMaxSubscriptionsFile = 16 << 20;
// As many as a backup stream carries for a user (format::kMaxSubscriptions).
constexpr size_t kMaxSubscriptions = size_t{1} << 16;

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

// A file's text checked before its lines are read: NUL bytes refuse it (kCorrupt, naming
// `shown`): a binary file made thousands of warnings and subscribed its printable runs (helper-156).
void CheckSubscriptionsText(std::string_view text, const std::string& shown);

// Warnings for lines that name no folder: the first 20, then one line that counts the rest,
// so a foreign file cannot bury the run's report.
class LineWarnings {
 public:
  LineWarnings(std::string shown, std::vector<std::string>* warnings) : shown_(std::move(shown)), warnings_(warnings) {}
  void Add(std::string warning);
  void Finish();  // the count of those left unsaid, if any

 private:
  static constexpr size_t kShown = 20;
  std::string shown_;
  std::vector<std::string>* warnings_;
  size_t count_ = 0;
};

}  // namespace storemove::interop
