// store::Summarize: a folder's summary from its snapshot alone (docs/store-format.md §4.6).
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/bytes.h"

namespace storemove::store {

FolderSummary Summarize(const FolderSnapshot& snapshot) {
  // User flags by name: each distinct name with the bits that carry it (a name could sit on two
  // bits of a damaged index), in byte order.
  const std::vector<std::string>& names = snapshot.info.user_flag_names;
  // A name that is no IMAP keyword (written by an import before 2026-12-06), and a bit without a
  // name (a damaged index, another tool's), are not summarized: a restore leaves them out, so a
  // migrate's destination never matched (helper-94, helper-151).
  std::map<std::string, uint64_t> by_name;
  uint64_t kept = 0;
  for (size_t bit = 0; bit < names.size() && bit < 64; ++bit)
    if (IsUserFlagName(names[bit])) {
      by_name[names[bit]] |= uint64_t{1} << bit;
      kept |= uint64_t{1} << bit;
    }
  const std::vector<std::pair<std::string, uint64_t>> order(by_name.begin(), by_name.end());

  FolderSummary s;
  s.count = static_cast<uint32_t>(snapshot.messages.size());
  s.uidvalidity = snapshot.info.uidvalidity;
  s.uidnext = snapshot.info.uidnext;
  Hasher hasher;
  std::string buf;
  buf.reserve(1 << 16);
  auto add = [&](const MessageMeta& m) {
    s.bytes += m.size;
    AppendU32(&buf, m.uid);
    AppendU8(&buf, m.flags & static_cast<uint8_t>(kAllSystemFlags & ~kRecent));
    std::string flags;
    uint8_t n = 0;
    if ((m.user_flags & kept) != 0)
      for (const auto& [name, mask] : order)
        if (m.user_flags & mask) {
          ++n;
          AppendU8(&flags, static_cast<uint8_t>(name.size()));
          flags += name;
        }
    AppendU8(&buf, n);
    buf += flags;
    AppendU64(&buf, m.size);
    buf.append(reinterpret_cast<const char*>(m.digest.bytes.data()), m.digest.bytes.size());
    if (buf.size() >= (1 << 16) - 512) {
      hasher.Update(buf.data(), buf.size());
      buf.clear();
    }
  };
  // Snapshot() sorts already (and a spooled list is always sorted); a hand-made one may not be.
  const MessageList& list = snapshot.messages;
  const auto by_uid = [](const MessageMeta& a, const MessageMeta& b) { return a.uid < b.uid; };
  if (list.spooled() || std::is_sorted(list.begin(), list.end(), by_uid)) {
    for (const MessageMeta& m : list) add(m);
  } else {
    std::vector<MessageMeta> sorted(list.begin(), list.end());
    std::sort(sorted.begin(), sorted.end(), by_uid);
    for (const MessageMeta& m : sorted) add(m);
  }
  hasher.Update(buf.data(), buf.size());
  s.digest = hasher.Final();
  return s;
}

}  // namespace storemove::store
