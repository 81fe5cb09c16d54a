// Conversions between the store's per-message fields and the stream's (internal to stream/).
#pragma once

#include "format/format.h"
#include "store/store.h"

namespace storemove::stream {

inline format::MessageRecord ToRecord(const store::MessageMeta& m) {
  format::MessageRecord r;
  r.uid = m.uid;
  r.flags = m.flags;
  r.user_flags = m.user_flags;
  r.internal_date = m.internal_date;
  r.sent_date = m.sent_date;
  r.save_time = m.save_time;
  r.size = m.size;
  r.header_size = m.header_size;
  r.digest = m.digest;
  return r;
}

inline store::MessageMeta ToMeta(const format::MessageRecord& r) {
  store::MessageMeta m;
  m.uid = r.uid;
  m.flags = r.flags;
  m.user_flags = r.user_flags;
  m.internal_date = r.internal_date;
  m.sent_date = r.sent_date;
  m.save_time = r.save_time;
  m.size = r.size;
  m.header_size = r.header_size;
  m.digest = r.digest;
  return m;
}

inline format::FolderSummaryField ToField(const store::FolderSummary& s) {
  format::FolderSummaryField f;
  f.count = s.count;
  f.uidvalidity = s.uidvalidity;
  f.uidnext = s.uidnext;
  f.bytes = s.bytes;
  f.digest = s.digest;
  return f;
}

}  // namespace storemove::stream
