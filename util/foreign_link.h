// Paths the user names (an output file, an mbox file to import, a groups file, an export
// directory) are followed when they are symbolic links, FIFOs or sockets: that is how an
// administrator points storemove elsewhere. Not when another user made them: a link or FIFO
// owned by neither this process's user nor root may have been planted to turn root's write into
// a file that user reads, or root's read of that user's files into another user's mail. The
// kernel's fs.protected_symlinks and fs.protected_fifos do this in sticky directories only, and
// are off on some systems.
#pragma once

#include <string>
#include <string_view>

namespace storemove {

// Throws kAuth "<what> <path> is a symbolic link owned by joe (uid 1001), not by this user or
// root: refusing to follow it (...)" for a link of another user's anywhere on the way `path`
// resolves (its directories, its last name, the targets of the links met), and for a FIFO or
// socket of another user's at its end. A path that does not exist (from the first missing
// component on) passes: the caller's open says why.
void RefuseForeignLink(const std::string& path, std::string_view what);

}  // namespace storemove
