#include "tests/support/imap_filler.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <ctime>

#include "util/error.h"

namespace storemove::testing {

std::string Base64(const std::string& in) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = uint32_t(uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) n |= uint32_t(uint8_t(in[i + 1])) << 8;
    if (i + 2 < in.size()) n |= uint8_t(in[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kAlphabet[n & 63] : '=';
  }
  return out;
}

namespace {

std::string Upper(std::string s) {
  for (char& c : s) c = char(std::toupper(uint8_t(c)));
  return s;
}

// The capability words of "... [CAPABILITY a b c] ..." or of an untagged "CAPABILITY a b c".
bool ParseCapabilities(const std::string& text, std::vector<std::string>* caps) {
  std::string list;
  const std::string upper = Upper(text);
  if (upper.rfind("CAPABILITY ", 0) == 0) {
    list = text.substr(11);
  } else {
    const size_t at = upper.find("[CAPABILITY ");
    if (at == std::string::npos) return false;
    const size_t end = text.find(']', at);
    list = text.substr(at + 12, end == std::string::npos ? std::string::npos : end - at - 12);
  }
  caps->clear();
  size_t i = 0;
  while (i < list.size()) {
    const size_t space = std::min(list.find(' ', i), list.size());
    if (space > i) caps->push_back(Upper(list.substr(i, space - i)));
    i = space + 1;
  }
  return true;
}

}  // namespace

ImapFiller::ImapFiller(int port) : port_(port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) ThrowErrno("socket");
  timeval tv{10, 0};  // a stuck server fails the test instead of hanging it
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    ThrowErrno("imap filler: connect to 127.0.0.1:" + std::to_string(port), err);
  }
  try {
    const std::string greeting = ReadLine();
    if (greeting.rfind("* OK", 0) != 0)
      Throw(Errc::kProtocol, "imap filler: 127.0.0.1:" + std::to_string(port) + " greeted with: " + greeting);
    ParseCapabilities(greeting, &caps_);
  } catch (...) {
    ::close(fd_);  // no destructor runs for a constructor that throws
    fd_ = -1;
    throw;
  }
}

ImapFiller::~ImapFiller() {
  if (fd_ >= 0) ::close(fd_);
}

std::string ImapFiller::Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string ImapFiller::InternalDate(int64_t unix_seconds) {
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const time_t t = static_cast<time_t>(unix_seconds);
  tm parts{};
  ::gmtime_r(&t, &parts);
  char text[40];
  std::snprintf(text, sizeof text, "%02d-%s-%04d %02d:%02d:%02d +0000", parts.tm_mday, kMonths[parts.tm_mon],
                parts.tm_year + 1900, parts.tm_hour, parts.tm_min, parts.tm_sec);
  return text;
}

void ImapFiller::Send(const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowErrno("imap filler: send to 127.0.0.1:" + std::to_string(port_));
    done += size_t(n);
  }
}

std::string ImapFiller::ReadLine() {
  std::string line;
  for (;;) {
    const size_t eol = buffer_.find("\r\n");
    if (eol != std::string::npos) {
      line.append(buffer_, 0, eol);
      buffer_.erase(0, eol + 2);
      // A line ending in {n} (or {n+}) continues after n bytes of literal.
      if (!line.empty() && line.back() == '}') {
        const size_t open = line.rfind('{');
        if (open != std::string::npos) {
          std::string digits = line.substr(open + 1, line.size() - open - 2);
          if (!digits.empty() && digits.back() == '+') digits.pop_back();
          if (!digits.empty() && std::all_of(digits.begin(), digits.end(), ::isdigit)) {
            const size_t n = std::stoul(digits);
            line += "\r\n";
            while (buffer_.size() < n) {
              char chunk[65536];
              const ssize_t got = ::recv(fd_, chunk, sizeof chunk, 0);
              if (got < 0 && errno == EINTR) continue;
              if (got <= 0) Throw(Errc::kProtocol, "imap filler: the server closed or timed out inside a literal");
              buffer_.append(chunk, size_t(got));
            }
            line.append(buffer_, 0, n);
            buffer_.erase(0, n);
            continue;
          }
        }
      }
      return line;
    }
    char chunk[65536];
    const ssize_t got = ::recv(fd_, chunk, sizeof chunk, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) ThrowErrno("imap filler: no answer from 127.0.0.1:" + std::to_string(port_));
    if (got == 0)
      Throw(Errc::kProtocol, "imap filler: 127.0.0.1:" + std::to_string(port_) + " closed the connection after: " +
                                 line + buffer_);
    buffer_.append(chunk, size_t(got));
  }
}

