// The mbox reader (interop/mbox.h) on hostile files. Invariants: only storemove::Error escapes, and
// interop/mbox.h's writing promise: what the reader returns, written with MboxWriter and read back
// with kMboxrd, comes back byte for byte, with the same sender (bytes <= ' ' and DEL as '_', empty
// as MAILER-DAEMON) and date.
// The input's length picks how it is read: bit 0 from a pipe (not seekable) or a memory file,
// bit 1 kMboxo or kMboxrd.
#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include "interop/mbox.h"
#include "tests/fuzz/fuzz_support.h"
#include "util/fs.h"

namespace ss = storemove::interop;

namespace {

std::vector<ss::MboxMessage> ReadAll(int fd, ss::MboxFlavor flavor, bool* ok) {
  std::vector<ss::MboxMessage> out;
  *ok = storemove::fuzz::OnlyStoremoveErrors("mbox", [&] {
    ss::MboxReader reader(fd, "fuzz.mbox", flavor);
    ss::MboxMessage m;
    while (reader.Next(&m)) out.push_back(std::move(m));
  });
  return out;
}

std::string ShownSender(const std::string& sender) {
  if (sender.empty()) return "MAILER-DAEMON";
  std::string s = sender;
  for (char& c : s)
    if (uint8_t(c) <= ' ' || uint8_t(c) == 0x7f) c = '_';
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (512 << 10)) return -1;  // beyond a pipe's capacity; larger inputs add nothing
  bool from_pipe = size % 2 == 1;
  ss::MboxFlavor flavor = size % 4 >= 2 ? ss::MboxFlavor::kMboxo : ss::MboxFlavor::kMboxrd;
  storemove::UniqueFd in;
  if (from_pipe) {
    int p[2];
    FUZZ_CHECK(::pipe2(p, O_CLOEXEC) == 0);
    storemove::UniqueFd w(p[1]);
    in.reset(p[0]);
    FUZZ_CHECK(::fcntl(w.get(), F_SETPIPE_SZ, int(512 << 10)) >= 0 || size <= 65536);
    for (size_t done = 0; done < size;) {
      ssize_t n = ::write(w.get(), data + done, size - done);
      FUZZ_CHECK(n > 0);
      done += size_t(n);
    }
  } else {
    in.reset(storemove::fuzz::MemFile(data, size));
  }
  bool ok = false;
  std::vector<ss::MboxMessage> messages = ReadAll(in.get(), flavor, &ok);
  if (!ok) return 0;

  storemove::UniqueFd out(::memfd_create("fuzz-out", MFD_CLOEXEC));
  FUZZ_CHECK(out.valid());
  FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("mbox write", [&] {
    ss::MboxWriter writer(out.get(), "fuzz-out.mbox");
    for (const ss::MboxMessage& m : messages) writer.Write(m.bytes, m.envelope_sender, m.envelope_date);
  }));
  FUZZ_CHECK(::lseek(out.get(), 0, SEEK_SET) == 0);
  bool again_ok = false;
  std::vector<ss::MboxMessage> again = ReadAll(out.get(), ss::MboxFlavor::kMboxrd, &again_ok);
  FUZZ_CHECK(again_ok);
  FUZZ_CHECK(again.size() == messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    FUZZ_CHECK(again[i].bytes == messages[i].bytes);
    FUZZ_CHECK(again[i].envelope_sender == ShownSender(messages[i].envelope_sender));
    // asctime carries years 1970..9999 (0 is also what an unreadable date reads as).
    if (messages[i].envelope_date >= 0 && messages[i].envelope_date < 253402300800)
      FUZZ_CHECK(again[i].envelope_date == messages[i].envelope_date);
  }
  return 0;
}
