#include "store/generate.h"

#include <dirent.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <set>
#include <span>
#include <string_view>

#include "util/error.h"

namespace storemove::store {
namespace {

// ---------------------------------------------------------------------------------------------
// Randomness: xoshiro256** seeded through splitmix64. Written out (rather than <random>'s
// distributions) so the same seed gives the same store with any standard library.

uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A seed for an independent stream: (seed, tag, index) -> 64 bits.
uint64_t StreamSeed(uint64_t seed, uint64_t tag, uint64_t index = 0) {
  uint64_t state = seed ^ (tag * 0xd1b54a32d192ed03ULL);
  SplitMix(&state);
  state ^= index * 0x8cb92ba72f3d8dd7ULL;
  return SplitMix(&state);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t& word : s_) word = SplitMix(&seed);
  }
  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, n); the modulo bias is irrelevant for the small n used here.
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }
  int64_t Between(int64_t lo, int64_t hi) {  // inclusive
    return lo + static_cast<int64_t>(Below(static_cast<uint64_t>(hi - lo) + 1));
  }
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  bool Chance(double p) { return Unit() < p; }
  double Normal() {  // Box-Muller
    double u1 = Unit();
    double u2 = Unit();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  double LogNormal(double median, double sigma) { return median * std::exp(sigma * Normal()); }
  template <typename T, size_t N>
  const T& Pick(const T (&items)[N]) {
    return items[Below(N)];
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

enum StreamTag : uint64_t { kTagNames = 1, kTagUser, kTagList, kTagSynth, kTagSubscriptions };

// ---------------------------------------------------------------------------------------------
// Vocabulary.

// The generated store's "present": message dates run up to here, so output never depends on now.
constexpr int64_t kEpochEnd = 1748736000;  // 2025-06-01T00:00:00Z
constexpr int64_t kDay = 86400;
constexpr int64_t kYear = 365 * kDay;

constexpr std::string_view kFirstNames[] = {
    "alice", "bob",    "carol", "dave",   "erin",  "frank",  "grace", "heidi",  "ivan",   "judy",
    "mallory", "niaj", "olivia", "peggy", "quentin", "rupert", "sybil", "trent", "ursula", "victor",
    "walter", "xavier", "yvonne", "zoe",  "li",    "wei",    "priya", "arjun",  "fatima", "omar",
    "sven",  "ingrid", "jose",  "maria",  "kenji", "yuki",   "noah",  "emma",   "liam",   "ava",
    "lucas", "mia",    "hugo",  "chloe",  "tomas", "eva",    "pavel", "olga",   "dmitri", "anna",
    "kofi",  "amara",  "raj",   "sita",   "paulo", "bea",    "nils",  "karin",  "ahmed",  "leila"};
constexpr std::string_view kLastNames[] = {
    "smith",  "johnson", "williams", "brown",  "jones",   "garcia", "miller",  "davis",   "martinez", "lopez",
    "wilson", "anderson", "taylor",  "thomas", "moore",   "jackson", "martin", "lee",     "thompson", "white",
    "harris", "clark",   "lewis",    "young",  "walker",  "hall",   "allen",   "king",    "wright",   "scott",
    "nguyen", "kim",     "patel",    "singh",  "chen",    "wang",   "mueller", "schmidt", "rossi",    "bianchi",
    "dubois", "leroy",   "novak",    "kowalski", "ivanova", "tanaka", "sato",  "okafor",  "mensah",   "silva",
    "santos", "haddad",  "cohen",    "larsen", "berg",    "virtanen", "murphy", "obrien", "kelly",    "fischer"};
constexpr std::string_view kRoleAccounts[] = {"postmaster", "helpdesk", "sales", "noc",
                                              "billing",    "abuse",    "info",  "jobs"};
constexpr std::string_view kHostedDomains[] = {"example.com",      "example.org",          "example.net",
                                               "mail.example.edu", "hosted.example.co.uk", "sirius.example.de"};
// Where the store's own (non-hosted) users receive mail.
constexpr std::string_view kStoreDomain = "example.com";
constexpr std::string_view kSenderDomains[] = {"example.net", "mail.example.org", "corp.example.com",
                                               "university.example.edu", "shop.example", "bank.example"};

constexpr std::string_view kOtherFolders[] = {
    "Projects/2024/Q3", "Projects/2024/Q4", "Projects/2025/Q1", "Archive/2019",      "Archive/2021",
    "Archive/2023",     "Work/Clients/Acme", "Work/Clients/Initech", "Work/HR",      "Receipts",
    "Travel",           "Family",           "Newsletters",      "Drafts",            "Lists/usrp-users",
    "Lists/osst-users"};
constexpr std::string_view kMailingLists[] = {"usrp-users", "osst-users", "notmuch", "announce", "linux-kernel", "dev"};

// User flag names, bit i of MessageMeta::user_flags.
const std::vector<std::string> kUserFlagNames = {"$Forwarded", "$Junk", "$NotJunk", "$MDNSent", "$Label1"};
enum UserFlagBit : uint64_t { kForwarded = 1, kJunk = 2, kNotJunk = 4, kMdnSent = 8, kLabel1 = 16 };

constexpr std::string_view kSubjects[] = {
    "Quarterly report draft",        "Lunch on Thursday?",          "Meeting notes from today",
    "Your invoice is ready",         "Build failed on main",        "Travel itinerary",
    "Question about the API",        "Weekend plans",               "Updated contract attached",
    "Server maintenance window",     "Re: budget for next year",    "Photos from the trip",
    "Password expiry notice",        "New hire onboarding",         "Conference call agenda",
    "Patch for the driver timeout",  "Shipping confirmation",       "Can you review this?",
    "Minutes: architecture review",  "Happy birthday!",             "Release candidate 2 is out",
    "Receive buffer overflow on X310", "Tape drive not detected",  "Migration schedule",
    "Holiday schedule",              "Re: Re: the tape backup job", "Security advisory",
    "Reminder: timesheets due",      "Dinner reservation",          "Newsletter: what's new this month"};

constexpr std::string_view kWords[] = {
    "the",     "of",      "and",     "to",      "in",       "a",        "is",      "that",     "for",     "it",
    "as",      "was",     "with",    "be",      "by",       "on",       "not",     "he",       "this",    "are",
    "or",      "his",     "from",    "at",      "which",    "but",      "have",    "an",       "had",     "they",
    "you",     "were",    "their",   "one",     "all",      "we",       "can",     "her",      "has",     "there",
    "been",    "if",      "more",    "when",    "will",     "would",    "who",     "so",       "no",      "out",
    "please",  "thanks",  "meeting", "report",  "server",   "driver",   "buffer",  "tape",     "backup",  "restore",
    "mailbox", "message", "folder",  "quota",   "schedule", "budget",   "invoice", "contract", "review",  "patch",
    "release", "version", "kernel",  "device",  "sample",   "rate",     "stream",  "timeout",  "error",   "fixed",
    "attached", "tomorrow", "friday", "monday", "project",  "customer", "team",    "update",   "question", "answer",
    "think",   "should",  "could",   "maybe",   "before",   "after",    "because", "issue",    "problem", "works",
    "configuration", "firmware", "antenna", "frequency", "throughput", "latency", "migration", "partition",
    "database", "transaction"};

// ---------------------------------------------------------------------------------------------
// Text helpers.

std::string Rfc5322Date(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  static const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", kDays[tm.tm_wday], tm.tm_mday,
                kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string Hex(uint64_t value) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(value));
  return buf;
}

std::string Capitalized(std::string_view word) {
  std::string out(word);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}

// Flowed prose of about `target` bytes, lines under 73 characters, blank lines between paragraphs.
void AppendProse(Rng& rng, size_t target, std::string_view eol, std::string* out) {
  const size_t start = out->size();
  size_t column = 0;
  uint64_t lines_left = 3 + rng.Below(6);
  while (out->size() - start < target) {
    std::string_view word = kWords[rng.Below(std::size(kWords))];
    if (column > 0 && column + 1 + word.size() > 72) {
      out->append(eol);
      column = 0;
      if (--lines_left == 0) {
        out->append(eol);
        lines_left = 3 + rng.Below(6);
      }
    } else if (column > 0) {
      out->push_back(' ');
      ++column;
    }
    out->append(word);
    column += word.size();
  }
  out->append(eol);
}

void AppendBase64(Rng& rng, size_t raw_bytes, std::string_view eol, std::string* out) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t column = 0;
  for (size_t done = 0; done < raw_bytes; done += 3) {
    uint32_t triple = static_cast<uint32_t>(rng.Next() & 0xffffff);
    size_t take = std::min<size_t>(3, raw_bytes - done);
    char quad[4] = {kAlphabet[(triple >> 18) & 63], kAlphabet[(triple >> 12) & 63],
                    take > 1 ? kAlphabet[(triple >> 6) & 63] : '=', take > 2 ? kAlphabet[triple & 63] : '='};
    out->append(quad, 4);
    column += 4;
    if (column == 76) {
      out->append(eol);
      column = 0;
    }
  }
  if (column > 0) out->append(eol);
}

