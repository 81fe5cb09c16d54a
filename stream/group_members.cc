#include "stream/group_members.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "stream/json_template.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/plural.h"
#include "util/sectioned_list.h"
#include "util/version.h"

namespace storemove::stream {

std::vector<BackupGroup> ReadGroupsFile(const std::string& groups_file) {
  if (!PathExists(groups_file))
    Throw(Errc::kNotFound, "no backup groups file " + groups_file + " (NAME=REGEX lines; --groups FILE names another)");
  std::vector<BackupGroup> groups = ReadBackupGroups(groups_file);
  if (groups.empty())
    Throw(Errc::kInvalidArgument,
          "no backup groups in " + groups_file + " (NAME=REGEX lines; --groups FILE names another, e.g. the source's)");
  return groups;
}

size_t FirstGroupOf(const std::vector<BackupGroup>& groups, const std::string& user) {
  for (size_t g = 0; g < groups.size(); ++g)
    if (GroupMatches(groups[g], user)) return g;
  return groups.size();
}

std::vector<size_t> ChosenGroups(const std::vector<BackupGroup>& groups, const std::vector<std::string>& chosen,
                                 const std::string& groups_file) {
  std::vector<size_t> out;
  if (chosen.empty()) {
    for (size_t g = 0; g < groups.size(); ++g) out.push_back(g);
    return out;
  }
  for (const std::string& name : chosen) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const BackupGroup& g) { return g.name == name; });
    if (it == groups.end()) Throw(Errc::kInvalidArgument, "no group '" + name + "' in " + groups_file);
    const size_t g = size_t(it - groups.begin());
    if (std::find(out.begin(), out.end(), g) == out.end()) out.push_back(g);
  }
  return out;
}

void FlushListing(std::FILE* out) {
  if (std::fflush(out) != 0) ThrowErrno("write stdout");
  // A write that failed earlier sets the error flag; its errno is gone by now.
  if (std::ferror(out)) Throw(Errc::kIo, "write stdout: a write failed: the output is incomplete");
}

void WriteGroups(store::Store& store, const std::vector<BackupGroup>& groups, bool json, std::FILE* out) {
  // Sections in the order they are printed: per group its members and the users an earlier group
  // holds (JSON's keys come sorted: "also_matched" first), then the users in no group. The scan
  // reads the users in id order, so each section comes out sorted.
  const size_t no_group = 2 * groups.size();
  auto members = [&](size_t g) { return 2 * g + (json ? 1 : 0); };
  auto also = [&](size_t g) { return 2 * g + (json ? 0 : 1); };
  SectionedList list(no_group + 1);
  store.ForEachUser([&](const store::UserInfo& u) {
    bool assigned = false;
    for (size_t g = 0; g < groups.size(); ++g) {
      if (!GroupMatches(groups[g], u.user)) continue;
      list.Add(assigned ? also(g) : members(g), u.user);
      assigned = true;
    }
    if (!assigned) list.Add(no_group, u.user);
  });
  list.Finish();  // before the first line: an error of the runs on disk is not half a listing
  if (json) {
    auto names = [&](size_t section) {
      return [&list, section](JsonArrayOut& array) {
        list.Read(section, [&](std::string_view user) { array.Add(std::string(user)); });
      };
    };
    const nlohmann::json doc = {{"groups", JsonArrayPlaceholder("groups")},
                                {"no_group", JsonArrayPlaceholder("no_group")},
                                {"storemove_version", Version()}};
    WriteJsonTemplate(out, doc, "",
                      {{"groups",
                        [&](JsonArrayOut& array) {
                          for (size_t g = 0; g < groups.size(); ++g)
                            array.AddTemplate({{"name", groups[g].name},
                                               {"regex", groups[g].regex},
                                               {"members", JsonArrayPlaceholder("members")},
                                               {"also_matched", JsonArrayPlaceholder("also_matched")}},
                                              {{"members", names(members(g))}, {"also_matched", names(also(g))}});
                        }},
                       {"no_group", names(no_group)}});
    std::fputs("\n", out);
  } else {
    auto print = [&](size_t section, const char* indent) {
      list.Read(section, [&](std::string_view user) {
        std::fputs(indent, out);
        std::fwrite(user.data(), 1, user.size(), out);
        std::fputs("\n", out);
      });
    };
    for (size_t g = 0; g < groups.size(); ++g) {
      std::fputs(("group " + groups[g].name + " (" + groups[g].regex + "): " +
                  Counted(list.count(members(g)), "user") + "\n")
                     .c_str(),
                 out);
      print(members(g), "  ");
      if (list.count(also(g)))
        std::fputs(("  also matched, in an earlier group for migrate: " + Counted(list.count(also(g)), "user") + "\n")
                       .c_str(),
                   out);
      print(also(g), "    ");
    }
    std::fputs(("in no group: " + Counted(list.count(no_group), "user") + "\n").c_str(), out);
    print(no_group, "  ");
  }
  FlushListing(out);
}

}  // namespace storemove::stream
