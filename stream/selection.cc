#include <regex.h>
#include <strings.h>

#include <algorithm>
#include <fstream>
#include <map>

#include "stream/stream.h"
#include "util/error.h"
#include "util/foreign_link.h"
#include "util/fs.h"

namespace storemove::stream {

namespace {

// True when a repetition (* + ? {m,n}) directly follows another one outside bracket expressions:
// POSIX leaves it undefined and glibc's regcomp is exponential in it ("a" and 20 '+' take 10 s
// and 700 MB), so a stray "a++++..." would hang every backup.
bool StacksRepetitions(const std::string& re) {
  bool after_repetition = false;
  for (size_t i = 0; i < re.size(); ++i) {
    char c = re[i];
    if (c == '\\') {
      ++i;
      after_repetition = false;
      continue;
    }
    if (c == '[') {  // skip the bracket expression; a ']' first in it is literal
      size_t j = i + 1;
      if (j < re.size() && re[j] == '^') ++j;
      if (j < re.size() && re[j] == ']') ++j;
      while (j < re.size() && re[j] != ']') {
        if (re[j] == '[' && j + 1 < re.size() && (re[j + 1] == ':' || re[j + 1] == '.' || re[j + 1] == '=')) {
          size_t close = re.find(std::string{re[j + 1], ']'}, j + 2);
          if (close == std::string::npos) return false;  // regcomp reports it
          j = close + 2;
        } else {
          ++j;
        }
      }
      i = j;
      after_repetition = false;
      continue;
    }
    bool repetition = c == '*' || c == '+' || c == '?' || c == '{';
    if (repetition && after_repetition) return true;
    if (c == '{') {
      size_t close = re.find('}', i);
      if (close == std::string::npos) return false;  // regcomp reports it
      i = close;
    }
    after_repetition = repetition;
  }
  return false;
}

}  // namespace

std::vector<BackupGroup> ReadBackupGroups(const std::string& path) {
  std::vector<BackupGroup> groups;
  // A store owner's link from STORE/config to a file only root reads (security review #08).
  RefuseForeignLink(path, "backup groups file");
  if (!PathExists(path)) return groups;
  if (IsDirectory(path))
    Throw(Errc::kInvalidArgument, "backup groups file " + path + " is a directory (NAME=REGEX lines expected)");
  std::ifstream in(path);
  if (!in) Throw(Errc::kIo, "cannot read " + path);
  std::string line;
  int lineno = 0;
  std::map<std::string, int> defined;  // group name -> line
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    size_t eq = line.find('=');
    std::string where = path + " line " + std::to_string(lineno);
    if (eq == std::string::npos) Throw(Errc::kInvalidArgument, where + ": expected NAME=REGEX");
    BackupGroup g{line.substr(first, eq - first), line.substr(eq + 1)};
    while (!g.name.empty() && (g.name.back() == ' ' || g.name.back() == '\t')) g.name.pop_back();
    // "groupA = [a-l].*": the blanks around '=' are layout, not part of the expression (a user
    // id has none, so an expression kept with them would match nobody, silently).
    const size_t regex_first = g.regex.find_first_not_of(" \t");
    g.regex.erase(0, regex_first == std::string::npos ? g.regex.size() : regex_first);
    while (!g.regex.empty() && (g.regex.back() == ' ' || g.regex.back() == '\t')) g.regex.pop_back();
    try {
      store::ValidatePartitionName(g.name);  // same character rules as a partition name
    } catch (const Error&) {
      Throw(Errc::kInvalidArgument, where + ": invalid group name (1-64 letters, digits, '_' or '-')");
    }
    if (auto [it, added] = defined.emplace(g.name, lineno); !added)
      Throw(Errc::kInvalidArgument, where + ": group '" + g.name + "' is defined again (first on line " +
                                        std::to_string(it->second) + ")");
    if (StacksRepetitions(g.regex))
      Throw(Errc::kInvalidArgument, where + ": repetition of a repetition (like a++ or a*?) in '" + g.regex + "'");
    regex_t re;
    if (regcomp(&re, ("^(" + g.regex + ")$").c_str(), REG_EXTENDED | REG_NOSUB) != 0)
      Throw(Errc::kInvalidArgument, where + ": invalid regular expression '" + g.regex + "'");
    regfree(&re);
    groups.push_back(std::move(g));
  }
  return groups;
}