// ---------------------------------------------------------------------------------------------
// Users and folders.

std::string MakeLocalPart(Rng& rng) {
  std::string first(rng.Pick(kFirstNames));
  std::string last(rng.Pick(kLastNames));
  double r = rng.Unit();
  if (r < 0.38) {  // alice.smith, alice.smith17
    std::string id = first + "." + last;
    if (rng.Chance(0.4)) id += std::to_string(rng.Between(1, 99));
    return id;
  }
  if (r < 0.55) {  // asmith, asmith2
    std::string id = first.substr(0, 1) + last;
    if (rng.Chance(0.3)) id += std::to_string(rng.Between(1, 9));
    return id;
  }
  if (r < 0.68) return first + std::to_string(rng.Between(1950, 2010));  // alice1984
  if (r < 0.80) return last + first.substr(0, 1);                        // smitha
  if (r < 0.90) return first + "." + last.substr(0, 1);                  // alice.s
  if (r < 0.98) return std::to_string(rng.Between(2010, 2024) * 10000 + rng.Between(1000, 9999));  // student ids
  return std::string(rng.Pick(kRoleAccounts));
}

// The run's user ids, one at a time, each unlike those made before it: `taken` says whether an id
// was made already.
class UserIdMaker {
 public:
  explicit UserIdMaker(uint64_t seed) : rng_(StreamSeed(seed, kTagNames)) {}

