// storemove import --maildir; the rules are in interop/maildir_import.h and
// docs/store-format.md §6.11.
#include "interop/maildir_import.h"
#include "interop/unfinished_export.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "interop/dovecot_subscriptions.h"
#include "interop/folder_filler.h"
#include "store/store.h"
#include "interop/maildir_names.h"
#include "store/mboxlist.h"
#include "util/error.h"
#include "util/printable.h"
#include "util/external_sort.h"
#include "util/file_digest.h"

namespace storemove::interop {

using store::Folder;
using store::MessageMeta;
using store::Store;

namespace {

constexpr size_t kMaxKeywordName = 200;  // store.idx's limit for a user-flag name (§4.2)
constexpr size_t kMaxUserFlags = 64;     // store.idx's limit of user flags per folder

std::string Shown(const std::string& dir, std::string_view name) { return JoinPath(dir, EscapeControls(name)); }

// "1 message has", "2 messages have".
std::string CountedMessages(uint64_t n) {
  return std::to_string(n) + (n == 1 ? " message has" : " messages have");
}

[[noreturn]] void ThrowLink(const std::string& shown) {
  Throw(Errc::kCorrupt, shown + " is a symbolic link; refusing to follow it");
}

// The folder-name component of a plain directory (Dovecot's LAYOUT=fs, mbsync's Verbatim):
// decoded from modified UTF-7 as Dovecot writes names, its '.' and '\' taken as they are
// (helper-140: "Backup\2019" became "Backup 19"); a name that is no valid modified UTF-7
// ("AT&T report", raw UTF-8 "Café"), or not in the form Dovecot writes, is taken as it is.
std::string PlainDirectoryFolderName(std::string_view name) {
  std::string escaped;
  for (char c : name) {
    if (c == '.')
      escaped += "\\2e";
    else if (c == '\\')
      escaped += "\\5c";
    else
      escaped.push_back(c);
  }
  try {
    std::string decoded = MaildirFolderName(escaped);
    // Only the form Dovecot writes is decoded: "&AGEAYgBj-" (plain ASCII encoded, which RFC 3501
    // forbids) stays as it is, as Dovecot and mbsync read it (helper-141).
    if (MaildirFolderDir(decoded) == "." + escaped) return decoded;
  } catch (const Error&) {
  }
  return std::string(name);
}

// Opens the directory `path` ("Lists/dev") below `dirfd` one component at a time, following no
// link on the way (a link put there since the scan is refused, not followed).
UniqueFd OpenBelow(int dirfd, const std::string& path, const std::string& tree_dir) {
  UniqueFd here;
  int at = dirfd;
  std::string shown = tree_dir;
  for (size_t start = 0; start <= path.size();) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    const std::string component = path.substr(start, end - start);
    shown = Shown(shown, component);
    here = OpenAt(at, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, shown);
    at = here.get();
    start = end + 1;
  }
  return here;
}

// Prefixes the path an error is about.
[[noreturn]] void Rethrow(const Error& e, const std::string& shown) { Throw(e.code(), shown + ": " + e.what()); }

using Entry = DirEntry;

std::vector<Entry> ListDirectory(int dirfd, const std::string& shown) { return ListDirectoryAt(dirfd, shown); }

// A control file (a uidlist, dovecot-keywords) of a folder directory, opened if present.
UniqueFd OpenControlFile(int dirfd, const std::string& name, const std::string& shown) {
  UniqueFd fd = TryOpenAt(dirfd, name, O_RDONLY | O_NONBLOCK, 0, shown);
  if (!fd.valid()) return fd;
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) ThrowErrno("stat " + shown);
  if (!S_ISREG(st.st_mode)) Throw(Errc::kCorrupt, shown + ": not a regular file");
  return fd;
}

// A small one read whole. Dovecot writes these in kilobytes; one in a user's home that is not
// (a planted or foreign file) is refused before it takes the memory.
std::optional<std::string> ReadControlFile(int dirfd, const std::string& name, const std::string& shown) {
  static_assert(kMaxSubscriptionsFile == 16 << 20, "the message below says 16 MiB");
  UniqueFd fd = OpenControlFile(dirfd, name, shown);
  if (!fd.valid()) return std::nullopt;
  std::string text;
  char buf[65536];
  while (size_t n = ReadSome(fd.get(), buf, sizeof buf, shown)) {
    text.append(buf, n);
    if (text.size() > kMaxSubscriptionsFile) Throw(Errc::kInvalidArgument, shown + ": over 16 MiB, not a " + name + " file");
  }
  return text;
}

std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    lines.push_back(text.substr(pos, eol - pos));
    pos = eol + 1;
  }
  return lines;
}

template <typename T>
bool ParseNumber(std::string_view text, T* out) {
  if (text.empty()) return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

// A line of a uidlist longer than this is refused: a file name is at most 255 bytes.
constexpr size_t kMaxUidListLine = 64 << 10;

void PutBigEndian(std::string* out, uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>(value >> (8 * i)));
}
uint64_t GetBigEndian(std::string_view in, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value = value << 8 | static_cast<unsigned char>(in[static_cast<size_t>(i)]);
  return value;
}

[[noreturn]] void ThrowUidListLine(const std::string& shown, uint64_t line_no, const std::string& why) {
  Throw(Errc::kCorrupt, shown + " line " + std::to_string(line_no) + ": " + why +
                            " (remove the file to import this folder with new UIDs)");
}

// The lines of a uidlist read a block at a time ("a\nb" and "a\nb\n" are both two lines).
class LineReader {
 public:
  LineReader(int fd, std::string shown) : fd_(fd), shown_(std::move(shown)) {}
  // The next line without its '\n', valid until the next call; false at the end.
  bool Next(std::string_view* line) {
    for (;;) {
      const size_t eol = buffer_.find('\n', pos_);
      // Not counting a CR before the LF (a file edited on Windows).
      size_t length = std::min(eol, buffer_.size()) - pos_;
      if (eol != std::string::npos && length > 0 && buffer_[eol - 1] == '\r') --length;
      if (length > kMaxUidListLine + (eol == std::string::npos ? 1 : 0))
        ThrowUidListLine(shown_, line_no_ + 1, "longer than " + std::to_string(kMaxUidListLine) + " bytes");
      if (eol != std::string::npos) {
        *line = std::string_view(buffer_).substr(pos_, eol - pos_);
        pos_ = eol + 1;
        ++line_no_;
        return true;
      }
      buffer_.erase(0, pos_);
      pos_ = 0;
      if (at_end_) {
        if (buffer_.empty()) return false;
        *line = buffer_;
        pos_ = buffer_.size();
        ++line_no_;
        return true;
      }
      char block[65536];
      const size_t n = ReadSome(fd_, block, sizeof block, shown_);
      if (n == 0) at_end_ = true;
      buffer_.append(block, n);
    }
  }
  size_t line_no() const { return line_no_; }

