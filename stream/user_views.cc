#include "stream/user_views.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "stream/group_members.h"
#include "stream/progress.h"
#include "stream/toc.h"
#include "util/error.h"
#include "util/printable.h"
#include "util/fs.h"
#include "util/version.h"

namespace storemove::stream {

StatusFilter StatusFilter::Parse(std::string_view text) {
  if (text == "moved") return {store::UserState::kMoved, ""};
  try {
    store::UserStatus s = store::UserStatus::Parse(text);
    return {s.state, s.host};
  } catch (const Error&) {
    Throw(Errc::kInvalidArgument, "--status '" + ShownName(text) + "': expected active, hold, moved or moved:HOST");
  }
}

bool StatusFilter::Matches(const store::UserStatus& status) const {
  return status.state == state && (host.empty() || store::UserStatus::SameHost(status.host, host));
}

namespace {

// Characters, not bytes, so a UTF-8 id lines up (a wide CJK character still takes two columns).
size_t Columns(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

std::string Pad(const std::string& s, size_t width) {
  return s + std::string(width > Columns(s) ? width - Columns(s) : 0, ' ');
}

}  // namespace

void WriteUsersText(store::Store& store, const std::optional<StatusFilter>& filter, std::FILE* out) {
  size_t width = 4;  // "USER"
  store.ForEachUser([&](const store::UserInfo& u) {
    if (!filter || filter->Matches(u.status)) width = std::max(width, Columns(u.user));
  });
  auto row = [&](const std::string& user, const std::string& status, const std::string& partition,
                 const std::string& used) {
    const std::string line =
        Pad(user, width) + "  " + Pad(status, 20) + "  " + Pad(partition, 10) + "  " + used + "\n";
    std::fputs(line.c_str(), out);
  };
  row("USER", "STATUS", "PARTITION", "USED");
  // The users of the second read: one made between the reads may be wider than the column.
  uint64_t count = 0;
  store.ForEachUser([&](const store::UserInfo& u) {
    if (filter && !filter->Matches(u.status)) return;
    row(u.user, u.status.ToString(), u.partition, HumanBytes(double(u.quota_used)));
    ++count;
  });
  std::fprintf(out, "%llu %s\n", (unsigned long long)count, count == 1 ? "user" : "users");
  FlushListing(out);
}

std::string IndentedElement(const nlohmann::json& element, const std::string& indent) {
  const std::string text = element.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string out = indent;
  for (char c : text) {
    out += c;
    if (c == '\n') out += indent;
  }
  return out;
}

void WriteUsersJson(store::Store& store, const std::optional<StatusFilter>& filter, std::FILE* out) {
  // Written as the users are read (one at a time), not built whole: a document of 32,000 users
  // took 84 MiB (helper-65). "users" comes first, its count after it.
  uint64_t count = 0;
  std::fputs("{\n  \"users\": [", out);
  store.ForEachUser([&](const store::UserInfo& u) {
    if (filter && !filter->Matches(u.status)) return;
    nlohmann::json row = {{"user", u.user},
                          {"status", u.status.ToString()},
                          {"partition", u.partition},
                          {"quota_limit", u.quota_limit},
                          {"quota_used", u.quota_used},
                          {"created", u.created ? nlohmann::json(IsoUtc(u.created)) : nlohmann::json(nullptr)}};
    if (!u.status.origin_store.empty()) row["origin_store"] = u.status.origin_store;  // a migration's copy, held
    if (u.status.held_by_pull) row["held_by_pull"] = true;  // the pull that completes the user lifts it
    std::fputs(count++ ? ",\n" : "\n", out);
    std::fputs(IndentedElement(row, "    ").c_str(), out);
  });
  std::fputs(count ? "\n  ],\n" : "],\n", out);
  std::fprintf(out, "  \"count\": %llu,\n  \"storemove_version\": %s\n}\n", (unsigned long long)count,
               nlohmann::json(Version()).dump().c_str());
  FlushListing(out);
}

std::vector<std::string> ReadUsersFile(const std::string& file, std::vector<size_t>* line_numbers) {
  // "-": standard input, for a list made by a pipe (a shell's <(...) is a symbolic link in
  // /dev/fd, which no file option follows).
  const bool from_stdin = file == "-";
  const std::string path = from_stdin ? "standard input" : file;
  std::string text;
  if (from_stdin) {
    char buf[65536];
    for (;;) {
      const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
      if (n == 0) break;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) ThrowErrno("read standard input");
      text.append(buf, size_t(n));
    }
  } else {
    text = ReadFile(file);
  }
  if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);  // a byte-order mark, as some editors save UTF-8
  std::istringstream in(text);
  std::vector<std::string> users;
  std::set<std::string> seen;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    size_t last = line.find_last_not_of(" \t");
    std::string user = line.substr(first, last + 1 - first);
    try {
      store::ValidateUserId(user);
    } catch (const Error& e) {
      Throw(Errc::kInvalidArgument, path + " line " + std::to_string(lineno) + ": " + e.what());
    }
    if (!seen.insert(user).second) continue;  // a repeated id is one user
    users.push_back(std::move(user));
    if (line_numbers) line_numbers->push_back(size_t(lineno));
  }
  if (users.empty()) Throw(Errc::kInvalidArgument, path + ": no user ids in it");
  return users;
}

