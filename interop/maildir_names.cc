// Maildir++ names both ways; the rules are in interop/maildir_names.h.
#include "interop/maildir_names.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "interop/modified_utf7.h"
#include "store/store.h"
#include "util/error.h"
#include "util/printable.h"

namespace storemove::interop {
namespace {

void AppendEscape(unsigned char c, std::string* out) {
  static const char* kHex = "0123456789abcdef";  // Dovecot writes "%02x"
  out->push_back('\\');
  out->push_back(kHex[c >> 4]);
  out->push_back(kHex[c & 15]);
}

// Dovecot's listescape rules for one component of a vname ('/' never occurs inside one), plus
// "\xx" for bytes that are not UTF-8. The result is valid UTF-8.
std::string EscapeComponent(std::string_view component, bool first) {
  std::string out;
  for (size_t i = 0; i < component.size();) {
    const auto decoded = DecodeUtf8(component, i);
    if (!decoded) {
      AppendEscape(static_cast<unsigned char>(component[i]), &out);
      ++i;
      continue;
    }
    const char c = component[i];
    if (c == '.' || c == '\\' || (c == '~' && first && i == 0)) {
      AppendEscape(static_cast<unsigned char>(c), &out);
    } else {
      out.append(component.substr(i, decoded->first));
    }
    i += decoded->first;
  }
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string Unescape(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 2 < text.size() && HexValue(text[i + 1]) >= 0 && HexValue(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(text[i + 1]) * 16 + HexValue(text[i + 2])));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

}  // namespace

std::string MaildirFolderDir(std::string_view folder) {
  if (folder == "INBOX") return "";
  std::string vname;
  bool first = true;
  for (size_t start = 0;;) {
    const size_t slash = folder.find('/', start);
    if (!first) vname.push_back('.');
    vname += EscapeComponent(folder.substr(start, slash == std::string_view::npos ? slash : slash - start), first);
    first = false;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return "." + EncodeModifiedUtf7(vname);
}

bool IsPassedKeyword(std::string_view name) {
  return std::equal(name.begin(), name.end(), kPassedKeyword.begin(), kPassedKeyword.end(),
                    [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == std::tolower(b); });
}

std::string MaildirFlagLetters(uint8_t flags, bool passed, uint32_t keyword_bits) {
  std::string out;
  if (flags & store::kDraft) out.push_back('D');
  if (flags & store::kFlagged) out.push_back('F');
  if (passed) out.push_back('P');
  if (flags & store::kAnswered) out.push_back('R');
  if (flags & store::kSeen) out.push_back('S');
  if (flags & store::kDeleted) out.push_back('T');
  for (size_t i = 0; i < kMaildirKeywords; ++i)
    if (keyword_bits >> i & 1) out.push_back(static_cast<char>('a' + i));
  return out;
}

std::string MaildirFolderName(std::string_view dir_name) {
  std::string folder;
  size_t start = 0;
  while (true) {
    const size_t dot = dir_name.find('.', start);
    const std::string_view part =
        dir_name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    const std::optional<std::string> decoded = TryDecodeModifiedUtf7(part);
    if (!decoded) Throw(Errc::kInvalidArgument, "'" + EscapeControls(part) + "' is not valid modified UTF-7");
    const std::string component = Unescape(*decoded);
    if (component.find('/') != std::string::npos)
      Throw(Errc::kInvalidArgument, "'" + EscapeControls(part) + "' would hold a '/' inside a folder name component");
    if (start != 0) folder.push_back('/');
    folder += component;
    if (dot == std::string_view::npos) return folder;
    start = dot + 1;
  }
}

std::string MaildirSubscriptionLine(std::string_view folder) {
  const std::string dir = MaildirFolderDir(folder);
  if (dir.empty()) return "INBOX";
  std::string line;
  for (char c : std::string_view(dir).substr(1)) {
    switch (c) {
      case '.': line.push_back('\t'); break;  // '.' inside a component is \2e, so every '.' separates
      case '\001': line += "\0011"; break;
      case '\t': line += "\001t"; break;
      case '\r': line += "\001r"; break;
      case '\n': line += "\001n"; break;
      default: line.push_back(c);
    }
  }
  return line;
}

std::string MaildirSubscribedFolder(std::string_view line, int version) {
  const char separator = version >= 2 ? '\t' : '.';
  if (!line.empty() && line.back() == separator) line.remove_suffix(1);  // older writers added one
  if (version < 2) return MaildirFolderName(line);
  std::string dir_name;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '\t') {
      dir_name.push_back('.');
    } else if (c == '\001' && i + 1 < line.size()) {
      const char next = line[++i];
      const char unescaped = next == '1' ? '\001' : next == 't' ? '\t' : next == 'r' ? '\r' : next == 'n' ? '\n' : next;
      if (unescaped == '.' || unescaped == '\t')
        Throw(Errc::kInvalidArgument, "'" + EscapeControls(line) + "' has a separator inside a component");
      dir_name.push_back(unescaped);
    } else {
      dir_name.push_back(c);
    }
  }
  return MaildirFolderName(dir_name);
}

MaildirFileName SplitMaildirFileName(std::string_view name) {
  MaildirFileName out;
  const size_t colon = name.find(':');
  out.base = name.substr(0, colon);
  if (colon != std::string_view::npos && name.substr(colon + 1).starts_with("2,")) out.letters = name.substr(colon + 3);
  return out;
}

MaildirFlags ParseMaildirFlagLetters(std::string_view letters) {
  MaildirFlags out;
  for (char c : letters) {
    switch (c) {
      case 'D': out.flags |= store::kDraft; break;
      case 'F': out.flags |= store::kFlagged; break;
      case 'P': out.passed = true; break;
      case 'R': out.flags |= store::kAnswered; break;
      case 'S': out.flags |= store::kSeen; break;
      case 'T': out.flags |= store::kDeleted; break;
      default:
        if (c >= 'a' && c <= 'z') {
          out.keyword_bits |= uint32_t{1} << (c - 'a');
        } else {
          ++out.unknown;
        }
    }
  }
  return out;
}

std::optional<uint64_t> MaildirSizeHint(std::string_view base) {
  for (size_t pos = base.find(",S="); pos != std::string_view::npos; pos = base.find(",S=", pos + 1)) {
    const char* begin = base.data() + pos + 3;
    const char* end = base.data() + base.size();
    uint64_t size = 0;
    auto [ptr, ec] = std::from_chars(begin, end, size);
    if (ec == std::errc() && ptr != begin && (ptr == end || *ptr == ',')) return size;
  }
  return std::nullopt;
}

}  // namespace storemove::interop
