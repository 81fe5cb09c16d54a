// The small files and texts an administrator (or a script, or whoever could write them) hands
// storemove: `import --list` files, users files, -m user maps, password files, store.conf, and
// the IMAP URLs, HOST:PORT endpoints, --deadline and --status texts. The input's first byte picks
// the reader, the rest is the file or text:
// 0 interop::ReadImportList, 1 stream::ReadUsersFile, 2 stream::ReadUserMap,
// 3 stream::ReadAccounts (USER<TAB>PASSWORD file, then the users file: the rest split at its first
// NUL), 4 stream::ReadPasswordFile, 5 store::ReadSettings of STORE/config/store.conf,
// 6 stream::ParseImapUrl, 7 net::ParseEndpoint, 8 stream::ParseDeadline, 9 StatusFilter::Parse;
// a first byte of 255 (not 5: the readers above keep their bytes) interop::MboxTreeSubscriptions
// of Dovecot's `.subscriptions`, its names modified UTF-7 when the input's size is odd.
// Invariants: only storemove::Error escapes, with a one-line message; what is accepted is what
// the readers promise (valid user ids and folder names, no user mapped twice, ports in range);
// a URL or endpoint accepted reads the same from its own text.
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <string>

#include "interop/import.h"
#include "interop/mbox_tree.h"
#include "store/settings.h"
#include "store/store.h"
#include "stream/deadline.h"
#include "stream/moveuser.h"
#include "stream/net.h"
#include "stream/stream.h"
#include "stream/user_views.h"
#include "tests/fuzz/fuzz_support.h"
#include "util/fs.h"

namespace ss = storemove::store;
namespace st = storemove::stream;

namespace {

std::string WriteFile(const std::string& name, std::string_view text, mode_t mode = 0600) {
  const std::string path = storemove::fuzz::ScratchDir() + "/" + name;
  ::unlink(path.c_str());
  storemove::UniqueFd fd(storemove::OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, mode));
  storemove::WriteAll(fd.get(), text.data(), text.size(), path);
  return path;
}

bool ValidUser(const std::string& user) {
  try {
    ss::ValidateUserId(user);
    return true;
  } catch (const storemove::Error&) {
    return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (size > (64 << 10)) return -1;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] == 255) {
    const std::string dir = storemove::fuzz::ScratchDir() + "/tree";
    std::filesystem::create_directories(dir);
    WriteFile("tree/.subscriptions", text);
    const auto names = size % 2 ? storemove::interop::MboxFileNames::kModifiedUtf7
                                : storemove::interop::MboxFileNames::kAsStored;
    storemove::fuzz::OnlyStoremoveErrors("lists: .subscriptions", [&] {
      std::vector<std::string> warnings;
      std::set<std::string> seen;
      for (const std::string& folder : storemove::interop::MboxTreeSubscriptions(dir, names, &warnings)) {
        ss::ValidateFolderName(folder);  // throws only if the reader let a bad one through
        FUZZ_CHECK(seen.insert(folder).second);
      }
      for (const std::string& w : warnings) FUZZ_CHECK(w.find('\n') == std::string::npos);
    });
    return 0;
  }
  switch (data[0] % 10) {
    case 0: {
      const std::string path = WriteFile("import.list", text);
      storemove::fuzz::OnlyStoremoveErrors("lists: import list", [&] {
        for (const storemove::interop::ImportJob& job : storemove::interop::ReadImportList(path)) {
          FUZZ_CHECK(ValidUser(job.user));
          ss::ValidateFolderName(job.folder);  // throws only if the reader let a bad one through
          FUZZ_CHECK(!job.path.empty() && job.path[0] == '/');
        }
      });
      break;
    }
    case 1: {
      const std::string path = WriteFile("users", text);
      storemove::fuzz::OnlyStoremoveErrors("lists: users file", [&] {
        std::vector<std::string> users = st::ReadUsersFile(path);
        FUZZ_CHECK(!users.empty());
        for (const std::string& u : users) FUZZ_CHECK(ValidUser(u));
      });
      break;
    }
    case 2: {
      const std::string path = WriteFile("user.map", text);
      storemove::fuzz::OnlyStoremoveErrors("lists: user map", [&] {
        std::map<std::string, std::string> map = st::ReadUserMap(path);
        std::set<std::string> targets;
        for (const auto& [from, to] : map) {
          FUZZ_CHECK(ValidUser(from) && ValidUser(to));
          FUZZ_CHECK(targets.insert(to).second);  // two users never become one
        }
        st::CheckUserMap(map);
      });
      break;
    }
    case 3: {
      size_t nul = text.find('\0');
      const std::string passwords = WriteFile("passwords", text.substr(0, nul));
      const std::string users = WriteFile("users", nul == std::string_view::npos ? "" : text.substr(nul + 1));
      storemove::fuzz::OnlyStoremoveErrors("lists: accounts", [&] {
        for (const st::ImapAccount& a : st::ReadAccounts("", users, passwords, size % 2 == 1)) {
          FUZZ_CHECK(ValidUser(a.user));
          FUZZ_CHECK(size % 2 == 1 || !a.password.empty());
        }
      });
      break;
    }
    case 4: {
      const std::string path = WriteFile("password", text);
      storemove::fuzz::OnlyStoremoveErrors("lists: password file", [&] {
        std::string password = st::ReadPasswordFile(path);
        FUZZ_CHECK(!password.empty() && password.find('\n') == std::string::npos);
      });
      break;
    }
    case 5: {
      const std::string root = storemove::fuzz::ScratchDir() + "/store";
      std::filesystem::create_directories(root + "/config");
      WriteFile("store/config/store.conf", text, 0644);
      storemove::fuzz::OnlyStoremoveErrors("lists: store.conf", [&] {
        ss::Settings settings = ss::ReadSettings(root);
        std::vector<std::pair<std::string, std::string>> values = ss::SettingValues(root);
        FUZZ_CHECK(values.size() == ss::KnownSettings().size());
        FUZZ_CHECK(settings.relinker_minsize_kb <= (uint64_t(1) << 40));
      });
      break;
    }
    case 6: {
      storemove::fuzz::OnlyStoremoveErrors("lists: imap url", [&] {
        st::ImapUrl url = st::ParseImapUrl(std::string(text));
        FUZZ_CHECK(!url.host.empty());
        st::ImapUrl again = st::ParseImapUrl(url.ToString());
        FUZZ_CHECK(again.host == url.host && again.port == url.port && again.tls == url.tls);
      });
      break;
    }
    case 7: {
      storemove::fuzz::OnlyStoremoveErrors("lists: endpoint", [&] {
        st::net::Endpoint e = st::net::ParseEndpoint(std::string(text));
        FUZZ_CHECK(!e.host.empty());
        st::net::Endpoint again = st::net::ParseEndpoint(e.ToString());
        FUZZ_CHECK(again.host == e.host && again.port == e.port);
      });
      break;
    }
    case 8: {
      const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1780000000));
      storemove::fuzz::OnlyStoremoveErrors("lists: deadline", [&] { st::ParseDeadline(text, now); });
      break;
    }
    case 9: {
      storemove::fuzz::OnlyStoremoveErrors("lists: status filter", [&] {
        st::StatusFilter f = st::StatusFilter::Parse(text);
        FUZZ_CHECK(f.state != ss::UserState::kMoved || text.starts_with("moved"));
      });
      break;
    }
  }
  return 0;
}