  std::string Next(const std::function<bool(const std::string&)>& taken) {
    std::string id = MakeLocalPart(rng_);
    if (rng_.Chance(0.15)) id += "@" + std::string(rng_.Pick(kHostedDomains));
    while (taken(id)) {
      // Same person name twice: real sites append a number.
      size_t at = id.find('@');
      id.insert(at == std::string::npos ? id.size() : at, std::to_string(rng_.Below(10)));
    }
    return id;
  }

 private:
  Rng rng_;
};

std::string Address(std::string_view user_id) {
  if (user_id.find('@') != std::string_view::npos) return std::string(user_id);
  return std::string(user_id) + "@" + std::string(kStoreDomain);
}

enum class FolderKind { kInbox, kSent, kTrash, kList, kDrafts, kOther };

FolderKind KindOf(std::string_view folder) {
  if (folder == "INBOX") return FolderKind::kInbox;
  if (folder == "Sent") return FolderKind::kSent;
  if (folder == "Trash") return FolderKind::kTrash;
  if (folder == "Drafts") return FolderKind::kDrafts;
  if (folder.starts_with("Lists/")) return FolderKind::kList;
  return FolderKind::kOther;
}

// Flags a user would have left on a message of this age in this kind of folder.
void ChooseFlags(Rng& rng, FolderKind kind, int64_t age, uint8_t* flags, uint64_t* user_flags) {
  uint8_t f = 0;
  uint64_t u = 0;
  const bool fresh = age < 3 * kDay;
  switch (kind) {
    case FolderKind::kInbox:
      if (rng.Chance(fresh ? 0.3 : 0.93)) f |= kSeen;
      if ((f & kSeen) && rng.Chance(0.12)) f |= kAnswered;
      if (rng.Chance(0.04)) f |= kFlagged;
      if (rng.Chance(0.015)) f |= kDeleted;
      if (rng.Chance(0.02)) u |= kJunk;
      if (rng.Chance(0.03)) u |= kNotJunk;
      if ((f & kSeen) && rng.Chance(0.03)) u |= kForwarded;
      if (rng.Chance(0.01)) u |= kMdnSent;
      if (rng.Chance(0.02)) u |= kLabel1;
      break;
    case FolderKind::kSent:
      f |= kSeen;
      if (rng.Chance(0.01)) f |= kFlagged;
      break;
    case FolderKind::kTrash:
      if (rng.Chance(0.95)) f |= kSeen;
      if (rng.Chance(0.3)) f |= kDeleted;
      if (rng.Chance(0.1)) u |= kJunk;
      break;
    case FolderKind::kList:
      if (rng.Chance(fresh ? 0.2 : 0.75)) f |= kSeen;
      if (rng.Chance(0.02)) f |= kFlagged;
      break;
    case FolderKind::kDrafts:
      f |= kSeen | kDraft;
      break;
    case FolderKind::kOther:
      if (rng.Chance(0.97)) f |= kSeen;
      if ((f & kSeen) && rng.Chance(0.1)) f |= kAnswered;
      if (rng.Chance(0.05)) f |= kFlagged;
      if (rng.Chance(0.05)) u |= kLabel1;
      break;
  }
  *flags = f;
  *user_flags = u;
}

