// A migrate switch record (STORE/migrate-journal/GROUP.switch, stream/switch_record.h), as a
// switch cut off in its middle, a damaged disk or a hand edit may leave it: the next attempt or
// run of the group reads it (ReadJournalFile, ParseSwitchRecord) to adopt the copies it names.
// Invariants: only storemove::Error escapes, with one line naming the file; a record accepted
// has one of the two magic lines, a to line, maybe a store line with a store id, and one valid
// user per further line (none skipped),
// and writes back (FormatSwitchRecord) as the same bytes.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "store/store.h"
#include "stream/journal_file.h"
#include "stream/switch_record.h"
#include "tests/fuzz/fuzz_support.h"
#include "util/fs.h"

namespace st = storemove::stream;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return -1;
  const std::string path = storemove::fuzz::ScratchDir() + "/g1.switch";
  {
    storemove::UniqueFd fd(storemove::OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    storemove::WriteAll(fd.get(), data, size, path);
  }
  st::SwitchRecord record;
  bool ok = storemove::fuzz::OnlyStoremoveErrorsNaming(
      "switch", path, [&] { record = st::ParseSwitchRecord(st::ReadJournalFile(path), path); });
  ::unlink(path.c_str());
  if (!ok) return 0;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  const size_t lines = size_t(std::count(text.begin(), text.end(), '\n'));
  FUZZ_CHECK(lines >= 2 && text.back() == '\n');
  const size_t store_line = record.store_id.empty() ? 0 : 1;
  FUZZ_CHECK(record.users.size() == lines - 2 - store_line);  // no line skipped in silence
  FUZZ_CHECK(!record.to.empty());
  FUZZ_CHECK(record.store_id.empty() || st::IsRecordableStoreId(record.store_id));
  for (const std::string& user : record.users)
    FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("switch: user", [&] { storemove::store::ValidateUserId(user); }));
  FUZZ_CHECK(st::FormatSwitchRecord(record) == text);
  return 0;
}