namespace {

// Each group's expression compiled once per thread: compiled for every user it was tested
// against, it was most of the CPU of a pass over one group (helper-164: a backup of a group of 20
// users read each of the store's 300,000 at ~75 us, glibc's regcomp on top).
class CompiledGroups {
 public:
  CompiledGroups() = default;
  CompiledGroups(const CompiledGroups&) = delete;
  CompiledGroups& operator=(const CompiledGroups&) = delete;
  ~CompiledGroups() { Clear(); }

  // nullptr when the expression does not compile (ReadBackupGroups refuses such a file).
  const regex_t* Get(const std::string& regex) {
    auto it = compiled_.find(regex);
    if (it == compiled_.end()) {
      if (compiled_.size() >= kMaxPatterns) Clear();  // patterns come from groups files: a few
      it = compiled_.try_emplace(regex).first;
      it->second.ok = regcomp(&it->second.re, ("^(" + regex + ")$").c_str(), REG_EXTENDED | REG_NOSUB) == 0;
    }
    return it->second.ok ? &it->second.re : nullptr;
  }

 private:
  static constexpr size_t kMaxPatterns = 1024;
  struct Compiled {
    regex_t re{};
    bool ok = false;
  };
  void Clear() {
    for (auto& [regex, compiled] : compiled_)
      if (compiled.ok) regfree(&compiled.re);
    compiled_.clear();
  }
  std::map<std::string, Compiled> compiled_;  // a node stays put: regex_t is not to be moved
};

}  // namespace

bool GroupMatches(const BackupGroup& group, const std::string& user) {
  if (group.name == "user") return true;
  thread_local CompiledGroups compiled;
  const regex_t* re = compiled.Get(group.regex);
  return re && regexec(re, user.c_str(), 0, nullptr, 0) == 0;
}

