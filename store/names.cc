// Name validation and the mapping from user/folder names to directories (docs/store-format.md §Layout).
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <functional>

#include "store/names.h"
#include "store/store.h"
#include "util/error.h"

namespace storemove::store {

namespace {

constexpr size_t kMaxUserId = 128;
constexpr size_t kMaxFolderName = 1000;
constexpr size_t kMaxComponentEncoded = 250;  // leaves room for ".tmp.xxx" suffixes within NAME_MAX

// The code point of the well-formed UTF-8 sequence at s[*i] (advancing *i past it), or -1 for a
// malformed one (a stray continuation byte, a truncated sequence, an overlong form, a surrogate,
// beyond U+10FFFF; *i then advances one byte). RFC 3629 §4's table, byte by byte.
int32_t NextCodePoint(std::string_view s, size_t* i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b0 = byte(*i);
  if (b0 < 0x80) return s[(*i)++];
  size_t len = b0 >= 0xc2 && b0 <= 0xdf ? 2 : b0 >= 0xe0 && b0 <= 0xef ? 3 : b0 >= 0xf0 && b0 <= 0xf4 ? 4 : 0;
  if (len == 0 || *i + len > s.size()) return ++*i, -1;
  // The second byte's range excludes overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4).
  unsigned char lo = b0 == 0xe0 ? 0xa0 : b0 == 0xf0 ? 0x90 : 0x80;
  unsigned char hi = b0 == 0xed ? 0x9f : b0 == 0xf4 ? 0x8f : 0xbf;
  if (byte(*i + 1) < lo || byte(*i + 1) > hi) return ++*i, -1;
  for (size_t k = 2; k < len; ++k)
    if ((byte(*i + k) & 0xc0) != 0x80) return ++*i, -1;
  int32_t cp = b0 & (0x7f >> len);
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (byte(*i + k) & 0x3f);
  *i += len;
  return cp;
}

// C0, DEL and C1 (U+0080..U+009F): a terminal or a line-based file would act on them.
bool IsControl(int32_t cp) { return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f); }

// For error messages: well-formed UTF-8 as it is, control characters and bytes of malformed
// sequences as \xNN, so a hostile name cannot drive the terminal that shows it.
std::string Printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t start = i;
    int32_t cp = NextCodePoint(s, &i);
    if (cp >= 0 && !IsControl(cp)) {
      out.append(s.substr(start, i - start));
    } else {
      for (size_t k = start; k < i; ++k) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(s[k]));
        out += buf;
      }
    }
    if (out.size() > 80) return out + "...";
  }
  return out;
}

// Why `s` is not well-formed UTF-8 free of control characters, or nullptr when it is.
const char* Utf8Problem(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    int32_t cp = NextCodePoint(s, &i);
    if (cp < 0) return "not well-formed UTF-8";
    if (IsControl(cp)) return "control characters are not allowed";
    // Line and paragraph separators would split the line-based files ids are listed in.
    if (cp == 0x2028 || cp == 0x2029) return "U+2028 and U+2029 (line separators) are not allowed";
  }
  return nullptr;
}

bool SafeUnencoded(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == '.' || c == ',' || c == '@' || c == '=' || c == '~';
}

std::string EncodeComponent(std::string_view comp) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out = "+";
  for (unsigned char c : comp) {
    if (SafeUnencoded(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// The first character of valid UTF-8 `text` that shows as nothing (a byte-order mark, a zero-width
// space, a direction mark, a soft hyphen), as U+XXXX; empty when none. Such a character makes an
// id that lists exactly like another (helper-105: a map made with paste(1) gave "\uFEFFzed" beside
// zed). Not the zero-width (non-)joiner, U+200C/D, which Persian and Indic names need.
std::string InvisibleCharacter(std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    const auto byte = [&](size_t k) { return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0u; };
    unsigned code = 0;
    if (byte(0) == 0xC2 && byte(1) == 0xAD) code = 0xAD;
    if (byte(0) == 0xEF && byte(1) == 0xBB && byte(2) == 0xBF) code = 0xFEFF;
    if (byte(0) == 0xE2 && (byte(1) == 0x80 || byte(1) == 0x81)) {
      const unsigned c = 0x2000 + ((byte(1) & 0x3F) << 6) + (byte(2) & 0x3F);
      if (c == 0x200B || c == 0x200E || c == 0x200F || (c >= 0x202A && c <= 0x202E) || (c >= 0x2060 && c <= 0x2069))
        code = c;
    }
    if (code != 0) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "U+%04X", code);
      return buf;
    }
  }
  return "";
}

}  // namespace

void ValidateUserId(std::string_view user) {
  auto bad = [&](const char* why) {
    Throw(Errc::kInvalidArgument, "invalid user id '" + Printable(user) + "': " + why);
  };
  if (user.empty()) bad("empty");
  if (user.size() > kMaxUserId) bad("longer than 128 bytes");
  if (const char* problem = Utf8Problem(user)) bad(problem);
  // ASCII is held to the conservative set mail systems agree on; anything beyond ASCII is an
  // RFC 6531 internationalized address (jörg@exämple.org), kept byte for byte (not normalized).
  unsigned char first = static_cast<unsigned char>(user[0]);
  if (first < 0x80 && !std::isalnum(first)) bad("must start with a letter or digit");
  size_t ats = 0;
  for (unsigned char c : user) {
    bool ok = c >= 0x80 || std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '+' || c == '@';
    if (!ok) bad("only letters, digits, . _ - + @ and non-ASCII UTF-8 are allowed");
    if (c == '@') ++ats;
  }
  if (ats > 1) bad("more than one '@'");
  if (user.find("..") != std::string_view::npos) bad("contains '..'");
  if (user.back() == '@' || user.back() == '.') bad("ends with '@' or '.'");
}

