// The digest of a whole file read through a descriptor (pread from offset 0: the descriptor's
// own offset is left alone), for checks of bytes already on disk.
#pragma once

#include <cstdint>
#include <string>

#include "util/digest.h"

namespace storemove {

// XXH3-128 of the file's bytes; `size` (if given) gets their count. kIo naming `shown` on a
// read error.
Digest DigestOfFile(int fd, const std::string& shown, uint64_t* size = nullptr);

}  // namespace storemove
