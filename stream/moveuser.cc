// storemove moveuser; the rules are in stream/moveuser.h and docs/moveuser.md.
#include "stream/moveuser.h"

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "interop/folder_filler.h"
#include "interop/imap_client.h"
#include "interop/imap_wire_form.h"
#include "interop/keyword_bits.h"
#include "stream/command_channel.h"
#include "stream/net_conn.h"
#include "stream/private_file.h"
#include "stream/user_views.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/printable.h"

namespace storemove::stream {

using interop::ImapClient;
using interop::ImapFolder;
using interop::ImapMessage;
using store::Folder;
using store::MessageMeta;
using store::StagedMessage;

namespace {


// The IMAP client's byte channel: a TCP connection, under TLS after STARTTLS or from the start.
class ConnectionChannel final : public interop::ImapChannel {
 public:
  ConnectionChannel(net::Connection& conn, const net::TlsContext* tls, std::string host)
      : conn_(conn), tls_(tls), host_(std::move(host)) {}
  size_t Read(void* data, size_t size) override { return conn_.Read(data, size); }
  void Write(const void* data, size_t size) override { conn_.WriteAll(data, size); }
  void StartTls() override {
    if (!tls_) Throw(Errc::kInvalidArgument, "STARTTLS without a TLS context");
    // Bytes that arrived before the handshake would be plain text posing as protected (the
    // STARTTLS command injection of CVE-2011-0411): refuse them.
    if (conn_.Readable())
      Throw(Errc::kProtocol, conn_.peer() + ": data after the STARTTLS reply, before the TLS handshake");
    conn_.Connect(*tls_, host_);
  }

 private:
  net::Connection& conn_;
  const net::TlsContext* tls_;
  std::string host_;
};

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

// The store's name of a source folder: INBOX in any case is INBOX (RFC 3501 §5.1), the rest as the
// client decoded it (UTF-8, '/' between levels).
std::string StoreFolderName(const ImapFolder& folder) {
  if (EqualsIgnoreCase(folder.path, "INBOX")) return "INBOX";
  if (folder.path.size() > 6 && EqualsIgnoreCase(folder.path.substr(0, 6), "INBOX/"))
    return "INBOX/" + folder.path.substr(6);
  return folder.path;
}

uint8_t SystemFlag(std::string_view flag) {
  if (EqualsIgnoreCase(flag, "\\Seen")) return store::kSeen;
  if (EqualsIgnoreCase(flag, "\\Answered")) return store::kAnswered;
  if (EqualsIgnoreCase(flag, "\\Flagged")) return store::kFlagged;
  if (EqualsIgnoreCase(flag, "\\Deleted")) return store::kDeleted;
  if (EqualsIgnoreCase(flag, "\\Draft")) return store::kDraft;
  return 0;
}

// System flags and user-flag bits of a source message; counts keywords that found no bit.
void MapFlags(const std::vector<std::string>& sent, interop::KeywordBits& keywords, uint8_t* flags,
              uint64_t* user_flags, uint64_t* dropped) {
  *flags = 0;
  *user_flags = 0;
  for (const std::string& flag : sent) {
    if (flag.empty()) continue;
    if (flag[0] == '\\') {
      *flags |= SystemFlag(flag);  // \Recent and unknown system flags are not kept
      continue;
    }
    if (std::optional<size_t> bit = keywords.Bit(flag)) {
      *user_flags |= uint64_t{1} << *bit;
    } else {
      ++*dropped;  // a keyword the store cannot name, or one beyond the folder's 64
    }
  }
}

// One message of a listing: 24 bytes, its flags one of the listing's distinct flag sets (a
// folder's messages share a few: \Seen, \Seen \Answered, ...). A listing of ImapMessages, and a
// map of the stored messages beside it, took ~400 bytes a message: a rerun over a folder of
// 200,000 used 84 MB.
struct Listed {
  uint32_t uid = 0;
  uint32_t flag_set = 0;
  int64_t internal_date = 0;
  uint64_t size = 0;
};

// Collects FETCH metadata (no bodies): one entry per UID, at most as many as the folder holds.
class MetaList final : public interop::ImapFetchSink {
 public:
  explicit MetaList(const ImapClient& client) : client_(client) { Intern({}); }
  void BodyBegin(uint64_t) override {}
  void BodyData(const char*, size_t) override {}
  bool Message(const ImapMessage& m, bool) override {
    if (m.uid == 0) return false;
    if (Listed* was = Find(m.uid)) {  // a flag update the server sent meanwhile, UID included: the later values hold
      if (m.has_flags) was->flag_set = Intern(m.flags);
      if (m.has_date) was->internal_date = m.internal_date;
      if (m.has_size) was->size = m.size;
      return false;
    }
    // Bounded by the folder's size, with room for deliveries during the listing: Cyrus sends
    // their FETCH responses before the EXISTS that counts them.
    if (messages_.size() >= uint64_t(client_.exists()) + kListingSlack)
      Throw(Errc::kProtocol, "the server listed " + std::to_string(messages_.size() + 1) +
                                 " messages, more than the folder's EXISTS count of " + std::to_string(client_.exists()) +
                                 " and " + std::to_string(kListingSlack) + " arrivals");
    if (sorted_ && !messages_.empty() && messages_.back().uid > m.uid) {
      sorted_ = false;  // servers list in UID order; one that does not is looked up by a map
      for (size_t i = 0; i < messages_.size(); ++i) index_.emplace(messages_[i].uid, i);
    }
    if (!sorted_) index_.emplace(m.uid, messages_.size());
    messages_.push_back({m.uid, Intern(m.flags), m.internal_date, m.size});
    return true;
  }
  // In UID order (each UID once), once the listing is complete.
  const std::vector<Listed>& SortedByUid() {
    if (!sorted_) {
      std::sort(messages_.begin(), messages_.end(), [](const Listed& a, const Listed& b) { return a.uid < b.uid; });
      index_.clear();
      sorted_ = true;
    }
    return messages_;
  }
  const std::vector<Listed>& messages() const { return messages_; }
  std::vector<std::string> FlagsOf(const Listed& m) const {
    std::vector<std::string> flags;
    for (uint32_t id : flag_sets_[m.flag_set]) flags.push_back(names_[id]);
    return flags;
  }
  bool Lists(uint32_t uid) const { return Find(uid) != nullptr; }
  static constexpr uint64_t kListingSlack = 10000;
  // The distinct flag and keyword names' bytes: a server inventing new names is refused before
  // they fill memory (a store keeps 64 keywords a folder; a real folder has a few dozen names).
  // Sets are kept as name numbers, 4 bytes a flag: a folder of 30,000 messages each with its own
  // 13 of 26 long keywords takes 1.5 MB (a cap on sets' bytes refused it, helper-120).
  static constexpr size_t kMaxNameBytes = 16 << 20;
  // And the distinct sets': a folder of 30,000 messages each with its own 13 of 26 keywords takes
  // 6.7 MB of the 64 MiB.
  static constexpr size_t kMaxSetBytes = 64 << 20;

