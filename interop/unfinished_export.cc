#include "interop/unfinished_export.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <memory>

#include "util/error.h"

namespace storemove::interop {

std::optional<std::string> UnfinishedExportAbove(const std::string& dir) {
  std::unique_ptr<char, decltype(&::free)> resolved(::realpath(dir.c_str(), nullptr), &::free);
  if (!resolved) return std::nullopt;  // the open that follows names what is wrong
  std::string at = resolved.get();
  for (;;) {
    const std::string marker = (at == "/" ? "" : at) + "/" + kUnfinishedExportMarker;
    struct stat st;
    if (::lstat(marker.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return marker;
    if (at == "/") return std::nullopt;
    const size_t slash = at.rfind('/');
    at = slash == 0 ? "/" : at.substr(0, slash);
  }
}

void RefuseUnfinishedExport(const std::string& path, const std::string& dir) {
  if (const std::optional<std::string> marker = UnfinishedExportAbove(dir))
    Throw(Errc::kCorrupt, path + ": part of an export that did not finish (" + *marker +
                              "): its files may be cut short; run that export again to complete it (it empties "
                              "that directory first: move anything else out of it), then import");
}

}  // namespace storemove::interop
