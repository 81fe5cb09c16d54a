// What kind of build the tests run in.
#pragma once

namespace storemove::testing {

// Built with a sanitizer (make asan, make tsan): resident memory is then mostly the sanitizer's
// (shadow memory, quarantine), so the tests that bound a command's memory do not check it.
#ifdef STOREMOVE_SANITIZED_BUILD
inline constexpr bool kSanitizedBuild = true;
#else
inline constexpr bool kSanitizedBuild = false;
#endif

}  // namespace storemove::testing