// ---------------------------------------------------------------------------------------------
// Message content.

// What a message is about; its bytes are a pure function of this.
struct MessageSpec {
  uint64_t key = 0;        // content choice and unique id
  int64_t date = 0;        // arrival
  std::string recipient;   // envelope recipient ("for <...>"); empty for a list post
  std::string mailing_list;  // for a list post
  bool sent_by_user = false;
  std::string user_address;
};

class ContentSource {
 public:
  explicit ContentSource(const std::string& corpus_dir) {
    if (corpus_dir.empty()) return;
    for (CorpusEntry& entry : ReadCorpusManifests(corpus_dir)) {
      if (entry.bytes > 0) corpus_.push_back(std::move(entry.path));
    }
    if (corpus_.empty()) Throw(Errc::kNotFound, "corpus " + corpus_dir + ": no non-empty message files listed");
  }

  // The complete message for `spec` into *out (replacing its contents).
  void Build(const MessageSpec& spec, std::string* out) {
    out->clear();
    if (corpus_.empty()) {
      Synthesize(spec, out);
      return;
    }
    // A real message as stored, below the Received: header the delivering MTA adds. That header
    // makes every delivery unique except list copies, which share it as they share the bytes.
    std::string body = ReadFile(corpus_[spec.key % corpus_.size()]);
    size_t first_lf = body.find('\n');
    const bool crlf = first_lf != std::string::npos && first_lf > 0 && body[first_lf - 1] == '\r';
    const std::string_view eol = crlf ? "\r\n" : "\n";
    AppendReceived(spec, eol, out);
    out->append(body);
  }

 private:
  static void AppendReceived(const MessageSpec& spec, std::string_view eol, std::string* out) {
    const unsigned relay = static_cast<unsigned>(spec.key % 200) + 10;
    out->append("Received: from mx" + std::to_string(relay) + ".example.net (mx" + std::to_string(relay) +
                ".example.net [192.0.2." + std::to_string(relay) + "])");
    out->append(eol);
    out->append("\tby store.example.com (storemove-gen) with ESMTP id " + Hex(spec.key));
    if (!spec.recipient.empty()) {
      out->append(eol);
      out->append("\tfor <" + spec.recipient + ">");
    }
    out->append("; " + Rfc5322Date(spec.date));
    out->append(eol);
  }

  static void Synthesize(const MessageSpec& spec, std::string* out) {
    Rng rng(StreamSeed(spec.key, kTagSynth));
    constexpr std::string_view eol = "\r\n";
    std::string first(rng.Pick(kFirstNames));
    std::string last(rng.Pick(kLastNames));
    std::string other = Capitalized(first) + " " + Capitalized(last) + " <" + first + "." + last + "@" +
                        std::string(rng.Pick(kSenderDomains)) + ">";
    std::string from = spec.sent_by_user ? spec.user_address : other;
    std::string to = spec.sent_by_user ? other : spec.user_address;
    if (!spec.mailing_list.empty()) to = spec.mailing_list + "@lists.example.org";
    std::string subject(rng.Pick(kSubjects));
    if (!spec.mailing_list.empty()) subject = "[" + spec.mailing_list + "] " + subject;
    if (rng.Chance(0.3)) subject = "Re: " + subject;

    if (!spec.sent_by_user) {
      out->append("Return-Path: <" + first + "." + last + "@example.net>");
      out->append(eol);
      AppendReceived(spec, eol, out);
    }
    auto header = [&](std::string_view name, const std::string& value) {
      out->append(name);
      out->append(": ");
      out->append(value);
      out->append(eol);
    };
    header("Date", Rfc5322Date(spec.date - static_cast<int64_t>(rng.Below(900))));
    header("From", from);
    header("To", to);
    header("Subject", subject);
    header("Message-ID", "<" + Hex(spec.key) + "." + std::to_string(rng.Below(100000)) + "@" +
                             std::string(rng.Pick(kSenderDomains)) + ">");
    if (!spec.mailing_list.empty()) {
      header("List-Id", "<" + spec.mailing_list + ".lists.example.org>");
      header("Precedence", "list");
    }
    header("MIME-Version", "1.0");

    const size_t text_size = static_cast<size_t>(std::clamp(rng.LogNormal(1800, 0.9), 40.0, 200000.0));
    if (!rng.Chance(0.12)) {
      header("Content-Type", "text/plain; charset=us-ascii");
      header("Content-Transfer-Encoding", "7bit");
      out->append(eol);
      AppendProse(rng, text_size, eol, out);
      return;
    }
    const std::string boundary = "=_sm_" + Hex(rng.Next());
    const size_t attachment_size = static_cast<size_t>(std::clamp(rng.LogNormal(24000, 1.3), 200.0, 3e6));
    const std::string file_name = "report-" + std::to_string(rng.Below(1000)) + ".pdf";
    header("Content-Type", "multipart/mixed; boundary=\"" + boundary + "\"");
    out->append(eol);
    out->append("This is a multi-part message in MIME format.");
    out->append(eol);
    out->append("--" + boundary);
    out->append(eol);
    header("Content-Type", "text/plain; charset=us-ascii");
    header("Content-Transfer-Encoding", "7bit");
    out->append(eol);
    AppendProse(rng, text_size, eol, out);
    out->append("--" + boundary);
    out->append(eol);
    header("Content-Type", "application/pdf; name=\"" + file_name + "\"");
    header("Content-Disposition", "attachment; filename=\"" + file_name + "\"");
    header("Content-Transfer-Encoding", "base64");
    out->append(eol);
    AppendBase64(rng, attachment_size, eol, out);
    out->append("--" + boundary + "--");
    out->append(eol);
  }

