#include "tools/backup_output.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <string_view>

#include "stream/transport.h"
#include "util/error.h"
#include "util/foreign_link.h"

namespace storemove::tools {
namespace {

// The temporary file a signal handler removes (one backup per process).
char g_temp[PATH_MAX];

void RemoveTempAndExit(int sig) {
  if (g_temp[0]) ::unlink(g_temp);
  static const char kLine[] = "storemove: backup interrupted; the output file was left as it was\n";
  (void)!::write(STDERR_FILENO, kLine, sizeof kLine - 1);
  ::_exit(128 + sig);
}

// What a link that leads nowhere names at its end (through links to links), in its directory's
// real path: where a shell's `>` would make the file. kIo naming that directory when it does not
// exist: nothing is written, the link is left as it was.
std::string DanglingLinkTarget(const std::string& link) {
  std::string at = link;
  for (int links = 0;; ++links) {
    struct stat st;
    if (::lstat(at.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) break;
    if (links == 40) ThrowErrno("create " + link, ELOOP);  // the kernel's own bound
    char target[PATH_MAX];
    const ssize_t n = ::readlink(at.c_str(), target, sizeof target);
    if (n < 0) ThrowErrno("read link " + at);
    if (size_t(n) >= sizeof target) ThrowErrno("read link " + at, ENAMETOOLONG);
    const std::string next(target, size_t(n));
    at = next.front() == '/' ? next : DirectoryOf(at) + "/" + next;
  }
  const size_t slash = at.rfind('/');
  const std::string name = slash == std::string::npos ? at : at.substr(slash + 1);
  if (name.empty() || name == "." || name == "..")
    Throw(Errc::kInvalidArgument, "-f: " + link + " is a symbolic link to " + at + ", which is not a file name");
  const std::string dir = DirectoryOf(at);
  char resolved[PATH_MAX];
  if (!::realpath(dir.c_str(), resolved)) {
    if (errno != ENOENT && errno != ENOTDIR) ThrowErrno("resolve " + dir);
    Throw(Errc::kIo, "create " + link + ": it is a symbolic link to " + at + ", whose directory " + dir +
                         " does not exist; nothing was written (make the directory, or point the link elsewhere)");
  }
  return std::string(resolved) + (std::string_view(resolved) == "/" ? "" : "/") + name;
}

}  // namespace

BackupOutput::BackupOutput(const std::string& path) : path_(path), shown_(path == "-" ? "standard output" : path) {
  if (path != "-") RefuseForeignLink(path, "output file");  // root's backup into /tmp (security review #01)
  struct stat st;
  const bool exists = path != "-" && ::stat(path.c_str(), &st) == 0;
  if (path == "-" || (exists && !S_ISREG(st.st_mode))) {
    fd_ = stream::OpenOutput(path);
    return;
  }
  // A symlink stays one: the file it names is replaced, beside itself; a link to a file not made
  // yet (a "latest" link set up before the first backup) has it made, as a shell's `>` does: it
  // used to be replaced by the new file, and the place it named stayed empty.
  struct stat lst;
  if (char resolved[PATH_MAX]; exists && ::realpath(path.c_str(), resolved))
    path_ = resolved;
  else if (!exists && ::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode))
    path_ = DanglingLinkTarget(path);
  temp_ = path_ + ".tmp." + std::to_string(::getpid()) + "." + RandomToken();
  if (temp_.size() >= sizeof g_temp) Throw(Errc::kInvalidArgument, "-f: path too long: " + path);
  const int fd = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    // A directory this user may not create in (a file made writable for the backup operator):
    // written in place, as before there was a temporary name.
    if (errno == EACCES || errno == EPERM || errno == EROFS) {
      temp_.clear();
      fd_ = stream::OpenOutput(path);
      return;
    }
    // The file asked for, not its temporary name (helper-72: "create X.tmp.24960.7f6c...: No
    // such file or directory" for a directory that does not exist).
    ThrowErrno("create " + shown_ + " (as " + temp_ + " first)");
  }
  fd_.reset(fd);
  // The file keeps the permissions it had (a backup operators' group may read it): if it was
  // ours. One another user made beforehand (666, in /tmp) would otherwise hand them the mail.
  if (exists && st.st_uid == ::geteuid() && ::fchmod(fd, st.st_mode & 07777) != 0) ThrowErrno("chmod " + temp_);
  std::memcpy(g_temp, temp_.c_str(), temp_.size() + 1);
  struct sigaction sa {};
  sa.sa_handler = RemoveTempAndExit;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
}

BackupOutput::~BackupOutput() {
  if (temp_.empty() || committed_) return;
  ::unlink(temp_.c_str());
  g_temp[0] = 0;
}

std::string BackupOutput::Commit(bool complete) {
  if (temp_.empty()) return shown_;
  Fsync(fd_.get(), temp_);
  const std::string name = complete ? path_ : path_ + ".incomplete";
  if (int err = RenamePath(temp_, name)) ThrowErrno("rename " + temp_ + " to " + name, err);
  committed_ = true;
  g_temp[0] = 0;
  // FILE's directory as the user named it: a link there is theirs (a backup directory linked to a
  // NAS mount; RefuseForeignLink let only theirs and root's through). OpenDirectory follows no
  // link, and a complete new backup then ended "open DIR: Not a directory", exit 74 (helper-84).
  const std::string dir_path = DirectoryOf(path_);
  UniqueFd dir(::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) ThrowErrno("open " + dir_path);
  Fsync(dir.get(), dir_path);
  return name;
}

}  // namespace storemove::tools