std::vector<std::string> GroupUsers(store::Store& store, const std::string& groups_file, const std::string& group) {
  // The group's members only, as `storemove groups` lists them (a user goes to the first group
  // that matches it): the whole assignment held every user in no group (helper-164: 31 MB at
  // 300,000 users for a group of 20).
  const std::vector<BackupGroup> groups = ReadGroupsFile(groups_file);
  const auto chosen = std::find_if(groups.begin(), groups.end(), [&](const BackupGroup& g) { return g.name == group; });
  if (chosen == groups.end()) Throw(Errc::kInvalidArgument, "no group '" + group + "' in " + groups_file);
  std::vector<std::string> members;
  store.ForEachUser([&](const store::UserInfo& u) {
    for (auto earlier = groups.begin(); earlier != chosen; ++earlier)
      if (GroupMatches(*earlier, u.user)) return;
    if (GroupMatches(*chosen, u.user)) members.push_back(u.user);
  });
  if (members.empty())
    Throw(Errc::kInvalidArgument, "group '" + group + "' of " + groups_file + " holds no user of this store");
  std::sort(members.begin(), members.end());
  return members;
}

StatusChange SetStatusOf(store::Store& store, const std::vector<std::string>& users, const store::UserStatus& status,
                         bool include_moved, const store::Store::LockWait& wait) {
  StatusChange change;
  change.status = status;
  const auto moved = include_moved ? store::Store::MovedUsers::kChange : store::Store::MovedUsers::kLeave;
  std::vector<std::pair<std::string, store::UserStatus>> before;
  try {
    before = store.SetUsersStatus(users, status, moved, wait);  // names the first unknown user, changes nobody
  } catch (const Error& e) {
    if (e.code() == Errc::kNoUser) Throw(Errc::kNoUser, std::string(e.what()) + " (nobody was changed)");
    throw;
  }
  for (auto& [user, was] : before) {
    const bool left = !include_moved && was.state == store::UserState::kMoved;
    (left ? change.left_moved : change.changed).emplace_back(std::move(user), std::move(was));
  }
  return change;
}

std::string StatusChangeText(const StatusChange& change) {
  std::string out;
  for (const auto& [user, was] : change.changed)
    out += user + ": " + was.ToString() + " -> " + change.status.ToString() + "\n";
  for (const auto& [user, was] : change.left_moved)
    out += user + ": " + was.ToString() + " (left alone: moved away; --include-moved changes it too)\n";
  const size_t n = change.changed.size();
  out += std::to_string(n) + (n == 1 ? " user" : " users") + " set to " + change.status.ToString() +
         " in one transaction";
  if (!change.left_moved.empty()) out += ", " + std::to_string(change.left_moved.size()) + " moved left alone";
  return out + "\n";
}

std::string StatusChangeJson(const StatusChange& change) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [user, was] : change.changed) list.push_back({{"user", user}, {"before", was.ToString()}});
  nlohmann::json left = nlohmann::json::array();
  for (const auto& [user, was] : change.left_moved) left.push_back({{"user", user}, {"status", was.ToString()}});
  return nlohmann::json{{"status", change.status.ToString()},
                        {"users", list},
                        {"count", change.changed.size()},
                        {"left_moved", left},
                        {"storemove_version", Version()}}
      .dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace storemove::stream
