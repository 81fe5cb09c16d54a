// storemove export; the layouts are described in interop/export.h.
#include "interop/export.h"
#include "interop/unfinished_export.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <map>
#include <optional>
#include <set>

#include "interop/keyword_bits.h"
#include "interop/maildir_names.h"
#include "interop/mbox_status.h"
#include "interop/mbox.h"
#include "interop/mbox_tree.h"
#include "interop/modified_utf7.h"
#include "util/error.h"
#include "util/foreign_link.h"
#include "util/fs.h"

namespace storemove::interop {

using store::Folder;
using store::FolderInfo;
using store::FolderSnapshot;
using store::MessageMeta;
using store::StagedMessage;
using store::Store;
namespace {

constexpr mode_t kDirMode = 0700;   // exported mail is private
constexpr mode_t kFileMode = 0600;
constexpr size_t kCopyBlock = 256 << 10;
// A message up to this size is read whole into memory and written from there (most mail); a
// larger one is streamed (MboxWriter::WriteFile).
constexpr uint64_t kWholeLimit = 4 << 20;

// --- names -------------------------------------------------------------------------------

std::vector<std::string_view> Components(std::string_view folder) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t slash = folder.find('/', start);
    parts.push_back(folder.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) return parts;
    start = slash + 1;
  }
}

// The address in a Return-Path header ("<joe@example.com>" -> "joe@example.com"), empty if the
// header block has none or it is the null path "<>".
std::string ReturnPathSender(std::string_view header) {
  size_t line = 0;
  while (line < header.size()) {
    size_t eol = header.find('\n', line);
    if (eol == std::string_view::npos) eol = header.size();
    std::string_view text = header.substr(line, eol - line);
    constexpr std::string_view kName = "return-path:";
    if (text.size() >= kName.size() &&
        std::equal(kName.begin(), kName.end(), text.begin(),
                   [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); })) {
      // The value may be folded onto continuation lines.
      size_t end = eol;
      while (end + 1 < header.size() && (header[end + 1] == ' ' || header[end + 1] == '\t')) {
        end = header.find('\n', end + 1);
        if (end == std::string_view::npos) end = header.size();
      }
      std::string_view value = header.substr(line + kName.size(), end - line - kName.size());
      const size_t open = value.find('<');
      if (open != std::string_view::npos) {
        const size_t close = value.find('>', open);
        return std::string(value.substr(open + 1, close == std::string_view::npos ? close : close - open - 1));
      }
      const size_t begin = value.find_first_not_of(" \t\r\n");
      if (begin == std::string_view::npos) return "";
      return std::string(value.substr(begin, value.find_first_of(" \t\r\n", begin) - begin));
    }
    line = eol + 1;
  }
  return "";
}

// Maildir's unique-name rule: '/' and ':' of the host name as octal escapes (',' too, which
// would end the base name where Dovecot looks for S= and W=).
std::string MaildirHost(std::string host) {
  if (host.empty()) {
    char buf[HOST_NAME_MAX + 1] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0) ThrowErrno("gethostname");
    host = buf;
    if (host.empty()) host = "localhost";
  }
  std::string out;
  for (char c : host) {
    if (c == '/') out += "\\057";
    else if (c == ':') out += "\\072";
    else if (c == ',') out += "\\054";
    else out.push_back(c);
  }
  return out;
}

// --- output directory --------------------------------------------------------------------

// The names in a directory (not . and ..), each with whether it is a directory (DT_UNKNOWN
// counts as not: its unlink then fails with EISDIR).
std::vector<std::pair<std::string, bool>> Entries(int dirfd, const std::string& shown) {
  DIR* dir = ::fdopendir(::dup(dirfd));
  if (dir == nullptr) ThrowErrno("opendir " + shown);
  ::rewinddir(dir);  // a dup shares its offset with dirfd, which an earlier listing moved
  std::vector<std::pair<std::string, bool>> entries;
  errno = 0;
  while (const struct dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") entries.emplace_back(name, entry->d_type == DT_DIR);
  }
  const int err = errno;
  ::closedir(dir);
  if (err != 0) ThrowErrno("readdir " + shown, err);
  return entries;
}

