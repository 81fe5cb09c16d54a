// Bulk mbox import; the rules are in interop/import.h and docs/store-format.md §6.10.
#include "interop/import.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cctype>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include "interop/folder_filler.h"
#include "interop/keyword_bits.h"
#include "interop/mbox_status.h"
#include "interop/unfinished_export.h"
#include "store/mboxlist.h"
#include "util/digest.h"
#include "util/error.h"
#include "util/foreign_link.h"
#include "util/fs.h"

namespace storemove::interop {

using store::Folder;
using store::FolderInfo;
using store::MessageMeta;
using store::Store;

namespace {

[[noreturn]] void Rethrow(const Error& e, const std::string& where) {
  if (where.empty()) throw e;
  Throw(e.code(), where + ": " + e.what());
}

bool HasControlCharacter(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

// The administrator's path, symlinks followed (/dev/stdin, a process substitution's /dev/fd/N, a
// link to an archive): unlike the names inside a store or a Maildir tree, it comes from no one else.
// 0 for `-` and /dev/stdin, else -1: standard input is duplicated, not opened again, as opening
// /dev/stdin checks the permissions of the file behind it, which its holder may lack (helper-126:
// `sudo -u mailsrv storemove import -s /dev/stdin < f` with root's f, "Permission denied", while
// the shell had opened it for us). /dev/fd/N stays a path: N may be one of this process's own.
int InheritedFd(const std::string& path) { return IsStandardInput(path) ? 0 : -1; }

UniqueFd OpenMbox(const std::string& path) {
  if (const int inherited = InheritedFd(path); inherited >= 0) {
    // Started with it closed: /dev/null holds it, opened for writing (tools/run_command_line.cc).
    const int flags = ::fcntl(inherited, F_GETFL);
    if (flags < 0 || (flags & O_ACCMODE) == O_WRONLY)
      Throw(Errc::kNotFound, "open " + path + ": standard input is closed");
    const int fd = ::fcntl(inherited, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) ThrowErrno("open " + path);
    return UniqueFd(fd);
  }
  // root's `import -u joe ~joe/mail/*`: a link joe made to another user's mailbox is not
  // followed into joe's folders (security review #05). Links of root's or ours are.
  RefuseForeignLink(path, "mbox file");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) Throw(Errc::kNotFound, "open " + path + ": no such file or directory");
    ThrowErrno("open " + path);
  }
  return UniqueFd(fd);
}

// Refuses, before anything is written, a file that cannot be read or does not begin like an mbox.
// A pipe (FIFO, /dev/stdin) can be read only once: its first message is checked when it is
// imported, still before its folder is made.
void CheckMboxFile(const ImportJob& job, MboxFlavor flavor) {
  try {
    struct stat st;
    const int inherited = InheritedFd(job.path);
    if (inherited >= 0 ? ::fstat(inherited, &st) != 0 : ::stat(job.path.c_str(), &st) != 0) {
      if (errno == ENOENT) Throw(Errc::kNotFound, "open " + job.path + ": no such file or directory");
      ThrowErrno("stat " + job.path);
    }
    if (S_ISDIR(st.st_mode)) Throw(Errc::kInvalidArgument, job.path + ": a directory, not an mbox file");
    if (!S_ISREG(st.st_mode)) return;
    // Where the file really is: through a link to it, or standard input redirected from it, a
    // killed export's file was imported with exit 0 (helper-137).
    std::string real;
    if (inherited >= 0) {
      char target[PATH_MAX];
      const ssize_t n = ::readlink(("/proc/self/fd/" + std::to_string(inherited)).c_str(), target, sizeof target);
      if (n > 0 && target[0] == '/') real.assign(target, size_t(n));
    } else if (char* resolved = ::realpath(job.path.c_str(), nullptr)) {
      real = resolved;
      ::free(resolved);
    }
    if (const size_t slash = real.rfind('/'); slash != std::string::npos)
      RefuseUnfinishedExport(job.path, slash == 0 ? "/" : real.substr(0, slash));
    // A descriptor shares its offset with ours: read once, checked when imported, like a pipe.
    if (inherited >= 0) return;
    UniqueFd fd = OpenMbox(job.path);
    MboxReader reader(fd.get(), job.path, flavor);
    reader.Start();  // throws kCorrupt "not an mbox"
  } catch (const Error& e) {
    Rethrow(e, job.where);
  }
}

struct FileResult : ImportedFile {
  bool created = false;
};

// A file opened and its beginning checked (MboxReader::Start: "From " and a readable first
// envelope line): a pipe's can be read only once, and nothing is made for it (not even its new
// user) until it is known to be an mbox.
struct OpenedMbox {
  UniqueFd fd;
  std::unique_ptr<MboxReader> reader;
  bool started = false;
};

OpenedMbox OpenMboxAndStart(const ImportJob& job, MboxFlavor flavor, const StallPolicy& stall) {
  OpenedMbox opened;
  opened.fd = OpenMbox(job.path);
  ::posix_fadvise(opened.fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  opened.reader = std::make_unique<MboxReader>(opened.fd.get(), job.path, flavor);
  opened.reader->set_stall_policy(stall);
  opened.started = opened.reader->Start();
  return opened;
}

// The pseudo message UW-IMAP, Pine and Dovecot put first in an mbox to keep the folder's
// UIDVALIDITY and keywords: not mail.
bool WrittenByImapServer(std::string_view first_message) {
  return HeaderField(first_message, "X-IMAP") || HeaderField(first_message, "X-IMAPbase");
}

// The user-flag bits of the keywords in "X-Keywords:" (space-separated; Dovecot pads the field
// with blanks to rewrite it in place); new names join the folder's, those it cannot keep are
// counted.
uint64_t KeywordsFromHeader(std::string_view message, KeywordBits& keywords, uint64_t* dropped) {
  const std::optional<std::string_view> field = HeaderField(message, "X-Keywords");
  if (!field) return 0;
  uint64_t bits = 0;
  for (size_t pos = 0; pos < field->size();) {
    const size_t start = field->find_first_not_of(" \t", pos);
    if (start == std::string_view::npos) break;
    size_t end = field->find_first_of(" \t", start);
    if (end == std::string_view::npos) end = field->size();
    const std::string_view name = field->substr(start, end - start);
    pos = end;
    // Not an IMAP keyword ("\\Seen", "(x)", 8-bit): no IMAP server wrote it there (helper-77).
    std::optional<size_t> bit = keywords.Bit(name);
    if (bit) {
      bits |= uint64_t{1} << *bit;
    } else {
      ++*dropped;
    }
  }
  return bits;
}

bool IsFolderDataMessage(std::string_view message) {
  if (!HeaderField(message, "X-IMAP") && !HeaderField(message, "X-IMAPbase")) return false;
  auto subject = HeaderField(message, "Subject");
  return subject && subject->find("FOLDER INTERNAL DATA") != std::string_view::npos;
}

FileResult ImportFile(Store& store, const ImportJob& job, OpenedMbox& opened, const ImportOptions& options,
                      int64_t now) {
  FileResult result;
  MboxReader& reader = *opened.reader;
  MboxMessage message;

  std::unique_ptr<Folder> folder;
  std::vector<std::string> names;  // the folder's user-flag names
  if (std::optional<store::FolderInfo> info = store.FindFolder(job.user, job.folder)) {
    folder = store.OpenFolder(job.user, job.folder);
    names = info->user_flag_names;
  } else {
    // Invisible until the whole file is in; UIDs are 1, 2, ... so each message goes straight to
    // its final name (no rename). A leftover of a killed run is overwritten (§6.5).
    folder = store.CreateUnpublishedFolder(job.user, job.folder, 0);
    result.created = true;
  }
  KeywordBits keywords(std::move(names));
  bool server_written = false;  // X-Keywords are read (see ImportedFile::keywords_dropped)
  FolderFiller filler(*folder, result.created, !options.append_all);
  if (options.after_batch && !result.created)  // the seam reports batches of existing folders only
    filler.after_batch = [&](uint64_t added) { options.after_batch(job, added); };
  filler.before_commit = options.before_commit;
  // A message larger than the reader holds whole (a 200 MiB attachment) is written as it is
  // read, so memory stays at a few blocks whatever the file holds.
  std::unique_ptr<store::MessageWriter> large;
  uint32_t large_uid = 0;
  uint8_t large_flags = 0;  // from its first piece, which holds its header
  uint64_t large_user_flags = 0;
  int64_t large_sent_date = 0;  // its Date:, from its first piece
  bool first = true;
  const auto start_large = [&] {
    large_uid = 0;
    large = filler.NewMessage(&large_uid);
  };
  const MboxSink write_large = [&](std::string_view piece) {
    if (!large) {
      start_large();
      if (first) server_written = WrittenByImapServer(piece);
      large_flags = FlagsFromStatusHeaders(piece, message.envelope_sender == "-");
      large_sent_date = store::SentDate(piece.substr(0, store::HeaderSize(piece)));
      large_user_flags = server_written ? KeywordsFromHeader(piece, keywords, &result.keywords_dropped) : 0;
    }
    large->Write(piece);
  };
  for (bool have_message = opened.started && reader.Next(&message, write_large); have_message;
       have_message = reader.Next(&message, write_large)) {
    MessageMeta meta;
    // An envelope line without a date (or one unread) leaves the message's Date: as its internal
    // date, as Dovecot and mutt take it, before the import's time (helper-133 #11).
    meta.internal_date = message.envelope_date;
    if (meta.internal_date == 0) {
      meta.internal_date = message.streamed ? large_sent_date
                                            : store::SentDate(std::string_view(message.bytes).substr(
                                                  0, store::HeaderSize(message.bytes)));
      if (meta.internal_date == 0) meta.internal_date = now;
    }
    const bool was_first = std::exchange(first, false);
    if (!message.streamed) {
      if (was_first) server_written = WrittenByImapServer(message.bytes);
      if (was_first && IsFolderDataMessage(message.bytes)) {
        ++result.folder_data;
        continue;
      }
      meta.flags = FlagsFromStatusHeaders(message.bytes, message.envelope_sender == "-");
      if (server_written) meta.user_flags = KeywordsFromHeader(message.bytes, keywords, &result.keywords_dropped);
      keywords.Save(*folder);  // new names before any commit that uses them
      filler.Add(message.bytes, meta);
      continue;
    }
    meta.flags = large_flags;
    meta.user_flags = large_user_flags;
    keywords.Save(*folder);
    if (!large) start_large();  // a streamed message has bytes; this only keeps Finish() safe
    meta.uid = large_uid;
    filler.AddStaged(large->Finish(meta));
    large.reset();
  }
  filler.Finish();
  if (result.created) store.PublishFolder(*folder);
  result.messages = filler.added();
  result.bytes = filler.added_bytes();
  result.skipped = filler.skipped();
  result.empty = filler.added_empty();
  result.text_from_lines = reader.text_from_lines();
  return result;
}

}  // namespace

bool IsStandardInput(const std::string& path) {
  return path == "-" || path == "/dev/stdin" || path == "/dev/fd/0" || path == "/proc/self/fd/0";
}

std::string FolderForFile(const std::string& path) {
  std::string_view name = path;
  while (name.size() > 1 && name.back() == '/') name.remove_suffix(1);
  if (size_t slash = name.rfind('/'); slash != std::string_view::npos) name.remove_prefix(slash + 1);
  if (name.size() > 5 && name.ends_with(".mbox")) name.remove_suffix(5);
  return std::string(name);
}

std::vector<ImportJob> ReadImportList(const std::string& list_path) {
  const std::string text = ReadFile(list_path);
  std::string base;
  if (size_t slash = list_path.rfind('/'); slash != std::string::npos) base = list_path.substr(0, slash + 1);
  std::vector<ImportJob> jobs;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    const std::string where = list_path + " line " + std::to_string(line_no);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    std::vector<std::string_view> fields;
    for (size_t start = 0;;) {
      size_t tab = line.find('\t', start);
      fields.push_back(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
      if (tab == std::string_view::npos) break;
      start = tab + 1;
    }
    if (fields.size() != 3)
      Throw(Errc::kInvalidArgument, where + ": expected USER<TAB>FOLDER<TAB>MBOX_PATH, found " +
                                        std::to_string(fields.size()) + " field" + (fields.size() == 1 ? "" : "s"));
    ImportJob job{std::string(fields[0]), std::string(fields[1]), std::string(fields[2]), where};
    try {
      store::ValidateUserId(job.user);
      store::ValidateFolderName(job.folder);
    } catch (const Error& e) {
      Rethrow(e, where);
    }
    if (job.path.empty()) Throw(Errc::kInvalidArgument, where + ": empty mbox path");
    if (HasControlCharacter(job.path))
      Throw(Errc::kInvalidArgument, where + ": the mbox path holds a control character");
    if (job.path.front() != '/') job.path = base + job.path;
    jobs.push_back(std::move(job));
  }
  return jobs;
}

ImportReport ImportMboxes(Store& store, const std::vector<ImportJob>& jobs, const ImportOptions& options) {
  ImportReport report;
  // Everything is checked before the first write: names, then each file's first bytes.
  for (const ImportJob& job : jobs) {
    try {
      store::ValidateUserId(job.user);
      store::ValidateFolderName(job.folder);
    } catch (const Error& e) {
      Rethrow(e, job.where);
    }
  }
  for (const ImportJob& job : jobs) CheckMboxFile(job, options.flavor);

  // One write lock per user: its jobs run together, in their order.
  std::vector<std::string> users;
  std::map<std::string, std::vector<const ImportJob*>> by_user;
  for (const ImportJob& job : jobs) {
    auto [it, added] = by_user.try_emplace(job.user);
    if (added) users.push_back(job.user);
    it->second.push_back(&job);
  }
  const int64_t now = static_cast<int64_t>(::time(nullptr));
  for (const std::string& user : users) {
    Store::UserWriteLock lock = store.LockUserForWriting(user, options.on_wait);
    const std::vector<const ImportJob*>& mine = by_user[user];
    bool imports_inbox = false;
    for (const ImportJob* job : mine) imports_inbox = imports_inbox || store::NormalizeFolder(job->folder) == "INBOX";
    bool user_ready = false;
    for (const ImportJob* job : mine) {
      FileResult r;
      try {
        OpenedMbox opened = OpenMboxAndStart(*job, options.flavor, options.stall);
        if (!user_ready) {
          // A new user gets its record first; its INBOX is either one of the imports (built
          // unpublished like any new folder: the user did not exist, so no delivery depended on
          // it) or created empty.
          store.RefuseIfMoved(user, "an import");
          if (!store.FindUser(user)) store.CreateUser(user, {}, /*with_inbox=*/false);
          if (!imports_inbox && !store.FindFolder(user, "INBOX")) store.CreateFolder(user, "INBOX");
          user_ready = true;
        }
        r = ImportFile(store, *job, opened, options, now);
      } catch (const Error& e) {
        Rethrow(e, job->where);
      }
      ++report.files;
      report.folders_created += r.created;
      report.messages += r.messages;
      report.bytes += r.bytes;
      report.skipped += r.skipped;
      report.empty += r.empty;
      report.folder_data += r.folder_data;
      report.keywords_dropped += r.keywords_dropped;
      if (options.on_file) options.on_file(*job, r);
    }
    // One recount, under the delivery gate, makes the usage exact: also what a delivery left
    // short (a quota update that failed after its commit) or a killed run left behind.
    Store::LockWait gate_wait;
    gate_wait.on_wait = options.on_wait;
    store.RecomputeQuota(user, gate_wait);
    ++report.users;
  }
  return report;
}

}  // namespace storemove::interop