  std::vector<std::string> corpus_;  // absolute paths of non-empty message files
};

// ---------------------------------------------------------------------------------------------
// The plan of one user's deliveries.

struct ListPost {
  int64_t date = 0;
  uint32_t list = 0;  // index into kMailingLists
  uint64_t key = 0;
};

struct Delivery {
  uint32_t folder = 0;  // index into the user's folder names
  int64_t date = 0;
  int64_t post = -1;    // index of the list post this copies, -1 for a message of its own
  uint64_t key = 0;
  uint8_t flags = 0;
  uint64_t user_flags = 0;
  bool sent_by_user = false;
};

// Where later hard links to a list post come from: its first stored copy in a partition.
struct LinkSource {
  std::string path;
  MessageMeta meta;
};

constexpr size_t kCommitEvery = 1024;

class Generator {
 public:
  Generator(Store& store, const GenerateOptions& options)
      : store_(store), options_(options), content_(options.corpus_dir) {
    if (!(options.dup_rate >= 0 && options.dup_rate <= 1)) {
      Throw(Errc::kInvalidArgument, "dup rate " + std::to_string(options.dup_rate) + " is not between 0 and 1");
    }
    store_partitions_ = store.Partitions();
    partitions_ = options.partitions.empty() ? store_partitions_ : options.partitions;
    for (const std::string& partition : partitions_) {
      if (std::find(store_partitions_.begin(), store_partitions_.end(), partition) == store_partitions_.end()) {
        Throw(Errc::kNotFound, "partition " + partition + " does not exist in store " + store.root());
      }
    }
    if (partitions_.empty()) Throw(Errc::kNotFound, "store " + store.root() + " has no partition");
    MakeListPosts();
  }

  GenerateReport Run() {
    // Each id is made just before its user, so a store that had no user is itself the record of
    // the ids made (a lookup each); the ids held in memory grew ~13.6 MB per 100,000 users. A
    // store that had users cannot tell them from this run's (gen adds mail to a user it makes
    // again): there the run's ids are held, as before.
    bool had_users = false;
    store_.ForEachUser([&](const UserInfo&) { had_users = true; });
    std::set<std::string> made;
    auto taken = [&](const std::string& id) {
      return had_users ? made.count(id) != 0 : store_.FindUser(id).has_value();
    };
    UserIdMaker ids(options_.seed);
    for (uint32_t u = 0; u < options_.users; ++u) {
      const std::string id = ids.Next(taken);
      if (had_users) made.insert(id);
      GenerateUser(u, id);
    }
    report_.users = options_.users;
    return report_;
  }

 private:
  // The mailing lists (indexes into kMailingLists) user `index` is subscribed to: one to three.
  std::vector<uint32_t> Subscriptions(uint32_t index) const {
    Rng rng(StreamSeed(options_.seed, kTagSubscriptions, index));
    std::vector<uint32_t> lists;
    for (uint64_t n = 1 + rng.Below(3); n > 0; --n) {
      const auto list = static_cast<uint32_t>(rng.Below(std::size(kMailingLists)));
      if (std::find(lists.begin(), lists.end(), list) == lists.end()) lists.push_back(list);
    }
    return lists;
  }

