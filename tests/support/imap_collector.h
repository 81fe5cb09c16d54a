// An ImapFetchSink that keeps what a FETCH returned, for tests: each message's metadata (flags
// sorted, \Recent dropped, since it differs between sessions) and body, by UID.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>

#include "interop/imap_client.h"

namespace storemove::testing {

class ImapCollector : public interop::ImapFetchSink {
 public:
  void BodyBegin(uint64_t size) override {
    body_.clear();
    body_.reserve(size);
  }
  void BodyData(const char* data, size_t size) override { body_.append(data, size); }
  bool Message(const interop::ImapMessage& m, bool had_body) override {
    const bool listed_before = messages.count(m.uid) != 0;
    interop::ImapMessage copy = m;
    std::erase(copy.flags, "\\Recent");
    std::sort(copy.flags.begin(), copy.flags.end());
    messages[m.uid] = copy;
    if (had_body) bodies[m.uid] = std::move(body_);
    body_.clear();
    return had_body || !listed_before;
  }
  std::map<uint32_t, interop::ImapMessage> messages;
  std::map<uint32_t, std::string> bodies;

 private:
  std::string body_;
};

}  // namespace storemove::testing
