#include "store/settings.h"

#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <map>

#include "util/error.h"
#include "util/fs.h"

namespace storemove::store {

namespace {

// 2^40 KB is 1 PiB: beyond any message, and far from overflowing once multiplied by 1024.
constexpr uint64_t kMaxMinSizeKb = uint64_t(1) << 40;

const char kNewFileHeader[] =
    "# storemove store settings (docs/store-format.md §11): one NAME=VALUE per line, '#' starts a comment.\n"
    "# Change them with `storemove config --store DIR NAME=VALUE`; `storemove config --store DIR` lists them.\n";

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

const SettingInfo* Find(std::string_view name) {
  for (const SettingInfo& s : KnownSettings())
    if (s.name == name) return &s;
  return nullptr;
}

std::string KnownNames() {
  std::string names;
  for (const SettingInfo& s : KnownSettings()) names += (names.empty() ? "" : ", ") + std::string(s.name);
  return names;
}

// One line of the file: a setting, or something to keep as it is (blank, comment).
struct Line {
  std::string text;
  std::string name;  // empty: not a setting
  std::string value;
};

// Splits the file into lines; throws kInvalidArgument "<path> line N: why" on the first bad one.
std::vector<Line> Parse(const std::string& path, std::string_view text) {
  std::vector<Line> lines;
  std::map<std::string, size_t> seen;  // name -> line number
  size_t number = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    Line line{std::string(text.substr(pos, eol - pos)), {}, {}};
    pos = eol + 1;
    ++number;
    std::string_view body = Trim(line.text);
    if (!body.empty() && body.front() != '#') {
      const std::string where = path + " line " + std::to_string(number);
      size_t eq = body.find('=');
      if (eq == std::string_view::npos) Throw(Errc::kInvalidArgument, where + ": expected NAME=VALUE");
      line.name = std::string(Trim(body.substr(0, eq)));
      try {
        line.value = NormalizeSetting(line.name, Trim(body.substr(eq + 1)));
      } catch (const Error& e) {
        Throw(e.code(), where + ": " + e.what());
      }
      if (auto [it, added] = seen.emplace(line.name, number); !added)
        Throw(Errc::kInvalidArgument,
              where + ": " + line.name + " is set again (first on line " + std::to_string(it->second) + ")");
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

// The file's text, or empty when it does not exist.
std::string ReadIfPresent(const std::string& path) {
  struct stat st;
  if (int err = StatNoFollow(path, &st); err == ENOENT) return {};
  return ReadFile(path);
}

}  // namespace

const std::vector<SettingInfo>& KnownSettings() {
  static const std::vector<SettingInfo> known = {
      {kRelinkerEnabled, "no",
       "yes|no: link identical messages through the partition's repository as they arrive (deliver, import, "
       "moveuser)"},
      {kRelinkerMinSize, "0", "KB (0 to 2^40): messages smaller than this are not linked on arrival"},
  };
  return known;
}

std::string SettingsPath(const std::string& root) { return root + "/config/store.conf"; }

void ValidateSettingName(std::string_view name) {
  if (!Find(name)) Throw(Errc::kInvalidArgument, "unknown setting '" + std::string(name) + "' (known: " + KnownNames() + ")");
}

std::string NormalizeSetting(std::string_view name, std::string_view value) {
  ValidateSettingName(name);
  if (name == kRelinkerEnabled) {
    const std::string v = Lower(value);
    if (v == "yes" || v == "1" || v == "true" || v == "on") return "yes";
    if (v == "no" || v == "0" || v == "false" || v == "off") return "no";
    Throw(Errc::kInvalidArgument, std::string(name) + ": '" + std::string(value) + "' is not yes or no (nor 1/0, true/false, on/off)");
  }
  // local.store.relinker.minsize
  bool digits = !value.empty() && value.size() <= 20 &&
                std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
  uint64_t kb = 0;
  if (digits) {
    for (char c : value) {
      kb = kb * 10 + uint64_t(c - '0');
      if (kb > kMaxMinSizeKb) break;
    }
  }
  if (!digits || kb > kMaxMinSizeKb)
    Throw(Errc::kInvalidArgument,
          std::string(name) + ": '" + std::string(value) + "' is not a size in KB from 0 to " + std::to_string(kMaxMinSizeKb));
  return std::to_string(kb);
}

Settings ReadSettings(const std::string& root) {
  const std::string path = SettingsPath(root);
  Settings settings;
  for (const Line& line : Parse(path, ReadIfPresent(path))) {
    if (line.name == kRelinkerEnabled) settings.relinker_enabled = line.value == "yes";
    if (line.name == kRelinkerMinSize) settings.relinker_minsize_kb = std::stoull(line.value);
  }
  return settings;
}

std::vector<std::pair<std::string, std::string>> SettingValues(const std::string& root) {
  const std::string path = SettingsPath(root);
  std::vector<Line> lines = Parse(path, ReadIfPresent(path));
  std::vector<std::pair<std::string, std::string>> values;
  for (const SettingInfo& s : KnownSettings()) {
    std::string value(s.default_value);
    for (const Line& line : lines)
      if (line.name == s.name) value = line.value;
    values.emplace_back(std::string(s.name), value);
  }
  return values;
}

void WriteSettings(const std::string& root, const std::vector<std::pair<std::string, std::string>>& changes) {
  std::map<std::string, std::string> wanted;
  for (const auto& [name, value] : changes) wanted[name] = NormalizeSetting(name, value);

  const std::string dir = root + "/config";
  const std::string path = SettingsPath(root);
  UniqueFd dir_fd = OpenDirectory(dir);
  // Read-modify-write: serialised with other writers (readers need no lock, the rename is atomic).
  while (::flock(dir_fd.get(), LOCK_EX) != 0)
    if (errno != EINTR) ThrowErrno("lock " + dir);

  std::string old = ReadIfPresent(path);
  std::string text;
  std::map<std::string, std::string> pending = wanted;
  if (old.empty()) {
    text = kNewFileHeader;
  } else {
    // Kept line for line: an administrator's comments and order survive a change. A line that
    // does not parse is found below, before anything is written.
    for (size_t pos = 0; pos < old.size();) {
      size_t eol = old.find('\n', pos);
      if (eol == std::string::npos) eol = old.size();
      std::string_view raw(old.data() + pos, eol - pos);
      pos = eol + 1;
      std::string_view body = Trim(raw);
      size_t eq = body.find('=');
      if (!body.empty() && body.front() != '#' && eq != std::string_view::npos) {
        std::string name(Trim(body.substr(0, eq)));
        if (auto it = wanted.find(name); it != wanted.end()) {
          // The first line setting the name takes the new value; a repeated one (an error in
          // the old file) goes, so the result is valid.
          if (pending.erase(name)) text += name + "=" + it->second + "\n";
          continue;
        }
      }
      text.append(raw);
      text += '\n';
    }
  }
  for (const auto& [name, value] : pending) text += name + "=" + value + "\n";
  Parse(path, text);  // throws (nothing written) when another line of the file is bad
  WriteFileAtomic(path, text, 0644);
}

}  // namespace storemove::store