  // Posts of each list, enough that each reaches about `fanout` of its subscribers while
  // dup_rate of every subscriber's deliveries are list copies.
  void MakeListPosts() {
    if (options_.dup_rate <= 0) return;
    const size_t lists = std::size(kMailingLists);
    std::vector<uint32_t> subscribers(lists, 0);
    std::vector<double> demand(lists, 0);
    for (uint32_t u = 0; u < options_.users; ++u) {
      const std::vector<uint32_t> subscribed = Subscriptions(u);
      for (uint32_t list : subscribed) {
        ++subscribers[list];
        demand[list] += options_.messages_per_user * options_.dup_rate / static_cast<double>(subscribed.size());
      }
    }
    posts_by_list_.assign(lists, {});
    for (size_t list = 0; list < lists; ++list) {
      if (subscribers[list] < 2 || demand[list] < 1) continue;  // nobody to share a post with
      const uint32_t fanout = std::clamp<uint32_t>(subscribers[list] / 2, 2, 40);
      const size_t count = std::max<size_t>(1, static_cast<size_t>(std::ceil(demand[list] / fanout)));
      for (size_t i = 0; i < count; ++i) {
        Rng rng(StreamSeed(options_.seed, kTagList, posts_.size()));
        ListPost post;
        post.date = kEpochEnd - rng.Between(0, 5 * kYear);
        post.list = static_cast<uint32_t>(list);
        post.key = rng.Next();
        posts_by_list_[list].push_back(posts_.size());
        posts_.push_back(post);
      }
    }
    first_copy_.assign(posts_.size(), std::vector<std::optional<LinkSource>>(store_partitions_.size()));
    post_delivered_.assign(posts_.size(), false);
  }

  // A post of one of `lists` that this user has not had yet (starting at a random list and post),
  // or -1 when they are all taken.
  int64_t ChoosePost(Rng& rng, const std::vector<uint32_t>& lists, std::vector<bool>* has_post) const {
    const size_t first_list = rng.Below(lists.size());
    for (size_t l = 0; l < lists.size(); ++l) {
      const std::vector<size_t>& posts = posts_by_list_[lists[(first_list + l) % lists.size()]];
      const size_t first_post = rng.Below(posts.size());
      for (size_t p = 0; p < posts.size(); ++p) {
        const size_t post = posts[(first_post + p) % posts.size()];
        if (!(*has_post)[post]) {
          (*has_post)[post] = true;
          return static_cast<int64_t>(post);
        }
      }
    }
    return -1;
  }

  void GenerateUser(uint32_t index, const std::string& id) {
    Rng rng(StreamSeed(options_.seed, kTagUser, index));
    // A user that exists already keeps its partition, which is where its links must stay.
    const UserInfo user = store_.CreateUser(id, partitions_[rng.Below(partitions_.size())], /*with_inbox=*/false);
    const size_t partition = static_cast<size_t>(
        std::find(store_partitions_.begin(), store_partitions_.end(), user.partition) - store_partitions_.begin());
    const int64_t account_start = kEpochEnd - rng.Between(kYear, 15 * kYear);
    // Folders as old as the account, as in a store that grew: `backup -d` carries a folder made
    // since its date whole, and would take all of a generated store's mail.
    store_.CreateFolder(id, "INBOX", 0, account_start);

    std::vector<std::string> folders = {"INBOX", "Sent", "Trash"};
    const size_t first_other = folders.size();
    for (uint64_t n = 1 + rng.Below(5); n > 0; --n) {
      std::string name(rng.Pick(kOtherFolders));
      if (std::find(folders.begin(), folders.end(), name) == folders.end()) folders.push_back(name);
    }

    std::vector<uint32_t> lists;
    if (!posts_.empty()) {
      for (uint32_t list : Subscriptions(index)) {
        if (!posts_by_list_[list].empty()) lists.push_back(list);
      }
    }
    const size_t other_folders = folders.size() - first_other;  // before list folders join
    const bool files_lists_away = rng.Chance(0.7);  // a filter moves list mail out of the INBOX

    std::vector<Delivery> plan(options_.messages_per_user);
    std::vector<bool> has_post(posts_.size(), false);
    for (Delivery& d : plan) {
      d.key = rng.Next();
      if (!lists.empty() && rng.Chance(options_.dup_rate)) {
        d.post = ChoosePost(rng, lists, &has_post);  // one copy of a post per user
        if (d.post >= 0) {
          const ListPost& post = posts_[static_cast<size_t>(d.post)];
          d.date = post.date + static_cast<int64_t>(rng.Below(300));
          d.folder = files_lists_away ? FolderIndex(&folders, "Lists/" + std::string(kMailingLists[post.list])) : 0;
        }
      }
      if (d.post < 0) {
        const double r = rng.Unit();
        d.folder = r < 0.63 ? 0 : r < 0.80 ? 1 : r < 0.86 ? 2
                                : static_cast<uint32_t>(first_other + rng.Below(other_folders));
        // More mail in recent years, as in any real mailbox.
        const double age = std::pow(rng.Unit(), 1.5) * static_cast<double>(kEpochEnd - account_start);
        d.date = kEpochEnd - static_cast<int64_t>(age);
        d.sent_by_user = d.folder == 1 || KindOf(folders[d.folder]) == FolderKind::kDrafts;
      }
      ChooseFlags(rng, KindOf(folders[d.folder]), kEpochEnd - d.date, &d.flags, &d.user_flags);
    }
    // UIDs follow arrival within each folder.
    std::stable_sort(plan.begin(), plan.end(), [](const Delivery& a, const Delivery& b) {
      return a.folder != b.folder ? a.folder < b.folder : a.date < b.date;
    });

    std::set<uint32_t> used = {0};  // the INBOX exists from CreateUser on
    for (size_t begin = 0; begin < plan.size();) {
      size_t end = begin;
      while (end < plan.size() && plan[end].folder == plan[begin].folder) ++end;
      const uint32_t folder = plan[begin].folder;
      used.insert(folder);
      FillFolder(id, folders[folder], static_cast<uint32_t>(account_start) + folder, account_start, partition,
                 std::span<const Delivery>(plan.data() + begin, end - begin));
      begin = end;
    }
    report_.folders += used.size();
  }

