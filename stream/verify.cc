// verify: proves a destination store holds what the source holds.
#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>

#include "stream/stream.h"
#include "util/error.h"

namespace storemove::stream {

namespace {

std::string Names(uint64_t bits, const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < 64; ++i) {
    if (!(bits & (uint64_t(1) << i))) continue;
    if (!out.empty()) out += ' ';
    out += i < names.size() ? names[i] : "#" + std::to_string(i);
  }
  return out;
}

// Hashes a message file; nullopt when it is missing.
std::optional<Digest> HashFile(store::Folder& folder, uint32_t uid) {
  UniqueFd fd = folder.OpenMessage(uid);
  if (!fd.valid()) return std::nullopt;
  Hasher h;
  std::string buf(1 << 20, '\0');
  for (;;) {
    size_t n = ReadSome(fd.get(), buf.data(), buf.size(), folder.MessagePath(uid));
    if (n == 0) break;
    h.Update(buf.data(), n);
  }
  return h.Final();
}

class Comparer {
 public:
  Comparer(store::Store& dst, store::Store& src, const VerifyOptions& options)
      : dst_(dst), src_(src), options_(options) {}

  VerifyReport Run() {
    Selection selection(options_.names, ReadBackupGroups(src_.root() + "/config/backup-groups.conf"));
    std::vector<store::UserInfo> users;
    src_.ForEachUser([&](const store::UserInfo& u) {
      if (selection.WantsUser(u)) users.push_back(u);
    });
    for (const store::UserInfo& su : users) CompareUser(su, selection);
    return report_;
  }

 private:
  void Diff(const std::string& line) { report_.differences.push_back(line); }

  void CompareUser(const store::UserInfo& su, const Selection& selection) {
    std::vector<store::FolderInfo> folders;
    for (auto& f : src_.ListFolders(su.user))
      if (selection.WantsFolder(su, f.folder)) folders.push_back(std::move(f));
    if (folders.empty()) return;
    ++report_.users;
    std::optional<store::UserInfo> du = dst_.FindUser(su.user);
    if (!du) {
      Diff("user " + su.user + " is missing");
      return;
    }
    if (du->status != su.status)
      Diff("user " + su.user + ": status is " + du->status.ToString() + ", source has " + su.status.ToString());
    if (du->quota_limit != su.quota_limit)
      Diff("user " + su.user + ": quota limit is " + std::to_string(du->quota_limit) + ", source has " +
           std::to_string(su.quota_limit));
    if (dst_.Subscriptions(su.user) != src_.Subscriptions(su.user))
      Diff("user " + su.user + ": subscriptions differ");
    for (const store::FolderInfo& sf : folders) CompareFolder(sf);
  }

  void CompareFolder(const store::FolderInfo& sf) {
    ++report_.folders;
    const std::string mailbox = sf.Mailbox();
    std::unique_ptr<store::Folder> dfolder;
    try {
      dfolder = dst_.OpenFolder(sf.user, sf.folder);
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;
      Diff("mailbox " + mailbox + " is missing");
      return;
    }
    store::FolderSnapshot s = src_.OpenFolder(sf.user, sf.folder)->Snapshot();
    store::FolderSnapshot d = dfolder->Snapshot();
    auto field = [&](const char* name, auto dv, auto sv) {
      if (dv != sv) Diff("mailbox " + mailbox + ": " + name + " is " + std::to_string(dv) + ", source has " + std::to_string(sv));
    };
    field("UIDVALIDITY", d.info.uidvalidity, s.info.uidvalidity);
    field("UIDNEXT", d.info.uidnext, s.info.uidnext);
    field("message count", d.info.count, s.info.count);
    field("bytes", d.info.bytes, s.info.bytes);
    field("last append time", d.info.last_append, s.info.last_append);
    if (d.info.acl != s.info.acl) Diff("mailbox " + mailbox + ": ACL is '" + d.info.acl + "', source has '" + s.info.acl + "'");
    if (dst_.PerUser(mailbox) != src_.PerUser(mailbox)) Diff("mailbox " + mailbox + ": per-user data differs");

    std::map<uint32_t, const store::MessageMeta*> have;
    for (const auto& m : d.messages) have[m.uid] = &m;
    for (const store::MessageMeta& sm : s.messages) {
      ++report_.messages;
      report_.bytes += sm.size;
      std::string where = "mailbox " + mailbox + " UID " + std::to_string(sm.uid);
      auto it = have.find(sm.uid);
      if (it == have.end()) {
        Diff(where + " is missing");
        continue;
      }
      const store::MessageMeta& dm = *it->second;
      have.erase(it);
      if (dm.digest != sm.digest || dm.size != sm.size) {
        Diff(where + ": content differs (" + std::to_string(dm.size) + " bytes, source " + std::to_string(sm.size) + ")");
        continue;
      }
      if (dm.flags != sm.flags)
        Diff(where + ": flags are " + store::FlagNames(dm.flags) + ", source has " + store::FlagNames(sm.flags));
      std::string du = Names(dm.user_flags, d.info.user_flag_names), su = Names(sm.user_flags, s.info.user_flag_names);
      if (du != su) Diff(where + ": user flags are '" + du + "', source has '" + su + "'");
      if (dm.internal_date != sm.internal_date) Diff(where + ": internal date differs");
      if (dm.sent_date != sm.sent_date || dm.header_size != sm.header_size || dm.save_time != sm.save_time)
        Diff(where + ": dates or header size differ");
      if (options_.check_bytes) {
        std::optional<Digest> actual = HashFile(*dfolder, sm.uid);
        if (!actual) Diff(where + ": message file is missing");
        else if (*actual != sm.digest) Diff(where + ": message bytes do not match the source");
      }
    }
    for (const auto& [uid, m] : have) Diff("mailbox " + mailbox + " UID " + std::to_string(uid) + " is not in the source");
  }

  store::Store& dst_;
  store::Store& src_;
  const VerifyOptions& options_;
  VerifyReport report_;
};

}  // namespace

VerifyReport CompareStores(store::Store& destination, store::Store& source, const VerifyOptions& options) {
  return Comparer(destination, source, options).Run();
}

std::string VerifyReport::Json() const {
  nlohmann::json j = {{"users", users},     {"folders", folders},       {"messages", messages},
                      {"bytes", bytes},     {"equal", equal()},         {"differences", differences}};
  return j.dump();
}

}  // namespace storemove::stream