 private:
  const Listed* Find(uint32_t uid) const {
    if (!sorted_) {
      auto it = index_.find(uid);
      return it == index_.end() ? nullptr : &messages_[it->second];
    }
    if (messages_.empty() || messages_.back().uid < uid) return nullptr;
    auto it = std::lower_bound(messages_.begin(), messages_.end(), uid,
                               [](const Listed& a, uint32_t u) { return a.uid < u; });
    return it != messages_.end() && it->uid == uid ? &*it : nullptr;
  }
  Listed* Find(uint32_t uid) { return const_cast<Listed*>(std::as_const(*this).Find(uid)); }
  uint32_t Intern(const std::vector<std::string>& flags) {
    std::vector<uint32_t> ids;
    ids.reserve(flags.size());
    for (const std::string& f : flags) {
      auto [it, added] = name_ids_.try_emplace(f, static_cast<uint32_t>(names_.size()));
      if (added) {
        name_bytes_ += f.size() + 64;
        if (name_bytes_ > kMaxNameBytes)
          Throw(Errc::kProtocol, "the server listed more than " + std::to_string(kMaxNameBytes >> 20) +
                                     " MiB of distinct flag and keyword names in one folder (" +
                                     std::to_string(names_.size()) + " names)");
        names_.push_back(f);
      }
      ids.push_back(it->second);
    }
    std::string key(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(uint32_t));
    auto [it, added] = set_ids_.try_emplace(std::move(key), static_cast<uint32_t>(flag_sets_.size()));
    if (added) {
      // Each set twice (numbers and key) and two nodes: a server giving every message a set of its
      // own from 1,000 short names (4 KB a message) is refused, not paid for (helper-121).
      set_bytes_ += 2 * ids.size() * sizeof(uint32_t) + 128;
      if (set_bytes_ > kMaxSetBytes)
        Throw(Errc::kProtocol, "the server listed more than " + std::to_string(kMaxSetBytes >> 20) +
                                   " MiB of distinct flag sets in one folder (" + std::to_string(flag_sets_.size()) +
                                   " sets)");
      flag_sets_.push_back(std::move(ids));
    }
    return it->second;
  }
  const ImapClient& client_;
  std::vector<Listed> messages_;
  bool sorted_ = true;
  std::unordered_map<uint32_t, size_t> index_;  // UID -> position, only while not in UID order
  std::vector<std::string> names_;  // each distinct flag or keyword once
  std::unordered_map<std::string, uint32_t> name_ids_;
  size_t name_bytes_ = 0;
  std::vector<std::vector<uint32_t>> flag_sets_;  // each distinct set once, as name numbers
  std::unordered_map<std::string, uint32_t> set_ids_;  // a set's numbers' bytes -> its number
  size_t set_bytes_ = 0;
};

struct FolderPull {
  store::Store& store;
  const std::string& user;
  const std::string& name;
  const MoveUserOptions& options;
  MoveUserResult& result;
  int64_t now;
};

// Whether a UID present on both sides (same UIDVALIDITY, same size) is, by its metadata alone, the
// message an earlier pull stored. The same UID can hold two different messages: after a pull the
// folder's UIDNEXT is the source's, so a local delivery takes the very UID the source gives its
// next new message. Fetching every body again on each rerun to compare would make reruns cost a
// full pull, so the metadata screen: a pulled message carries the source's INTERNALDATE exactly,
// and was saved here some time after it arrived there; a local delivery has its own internal date,
// which is its save time. Only when the dates differ, or the stored message looks like a local
// delivery (internal date within kLocalWindow of its save time), is the body fetched and its
// digest compared with the stored one (docs/moveuser.md "Reruns").
constexpr int64_t kLocalWindow = 3600;
bool SameByMetadata(int64_t source_internal_date, const MessageMeta& stored) {
  if (source_internal_date == 0 || source_internal_date != stored.internal_date) return false;
  const int64_t gap = stored.save_time - stored.internal_date;
  return gap > kLocalWindow || gap < -kLocalWindow;
}

// A message imported from the server's own files (`import --maildir` keeps their UIDVALIDITY and
// UIDs) holds their bare LFs, which the server turns into CRLF on the wire, so its size and digest
// are not the ones the server shows, and the pull took every such UID for another message and
// stored the folder a second time (helper-73: 273 messages became 546). A stored message of a UID
// the server lists with a larger size is looked at in its wire form (imap_wire_form.h): when that
// has the server's size, it stands for the stored message from here on (the size screen, a
// suspect's digest), and its UID goes to `wire_uids`. Such a UID is always a suspect, its body fetched
// and compared: a local delivery with LF line ends under a source UID can have that size too, and
// the dates alone took one for the other (helper-91: the source's message lost, exit 0). Costs a
// read of such files, and their bodies' transfer, on each run; a folder pulled before has none.
std::optional<interop::WireForm> SeeInWireForm(const Folder& folder, const Listed& m, const MessageMeta& stored) {
  if (stored.size >= m.size) return std::nullopt;  // a wire form is never smaller
  const UniqueFd fd = folder.OpenMessage(m.uid);
  if (!fd.valid()) return std::nullopt;  // expunged here since the snapshot
  const interop::WireForm wire = interop::WireFormOfFile(fd.get(), folder.MessagePath(m.uid));
  if (wire.size != m.size) return std::nullopt;
  return wire;
}

// Each listed message (in UID order) with the stored message of its UID, or null: one pass over
// both, reading a large folder's spooled snapshot in slices.
template <typename Fn>
void ForEachListed(const std::vector<Listed>& listed, const store::MessageList& stored, Fn fn) {
  auto s = stored.begin();
  const auto end = stored.end();
  for (const Listed& m : listed) {
    while (s != end && s->uid < m.uid) ++s;
    fn(m, s != end && s->uid == m.uid ? &*s : nullptr);
  }
}

// Streams BODY[] literals into staged message files, handed to the folder's filler (batches,
// the skip of bytes already present, single instance on arrival). With `suspects` it takes the
// bodies of the UIDs SameByMetadata left in doubt, with what is stored under each: the same
// digest as the stored message is the same message (its flags follow the source); other bytes
// are another message, added under a new UID above both sides' (as restore does) unless a rerun
// finds it there already; the local message and its flags are left alone.
class BodyWriter final : public interop::ImapFetchSink {
 public:
  using Suspects = std::unordered_map<uint32_t, MessageMeta>;
  // `asked`: the UIDs fetched (sorted), or null for "every message" (1:*).
  // `counted`: for "every message", the client whose EXISTS count bounds how many may come.
  BodyWriter(FolderPull& pull, Folder& folder, interop::KeywordBits& keywords, interop::FolderFiller& filler,
             const std::vector<uint32_t>* asked, const Suspects* suspects = nullptr,
             const ImapClient* counted = nullptr)
      : pull_(pull), folder_(folder), keywords_(keywords), filler_(filler), asked_(asked), suspects_(suspects),
        counted_(counted) {}

