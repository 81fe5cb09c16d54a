#include "tests/fuzz/fuzz_support.h"

#include <stdlib.h>

#include <filesystem>

namespace storemove::fuzz {

namespace {
struct Scratch {
  std::string path;
  Scratch() {
    // scripts/fuzz points this at a directory it removes itself, so even a crashed run leaves nothing.
    const char* env = std::getenv("STOREMOVE_FUZZ_SCRATCH");
    std::string base = env && *env ? env
                       : std::filesystem::exists("/dev/shm") ? "/dev/shm"
                                                             : std::filesystem::temp_directory_path().string();
    std::string templ = base + "/storemove-fuzz-XXXXXX";
    if (!::mkdtemp(templ.data())) std::abort();
    path = templ;
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};
}  // namespace

const std::string& ScratchDir() {
  static Scratch scratch;  // removed at exit (libFuzzer's -runs and -max_total_time exit normally)
  return scratch.path;
}

}  // namespace storemove::fuzz
