// The mboxlist's record values (store/mboxlist.h; docs/store-format.md §3): user.db, quota.db
// and folder.db values as a damaged or hand-edited database holds them, and the names and
// statuses stored there. The input's first byte picks the decoder, the rest is the value:
// 0 DecodeUser, 1 DecodeFolder, 2 DecodeQuota, 3 ParseAcl, 4 UserStatus::Parse, 5 mailbox names.
// Invariants: only storemove::Error escapes, with a one-line message; a value that decodes,
// encoded again, decodes to the same value; an ACL, status or mailbox name that parses parses
// the same from its own canonical text.
#include <string>

#include "store/mboxlist.h"
#include "store/names.h"
#include "store/store.h"
#include "tests/fuzz/fuzz_support.h"

namespace ss = storemove::store;

namespace {

bool SameUser(const ss::UserValue& a, const ss::UserValue& b) {
  // A truncation mark without renames has no byte of its own (EncodeUser writes the renames
  // count only with renames or flags): compared only where it is kept.
  const bool marks = !a.renames.empty() || a.status.untouched_copy || a.status.held_by_pull;
  return a.status == b.status && a.partition == b.partition && a.created == b.created && a.renames == b.renames &&
         (!marks || a.renames_truncated == b.renames_truncated);
}

bool SameFolder(const ss::FolderValue& a, const ss::FolderValue& b) {
  // Coverage without a store id is none (FolderCoverage::empty), and is not encoded.
  return a.uidvalidity == b.uidvalidity && a.created == b.created && a.partition == b.partition && a.acl == b.acl &&
         a.origin == b.origin && a.coverage.empty() == b.coverage.empty() && (a.coverage.empty() || a.coverage == b.coverage);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (size > (64 << 10)) return -1;
  std::string_view v(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 6) {
    case 0: {
      ss::UserValue u;
      if (!storemove::fuzz::OnlyStoremoveErrors("mboxlist: user", [&] { u = ss::DecodeUser(v, "joe"); })) break;
      FUZZ_CHECK(u.renames.size() <= 0x7f);
      ss::UserValue again;
      FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("mboxlist: user again",
                                                      [&] { again = ss::DecodeUser(ss::EncodeUser(u), "joe"); }));
      FUZZ_CHECK(SameUser(u, again));
      FUZZ_CHECK(!u.status.untouched_copy || u.status.state == ss::UserState::kHold);
      break;
    }
    case 1: {
      ss::FolderValue f;
      if (!storemove::fuzz::OnlyStoremoveErrors("mboxlist: folder", [&] { f = ss::DecodeFolder(v, "user/joe/INBOX"); }))
        break;
      ss::FolderValue again;
      FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors(
          "mboxlist: folder again", [&] { again = ss::DecodeFolder(ss::EncodeFolder(f), "user/joe/INBOX"); }));
      FUZZ_CHECK(SameFolder(f, again));
      // The ACL of a damaged record is checked as any ACL is (the message names it on one line).
      storemove::fuzz::OnlyStoremoveErrors("mboxlist: folder acl", [&] { ss::ParseAcl(f.acl); });
      break;
    }
    case 2: {
      std::pair<uint64_t, uint64_t> q;
      if (!storemove::fuzz::OnlyStoremoveErrors("mboxlist: quota", [&] { q = ss::DecodeQuota(v, "joe"); })) break;
      FUZZ_CHECK(ss::DecodeQuota(ss::EncodeQuota(q.first, q.second), "joe") == q);
      break;
    }
    case 3: {
      std::vector<std::pair<std::string, std::string>> acl;
      if (!storemove::fuzz::OnlyStoremoveErrors("mboxlist: acl", [&] { acl = ss::ParseAcl(v); })) break;
      std::string text;
      for (const auto& [id, rights] : acl) text += (text.empty() ? "" : " ") + id + " " + rights;
      std::vector<std::pair<std::string, std::string>> again;
      FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("mboxlist: acl again", [&] { again = ss::ParseAcl(text); }));
      FUZZ_CHECK(again == acl);
      break;
    }
    case 4: {
      ss::UserStatus s;
      if (!storemove::fuzz::OnlyStoremoveErrors("mboxlist: status", [&] { s = ss::UserStatus::Parse(v); })) break;
      FUZZ_CHECK(s.ToString() == v);
      FUZZ_CHECK(ss::UserStatus::Parse(s.ToString()) == s);
      break;
    }
    case 5: {
      std::pair<std::string, std::string> name;
      if (!storemove::fuzz::OnlyStoremoveErrors("mboxlist: mailbox", [&] { name = ss::ParseMailboxName(v); })) break;
      storemove::fuzz::OnlyStoremoveErrors("mboxlist: stored mailbox", [&] {
        FUZZ_CHECK(ss::ParseStoredMailboxName(v) == name);
      });
      const std::string normal = ss::NormalizeFolder(name.second);
      FUZZ_CHECK(ss::NormalizeFolder(normal) == normal);
      std::pair<std::string, std::string> again;
      FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors(
          "mboxlist: mailbox again", [&] { again = ss::ParseMailboxName("user/" + name.first + "/" + name.second); }));
      FUZZ_CHECK(again == name);
      break;
    }
  }
  return 0;
}