 private:
  int fd_;
  std::string shown_;
  std::string buffer_;
  size_t pos_ = 0;
  size_t line_no_ = 0;
  bool at_end_ = false;
};

// A name as a sort key, then more bytes: its NULs as NUL 0xff and a NUL NUL after it, so keys
// sort as the names do whatever follows (helper-147: "a", NUL... sorted between two lines of "a",
// and the repeat of "a" went unseen). No file name holds a NUL; a uidlist line can.
void AppendOrderedName(std::string* key, std::string_view name) {
  for (char c : name) {
    key->push_back(c);
    if (c == '\0') key->push_back('\xff');
  }
  key->append(2, '\0');
}

std::string OrderedNameOf(std::string_view ordered) {
  std::string name;
  for (size_t i = 0; i < ordered.size(); ++i) {
    const char c = ordered[i];
    if (c == '\0') {
      if (i + 1 >= ordered.size() || ordered[i + 1] != '\xff') break;  // NUL NUL: the end
      ++i;
    }
    name.push_back(c);
  }
  return name;
}

struct UidList {
  uint32_t uidvalidity = 0;
  uint32_t uidnext = 0;
};

// dovecot-uidlist or courierimapuiddb, version 3 ("3 V<uidvalidity> N<nextuid> G<guid>", then "<uid> [<ext>...]
// :<file name>") or version 1 ("1 <uidvalidity> <nextuid>", then "<uid> <file name>"). Read a
// line at a time into two sorts, by UID and by base name, so a list of a million lines needs no
// more memory than a small one; `listed` gets one record a base name (the name, '\0', the UID),
// by name. Refused as a reading in line order would: the first line that repeats a UID or a
// name, or else the first malformed line.
UidList ParseUidList(int fd, const std::string& shown, size_t scratch_memory, RecordSpool* listed) {
  LineReader reader(fd, shown);
  auto bad = [&](const std::string& why) { ThrowUidListLine(shown, std::max<size_t>(reader.line_no(), 1), why); };
  UidList list;
  std::string_view first;
  if (!reader.Next(&first)) bad("empty");
  std::vector<std::string_view> header;
  for (size_t start = 0; start <= first.size();) {
    size_t space = first.find(' ', start);
    if (space == std::string_view::npos) space = first.size();
    if (space > start) header.push_back(first.substr(start, space - start));
    start = space + 1;
  }
  int version = 0;
  if (!header.empty() && header[0] == "3") {
    version = 3;
    for (size_t i = 1; i < header.size(); ++i) {
      if (header[i][0] == 'V' && !ParseNumber(header[i].substr(1), &list.uidvalidity)) bad("bad UIDVALIDITY");
      if (header[i][0] == 'N' && !ParseNumber(header[i].substr(1), &list.uidnext)) bad("bad next UID");
    }
  } else if (header.size() >= 3 && header[0] == "1") {
    version = 1;
    if (!ParseNumber(header[1], &list.uidvalidity)) bad("bad UIDVALIDITY");
    if (!ParseNumber(header[2], &list.uidnext)) bad("bad next UID");
  } else {
    bad("not a uidlist of version 1 or 3");
  }
  if (list.uidvalidity == 0) bad("no UIDVALIDITY");
  ExternalSorter by_uid(scratch_memory);   // key: UID; value: line number
  ExternalSorter by_base(scratch_memory);  // key: AppendOrderedName(base name), line number; value: UID
  std::optional<Error> malformed;          // the first malformed line: reading stops there
  std::string key, value;
  try {
    for (std::string_view line; reader.Next(&line);) {
      if (line.empty()) continue;
      const size_t space = line.find(' ');
      uint32_t uid = 0;
      if (space == std::string_view::npos || !ParseNumber(line.substr(0, space), &uid) || uid == 0 ||
          uid == UINT32_MAX)
        bad("expected '<uid> " + std::string(version == 3 ? "[<ext>...] :" : "") + "<file name>'");
      std::string_view name;
      if (version == 3) {
        // Extension fields are single words; the file name is the first field that starts with ':'.
        size_t colon = line.find(" :", space);
        if (colon == std::string_view::npos) bad("no ':<file name>' field");
        name = line.substr(colon + 2);
      } else {
        name = line.substr(space + 1);
      }
      name = SplitMaildirFileName(name).base;
      if (name.empty()) bad("empty file name");
      key.clear();
      PutBigEndian(&key, uid, 4);
      value.clear();
      PutBigEndian(&value, reader.line_no(), 8);
      by_uid.Add(key, value);
      key.clear();
      AppendOrderedName(&key, name);
      PutBigEndian(&key, reader.line_no(), 8);
      value.clear();
      PutBigEndian(&value, uid, 4);
      by_base.Add(key, value);
    }
  } catch (const Error& e) {
    if (e.code() != Errc::kCorrupt) throw;  // a read error is not the list's
    malformed = e;
  }
  // Equal keys come in line order: of a repeat, the later line is the one a reading in line
  // order stops at; the earliest such line over both sorts is named (a UID before a name).
  uint64_t repeat_line = UINT64_MAX;
  std::string repeat;
  by_uid.Finish();
  std::string_view k, v;
  std::string last;
  while (by_uid.Next(&k, &v)) {
    if (k == last && GetBigEndian(v, 8) < repeat_line) {
      repeat_line = GetBigEndian(v, 8);
      repeat = "UID " + std::to_string(GetBigEndian(k, 4)) + " listed twice";
    }
    last.assign(k);
  }
  by_base.Finish();
  last.clear();
  bool any = false;
  while (by_base.Next(&k, &v)) {
    const std::string_view ordered = k.substr(0, k.size() - 8);
    const std::string base = OrderedNameOf(ordered);
    if (any && ordered == last) {
      const uint64_t line = GetBigEndian(k.substr(k.size() - 8), 8);
      if (line < repeat_line) {
        repeat_line = line;
        repeat = "file " + EscapeControls(base) + " listed twice";
      }
      continue;
    }
    any = true;
    last.assign(ordered);
    std::string record(base);
    record.push_back('\0');
    record.append(v);
    listed->Append(record);
  }
  if (repeat_line != UINT64_MAX) ThrowUidListLine(shown, repeat_line, repeat);
  if (malformed) throw *malformed;
  return list;
}

