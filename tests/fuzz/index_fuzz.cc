// store.idx parsing (store/index.h) of hostile files. Invariants: only storemove::Error escapes;
// what Read() accepts has `count` records and at most 255 user-flag names, no record modseq above
// the header's HIGHESTMODSEQ (both 0 in a format 1.0 file); reading without
// records gives the same header and names; and when WriteNew() accepts the contents (it is
// stricter about names), writing and reading them back returns the same contents.
#include <fcntl.h>
#include <unistd.h>

#include "store/index.h"
#include "tests/fuzz/fuzz_support.h"
#include "util/fs.h"

namespace idx = storemove::store::index;

namespace {

bool SameHeader(const idx::Header& a, const idx::Header& b) {
  return a.major == b.major && a.minor == b.minor && a.uidvalidity == b.uidvalidity && a.uidnext == b.uidnext &&
         a.count == b.count && a.bytes == b.bytes && a.last_append == b.last_append && a.created == b.created &&
         a.flags == b.flags && a.highest_modseq == b.highest_modseq;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  storemove::UniqueFd fd(storemove::fuzz::MemFile(data, size));
  idx::Contents contents, header_only;
  bool ok = storemove::fuzz::OnlyStoremoveErrors("store.idx", [&] { contents = idx::Read(fd.get(), "fuzz/store.idx"); });
  bool header_ok = storemove::fuzz::OnlyStoremoveErrors(
      "store.idx", [&] { header_only = idx::Read(fd.get(), "fuzz/store.idx", /*with_records=*/false); });
  if (ok) FUZZ_CHECK(header_ok);  // records only add checks
  if (!ok) return 0;
  FUZZ_CHECK(contents.records.size() == contents.header.count);
  FUZZ_CHECK(contents.user_flag_names.size() <= 255);
  FUZZ_CHECK(SameHeader(contents.header, header_only.header));
  FUZZ_CHECK(contents.user_flag_names == header_only.user_flag_names);
  for (const storemove::store::MessageMeta& m : contents.records) {
    FUZZ_CHECK(m.uid != 0 && m.header_size <= m.size);
    // No record above HIGHESTMODSEQ, and a 1.0 file has no modseqs at all (§4.5).
    FUZZ_CHECK(m.modseq <= contents.header.highest_modseq);
    FUZZ_CHECK(contents.header.minor != 0 || m.modseq == 0);
  }
  FUZZ_CHECK(contents.header.minor != 0 || contents.header.highest_modseq == 0);

  const std::string path = storemove::fuzz::ScratchDir() + "/store.idx";
  bool written = storemove::fuzz::OnlyStoremoveErrors("store.idx write", [&] { idx::WriteNew(path, contents, false); });
  if (written) {
    storemove::UniqueFd again(storemove::OpenFile(path, O_RDONLY));
    idx::Contents reread;
    FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("store.idx reread", [&] { reread = idx::Read(again.get(), path); }));
    FUZZ_CHECK(SameHeader(contents.header, reread.header));
    FUZZ_CHECK(contents.user_flag_names == reread.user_flag_names);
    FUZZ_CHECK(contents.records == reread.records);
    ::unlink(path.c_str());
  }
  return 0;
}
