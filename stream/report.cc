#include <nlohmann/json.hpp>

#include <cstdio>

#include "stream/stream.h"
#include "util/local_time.h"
#include "util/plural.h"
#include "util/version.h"

namespace storemove::stream {

std::string SessionReport::Summary(const std::string& verb) const {
  char buf[512];
  double rate = seconds > 0 ? double(message_bytes) / seconds : 0;
  std::snprintf(buf, sizeof buf, "%s: %s, %s, %s + %s (%s), %s body, %s stream, %.2f s (%s/s)", verb.c_str(),
                Counted(users, "user").c_str(), Counted(folders, "folder").c_str(), Counted(messages, "message").c_str(),
                Counted(links, "link").c_str(), HumanBytes(double(message_bytes)).c_str(),
                HumanBytes(double(body_bytes)).c_str(), HumanBytes(double(stream_bytes)).c_str(), seconds,
                HumanBytes(rate).c_str());
  std::string out = buf;
  if (selected_folders) out += ", " + Counted(selected_folders, "mailbox", "mailboxes") + " of them selected by name";
  if (skipped || linked) out += ", " + std::to_string(skipped) + " already present, " + std::to_string(linked) + " hard-linked";
  if (flags_updated) out += ", " + Counted(flags_updated, "message") + " with flags updated";
  if (repaired) out += ", " + Counted(repaired, "lost file") + " repaired";
  if (held) out += ", " + std::to_string(held) + " held (the receiver had the bytes)";
  if (metas) out += ", " + Counted(metas, "unchanged message") + " (meta records)";
  if (expunged) out += ", " + std::to_string(expunged) + " expunged";
  if (!unsettled.empty()) out += ", " + Counted(unsettled.size(), "mailbox", "mailboxes") + " unsettled";
  if (errors) out += ", " + std::to_string(errors) + " ERRORS";
  // In the form -d takes, local time: restore -t shows the start in UTC, which read as -d on a
  // host west of it pointed hours past the start, and the mail between was in no backup.
  // A backup that left messages out is no link of a chain: the next one from its start would
  // miss them for good (helper-98).
  if (started && !left_messages_out) out += "; started " + CompactLocalTime(started) + " (the next dated backup's -d)";
  if (started && left_messages_out) out += "; left messages out: run the backup again before chaining a dated one from it";
  return out;
}

std::string SessionReport::Json(const std::string& verb) const {
  nlohmann::json j = {{"operation", verb},       {"users", users},
                      {"folders", folders},      {"messages", messages},
                      {"links", links},          {"message_bytes", message_bytes},
                      {"body_bytes", body_bytes}, {"stream_bytes", stream_bytes},
                      {"already_present", skipped}, {"hard_linked", linked}, {"held", held},
                      {"repaired", repaired},    {"metas", metas},
                      {"expunged", expunged},    {"unsettled", unsettled},
                      {"selected_folders", selected_folders}, {"flags_updated", flags_updated},
                      {"errors", errors},        {"error_lines", error_lines}, {"notes", notes},
                      {"seconds", seconds},
                      {"storemove_version", Version()}};
  if (started) {
    j["started"] = started;
    j["next_backup_since"] = left_messages_out ? "" : CompactLocalTime(started);
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace storemove::stream
