// A migrate members file (STORE/migrate-journal/GROUP.members, stream/members_file.h): another
// running migrate's claim on its group's users, read by every migrate that starts on the store
// (ReadJournalFile, ParseMembersFile) to refuse users claimed already.
// Invariants: only storemove::Error escapes, with one line naming the file; every line after the
// first of a file accepted is a valid user id among the users read (none skipped), and the users
// write back (FormatMembersFile) as a file that reads the same.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "store/store.h"
#include "stream/journal_file.h"
#include "stream/members_file.h"
#include "tests/fuzz/fuzz_support.h"
#include "util/fs.h"

namespace st = storemove::stream;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return -1;
  const std::string path = storemove::fuzz::ScratchDir() + "/g1.members";
  {
    storemove::UniqueFd fd(storemove::OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    storemove::WriteAll(fd.get(), data, size, path);
  }
  std::set<std::string> users;
  bool ok = storemove::fuzz::OnlyStoremoveErrorsNaming(
      "members", path, [&] { users = st::ParseMembersFile(st::ReadJournalFile(path), path); });
  ::unlink(path.c_str());
  if (!ok) return 0;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  FUZZ_CHECK(text.starts_with(std::string(st::kMembersMagic) + "\n") && text.back() == '\n');
  size_t lines = 0;
  for (size_t pos = text.find('\n') + 1; pos < text.size(); ++lines) {
    size_t eol = text.find('\n', pos);
    FUZZ_CHECK(users.count(std::string(text.substr(pos, eol - pos))) == 1);
    pos = eol + 1;
  }
  FUZZ_CHECK(users.size() <= lines);
  for (const std::string& user : users)
    FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("members: user", [&] { storemove::store::ValidateUserId(user); }));
  std::set<std::string> again;
  FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors(
      "members: written back", [&] { again = st::ParseMembersFile(st::FormatMembersFile(users), path); }));
  FUZZ_CHECK(again == users);
  return 0;
}
