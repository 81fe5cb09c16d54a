// The export's mbox tree read back as import jobs; the rules are in interop/mbox_tree.h.
#include "interop/mbox_tree.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <optional>
#include <set>

#include "interop/modified_utf7.h"
#include "interop/unfinished_export.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/printable.h"

namespace storemove::interop {
namespace {

constexpr int kMaxDepth = 64;

std::vector<DirEntry> List(int dirfd, const std::string& shown) {
  std::vector<DirEntry> out = ListDirectoryAt(dirfd, shown);
  std::sort(out.begin(), out.end(), [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return out;
}

// `real` is the directory's path as given (to open), `shown` as errors name it.
void Walk(int dirfd, const std::string& real, const std::string& shown, const std::string& rel, int depth,
          const std::string& user, MboxFileNames names, std::map<std::string, ImportJob>* jobs) {
  const std::vector<DirEntry> entries = List(dirfd, shown);
  std::set<std::string> dirs;
  for (const DirEntry& e : entries)
    if (e.type == S_IFDIR) dirs.insert(e.name);
  for (const DirEntry& e : entries) {
    if (e.name.starts_with('.')) continue;
    const std::string path = JoinPath(shown, EscapeControls(e.name));
    const std::string real_path = JoinPath(real, e.name);
    if (e.type == S_IFLNK) Throw(Errc::kCorrupt, path + " is a symbolic link; refusing to follow it");
    const auto folder_of = [&](std::string_view name) {
      const std::string component = FolderComponent(name, names, path);
      return rel.empty() ? component : rel + "/" + component;
    };
    if (e.type == S_IFDIR) {
      if (depth >= kMaxDepth) Throw(Errc::kInvalidArgument, path + ": folders nested over 64 deep");
      UniqueFd sub = OpenAt(dirfd, e.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, path);
      Walk(sub.get(), real_path, path, folder_of(e.name), depth + 1, user, names, jobs);
      continue;
    }
    if (e.type != S_IFREG) Throw(Errc::kCorrupt, path + ": not a regular file (an mbox file was expected)");
    // "<name>.msg" beside "<name>/": the folder <name>, which has sub-folders (MboxPaths).
    std::string_view name = e.name;
    if (name.size() > 4 && name.ends_with(".msg") && dirs.count(e.name.substr(0, e.name.size() - 4)))
      name.remove_suffix(4);
    const std::string folder = folder_of(name);
    auto [it, fresh] = jobs->emplace(folder, ImportJob{user, folder, real_path, ""});
    if (!fresh)
      Throw(Errc::kInvalidArgument, "import --mbox-tree: " + EscapeControls(it->second.path) + " and " + path +
                                        " would both go into folder " + EscapeControls(folder));
  }
}

}  // namespace

std::string FolderComponent(std::string_view name, MboxFileNames names, const std::string& shown) {
  if (names == MboxFileNames::kAsStored) return std::string(name);
  std::optional<std::string> decoded = TryDecodeModifiedUtf7(name);
  if (!decoded)
    Throw(Errc::kInvalidArgument, shown + ": the name is not modified UTF-7 (--utf7-names: IMAP's spelling of "
                                          "folder names, as Dovecot and UW-IMAP keep them)");
  if (decoded->find('/') != std::string::npos)
    Throw(Errc::kInvalidArgument, shown + ": the name would hold a '/' inside a folder name component");
  return *std::move(decoded);
}

std::vector<ImportJob> MboxTreeJobs(const std::string& user, const std::string& dir, MboxFileNames names) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) Throw(Errc::kNotFound, "import --mbox-tree " + dir + ": no such directory");
    ThrowErrno("stat " + dir);
  }
  if (!S_ISDIR(st.st_mode)) Throw(Errc::kInvalidArgument, dir + ": not a directory (an mbox tree was expected)");
  RefuseUnfinishedExport(dir, dir);
  UniqueFd root = OpenDirectory(dir);
  std::map<std::string, ImportJob> by_folder;
  Walk(root.get(), dir, EscapeControls(dir), "", 0, user, names, &by_folder);
  if (by_folder.empty()) Throw(Errc::kNotFound, "import --mbox-tree " + dir + ": no mbox file in it");
  std::vector<ImportJob> jobs;
  for (auto& [folder, job] : by_folder) jobs.push_back(std::move(job));
  return jobs;
}

}  // namespace storemove::interop
