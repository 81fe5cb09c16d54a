// Maildir++ names and control files (interop/maildir_names.h, interop::ScanMaildir) on hostile
// bytes. The input is split at its first two NUL bytes into A, B and C. Invariants:
//  * only storemove::Error escapes MaildirFolderName(A) and ScanMaildir;
//  * the export's directory name of any folder string A decodes back to A (the import is the
//    export's exact inverse), and a name the import accepts is a fixed point of encode + decode;
//  * a folder name the store accepts reads back from its subscription line;
//  * ScanMaildir of a tree whose dovecot-uidlist is B and dovecot-keywords C puts the messages
//    B names first, by UID, then the others; keyword bits only for letters C names; with A as
//    its subscriptions file, every folder it subscribes to is one the store accepts.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "interop/maildir_import.h"
#include "interop/maildir_names.h"
#include "store/store.h"
#include "tests/fuzz/fuzz_support.h"

namespace ss = storemove::interop;

namespace {

void WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  FUZZ_CHECK(out.good());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return -1;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t first = input.find('\0');
  const std::string_view a = input.substr(0, first);
  std::string_view b, c;
  if (first != std::string_view::npos) {
    const size_t second = input.find('\0', first + 1);
    b = input.substr(first + 1, second == std::string_view::npos ? second : second - first - 1);
    if (second != std::string_view::npos) c = input.substr(second + 1);
  }

  if (a != "INBOX") {
    std::string back;
    FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("maildir encode", [&] {
      back = ss::MaildirFolderName(std::string_view(ss::MaildirFolderDir(a)).substr(1));
    }));
    FUZZ_CHECK(back == a);
  }
  std::string folder;
  if (storemove::fuzz::OnlyStoremoveErrors("maildir name", [&] { folder = ss::MaildirFolderName(a); }) &&
      folder != "INBOX") {
    std::string again;
    FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("maildir name again", [&] {
      again = ss::MaildirFolderName(std::string_view(ss::MaildirFolderDir(folder)).substr(1));
    }));
    FUZZ_CHECK(again == folder);
  }

  // A folder the store accepts reads back from its subscription line.
  bool valid = true;
  try {
    storemove::store::ValidateFolderName(a);
  } catch (const storemove::Error&) {
    valid = false;
  }
  if (valid) {
    std::string subscribed;
    FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("subscription line", [&] {
      subscribed = ss::MaildirSubscribedFolder(ss::MaildirSubscriptionLine(a), 2);
    }));
    FUZZ_CHECK(subscribed == a);
  }

  // A tree: two messages in cur/, one in new/, the input's uidlist and keywords; A is its
  // subscriptions file, whose lines are only ever warnings.
  const std::string tree = storemove::fuzz::ScratchDir() + "/maildir";
  std::filesystem::remove_all(tree);
  for (const char* sub : {"", "/cur", "/new", "/tmp"}) FUZZ_CHECK(::mkdir((tree + sub).c_str(), 0700) == 0);
  WriteFile(tree + "/cur/1.a,S=5:2,Sa", "Subject: a\n\nx\n");
  WriteFile(tree + "/cur/2.b:2,FRbz", "Subject: b\n\ny\n");
  WriteFile(tree + "/new/3.c", "Subject: c\n\nz\n");
  if (first != std::string_view::npos) WriteFile(tree + "/dovecot-uidlist", b);
  if (!c.empty()) WriteFile(tree + "/dovecot-keywords", c);
  WriteFile(tree + "/subscriptions", a);
  ss::MaildirTree scanned;
  if (!storemove::fuzz::OnlyStoremoveErrors("maildir scan", [&] { scanned = ss::ScanMaildir(tree, 256); })) return 0;
  FUZZ_CHECK(scanned.folders.size() == 1 && scanned.folders[0].folder == "INBOX");
  for (const std::string& name : scanned.subscriptions) {
    FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("subscribed name", [&] { storemove::store::ValidateFolderName(name); }));
  }
  const ss::MaildirFolderScan& inbox = scanned.folders[0];
  FUZZ_CHECK(inbox.messages.size() == 3);
  uint32_t named = 0;
  for (size_t i = 0; i < inbox.keywords.size(); ++i)
    if (!inbox.keywords[i].empty()) named |= uint32_t{1} << i;
  bool unlisted_seen = false;
  uint32_t last_uid = 0;
  for (const ss::MaildirMessageFile& m : inbox.messages.ToVector()) {
    FUZZ_CHECK((m.keyword_bits & ~named) == 0);
    if (m.in_new) FUZZ_CHECK(m.flags == 0 && m.keyword_bits == 0);
    if (m.uid == 0) {
      unlisted_seen = true;
      continue;
    }
    FUZZ_CHECK(!unlisted_seen && m.uid > last_uid);
    last_uid = m.uid;
  }
  if (first == std::string_view::npos) FUZZ_CHECK(last_uid == 0 && inbox.uidvalidity == 0);
  return 0;
}
