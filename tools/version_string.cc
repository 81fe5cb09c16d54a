#include "tools/version_string.h"

#include "util/version.h"

namespace storemove::tools {

// tools/git_describe.cmake writes it into the build tree at every build (git_describe.cc).
extern const char* const kGitDescribe;

std::string VersionString() {
  std::string out = std::string("storemove ") + Version();
  if (*kGitDescribe) out += std::string(" (git ") + kGitDescribe + ")";
  return out;
}

}  // namespace storemove::tools