// dovecot-keywords: "<number> <name>" lines; numbers 0..25 are the letters 'a'..'z' (Dovecot
// keeps later numbers for names no file name can carry: they are ignored here too).
// A name that is not an IMAP keyword (Dovecot's sieve or a hand-made file can write one) is
// left out, with a warning: a restore leaves it out too, and until 2026-12-06 refused the whole
// folder for it (helper-93).
void ParseKeywords(std::string_view text, const std::string& shown,
                   std::vector<std::string>* keywords, std::vector<std::string>* warnings) {
  keywords->resize(kMaildirKeywords);
  size_t line_no = 0;
  for (std::string_view line : Lines(text)) {
    ++line_no;
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    unsigned number = 0;
    const std::string_view name = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    bool name_ok = !name.empty() && name.size() <= kMaxKeywordName;
    for (unsigned char c : name) name_ok = name_ok && c > 0x20 && c != 0x7f;
    if (space == std::string_view::npos || !ParseNumber(line.substr(0, space), &number) || !name_ok)
      Throw(Errc::kCorrupt, shown + " line " + std::to_string(line_no) +
                                ": expected '<number> <keyword>' (a keyword of 1 to 200 printable characters)");
    if (number >= keywords->size()) continue;
    if (!store::IsUserFlagName(name)) {
      (*keywords)[number].clear();  // a later line for a number wins, as before
      warnings->push_back(shown + " line " + std::to_string(line_no) + ": keyword '" + EscapeControls(name) +
                          "' is not an IMAP keyword (RFC 3501 atom); its messages are imported without it");
      continue;
    }
    (*keywords)[number] = std::string(name);
  }
}

// The leading number of a name (a delivery time): unlisted files go in by it, then bytewise, so
// "999.x" comes before "1000.x". UINT64_MAX for a name without one.
uint64_t DeliveryLead(std::string_view name) {
  uint64_t n = 0;
  size_t i = 0;
  for (; i < name.size() && i < 19 && name[i] >= '0' && name[i] <= '9'; ++i)
    n = n * 10 + static_cast<uint64_t>(name[i] - '0');
  return i == 0 ? UINT64_MAX : n;
}

// A file as the scan keeps it: a byte of in_new, passed and flags_not_kept, the UID, the flags,
// the keyword bits, then the name.
std::string EncodeFile(const MaildirMessageFile& file) {
  std::string out;
  out.push_back(static_cast<char>(int{file.in_new} | int{file.passed} << 1 | int{file.flags_not_kept} << 2));
  PutBigEndian(&out, file.uid, 4);
  out.push_back(static_cast<char>(file.flags));
  PutBigEndian(&out, file.keyword_bits, 4);
  out += file.name;
  return out;
}

constexpr size_t kEncodedFileHead = 10;

MaildirMessageFile DecodeFile(std::string_view in) {
  if (in.size() < kEncodedFileHead) Throw(Errc::kCorrupt, "a Maildir scan's record cut short");
  MaildirMessageFile file;
  const auto bits = static_cast<unsigned char>(in[0]);
  file.in_new = bits & 1;
  file.passed = bits & 2;
  file.flags_not_kept = bits & 4;
  file.uid = static_cast<uint32_t>(GetBigEndian(in.substr(1), 4));
  file.flags = static_cast<uint8_t>(in[5]);
  file.keyword_bits = static_cast<uint32_t>(GetBigEndian(in.substr(6), 4));
  file.name = std::string(in.substr(kEncodedFileHead));
  return file;
}

// Where a file goes in the import's order: listed files by UID, then the others by delivery
// name, cur/'s before new/'s of the same name.
std::string ImportOrderKey(const MaildirMessageFile& file) {
  std::string key;
  if (file.uid != 0) {
    key.push_back('\0');
    PutBigEndian(&key, file.uid, 4);
    return key;
  }
  key.push_back('\1');
  PutBigEndian(&key, DeliveryLead(file.name), 8);
  key += file.name;  // holds no NUL: a file name cannot
  key.push_back('\0');
  key.push_back(file.in_new ? '\1' : '\0');
  return key;
}

// Gives each file the UID the list names for its base name: the files sorted by (base, cur/
// before new/, name) are walked beside `listed` (ParseUidList: one record a base, by base), so
// the first file of a base claims its UID (cur/'s first, by name).
template <typename EachFile>
void JoinUidList(ExternalSorter& files, RecordSpool* listed, EachFile each) {
  std::optional<RecordSpool::Reader> reader;
  if (listed) reader.emplace(*listed, 0, listed->end());
  std::string_view key, value, record;
  bool more = reader && reader->Next(&record);
  bool claimed = false;
  auto listed_base = [&] { return record.substr(0, record.size() - 5); };
  while (files.Next(&key, &value)) {
    MaildirMessageFile file = DecodeFile(value);
    const std::string_view base = SplitMaildirFileName(file.name).base;
    while (more && listed_base() < base) {
      more = reader->Next(&record);
      claimed = false;
    }
    if (more && !claimed && listed_base() == base) {
      file.uid = static_cast<uint32_t>(GetBigEndian(record.substr(record.size() - 4), 4));
      claimed = true;
    }
    each(file);
  }
}