  static uint32_t FolderIndex(std::vector<std::string>* folders, const std::string& name) {
    auto it = std::find(folders->begin(), folders->end(), name);
    if (it != folders->end()) return static_cast<uint32_t>(it - folders->begin());
    folders->push_back(name);
    return static_cast<uint32_t>(folders->size() - 1);
  }

  // `partition` indexes store_partitions_.
  void FillFolder(const std::string& user, const std::string& name, uint32_t uidvalidity, int64_t created,
                  size_t partition, std::span<const Delivery> deliveries) {
    std::unique_ptr<Folder> folder = store_.CreateFolder(user, name, uidvalidity, created);
    if (std::any_of(deliveries.begin(), deliveries.end(), [](const Delivery& d) { return d.user_flags != 0; })) {
      folder->SetUserFlagNames(kUserFlagNames);
    }
    const std::string address = Address(user);
    std::vector<StagedMessage> batch;
    // Copies written in this batch that become the link source of their post once committed.
    std::vector<std::pair<size_t, size_t>> new_sources;  // (index in batch, post)
    std::string bytes;
    try {
      for (const Delivery& d : deliveries) {
        MessageMeta meta;
        meta.flags = d.flags;
        meta.user_flags = d.user_flags;
        meta.internal_date = d.date;
        meta.save_time = d.date + static_cast<int64_t>(d.key % 3);
        meta.stored_at = meta.save_time;  // a history: delivered here then, not now
        if (d.post >= 0) {
          const size_t post = static_cast<size_t>(d.post);
          if (post_delivered_[post]) ++report_.duplicates;
          post_delivered_[post] = true;
          std::optional<LinkSource>& source = first_copy_[post][partition];
          if (options_.single_instance && source) {
            MessageMeta linked = source->meta;
            linked.uid = 0;
            linked.flags = meta.flags;
            linked.user_flags = meta.user_flags;
            linked.internal_date = meta.internal_date;
            linked.save_time = meta.save_time;
            linked.stored_at = meta.stored_at;
            if (std::optional<StagedMessage> staged = folder->StageLink(source->path, linked)) {
              batch.push_back(std::move(*staged));
              ++report_.links;
              ++report_.messages;
              report_.bytes += linked.size;
              if (options_.on_message) options_.on_message(linked.size);
              continue;
            }
            source.reset();  // link count exhausted: this copy becomes the next source
          }
          MessageSpec spec;
          spec.key = posts_[post].key;
          spec.date = posts_[post].date;
          spec.mailing_list = std::string(kMailingLists[posts_[post].list]);
          content_.Build(spec, &bytes);
          if (!source) new_sources.emplace_back(batch.size(), post);
        } else {
          MessageSpec spec;
          spec.key = d.key;
          spec.date = d.date;
          spec.recipient = d.sent_by_user ? std::string() : address;
          spec.sent_by_user = d.sent_by_user;
          spec.user_address = address;
          content_.Build(spec, &bytes);
        }
        std::unique_ptr<MessageWriter> writer = folder->NewMessage();
        writer->Write(bytes);
        batch.push_back(writer->Finish(meta));
        ++report_.messages;
        report_.bytes += bytes.size();
        if (options_.on_message) options_.on_message(bytes.size());
        if (batch.size() >= kCommitEvery) Commit(*folder, partition, &batch, &new_sources);
      }
      Commit(*folder, partition, &batch, &new_sources);
    } catch (...) {
      folder->Discard(batch);
      throw;
    }
  }

