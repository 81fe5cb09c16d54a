// `storemove restore -t`: the table of contents of a stream, one line per record as it is read
// (constant memory whatever the stream's size). Times are ISO 8601 UTC. As text for people, or
// with --json as JSON Lines: one object per line with a "type" (stream, user, mailbox, message).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "format/format.h"

namespace storemove::stream {

// Unix seconds as "2024-07-01T10:00:00Z"; "-" (text) for 0, which the format uses for unknown.
std::string IsoUtc(int64_t unix_seconds);

class TocWriter {
 public:
  TocWriter(std::ostream& out, bool json) : out_(out), json_(json) {}
  void Header(const format::StreamHeader& h);
  void User(const std::string& user, const format::UserRecord& r);  // user: after -m mapping
  void Folder(const std::string& mailbox, const format::FolderRecord& r);
  // kind: "message", "link", "meta" or "held"; a link names its content id, the others a digest.
  void Message(const char* kind, const format::MessageRecord& r);

 private:
  std::ostream& out_;
  bool json_;
  std::vector<std::string> keywords_;  // the current folder's user flag names (a message's bits index them)
  bool dated_ = false;                 // backup -d: a folder's counts are the source's, not the stream's
};

}  // namespace storemove::stream
