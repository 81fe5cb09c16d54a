// The error category a call throws (storemove::Error::code), for tests that check it; a call
// that throws nothing fails the test.
#pragma once

#include <gtest/gtest.h>

#include <functional>

#include "util/error.h"

namespace storemove::testing {

inline Errc CodeOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no storemove::Error thrown";
  return Errc::kInterrupted;
}

}  // namespace storemove::testing
