// The process's open-file limit (RLIMIT_NOFILE): raising it, and how much of it is in use.
#pragma once

#include <sys/resource.h>

#include <cstddef>

namespace storemove {

// Raises the soft limit to `need` when it is below and the hard limit allows. False when it
// stays below (`*hard` then holds the hard limit, RLIM_INFINITY when there is none).
bool RaiseDescriptorLimit(rlim_t need, rlim_t* hard);

// Descriptors this process has open (/proc/self/fd), 0 when it cannot tell.
size_t OpenDescriptors();

}  // namespace storemove