  // Of the suspects, those looked at in their wire form (SeeInWireForm): counted as such when proven.
  const std::unordered_set<uint32_t>* wire_uids = nullptr;

  void BodyBegin(uint64_t) override { writer_ = folder_.NewMessage(); }
  void BodyData(const char* data, size_t size) override { writer_->Write(data, size); }
  bool Message(const ImapMessage& sent, bool had_body) override {
    if (!had_body || !writer_) {  // a flag update the server sent on its own, or half of a split response
      if (sent.nil_body && sent.uid != 0 &&
          (asked_ ? std::binary_search(asked_->begin(), asked_->end(), sent.uid)
                  : !counted_ || said_nil_.size() < uint64_t(counted_->exists()) + MetaList::kListingSlack))
        said_nil_.insert(sent.uid);
      NoteMetadata(sent);
      return false;
    }
    const ImapMessage m = WithMetadataSentBefore(sent);
    // Each asked-for body once: a second copy, or a body not asked for, would be stored as a
    // message the source does not have.
    if (asked_ && !std::binary_search(asked_->begin(), asked_->end(), m.uid))
      Throw(Errc::kProtocol, "the server sent the body of UID " + std::to_string(m.uid) + ", which was not asked for");
    highest_received_ = std::max(highest_received_, m.uid);
    if (!received_.insert(m.uid).second)
      Throw(Errc::kProtocol, "the server sent the body of UID " + std::to_string(m.uid) + " twice");
    // Every message of a folder: as many as it counts, and room for arrivals meanwhile, as a
    // listing (MetaList); a server sending more is inventing them (helper-51: 300,000 bodies
    // stored for a folder of 3, exit 0).
    if (counted_ && received_.size() > uint64_t(counted_->exists()) + MetaList::kListingSlack)
      Throw(Errc::kProtocol, "the server sent " + std::to_string(received_.size()) +
                                 " message bodies, more than the folder's EXISTS count of " +
                                 std::to_string(counted_->exists()) + " and " +
                                 std::to_string(MetaList::kListingSlack) + " arrivals");
    MessageMeta meta;
    if (!suspects_) meta.uid = m.uid;  // a suspect that differs goes under a new UID
    MapFlags(m.flags, keywords_, &meta.flags, &meta.user_flags, &pull_.result.keywords_dropped);
    keywords_.Save(folder_);  // the names before any commit that uses them
    meta.internal_date = m.internal_date != 0 ? m.internal_date : pull_.now;
    StagedMessage staged = writer_->Finish(meta);
    writer_.reset();
    // A server that sent no INTERNALDATE: the Date: header says better than the pull's time when
    // the message came (clients sort by it; every message of the folder would share one day).
    if (m.internal_date == 0 && staged.meta.sent_date > 0) staged.meta.internal_date = staged.meta.sent_date;
    if (!m.has_flags || !m.has_date) lacking_[m.uid] = uint8_t((m.has_flags ? 0 : kFlags) | (m.has_date ? 0 : kDate));
    if (suspects_ && StoredAlready(m.uid, meta, staged)) return true;
    if (!filler_.AddStaged(std::move(staged))) {
      ++pull_.result.already_present;  // (a suspect: added by an earlier run)
      return true;
    }
    return true;  // counted when committed (Tally): of a suspect, as a UID conflict too
  }

 private:
  // A server may answer one FETCH in several responses (RFC 3501 7.4.2), say FLAGS and
  // INTERNALDATE in one and BODY[] in the next: those sent before the body are kept for it
  // (helper-112: stored without flags and with the pull's time as its date, exit 0). Sent after
  // it, they come too late for a message already staged, and the pull stops rather than store
  // it without them. Kept only for UIDs whose bodies may still come, as many as a listing holds.
  void NoteMetadata(const ImapMessage& m) {
    if (m.uid == 0 || (!m.has_flags && !m.has_date && !m.has_size)) return;
    if (received_.count(m.uid)) {
      // FLAGS after the body (a change meanwhile, or the rest of a split response): applied once
      // the message is committed (helper-116: dropped, the pull ended 0 with the older flags).
      if (m.has_flags) late_flags_[m.uid] = m.flags;
      const auto lacked = lacking_.find(m.uid);
      if (lacked != lacking_.end() && m.has_date && (lacked->second & kDate))
        Throw(Errc::kProtocol, "the server sent the INTERNALDATE of UID " + std::to_string(m.uid) +
                                   " after its body, in a response of its own; a message is not stored without it");
      return;
    }
    auto it = metadata_.find(m.uid);
    if (it == metadata_.end()) {
      if (asked_ ? !std::binary_search(asked_->begin(), asked_->end(), m.uid)
                 : counted_ && metadata_.size() >= uint64_t(counted_->exists()) + MetaList::kListingSlack)
        return;
      it = metadata_.emplace(m.uid, ImapMessage{}).first;
      it->second.uid = m.uid;
    }
    ImapMessage& kept = it->second;
    if (m.has_flags) kept.flags = m.flags, kept.has_flags = true;
    if (m.has_date) kept.internal_date = m.internal_date, kept.has_date = true;
    if (m.has_size) kept.size = m.size, kept.has_size = true;
  }
  // The body's response, with what earlier responses of its UID said that it does not.
  ImapMessage WithMetadataSentBefore(const ImapMessage& m) {
    auto it = metadata_.find(m.uid);
    if (it == metadata_.end()) return m;
    ImapMessage merged = m;
    const ImapMessage& before = it->second;
    if (!merged.has_flags && before.has_flags) merged.flags = before.flags, merged.has_flags = true;
    if (!merged.has_date && before.has_date) merged.internal_date = before.internal_date, merged.has_date = true;
    if (!merged.has_size && before.has_size) merged.size = before.size, merged.has_size = true;
    metadata_.erase(it);
    return merged;
  }

  // A suspect whose bytes are the stored message's: dropped, its flags follow the source.
  bool StoredAlready(uint32_t uid, const MessageMeta& meta, StagedMessage& staged) {
    auto it = suspects_->find(uid);
    if (it == suspects_->end() || it->second.digest != staged.meta.digest || it->second.size != staged.meta.size)
      return false;
    std::vector<StagedMessage> one{std::move(staged)};
    folder_.Discard(one);
    if (wire_uids && wire_uids->count(uid)) ++pull_.result.lf_copies;  // proven, by its body
    const uint8_t kept = it->second.flags & store::kRecent;
    if ((it->second.flags & ~store::kRecent) != meta.flags || it->second.user_flags != meta.user_flags) {
      folder_.SetFlags(uid, static_cast<uint8_t>(meta.flags | kept), meta.user_flags);
      ++pull_.result.flags_updated;
    }
    return true;
  }