MaildirFolderScan ScanFolder(int folder_fd, const std::string& shown, std::string folder, std::string path,
                             const std::shared_ptr<RecordSpool>& spool, size_t scratch_memory,
                             std::vector<std::string>* warnings) {
  MaildirFolderScan scan;
  scan.folder = std::move(folder);
  scan.path = std::move(path);
  bool has_new = false;
  for (const Entry& entry : ListDirectory(folder_fd, shown)) {
    if (entry.type == S_IFLNK) ThrowLink(Shown(shown, entry.name));
    if (entry.name == "new") has_new = entry.type == S_IFDIR;
  }
  std::optional<RecordSpool> listed;  // the uidlist's base names and UIDs, by name
  // Courier's courierimapuiddb is a version 1 uidlist (Dovecot's source says so); Dovecot's wins.
  for (const char* name : {"dovecot-uidlist", "courierimapuiddb"}) {
    const std::string uidlist_shown = JoinPath(shown, name);
    UniqueFd fd = OpenControlFile(folder_fd, name, uidlist_shown);
    if (!fd.valid()) continue;
    listed.emplace(scratch_memory);
    const UidList uidlist = ParseUidList(fd.get(), uidlist_shown, scratch_memory, &*listed);
    scan.uidvalidity = uidlist.uidvalidity;
    scan.uidnext = uidlist.uidnext;
    scan.uidlist = name;
    break;
  }
  const std::string keywords_shown = JoinPath(shown, "dovecot-keywords");
  if (std::optional<std::string> text = ReadControlFile(folder_fd, "dovecot-keywords", keywords_shown))
    ParseKeywords(*text, keywords_shown, &scan.keywords, warnings);
  uint32_t named = 0;
  for (size_t i = 0; i < scan.keywords.size(); ++i)
    if (!scan.keywords[i].empty()) named |= uint32_t{1} << i;
  // A folder whose dovecot-keywords names $Forwarded is read as Dovecot reads it, P ignored:
  // Dovecot keeps a P it does not know when it clears the keyword's letter, and the flag
  // came back on the next rerun (helper-142).
  uint32_t forwarded_letters = 0;  // the letters dovecot-keywords gives $Forwarded (in any case)
  for (size_t i = 0; i < scan.keywords.size(); ++i)
    if (IsPassedKeyword(scan.keywords[i])) forwarded_letters |= uint32_t{1} << i;
  const bool letter_forwards = forwarded_letters != 0;
  // Where P and the letter disagree, a reader of P (mutt, mbsync) changed one of them, or
  // Dovecot cleared the letter: said, not followed in silence (helper-144).
  uint64_t disagree = 0;

  // The files, by base name first for the walk beside the uidlist (JoinUidList). A folder's
  // files are never all in memory: a million took 370 MB.
  std::optional<ExternalSorter> by_name(std::in_place, scratch_memory);
  std::string key;
  for (const char* sub : {"cur", "new"}) {
    const bool in_new = sub[0] == 'n';
    if (in_new && !has_new) continue;
    const std::string sub_shown = JoinPath(shown, sub);
    UniqueFd sub_fd = OpenAt(folder_fd, sub, O_RDONLY | O_DIRECTORY, 0, sub_shown);
    ForEachDirectoryEntry(sub_fd.get(), sub_shown, [&](Entry& entry) {
      if (entry.name.starts_with('.')) return;  // the Maildir spec: such files are not messages
      if (entry.type == S_IFLNK) ThrowLink(Shown(sub_shown, entry.name));
      if (entry.type != S_IFREG)
        Throw(Errc::kCorrupt, Shown(sub_shown, entry.name) +
                                  (entry.type == S_IFDIR
                                       ? ": a directory in a folder's " + std::string(sub) +
                                             "/ (a folder named \"" + sub + "\" below it, as mbsync writes one? "
                                             "rename it at the source)"
                                       : std::string(": not a regular file (a message file was expected)")));
      MaildirMessageFile file;
      file.in_new = in_new;
      // A name in new/ gives flags too, as Dovecot reads it: mbsync, offlineimap and Python's
      // mailbox put unread messages there with their other flags (helper-138: \Flagged and
      // \Deleted of every unread message were dropped).
      const MaildirFileName parts = SplitMaildirFileName(entry.name);
      const MaildirFlags flags = ParseMaildirFlagLetters(parts.letters);
      file.flags = flags.flags;
      file.passed = flags.passed && !letter_forwards;  // mbsync's, mutt's and offlineimap's $Forwarded (helper-138)
      disagree += letter_forwards && flags.passed != ((flags.keyword_bits & forwarded_letters) != 0);
      scan.any_passed |= file.passed;
      file.keyword_bits = flags.keyword_bits & named;
      file.flags_not_kept = flags.unknown != 0 || (flags.keyword_bits & ~named) != 0;
      key.assign(parts.base);
      key.push_back('\0');
      key.push_back(in_new ? '\1' : '\0');
      key += entry.name;
      file.name = std::move(entry.name);
      by_name->Add(key, EncodeFile(file));
    });
  }
  by_name->Finish();

  // Then in import order, into the tree's spool.
  ExternalSorter in_order(scratch_memory);
  uint64_t last_listed = 0;
  JoinUidList(*by_name, listed ? &*listed : nullptr, [&](const MaildirMessageFile& file) {
    scan.unlisted += file.uid == 0;
    last_listed = std::max<uint64_t>(last_listed, file.uid);
    scan.flags_not_kept += file.flags_not_kept;
    scan.passed_otherwise_kept += file.passed && !file.flags_not_kept;
    in_order.Add(ImportOrderKey(file), EncodeFile(file));
  });
  scan.first_unlisted_uid = std::max<uint64_t>({scan.uidnext, 1, last_listed + 1});
  // Gone before the copy into the tree's spool: where $TMPDIR takes nothing, all is in memory.
  by_name.reset();
  listed.reset();
  in_order.Finish();
  const uint64_t begin = spool->end();
  std::string_view ordered_key, ordered_value;
  while (in_order.Next(&ordered_key, &ordered_value)) spool->Append(ordered_value);
  scan.messages = MaildirMessageFiles(spool, begin, spool->end(), in_order.size());
  if (disagree)
    warnings->push_back(shown + ": " + CountedMessages(disagree) +
                        " P (mutt's and mbsync's $Forwarded) without the letter dovecot-keywords gives $Forwarded, or "
                        "that letter without P: read as Dovecot reads them, by the letter");
  if (scan.flags_not_kept)
    warnings->push_back(shown + ": " + std::to_string(scan.flags_not_kept) +
                        " messages have flag letters the store cannot keep (a keyword letter dovecot-keywords does "
                        "not name, or a letter no Maildir writer defines); they are imported without them");
  return scan;
}

