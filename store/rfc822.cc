// Header parsing used by delivery and import: where the header ends, and the Date: field
// (RFC 5322 §3.3 with the obsolete forms of §4.3, plus the asctime order many mailers and mbox
// "From " lines use). Locale-free: no strptime/mktime, the calendar arithmetic is done here.
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/store.h"

namespace storemove::store {

namespace {

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsDigit(c)) return false;
  }
  return true;
}

// Callers bound the length first, so this cannot overflow.
int ToInt(std::string_view digits) {
  int v = 0;
  for (char c : digits) v = v * 10 + (c - '0');
  return v;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

int DaysInMonth(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : kDays[month - 1];
}

// 1..12 for "Jan", "jan", "January", "Sept"...; 0 otherwise.
int MonthNumber(std::string_view word) {
  static constexpr std::string_view kMonths[] = {"january", "february", "march",     "april",   "may",      "june",
                                                 "july",    "august",   "september", "october", "november", "december"};
  if (word.size() < 3) return 0;
  for (int i = 0; i < 12; ++i) {
    const std::string_view name = kMonths[i];
    if (word.size() > name.size()) continue;
    if (EqualsIgnoreCase(word, name.substr(0, word.size()))) return i + 1;
  }
  return 0;
}

// Zone names of RFC 5322 §4.3 with a known offset, in minutes east of UTC. UT, GMT, UTC, military
// letters and anything unknown mean "no information" and count as +0000, which is also the default.
bool NamedZoneOffset(std::string_view word, int* minutes) {
  // RFC 5322 §4.3's obsolete zones, and the abbreviations mailers and mbox "From " lines (date(1)
  // in the sender's zone) commonly write for European, Russian, Japanese, Australian, New Zealand,
  // Alaskan and Hawaiian time. One that names two zones (IST: India, Ireland or Israel; AST,
  // CST in China, ...) is not here: like any zone not known, it leaves the time read as UTC,
  // which is RFC 5322's "-0000" (a UTC time whose local zone is unknown).
  static constexpr struct {
    std::string_view name;
    int minutes;
  } kZones[] = {{"UT", 0},         {"GMT", 0},        {"UTC", 0},        {"EST", -5 * 60},  {"EDT", -4 * 60},
                {"CST", -6 * 60},  {"CDT", -5 * 60},  {"MST", -7 * 60},  {"MDT", -6 * 60},  {"PST", -8 * 60},
                {"PDT", -7 * 60},  {"AKST", -9 * 60}, {"AKDT", -8 * 60}, {"HST", -10 * 60}, {"WET", 0},
                {"WEST", 60},      {"BST", 60},       {"CET", 60},       {"CEST", 2 * 60},  {"MET", 60},
                {"MEST", 2 * 60},  {"EET", 2 * 60},   {"EEST", 3 * 60},  {"MSK", 3 * 60},   {"JST", 9 * 60},
                {"AEST", 10 * 60}, {"AEDT", 11 * 60}, {"NZST", 12 * 60}, {"NZDT", 13 * 60}};
  for (const auto& zone : kZones) {
    if (EqualsIgnoreCase(word, zone.name)) {
      *minutes = zone.minutes;
      return true;
    }
  }
  return false;
}

// The unfolded value of the first field called `name` (case-insensitive) in a header block; the
// block ends at the first empty line. nullopt when absent.
std::optional<std::string> FieldValue(std::string_view header, std::string_view name) {
  std::optional<std::string> value;
  size_t pos = 0;
  while (pos < header.size()) {
    size_t eol = header.find('\n', pos);
    if (eol == std::string_view::npos) eol = header.size();
    std::string_view line = header.substr(pos, eol - pos);
    pos = eol + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;  // end of the header
    const bool continuation = line[0] == ' ' || line[0] == '\t';
    if (value) {
      if (!continuation) break;
      value->push_back(' ');
      value->append(line);
      continue;
    }
    if (continuation || line.size() <= name.size() || !EqualsIgnoreCase(line.substr(0, name.size()), name)) continue;
    size_t colon = name.size();
    while (colon < line.size() && (line[colon] == ' ' || line[colon] == '\t')) ++colon;  // obs-optional WSP
    if (colon < line.size() && line[colon] == ':') value.emplace(line.substr(colon + 1));
  }
  return value;
}

// Comments (nested, with quoted-pairs) become spaces.
std::string StripComments(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  int depth = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (depth > 0) {
      if (c == '\\') ++i;
      else if (c == '(') ++depth;
      else if (c == ')') --depth;
      out.push_back(' ');
    } else if (c == '(') {
      depth = 1;
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// Splits on white space and commas, then separates glued pieces: "28-Nov-2026" -> "28" "Nov"
// "2026", "GMT+0200" -> "GMT" "+0200", "10:00:00+0200" -> "10:00:00" "+0200".
std::vector<std::string_view> Tokenize(std::string_view text) {
  std::vector<std::string_view> tokens;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (IsSpace(text[i]) || text[i] == ',')) ++i;
    const size_t start = i;
    while (i < text.size() && !IsSpace(text[i]) && text[i] != ',') ++i;
    std::string_view word = text.substr(start, i - start);
    while (!word.empty() && word.back() == '.') word.remove_suffix(1);  // "16." or "Nov."
    if (word.empty()) continue;

    bool has_alpha = false;
    for (char c : word) has_alpha |= IsAlpha(c);
    if (has_alpha && word.find('-', 1) != std::string_view::npos && word[0] != '-' && word[0] != '+') {
      // "28-Nov-2026" style dates
      size_t from = 0;
      while (from <= word.size()) {
        size_t dash = word.find('-', from);
        if (dash == std::string_view::npos) dash = word.size();
        if (dash > from) tokens.push_back(word.substr(from, dash - from));
        from = dash + 1;
      }
      continue;
    }
    // A sign after letters or after a time starts a numeric zone.
    size_t sign = word.find_first_of("+-", 1);
    if (sign != std::string_view::npos && (IsAlpha(word[0]) || word.find(':') < sign)) {
      tokens.push_back(word.substr(0, sign));
      tokens.push_back(word.substr(sign));
      continue;
    }
    tokens.push_back(word);
  }
  return tokens;
}

// "hh:mm" or "hh:mm:ss", optionally followed by a fraction of a second.
bool ParseTime(std::string_view token, int* hour, int* minute, int* second) {
  int parts[3] = {0, 0, 0};
  int count = 0;
  size_t pos = 0;
  while (count < 3) {
    size_t end = pos;
    while (end < token.size() && IsDigit(token[end])) ++end;
    if (end == pos || end - pos > 2) return false;
    parts[count++] = ToInt(token.substr(pos, end - pos));
    pos = end;
    if (pos == token.size() || token[pos] != ':') break;
    ++pos;
  }
  if (count < 2) return false;
  if (pos < token.size()) {  // fraction of a second: ".123"
    if (count != 3 || token[pos] != '.' || !AllDigits(token.substr(pos + 1))) return false;
  }
  *hour = parts[0];
  *minute = parts[1];
  *second = parts[2];
  return true;
}

// "+hhmm", "-hh:mm", "+h", "+hh" -> minutes east of UTC.
bool ParseNumericZone(std::string_view token, int* minutes) {
  if (token.size() < 2 || (token[0] != '+' && token[0] != '-')) return false;
  std::string digits;
  for (char c : token.substr(1)) {
    if (c == ':') continue;
    if (!IsDigit(c)) return false;
    digits.push_back(c);
  }
  int hours = 0;
  int mins = 0;
  if (digits.size() == 4) {
    hours = ToInt(std::string_view(digits).substr(0, 2));
    mins = ToInt(std::string_view(digits).substr(2));
  } else if (digits.size() <= 2 && !digits.empty()) {
    hours = ToInt(digits);
  } else {
    return false;
  }
  if (hours > 23 || mins > 59) return false;
  *minutes = (token[0] == '-' ? -1 : 1) * (hours * 60 + mins);
  return true;
}

// "2026-11-28" (some mailers write ISO dates).
bool ParseIsoDate(std::string_view token, int* year, int* month, int* day) {
  if (token.size() != 10 || token[4] != '-' || token[7] != '-') return false;
  if (!AllDigits(token.substr(0, 4)) || !AllDigits(token.substr(5, 2)) || !AllDigits(token.substr(8, 2))) return false;
  *year = ToInt(token.substr(0, 4));
  *month = ToInt(token.substr(5, 2));
  *day = ToInt(token.substr(8, 2));
  return true;
}

// RFC 5322 §4.3: two-digit years 00-49 are 2000-2049, 50-99 and three-digit years add 1900.
int ExpandYear(std::string_view digits) {
  const int value = ToInt(digits);
  if (digits.size() <= 2) return value < 50 ? 2000 + value : 1900 + value;
  if (digits.size() == 3) return 1900 + value;
  return value;
}

// The date-time text of a Date: field (or of an mbox "From " line) as unix seconds; nullopt if it
// cannot be read. Accepts "[dow,] dd mon yyyy hh:mm[:ss] zone" and "dow mon dd hh:mm[:ss] [zone] yyyy".
std::optional<int64_t> ParseDateTime(std::string_view text) {
  const std::string clean = StripComments(text);
  int month = 0;
  int day = 0;
  int year = 0;
  bool have_iso = false;
  bool have_time = false;
  bool have_zone = false;
  int hour = 0, minute = 0, second = 0;
  int zone_minutes = 0;
  std::vector<std::string_view> numbers;  // day and year, in the order they appear
  for (std::string_view token : Tokenize(clean)) {
    if (token.find(':') != std::string_view::npos && !have_time && IsDigit(token[0])) {
      if (!ParseTime(token, &hour, &minute, &second)) return std::nullopt;
      have_time = true;
    } else if (token[0] == '+' || token[0] == '-') {
      int minutes = 0;
      if (!have_zone && ParseNumericZone(token, &minutes)) {
        zone_minutes = minutes;
        have_zone = true;
      }
    } else if (AllDigits(token)) {
      if (token.size() > 4) return std::nullopt;
      numbers.push_back(token);
    } else if (!have_iso && ParseIsoDate(token, &year, &month, &day)) {
      have_iso = true;
    } else if (IsAlpha(token[0])) {
      int minutes = 0;
      if (const int m = MonthNumber(token); m != 0 && month == 0) {
        month = m;
      } else if (!have_zone && NamedZoneOffset(token, &minutes)) {
        zone_minutes = minutes;
        have_zone = true;
      } else if (have_time && EqualsIgnoreCase(token, "PM")) {
        if (hour < 12) hour += 12;
      } else if (have_time && EqualsIgnoreCase(token, "AM")) {
        if (hour == 12) hour = 0;
      }
      // Anything else (day names, zones not known, "remote from host") carries no date: the time
      // stays UTC, RFC 5322's -0000.
    }
  }
  if (!have_iso) {
    if (month == 0 || numbers.size() < 2) return std::nullopt;
    // Day comes before year in both RFC 5322 and asctime order; a 3-4 digit first number is a year.
    std::string_view day_digits = numbers[0];
    std::string_view year_digits = numbers[1];
    if (day_digits.size() > 2) std::swap(day_digits, year_digits);
    if (day_digits.size() > 2) return std::nullopt;
    day = ToInt(day_digits);
    year = ExpandYear(year_digits);
  }
  if (!have_time) return std::nullopt;
  if (month < 1 || month > 12 || year < 1 || day < 1 || day > DaysInMonth(year, month)) return std::nullopt;
  if (hour > 23 || minute > 59 || second > 60) return std::nullopt;
  return DaysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - zone_minutes * 60;
}

}  // namespace

uint32_t HeaderSize(std::string_view message) {
  size_t size = message.size();
  if (message.starts_with("\n")) {
    size = 1;
  } else if (message.starts_with("\r\n")) {
    size = 2;
  } else {
    for (size_t nl = message.find('\n'); nl != std::string_view::npos; nl = message.find('\n', nl + 1)) {
      if (nl + 1 < message.size() && message[nl + 1] == '\n') {
        size = nl + 2;
        break;
      }
      if (nl + 2 < message.size() && message[nl + 1] == '\r' && message[nl + 2] == '\n') {
        size = nl + 3;
        break;
      }
    }
  }
  // store.idx keeps 32 bits; a header beyond 4 GiB is not mail, the value saturates.
  return size > std::numeric_limits<uint32_t>::max() ? std::numeric_limits<uint32_t>::max()
                                                      : static_cast<uint32_t>(size);
}

int64_t SentDate(std::string_view header) {
  const std::optional<std::string> value = FieldValue(header, "Date");
  return value ? ParseDateTime(*value).value_or(0) : 0;
}

std::optional<int64_t> ParseDateTimeText(std::string_view text) { return ParseDateTime(text); }

}  // namespace storemove::store
