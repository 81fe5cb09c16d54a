// TZ for one test, then back to what it was.
#pragma once

#include <cstdlib>
#include <ctime>
#include <string>

namespace storemove::testing {

class Zone {
 public:
  explicit Zone(const char* tz) {
    if (const char* old = std::getenv("TZ")) old_ = old, had_ = true;
    ::setenv("TZ", tz, 1);
    ::tzset();
  }
  ~Zone() {
    if (had_) ::setenv("TZ", old_.c_str(), 1);
    else ::unsetenv("TZ");
    ::tzset();
  }
  Zone(const Zone&) = delete;
  Zone& operator=(const Zone&) = delete;

 private:
  std::string old_;
  bool had_ = false;
};

}  // namespace storemove::testing
