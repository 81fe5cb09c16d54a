// The one error type shared by every storemove module.
//
// Errors are exceptions carrying a category (what kind of failure, which decides the
// exit status) and a one-line message that names what failed and where, e.g.
//   store.idx: bad record checksum at /srv/store/partition/primary/=user/ab/cd/=joe/store.idx record 7
#pragma once

#include <stdexcept>
#include <string>

namespace storemove {

enum class Errc {
  kInvalidArgument,  // bad name, option or value supplied by the caller
  kNotFound,         // store, user, mailbox or file that does not exist
  kExists,           // something that must not exist already does
  kCorrupt,          // on-disk or on-wire data failed validation
  kIo,               // an operating-system call failed
  kDatabase,         // Berkeley DB reported an error
  kTempFail,         // try later (user on hold, lock timeout)
  kNoUser,           // delivery to an unknown user
  kProtocol,         // peer broke the transport protocol
  kAuth,             // authentication failed
  kInterrupted,      // stopped by a signal or by the user
};

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Errc code() const { return code_; }

 private:
  Errc code_;
};

[[noreturn]] void Throw(Errc code, const std::string& message);
// Throws kIo with "<what>: <strerror(errno)>".
[[noreturn]] void ThrowErrno(const std::string& what);
[[noreturn]] void ThrowErrno(const std::string& what, int err);

// sysexits(3)-style process exit status for an error category.
int ExitStatus(Errc code);

}  // namespace storemove
