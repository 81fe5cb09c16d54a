#include "stream/switch_record.h"

#include <algorithm>
#include <cctype>

#include "stream/journal_file.h"
#include "util/printable.h"

namespace storemove::stream {

std::string FormatSwitchRecord(const SwitchRecord& record) {
  std::string text = std::string(record.failed_run ? kFailedSwitchMagic : kSwitchMagic) + "\nto " + record.to + "\n";
  if (!record.store_id.empty()) text += "store " + record.store_id + "\n";
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
  size_t first_user = 1;
  // A user id has no space: "store " cannot begin one.
  if (lines.size() > 1 && lines[1].starts_with("store ")) {
    const std::string_view id = lines[1].substr(6);
    if (!IsRecordableStoreId(id)) ThrowJournalLine(path, 3, "invalid store id '" + ShownName(id, 80) + "'");
    record.store_id = std::string(id);
    first_user = 2;
  }
  for (size_t i = first_user; i < lines.size(); ++i) {
    CheckJournalUser(lines[i], path, i + 2);
    record.users.emplace_back(lines[i]);
  }
  return record;
}

bool IsRecordableStoreId(std::string_view id) {
  return !id.empty() && id.size() <= 64 &&
         std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); });
}

bool SwitchRecordNames(const SwitchRecord& record, const std::string& to, const std::string& store_id) {
  // A server that gives no id (or another) is not the store the record names, whatever its
  // address: a store without config/store-id served there since (helper-152).
  if (!record.store_id.empty()) return record.store_id == store_id;
  return record.to == to;
}

}  // namespace storemove::stream
