// Names that come from outside (a stream, a peer, a file) shown in a message or a listing.
#pragma once

#include <string>
#include <string_view>

namespace storemove {

// `s` with every C0 control, DEL, UTF-8-encoded C1 control (U+0080..U+009F) and byte of no
// well-formed UTF-8 sequence written as \xNN (each byte), everything else as it is: a hostile
// name can neither forge a line of output nor drive the terminal that shows it.
std::string EscapeControls(std::string_view s);

// EscapeControls of at most the first `max_bytes` bytes of `s` (cut before a UTF-8 sequence, not
// inside one), "..." after when cut: a name from a peer in a one-line message, whatever its size.
std::string ShownName(std::string_view s, size_t max_bytes = 200);

}  // namespace storemove
