// The export's mbox tree read back as import jobs; the rules are in interop/mbox_tree.h.
#include "interop/mbox_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <set>

#include "interop/unfinished_export.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/printable.h"

namespace storemove::interop {
namespace {

constexpr int kMaxDepth = 64;

struct Entry {
  std::string name;
  mode_t type;  // S_IFMT bits of lstat: never followed through a link
};

std::vector<Entry> List(int dirfd, const std::string& shown) {
  const int copy = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) ThrowErrno("opendir " + shown);
  DIR* dir = ::fdopendir(copy);
  if (dir == nullptr) {
    const int err = errno;
    ::close(copy);
    errno = err;
    ThrowErrno("opendir " + shown);
  }
  std::vector<Entry> out;
  errno = 0;
  while (const dirent* d = ::readdir(dir)) {
    const std::string name = d->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      const int err = errno;
      ::closedir(dir);
      errno = err;
      ThrowErrno("stat " + JoinPath(shown, EscapeControls(name)));
    }
    out.push_back({name, st.st_mode & S_IFMT});
    errno = 0;
  }
  const int err = errno;
  ::closedir(dir);
  if (err != 0) {
    errno = err;
    ThrowErrno("readdir " + shown);
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
  return out;
}

// `real` is the directory's path as given (to open), `shown` as errors name it.
void Walk(int dirfd, const std::string& real, const std::string& shown, const std::string& rel, int depth,
          const std::string& user, std::map<std::string, ImportJob>* jobs) {
  const std::vector<Entry> entries = List(dirfd, shown);
  std::set<std::string> dirs;
  for (const Entry& e : entries)
    if (e.type == S_IFDIR) dirs.insert(e.name);
  for (const Entry& e : entries) {
    if (e.name.starts_with('.')) continue;
    const std::string path = JoinPath(shown, EscapeControls(e.name));
    const std::string real_path = JoinPath(real, e.name);
    const std::string sub_rel = rel.empty() ? e.name : rel + "/" + e.name;
    if (e.type == S_IFLNK) Throw(Errc::kCorrupt, path + " is a symbolic link; refusing to follow it");
    if (e.type == S_IFDIR) {
      if (depth >= kMaxDepth) Throw(Errc::kInvalidArgument, path + ": folders nested over 64 deep");
      UniqueFd sub = OpenAt(dirfd, e.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, path);
      Walk(sub.get(), real_path, path, sub_rel, depth + 1, user, jobs);
      continue;
    }
    if (e.type != S_IFREG) Throw(Errc::kCorrupt, path + ": not a regular file (an mbox file was expected)");
    // "<name>.msg" beside "<name>/": the folder <name>, which has sub-folders (MboxPaths).
    std::string folder = sub_rel;
    if (e.name.size() > 4 && e.name.ends_with(".msg") && dirs.count(e.name.substr(0, e.name.size() - 4)))
      folder.resize(folder.size() - 4);
    auto [it, fresh] = jobs->emplace(folder, ImportJob{user, folder, real_path, ""});
    if (!fresh)
      Throw(Errc::kInvalidArgument, "import --mbox-tree: " + EscapeControls(it->second.path) + " and " + path +
                                        " would both go into folder " + EscapeControls(folder));
  }
}

}  // namespace

std::vector<ImportJob> MboxTreeJobs(const std::string& user, const std::string& dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) Throw(Errc::kNotFound, "import --mbox-tree " + dir + ": no such directory");
    ThrowErrno("stat " + dir);
  }
  if (!S_ISDIR(st.st_mode)) Throw(Errc::kInvalidArgument, dir + ": not a directory (an mbox tree was expected)");
  RefuseUnfinishedExport(dir, dir);
  UniqueFd root = OpenDirectory(dir);
  std::map<std::string, ImportJob> by_folder;
  Walk(root.get(), dir, EscapeControls(dir), "", 0, user, &by_folder);
  if (by_folder.empty()) Throw(Errc::kNotFound, "import --mbox-tree " + dir + ": no mbox file in it");
  std::vector<ImportJob> jobs;
  for (auto& [folder, job] : by_folder) jobs.push_back(std::move(job));
  return jobs;
}

}  // namespace storemove::interop