  FolderPull& pull_;
  Folder& folder_;
  interop::KeywordBits& keywords_;
  interop::FolderFiller& filler_;
  const std::vector<uint32_t>* asked_;
  const Suspects* suspects_;
  const ImapClient* counted_;
  std::unordered_set<uint32_t> received_;
  uint32_t highest_received_ = 0;
  std::unordered_map<uint32_t, ImapMessage> metadata_;  // NoteMetadata: sent before their bodies
  std::unordered_map<uint32_t, std::vector<std::string>> late_flags_;
  static constexpr uint8_t kFlags = 1, kDate = 2;
  std::unordered_map<uint32_t, uint8_t> lacking_;  // bodies stored without FLAGS (kFlags) or INTERNALDATE (kDate)
  std::unordered_set<uint32_t> said_nil_;  // asked for, answered BODY[] NIL

 public:
  // After the FETCH: whether every asked-for body came (at least `count` for 1:*).
  bool AllReceived(uint64_t count) const { return received_.size() >= (asked_ ? asked_->size() : count); }
  bool Received(uint32_t uid) const { return received_.count(uid) != 0; }
  // The server answered BODY[] NIL for this asked-for UID: it says it has no body for it.
  bool SaidNil(uint32_t uid) const { return said_nil_.count(uid) != 0; }
  uint64_t received_count() const { return received_.size(); }
  uint32_t highest_received() const { return highest_received_; }
  const std::unordered_set<uint32_t>& received() const { return received_; }
  uint64_t expunges_at_start = 0;  // the client's EXPUNGE count when the FETCH began
  uint64_t exists_at_start = 0;    // the folder's EXISTS when the FETCH began (a writer of 1:*)
  uint32_t uidnext_at_start = 0;   // its UIDNEXT at the EXAMINE before (0: not known)
  // FLAGS the server sent for a UID after its body (NoteMetadata), the last of each.
  const std::unordered_map<uint32_t, std::vector<std::string>>& late_flags() const { return late_flags_; }
  const std::vector<uint32_t>* asked() const { return asked_; }
  const Suspects* suspects() const { return suspects_; }
  std::unique_ptr<store::MessageWriter> writer_;
};

// Lists every message of the examined folder (UID FETCH 1:*). The answer must cover what the
// folder counted when the command began (EXISTS), less what the server expunged meanwhile (its
// EXPUNGE responses): a server that answers fewer (a response without its UID, a message left
// out) would have those messages left behind and the pull end with 0, and a folder's UIDNEXT
// raised above them. The pull fails instead (kTempFail: a rerun asks again; found by review,
// helper-51).
void ListAll(ImapClient& client, MetaList& listed, uint32_t uidnext = 0) {
  const uint64_t counted = client.exists(), expunges = client.expunges();
  client.FetchMeta(1, listed);
  const uint64_t expunged = client.expunges() - expunges;
  if (listed.messages().size() + expunged < counted)
    Throw(Errc::kTempFail, "the server listed " + std::to_string(listed.messages().size()) + " of the " +
                               std::to_string(counted) + " messages it counts (EXISTS)" +
                               (expunged ? ", " + std::to_string(expunged) + " expunged meanwhile" : std::string()) +
                               ", without saying the others were expunged; run again");
  // Messages delivered during the listing raise EXISTS and take UIDs from the folder's UIDNEXT on
  // (`uidnext`, when the caller knows it from the EXAMINE just before); a server may list them
  // (Cyrus) or not (Dovecot evaluates 1:* first). The messages counted before are all below it: a
  // listing that leaves one of them out and lists an arrival in its place has the count right, and
  // the older message was stored below the folder's new UIDNEXT by the next run, where clients no
  // longer look (helper-112).
  if (uidnext == 0 || client.exists() <= counted) return;
  uint64_t older = 0;
  for (const Listed& m : listed.messages()) older += m.uid < uidnext;
  if (older + expunged < counted)
    Throw(Errc::kTempFail, "the server listed " + std::to_string(older) + " of the " + std::to_string(counted) +
                               " messages it counted before the listing (UIDs below its UIDNEXT " +
                               std::to_string(uidnext) + ") and " + std::to_string(listed.messages().size() - older) +
                               " delivered since, without saying the others were expunged; run again");
}

// The UIDs the folder lists now whose bodies `writer` asked for (every UID: a writer of 1:*) and
// did not receive, in order.
std::vector<uint32_t> ListedNotReceived(ImapClient& client, const BodyWriter& writer) {
  if (client.exists() == 0) return {};  // emptied meanwhile: "1:*" of no message is BAD to some servers
  MetaList listed(client);
  ListAll(client, listed);
  const std::vector<uint32_t>* asked = writer.asked();
  std::vector<uint32_t> missing;
  for (const Listed& m : listed.SortedByUid())
    if ((!asked || std::binary_search(asked->begin(), asked->end(), m.uid)) && !writer.Received(m.uid))
      missing.push_back(m.uid);
  if (!asked) {
    // Bodies of every message (1:*): one the folder does not list was expunged since, or invented.
    uint64_t unlisted = 0, unlisted_new = 0;
    uint32_t example = 0;
    for (uint32_t uid : writer.received()) {
      if (listed.Lists(uid)) continue;
      ++unlisted;
      example = std::max(example, uid);
      unlisted_new += writer.uidnext_at_start > 0 && uid >= writer.uidnext_at_start;
    }
    // One not below the EXAMINE's UIDNEXT was delivered since, and expunged: both must have
    // happened (helper-116: one EXPUNGE of an older message "explained" an invented UID 99).
    const uint64_t expunged = client.expunges() - writer.expunges_at_start;
    const uint64_t arrived =
        client.exists() + expunged > writer.exists_at_start ? client.exists() + expunged - writer.exists_at_start : 0;
    if (unlisted > expunged || unlisted_new > std::min(expunged, arrived))
      Throw(Errc::kProtocol, "the server sent the bod" + std::string(unlisted == 1 ? "y of UID " : "ies of UID ") +
                                 std::to_string(example) +
                                 (unlisted == 1 ? "" : " and " + std::to_string(unlisted - 1) + " more") +
                                 ", which the folder does not list and the server did not say were expunged");
  }
  std::sort(missing.begin(), missing.end());
  return missing;
}

// After a FETCH that left bodies out. A message expunged meanwhile has none, and the server may
// say so only later: the folder is listed again, and what it no longer lists is not missing.
// What it still lists is asked for once more; a body still missing then, and still listed,
// fails the pull (kTempFail: nothing of the batch in progress becomes visible, a new folder
// stays invisible, and the next run asks again).
// FLAGS the server sent after bodies go to `late` (BodyWriter::late_flags), when given.
void FetchMissing(ImapClient& client, FolderPull& pull, Folder& folder, interop::KeywordBits& keywords,
                  interop::FolderFiller& filler, const BodyWriter& first,
                  std::unordered_map<uint32_t, std::vector<std::string>>* late = nullptr) {
  std::vector<uint32_t> missing = ListedNotReceived(client, first);
  if (missing.empty()) return;  // expunged meanwhile
  BodyWriter again(pull, folder, keywords, filler, &missing, first.suspects());
  client.FetchBodies(missing, again);
  if (late)
    for (const auto& [uid, flags] : again.late_flags()) (*late)[uid] = flags;
  // Only what was asked for again: a message arrived meanwhile was never asked for.
  const std::vector<uint32_t> still = ListedNotReceived(client, again);
  if (still.empty()) return;
  // Each answered BODY[] NIL twice, and still listed: the server says it has no body for it, and
  // says so on every run; a retry loop around moveuser would repeat it for ever (75 each time).
  if (std::all_of(still.begin(), still.end(), [&](uint32_t uid) { return first.SaidNil(uid) && again.SaidNil(uid); }))
    Throw(Errc::kProtocol, "the server lists UID " + std::to_string(still.front()) +
                               (still.size() > 1 ? " and " + std::to_string(still.size() - 1) + " more" : std::string()) +
                               " but answers BODY[] NIL for " + (still.size() > 1 ? "them" : "it") +
                               ", asked twice: it has no body to send. Repair " +
                               (still.size() > 1 ? "those messages" : "that message") +
                               " at the source (or expunge it there), then run again");
  Throw(Errc::kTempFail, "the server lists UID " + std::to_string(still.front()) +
                             (still.size() > 1 ? " and " + std::to_string(still.size() - 1) + " more" : std::string()) +
                             " but sent no body for " + (still.size() > 1 ? "them" : "it") +
                             ", asked twice; run again");
}

// FLAGS the server sent for messages after their bodies, given to those stored under their UIDs.
void ApplyLateFlags(Folder& folder, interop::KeywordBits& keywords,
                    const std::unordered_map<uint32_t, std::vector<std::string>>& late, FolderPull& pull) {
  if (late.empty()) return;
  std::unordered_map<uint32_t, uint8_t> stored;  // UID -> its \Recent, kept
  for (const MessageMeta& m : folder.Snapshot().messages)
    if (late.count(m.uid)) stored.emplace(m.uid, m.flags & store::kRecent);
  std::vector<store::FlagChange> changes;
  for (const auto& [uid, flags] : late) {
    const auto it = stored.find(uid);
    if (it == stored.end()) continue;  // not stored under its UID (present already, or expunged)
    uint8_t bits;
    uint64_t user_flags;
    MapFlags(flags, keywords, &bits, &user_flags, &pull.result.keywords_dropped);
    changes.push_back({uid, static_cast<uint8_t>(bits | it->second), user_flags});
  }
  if (changes.empty()) return;
  keywords.Save(folder);
  pull.result.flags_updated += folder.SetFlags(changes);
}

// EXAMINE refused. A folder deleted at the source since the listing is skipped (false): a pull
// copies what the source holds, and a rerun would not list it either. One the server still lists
// but will not open (its rights, its damage) fails for good: retrying cannot change it, and a
// retry loop around moveuser would repeat it for ever (helper-51 D5).
bool ExamineRefused(ImapClient& client, const ImapFolder& source, const Error& refusal) {
  const std::optional<ImapFolder> listed = client.ListOne(source.name);
  if (!listed || !listed->selectable) return false;
  Throw(Errc::kInvalidArgument, std::string(refusal.what()) +
                                    "; the server still lists the folder, so a rerun would be refused too: "
                                    "fix it at the source (its rights, its repair)");
}

// False when the folder is gone at the source (ExamineRefused).
bool PullFolder(ImapClient& client, const ImapFolder& source, FolderPull& pull) {
  store::Store& store = pull.store;
  interop::ImapMailboxStatus status;
  try {
    status = client.Examine(source.name);
  } catch (const Error& e) {
    if (e.code() != Errc::kNotFound) throw;
    if (!ExamineRefused(client, source, e)) {
      ++pull.result.folders_gone;
      return false;
    }
  }
  const bool exists = store.FindFolder(pull.user, pull.name).has_value();
  // A new folder takes everything: bodies and metadata in one command, no listing first.
  MetaList listed(client);
  if (status.exists > 0 && exists) ListAll(client, listed, status.uidnext);

  std::unique_ptr<Folder> folder;
  bool created = false, keep_uids = true;
  std::vector<uint32_t> wanted, suspects;
  std::vector<std::string> names;
  store::FolderSnapshot snapshot;
  BodyWriter::Suspects have;  // the suspects' stored messages, copied (a spooled snapshot's records do not stay put)
  std::unordered_set<uint32_t> wire_uids;  // stored with bare LFs, of the server's size in wire form
  if (!exists) {
    // Invisible until complete; a leftover of a killed pull is overwritten (§6.5).
    folder = store.CreateUnpublishedFolder(pull.user, pull.name, status.uidvalidity);
    created = true;
  } else {
    folder = store.OpenFolder(pull.user, pull.name);
    snapshot = folder->Snapshot();
    names = snapshot.info.user_flag_names;
    // The same UIDVALIDITY means the UIDs it has are the same messages, unless the value matched
    // by chance (both sides derive it from the clock): most shared UIDs of other sizes prove
    // that, and the folder is then filled by content. A few are local deliveries that took the
    // UIDs the source gave its next messages (after the MX switch): compared as suspects and
    // kept apart, while the flags of the others still follow the source. One such message used
    // to send the folder to filling by content for good, where flags never follow (helper-73).
    // Listing and snapshot are walked side by side in UID order: memory grows by the listing's
    // 24 bytes a message, not by a map of the folder.
    const std::vector<Listed>& listing = listed.SortedByUid();
    keep_uids = snapshot.info.uidvalidity == status.uidvalidity;
    std::unordered_map<uint32_t, interop::WireForm> wire;  // SeeInWireForm's, by UID
    size_t shared = 0, resized = 0;
    ForEachListed(listing, snapshot.messages, [&](const Listed& m, const MessageMeta* stored) {
      if (!stored) return;
      ++shared;
      uint64_t size = stored->size;
      if (keep_uids)
        if (std::optional<interop::WireForm> w = SeeInWireForm(*folder, m, *stored)) {
          wire_uids.insert(m.uid);
          size = w->size;
          wire.emplace(m.uid, *w);
        }
      resized += size != m.size;
    });
    if (resized * 2 > shared) keep_uids = false;
    if (keep_uids) {
      // Fetch the UIDs it lacks; the flags of those it has follow the source; the doubtful ones
      // are fetched and compared (SameByMetadata).
      interop::KeywordBits keywords(names);
      std::vector<store::FlagChange> changes;  // one write of the index for them all
      ForEachListed(listing, snapshot.messages, [&](const Listed& m, const MessageMeta* stored) {
        if (!stored) {
          wanted.push_back(m.uid);
          return;
        }
        MessageMeta mine = *stored;
        if (auto w = wire.find(m.uid); w != wire.end()) {
          mine.size = w->second.size;
          mine.digest = w->second.digest;
        }
        if (mine.size != m.size || !SameByMetadata(m.internal_date, mine) || wire_uids.count(m.uid)) {
          suspects.push_back(m.uid);
          have.emplace(m.uid, mine);
          return;
        }
        uint8_t flags;
        uint64_t user_flags;
        MapFlags(listed.FlagsOf(m), keywords, &flags, &user_flags, &pull.result.keywords_dropped);
        const uint8_t kept = mine.flags & store::kRecent;
        if ((mine.flags & ~store::kRecent) != flags || mine.user_flags != user_flags)
          changes.push_back({m.uid, static_cast<uint8_t>(flags | kept), user_flags});
      });
      if (!changes.empty()) {
        keywords.Save(*folder);
        folder->SetFlags(changes);
        pull.result.flags_updated += changes.size();
      }
      names = folder->Snapshot().info.user_flag_names;
    } else {
      for (const Listed& m : listing) wanted.push_back(m.uid);
    }
  }
  // "n:*" returns the last message even below n; a UID listed twice is fetched once.
  for (std::vector<uint32_t>* uids : {&wanted, &suspects}) {
    std::sort(uids->begin(), uids->end());
    uids->erase(std::unique(uids->begin(), uids->end()), uids->end());
  }

  // Messages are counted once visible: an existing folder's batch by batch as they are committed,
  // a new folder's when it is published. A failed run counts nothing it left invisible.
  uint64_t unpublished_messages = 0, unpublished_bytes = 0;
  struct Tally {
    const interop::FolderFiller& filler;
    uint64_t& messages;
    uint64_t& bytes;
    uint64_t* uid_conflicts = nullptr;  // the suspects' filler: what it commits went under a new UID
    ~Tally() {
      messages += filler.committed();
      bytes += filler.committed_bytes();
      if (uid_conflicts) *uid_conflicts += filler.committed();
    }
  };
  interop::KeywordBits keywords(names);
  std::unordered_map<uint32_t, std::vector<std::string>> late_flags;  // BodyWriter::late_flags of the main fetch
  auto hooks = [&pull](interop::FolderFiller& filler) {
    if (pull.options.on_arrival) filler.before_commit = pull.options.on_arrival;
    if (pull.options.after_batch)
      filler.after_batch = [&pull](uint64_t added) { pull.options.after_batch(pull.user, pull.name, added); };
  };
  {
    interop::FolderFiller filler(*folder, created, /*skip_present=*/!keep_uids, keep_uids);
    Tally tally{filler, created ? unpublished_messages : pull.result.messages,
                created ? unpublished_bytes : pull.result.bytes};
    hooks(filler);
    const bool all = created && status.exists > 0;
    BodyWriter writer(pull, *folder, keywords, filler, all ? nullptr : &wanted, nullptr, all ? &client : nullptr);
    writer.expunges_at_start = client.expunges();
    writer.exists_at_start = client.exists();
    writer.uidnext_at_start = status.uidnext;
    if (all) {
      client.FetchAll(writer);
    } else if (!wanted.empty()) {
      client.FetchBodies(wanted, writer);
    }
    // Every message of a new folder: by UID, not only by count, whenever the folder changed
    // during the command or the count is not the one it had (helper-112: an older message left
    // out and a new one sent in its place was published without it, exit 0; a body of a UID the
    // folder does not have was stored as a message of it).
    const bool changed = all && (client.exists() != status.exists || client.expunges() != writer.expunges_at_start ||
                                 writer.received_count() != status.exists ||
                                 (status.uidnext > 0 && writer.highest_received() >= status.uidnext));
    std::unordered_map<uint32_t, std::vector<std::string>> late_again;
    if (changed || !writer.AllReceived(all ? status.exists : 0))
      FetchMissing(client, pull, *folder, keywords, filler, writer, &late_again);
    filler.Finish();
    if (keep_uids) {
      late_flags = writer.late_flags();
      for (const auto& [uid, flags] : late_again) late_flags[uid] = flags;
    }
  }
  if (keep_uids && status.uidnext > 0) folder->RaiseUidNext(status.uidnext);
  if (!suspects.empty()) {
    // After the raise, so that a source message whose UID is taken here gets one above both
    // sides' UIDNEXT; filled by content, so that a rerun finds it and adds it no second time.
    interop::FolderFiller filler(*folder, /*created=*/false, /*skip_present=*/true);
    Tally tally{filler, created ? unpublished_messages : pull.result.messages,
                created ? unpublished_bytes : pull.result.bytes, &pull.result.uid_conflicts};
    hooks(filler);
    BodyWriter writer(pull, *folder, keywords, filler, &suspects, &have);
    writer.wire_uids = &wire_uids;
    client.FetchBodies(suspects, writer);
    if (!writer.AllReceived(0)) FetchMissing(client, pull, *folder, keywords, filler, writer);
    filler.Finish();
  }
  if (created) {
    store.PublishFolder(*folder);
    ++pull.result.folders_created;
    pull.result.messages += unpublished_messages;
    pull.result.bytes += unpublished_bytes;
  }
  // Once visible (a folder's flags are set through its record). A failure here fails the user
  // (75) with the folder complete but for those flags, which the next run's listing sets.
  ApplyLateFlags(*folder, keywords, late_flags, pull);
  ++pull.result.folders;
  return true;
}

class Session {
 public:
  Session(const ImapSource& source, const ImapUrl& url, const net::TlsContext* tls)
      : source_(source), url_(url), tls_(tls) {}

