// A point in time an administrator gives on the command line (migrate --deadline): the end of a
// maintenance window.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace storemove::stream {

using WallClock = std::chrono::system_clock;

// `text` is one of
//   +DURATION              from `now`: 90m, 2h30m, 45s, 1h (units h, m, s; at least one)
//   HH:MM[:SS]             the next such local time after `now` (today, or tomorrow if passed)
//   YYYY-MM-DD[T| ]HH:MM[:SS]   that local time
//   @SECONDS               seconds since the epoch (storemove plan's job lines), even if passed
// A local time is its earliest instant after `now` (in an hour the clocks repeat, the first one
// ahead); an HH:MM the clocks skip on its day is the instant of the jump past it.
// kInvalidArgument (one line naming the text and the forms) for anything else, for a dated time
// that does not exist (no such date, or skipped by the clocks: "no such local time in TZ ..."),
// and (but for @SECONDS) for one that is not after `now`.
WallClock::time_point ParseDeadline(std::string_view text, WallClock::time_point now);

// "2026-12-04 06:00:00 UTC" (local time and its zone): how a deadline is named in messages and reports.
std::string DeadlineText(WallClock::time_point when);

}  // namespace storemove::stream
