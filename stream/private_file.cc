#include "stream/private_file.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <climits>
#include <cstdio>

#include "util/error.h"
#include "util/fs.h"
#include "util/user_name.h"

namespace storemove::stream {
namespace {

bool Trusted(uid_t owner) { return owner == ::geteuid() || owner == 0; }

// Another user may rename or remove the entries of a directory that group or others may write to
// without the sticky bit; and of one that another user owns and has opened to others, sticky or
// not (the sticky bit does not hold back the directory's owner).
bool OthersMayReplaceEntries(const struct stat& st) {
  return (st.st_mode & 022) && (!(st.st_mode & S_ISVTX) || !Trusted(st.st_uid));
}

// A secret in a directory another user may write to can be swapped for theirs (the transport
// then trusts a key they know) or taken away. ssh's StrictModes refuses any group- or
// world-writable directory up to the home directory; here the file's own directory is held to
// that (sticky ones owned by root or this user excepted: /tmp, where the file's owner check
// already keeps out a file another user put there), and the directories above it only when
// another user owns them too: a root-owned directory that a group may write to higher up
// (/var/mail is root:mail 2775 on Debian) is the administrator's own arrangement, and refusing
// every key below one would make installed layouts fail. The path is resolved first (a
// directory on it may be a link; OpenFile follows none at its end): the directories are those
// that hold the file.
void RefuseOpenDirectories(const std::string& path, const std::string& what) {
  char resolved[PATH_MAX];
  if (!::realpath(path.c_str(), resolved)) ThrowErrno("resolve " + path);
  std::string dir = DirectoryOf(resolved);
  for (bool parent = true;; parent = false) {
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) ThrowErrno("stat " + dir);
    if (OthersMayReplaceEntries(st) && (parent || !Trusted(st.st_uid))) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
      Throw(Errc::kAuth, what + " " + path + (parent ? ": its directory " : ": the directory on its path ") + dir +
                             (Trusted(st.st_uid) ? "" : ", owned by " + UserName(st.st_uid) + ",") +
                             " may be written by group or others (mode " + mode +
                             "), who could replace the file; refusing it: chmod go-w " + dir);
    }
    if (dir == "/") return;
    dir = DirectoryOf(dir);
  }
}

}  // namespace

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
  RefuseOpenDirectories(path, what);
  // From here on this process holds a secret: a core dump of it (kept by systemd-coredump or
  // apport, for whoever reads those) would too, and so would another process of this user
  // that attaches with ptrace. Not dumpable rules out both (review: core dumps of serve).
  if (::prctl(PR_SET_DUMPABLE, 0) != 0) ThrowErrno("prctl PR_SET_DUMPABLE");
  std::string text(limit, '\0');
  size_t got = 0;
  try {
    for (size_t n; got < text.size() && (n = ReadSome(fd.get(), text.data() + got, text.size() - got, path)) > 0;)
      got += n;
  } catch (...) {
    OPENSSL_cleanse(text.data(), got);  // what was read of the secret is not left in freed memory
    throw;
  }
  text.resize(got);
  return text;
}

}  // namespace storemove::stream
