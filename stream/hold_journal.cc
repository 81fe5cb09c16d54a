#include "stream/hold_journal.h"

#include "stream/journal_file.h"
#include "util/error.h"
#include "util/printable.h"

namespace storemove::stream {

std::string FormatHoldJournal(const HoldJournal& journal) {
  std::string text = std::string(kHoldJournalMagic) + "\ngroup " + journal.group + "\nto " + journal.to + "\n";
  for (const auto& [user, before] : journal.before) text += user + "\t" + before.ToString() + "\n";
  return text;
}

HoldJournal ParseHoldJournal(std::string_view text, const std::string& path) {
  const std::vector<std::string_view> lines = JournalLines(text, path, "storemove migrate journal", {kHoldJournalMagic});
  HoldJournal journal;
  auto header = [&](size_t i, std::string_view key, std::string* value) {
    const size_t lineno = i + 2;
    if (i >= lines.size() || !lines[i].starts_with(key) || lines[i].size() == key.size())
      ThrowJournalLine(path, lineno, "expected '" + std::string(key) + "...'" +
                                         (i < lines.size() ? ", not '" + ShownName(lines[i], 80) + "'" : ""));
    *value = std::string(lines[i].substr(key.size()));
  };
  header(0, "group ", &journal.group);
  header(1, "to ", &journal.to);
  for (size_t i = 2; i < lines.size(); ++i) {
    const size_t lineno = i + 2;
    const std::string_view line = lines[i];
    const size_t tab = line.find('\t');
    if (tab == std::string_view::npos)
      ThrowJournalLine(path, lineno, "expected USER<TAB>STATUS, not '" + ShownName(line, 80) + "'");
    const std::string_view user = line.substr(0, tab);
    CheckJournalUser(user, path, lineno);
    if (line.size() - tab - 1 > 300)  // moved:HOST is at most 260; Parse would show it all
      ThrowJournalLine(path, lineno, "invalid user status '" + ShownName(line.substr(tab + 1), 80) + "'");
    store::UserStatus before;
    try {
      before = store::UserStatus::Parse(line.substr(tab + 1));
    } catch (const Error& e) {
      ThrowJournalLine(path, lineno, e.what());
    }
    // moved:HOST is taken: a user moved by hand between the group's reading and its hold was
    // held with that status before, and goes back to it.
    if (!journal.before.emplace(user, before).second)
      ThrowJournalLine(path, lineno, "user " + std::string(user) + " is listed twice");
  }
  return journal;
}

}  // namespace storemove::stream
