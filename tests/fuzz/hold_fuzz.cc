// A migrate hold journal (STORE/migrate-journal/GROUP.hold, stream/hold_journal.h) as a killed
// run, a damaged disk or a hand edit may leave it: the next migrate and `migrate --abort` read it
// (ReadJournalFile, ParseHoldJournal) to give its users their status before the hold back.
// Invariants: only storemove::Error escapes, with one line naming the file; a journal accepted
// has a group and a to line and one valid user per further line (none skipped, none twice), and
// writes back (FormatHoldJournal) as a journal that reads the same.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "stream/hold_journal.h"
#include "stream/journal_file.h"
#include "tests/fuzz/fuzz_support.h"
#include "util/fs.h"

namespace st = storemove::stream;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return -1;
  const std::string path = storemove::fuzz::ScratchDir() + "/g1.hold";
  {
    storemove::UniqueFd fd(storemove::OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    storemove::WriteAll(fd.get(), data, size, path);
  }
  st::HoldJournal journal;
  bool ok = storemove::fuzz::OnlyStoremoveErrorsNaming(
      "hold", path, [&] { journal = st::ParseHoldJournal(st::ReadJournalFile(path), path); });
  ::unlink(path.c_str());
  if (!ok) return 0;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  const size_t lines = size_t(std::count(text.begin(), text.end(), '\n'));
  FUZZ_CHECK(lines >= 3 && text.back() == '\n');
  FUZZ_CHECK(journal.before.size() == lines - 3);  // no line skipped in silence
  FUZZ_CHECK(!journal.group.empty() && !journal.to.empty());
  FUZZ_CHECK(journal.group.find('\n') == std::string::npos && journal.to.find('\n') == std::string::npos);
  for (const auto& entry : journal.before) {
    FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("hold: user", [&] { storemove::store::ValidateUserId(entry.first); }));
  }
  st::HoldJournal again;
  FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors(
      "hold: written back", [&] { again = st::ParseHoldJournal(st::FormatHoldJournal(journal), path); }));
  FUZZ_CHECK(again.group == journal.group && again.to == journal.to && again.before.size() == journal.before.size());
  for (const auto& [user, before] : journal.before) FUZZ_CHECK(again.before.at(user).ToString() == before.ToString());
  return 0;
}
