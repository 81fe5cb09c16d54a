// The mbox reader (interop/mbox.h) on hostile files. Invariants: only storemove::Error escapes, and
// interop/mbox.h's writing promise: what the reader returns, written with MboxWriter and read back
// with kMboxrd, comes back byte for byte, with the same sender (bytes <= ' ' and DEL as '_', empty
// as MAILER-DAEMON) and date.
// The input's length picks how it is read: bit 0 from a pipe (not seekable) or a memory file,
// bit 1 kMboxo (kMboxcl2 when bit 11 is set too) or kMboxrd, bits 2-4 and 5-10 the whole-message limit and read size of a second,
// streamed read (MboxReader::Next with a sink), which must give the same messages or fail too.
// The messages are also written with MboxWriter::WriteFile, which must write the same bytes.
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

// The same read through Next's sink, streaming messages longer than `whole_limit`.
std::vector<ss::MboxMessage> ReadAllStreamed(int fd, ss::MboxFlavor flavor, size_t whole_limit, size_t block,
                                             bool* ok) {
  std::vector<ss::MboxMessage> out;
  *ok = storemove::fuzz::OnlyStoremoveErrors("mbox streamed", [&] {
    ss::MboxReader reader(fd, "fuzz.mbox", flavor, whole_limit, block);
    ss::MboxMessage m;
    std::string pieces;
    while (reader.Next(&m, [&](std::string_view piece) { pieces.append(piece); })) {
      if (m.streamed) m.bytes = std::move(pieces);
      pieces.clear();
      out.push_back(std::move(m));
    }
  });
  return out;
}

storemove::UniqueFd Input(const uint8_t* data, size_t size, bool from_pipe) {
  if (!from_pipe) return storemove::UniqueFd(storemove::fuzz::MemFile(data, size));
  int p[2];
  FUZZ_CHECK(::pipe2(p, O_CLOEXEC) == 0);
  storemove::UniqueFd w(p[1]);
  storemove::UniqueFd in(p[0]);
  FUZZ_CHECK(::fcntl(w.get(), F_SETPIPE_SZ, int(512 << 10)) >= 0 || size <= 65536);
  for (size_t done = 0; done < size;) {
    ssize_t n = ::write(w.get(), data + done, size - done);
    FUZZ_CHECK(n > 0);
    done += size_t(n);
  }
  return in;
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
  ss::MboxFlavor flavor = size % 4 < 2           ? ss::MboxFlavor::kMboxrd
                          : size / 2048 % 2 == 1 ? ss::MboxFlavor::kMboxcl2
                                                 : ss::MboxFlavor::kMboxo;
  storemove::UniqueFd in = Input(data, size, from_pipe);
  bool ok = false;
  std::vector<ss::MboxMessage> messages = ReadAll(in.get(), flavor, &ok);

  // Streamed, with the whole-message limit and the read size picked by the length, the reader
  // must give the same messages and fail where the whole reader fails.
  {
    storemove::UniqueFd again_in = Input(data, size, from_pipe);
    bool streamed_ok = false;
    std::vector<ss::MboxMessage> streamed = ReadAllStreamed(again_in.get(), flavor, size / 4 % 8, 1 + size / 32 % 64,
                                                            &streamed_ok);
    FUZZ_CHECK(streamed_ok == ok);
    if (ok) {
      FUZZ_CHECK(streamed.size() == messages.size());
      for (size_t i = 0; i < messages.size(); ++i) {
        FUZZ_CHECK(streamed[i].bytes == messages[i].bytes);
        FUZZ_CHECK(streamed[i].envelope_sender == messages[i].envelope_sender);
        FUZZ_CHECK(streamed[i].envelope_date == messages[i].envelope_date);
      }
    }
  }
  if (!ok) return 0;

  storemove::UniqueFd out(::memfd_create("fuzz-out", MFD_CLOEXEC));
  FUZZ_CHECK(out.valid());
  FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("mbox write", [&] {
    ss::MboxWriter writer(out.get(), "fuzz-out.mbox");
    for (const ss::MboxMessage& m : messages) writer.Write(m.bytes, m.envelope_sender, m.envelope_date);
  }));
  // MboxWriter::WriteFile (a message read from a file, for large ones) writes the same bytes.
  storemove::UniqueFd out_file_way(::memfd_create("fuzz-out-file-way", MFD_CLOEXEC));
  storemove::UniqueFd message_file(::memfd_create("fuzz-message", MFD_CLOEXEC));
  FUZZ_CHECK(out_file_way.valid() && message_file.valid());
  FUZZ_CHECK(storemove::fuzz::OnlyStoremoveErrors("mbox write from a file", [&] {
    ss::MboxWriter writer(out_file_way.get(), "fuzz-out-file-way.mbox");
    for (const ss::MboxMessage& m : messages) {
      FUZZ_CHECK(::ftruncate(message_file.get(), 0) == 0);
      FUZZ_CHECK(m.bytes.empty() || ::pwrite(message_file.get(), m.bytes.data(), m.bytes.size(), 0) ==
                                        static_cast<ssize_t>(m.bytes.size()));
      writer.WriteFile(message_file.get(), "fuzz-message", m.envelope_sender, m.envelope_date,
                       [&](uint64_t size, const storemove::Digest&) { FUZZ_CHECK(size == m.bytes.size()); });
    }
  }));
  const off_t written = ::lseek(out.get(), 0, SEEK_END);
  FUZZ_CHECK(::lseek(out_file_way.get(), 0, SEEK_END) == written);
  {
    std::string a(static_cast<size_t>(written), '\0'), b(static_cast<size_t>(written), '\0');
    FUZZ_CHECK(::pread(out.get(), a.data(), a.size(), 0) == written);
    FUZZ_CHECK(::pread(out_file_way.get(), b.data(), b.size(), 0) == written);
    FUZZ_CHECK(a == b);
  }
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