// Present in OUTDIR while an export writes there: a rerun after a kill or a failure finds it
// and starts again in the same directory instead of refusing a non-empty one; import refuses
// what lies below it.
constexpr const char* kUnfinishedMarker = kUnfinishedExportMarker;

// Removes everything below dirfd (not following links), which this export (or an unfinished
// one, by the marker) wrote.
void RemoveContents(int dirfd, const std::string& shown) {
  for (const auto& [name, is_dir] : Entries(dirfd, shown)) {
    if (!is_dir && ::unlinkat(dirfd, name.c_str(), 0) == 0) continue;
    if (!is_dir && errno != EISDIR) ThrowErrno("unlink " + JoinPath(shown, name));
    UniqueFd sub = OpenAt(dirfd, name, O_RDONLY | O_DIRECTORY, 0, JoinPath(shown, name));
    RemoveContents(sub.get(), JoinPath(shown, name));
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0) ThrowErrno("rmdir " + JoinPath(shown, name));
  }
}

UniqueFd PrepareOutDir(const std::string& out_dir) {
  if (out_dir.empty()) Throw(Errc::kInvalidArgument, "export: no output directory given");
  // A link another user planted would make root write files named by a mail user's folders
  // into that user's choice of directory (security review #11).
  RefuseForeignLink(out_dir, "export directory");
  if (!PathExists(out_dir)) {
    const size_t slash = out_dir.find_last_of('/');
    if (slash != std::string::npos && slash > 0) MakeDirs(out_dir.substr(0, slash));
    if (::mkdir(out_dir.c_str(), kDirMode) != 0 && errno != EEXIST) ThrowErrno("mkdir " + out_dir);
  }
  if (!IsDirectory(out_dir)) Throw(Errc::kExists, "export to " + out_dir + ": exists and is not a directory");
  // OUTDIR is the administrator's own path, often a link (/backup -> /mnt/big): it is followed,
  // as `cd` would. Nothing below it is: every name there is created beneath this descriptor.
  const int fd = ::open(out_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ThrowErrno("open " + out_dir);
  UniqueFd dir(fd);
  if (::faccessat(dir.get(), kUnfinishedMarker, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
    RemoveContents(dir.get(), out_dir);  // an earlier export's unfinished output: start again
  } else if (!Entries(dir.get(), out_dir).empty()) {
    Throw(Errc::kExists, "export to " + out_dir + ": directory is not empty (export needs an empty or new one)");
  }
  return dir;
}

// mkdir (an existing directory is fine: siblings share parents) and open it without following links.
UniqueFd MakeDirAt(int parent, const std::string& name, const std::string& shown) {
  if (::mkdirat(parent, name.c_str(), kDirMode) != 0 && errno != EEXIST) ThrowErrno("mkdir " + shown);
  return OpenAt(parent, name, O_RDONLY | O_DIRECTORY, 0, shown);
}

UniqueFd CreateFileAt(int dir, const std::string& name, const std::string& shown) {
  return OpenAt(dir, name, O_WRONLY | O_CREAT | O_EXCL, kFileMode, shown);
}

// Buffers small writes (index-like files) into large ones.
class BufferedFile {
 public:
  BufferedFile(UniqueFd fd, std::string shown) : fd_(std::move(fd)), shown_(std::move(shown)) {}
  void Append(std::string_view text) {
    buffer_.append(text);
    if (buffer_.size() >= kCopyBlock) Flush();
  }
  void Flush() {
    WriteAll(fd_.get(), buffer_.data(), buffer_.size(), shown_);
    buffer_.clear();
  }

 private:
  UniqueFd fd_;
  std::string shown_;
  std::string buffer_;
};

// Thrown when a folder was renamed, moved to another partition or deleted while exported: its
// messages are then not where its snapshot led. Export starts again (Export below).
struct FolderMovedAway {};

// A message file missing under a folder whose store.idx is gone too: not an expunge (that drops
// the record and leaves the index) but the folder gone from under the export.
void CheckStillThere(const Folder& folder) {
  if (::faccessat(folder.dir_fd(), "store.idx", F_OK, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT)
    throw FolderMovedAway{};
}

[[noreturn]] void ThrowMismatch(const Folder& folder, const MessageMeta& meta, uint64_t size) {
  Throw(Errc::kCorrupt, folder.MessagePath(meta.uid) + ": " +
                            (size != meta.size ? std::to_string(size) + " bytes, store.idx says " +
                                                     std::to_string(meta.size)
                                               : std::string("content does not match its store.idx digest")));
}

// --- the two writers ---------------------------------------------------------------------

class Exporter {
 public:
  Exporter(const ExportOptions& options, int root, std::string root_shown)
      : root_(root), root_shown_(std::move(root_shown)), buffer_(kCopyBlock, '\0') {
    if (options.format == ExportFormat::kMaildir) host_ = MaildirHost(options.host);
  }

  void ExportMbox(Folder& folder, const FolderSnapshot& snap, ExportedFolder* out, uint64_t* flags_not_kept) {
    const std::vector<std::string_view> parts = Components(out->path);
    UniqueFd dir;
    int parent = root_;
    std::string shown = root_shown_;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      shown = JoinPath(shown, parts[i]);
      dir = MakeDirAt(parent, std::string(parts[i]), shown);
      parent = dir.get();
    }
    shown = JoinPath(shown, parts.back());
    UniqueFd file = CreateFileAt(parent, std::string(parts.back()), shown);
    MboxWriter writer(file.get(), shown);
    std::string message;
    for (const MessageMeta& meta : snap.messages) {
      UniqueFd in = folder.OpenMessage(meta.uid);
      if (!in.valid()) {
        CheckStillThere(folder);
        ++out->vanished;
        continue;
      }
      const std::string path = folder.MessagePath(meta.uid);
      if (meta.size > kWholeLimit) {
        // Too large to hold: the writer reads the file twice, and the check runs before any of
        // it is written. The envelope's sender comes from the header's first 4 MiB.
        message.resize(static_cast<size_t>(std::min<uint64_t>(meta.header_size, kWholeLimit)));
        size_t got = 0;
        while (got < message.size())
          if (size_t n = ReadSome(in.get(), message.data() + got, message.size() - got, path)) {
            got += n;
          } else {
            break;
          }
        message.resize(got);
        writer.WriteFile(in.get(), path, ReturnPathSender(message), meta.internal_date,
                         [&](uint64_t size, const Digest& digest) {
                           if (size != meta.size || digest != meta.digest) ThrowMismatch(folder, meta, size);
                         });
        ++out->messages;
        out->bytes += meta.size;
        *flags_not_kept += FlagsNotCarried(meta, message);
        continue;
      }
      message.clear();
      while (size_t n = ReadSome(in.get(), buffer_.data(), buffer_.size(), path)) message.append(buffer_.data(), n);
      if (message.size() != meta.size || DigestOf(message) != meta.digest) ThrowMismatch(folder, meta, message.size());
      const std::string_view header = std::string_view(message).substr(0, store::HeaderSize(message));
      writer.Write(message, ReturnPathSender(header), meta.internal_date);
      ++out->messages;
      out->bytes += meta.size;
      *flags_not_kept += FlagsNotCarried(meta, header);
    }
  }

  // An mbox export writes the bytes and the internal date; a flag is carried only where the
  // message's own Status:/X-Status: fields already say it (an import reads them), since writing
  // one would change the message. User flags never are.
  static bool FlagsNotCarried(const MessageMeta& meta, std::string_view header) {
    return (meta.flags & ~store::kRecent) != FlagsFromStatusHeaders(header) || meta.user_flags != 0;
  }

  void ExportMaildir(Folder& folder, const FolderSnapshot& snap, ExportedFolder* out, uint64_t* flags_not_kept,
                     uint64_t* dates_not_kept) {
    UniqueFd own_dir;
    std::string shown = root_shown_;
    int dir = root_;
    if (!out->path.empty()) {
      shown = JoinPath(root_shown_, out->path);
      own_dir = MakeDirAt(root_, out->path, shown);
      dir = own_dir.get();
      CreateFileAt(dir, "maildirfolder", JoinPath(shown, "maildirfolder"));
    }
    UniqueFd cur = MakeDirAt(dir, "cur", JoinPath(shown, "cur"));
    MakeDirAt(dir, "new", JoinPath(shown, "new"));
    UniqueFd tmp = MakeDirAt(dir, "tmp", JoinPath(shown, "tmp"));

    // Keyword letters for the user flags Dovecot can take. $Forwarded is P too, for mutt, mbsync
    // and offlineimap, which read no keyword letters.
    std::vector<int> letter_of(snap.info.user_flag_names.size(), -1);
    uint64_t unkept_user_flags = 0;
    uint64_t passed_bit = 0;
    {
      std::string keywords;
      int next = 0;
      for (size_t i = 0; i < snap.info.user_flag_names.size(); ++i) {
        const std::string& name = snap.info.user_flag_names[i];
        if (IsPassedKeyword(name)) passed_bit |= uint64_t{1} << i;
        if (static_cast<size_t>(next) < kMaildirKeywords && store::IsUserFlagName(name)) {
          letter_of[i] = next;
          keywords += std::to_string(next++) + " " + name + "\n";
        } else {
          unkept_user_flags |= uint64_t{1} << i;
        }
      }
      if (!keywords.empty()) {
        const std::string path = JoinPath(shown, "dovecot-keywords");
        UniqueFd file = CreateFileAt(dir, "dovecot-keywords", path);
        WriteAll(file.get(), keywords.data(), keywords.size(), path);
      }
    }

    uint32_t uidnext = snap.info.uidnext;
    if (!snap.messages.empty()) uidnext = std::max(uidnext, snap.messages.back().uid + 1);
    BufferedFile uidlist(CreateFileAt(dir, "dovecot-uidlist", JoinPath(shown, "dovecot-uidlist")),
                         JoinPath(shown, "dovecot-uidlist"));
    uidlist.Append("3 V" + std::to_string(snap.info.uidvalidity) + " N" + std::to_string(uidnext) + "\n");

    for (const MessageMeta& meta : snap.messages) {
      UniqueFd in = folder.OpenMessage(meta.uid);
      if (!in.valid()) {
        CheckStillThere(folder);
        ++out->vanished;
        continue;
      }
      uint32_t keyword_bits = 0;
      for (size_t i = 0; i < letter_of.size(); ++i)
        if (letter_of[i] >= 0 && (meta.user_flags >> i & 1)) keyword_bits |= uint32_t{1} << letter_of[i];
      // $Forwarded beyond the letters is still P (helper-142: counted as lost).
      if ((meta.flags & store::kArchived) || (meta.user_flags & unkept_user_flags & ~passed_bit)) ++*flags_not_kept;

      const std::string unique = std::to_string(std::max<int64_t>(meta.internal_date, 0)) + "." +
                                 std::to_string(meta.uid) + "_" + std::to_string(++delivered_) + "." + host_;
      bool date_not_kept = false;
      const uint64_t vsize =
          CopyToTmp(folder, meta, in.get(), tmp.get(), unique, JoinPath(shown, "tmp/" + unique), &date_not_kept);
      *dates_not_kept += date_not_kept;
      const std::string base = unique + ",S=" + std::to_string(meta.size) + ",W=" + std::to_string(vsize);
      const std::string name = base + ":2," + MaildirFlagLetters(meta.flags, (meta.user_flags & passed_bit) != 0, keyword_bits);
      if (::renameat(tmp.get(), unique.c_str(), cur.get(), name.c_str()) != 0) {
        const int err = errno;
        ::unlinkat(tmp.get(), unique.c_str(), 0);
        ThrowErrno("rename " + JoinPath(shown, "tmp/" + unique) + " to cur/" + name, err);
      }
      uidlist.Append(std::to_string(meta.uid) + " :" + base + "\n");
      ++out->messages;
      out->bytes += meta.size;
    }
    uidlist.Flush();
  }

 private:
  // Copies one message into tmp/<name>, checking it against store.idx, with mtime = internal
  // date. Returns its size with bare LFs counted as CRLF. The file is removed on failure.
  uint64_t CopyToTmp(const Folder& folder, const MessageMeta& meta, int in, int tmp_dir, const std::string& name,
                     const std::string& shown, bool* date_not_kept) {
    UniqueFd out = CreateFileAt(tmp_dir, name, shown);
    try {
      const std::string path = folder.MessagePath(meta.uid);
      Hasher hasher;
      uint64_t size = 0, bare_lf = 0;
      char previous = '\0';
      while (size_t n = ReadSome(in, buffer_.data(), buffer_.size(), path)) {
        hasher.Update(buffer_.data(), n);
        for (size_t i = 0; i < n; ++i) {
          if (buffer_[i] == '\n' && previous != '\r') ++bare_lf;
          previous = buffer_[i];
        }
        WriteAll(out.get(), buffer_.data(), n, shown);
        size += n;
      }
      if (size != meta.size || hasher.Final() != meta.digest) ThrowMismatch(folder, meta, size);
      const struct timespec times[2] = {{static_cast<time_t>(meta.internal_date), 0},
                                        {static_cast<time_t>(meta.internal_date), 0}};
      if (::futimens(out.get(), times) != 0) ThrowErrno("set times of " + shown);
      // A filesystem clamps a time outside its range (ext4: 1901-12-13 to 2446-05-10) without
      // an error: the import would read another date back.
      struct stat st;
      if (::fstat(out.get(), &st) != 0) ThrowErrno("stat " + shown);
      *date_not_kept = st.st_mtim.tv_sec != static_cast<time_t>(meta.internal_date);
      const int fd = out.release();
      if (::close(fd) != 0) ThrowErrno("close " + shown);
      return size + bare_lf;
    } catch (...) {
      ::unlinkat(tmp_dir, name.c_str(), 0);
      throw;
    }
  }

  int root_;
  std::string root_shown_;
  std::string host_;
  std::string buffer_;
  uint64_t delivered_ = 0;
};

}  // namespace

std::vector<std::string> MboxPaths(const std::vector<std::string>& folders) {
  const std::set<std::string> names(folders.begin(), folders.end());
  auto has_children = [&](const std::string& folder) {
    auto it = names.lower_bound(folder + "/");
    return it != names.end() && it->starts_with(folder + "/");
  };
  std::vector<std::string> paths;
  std::map<std::string, std::string> files;  // path -> folder
  std::map<std::string, std::string> dirs;   // path -> first folder needing it
  for (const std::string& folder : folders) {
    std::string path = has_children(folder) ? folder + ".msg" : folder;
    // The marker of an unfinished export lives in OUTDIR: a folder of its name got "File exists"
    // (exit 74) and kept the user from being exported (helper-138).
    if (path == kUnfinishedMarker || path.starts_with(std::string(kUnfinishedMarker) + "/"))
      Throw(Errc::kInvalidArgument, "cannot export folder '" + folder + "' as mbox: " + path +
                                        " is the name of the marker of an unfinished export (" +
                                        kUnfinishedMarker + "); rename the folder first (storemove rename), "
                                        "or export with --format maildir");
    // What `import --mbox-tree` (and Dovecot's mbox layout) would pass over or refuse is not
    // written: a name beginning with '.' is a control file to them, and deeper than they read
    // is refused (helper-162: such folders were lost on the way back, exit 0).
    const auto refuse = [&](const std::string& why) {
      Throw(Errc::kInvalidArgument, "cannot export folder '" + folder + "' as mbox: " + why +
                                        "; rename the folder first (storemove rename), or export with --format maildir");
    };
    size_t depth = 0;
    for (size_t start = 0;; ++depth) {
      if (path[start] == '.')
        refuse("a name beginning with '.' is a control file to mbox readers (import --mbox-tree passes it over)");
      const size_t slash = path.find('/', start);
      if (slash == std::string::npos) break;
      dirs.emplace(path.substr(0, slash), folder);
      start = slash + 1;
    }
    if (depth > size_t(kMaxMboxTreeDepth))
      refuse("nested " + std::to_string(depth + 1) + " deep, and import --mbox-tree reads " +
             std::to_string(kMaxMboxTreeDepth + 1) + " levels");
    auto [it, fresh] = files.emplace(path, folder);
    if (!fresh)
      Throw(Errc::kInvalidArgument, "cannot export folders '" + it->second + "' and '" + folder +
                                        "' as mbox: both would be written to " + path);
    paths.push_back(std::move(path));
  }
  for (const auto& [path, folder] : files) {
    if (auto dir = dirs.find(path); dir != dirs.end())
      Throw(Errc::kInvalidArgument, "cannot export folders '" + folder + "' and '" + dir->second +
                                        "' as mbox: " + path + " would be both a file and a directory");
    // "NAME.msg" beside a directory "NAME/" reads back as the folder NAME (MboxTreeJobs): right
    // for NAME's own messages, a rename for a folder that is itself called "NAME.msg" (beside
    // sub-folders of a NAME not exported, or with none: helper-162, exit 0 both ways).
    if (path == folder && path.size() > 4 && path.ends_with(".msg"))
      if (auto dir = dirs.find(path.substr(0, path.size() - 4)); dir != dirs.end())
        Throw(Errc::kInvalidArgument, "cannot export folders '" + folder + "' and '" + dir->second + "' as mbox: " +
                                          path + " beside the directory " + dir->first + " would read back as the folder '" +
                                          dir->first + "'; rename one first (storemove rename), or export with --format maildir");
  }
  return paths;
}

// Dovecot's `subscriptions` file (version 2) for the user's own folders the pattern selects.
static void WriteSubscriptions(Store& store, const ExportOptions& options, int root, ExportReport* report) {
  const std::string prefix = "user/" + options.user + "/";
  std::string text(kSubscriptionsVersion2);
  for (const std::string& mailbox : store.Subscriptions(options.user)) {
    if (!mailbox.starts_with(prefix)) {
      ++report->subscriptions_not_kept;
      continue;
    }
    const std::string folder = mailbox.substr(prefix.size());
    if (!store::MatchPattern(options.folder_pattern, folder)) continue;
    text += MaildirSubscriptionLine(folder) + "\n";
    ++report->subscriptions;
  }
  if (report->subscriptions == 0) return;
  const std::string path = JoinPath(options.out_dir, "subscriptions");
  UniqueFd file = CreateFileAt(root, "subscriptions", path);
  WriteAll(file.get(), text.data(), text.size(), path);
}

// One export into *root (opened and checked on the first call); throws FolderMovedAway.
static ExportReport ExportOnce(Store& store, const ExportOptions& options, UniqueFd* root_dir) {
  store::ValidateUserId(options.user);
  if (!store.FindUser(options.user))
    Throw(Errc::kNotFound, "export: user " + options.user + " not found in store " + store.root());
  std::vector<FolderInfo> selected;
  for (FolderInfo& info : store.ListFolders(options.user))
    if (store::MatchPattern(options.folder_pattern, info.folder)) selected.push_back(std::move(info));
  if (selected.empty())
    Throw(Errc::kNotFound, "export: user " + options.user + " has no folder matching '" + options.folder_pattern + "'");

  ExportReport report;
  if (options.format == ExportFormat::kMbox) {
    std::vector<std::string> names;
    for (const FolderInfo& info : selected) names.push_back(info.folder);
    std::vector<std::string> paths = MboxPaths(names);
    for (size_t i = 0; i < selected.size(); ++i) report.folders.push_back({selected[i].folder, std::move(paths[i])});
  } else {
    for (const FolderInfo& info : selected) {
      std::string dir = MaildirFolderDir(info.folder);
      if (dir.size() > NAME_MAX)
        Throw(Errc::kInvalidArgument, "cannot export folder '" + info.folder + "' as Maildir++: its directory name (" +
                                          std::to_string(dir.size()) + " bytes) exceeds " + std::to_string(NAME_MAX));
      report.folders.push_back({info.folder, std::move(dir)});
    }
  }

  if (!root_dir->valid()) *root_dir = PrepareOutDir(options.out_dir);
  const UniqueFd& root = *root_dir;
  CreateFileAt(root.get(), kUnfinishedMarker, JoinPath(options.out_dir, kUnfinishedMarker));
  Exporter exporter(options, root.get(), options.out_dir);
  const bool has_inbox = std::any_of(selected.begin(), selected.end(),
                                     [](const FolderInfo& info) { return info.folder == "INBOX"; });
  if (options.format == ExportFormat::kMaildir && !has_inbox) {
    // A Maildir++ root is the INBOX maildir even when the INBOX is not exported.
    for (const char* sub : {"cur", "new", "tmp"}) MakeDirAt(root.get(), sub, JoinPath(options.out_dir, sub));
  }
  for (ExportedFolder& out : report.folders) {
    std::unique_ptr<Folder> folder;
    FolderSnapshot snap;
    try {
      folder = store.OpenFolder(options.user, out.folder);
      snap = folder->Snapshot();
    } catch (const Error& e) {
      if (e.code() == Errc::kNotFound) throw FolderMovedAway{};  // renamed or deleted since it was listed
      throw;
    }
    if (options.format == ExportFormat::kMbox) {
      exporter.ExportMbox(*folder, snap, &out, &report.flags_not_kept);
    } else {
      exporter.ExportMaildir(*folder, snap, &out, &report.flags_not_kept, &report.dates_not_kept);
    }
    report.messages += out.messages;
    report.bytes += out.bytes;
    report.vanished += out.vanished;
  }
  if (options.format == ExportFormat::kMaildir) {
    WriteSubscriptions(store, options, root.get(), &report);
  } else {
    report.subscriptions_left_out = store.Subscriptions(options.user).size();  // said, not lost in silence (helper-138)
  }
  if (::syncfs(root.get()) != 0) ThrowErrno("sync " + options.out_dir);
  // Complete and on disk: only now does the directory stop saying "unfinished".
  if (::unlinkat(root.get(), kUnfinishedMarker, 0) != 0) ThrowErrno("unlink " + JoinPath(options.out_dir, kUnfinishedMarker));
  Fsync(root.get(), options.out_dir);
  return report;
}

// A folder renamed, moved or deleted while its messages were read leaves a partial copy: the
// export starts again from a new listing (the output so far removed), as often as kAttempts.
ExportReport Export(Store& store, const ExportOptions& options) {
  constexpr int kAttempts = 4;
  UniqueFd root;
  for (int attempt = 1;; ++attempt) {
    try {
      return ExportOnce(store, options, &root);
    } catch (const FolderMovedAway&) {
      if (attempt == kAttempts)
        Throw(Errc::kTempFail, "export: folders of user " + options.user + " were renamed or moved while exported (" +
                                   std::to_string(kAttempts) + " times); run again");
      RemoveContents(root.get(), options.out_dir);
    }
  }
}

}  // namespace storemove::interop