  // Connects, protects and logs in as (or for) the account.
  ImapClient& Open(const ImapAccount& account) {
    if (!source_.tunnel.empty()) return OpenTunnel(account);
    net::Endpoint endpoint{url_.host, url_.port};
    conn_ = std::make_unique<net::Connection>(net::ConnectTcp(endpoint, source_.timeout_seconds), endpoint.ToString());
    conn_->SetTimeout(source_.timeout_seconds);
    if (url_.tls) conn_->Connect(*tls_, url_.host);
    channel_ = std::make_unique<ConnectionChannel>(*conn_, tls_, url_.host);
    Greet(*channel_, url_.ToString());
    if (!url_.tls && !source_.insecure) {
      if (!client_->HasCapability("STARTTLS"))
        Throw(Errc::kAuth, url_.ToString() + " does not offer STARTTLS; use imaps:// or, on a trusted link, --insecure");
      client_->StartTls();
    }
    if (!source_.admin.empty()) {
      client_->LoginAs(account.user, source_.admin, source_.admin_password);
    } else {
      client_->Login(account.user, account.password);
    }
    return *client_;
  }

  void Close() {
    if (client_) client_->Logout();
    if (conn_) conn_->Close(1);
    if (tunnel_) tunnel_->Finish(5);
  }

  // After a failure: how the tunnel's command ended if it ended on its own within a second
  // ("exited with status 89"), the likely cause; "" otherwise (or no tunnel).
  std::string TunnelEnd() {
    if (!tunnel_) return "";
    const std::string ended = tunnel_->Finish(1);
    return tunnel_->stopped_here() ? "" : ended;
  }