Selection::Selection(const std::vector<std::string>& names, const std::vector<BackupGroup>& groups,
                     const std::string& groups_file)
    : groups_(groups) {
  // Where the groups were looked for: "unknown backup group" alone did not say (helper-97).
  const std::string groups_read =
      groups_file.empty() ? "no groups file was read: give --groups FILE"
                          : "groups of " + groups_file + (groups.empty() ? ", which has none or does not exist" : "");
  groups_.push_back({"user", ".*"});
  for (const std::string& name : names) {
    Item item;
    item.name = name;
    if (name == "/" || name.empty()) {
      items_.push_back(item);
      continue;
    }
    if (name.starts_with("user/")) {
      std::string pattern = name;
      if (pattern.find_first_of("*%") == std::string::npos) store::ParseMailboxName(pattern);  // validates
      // user/NAME (or user/%) is the INBOX, as in Sun's names. A '*' crosses levels, so user/* or
      // user/j* already reaches every folder: with /INBOX added it took the INBOXes alone.
      if (std::count(pattern.begin(), pattern.end(), '/') == 1 && pattern.find('*') == std::string::npos)
        pattern += "/INBOX";
      // INBOX is one name whatever its case (store-format.md §1): user/joe/inbox is joe's INBOX
      // (helper-78: deliver --folder inbox found it, backup user/joe/inbox selected nothing).
      if (const size_t slash = pattern.find('/', 5); slash != std::string::npos) {
        const size_t end = std::min(pattern.find('/', slash + 1), pattern.size());
        if (end - slash - 1 == 5 && ::strncasecmp(pattern.c_str() + slash + 1, "inbox", 5) == 0)
          pattern.replace(slash + 1, 5, "INBOX");
      }
      item.mailbox_pattern = pattern;
      items_.push_back(item);
      continue;
    }
    if (name[0] != '/')
      Throw(Errc::kInvalidArgument, "invalid backup name '" + name +
                                        "': use /, /partition, /partition/group, /partition/group/user or user/NAME/FOLDER");
    std::vector<std::string> parts;
    size_t pos = 1;
    while (pos <= name.size()) {
      size_t end = name.find('/', pos);
      if (end == std::string::npos) end = name.size();
      if (end > pos) parts.push_back(name.substr(pos, end - pos));
      pos = end + 1;
    }
    if (parts.size() > 3) Throw(Errc::kInvalidArgument, "invalid backup name '" + name + "': too many levels");
    item.partition = parts[0];
    store::ValidatePartitionName(item.partition);
    if (parts.size() >= 2) {
      for (size_t g = 0; g < groups_.size(); ++g)
        if (groups_[g].name == parts[1]) item.group = int(g);
      // Not found, as a partition or user the name does not find (66; helper-72: it was 64).
      if (item.group < 0)
        Throw(Errc::kNotFound, "unknown backup group '" + parts[1] + "' in '" + name + "' (" + groups_read + ")");
    }
    if (parts.size() == 3) {
      store::ValidateUserId(parts[2]);
      item.user = parts[2];
    }
    items_.push_back(item);
  }
  for (size_t i = 0; i < items_.size(); ++i) {
    const Item& item = items_[i];
    std::string only;  // the one user this item can select, if there is one
    if (!item.user.empty()) {
      only = item.user;
    } else if (!item.mailbox_pattern.empty()) {
      // user/NAME/... with NAME free of wildcards: user ids hold no '/'.
      const std::string& p = item.mailbox_pattern;
      const size_t slash = p.find('/', 5);
      if (slash != std::string::npos && p.find_first_of("*%") > slash) only = p.substr(5, slash - 5);
    }
    if (only.empty()) general_.push_back(i);
    else by_user_.emplace(only, i);
  }
}

std::vector<size_t> Selection::ItemsFor(const std::string& user) const {
  std::vector<size_t> out = general_;
  auto [first, last] = by_user_.equal_range(user);
  for (auto it = first; it != last; ++it) out.push_back(it->second);
  return out;
}

