// Restore into a store (stream::Restore, as `storemove restore` runs it) of hostile streams.
// Each input gets a fresh store under the scratch directory (tmpfs), removed afterwards, so runs
// are independent and reproducible and millions of them leave nothing behind.
// Invariants: only storemove::Error escapes; no file descriptor leaks; nothing is written outside
// the store; afterwards every folder the store lists opens, and every message its index lists is
// present with its recorded size (nothing half-visible); a restore that succeeded can be run again
// over its own result without failing.
// The input's length picks the options: odd lengths run with -c (continue on error), multiples
// of 3 with restore NAMES, of 7 with --keep-status, of 13 with a user map.
//
// Most mutations of a real stream end at the decoder's checksums, so an input starting with '@'
// is a recipe instead: its bytes choose users, folders, names (hostile ones among them), UIDs,
// flags, bodies and links, and format::Encoder turns them into a valid stream. That reaches what
// restore itself decides: name validation, partitions, statuses, existing mailboxes, links.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <initializer_list>
#include <vector>
#include <memory>

#include "format/format.h"
#include "format/zstd_codec.h"
#include "store/store.h"
#include "stream/stream.h"
#include "tests/fuzz/fuzz_support.h"
#include "util/digest.h"
#include "util/fs.h"

namespace sf = storemove::format;
namespace ss = storemove::store;
namespace st = storemove::stream;

namespace {

// Reads the recipe; past its end every value is 0.
class Recipe {
 public:
  Recipe(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  uint8_t U8() { return n_ ? (--n_, *p_++) : 0; }
  // One statement per byte: operands of | are unsequenced, and g++ and clang order them
  // differently, which would make one input mean two streams.
  uint32_t U32() {
    uint32_t v = U8();
    v |= uint32_t(U8()) << 8;
    v |= uint32_t(U8()) << 16;
    v |= uint32_t(U8()) << 24;
    return v;
  }
  uint64_t U64() {
    uint64_t low = U32();
    return low | uint64_t(U32()) << 32;
  }
  std::string Bytes(size_t max) {
    size_t len = std::min<size_t>(U8() % (max + 1), n_);
    std::string s(reinterpret_cast<const char*>(p_), len);
    p_ += len, n_ -= len;
    return s;
  }
  // One of `choices`, or (for the value one past them) raw bytes.
  std::string Pick(std::initializer_list<const char*> choices) {
    size_t i = U8() % (choices.size() + 1);
    return i < choices.size() ? std::string(choices.begin()[i]) : Bytes(24);
  }

 private:
  const uint8_t* p_;
  size_t n_;
};

// The stream a recipe describes; empty when the encoder refuses it (the recipe broke a rule
// the decoder would check first anyway).
std::string StreamFromRecipe(Recipe& r) {
  sf::StringSink sink;
  try {
    sf::Encoder enc(sink);
    sf::StreamHeader header;
    header.created = 1700000000;
    header.since = r.U8() % 4 == 0 ? 1600000000 : 0;
    enc.WriteHeader(header);
    std::vector<std::pair<storemove::Digest, uint64_t>> contents;
    int users = r.U8() % 3 + 1;
    for (int u = 0; u < users; ++u) {
      sf::UserRecord user;
      user.user = r.Pick({"joe", "ann@example.com", "joe", "..", "a/b", "JOE", ""});
      user.partition = r.Pick({"primary", "secondary", "", "nope", "../x"});
      user.status = r.Pick({"active", "hold", "moved:other.example", "moved:", "bogus"});
      user.quota_limit = r.U8() % 4 == 0 ? r.U32() : 0;
      user.quota_used = r.U32();
      user.created = r.U32();
      for (int i = r.U8() % 3; i > 0; --i) user.subscriptions.push_back(r.Pick({"INBOX", "user/joe/Sent", "Sent/2024"}));
      enc.WriteUser(user);
      int folders = r.U8() % 3 + 1;
      for (int f = 0; f < folders; ++f) {
        sf::FolderRecord folder;
        folder.user = r.U8() % 8 == 0 ? r.Pick({"joe", "ann@example.com", "other"}) : user.user;
        folder.folder = r.Pick({"INBOX", "Sent", "Sent/2024", "INBOX/a", "a/../b", "/x", "a//b", "Trash."});
        folder.partition = r.Pick({"primary", "secondary", "", "nope"});
        folder.uidvalidity = r.U8() % 4 == 0 ? r.U32() : 1234;
        folder.uidnext = r.U32() % 64;
        folder.count = r.U8();
        folder.bytes = r.U32();
        folder.last_append = r.U32();
        folder.created = r.U32();
        folder.acl = r.Pick({"", "joe lrswipkxtea anyone lr", "joe", "anyone lr extra"});
        for (int i = r.U8() % 3; i > 0; --i) folder.user_flag_names.push_back(r.Pick({"$Label1", "Work", "$Label1"}));
        for (int i = r.U8() % 2; i > 0; --i) {
          std::string reader = r.Pick({"ann", "joe"});
          folder.peruser.emplace_back(reader, r.Bytes(8));
        }
        enc.WriteFolder(folder);
        uint32_t uid = 0;
        for (int m = r.U8() % 6; m > 0; --m) {
          sf::MessageRecord msg;
          uid += r.U8() % 3 + 1;
          msg.uid = uid;
          msg.flags = r.U8() & sf::kSystemFlagMask;
          msg.user_flags = r.U8() % 4 == 0 ? r.U64() : 0;
          msg.internal_date = r.U32();
          msg.sent_date = r.U32();
          msg.save_time = r.U32();
          if (!contents.empty() && r.U8() % 3 == 0) {
            const auto& [digest, size] = contents[r.U8() % contents.size()];
            msg.content_id = 0;
            for (size_t i = 0; i < contents.size(); ++i)
              if (contents[i].first == digest && contents[i].second == size) msg.content_id = i + 1;
            msg.digest = digest;
            msg.size = size;
            enc.WriteLink(msg);
          } else {
            std::string body = r.Pick({"Subject: a\r\n\r\nbody\r\n", "no header", "", "From: x\n\nFrom y\n"});
            body += r.Bytes(16);
            msg.size = body.size();
            msg.header_size = uint32_t(std::min<uint64_t>(r.U8(), body.size()));
            msg.digest = storemove::DigestOf(body);
            enc.BeginMessage(msg);
            enc.BodyChunk(body);
            enc.EndMessage();
            contents.emplace_back(msg.digest, msg.size);
          }
        }
        enc.EndFolder();
      }
    }
    enc.Finish();
  } catch (const storemove::Error&) {
    return {};
  }
  return sink.Take();
}

int CountFds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) std::abort();
  int n = 0;
  while (::readdir(d)) ++n;
  ::closedir(d);
  return n;
}

