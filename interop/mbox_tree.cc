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

#include "interop/dovecot_subscriptions.h"
#include "interop/modified_utf7.h"
#include "interop/unfinished_export.h"
#include "store/mboxlist.h"
#include "store/store.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/printable.h"

namespace storemove::interop {
namespace {

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
      if (depth >= kMaxMboxTreeDepth)
        Throw(Errc::kInvalidArgument, path + ": folders nested over " + std::to_string(kMaxMboxTreeDepth) + " deep");
      UniqueFd sub = OpenAt(dirfd, e.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, path);
      Walk(sub.get(), real_path, path, folder_of(e.name), depth + 1, user, names, jobs);
      continue;
    }
    if (e.type != S_IFREG) Throw(Errc::kCorrupt, path + ": not a regular file (an mbox file was expected)");
    // "<name>.msg" beside "<name>/": the folder <name>, which has sub-folders (MboxPaths).
    std::string_view name = e.name;
    if (name.size() > 4 && name.ends_with(".msg") && dirs.count(e.name.substr(0, e.name.size() - 4)))
      name.remove_suffix(4);
    // "inbox" (Dovecot's INBOX=~/mail/inbox) is the INBOX, and said so.
    const std::string folder = store::NormalizeFolder(folder_of(name));
    auto [it, fresh] = jobs->emplace(folder, ImportJob{user, folder, real_path, ""});
    if (!fresh)
      Throw(Errc::kInvalidArgument, "import --mbox-tree: " + EscapeControls(it->second.path) + " and " + path +
                                        " would both go into folder " + EscapeControls(folder));
  }
}

// A version 2 line: components between TABs, \001 escaping \001 '1', TAB 't', CR 'r', LF 'n'.
std::vector<std::string> Version2Components(std::string_view line) {
  std::vector<std::string> out(1);
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '\t') {
      out.emplace_back();
    } else if (c == '\001' && i + 1 < line.size()) {
      const char next = line[++i];
      out.back().push_back(next == '1' ? '\001' : next == 't' ? '\t' : next == 'r' ? '\r' : next == 'n' ? '\n' : next);
    } else {
      out.back().push_back(c);
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> MboxTreeSubscriptions(const std::string& dir, MboxFileNames names,
                                               std::vector<std::string>* warnings) {
  const std::string shown = JoinPath(EscapeControls(dir), ".subscriptions");
  UniqueFd root = OpenDirectory(dir);
  UniqueFd fd = TryOpenAt(root.get(), ".subscriptions", O_RDONLY | O_NONBLOCK | O_NOFOLLOW, 0, shown);
  if (!fd.valid()) return {};
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) ThrowErrno("stat " + shown);
  if (!S_ISREG(st.st_mode)) Throw(Errc::kCorrupt, shown + ": not a regular file");
  std::string text;
  char buf[65536];
  while (size_t n = ReadSome(fd.get(), buf, sizeof buf, shown)) {
    text.append(buf, n);
    if (text.size() > kMaxSubscriptionsFile)
      Throw(Errc::kInvalidArgument, shown + ": over 16 MiB, not a subscriptions file");
  }
  CheckSubscriptionsText(text, shown);
  const std::optional<SubscriptionLines> split = SplitSubscriptions(text, shown, /*versioned=*/true, warnings);
  if (!split) return {};
  const std::vector<std::string_view>& lines = split->lines;
  const int version = split->version;
  const size_t first = split->first;
  std::vector<std::string> out;
  std::set<std::string> seen;
  LineWarnings refused(shown, warnings);
  for (size_t i = first; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    if (line.empty()) continue;
    if (out.size() == kMaxSubscriptions)
      Throw(Errc::kInvalidArgument, shown + ": over 65,536 subscriptions, not a subscriptions file");
    const std::string where = shown + " line " + std::to_string(i + 1) + ", '" + EscapeControls(line) + "'";
    try {
      std::vector<std::string> components;
      if (version == 2) {
        components = Version2Components(line);
      } else {
        for (size_t start = 0;;) {
          const size_t slash = line.find('/', start);
          components.emplace_back(line.substr(start, slash == std::string_view::npos ? slash : slash - start));
          if (slash == std::string_view::npos) break;
          start = slash + 1;
        }
      }
      std::string folder;
      for (const std::string& component : components) {
        if (!folder.empty()) folder.push_back('/');
        folder += FolderComponent(component, names, where);
      }
      store::ValidateFolderName(folder);
      folder = store::NormalizeFolder(folder);
      if (seen.insert(folder).second) out.push_back(std::move(folder));
    } catch (const Error& e) {
      if (e.code() != Errc::kInvalidArgument) throw;
      const std::string why = e.what();
      refused.Add((why.starts_with(where) ? why : where + ": " + why) + "; not subscribed");
    }
  }
  refused.Finish();
  return out;
}

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
