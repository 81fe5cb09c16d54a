// Restore into a store (stream::Restore, as `storemove restore` runs it) of hostile streams.
// Each input gets a fresh store under the scratch directory (tmpfs), removed afterwards, so runs
// are independent and reproducible and millions of them leave nothing behind.
// Invariants: only storemove::Error escapes; no file descriptor leaks; nothing is written outside
// the store; afterwards every folder the store lists opens, and every message its index lists is
// present with its recorded size (nothing half-visible); a restore that succeeded can be run again
// over its own result without failing.
// The input's length picks the options: odd lengths run with -c (continue on error).
#include <dirent.h>
#include <sys/stat.h>

#include <filesystem>
#include <memory>

#include "format/format.h"
#include "format/zstd_codec.h"
#include "store/store.h"
#include "stream/stream.h"
#include "tests/fuzz/fuzz_support.h"

namespace sf = storemove::format;
namespace ss = storemove::store;
namespace st = storemove::stream;

namespace {

int CountFds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) std::abort();
  int n = 0;
  while (::readdir(d)) ++n;
  ::closedir(d);
  return n;
}

int CountEntries(const std::string& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

bool RestoreOnce(ss::Store& store, std::string_view input, const st::RestoreOptions& options) {
  return storemove::fuzz::OnlyStoremoveErrors("restore", [&] {
    sf::StringSource raw(input);
    sf::DecompressingSource source(raw);
    sf::Decoder decoder(source);
    st::Restore(&store, decoder, options);
  });
}

// Every listed folder opens and every message of its index is there, whole.
void CheckStore(ss::Store& store) {
  bool ok = storemove::fuzz::OnlyStoremoveErrors("restore: store check", [&] {
    store.ForEachFolder([&](const ss::FolderInfo& info) {
      std::unique_ptr<ss::Folder> folder = store.OpenFolder(info.user, info.folder);
      ss::FolderSnapshot snapshot = folder->Snapshot();
      for (const ss::MessageMeta& m : snapshot.messages) {
        storemove::UniqueFd fd = folder->OpenMessage(m.uid);
        if (!fd.valid()) {
          std::fprintf(stderr, "restore: %s uid %u listed but missing\n", folder->Mailbox().c_str(), m.uid);
          std::abort();
        }
        struct stat s;
        FUZZ_CHECK(::fstat(fd.get(), &s) == 0);
        FUZZ_CHECK(uint64_t(s.st_size) == m.size);
      }
    });
  });
  FUZZ_CHECK(ok);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string& scratch = storemove::fuzz::ScratchDir();
  const std::string root = scratch + "/store";
  int fds = CountFds();
  {
    std::unique_ptr<ss::Store> store = ss::Store::Init(root, {"primary", "secondary"});
    st::RestoreOptions options;
    options.continue_on_error = size % 2 == 1;
    options.batch_messages = 4;  // several commits per folder even for small inputs
    bool restored = RestoreOnce(*store, input, options);
    CheckStore(*store);
    if (restored) {
      FUZZ_CHECK(RestoreOnce(*store, input, options));  // a rerun over its own result succeeds
      CheckStore(*store);
    }
  }
  FUZZ_CHECK(CountEntries(scratch) == 1);  // only the store: nothing written beside it
  std::filesystem::remove_all(root);
  FUZZ_CHECK(CountFds() == fds);
  return 0;
}
