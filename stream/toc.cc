#include "stream/toc.h"

#include <ctime>
#include <nlohmann/json.hpp>

#include "store/store.h"

#include "util/iso_time.h"
#include "util/printable.h"

namespace storemove::stream {

namespace {

nlohmann::json Time(int64_t t) { return t == 0 ? nlohmann::json(nullptr) : nlohmann::json(IsoUtc(t)); }

void Line(std::ostream& out, const nlohmann::json& j) {
  out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

}  // namespace

std::string IsoUtc(int64_t unix_seconds) { return unix_seconds == 0 ? "-" : IsoUtcTime(unix_seconds); }

void TocWriter::Header(const format::StreamHeader& h) {
  const char* kind = h.kind == format::StreamKind::kManifest ? "manifest"
                     : h.kind == format::StreamKind::kSession ? "session"
                                                               : "full";
  dated_ = h.since != 0;
  if (json_) {
    Line(out_, {{"type", "stream"},
                {"version", std::to_string(h.version_major) + "." + std::to_string(h.version_minor)},
                {"kind", kind},
                {"source_host", h.source_host},
                {"store_id", h.store_id},
                {"created", Time(h.created)},
                {"since", Time(h.since)},
                {"selection", h.selection}});
    return;
  }
  // The host and store id are whatever the stream's writer put there (security review #04).
  out_ << "stream " << h.version_major << "." << h.version_minor
       << (h.kind == format::StreamKind::kManifest ? " manifest" : "") << " from " << EscapeControls(h.source_host)
       << " store " << EscapeControls(h.store_id) << " created " << IsoUtc(h.created);
  if (h.since) out_ << " since " << IsoUtc(h.since);
  out_ << "\n";
}

void TocWriter::User(const std::string& user, const format::UserRecord& r) {
  if (json_) {
    Line(out_, {{"type", "user"},
                {"user", user},
                {"status", r.status},
                {"partition", r.partition},
                {"quota_limit", r.quota_limit},
                {"quota_used", r.quota_used},
                {"created", Time(r.created)},
                {"subscriptions", r.subscriptions}});
    return;
  }
  // Text lines show the stream's names with control characters escaped (JSON escapes its own).
  out_ << "user " << EscapeControls(user) << " " << EscapeControls(r.status) << " partition "
       << EscapeControls(r.partition) << " quota " << r.quota_limit
       << " subscriptions " << r.subscriptions.size() << " created " << IsoUtc(r.created) << "\n";
}

void TocWriter::Folder(const std::string& mailbox, const format::FolderRecord& r) {
  keywords_ = r.user_flag_names;
  const std::string change = r.unchanged()      ? "unchanged"
                             : r.since_modseq ? "changed since modseq " + std::to_string(r.since_modseq)
                                              : "";
  if (json_) {
    Line(out_, {{"type", "mailbox"},
                {"mailbox", mailbox},
                {"uidvalidity", r.uidvalidity},
                {"uidnext", r.uidnext},
                {"messages", r.count},
                {"bytes", r.bytes},
                {"created", Time(r.created)},
                {"last_append", Time(r.last_append)},
                {"unchanged", r.unchanged()},
                {"since_modseq", r.since_modseq}});
    return;
  }
  out_ << "mailbox " << EscapeControls(mailbox) << " uidvalidity " << r.uidvalidity << " uidnext " << r.uidnext << " messages "
       << r.count << " bytes " << r.bytes << " created " << IsoUtc(r.created) << " last append "
       << IsoUtc(r.last_append) << (change.empty() ? "" : " " + change)
       // A dated stream holds only the messages stored since its date: these counts were read
       // as the stream's (helper-81).
       << (dated_ ? " (counts of the whole folder at the source; the stream holds its messages since the date)" : "")
       << "\n";
}

void TocWriter::Message(const char* kind, const format::MessageRecord& r) {
  const bool link = std::string_view(kind) == "link";
  // System flags by name, then the keywords, as IMAP shows them: "Seen,Flagged,$Label1" ("-": none).
  std::vector<std::string> flags;
  for (int i = 0; i < 7; ++i)
    if (r.flags & (1u << i)) flags.push_back(store::FlagNames(uint8_t(1u << i)));
  for (size_t i = 0; i < keywords_.size() && i < 64; ++i)
    if (r.user_flags & (uint64_t(1) << i)) flags.push_back(keywords_[i]);
  if (json_) {
    nlohmann::json j = {{"type", kind},
                        {"uid", r.uid},
                        {"size", r.size},
                        {"flags", flags},
                        {"internal_date", Time(r.internal_date)},
                        {"sent_date", Time(r.sent_date)},
                        {"saved", Time(r.save_time)}};
    if (link) j["content_id"] = r.content_id;
    else j["digest"] = r.digest.Hex();
    Line(out_, j);
    return;
  }
  std::string shown;
  for (const std::string& f : flags) shown += (shown.empty() ? "" : ",") + f;
  out_ << "  " << r.uid << " " << r.size << " " << (shown.empty() ? "-" : EscapeControls(shown));
  if (std::string_view(kind) != "message") out_ << " " << kind;
  if (link) out_ << " " << r.content_id;
  else out_ << " " << r.digest.Hex();
  out_ << " " << IsoUtc(r.internal_date) << "\n";
}

}  // namespace storemove::stream
