#include "stream/private_file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdio>

#include "util/error.h"
#include "util/fs.h"

namespace storemove::stream {

std::string ReadPrivateFile(const std::string& path, const std::string& what, size_t limit) {
  UniqueFd fd;
  try {
    fd = OpenFile(path, O_RDONLY);
  } catch (const Error& e) {
    Throw(e.code(), what + ": " + e.what());  // "key file: open K: ..." (helper-72: the bare path)
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) ThrowErrno("stat " + path);
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
    Throw(Errc::kAuth, what + " " + path + " is accessible by group or others (mode " + mode +
                           "); refusing it: chmod 600 " + path);
  }
  std::string text(limit, '\0');
  size_t got = 0;
  for (size_t n; got < text.size() && (n = ReadSome(fd.get(), text.data() + got, text.size() - got, path)) > 0;)
    got += n;
  text.resize(got);
  return text;
}

}  // namespace storemove::stream