// Refuses, before anything is written, a new folder whose unlisted files would need UIDs beyond
// the store's highest (UINT32_MAX - 1): the commit would fail mid-import otherwise.
void CheckUnlistedUidsFit(const MaildirFolderScan& scan, const std::string& shown) {
  const uint64_t unlisted = scan.unlisted;
  const uint64_t first = scan.first_unlisted_uid, last = first + unlisted - 1;
  if (unlisted == 0 || last < UINT32_MAX) return;
  Throw(Errc::kCorrupt, JoinPath(shown, scan.uidlist) + ": next UID " + std::to_string(scan.uidnext) + ": the " +
                            std::to_string(unlisted) + " message file" + (unlisted == 1 ? "" : "s") +
                            " it does not list would need UID" +
                            (unlisted == 1 ? " " + std::to_string(first)
                                           : "s " + std::to_string(first) + " to " + std::to_string(last)) +
                            ", past the last UID 4294967294 (remove the file to import this folder with new UIDs)");
}

// A message file up to this size is read whole and stored in one write (most mail); a larger
// one is copied a block at a time, so memory does not grow with it (as the mbox reader does).
constexpr uint64_t kWholeLimit = 4 << 20;
constexpr size_t kCopyBlock = 256 << 10;

// Opens one message file, checking it is a regular file; *st is its fstat.
UniqueFd OpenMessageFile(int dirfd, const std::string& name, const std::string& shown, struct stat* st) {
  UniqueFd fd = OpenAt(dirfd, name, O_RDONLY | O_NONBLOCK, 0, shown);
  if (::fstat(fd.get(), st) != 0) ThrowErrno("stat " + shown);
  if (!S_ISREG(st->st_mode)) Throw(Errc::kCorrupt, shown + ": not a regular file (a message file was expected)");
  return fd;
}

[[noreturn]] void ThrowChanged(const std::string& shown, uint64_t size, uint64_t got) {
  Throw(Errc::kCorrupt, shown + ": changed while being read (" + std::to_string(size) + " bytes, then " +
                            (got > size ? "more" : std::to_string(got)) + "); is a mail server still using the tree?");
}

// Reads a message file of `size` bytes whole, checking it does not change while read.
void ReadMessageFile(int fd, const std::string& shown, uint64_t size, std::string* out) {
  out->resize(static_cast<size_t>(size) + 1);  // one byte more: a file that grew shows
  size_t got = 0;
  while (got < out->size()) {
    const size_t n = ReadSome(fd, out->data() + got, out->size() - got, shown);
    if (n == 0) break;
    got += n;
  }
  if (got != size) ThrowChanged(shown, size, got);
  out->resize(static_cast<size_t>(size));
}

// The same for a large one, copied to `writer` a block at a time.
void CopyMessageFile(int fd, const std::string& shown, uint64_t size, store::MessageWriter& writer,
                     std::string* block) {
  block->resize(kCopyBlock);
  uint64_t got = 0;
  while (size_t n = ReadSome(fd, block->data(), block->size(), shown)) {
    got += n;
    if (got > size) ThrowChanged(shown, size, got);
    writer.Write(block->data(), n);
  }
  if (got != size) ThrowChanged(shown, size, got);
}

struct FolderOutcome {
  ImportedMaildirFolder folder;
  uint64_t passed_not_kept = 0;  // P left out: no room for $Forwarded among the folder's user flags
  uint64_t new_uids = 0;
  uint64_t size_hints_wrong = 0;
};

class MaildirImporter {
 public:
  MaildirImporter(Store& store, const MaildirImportOptions& options, const MaildirTree& tree)
      : store_(store), options_(options), tree_(tree), now_(static_cast<int64_t>(::time(nullptr))) {}

  // User-flag names the folder will have: its own (if it exists), the tree's keywords not among
  // them in any case, then $Forwarded if a file has P and the folder has neither that name (in
  // any case) nor 64 names already: P is then left out with a warning, as before, not the whole
  // import (helper-142).
  static std::vector<std::string> MergedNames(std::vector<std::string> have, const MaildirFolderScan& scan) {
    for (const std::string& name : scan.keywords)
      if (!name.empty() && !store::FindUserFlagName(have, name)) have.push_back(name);
    if (scan.any_passed && have.size() < kMaxUserFlags && std::none_of(have.begin(), have.end(), IsPassedKeyword))
      have.emplace_back(kPassedKeyword);
    return have;
  }