  void Commit(Folder& folder, size_t partition, std::vector<StagedMessage>* batch,
              std::vector<std::pair<size_t, size_t>>* new_sources) {
    if (batch->empty()) return;
    std::vector<MessageMeta> metas;
    for (const auto& [at, post] : *new_sources) metas.push_back((*batch)[at].meta);
    const std::vector<uint32_t> uids = folder.Commit(*batch);
    for (size_t i = 0; i < new_sources->size(); ++i) {
      const auto& [at, post] = (*new_sources)[i];
      first_copy_[post][partition] = LinkSource{folder.MessagePath(uids.at(at)), metas[i]};
    }
    batch->clear();
    new_sources->clear();
  }

  Store& store_;
  const GenerateOptions& options_;
  ContentSource content_;
  std::vector<std::string> store_partitions_;
  std::vector<std::string> partitions_;  // the ones new users are spread over
  std::vector<ListPost> posts_;
  std::vector<std::vector<size_t>> posts_by_list_;  // [list] -> indexes into posts_
  std::vector<std::vector<std::optional<LinkSource>>> first_copy_;  // [post][store partition]
  std::vector<bool> post_delivered_;
  GenerateReport report_;
};

// Splits a line on tabs.
std::vector<std::string_view> SplitTabs(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  for (;;) {
    size_t tab = line.find('\t', start);
    fields.push_back(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
    if (tab == std::string_view::npos) return fields;
    start = tab + 1;
  }
}

}  // namespace

GenerateReport Generate(Store& store, const GenerateOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  GenerateReport report = Generator(store, options).Run();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

std::vector<CorpusEntry> ReadCorpusManifests(const std::string& corpus_dir) {
  std::vector<std::string> sources;
  {
    DIR* dir = ::opendir(corpus_dir.c_str());
    if (dir == nullptr) {
      if (errno == ENOENT) Throw(Errc::kNotFound, "corpus " + corpus_dir + ": no such directory");
      ThrowErrno("opendir " + corpus_dir);
    }
    while (const struct dirent* entry = ::readdir(dir)) {
      std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      if (PathExists(JoinPath(JoinPath(corpus_dir, name), "MANIFEST.tsv"))) sources.push_back(name);
    }
    ::closedir(dir);
  }
  if (sources.empty()) Throw(Errc::kNotFound, "corpus " + corpus_dir + ": no */MANIFEST.tsv found");
  std::sort(sources.begin(), sources.end());

  std::vector<CorpusEntry> entries;
  for (const std::string& source : sources) {
    const std::string source_dir = JoinPath(corpus_dir, source);
    const std::string manifest_path = JoinPath(source_dir, "MANIFEST.tsv");
    const std::string manifest = ReadFile(manifest_path);
    size_t line_number = 0;
    for (size_t start = 0; start < manifest.size();) {
      size_t newline = manifest.find('\n', start);
      if (newline == std::string::npos) newline = manifest.size();
      std::string_view line(manifest.data() + start, newline - start);
      start = newline + 1;
      ++line_number;
      if (line.empty() || (line_number == 1 && line.starts_with("path\t"))) continue;
      std::vector<std::string_view> fields = SplitTabs(line);
      const bool digits = fields.size() >= 3 && !fields[1].empty() &&
                          fields[1].find_first_not_of("0123456789") == std::string_view::npos;
      if (!digits || fields[0].empty() || fields[2].size() != 64) {
        Throw(Errc::kCorrupt, manifest_path + " line " + std::to_string(line_number) +
                                  ": expected path, bytes, sha256 separated by tabs");
      }
      CorpusEntry entry;
      entry.path = JoinPath(source_dir, fields[0]);
      entry.bytes = std::stoull(std::string(fields[1]));
      entry.sha256 = std::string(fields[2]);
      entries.push_back(std::move(entry));
    }
  }
  return entries;
}

}  // namespace storemove::store