int CountEntries(const std::string& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

// Returns the error a restore ended with, "" when it succeeded (with -c: also without errors
// reported; storemove restore exits non-zero then too).
std::string RestoreOnce(ss::Store& store, std::string_view input, const st::RestoreOptions& options) {
  std::string error;
  storemove::fuzz::OnlyStoremoveErrors("restore", [&] {
    try {
      sf::StringSource raw(input);
      sf::DecompressingSource source(raw);
      sf::Decoder decoder(source);
      st::SessionReport report = st::Restore(&store, decoder, options);
      if (report.errors > 0) error = "reported " + std::to_string(report.errors) + " errors";
    } catch (const storemove::Error& e) {
      error = std::string("error: ") + e.what();
      throw;
    }
  });
  return error;
}

// Every listed folder opens and every message of its index is there, whole.
void CheckStore(ss::Store& store) {
  bool ok = storemove::fuzz::OnlyStoremoveErrors("restore: store check", [&] {
    store.ForEachFolder([&](const ss::FolderInfo& info) {
      std::unique_ptr<ss::Folder> folder = store.OpenFolder(info.user, info.folder);
      ss::FolderSnapshot snapshot = folder->Snapshot();
      for (const ss::MessageMeta& m : snapshot.messages) {
        storemove::UniqueFd fd = folder->OpenMessage(m.uid);
        if (!fd.valid()) {
          std::fprintf(stderr, "restore: %s uid %u listed but missing\n", folder->Mailbox().c_str(), m.uid);
          std::abort();
        }
        struct stat s;
        FUZZ_CHECK(::fstat(fd.get(), &s) == 0);
        FUZZ_CHECK(uint64_t(s.st_size) == m.size);
      }
    });
  });
  FUZZ_CHECK(ok);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string made;
  if (size > 0 && data[0] == '@') {
    Recipe recipe(data + 1, size - 1);
    made = StreamFromRecipe(recipe);
    if (made.empty()) return 0;
    input = made;
    // FUZZ_DUMP_STREAM=FILE keeps the stream a recipe made, for `storemove restore -t -f FILE`.
    if (const char* dump = std::getenv("FUZZ_DUMP_STREAM")) {
      storemove::UniqueFd out(storemove::OpenFile(dump, O_WRONLY | O_CREAT | O_TRUNC, 0644));
      storemove::WriteAll(out.get(), made.data(), made.size(), dump);
    }
  }
  const std::string& scratch = storemove::fuzz::ScratchDir();
  const std::string root = scratch + "/store";
  int fds = CountFds();
  {
    std::unique_ptr<ss::Store> store = ss::Store::Init(root, {"primary", "secondary"});
    st::RestoreOptions options;
    options.continue_on_error = size % 2 == 1;
    // restore NAMES: the other folders skipped, their bodies kept for the selected ones' links.
    if (size % 3 == 0) options.names = {"user/%/INBOX"};
    // migrate's --keep-status, and a user map (restore -m), on lengths none of the kept
    // regressions has, which replay as they were found.
    options.keep_status = size % 7 == 0;
    if (size % 13 == 0) options.user_map = {{"joe", "jim"}, {"JOE", "ann@example.com"}};
    options.batch_messages = 4;  // several commits per folder even for small inputs
    bool restored = RestoreOnce(*store, input, options).empty();
    CheckStore(*store);
    if (restored) {
      std::string again = RestoreOnce(*store, input, options);  // a rerun over its own result succeeds
      if (!again.empty()) {
        std::fprintf(stderr, "restore: succeeded, then failed when run again: %s\n", again.c_str());
        std::abort();
      }
      CheckStore(*store);
    }
  }
  FUZZ_CHECK(CountEntries(scratch) == 1);  // only the store: nothing written beside it
  std::filesystem::remove_all(root);
  FUZZ_CHECK(CountFds() == fds);
  return 0;
}