 private:
  // The client over `channel`, with the source's limits, once the server has greeted it.
  void Greet(interop::ImapChannel& channel, const std::string& shown) {
    client_ = std::make_unique<ImapClient>(channel, shown);
    client_->set_progress_timeout(source_.timeout_seconds);
    client_->set_size_mismatch_allowed(source_.allow_size_mismatch);
    client_->ReadGreeting();
  }

  // A tunnel: the command's own server, PREAUTH (logged in as the user) or asking for a login.
  ImapClient& OpenTunnel(const ImapAccount& account) {
    const std::string command = TunnelCommand(source_.tunnel, account.user);
    const std::string shown = "tunnel '" + EscapeControls(command) + "'";
    tunnel_ = std::make_unique<CommandChannel>(command, shown, source_.timeout_seconds);
    Greet(*tunnel_, shown);
    if (client_->preauthenticated()) {
      // Dovecot says whom ("Logged in as ann"): a command that logs in as someone else would
      // put that user's mail into this one's mailbox.
      const std::string& text = client_->greeting_text();
      const size_t at = text.find("Logged in as ");
      if (at != std::string::npos) {
        const std::string who = text.substr(at + 13, text.find(' ', at + 13) - (at + 13));
        if (who != account.user)
          Throw(Errc::kInvalidArgument, shown + ": logged in as '" + EscapeControls(who) + "', not as " + account.user +
                                            " (is %u in the command where the user belongs?)");
      }
      return *client_;
    }
    if (!source_.admin.empty()) {
      client_->LoginAs(account.user, source_.admin, source_.admin_password);
    } else if (!account.password.empty()) {
      client_->Login(account.user, account.password);
    } else {
      Throw(Errc::kAuth, shown + ": the server asks for a login (its greeting is OK, not PREAUTH) and no "
                                 "--password-file or --admin was given");
    }
    return *client_;
  }


