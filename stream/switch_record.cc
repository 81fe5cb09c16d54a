#include "stream/switch_record.h"

#include "stream/journal_file.h"
#include "util/printable.h"

namespace storemove::stream {

std::string FormatSwitchRecord(const SwitchRecord& record) {
  std::string text = std::string(record.failed_run ? kFailedSwitchMagic : kSwitchMagic) + "\nto " + record.to + "\n";
  for (const std::string& user : record.users) text += user + "\n";
  return text;
}

SwitchRecord ParseSwitchRecord(std::string_view text, const std::string& path) {
  const std::vector<std::string_view> lines =
      JournalLines(text, path, "storemove migrate switch record", {kSwitchMagic, kFailedSwitchMagic});
  SwitchRecord record;
  record.failed_run = text.starts_with(std::string(kFailedSwitchMagic) + "\n");
  if (lines.empty() || !lines[0].starts_with("to ") || lines[0].size() == 3)
    ThrowJournalLine(path, 2, "expected 'to HOST:PORT'" + (lines.empty() ? "" : ", not '" + ShownName(lines[0], 80) + "'"));
  record.to = std::string(lines[0].substr(3));
  for (size_t i = 1; i < lines.size(); ++i) {
    CheckJournalUser(lines[i], path, i + 2);
    record.users.emplace_back(lines[i]);
  }
  return record;
}

}  // namespace storemove::stream
