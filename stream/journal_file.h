// The small text files migrate keeps beside the source store in STORE/migrate-journal (GROUP.hold,
// GROUP.members, GROUP.switch): read and cut into lines the same way, so that a damaged one (a
// crash, a disk, a hand edit) is refused with one line naming the file and what is wrong with it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace storemove::stream {

// Larger than any journal a run writes (a group of a million users is some 40 MB): a file over it
// is refused before it is read whole.
inline constexpr size_t kMaxJournalBytes = size_t(256) << 20;

// The file's bytes; kCorrupt "<path>: larger than 256 MiB; not a file migrate wrote" over
// kMaxJournalBytes.
std::string ReadJournalFile(const std::string& path);

// The lines of `text` (without their '\n'), after a first line that is one of `magics`;
// kCorrupt, naming `path` and `what` ("migrate journal"), when the first line is another (shown
// escaped and cut short) or the text does not end with '\n' (cut short: every file migrate
// writes ends with one, and a user id cut short is another user's).
std::vector<std::string_view> JournalLines(std::string_view text, const std::string& path, std::string_view what,
                                           const std::vector<std::string_view>& magics);

// Throws kCorrupt "<path> line <lineno>: <problem>".
[[noreturn]] void ThrowJournalLine(const std::string& path, size_t lineno, const std::string& problem);

// `line` as a user id (store::ValidateUserId), else kCorrupt naming the path and line.
void CheckJournalUser(std::string_view line, const std::string& path, size_t lineno);

}  // namespace storemove::stream
