#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <limits>
#include <optional>

#include "tools/commands.h"
#include "util/error.h"

namespace storemove::tools {
namespace {

// 9999-12-31T23:59:59Z: the last second of a four-digit year.
constexpr int64_t kLastFourDigitYearSecond = 253402300799;

}  // namespace

void AddStoreOption(CLI::App* command, std::string* store_dir) {
  command->add_option("--store", *store_dir, "store root directory (default: $STOREMOVE_STORE)")
      ->envname("STOREMOVE_STORE")
      ->type_name("DIR");
}

const std::string& RequireStoreDir(const std::string& store_dir) {
  if (store_dir.empty()) {
    Throw(Errc::kInvalidArgument, "no store given: use --store DIR or set STOREMOVE_STORE");
  }
  return store_dir;
}

std::unique_ptr<store::Store> OpenStore(const std::string& store_dir, store::StoreOptions options) {
  if (!options.on_wait)
    options.on_wait = [](const std::string& why) { std::fprintf(stderr, "storemove: %s\n", why.c_str()); };
  return store::Store::Open(RequireStoreDir(store_dir), options);
}

StallPolicy PipeStallPolicy(const char* command, int timeout, std::string holding) {
  StallPolicy stall;
  stall.timeout_seconds = timeout;
  stall.notice_seconds = timeout > 0 ? std::clamp(timeout / 2, 1, 60) : 60;
  stall.notice = [command](const std::string& line) { std::fprintf(stderr, "storemove %s: %s\n", command, line.c_str()); };
  stall.holding = std::move(holding);
  return stall;
}

void AddStallTimeoutOption(CLI::App* command, int* timeout, const std::string& input) {
  command
      ->add_option("--timeout", *timeout,
                   "seconds without input from " + input +
                       ", or with under 1 KiB a second of it, before giving up with 75; 0 = wait, saying so after "
                       "60 s (default 0)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0, kMaxWaitSeconds, "SECONDS"));  // not 0 to DBL_MAX's 309 digits
}

std::string IsoTime(int64_t unix_seconds) {
  if (unix_seconds == 0) return "-";
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  if (gmtime_r(&t, &tm) == nullptr) return std::to_string(unix_seconds);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int64_t ParseTime(std::string_view text, std::string_view what) {
  bool all_digits = !text.empty() && text.size() <= 18 &&
                    text.find_first_not_of("0123456789") == std::string_view::npos;
  // The store's own Date: header parser, so --date accepts exactly what a message header may say;
  // both forms then meet the same limits.
  const std::optional<int64_t> parsed =
      all_digits ? std::optional<int64_t>(std::stoll(std::string(text))) : store::ParseDateTimeText(text);
  if (!parsed) {
    Throw(Errc::kInvalidArgument, std::string(what) + ": cannot parse '" + std::string(text) +
                                      "' (give an RFC 5322 date or unix seconds)");
  }
  if (*parsed <= 0)
    Throw(Errc::kInvalidArgument, std::string(what) + ": '" + std::string(text) +
                                      "' is not after 1970-01-01T00:00:00Z, and a message's date must be (0 is its "
                                      "\"no date\", which the store replaces with the time of storing)");
  if (*parsed > kLastFourDigitYearSecond)
    Throw(Errc::kInvalidArgument, std::string(what) + ": '" + std::string(text) +
                                      "' is after 9999-12-31T23:59:59Z (an mbox \"From \" line, export's, cannot carry it)");
  return *parsed;
}

uint64_t ParseByteCount(std::string_view text, std::string_view what) {
  auto bad = [&] {
    Throw(Errc::kInvalidArgument, std::string(what) + ": '" + std::string(text) +
                                      "' is not a byte count (e.g. 1048576, 512K, 20M, 2G)");
  };
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || digits > 19) bad();
  uint64_t value = std::stoull(std::string(text.substr(0, digits)));
  std::string_view suffix = text.substr(digits);
  int shift = 0;
  if (suffix.empty()) {
    shift = 0;
  } else if (suffix.size() == 1 || (suffix.size() == 3 && (suffix.substr(1) == "iB" || suffix.substr(1) == "ib"))) {
    switch (suffix[0]) {
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      case 't': case 'T': shift = 40; break;
      default: bad();
    }
  } else {
    bad();
  }
  if (value > (std::numeric_limits<uint64_t>::max() >> shift)) bad();
  return value << shift;
}

std::string HumanBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 " B", bytes);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", value, kUnits[unit]);
  }
  return buf;
}

int64_t UnixNow() { return static_cast<int64_t>(::time(nullptr)); }

}  // namespace storemove::tools