  const ImapSource& source_;
  const ImapUrl& url_;
  const net::TlsContext* tls_;
  std::unique_ptr<CommandChannel> tunnel_;  // declared first: ends after the client
  std::unique_ptr<net::Connection> conn_;
  std::unique_ptr<ConnectionChannel> channel_;
  std::unique_ptr<ImapClient> client_;
};

void PullUserOver(Session& session, store::Store& store, const ImapAccount& account, const MoveUserOptions& options,
                  MoveUserResult& result) {
  ImapClient& client = session.Open(account);
  std::vector<ImapFolder> folders = client.ListFolders();
  // Every name is checked before anything is written.
  std::vector<std::pair<const ImapFolder*, std::string>> pulls;
  std::map<std::string, const ImapFolder*> by_name;
  for (const ImapFolder& f : folders) {
    if (!f.selectable) continue;
    std::string name = StoreFolderName(f);
    try {
      store::ValidateFolderName(name);
    } catch (const Error& e) {
      Throw(e.code(), "folder \"" + ShownName(f.path) + "\" of " + account.user + ": " + e.what());
    }
    // Two source folders, one store name: on a server whose separator is not '/', a '/' inside one
    // level's name ("a/b" beside "b" under "a") reads as a level here. Merging them would alter
    // both, and no renaming would be reversible, so the user is refused (docs/moveuser.md).
    if (auto [it, fresh] = by_name.emplace(name, &f); !fresh)
      Throw(Errc::kInvalidArgument, "folders '" + ShownName(it->second->name) + "' and '" + ShownName(f.name) +
                                        "' of " + account.user + " would both be the folder \"" + ShownName(name) +
                                        "\" here; rename one at the source");
    pulls.emplace_back(&f, std::move(name));
  }

  // A user marked moved here lives on another host: pulling its mail here would split it, and
  // --hold's end would make it active here again, taking deliveries (helper-51).
  store.RefuseIfMoved(account.user, "a pull");
  if (!store.FindUser(account.user)) store.CreateUser(account.user, {}, /*with_inbox=*/false);
  // --hold: this pull's hold (marked), set and read in one transaction. A hold someone else set
  // (by hand, a migration's copy waiting for its switch) is put back as it was and stays after
  // the pull: lifting it would take deliveries the holder meant to defer. A failed pull's
  // marked hold is this pull's to lift.
  if (options.hold) {
    store::UserStatus held{store::UserState::kHold, {}};
    held.held_by_pull = true;
    const store::UserStatus before = store.SetUsersStatus({account.user}, held).at(0).second;
    if (before.state == store::UserState::kHold && !before.held_by_pull) store.SetUserStatus(account.user, before);
  }
  {
    store::Store::UserWriteLock lock = store.LockUserForWriting(account.user);
    const int64_t now = static_cast<int64_t>(::time(nullptr));
    for (const auto& [f, name] : pulls) {
      // Marked moved while the pull ran (as restore checks at each folder): no folder more.
      store.RefuseIfMoved(account.user, "a pull");
      FolderPull pull{store, account.user, name, options, result, now};
      try {
        if (!PullFolder(client, *f, pull)) continue;
      } catch (const Error& e) {
        Throw(e.code(), "folder \"" + ShownName(f->path) + "\": " + e.what());
      }
      if (f->subscribed) store.Subscribe(account.user, "user/" + account.user + "/" + name);
    }
    // Marked moved during its last folder: said, not a quiet success (the pulled mail is here).
    store.RefuseIfMoved(account.user, "a pull");
    if (!store.FindFolder(account.user, "INBOX")) store.CreateFolder(account.user, "INBOX");
    store.RecomputeQuota(account.user);
  }
  session.Close();
  // A pull's hold is lifted by the pull that completes the user, this one's or a failed one's,
  // --hold or not (helper-64: a rerun without --hold left a killed pull's hold on, exit 0). A
  // hold someone else set, before or meanwhile, stays, and the user's line says so.
  std::optional<store::UserInfo> now = store.FindUser(account.user);
  if (now && now->status.state == store::UserState::kHold && now->status.held_by_pull)
    store.SetUserStatus(account.user, store::UserStatus{store::UserState::kActive, {}});
  else
    result.left_on_hold = now && now->status.state == store::UserState::kHold;
}

void PullUser(store::Store& store, const ImapSource& source, const ImapUrl& url, const net::TlsContext* tls,
              const ImapAccount& account, const MoveUserOptions& options, MoveUserResult& result) {
  store::ValidateUserId(account.user);  // also what keeps %u of a tunnel's command free of shell syntax
  // Before the login too (helper-72: refused only after a successful login at the source).
  store.RefuseIfMoved(account.user, "a pull");
  Session session(source, url, tls);
  try {
    PullUserOver(session, store, account, options, result);
  } catch (const Error& e) {
    // A tunnel's command that died is the likely cause of what the client saw ("closed the
    // connection"): said with it.
    const std::string ended = session.TunnelEnd();
    if (ended.empty()) throw;
    Throw(e.code(), std::string(e.what()) + " (the command " + ended + ")");
  }
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    pos = eol + 1;
  }
  return lines;
}

}  // namespace

