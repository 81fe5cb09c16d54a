// Store settings kept in the store itself, STORE/config/store.conf (docs/store-format.md §11):
// what Sun sets with `configutil -o NAME -v VALUE`, so that every command writing to the store
// follows them without a flag on each run. Names are Sun's; unknown names are refused.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/store.h"

namespace storemove::store {

inline constexpr std::string_view kRelinkerEnabled = "local.store.relinker.enabled";
inline constexpr std::string_view kRelinkerMinSize = "local.store.relinker.minsize";

struct Settings {
  // Link identical content through the partition's repository as it arrives (deliver, import,
  // moveuser); docs/relinker.md "On arrival".
  bool relinker_enabled = false;
  // Messages smaller than this many KB (1024 bytes) are not linked on arrival.
  uint64_t relinker_minsize_kb = 0;
  uint64_t relinker_min_bytes() const { return relinker_minsize_kb * 1024; }
};

struct SettingInfo {
  std::string_view name;
  std::string_view default_value;
  std::string_view help;  // values accepted and meaning, one line
};
// Every setting, in the order `storemove config` prints them.
const std::vector<SettingInfo>& KnownSettings();

// STORE/config/store.conf
std::string SettingsPath(const std::string& root);

// The settings in force: defaults for what the file does not set, all defaults when it is
// absent. A file that does not parse (unknown name, bad value, a name twice) throws kCorrupt
// "<path> line N: why".
Settings ReadSettings(const std::string& root);
inline Settings ReadSettings(const Store& store) { return ReadSettings(store.root()); }

// Every setting as NAME, VALUE (normalised text; the default when the file does not set it).
std::vector<std::pair<std::string, std::string>> SettingValues(const std::string& root);

// kInvalidArgument "unknown setting 'X' (known: ...)" unless `name` is one of KnownSettings().
void ValidateSettingName(std::string_view name);
// The value's canonical text ("yes"/"no", a decimal number); kInvalidArgument naming the
// setting for an unknown name or a bad value.
std::string NormalizeSetting(std::string_view name, std::string_view value);

// Sets each NAME to VALUE (validated first, all or nothing), keeping the file's other lines and
// comments. Written through a temporary name + fsync + rename + fsync of config/, under an
// exclusive flock of config/ so two writers cannot lose each other's change.
void WriteSettings(const std::string& root, const std::vector<std::pair<std::string, std::string>>& changes);

}  // namespace storemove::store
