// The IMAP client (interop/imap_client.h) on a hostile server: the input is the server's whole
// byte stream, served from memory (it is the tokenizer being fuzzed, not sockets) in reads whose
// size the first byte picks (2..255 bytes, all at once for 0, up to each LF for 1), to a client
// running a short session:
// greeting, capabilities, login (with a literal), LIST/LSUB, EXAMINE, FETCH of metadata and of
// bodies, LOGOUT. Invariants: only storemove::Error escapes; the sink sees each body's bytes
// exactly as announced, never data outside a body; every folder path the client returns is
// what its name decodes to; the mUTF-7 decoder's output re-encodes and decodes to itself.
#include <algorithm>
#include <cstring>
#include <string>

#include "interop/modified_utf7.h"
#include "interop/imap_client.h"
#include "tests/fuzz/fuzz_support.h"

namespace ss = storemove::interop;

namespace {

class MemoryChannel : public ss::ImapChannel {
 public:
  MemoryChannel(const uint8_t* data, size_t size, size_t chunk) : data_(data), size_(size), chunk_(chunk) {}
  size_t Read(void* out, size_t size) override {
    FUZZ_CHECK(size > 0);
    size_t n = std::min({size, size_ - pos_, chunk_});
    if (chunk_ == 1) {  // line by line, as a server flushing each response (STARTTLS needs it)
      const void* nl = std::memchr(data_ + pos_, '\n', std::min(size, size_ - pos_));
      n = nl ? size_t(static_cast<const uint8_t*>(nl) - (data_ + pos_)) + 1 : std::min(size, size_ - pos_);
    }
    std::memcpy(out, data_ + pos_, n);
    pos_ += n;
    return n;
  }
  void Write(const void*, size_t size) override { written += size; }
  void StartTls() override {}
  size_t written = 0;

 private:
  const uint8_t* data_;
  size_t size_, pos_ = 0, chunk_;
};

class CheckingSink : public ss::ImapFetchSink {
 public:
  void BodyBegin(uint64_t size) override {
    FUZZ_CHECK(!in_body_);
    in_body_ = true;
    announced_ = size;
    got_ = 0;
  }
  void BodyData(const char* data, size_t size) override {
    FUZZ_CHECK(in_body_);
    FUZZ_CHECK(data != nullptr || size == 0);
    got_ += size;
    FUZZ_CHECK(got_ <= announced_);
  }
  bool Message(const ss::ImapMessage&, bool had_body) override {
    FUZZ_CHECK(had_body == in_body_);
    if (had_body) FUZZ_CHECK(got_ == announced_);
    in_body_ = false;
    return true;
  }

 private:
  bool in_body_ = false;
  uint64_t announced_ = 0, got_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > (1 << 20)) return -1;
  const size_t chunk = data[0] == 0 ? size : data[0];
  MemoryChannel channel(data + 1, size - 1, chunk);
  ss::ImapClient client(channel, "imap://fuzz");
  CheckingSink sink;
  storemove::fuzz::OnlyStoremoveErrors("imap", [&] {
    client.ReadGreeting();
    client.Capabilities();
    if (client.HasCapability("STARTTLS")) client.StartTls();
    if (client.HasCapability("X-MASTER")) {
      client.LoginAs("user", "admin", "secret");
    } else {
      client.Login("user", "s\xc3\xa9" "cret");  // 8-bit: LOGIN sends it as a literal
    }
    for (const ss::ImapFolder& f : client.ListFolders()) {
      FUZZ_CHECK(!f.name.empty() || f.path.empty());
      std::string path = ss::DecodeModifiedUtf7(f.name);
      FUZZ_CHECK(path.size() == f.path.size());
    }
    client.Examine("INBOX");
    client.FetchMeta(1, sink);
    client.FetchBodies({1, 2, 3, 5, 4000}, sink);
  });
  client.Logout();  // never throws, whatever state the session is in
  // The decoder on the raw input: what decodes re-encodes to something decoding the same.
  std::string text(reinterpret_cast<const char*>(data), std::min<size_t>(size, 256));
  storemove::fuzz::OnlyStoremoveErrors("mutf7", [&] {
    const std::string decoded = ss::DecodeModifiedUtf7(text);
    FUZZ_CHECK(ss::DecodeModifiedUtf7(ss::EncodeModifiedUtf7(decoded)) == decoded);
  });
  return 0;
}