void Selection::RequireEveryNameMatches(store::Store& store, std::string_view command) const {
  std::vector<std::string> partitions = store.Partitions();
  std::vector<bool> matched(items_.size(), false);
  size_t open = 0;
  for (size_t i = 0; i < items_.size(); ++i) {
    const Item& item = items_[i];
    if (!item.partition.empty() &&
        std::find(partitions.begin(), partitions.end(), item.partition) == partitions.end())
      Throw(Errc::kNotFound, std::string(command) + ": '" + item.name + "' selects nothing: no partition '" + item.partition + "'");
    if (!item.user.empty()) {
      std::optional<store::UserInfo> u = store.FindUser(item.user);
      if (!u) Throw(Errc::kNotFound, std::string(command) + ": '" + item.name + "' selects nothing: no user '" + item.user + "'");
      if (u->partition != item.partition)
        Throw(Errc::kNotFound, std::string(command) + ": '" + item.name + "' selects nothing: user '" + item.user + "' is on partition '" +
                                   u->partition + "'");
      if (item.group >= 0 && !GroupMatches(groups_[size_t(item.group)], item.user))
        Throw(Errc::kNotFound, std::string(command) + ": '" + item.name + "' selects nothing: user '" + item.user +
                                   "' is not in group '" + groups_[size_t(item.group)].name + "'");
    }
    // Whole stores and partitions may be empty; a group or a mailbox pattern must match something.
    matched[i] = item.mailbox_pattern.empty() && (item.group < 0 || !item.user.empty());
    if (!matched[i]) ++open;
  }
  if (open == 0) return;
  store.ForEachUser([&](const store::UserInfo& user) {
    if (open == 0) return;
    for (size_t i = 0; i < items_.size(); ++i) {
      if (matched[i]) continue;
      const Item& item = items_[i];
      bool hit = false;
      if (item.mailbox_pattern.empty()) {
        hit = item.partition == user.partition && GroupMatches(groups_[size_t(item.group)], user.user);
      } else {
        Selection one({item.name}, {});
        if (one.WantsUser(user)) {
          const std::vector<store::FolderInfo> folders = store.ListFolders(user.user);
          for (const store::FolderInfo& f : folders)
            if (store::MatchPattern(item.mailbox_pattern, f.Mailbox())) hit = true;
          // A user without a mailbox (moved away, its mailboxes deleted) is its record, which a
          // backup takes where its INBOX would be taken (helper-99: -u of such a user refused).
          if (folders.empty() && store::MatchPattern(item.mailbox_pattern, "user/" + user.user + "/INBOX")) hit = true;
        }
      }
      if (hit) {
        matched[i] = true;
        --open;
      }
    }
  });
  for (size_t i = 0; i < items_.size(); ++i) {
    if (matched[i]) continue;
    const Item& item = items_[i];
    if (!item.mailbox_pattern.empty())
      Throw(Errc::kNotFound, std::string(command) + ": '" + item.name + "' selects nothing: no mailbox matches '" +
                                 item.mailbox_pattern + "'");
    Throw(Errc::kNotFound, std::string(command) + ": '" + item.name + "' selects nothing: no user of partition '" + item.partition +
                               "' is in group '" + groups_[size_t(item.group)].name + "'");
  }
}

bool Selection::WantsUser(const store::UserInfo& user) const {
  for (size_t i : ItemsFor(user.user)) {
    const Item& item = items_[i];
    if (!item.mailbox_pattern.empty()) {
      std::string prefix = "user/" + user.user + "/";
      // A pattern can only match this user's folders if its literal prefix allows it.
      std::string_view p = item.mailbox_pattern;
      size_t wild = p.find_first_of("*%");
      std::string_view literal = p.substr(0, wild);
      if (std::string_view(prefix).starts_with(literal) || literal.starts_with(prefix)) return true;
      continue;
    }
    if (!item.partition.empty() && item.partition != user.partition) continue;
    if (item.group >= 0 && !GroupMatches(groups_[size_t(item.group)], user.user)) continue;
    if (!item.user.empty() && item.user != user.user) continue;
    return true;
  }
  return false;
}

void Selection::MarkNamesSelecting(const store::UserInfo& user, const std::string& folder,
                                   std::vector<bool>& matched) const {
  matched.resize(items_.size());
  for (size_t i : ItemsFor(user.user)) {
    const Item& item = items_[i];
    if (matched[i]) continue;
    if (!item.mailbox_pattern.empty()) {
      matched[i] = store::MatchPattern(item.mailbox_pattern, "user/" + user.user + "/" + folder);
      continue;
    }
    matched[i] = (item.partition.empty() || item.partition == user.partition) &&
                 (item.group < 0 || GroupMatches(groups_[size_t(item.group)], user.user)) &&
                 (item.user.empty() || item.user == user.user);
  }
}

bool Selection::WantsFolder(const store::UserInfo& user, const std::string& folder) const {
  for (size_t i : ItemsFor(user.user)) {
    const Item& item = items_[i];
    if (!item.mailbox_pattern.empty()) {
      if (store::MatchPattern(item.mailbox_pattern, "user/" + user.user + "/" + folder)) return true;
      continue;
    }
    if (!item.partition.empty() && item.partition != user.partition) continue;
    if (item.group >= 0 && !GroupMatches(groups_[size_t(item.group)], user.user)) continue;
    if (!item.user.empty() && item.user != user.user) continue;
    return true;
  }
  return false;
}

}  // namespace storemove::stream
