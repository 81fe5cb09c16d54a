#include "tests/support/server_process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "util/error.h"

namespace storemove::testing {

namespace fs = std::filesystem;

int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    ThrowErrno("bind to a free port", err);
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

void WriteTestFile(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) Throw(Errc::kIo, "cannot write " + path);
  fs::permissions(path, static_cast<fs::perms>(mode));
}

void ChownTree(const std::string& root, uid_t uid, gid_t gid) {
  if (::lchown(root.c_str(), uid, gid) != 0) ThrowErrno("chown " + root);
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (::lchown(e.path().c_str(), uid, gid) != 0) ThrowErrno("chown " + e.path().string());
}

void StopProcessGroup(pid_t* pid) {
  if (*pid <= 0) return;
  ::kill(*pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int status = 0;
  bool reaped = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(*pid, &status, WNOHANG) == *pid) {
      reaped = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling interval of a bounded wait
  }
  ::kill(-*pid, SIGKILL);  // stragglers of its group, or the master itself after the deadline
  if (!reaped) ::waitpid(*pid, &status, 0);
  *pid = -1;
}

void RemoveServerDir(std::string* dir, const char* keep_variable) {
  if (dir->empty()) return;
  if (std::getenv(keep_variable) == nullptr) {
    std::error_code ec;
    fs::remove_all(*dir, ec);
  }
  dir->clear();
}

std::string OneLineLog(const std::string& dir, std::initializer_list<const char*> files) {
  std::string text;
  for (const char* name : files) {
    std::ifstream in(dir + name, std::ios::binary);
    text.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (text.size() > 4000) text = text.substr(text.size() - 4000);
  for (char& ch : text)
    if (ch == '\n') ch = '|';  // one line, for an error message
  return text.empty() ? "(no log)" : text;
}

}  // namespace storemove::testing
