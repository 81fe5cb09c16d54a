// Fresh temporary directories for one test, removed afterwards: TempDir on tmpfs when available,
// DiskDir on the disk.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace storemove::testing {

class TempDir {
 public:
  TempDir() {
    std::string base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path().string();
    std::string templ = base + "/storemove-test-XXXXXX";
    if (!mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// A fresh directory on the disk (/var/tmp), not tmpfs: there files can be out of the page cache
// and writes wait for a device.
class DiskDir {
 public:
  DiskDir() {
    std::string templ = "/var/tmp/storemove-disk-test-XXXXXX";
    if (!mkdtemp(templ.data())) throw std::runtime_error("mkdtemp /var/tmp failed");
    path_ = templ;
  }
  ~DiskDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  DiskDir(const DiskDir&) = delete;
  DiskDir& operator=(const DiskDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

}  // namespace storemove::testing
