#include "stream/private_file.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "util/error.h"
#include "util/fs.h"
#include "util/user_name.h"

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
  const std::string login = LoginName(::geteuid());
  const std::string me = login.empty() ? std::to_string(::geteuid()) : login;  // for chown
  // Another user who owns the file can read it or swap its contents, whatever its mode; only this
  // user's or root's is taken, as ssh's StrictModes does (security review #03).
  if (st.st_uid != ::geteuid() && st.st_uid != 0)
    Throw(Errc::kAuth, what + " " + path + " is owned by " + UserName(st.st_uid) +
                           ", not by this user or root; refusing it: chown " + me + " " + path);
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
    // root's file that the group lets this user read: chmod 600 alone would shut this user out
    // (helper-84: "Permission denied", exit 74, was the next answer).
    Throw(Errc::kAuth, what + " " + path + " is accessible by group or others (mode " + mode + "); refusing it: " +
                           (st.st_uid == ::geteuid() ? "" : "chown " + me + " " + path + " and ") + "chmod 600 " + path);
  }
  // From here on this process holds a secret: a core dump of it (kept by systemd-coredump or
  // apport, for whoever reads those) would too, and so would another process of this user
  // that attaches with ptrace. Not dumpable rules out both (review: core dumps of serve).
  if (::prctl(PR_SET_DUMPABLE, 0) != 0) ThrowErrno("prctl PR_SET_DUMPABLE");
  std::string text(limit, '\0');
  size_t got = 0;
  for (size_t n; got < text.size() && (n = ReadSome(fd.get(), text.data() + got, text.size() - got, path)) > 0;)
    got += n;
  text.resize(got);
  return text;
}

}  // namespace storemove::stream
