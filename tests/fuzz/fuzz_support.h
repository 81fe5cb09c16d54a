// Shared by the libFuzzer targets of tests/fuzz (docs/reliability.md): the one rule every target
// checks (only storemove::Error may escape a parser fed hostile bytes) and scratch files in
// memory, so millions of runs touch no disk.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "util/error.h"

namespace storemove::fuzz {

// An invariant broken: print it and abort, which libFuzzer reports as a crash with the input.
#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

// Runs f; a storemove::Error is the expected answer to bad input (its message must be one line
// naming something), any other exception is a bug. Returns whether f completed.
template <class F>
bool OnlyStoremoveErrors(const char* target, F&& f) {
  try {
    f();
    return true;
  } catch (const storemove::Error& e) {
    std::string what = e.what();
    if (what.empty() || what.find('\n') != std::string::npos) {
      std::fprintf(stderr, "%s: error message is not one line: [%s]\n", target, what.c_str());
      std::abort();
    }
    return false;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: exception other than storemove::Error escaped: %s\n", target, e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "%s: non-standard exception escaped\n", target);
    std::abort();
  }
}

// OnlyStoremoveErrors, and the error's message names `named` (the file a parser was reading) and
// holds no control character (what it quotes from the file is escaped): "a clear one-line error
// naming the file and the problem".
template <class F>
bool OnlyStoremoveErrorsNaming(const char* target, const std::string& named, F&& f) {
  return OnlyStoremoveErrors(target, [&] {
    try {
      f();
    } catch (const storemove::Error& e) {
      if (std::string(e.what()).find(named) == std::string::npos) {
        std::fprintf(stderr, "%s: error message does not name %s: [%s]\n", target, named.c_str(), e.what());
        std::abort();
      }
      for (unsigned char c : std::string(e.what()))
        if (c < 0x20 || c == 0x7f) {
          std::fprintf(stderr, "%s: error message holds control byte 0x%02x: [%s]\n", target, c, e.what());
          std::abort();
        }
      throw;
    }
  });
}

// A memory file holding `data`, offset at 0 (seekable like a regular file, never on disk).
inline int MemFile(const uint8_t* data, size_t size) {
  int fd = ::memfd_create("fuzz", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  for (size_t done = 0; done < size;) {
    ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) std::abort();
    done += size_t(n);
  }
  if (::lseek(fd, 0, SEEK_SET) != 0) std::abort();
  return fd;
}

// Scratch directory of this process under /dev/shm (tmpfs), created on first use.
const std::string& ScratchDir();

}  // namespace storemove::fuzz
