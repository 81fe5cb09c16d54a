#include "interop/imap_wire_form.h"

#include "util/read_block.h"

namespace storemove::interop {
namespace {

// Converts block by block; a CR at the end of one block still pairs with an LF opening the next.
class WireHasher {
 public:
  void Update(const char* data, size_t size) {
    for (size_t i = 0; i < size; ++i) {
      const char c = data[i];
      if (c == '\n' && !after_cr_) Put('\r');
      Put(c == '\0' ? '\x80' : c);
      after_cr_ = c == '\r';
    }
  }
  WireForm Final() {
    Flush();
    return {size_, hasher_.Final()};
  }

 private:
  void Put(char c) {
    if (used_ == sizeof(out_)) Flush();
    out_[used_++] = c;
    ++size_;
  }
  void Flush() {
    hasher_.Update(out_, used_);
    used_ = 0;
  }
  Hasher hasher_;
  char out_[64 * 1024];
  size_t used_ = 0;
  uint64_t size_ = 0;
  bool after_cr_ = false;
};

}  // namespace

WireForm WireFormOfFile(int fd, const std::string& shown) {
  WireHasher wire;
  ReadWholeFile(fd, shown, [&](const char* data, size_t n) { wire.Update(data, n); });
  return wire.Final();
}

WireForm WireFormOf(std::string_view bytes) {
  WireHasher wire;
  wire.Update(bytes.data(), bytes.size());
  return wire.Final();
}

}  // namespace storemove::interop
