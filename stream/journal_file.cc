#include "stream/journal_file.h"

#include <fcntl.h>

#include "store/store.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/printable.h"

namespace storemove::stream {

std::string ReadJournalFile(const std::string& path) {
  UniqueFd fd = OpenFile(path, O_RDONLY);
  std::string out;
  char buf[65536];
  for (size_t n; (n = ReadSome(fd.get(), buf, sizeof buf, path)) > 0;) {
    if (out.size() + n > kMaxJournalBytes)
      Throw(Errc::kCorrupt, path + ": larger than " + std::to_string(kMaxJournalBytes >> 20) +
                                " MiB; not a file storemove migrate wrote");
    out.append(buf, n);
  }
  return out;
}

void ThrowJournalLine(const std::string& path, size_t lineno, const std::string& problem) {
  Throw(Errc::kCorrupt, path + " line " + std::to_string(lineno) + ": " + problem);
}

std::vector<std::string_view> JournalLines(std::string_view text, const std::string& path, std::string_view what,
                                           const std::vector<std::string_view>& magics) {
  const size_t eol = text.find('\n');
  const std::string_view first = text.substr(0, eol);
  bool known = false;
  for (std::string_view magic : magics) known = known || first == magic;
  if (!known || eol == std::string_view::npos)
    Throw(Errc::kCorrupt, path + ": not a " + std::string(what) + " (first line '" + ShownName(first, 80) + "'" +
                              (known ? ", and no newline after it" : "") + ")");
  if (text.back() != '\n')
    Throw(Errc::kCorrupt, path + ": cut short (its last line, '" + ShownName(text.substr(text.rfind('\n') + 1), 80) +
                              "', has no newline); a damaged " + std::string(what));
  std::vector<std::string_view> lines;
  for (size_t pos = eol + 1; pos < text.size();) {
    const size_t end = text.find('\n', pos);
    lines.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return lines;
}

void CheckJournalUser(std::string_view line, const std::string& path, size_t lineno) {
  // ValidateUserId shows the whole text: a line of megabytes would make a message as long.
  if (line.size() > 512)
    ThrowJournalLine(path, lineno, "invalid user id '" + ShownName(line, 80) + "': longer than 128 bytes");
  try {
    store::ValidateUserId(line);
  } catch (const Error& e) {
    ThrowJournalLine(path, lineno, e.what());
  }
}

}  // namespace storemove::stream