  FolderOutcome Import(const MaildirFolderScan& scan) {
    FolderOutcome out;
    out.folder.folder = scan.folder;
    out.folder.path = scan.path;
    const std::string shown = scan.path.empty() ? tree_.dir : Shown(tree_.dir, scan.path);
    std::unique_ptr<Folder> folder;
    std::vector<std::string> names;
    // A folder an earlier run made from this tree (the list's UIDVALIDITY): a UID on both sides
    // with the same bytes is the same message, and its flags follow the tree's (helper-73 M5: a
    // rerun before the switch left flags set at the source since the first run as they were).
    // The folder's records, sorted by UID (a large folder's in a temporary file), are walked
    // beside the files, which come in UID order too: a copy of them in memory took 40 bytes a
    // message, 40 MB for a folder of a million.
    store::MessageList same_uids;
    if (store_.FindFolder(options_.user, scan.folder)) {
      folder = store_.OpenFolder(options_.user, scan.folder);
      store::FolderSnapshot snapshot = folder->Snapshot();
      const std::vector<std::string> have = snapshot.info.user_flag_names;
      names = MergedNames(have, scan);
      if (names != have) folder->SetUserFlagNames(names);
      out.folder.flags_follow_tree =
          scan.uidvalidity != 0 && snapshot.info.uidvalidity == scan.uidvalidity && !options_.append_all;
      if (out.folder.flags_follow_tree) same_uids = std::move(snapshot.messages);
    } else {
      // Invisible until the whole folder is in, with the tree's UIDVALIDITY (0: a new one).
      names = MergedNames({}, scan);
      folder = store_.CreateUnpublishedFolder(options_.user, scan.folder, scan.uidvalidity, names);
      out.folder.created = true;
      out.folder.uids_kept = scan.uidvalidity != 0;
    }
    std::array<int, kMaildirKeywords> bit_of;
    bit_of.fill(-1);  // a letter without a name (no dovecot-keywords: every letter)
    for (size_t i = 0; i < scan.keywords.size(); ++i)
      bit_of[i] = scan.keywords[i].empty()
                      ? -1
                      : static_cast<int>(store::FindUserFlagName(names, scan.keywords[i]).value_or(names.size()));
    const auto passed_name = std::find_if(names.begin(), names.end(), IsPassedKeyword);
    const uint64_t passed_bit =
        scan.any_passed && passed_name != names.end() ? uint64_t{1} << (passed_name - names.begin()) : 0;
    if (scan.any_passed && passed_bit == 0) {
      out.passed_not_kept = scan.passed_otherwise_kept;
      if (options_.on_warning && out.passed_not_kept != 0)  // else counted among the letters not kept
        options_.on_warning(shown + ": " + CountedMessages(out.passed_not_kept) + " P ($Forwarded), for which folder " +
                            scan.folder + " has no room: it holds 64 user flags; imported without it");
    }

    UniqueFd own_dir;
    int dir = tree_.root.get();
    if (!scan.path.empty()) {
      own_dir = OpenBelow(dir, scan.path, tree_.dir);
      dir = own_dir.get();
    }
    UniqueFd cur = OpenAt(dir, "cur", O_RDONLY | O_DIRECTORY, 0, JoinPath(shown, "cur"));
    UniqueFd new_dir;

    FolderFiller filler(*folder, out.folder.created, !options_.append_all);
    if (options_.after_batch)
      filler.after_batch = [&](uint64_t added) { options_.after_batch(scan.folder, added); };
    filler.before_commit = options_.before_commit;
    // Fits: CheckUnlistedUidsFit ran before the first write.
    uint32_t next_unlisted = static_cast<uint32_t>(std::min<uint64_t>(scan.first_unlisted_uid, UINT32_MAX));
    std::vector<store::FlagChange> flag_changes;  // applied in one write of the index
    store::MessageList::const_iterator held = same_uids.begin();
    const store::MessageList::const_iterator held_end = same_uids.end();
    struct stat st;
    scan.messages.ForEach([&](const MaildirMessageFile& file) {
      if (file.in_new && !new_dir.valid())
        new_dir = OpenAt(dir, "new", O_RDONLY | O_DIRECTORY, 0, JoinPath(shown, "new"));
      const std::string file_shown = Shown(JoinPath(shown, file.in_new ? "new" : "cur"), file.name);
      UniqueFd message_fd = OpenMessageFile(file.in_new ? new_dir.get() : cur.get(), file.name, file_shown, &st);
      const uint64_t size = static_cast<uint64_t>(st.st_size);
      const std::optional<uint64_t> hint = MaildirSizeHint(SplitMaildirFileName(file.name).base);
      if (hint && *hint != size) ++out.size_hints_wrong;
      MessageMeta meta;
      if (out.folder.created) {
        meta.uid = file.uid;
        if (meta.uid == 0) {
          meta.uid = next_unlisted++;
          ++out.new_uids;
        }
      }
      meta.flags = file.flags;
      for (size_t i = 0; i < bit_of.size(); ++i)
        if ((file.keyword_bits >> i & 1) && bit_of[i] >= 0) meta.user_flags |= uint64_t{1} << bit_of[i];
      if (file.passed) meta.user_flags |= passed_bit;
      meta.internal_date = static_cast<int64_t>(st.st_mtim.tv_sec);
      if (file.uid != 0) {  // listed files come first, by UID (ScanFolder)
        while (held != held_end && held->uid < file.uid) ++held;
        if (held != held_end && held->uid == file.uid && held->size == size &&
            ((held->flags & ~store::kRecent) != meta.flags || held->user_flags != meta.user_flags) &&
            DigestOfFile(message_fd.get(), file_shown) == held->digest)
          flag_changes.push_back(
              {file.uid, static_cast<uint8_t>(meta.flags | (held->flags & store::kRecent)), meta.user_flags});
      }
      if (size <= kWholeLimit) {
        ReadMessageFile(message_fd.get(), file_shown, size, &buffer_);
        filler.Add(buffer_, meta);
      } else {
        std::unique_ptr<store::MessageWriter> writer = filler.NewMessage(&meta.uid);
        CopyMessageFile(message_fd.get(), file_shown, size, *writer, &buffer_);
        filler.AddStaged(writer->Finish(meta));
      }
    });
    filler.Finish();
    if (!flag_changes.empty()) out.folder.flags_updated = folder->SetFlags(flag_changes);
    if (out.folder.created) {
      if (scan.uidnext != 0) folder->RaiseUidNext(scan.uidnext);
      store_.PublishFolder(*folder);
    }
    out.folder.messages = filler.added();
    out.folder.bytes = filler.added_bytes();
    out.folder.skipped = filler.skipped();
    out.folder.empty = filler.added_empty();
    if (out.size_hints_wrong && options_.on_warning)
      options_.on_warning(shown + ": " + std::to_string(out.size_hints_wrong) +
                          " message file names state a size (S=) other than the file's; imported as read");
    return out;
  }

 private:
  Store& store_;
  const MaildirImportOptions& options_;
  const MaildirTree& tree_;
  int64_t now_;
  std::string buffer_;
};

// Dovecot's `subscriptions` (version 1 or 2), else Courier's `courierimapsubscribed` ("INBOX" and
// "INBOX.<Maildir++ name>" lines). Lines that name no folder are warnings: Dovecot drops them too.
std::vector<std::string> ReadSubscriptions(int root, const std::string& dir, std::vector<std::string>* warnings) {
  std::string name = "subscriptions";
  std::optional<std::string> text = ReadControlFile(root, name, JoinPath(dir, name));
  const bool courier = !text;
  if (courier) {
    name = "courierimapsubscribed";
    text = ReadControlFile(root, name, JoinPath(dir, name));
    if (!text) return {};
  }
  const std::string shown = JoinPath(dir, name);
  CheckSubscriptionsText(*text, shown);
  const std::optional<SubscriptionLines> split = SplitSubscriptions(*text, shown, !courier, warnings);
  if (!split) return {};
  const std::vector<std::string_view>& lines = split->lines;
  const int version = split->version;
  const size_t first = split->first;
  std::vector<std::string> out;
  std::set<std::string> seen;
  LineWarnings refused(shown, warnings);
  for (size_t i = first; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    const size_t line_no = i + 1;
    if (line.empty()) continue;
    if (out.size() == kMaxSubscriptions) {
      warnings->push_back(shown + ": more than " + std::to_string(kMaxSubscriptions) + " subscriptions; the rest not read");
      break;
    }
    std::string_view storage_name = line;
    if (courier) {
      if (storage_name.starts_with("INBOX.")) storage_name.remove_prefix(6);
      else if (storage_name != "INBOX") {
        refused.Add(shown + " line " + std::to_string(line_no) + ": '" + EscapeControls(line) +
                    "' is not INBOX or below it; not subscribed");
        continue;
      }
    }
    try {
      std::string folder = MaildirSubscribedFolder(storage_name, version);
      store::ValidateFolderName(folder);
      folder = store::NormalizeFolder(folder);
      if (seen.insert(folder).second) out.push_back(std::move(folder));
    } catch (const Error& e) {
      refused.Add(shown + " line " + std::to_string(line_no) + ": " + e.what() + "; not subscribed");
    }
  }
  refused.Finish();
  return out;
}

}  // namespace

