// Name validation and the mapping from user/folder names to directories (docs/store-format.md §Layout).
#include <cctype>
#include <cstdio>

#include "store/store.h"
#include "util/error.h"

namespace storemove::store {

namespace {

constexpr size_t kMaxUserId = 128;
constexpr size_t kMaxFolderName = 1000;
constexpr size_t kMaxComponentEncoded = 250;  // leaves room for ".tmp.xxx" suffixes within NAME_MAX

std::string Printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
    if (out.size() > 80) return out + "...";
  }
  return out;
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

}  // namespace

void ValidateUserId(std::string_view user) {
  auto bad = [&](const char* why) {
    Throw(Errc::kInvalidArgument, "invalid user id '" + Printable(user) + "': " + why);
  };
  if (user.empty()) bad("empty");
  if (user.size() > kMaxUserId) bad("longer than 128 bytes");
  unsigned char first = static_cast<unsigned char>(user[0]);
  if (!std::isalnum(first)) bad("must start with a letter or digit");
  size_t ats = 0;
  for (unsigned char c : user) {
    bool ok = std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '+' || c == '@';
    if (!ok) bad("only letters, digits and . _ - + @ are allowed");
    if (c == '@') ++ats;
  }
  if (ats > 1) bad("more than one '@'");
  if (user.find("..") != std::string_view::npos) bad("contains '..'");
  if (user.back() == '@' || user.back() == '.') bad("ends with '@' or '.'");
}

void ValidateFolderName(std::string_view folder) {
  auto bad = [&](const std::string& why) {
    Throw(Errc::kInvalidArgument, "invalid folder name '" + Printable(folder) + "': " + why);
  };
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

void ValidatePartitionName(std::string_view partition) {
  bool ok = !partition.empty() && partition.size() <= 64;
  for (unsigned char c : partition) ok = ok && (std::isalnum(c) || c == '_' || c == '-');
  if (!ok)
    Throw(Errc::kInvalidArgument,
          "invalid partition name '" + Printable(partition) + "': 1-64 letters, digits, '_' or '-'");
}

std::pair<std::string, std::string> ParseMailboxName(std::string_view mailbox) {
  if (!mailbox.starts_with("user/"))
    Throw(Errc::kInvalidArgument, "invalid mailbox name '" + Printable(mailbox) + "': must start with user/");
  std::string_view rest = mailbox.substr(5);
  size_t slash = rest.find('/');
  std::string user(rest.substr(0, slash));
  std::string folder = slash == std::string_view::npos ? "INBOX" : std::string(rest.substr(slash + 1));
  ValidateUserId(user);
  ValidateFolderName(folder);
  return {user, folder};
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
