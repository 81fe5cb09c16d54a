#include "relinker/list_directory.h"

#include <dirent.h>
#include <fcntl.h>

#include <cerrno>
#include <string_view>

#include "util/error.h"
#include "util/fs.h"

namespace storemove::relinker {

std::vector<std::string> ListDirectory(const std::string& path) {
  std::vector<std::string> names;
  UniqueFd fd = TryOpenAt(AT_FDCWD, path, O_RDONLY | O_DIRECTORY, 0, path);  // no symlink followed
  if (!fd.valid()) return names;
  DIR* dir = ::fdopendir(fd.get());
  if (!dir) ThrowErrno("open directory " + path);
  fd.release();
  errno = 0;
  while (struct dirent* e = ::readdir(dir)) {
    std::string_view name = e->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  int err = errno;
  ::closedir(dir);
  if (err) ThrowErrno("read directory " + path, err);
  return names;
}

}  // namespace storemove::relinker