std::string ImapUrl::ToString() const {
  return std::string(tls ? "imaps://" : "imap://") + net::Endpoint{host, port}.ToString();
}

std::string TunnelCommand(const std::string& tunnel, const std::string& user) {
  std::string out;
  for (size_t i = 0; i < tunnel.size(); ++i) {
    if (tunnel[i] != '%') {
      out.push_back(tunnel[i]);
    } else if (i + 1 < tunnel.size() && tunnel[i + 1] == 'u') {
      out += user;
      ++i;
    } else if (i + 1 < tunnel.size() && tunnel[i + 1] == '%') {
      out.push_back('%');
      ++i;
    } else {
      Throw(Errc::kInvalidArgument, "--tunnel: '%' followed by " +
                                        (i + 1 < tunnel.size() ? "'" + EscapeControls(tunnel.substr(i + 1, 1)) + "'"
                                                               : std::string("nothing")) +
                                        "; %u is the user, %% a '%'");
    }
  }
  return out;
}

ImapUrl ParseImapUrl(const std::string& text) {
  ImapUrl url;
  std::string_view rest = text;
  if (rest.starts_with("imaps://")) {
    url.tls = true;
    rest.remove_prefix(8);
  } else if (rest.starts_with("imap://")) {
    rest.remove_prefix(7);
  } else {
    Throw(Errc::kInvalidArgument, "not an IMAP URL (imap://HOST[:PORT] or imaps://HOST[:PORT]): " + ShownName(text));
  }
  if (rest.ends_with('/')) rest.remove_suffix(1);
  if (rest.empty() || rest.find_first_of("/@?#") != std::string_view::npos)
    Throw(Errc::kInvalidArgument, "not an IMAP URL (imap://HOST[:PORT] or imaps://HOST[:PORT]): " + ShownName(text));
  bool has_port;
  if (rest.front() == '[') {
    const size_t bracket = rest.find(']');
    has_port = bracket != std::string_view::npos && bracket + 1 < rest.size() && rest[bracket + 1] == ':';
  } else {
    has_port = rest.find(':') != std::string_view::npos;  // an IPv6 address needs its brackets
  }
  const std::string with_port = has_port ? std::string(rest) : std::string(rest) + (url.tls ? ":993" : ":143");
  const net::Endpoint endpoint = net::ParseEndpoint(with_port);
  url.host = endpoint.host;
  url.port = endpoint.port;
  return url;
}

std::string ReadPasswordFile(const std::string& path) {
  const std::vector<std::string> lines = Lines(ReadPrivateFile(path, "password file"));
  if (lines.empty() || lines[0].empty()) Throw(Errc::kInvalidArgument, "password file " + path + ": empty first line");
  return lines[0];
}

std::vector<ImapAccount> ReadAccounts(const std::string& user, const std::string& users_file,
                                      const std::string& password_file, bool with_admin) {
  std::vector<ImapAccount> accounts;
  if (!user.empty()) {
    store::ValidateUserId(user);
    accounts.push_back({user, with_admin ? std::string() : ReadPasswordFile(password_file)});
    return accounts;
  }
  std::map<std::string, std::string> passwords;
  if (!with_admin) {
    size_t line_no = 0;
    for (const std::string& line : Lines(ReadPrivateFile(password_file, "password file", 64 << 20))) {
      ++line_no;
      if (line.empty() || line[0] == '#') continue;
      const size_t tab = line.find('\t');
      if (tab == std::string::npos || tab == 0 || tab + 1 == line.size())
        Throw(Errc::kInvalidArgument, password_file + " line " + std::to_string(line_no) + ": expected USER<TAB>PASSWORD");
      passwords[line.substr(0, tab)] = line.substr(tab + 1);
    }
  }
  // Read as `user --users-file` reads its file (blanks around an id, CR line ends, a byte-order
  // mark, a repeated id: helper-161 found `bob  ` refused here and taken there).
  std::vector<size_t> lines;
  std::vector<std::string> users = ReadUsersFile(users_file, &lines);
  for (size_t i = 0; i < users.size(); ++i) {
    ImapAccount account{std::move(users[i]), {}};
    if (!with_admin) {
      auto it = passwords.find(account.user);
      if (it == passwords.end())
        Throw(Errc::kInvalidArgument, (users_file == "-" ? std::string("standard input") : users_file) + " line " +
                                          std::to_string(lines[i]) + ": no password for " + account.user + " in " +
                                          password_file);
      account.password = it->second;
    }
    accounts.push_back(std::move(account));
  }
  return accounts;
}

MoveUserReport MoveUsers(store::Store& store, const ImapSource& source, const std::vector<ImapAccount>& accounts,
                         const MoveUserOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const bool tunnel = !source.tunnel.empty();
  const ImapUrl url = tunnel ? ImapUrl{} : ParseImapUrl(source.url);
  std::unique_ptr<net::TlsContext> tls;
  if (!tunnel && (url.tls || !source.insecure)) tls = net::TlsContext::ForMailServer(source.ca_file);

  MoveUserReport report;
  report.users.resize(accounts.size());
  std::atomic<size_t> next{0};
  std::mutex report_mutex;
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < accounts.size();) {
      MoveUserResult& result = report.users[i];
      result.user = accounts[i].user;
      const auto began = std::chrono::steady_clock::now();
      try {
        PullUser(store, source, url, tls.get(), accounts[i], options, result);
      } catch (const Error& e) {
        result.error = e.what();
        // kProtocol: the server sent what the client cannot parse or did not ask for, or answered
        // BAD; the same server sends it again on every run, so a retry loop must stop.
        result.permanent =
            e.code() == Errc::kInvalidArgument || e.code() == Errc::kAuth || e.code() == Errc::kProtocol;
      } catch (const std::exception& e) {
        result.error = std::string("unexpected: ") + e.what();
      }
      result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
      std::lock_guard<std::mutex> guard(report_mutex);
      if (options.on_user) options.on_user(result);
    }
  };
  const int jobs = std::max(1, std::min<int>(options.jobs, static_cast<int>(accounts.size())));
  std::vector<std::thread> threads;
  for (int j = 1; j < jobs; ++j) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();

  for (const MoveUserResult& r : report.users) {
    if (!r.error.empty()) ++report.failed;
    if (!r.error.empty() && r.permanent) ++report.failed_permanently;
    report.messages += r.messages;
    report.bytes += r.bytes;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace storemove::stream
