// backup-groups.conf (stream/stream.h ReadBackupGroups) and what uses it: matching users and
// building a backup selection. Invariants: only storemove::Error escapes; every group read has a
// name that is a valid partition-style name and a regular expression that compiles (so
// GroupMatches never silently matches nothing because of a bad expression).
#include <fcntl.h>
#include <regex.h>
#include <unistd.h>

#include "store/store.h"
#include "stream/stream.h"
#include "tests/fuzz/fuzz_support.h"
#include "util/fs.h"

namespace st = storemove::stream;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return -1;  // a configuration file; longer ones only slow regcomp down
  const std::string path = storemove::fuzz::ScratchDir() + "/backup-groups.conf";
  {
    storemove::UniqueFd fd(storemove::OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    storemove::WriteAll(fd.get(), data, size, path);
  }
  std::vector<st::BackupGroup> groups;
  bool ok = storemove::fuzz::OnlyStoremoveErrors("backup-groups", [&] { groups = st::ReadBackupGroups(path); });
  ::unlink(path.c_str());
  if (!ok) return 0;
  static const std::vector<std::string> users = {"joe", "a.b-c_d", "joe@example.com", "0", "Zz9"};
  std::vector<std::string> names = {"/", "/primary"};
  for (const st::BackupGroup& g : groups) {
    FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("group name", [&] { storemove::store::ValidatePartitionName(g.name); }));
    regex_t re;
    FUZZ_CHECK(regcomp(&re, ("^(" + g.regex + ")$").c_str(), REG_EXTENDED | REG_NOSUB) == 0);
    for (const std::string& u : users) {
      bool direct = regexec(&re, u.c_str(), 0, nullptr, 0) == 0;
      FUZZ_CHECK(st::GroupMatches(g, u) == (direct || g.name == "user"));
    }
    regfree(&re);
    names.push_back("/primary/" + g.name);
  }
  storemove::fuzz::OnlyStoremoveErrors("selection", [&] {
    st::Selection selection(names, groups);
    storemove::store::UserInfo info;
    info.partition = "primary";
    for (const std::string& u : users) {
      info.user = u;
      FUZZ_CHECK(selection.WantsUser(info));  // "/" is in the list: everyone is wanted
      FUZZ_CHECK(selection.WantsFolder(info, "INBOX"));
    }
  });
  return 0;
}
