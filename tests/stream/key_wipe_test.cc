// The pre-shared key's hex text is wiped once parsed, when it is refused too, and the key is built
// without leaving partial copies behind: every block freed while a key file is loaded is searched
// for the key's text and its first bytes (operator new and delete are this binary's own for that).
#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <openssl/crypto.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>

#include "stream/net.h"
#include "stream/net_conn.h"
#include "tests/support/temp_dir.h"
#include "util/error.h"

namespace {

std::atomic<bool> g_watching{false};
std::string g_text_needle, g_key_needle;  // set before watching, freed after
std::atomic<int> g_found{0};

void Inspect(void* p) {
  if (!p || !g_watching.load(std::memory_order_acquire)) return;
  const size_t n = ::malloc_usable_size(p);
  for (const std::string* needle : {&g_text_needle, &g_key_needle})
    if (!needle->empty() && ::memmem(p, n, needle->data(), needle->size())) ++g_found;
}

// OpenSSL's allocations fail while this is set: a TLS context that cannot be made after its key
// was read. Installed before OpenSSL allocates anything (a static initializer of this binary).
std::atomic<bool> g_fail_openssl{false};
void* OpensslMalloc(size_t n, const char*, int) { return g_fail_openssl ? nullptr : std::malloc(n); }
void* OpensslRealloc(void* p, size_t n, const char*, int) { return g_fail_openssl ? nullptr : std::realloc(p, n); }
void OpensslFree(void* p, const char*, int) { std::free(p); }
const bool g_openssl_hooked = CRYPTO_set_mem_functions(OpensslMalloc, OpensslRealloc, OpensslFree) == 1;

}  // namespace

void* operator new(size_t n) {
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  Inspect(p);
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  Inspect(p);
  std::free(p);
}

namespace storemove::stream::net {
namespace {

using storemove::testing::TempDir;

// A key file of `text`, mode 0600; the needles are its first 32 hex digits and, for a good key,
// its first 16 bytes.
std::string KeyFile(const TempDir& tmp, const std::string& name, const std::string& text) {
  const std::string path = tmp / name;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  EXPECT_GE(fd, 0) << path;
  EXPECT_EQ(::write(fd, text.data(), text.size()), ssize_t(text.size()));
  ::close(fd);
  return path;
}

std::string RandomKey() {
  std::random_device random;
  std::string key;
  for (int i = 0; i < 32; ++i) key.push_back(char(random()));
  return key;
}

std::string Hex(const std::string& bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

// Runs `load` with every freed block searched; the number of blocks found holding a needle.
template <typename Load>
int FoundWhile(const std::string& text_needle, const std::string& key_needle, Load load) {
  g_text_needle = text_needle;
  g_key_needle = key_needle;
  g_found = 0;
  g_watching = true;
  load();
  g_watching = false;
  return g_found;
}

Credentials Psk(const std::string& key_file) {
  Credentials c;
  c.key_file = key_file;
  return c;
}

TEST(KeyWipe, TheSearchFindsAKeyLeftInFreedMemory) {
  const std::string hex = Hex(RandomKey());
  EXPECT_EQ(FoundWhile(hex.substr(0, 32), "", [&] { delete new std::string(hex); }), 1);
}

TEST(KeyWipe, AKeyLoadedLeavesNoCopyInFreedMemory) {
  TempDir tmp;
  const std::string key = RandomKey(), hex = Hex(key);
  const std::string path = KeyFile(tmp, "key", hex + "\n");
  const int found = FoundWhile(hex.substr(0, 32), key.substr(0, 16), [&] {
    TlsContext tls(Psk(path), TlsContext::Side::kServer);
    EXPECT_TRUE(tls.psk());
  });
  EXPECT_EQ(found, 0) << "freed blocks held the key's text or its first bytes";
}

TEST(KeyWipe, ARefusedKeyLeavesNoCopyInFreedMemory) {
  TempDir tmp;
  const std::string hex = Hex(RandomKey()).substr(0, 63) + "g";  // one digit that is not hex, at the end
  const std::string path = KeyFile(tmp, "key", hex + "\n");
  const int found = FoundWhile(hex.substr(0, 32), "", [&] {
    try {
      TlsContext tls(Psk(path), TlsContext::Side::kServer);
      ADD_FAILURE() << "a key with a digit that is not hex was taken";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument) << e.what();
    }
  });
  EXPECT_EQ(found, 0) << "freed blocks held the refused key's text";
}

// A key file is read up to one byte past the longest one taken (200 bytes): one longer is refused,
// not cut short. Before, only its first 200 bytes were read, and a key followed by 135 blank
// bytes and then anything at all (a second key, a pasted certificate) was taken in silence.
TEST(KeyFile, AKeyFileLongerThanAnyKeyIsRefusedNotCutShort) {
  TempDir tmp;
  const std::string hex = Hex(RandomKey());
  const std::string padded = hex + "\n" + std::string(135, ' ');
  ASSERT_EQ(padded.size(), 200u);
  EXPECT_TRUE(TlsContext(Psk(KeyFile(tmp, "padded", padded)), TlsContext::Side::kServer).psk());
  const std::string path = KeyFile(tmp, "key", padded + Hex(RandomKey()) + "\n");
  try {
    TlsContext tls(Psk(path), TlsContext::Side::kServer);
    ADD_FAILURE() << "a key file of " << padded.size() + 65 << " bytes was taken";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kInvalidArgument) << e.what();
    EXPECT_EQ(std::string(e.what()), "key file " + path +
                                         ": longer than 200 bytes; expected 64 hex digits (make one with storemove keygen)");
  }
}

// A context that fails after the key was read (SSL_CTX_new out of memory) wipes the key as a
// destroyed one does: the constructor's throw used to free it unwiped (helper-86).
TEST(KeyWipe, AContextThatFailsAfterReadingTheKeyLeavesNoCopyInFreedMemory) {
  ASSERT_TRUE(g_openssl_hooked) << "OpenSSL allocated before this binary could hook its allocator";
  TempDir tmp;
  const std::string key = RandomKey(), hex = Hex(key);
  const std::string path = KeyFile(tmp, "key", hex + "\n");
  const int found = FoundWhile(hex.substr(0, 32), key.substr(0, 16), [&] {
    g_fail_openssl = true;
    try {
      TlsContext tls(Psk(path), TlsContext::Side::kServer);
      ADD_FAILURE() << "a TLS context was made without memory";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("SSL_CTX_new"), std::string::npos) << e.what();
    }
    g_fail_openssl = false;
  });
  EXPECT_EQ(found, 0) << "freed blocks held the key's bytes";
}

}  // namespace
}  // namespace storemove::stream::net
