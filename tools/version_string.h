// What `storemove --version` prints: the release and, in a build from a git checkout, the commit.
#pragma once

#include <string>

namespace storemove::tools {

// "storemove 0.1.0" or "storemove 0.1.0 (git 3c8bfdf-dirty)".
std::string VersionString();

}  // namespace storemove::tools
