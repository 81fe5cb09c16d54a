#include "util/error.h"

#include <cerrno>
#include <cstring>

namespace storemove {

void Throw(Errc code, const std::string& message) { throw Error(code, message); }

void ThrowErrno(const std::string& what) { ThrowErrno(what, errno); }

void ThrowErrno(const std::string& what, int err) {
  throw Error(Errc::kIo, what + ": " + std::strerror(err));
}

int ExitStatus(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument: return 64;  // EX_USAGE
    case Errc::kCorrupt: return 65;          // EX_DATAERR
    case Errc::kNotFound: return 66;         // EX_NOINPUT
    case Errc::kNoUser: return 67;           // EX_NOUSER
    case Errc::kExists: return 73;           // EX_CANTCREAT
    case Errc::kIo: return 74;               // EX_IOERR
    case Errc::kTempFail: return 75;         // EX_TEMPFAIL
    case Errc::kProtocol: return 76;         // EX_PROTOCOL
    case Errc::kAuth: return 77;             // EX_NOPERM
    case Errc::kDatabase: return 70;         // EX_SOFTWARE
    case Errc::kInterrupted: return 130;
  }
  return 1;
}

}  // namespace storemove