void MaildirMessageFiles::ForEach(const std::function<void(const MaildirMessageFile&)>& each) const {
  if (count_ == 0) return;
  RecordSpool::Reader reader(*spool_, begin_, end_);
  for (std::string_view record; reader.Next(&record);) each(DecodeFile(record));
}

std::vector<MaildirMessageFile> MaildirMessageFiles::ToVector() const {
  std::vector<MaildirMessageFile> out;
  ForEach([&](const MaildirMessageFile& file) { out.push_back(file); });
  return out;
}

MaildirTree ScanMaildir(const std::string& dir, size_t scratch_memory) {
  MaildirTree tree;
  tree.dir = dir;
  while (tree.dir.size() > 1 && tree.dir.back() == '/') tree.dir.pop_back();
  struct stat st;
  if (::lstat(tree.dir.c_str(), &st) != 0) {
    if (errno == ENOENT) Throw(Errc::kNotFound, "import --maildir " + dir + ": no such directory");
    ThrowErrno("stat " + dir);
  }
  if (S_ISLNK(st.st_mode)) ThrowLink(tree.dir);
  if (!S_ISDIR(st.st_mode)) Throw(Errc::kInvalidArgument, tree.dir + ": not a directory (a Maildir was expected)");
  RefuseUnfinishedExport(tree.dir, tree.dir);
  tree.root = OpenDirectory(tree.dir);
  tree.spool = std::make_shared<RecordSpool>(scratch_memory);

  std::vector<Entry> entries = ListDirectory(tree.root.get(), tree.dir);
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
  bool has_cur = false;
  for (const Entry& entry : entries) {
    if (entry.type == S_IFLNK) ThrowLink(Shown(tree.dir, entry.name));
    has_cur = has_cur || (entry.name == "cur" && entry.type == S_IFDIR);
  }
  if (!has_cur) Throw(Errc::kInvalidArgument, tree.dir + ": not a Maildir (no cur/ directory)");
  tree.folders.push_back(ScanFolder(tree.root.get(), tree.dir, "INBOX", "", tree.spool, scratch_memory, &tree.warnings));

  std::map<std::string, std::string> paths = {{"INBOX", ""}};  // folder -> its directory
  for (const Entry& entry : entries) {
    if (!entry.name.starts_with('.') || entry.type != S_IFDIR) continue;
    const std::string shown = Shown(tree.dir, entry.name);
    UniqueFd folder_fd = OpenAt(tree.root.get(), entry.name, O_RDONLY | O_DIRECTORY, 0, shown);
    struct stat cur;
    bool is_folder = false;
    if (::fstatat(folder_fd.get(), "cur", &cur, AT_SYMLINK_NOFOLLOW) == 0) {
      if (S_ISLNK(cur.st_mode)) ThrowLink(JoinPath(shown, "cur"));
      is_folder = S_ISDIR(cur.st_mode);
    } else if (errno != ENOENT) {
      ThrowErrno("stat " + JoinPath(shown, "cur"));
    }
    if (!is_folder) {
      tree.warnings.push_back(shown + ": no cur/ directory, so not a mail folder; skipped");
      continue;
    }
    std::string folder;
    try {
      folder = MaildirFolderName(std::string_view(entry.name).substr(1));
      store::ValidateFolderName(folder);
    } catch (const Error& e) {
      // mbsync writes INBOX's sub-folder "sub" as "..sub" when its Inbox lies inside the tree
      // (helper-138 #5): Dovecot cannot open it either.
      if (entry.name.starts_with(".."))
        Throw(e.code(), shown + ": " + e.what() + " (a sub-folder of INBOX as mbsync writes it? rename it to .INBOX" +
                            entry.name.substr(1) + ")");
      Rethrow(e, shown);
    }
    folder = store::NormalizeFolder(folder);
    auto [it, fresh] = paths.emplace(folder, entry.name);
    if (!fresh)
      Throw(Errc::kInvalidArgument, shown + ": folder '" + EscapeControls(folder) + "' again (" +
                                        (it->second.empty() ? tree.dir + " itself" : Shown(tree.dir, it->second)) +
                                        " is that folder already)");
    tree.folders.push_back(ScanFolder(folder_fd.get(), shown, folder, entry.name, tree.spool, scratch_memory, &tree.warnings));
  }
  // Sub-folders as plain directories ("Sent/cur", "Lists/dev/cur"): Dovecot's LAYOUT=fs and
  // mbsync's "SubFolders Verbatim" (also mu, notmuch). They were passed over without a word
  // (helper-138). Each component is a name of its own: its '.' is no separator.
  // `is_maildir`: the directory listed holds cur/, so its cur/, new/ and tmp/ are its own; under
  // a directory without (Dovecot's \Noselect "Projects/"), "Projects/new/cur" is a folder "new"
  // (helper-140: such folders were passed over). Root-level ".name" directories are Maildir++
  // folders, read above, whose plain sub-directories are walked too; deeper, a ".x/cur" is the
  // folder ".x" (mbsync).
  const std::function<void(int, const std::string&, const std::string&, const std::string&, int, bool)> walk =
      [&](int dir_fd, const std::string& dir_shown, const std::string& rel, const std::string& parent_folder,
          int depth, bool is_maildir) {
        std::vector<Entry> below = ListDirectory(dir_fd, dir_shown);
        std::sort(below.begin(), below.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
        for (const Entry& entry : below) {
          const std::string shown = Shown(dir_shown, entry.name);
          if (entry.type == S_IFLNK) ThrowLink(shown);
          if (entry.type != S_IFDIR) continue;
          if (is_maildir && (entry.name == "cur" || entry.name == "new")) continue;  // ScanFolder refuses a directory there
          if (is_maildir && entry.name == "tmp") {
            // Never read; a directory in it is a folder named "tmp" (mbsync writes IMAP's Sent/tmp
            // so), whose mail would be passed over (helper-141): refused, as in new/ and cur/.
            UniqueFd tmp = OpenAt(dir_fd, entry.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, shown);
            for (const Entry& inside : ListDirectory(tmp.get(), shown))
              if (inside.type == S_IFDIR)
                Throw(Errc::kCorrupt, Shown(shown, inside.name) +
                                          ": a directory in a folder's tmp/ (a folder named \"tmp\" below it, as "
                                          "mbsync writes one? rename it at the source)");
            continue;
          }
          // More levels than a folder name of 1,000 bytes can have (2 bytes a level at least).
          if (depth >= 500) Throw(Errc::kInvalidArgument, shown + ": directories nested over 500 deep");
          UniqueFd sub_fd = OpenAt(dir_fd, entry.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, shown);
          const bool maildir_plus_plus = depth == 0 && entry.name.starts_with('.');
          std::string component;
          if (maildir_plus_plus) {
            // A Maildir++ folder (read above) or a ".name" without cur/: the plain directories
            // below it are its sub-folders, ".Sent/Sub/cur" is Sent/Sub (helper-141: passed over).
            try {
              component = store::NormalizeFolder(MaildirFolderName(std::string_view(entry.name).substr(1)));
            } catch (const Error&) {
              component = entry.name.substr(1);
            }
          } else {
            component = PlainDirectoryFolderName(entry.name);
          }
          std::string folder = parent_folder.empty() ? component : parent_folder + "/" + component;
          const std::string sub_rel = rel.empty() ? entry.name : rel + "/" + entry.name;
          struct stat cur;
          bool has_cur = false;
          if (::fstatat(sub_fd.get(), "cur", &cur, AT_SYMLINK_NOFOLLOW) == 0) {
            if (S_ISLNK(cur.st_mode)) ThrowLink(JoinPath(shown, "cur"));
            has_cur = S_ISDIR(cur.st_mode);
            if (has_cur && !maildir_plus_plus) {
              try {
                store::ValidateFolderName(folder);
              } catch (const Error& e) {
                Rethrow(e, shown);
              }
              const std::string normalised = store::NormalizeFolder(folder);
              auto [it, fresh] = paths.emplace(normalised, sub_rel);
              if (!fresh)
                Throw(Errc::kInvalidArgument,
                      shown + ": folder '" + EscapeControls(normalised) + "' again (" +
                          (it->second.empty() ? tree.dir + " itself" : Shown(tree.dir, it->second)) +
                          " is that folder already)");
              tree.folders.push_back(ScanFolder(sub_fd.get(), shown, normalised, sub_rel, tree.spool, scratch_memory, &tree.warnings));
            }
          } else if (errno != ENOENT) {
            ThrowErrno("stat " + JoinPath(shown, "cur"));
          }
          walk(sub_fd.get(), shown, sub_rel, folder, depth + 1, has_cur);
        }
      };
  walk(tree.root.get(), tree.dir, "", "", 0, true);
  std::sort(tree.folders.begin() + 1, tree.folders.end(),
            [](const MaildirFolderScan& a, const MaildirFolderScan& b) { return a.folder < b.folder; });
  tree.subscriptions = ReadSubscriptions(tree.root.get(), tree.dir, &tree.warnings);
  return tree;
}

MaildirImportReport ImportMaildir(Store& store, const MaildirImportOptions& options) {
  store::ValidateUserId(options.user);
  // Everything is read and checked before the first write.
  const MaildirTree tree = ScanMaildir(options.dir, options.scratch_memory);
  if (options.on_warning)
    for (const std::string& warning : tree.warnings) options.on_warning(warning);

  MaildirImportReport report;
  Store::UserWriteLock lock = store.LockUserForWriting(options.user, options.on_wait);
  // A folder that would end with more user flags than store.idx holds, or a new one whose files
  // would run out of UIDs, stops the run here, before any folder (or the user) is written.
  for (const MaildirFolderScan& scan : tree.folders) {
    std::optional<store::FolderInfo> info = store.FindFolder(options.user, scan.folder);
    if (!info) CheckUnlistedUidsFit(scan, scan.path.empty() ? tree.dir : Shown(tree.dir, scan.path));
    const std::vector<std::string> names =
        MaildirImporter::MergedNames(info ? info->user_flag_names : std::vector<std::string>{}, scan);
    if (names.size() > kMaxUserFlags)
      Throw(Errc::kInvalidArgument, "user/" + options.user + "/" + scan.folder + ": would have " +
                                        std::to_string(names.size()) + " user flags with the keywords of " +
                                        (scan.path.empty() ? tree.dir : Shown(tree.dir, scan.path)) +
                                        " (a folder holds at most 64)");
  }
  // A new user's INBOX is the tree's, built unpublished like any new folder: the user did not
  // exist, so no delivery relied on it.
  store.RefuseIfMoved(options.user, "an import");
  if (!store.FindUser(options.user)) store.CreateUser(options.user, {}, /*with_inbox=*/false);
  MaildirImporter importer(store, options, tree);
  for (const MaildirFolderScan& scan : tree.folders) {
    FolderOutcome outcome = importer.Import(scan);
    report.folders_created += outcome.folder.created;
    report.messages += outcome.folder.messages;
    report.bytes += outcome.folder.bytes;
    report.skipped += outcome.folder.skipped;
    report.flags_updated += outcome.folder.flags_updated;
    report.empty += outcome.folder.empty;
    report.flags_not_kept += scan.flags_not_kept + outcome.passed_not_kept;
    report.new_uids += outcome.new_uids;
    report.size_hints_wrong += outcome.size_hints_wrong;
    if (options.on_folder) options.on_folder(outcome.folder);
    report.folders.push_back(std::move(outcome.folder));
  }
  // After the messages, so a subscribed folder the tree holds exists when a client first lists it.
  const std::string prefix = "user/" + options.user + "/";
  std::set<std::string> had;
  for (std::string& mailbox : store.Subscriptions(options.user)) had.insert(std::move(mailbox));
  for (const std::string& folder : tree.subscriptions) {
    if (had.count(prefix + folder)) continue;
    store.Subscribe(options.user, prefix + folder);
    ++report.subscribed;
  }
  // Commits of unpublished folders counted their bytes too; one recount, under the delivery gate,
  // makes quota exact.
  Store::LockWait gate_wait;
  gate_wait.on_wait = options.on_wait;
  store.RecomputeQuota(options.user, gate_wait);
  return report;
}

}  // namespace storemove::interop
