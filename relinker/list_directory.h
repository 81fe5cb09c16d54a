// Internal to relinker/: the names in a directory, for the repository walks.
#pragma once

#include <string>
#include <vector>

namespace storemove::relinker {

// Every name but . and .. (none when the directory does not exist); the directory is opened
// without following a symlink, and a failure other than a missing directory throws.
std::vector<std::string> ListDirectory(const std::string& path);

}  // namespace storemove::relinker