std::string ImapFiller::NextTag() { return "f" + std::to_string(next_tag_++); }

std::vector<std::string> ImapFiller::Finish(const std::string& tag, const std::string& what) {
  std::vector<std::string> untagged;
  for (;;) {
    const std::string line = ReadLine();
    if (line.rfind("* ", 0) == 0) {
      ParseCapabilities(line.substr(2), &caps_);
      untagged.push_back(line.substr(2));
    } else if (line.rfind(tag + " ", 0) == 0) {
      const std::string rest = line.substr(tag.size() + 1);
      if (Upper(rest.substr(0, 3)) != "OK ")
        Throw(Errc::kProtocol, "imap filler: " + what + ": the server answered: " + rest);
      ParseCapabilities(rest, &caps_);
      return untagged;
    } else if (line.rfind("+", 0) == 0) {
      Throw(Errc::kProtocol, "imap filler: " + what + ": unexpected continuation: " + line);
    }  // else another tag's answer: this filler never pipelines, so there is none
  }
}

std::vector<std::string> ImapFiller::Command(const std::string& command) {
  const std::string tag = NextTag();
  Send(tag + " " + command + "\r\n");
  return Finish(tag, command.substr(0, command.find(' ')));
}

void ImapFiller::Login(const std::string& user, const std::string& password) {
  const std::string tag = NextTag();
  Send(tag + " LOGIN " + Quote(user) + " " + Quote(password) + "\r\n");
  Finish(tag, "LOGIN " + user);
}

void ImapFiller::LoginAs(const std::string& user, const std::string& admin, const std::string& admin_password) {
  const std::string tag = NextTag();
  Send(tag + " AUTHENTICATE PLAIN\r\n");
  const std::string line = ReadLine();
  if (line.rfind("+", 0) != 0)
    Throw(Errc::kProtocol, "imap filler: AUTHENTICATE PLAIN for " + user + " as " + admin + ": " + line);
  Send(Base64(user + '\0' + admin + '\0' + admin_password) + "\r\n");
  Finish(tag, "AUTHENTICATE PLAIN for " + user + " as " + admin);
}

void ImapFiller::Create(const std::string& mailbox) { Command("CREATE " + Quote(mailbox)); }

void ImapFiller::Subscribe(const std::string& mailbox) { Command("SUBSCRIBE " + Quote(mailbox)); }

bool ImapFiller::HasCapability(const std::string& cap) const {
  return std::find(caps_.begin(), caps_.end(), cap) != caps_.end();
}

void ImapFiller::Append(const std::string& mailbox, const std::vector<std::string>& flags, int64_t date,
                        const std::string& message) {
  if (caps_.empty()) Command("CAPABILITY");
  const bool literal_plus = HasCapability("LITERAL+");
  std::string flag_list;
  for (const std::string& f : flags) flag_list += (flag_list.empty() ? "" : " ") + f;
  const std::string tag = NextTag();
  const std::string what = "APPEND to " + mailbox;
  Send(tag + " APPEND " + Quote(mailbox) + " (" + flag_list + ") " + Quote(InternalDate(date)) + " {" +
       std::to_string(message.size()) + (literal_plus ? "+" : "") + "}\r\n");
  if (!literal_plus) {
    const std::string line = ReadLine();
    if (line.rfind("+", 0) != 0) Throw(Errc::kProtocol, "imap filler: " + what + ": the server answered: " + line);
  }
  Send(message + "\r\n");
  Finish(tag, what);
}

void ImapFiller::Logout() {
  try {
    Command("LOGOUT");
  } catch (const Error&) {
    // The session ends either way.
  }
}

}  // namespace storemove::testing
