// The IMAP client's body path (interop/imap_client.h): UID FETCH responses of messages of one size
// served by a thread over a socketpair, the client handing every BODY[] byte to a sink that only
// looks at it. BM_ImapSocketRead reads the same bytes in 256 KiB blocks and does nothing else:
// the floor, so the difference is what the tokenizer costs per byte and per message.
#include <sys/socket.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "interop/imap_client.h"
#include "util/error.h"

namespace storemove::bench {
namespace {

constexpr size_t kTotal = 32 << 20;  // bytes of bodies per iteration

// The server's answer to "A1 UID FETCH 1:n (...)": n messages of `size` bytes, then A1 OK.
const std::string& Response(size_t size) {
  static std::map<size_t, std::string> cache;
  std::string& r = cache[size];
  if (!r.empty()) return r;
  std::string body;
  for (size_t line = 0; body.size() < size; ++line) body += "line " + std::to_string(line) + " of a message body\r\n";
  body.resize(size);
  const size_t n = kTotal / size;
  for (size_t i = 1; i <= n; ++i)
    r += "* " + std::to_string(i) + " FETCH (UID " + std::to_string(i) + " FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE " +
         std::to_string(size) + " BODY[] {" + std::to_string(size) + "}\r\n" + body + ")\r\n";
  r += "A1 OK Fetch completed.\r\n";
  return r;
}

class FdChannel : public interop::ImapChannel {
 public:
  explicit FdChannel(int fd) : fd_(fd) {}
  size_t Read(void* data, size_t size) override {
    const ssize_t n = ::read(fd_, data, size);
    if (n < 0) ThrowErrno("read");
    return size_t(n);
  }
  void Write(const void* data, size_t size) override {
    if (::write(fd_, data, size) != ssize_t(size)) ThrowErrno("write");
  }
  void StartTls() override {}

 private:
  int fd_;
};

class Counting : public interop::ImapFetchSink {
 public:
  void BodyBegin(uint64_t) override {}
  void BodyData(const char* data, size_t size) override {
    bytes += size;
    last ^= static_cast<unsigned char>(data[size - 1]);
  }
  bool Message(const interop::ImapMessage& m, bool) override {
    messages += m.uid != 0;
    return true;
  }
  uint64_t bytes = 0, messages = 0;
  unsigned last = 0;
};

// Serves `response` after reading one command line.
std::thread Serve(int fd, const std::string& response) {
  return std::thread([fd, &response] {
    char c = 0;
    while (c != '\n' && ::read(fd, &c, 1) == 1) {
    }
    for (size_t done = 0; done < response.size();) {
      const ssize_t n = ::write(fd, response.data() + done, response.size() - done);
      if (n <= 0) break;
      done += size_t(n);
    }
    ::close(fd);
  });
}

void BM_ImapFetchBodies(benchmark::State& state) {
  const size_t size = size_t(state.range(0));
  const std::string& response = Response(size);
  std::vector<uint32_t> uids;
  for (uint32_t u = 1; u <= kTotal / size; ++u) uids.push_back(u);
  // One command; the server answers with all its messages, which the client passes on all the same.
  uids.resize(std::min<size_t>(uids.size(), interop::ImapClient::kFetchUids));
  for (auto _ : state) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) ThrowErrno("socketpair");
    std::thread server = Serve(sv[1], response);
    {
      FdChannel channel(sv[0]);
      interop::ImapClient client(channel, "imap://bench");
      Counting sink;
      client.FetchBodies(uids, sink);
      benchmark::DoNotOptimize(sink.last);
      if (sink.bytes != kTotal / size * size) state.SkipWithError("short read");
    }
    ::close(sv[0]);
    server.join();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(response.size()));
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(kTotal / size));
}
BENCHMARK(BM_ImapFetchBodies)->ArgName("msg_bytes")->Arg(4 << 10)->Arg(64 << 10)->Arg(1 << 20)->UseRealTime();

void BM_ImapSocketRead(benchmark::State& state) {
  const std::string& response = Response(size_t(state.range(0)));
  std::vector<char> buf(256 << 10);
  for (auto _ : state) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) ThrowErrno("socketpair");
    std::thread server = Serve(sv[1], response);
    if (::write(sv[0], "A1\r\n", 4) != 4) ThrowErrno("write");
    uint64_t got = 0;
    for (ssize_t n; (n = ::read(sv[0], buf.data(), buf.size())) > 0;) got += uint64_t(n);
    benchmark::DoNotOptimize(got);
    ::close(sv[0]);
    server.join();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(response.size()));
}
BENCHMARK(BM_ImapSocketRead)->ArgName("msg_bytes")->Arg(4 << 10)->Arg(64 << 10)->Arg(1 << 20)->UseRealTime();

}  // namespace
}  // namespace storemove::bench
