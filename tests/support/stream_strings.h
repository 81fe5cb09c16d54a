// Streams built and restored in memory, for restore's tests of single records and chains.
#pragma once

#include <string>

#include "format/format.h"
#include "stream/stream.h"
#include "util/digest.h"

namespace storemove::testing {

// A message record with `body` (its size and digest set from it), written with its body.
inline void WriteMessageWithBody(format::Encoder& enc, format::MessageRecord r, const std::string& body) {
  r.size = body.size();
  r.digest = DigestOf(body);
  enc.BeginMessage(r);
  enc.BodyChunk(body);
  enc.EndMessage();
}

// A backup of `s` into memory, uncompressed.
inline std::string BackupString(store::Store& s, const stream::BackupOptions& options = {}) {
  format::StringSink sink;
  format::Encoder enc(sink);
  stream::Backup(s, options, enc);
  return sink.Take();
}

inline stream::SessionReport RestoreString(store::Store& s, const std::string& bytes,
                                           stream::RestoreOptions options = {}) {
  format::StringSource in(bytes);
  format::Decoder dec(in);
  return stream::Restore(&s, dec, options, nullptr);
}

}  // namespace storemove::testing