namespace {

// The path-safety rules every folder name keeps, whatever its bytes: no empty component, no '.'
// or '..', no C0 control or DEL, lengths that fit NAME_MAX.
void CheckFolderStructure(std::string_view folder, const std::function<void(const std::string&)>& bad) {
  if (folder.empty()) bad("empty");
  if (folder.size() > kMaxFolderName) bad("longer than 1000 bytes");
  size_t start = 0;
  while (start <= folder.size()) {
    size_t end = folder.find('/', start);
    if (end == std::string_view::npos) end = folder.size();
    std::string_view comp = folder.substr(start, end - start);
    if (comp.empty()) bad("empty path component");
    if (comp == "." || comp == "..") bad("'.' and '..' are not folder names");
    for (unsigned char c : comp)
      if (c < 0x20 || c == 0x7f) bad("control characters are not allowed");
    if (EncodeComponent(comp).size() > kMaxComponentEncoded) bad("a path component is too long");
    start = end + 1;
  }
}

[[noreturn]] void BadFolder(std::string_view folder, const std::string& why) {
  // Cut: a name from a peer (a restore stream, an IMAP server) may be megabytes long.
  constexpr size_t kShown = 200;
  size_t cut = std::min(folder.size(), kShown);
  while (cut < folder.size() && cut > 0 && (static_cast<unsigned char>(folder[cut]) & 0xc0) == 0x80) --cut;
  Throw(Errc::kInvalidArgument, "invalid folder name '" + Printable(folder.substr(0, cut)) +
                                    (cut < folder.size() ? "...': " : "': ") + why);
}

}  // namespace

void ValidateNewUserId(std::string_view user) {
  ValidateUserId(user);
  // Only for a new id: a user an older build made keeps working (review: every lookup of such a
  // user, and with it backup, list and delete of the whole store, was refused).
  if (const std::string invisible = InvisibleCharacter(user); !invisible.empty())
    Throw(Errc::kInvalidArgument, "invalid user id '" + Printable(user) + "': it holds " + invisible +
                                      ", which shows as nothing (a byte-order mark, a zero-width space or a "
                                      "direction mark): it would list exactly like another id");
}

void ValidateFolderName(std::string_view folder) {
  auto bad = [&](const std::string& why) { BadFolder(folder, why); };
  CheckFolderStructure(folder, bad);
  if (const char* problem = Utf8Problem(folder)) bad(problem);
}

void ValidateStoredFolderName(std::string_view folder) {
  CheckFolderStructure(folder, [&](const std::string& why) { BadFolder(folder, why); });
}

bool IsValidPartitionName(std::string_view partition) {
  bool ok = !partition.empty() && partition.size() <= 64;
  for (unsigned char c : partition) ok = ok && (std::isalnum(c) || c == '_' || c == '-');
  return ok;
}

void ValidatePartitionName(std::string_view partition) {
  if (!IsValidPartitionName(partition))
    Throw(Errc::kInvalidArgument,
          "invalid partition name '" + Printable(partition) + "': 1-64 letters, digits, '_' or '-'");
}

namespace {

std::pair<std::string, std::string> SplitMailboxName(std::string_view mailbox) {
  if (!mailbox.starts_with("user/"))
    Throw(Errc::kInvalidArgument, "invalid mailbox name '" + Printable(mailbox) + "': must start with user/");
  std::string_view rest = mailbox.substr(5);
  size_t slash = rest.find('/');
  std::string user(rest.substr(0, slash));
  std::string folder = slash == std::string_view::npos ? "INBOX" : std::string(rest.substr(slash + 1));
  ValidateUserId(user);
  return {user, folder};
}

}  // namespace

std::pair<std::string, std::string> ParseMailboxName(std::string_view mailbox) {
  auto parts = SplitMailboxName(mailbox);
  ValidateFolderName(parts.second);
  return parts;
}

std::pair<std::string, std::string> ParseStoredMailboxName(std::string_view mailbox) {
  auto parts = SplitMailboxName(mailbox);
  ValidateStoredFolderName(parts.second);
  return parts;
}

bool MatchPattern(std::string_view pattern, std::string_view name) {
  // Iterative wildcard match with backtracking to the last '*' or '%'.
  size_t p = 0, n = 0, star_p = std::string_view::npos, star_n = 0;
  bool star_crosses_slash = false;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '*' || pattern[p] == '%')) {
      star_crosses_slash = pattern[p] == '*';
      star_p = p++;
      star_n = n;
    } else if (p < pattern.size() && pattern[p] == name[n]) {
      ++p;
      ++n;
    } else if (star_p != std::string_view::npos && (star_crosses_slash || name[star_n] != '/')) {
      p = star_p + 1;
      n = ++star_n;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && (pattern[p] == '*' || pattern[p] == '%')) ++p;
  return p == pattern.size();
}

std::string HashDir(std::string_view user) {
  uint32_t h = Checksum32(user.data(), user.size(), 0);
  char buf[8];
  std::snprintf(buf, sizeof buf, "%02x/%02x", (h >> 24) & 0xff, (h >> 16) & 0xff);
  return buf;
}

std::string FolderRelPath(std::string_view user, std::string_view folder) {
  std::string out = "=user/" + HashDir(user) + "/=" + std::string(user);
  if (folder == "INBOX") return out;
  size_t start = 0;
  while (start <= folder.size()) {
    size_t end = folder.find('/', start);
    if (end == std::string_view::npos) end = folder.size();
    out += "/" + EncodeComponent(folder.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string MessageRelPath(uint32_t uid) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02x/%u.msg", (uid >> 8) & 0xff, uid);
  return buf;
}

}  // namespace storemove::store
