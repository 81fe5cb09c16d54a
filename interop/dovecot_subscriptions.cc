// Dovecot's subscriptions file split into name lines; the rules are in interop/dovecot_subscriptions.h.
#include "interop/dovecot_subscriptions.h"

#include "util/error.h"
#include "util/printable.h"

namespace storemove::interop {

std::optional<SubscriptionLines> SplitSubscriptions(std::string_view text, const std::string& shown, bool versioned,
                                                    std::vector<std::string>* warnings) {
  SubscriptionLines out;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    if (line.ends_with('\r')) line.remove_suffix(1);  // a file edited on Windows: CR is in no folder name
    out.lines.push_back(line);
    pos = eol + 1;
  }
  if (versioned && !out.lines.empty() && out.lines[0].starts_with("V\t")) {
    if (out.lines[0] != "V\t2" || out.lines.size() < 2 || !out.lines[1].empty()) {
      warnings->push_back(shown + ": a version header this import does not know ('" +
                          EscapeControls(out.lines[0].substr(0, 16)) + "'); no subscription read");
      return std::nullopt;
    }
    out.version = 2;
    out.first = 2;
  }
  return out;
}

void CheckSubscriptionsText(std::string_view text, const std::string& shown) {
  if (text.find('\0') != std::string_view::npos)
    Throw(Errc::kCorrupt, shown + ": holds NUL bytes, not a subscriptions file");
}

void LineWarnings::Add(std::string warning) {
  if (++count_ <= kShown) warnings_->push_back(std::move(warning));
}

void LineWarnings::Finish() {
  if (count_ > kShown)
    warnings_->push_back(shown_ + ": " + std::to_string(count_ - kShown) + " more lines that name no folder; not subscribed");
}

}  // namespace storemove::interop
