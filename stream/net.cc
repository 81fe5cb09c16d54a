// The transport's plumbing: endpoints, key files, TLS contexts (PSK or certificates), one
// connection with timeouts, and the frames of docs/transport.md.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include <nlohmann/json.hpp>

#include "stream/net_conn.h"
#include "stream/private_file.h"
#include "stream/psk_key.h"
#include "util/bytes.h"
#include "util/read_block.h"
#include "util/printable.h"

namespace storemove::stream::net {

namespace {

constexpr char kPskIdentity[] = "storemove";
constexpr unsigned char kTlsAes256GcmSha384[] = {0x13, 0x02};
constexpr size_t kReadAhead = 64 << 10;

// The reasons OpenSSL queued for this thread, "; "-joined, and the queue cleared.
std::string OpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    std::string text = reason ? reason : "error " + std::to_string(ERR_GET_REASON(e));
    if (out.find(text) != std::string::npos) continue;
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out;
}

[[noreturn]] void ThrowTls(Errc code, const std::string& what) {
  std::string reasons = OpenSslErrors();
  Throw(code, what + (reasons.empty() ? "" : ": " + reasons));
}

// The hex text is the key itself: wiped once parsed (stream/psk_key.h), when it is refused too.
// One byte past the longest key file is read, so that a longer one is refused, not cut short.
std::string ReadKeyFile(const std::string& path) {
  struct Wiped {
    std::string text;
    ~Wiped() { OPENSSL_cleanse(text.data(), text.size()); }
  } file{ReadPrivateFile(path, "key file", kMaxKeyFileBytes + 1)};
  return ParsePskKey(file.text, path);
}

// The certificate's private key is a secret like a pre-shared key: read through ReadPrivateFile
// (refused when group or others may read it, kAuth) rather than by OpenSSL from the path, which
// takes any mode (security review #02). The PEM text is wiped once parsed.
void UseCertificateKey(SSL_CTX* ctx, const std::string& path) {
  std::string pem = ReadPrivateFile(path, "certificate key file", 1 << 20);
  BIO* bio = BIO_new_mem_buf(pem.data(), int(pem.size()));
  EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio, nullptr, SSL_CTX_get_default_passwd_cb(ctx),
                                                SSL_CTX_get_default_passwd_cb_userdata(ctx))
                      : nullptr;
  BIO_free(bio);
  OPENSSL_cleanse(pem.data(), pem.size());
  const bool used = key && SSL_CTX_use_PrivateKey(ctx, key) == 1;
  EVP_PKEY_free(key);  // the context holds its own reference
  if (!used) ThrowTls(Errc::kInvalidArgument, "private key " + path);
}

SSL_SESSION* NewPskSession(SSL* ssl, const std::string& key) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kTlsAes256GcmSha384);
  if (!cipher) return nullptr;
  SSL_SESSION* session = SSL_SESSION_new();
  if (!session) return nullptr;
  if (!SSL_SESSION_set1_master_key(session, reinterpret_cast<const unsigned char*>(key.data()), key.size()) ||
      !SSL_SESSION_set_cipher(session, cipher) || !SSL_SESSION_set_protocol_version(session, TLS1_3_VERSION)) {
    SSL_SESSION_free(session);
    return nullptr;
  }
  return session;
}

const std::string& ContextKey(SSL* ssl) {
  return *static_cast<const std::string*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

int PskUseSession(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* idlen, SSL_SESSION** sess) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kTlsAes256GcmSha384);
  if (!cipher) return 0;
  if (md && SSL_CIPHER_get_handshake_digest(cipher) != md) {  // not usable with this hash
    *sess = nullptr;
    *id = nullptr;
    *idlen = 0;
    return 1;
  }
  *sess = NewPskSession(ssl, ContextKey(ssl));
  if (!*sess) return 0;
  *id = reinterpret_cast<const unsigned char*>(kPskIdentity);
  *idlen = sizeof kPskIdentity - 1;
  return 1;
}

int PskFindSession(SSL* ssl, const unsigned char* identity, size_t identity_len, SSL_SESSION** sess) {
  if (identity_len != sizeof kPskIdentity - 1 || std::memcmp(identity, kPskIdentity, identity_len) != 0) {
    *sess = nullptr;  // unknown identity: no PSK, and without a certificate the handshake fails
    return 1;
  }
  *sess = NewPskSession(ssl, ContextKey(ssl));
  return *sess ? 1 : 0;
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

// --- endpoints ---------------------------------------------------------------------------------

std::string Endpoint::ToString() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Endpoint ParseEndpoint(const std::string& text) {
  auto bad = [&](const std::string& why) -> Endpoint {
    Throw(Errc::kInvalidArgument, "'" + ShownName(text) + "' is not HOST:PORT or [IPV6]:PORT: " + why);
  };
  Endpoint e;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') return bad("no ]:PORT");
    e.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) return bad("no port");
    e.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (e.host.find(':') != std::string::npos) return bad("an IPv6 address needs brackets");
  }
  if (e.host.empty()) return bad("no host");
  // A host name goes into messages, reports and moved:HOST: no control byte (helper-118).
  if (EscapeControls(e.host) != e.host) return bad("a control character or a byte of no UTF-8 character in the host");
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535)
    return bad("the port must be 0-65535");
  e.port = static_cast<uint16_t>(std::stoul(port));
  return e;
}

// --- keys and SHA-256 --------------------------------------------------------------------------

void WriteKeyFile(const std::string& path) {
  unsigned char key[kPskKeyBytes];
  if (RAND_bytes(key, sizeof key) != 1) ThrowTls(Errc::kIo, "RAND_bytes");
  std::string text;
  static const char* kHex = "0123456789abcdef";
  for (unsigned char b : key) {
    text.push_back(kHex[b >> 4]);
    text.push_back(kHex[b & 15]);
  }
  text.push_back('\n');
  OPENSSL_cleanse(key, sizeof key);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0 && errno == EEXIST) Throw(Errc::kExists, "key file " + path + " exists; not overwritten");
  if (fd < 0) ThrowErrno("create " + path);
  UniqueFd file(fd);
  try {
    if (::fchmod(file.get(), 0600) != 0) ThrowErrno("chmod " + path);  // whatever the umask
    WriteAll(file.get(), text.data(), text.size(), path);
    Fsync(file.get(), path);
  } catch (...) {
    ::unlink(path.c_str());
    throw;
  }
  OPENSSL_cleanse(text.data(), text.size());
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1)
    ThrowTls(Errc::kIo, "SHA-256 init");
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256::Update(const void* data, size_t size) {
  if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size) != 1) ThrowTls(Errc::kIo, "SHA-256");
}

Sha256Digest Sha256::Final() {
  Sha256Digest out;
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), out.data(), &n) != 1 || n != out.size())
    ThrowTls(Errc::kIo, "SHA-256");
  return out;
}

Sha256Digest Sha256OfFile(int fd, const std::string& shown) {
  Sha256 sha;
  ReadWholeFile(fd, shown, [&](const char* data, size_t n) { sha.Update(data, n); });
  return sha.Final();
}

// --- TLS contexts ------------------------------------------------------------------------------

// Delegating to the default constructor first makes the object complete before Load runs, so a
// failure after the key is read (SSL_CTX_new, the cipher suites) still runs the destructor: the
// key is wiped and the context freed, as on every other way out.
TlsContext::TlsContext(const Credentials& c, Side side) : TlsContext() { Load(c, side); }

void TlsContext::Load(const Credentials& c, Side side) {
  bool certs = !c.cert_file.empty() || !c.cert_key_file.empty() || !c.ca_file.empty();
  int kinds = int(!c.key_file.empty()) + int(certs) + int(c.insecure);
  if (kinds == 0)
    Throw(Errc::kInvalidArgument, "no credentials: give --key FILE, or --cert, --cert-key and --ca, or --insecure");
  if (kinds > 1)
    Throw(Errc::kInvalidArgument, "give only one of --key, the certificate options, or --insecure");
  if (c.insecure) return;
  if (certs && (c.cert_file.empty() || c.cert_key_file.empty() || c.ca_file.empty()))
    Throw(Errc::kInvalidArgument, "mutual certificates need all of --cert, --cert-key and --ca");
  if (!certs) key_ = ReadKeyFile(c.key_file);

  ERR_clear_error();
  ctx_ = SSL_CTX_new(side == Side::kClient ? TLS_client_method() : TLS_server_method());
  if (!ctx_) ThrowTls(Errc::kIo, "SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx_, 0);  // nothing but frames after the handshake
  if (!certs) {
    psk_ = true;
    SSL_CTX_set_app_data(ctx_, &key_);
    // The PSK session names this suite; offering only it keeps both sides on the key's hash.
    if (SSL_CTX_set_ciphersuites(ctx_, "TLS_AES_256_GCM_SHA384") != 1) ThrowTls(Errc::kIo, "TLS ciphersuites");
    if (side == Side::kClient) {
      SSL_CTX_set_psk_use_session_callback(ctx_, PskUseSession);
      // No trusted CA: a server that offers a certificate instead of the key is refused.
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    } else {
      SSL_CTX_set_psk_find_session_callback(ctx_, PskFindSession);
    }
    return;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx_, c.cert_file.c_str()) != 1)
    ThrowTls(Errc::kInvalidArgument, "certificate " + c.cert_file);
  UseCertificateKey(ctx_, c.cert_key_file);
  if (SSL_CTX_check_private_key(ctx_) != 1)
    ThrowTls(Errc::kInvalidArgument, "private key " + c.cert_key_file + " does not match " + c.cert_file);
  if (SSL_CTX_load_verify_locations(ctx_, c.ca_file.c_str(), nullptr) != 1)
    ThrowTls(Errc::kInvalidArgument, "CA file " + c.ca_file);
  if (side == Side::kServer) {
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(c.ca_file.c_str())) SSL_CTX_set_client_CA_list(ctx_, names);
  } else {
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  }
}

std::unique_ptr<TlsContext> TlsContext::ForMailServer(const std::string& ca_file) {
  std::unique_ptr<TlsContext> tls(new TlsContext());
  ERR_clear_error();
  tls->ctx_ = SSL_CTX_new(TLS_client_method());
  if (!tls->ctx_) ThrowTls(Errc::kIo, "SSL_CTX_new");
  SSL_CTX_set_min_proto_version(tls->ctx_, TLS1_2_VERSION);
  SSL_CTX_set_options(tls->ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF);
  const int loaded = ca_file.empty() ? SSL_CTX_set_default_verify_paths(tls->ctx_)
                                     : SSL_CTX_load_verify_locations(tls->ctx_, ca_file.c_str(), nullptr);
  if (loaded != 1) ThrowTls(Errc::kInvalidArgument, ca_file.empty() ? "the system's trusted CAs" : "CA file " + ca_file);
  SSL_CTX_set_verify(tls->ctx_, SSL_VERIFY_PEER, nullptr);
  tls->mail_server_ = true;
  return tls;
}

TlsContext::~TlsContext() {
  SSL_CTX_free(ctx_);
  OPENSSL_cleanse(key_.data(), key_.size());
}

std::string TlsContext::Describe() const {
  if (!ctx_) return "plain TCP (--insecure)";
  if (mail_server_) return "TLS, server certificate verified";
  return psk_ ? "TLS 1.3, pre-shared key" : "TLS 1.3, mutual certificates";
}

// --- sockets -------------------------------------------------------------------------------------

namespace {

struct AddrInfo {
  addrinfo* list = nullptr;
  ~AddrInfo() {
    if (list) ::freeaddrinfo(list);
  }
};

void Resolve(const Endpoint& e, bool passive, AddrInfo* out) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  int rc = ::getaddrinfo(e.host.c_str(), std::to_string(e.port).c_str(), &hints, &out->list);
  if (rc != 0) Throw(Errc::kNotFound, "resolve " + e.host + ": " + ::gai_strerror(rc));
}

Endpoint AddressOf(const sockaddr* sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  }
  return Endpoint{host, port};
}

std::string AddressName(const sockaddr* sa) { return AddressOf(sa).ToString(); }

}  // namespace

Endpoint EndpointOf(const sockaddr* sa) { return AddressOf(sa); }

std::string PeerName(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return AddressName(reinterpret_cast<sockaddr*>(&ss));
}

std::string PeerAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return AddressOf(reinterpret_cast<sockaddr*>(&ss)).host;
}

std::string SocketBuffers::Describe() const {
  auto mib = [](int bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f MiB", bytes / 1048576.0);
    return std::string(text);
  };
  std::string out = "socket buffers: send " + mib(send) + ", receive " + mib(receive) + " as the kernel counts them";
  if (forced) return out + " (SO_SNDBUFFORCE/SO_RCVBUFFORCE)";
  out += " (SO_SNDBUF/SO_RCVBUF";
  // The kernel doubles what it grants; half of it is what a window can use.
  if (std::min(send, receive) / 2 < kSocketBuffer)
    out += "; capped by net.core.wmem_max/rmem_max, below the " + mib(kSocketBuffer) +
           " a 100 ms x 1 Gbit/s path needs: raise them or run as root";
  return out + ")";
}

void Connection::SetReceiveBuffer(int bytes) {
  std::lock_guard<std::mutex> lock(abort_mutex_);
  if (!fd_.valid()) return;
  if (::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

SocketBuffers SetSocketBuffers(int fd, int bytes) {
  SocketBuffers b;
  // FORCE ignores net.core.*mem_max but needs CAP_NET_ADMIN; without it, the plain options
  // give as much as the limits allow.
  b.forced = ::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) == 0 &&
             ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) == 0;
  if (!b.forced) {
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  }
  socklen_t len = sizeof b.send;
  ::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b.send, &len);
  len = sizeof b.receive;
  ::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b.receive, &len);
  return b;
}

UniqueFd ConnectTcp(const Endpoint& to, int timeout_seconds, const Cancellation* cancel, SocketBuffers* buffers) {
  if (to.port == 0) Throw(Errc::kInvalidArgument, "connect " + to.ToString() + ": port 0");
  AddrInfo ai;
  Resolve(to, false, &ai);
  std::string last = "no address";
  bool timed_out = false;  // the last address's failure is temporary (75): a timeout, as a read's, or a refusal
  for (addrinfo* a = ai.list; a; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol));
    if (!fd.valid()) ThrowErrno("socket");
    SocketBuffers got = SetSocketBuffers(fd.get());  // before the SYN: it fixes the window scale
    if (buffers) *buffers = got;
    int rc = ::connect(fd.get(), a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p[2] = {{fd.get(), POLLOUT, 0}, {cancel ? cancel->fd() : -1, POLLIN, 0}};
      int n;
      do n = ::poll(p, 2, timeout_seconds * 1000);
      while (n < 0 && errno == EINTR);
      if (cancel && cancel->cancelled()) Throw(Errc::kInterrupted, "connect to " + to.ToString() + ": " + cancel->why());
      if (n == 0) {
        last = "timed out after " + std::to_string(timeout_seconds) + " s";
        timed_out = true;
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      // Reset before we looked: the connection was made (a refused SYN is ECONNREFUSED) and the
      // server's host dropped it at once, as a proxy without its backend does. The first read
      // or write says so ("closed the connection"), not "connect" (helper-62: taken for down).
      if (err == ECONNRESET) err = 0;
      rc = err ? -1 : 0;
      errno = err;
    }
    if (rc != 0) {
      last = std::strerror(errno);
      // Nothing listening, or no route there now: the destination is down, which a later try
      // may find up (75, as migrate and moveuser say it; backup --to said 74, helper-78).
      timed_out = errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH || errno == EHOSTDOWN ||
                  errno == ENETDOWN;
      continue;
    }
    int flags = ::fcntl(fd.get(), F_GETFL);
    ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // QUERY round trips
    return fd;
  }
  Throw(timed_out ? Errc::kTempFail : Errc::kIo, "connect to " + to.ToString() + ": " + last);
}

UniqueFd ListenTcp(const Endpoint& at, Endpoint* bound, SocketBuffers* buffers) {
  AddrInfo ai;
  Resolve(at, true, &ai);
  std::string last = "no address";
  for (addrinfo* a = ai.list; a; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd.valid()) ThrowErrno("socket");
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    SocketBuffers got = SetSocketBuffers(fd.get());  // accepted sockets inherit them
    if (buffers) *buffers = got;
    if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd.get(), 64) != 0) {
      last = std::strerror(errno);
      continue;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    *bound = ParseEndpoint(AddressName(reinterpret_cast<sockaddr*>(&ss)));
    return fd;
  }
  Throw(Errc::kIo, "listen on " + at.ToString() + ": " + last);
}

// --- connection ----------------------------------------------------------------------------------

Connection::Connection(UniqueFd fd, std::string peer) : fd_(std::move(fd)), peer_(std::move(peer)) {}

Connection::~Connection() {
  if (ssl_) SSL_free(ssl_);
  std::lock_guard<std::mutex> lock(abort_mutex_);
  fd_.reset();
}

void Connection::SetTimeout(int seconds) {
  timeout_seconds_ = seconds;
  timeval tv{seconds, 0};
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// A TLS call on our blocking socket reports WANT_READ/WANT_WRITE both when the socket's timeout
// (SO_RCVTIMEO/SO_SNDTIMEO) passed, EAGAIN, and when a signal cut its read or write short, EINTR:
// Linux does the latter even without a handler, to a process stopped and continued (Ctrl-Z and
// fg, SIGSTOP and SIGCONT: signal(7)). Only the first is a timeout; the second is called again,
// with the socket's whole timeout, as plain TCP does. Before FailTls, which clears the queue.
void Connection::ThrowTimedOut(const std::string& what) {
  timed_out_ = true;
  Throw(Errc::kTempFail, what);
}

// The pace of TLS reads. The socket's timeout bounds silence only, and OpenSSL hands over a
// record only when it is whole: a peer sending a byte a second kept each SSL_read (and each
// handshake) going for as long as it liked, so moveuser's own pace rule never saw a slow
// response over imaps:// (helper-159: 37 minutes on 2 KB), and a handshake trickled so took
// 240 s with --timeout 5. A record (at most 16 KiB) must come whole within the timeout plus a
// second for every KiB it may hold: each read of the socket gets what is left of that as its
// timeout. Links slower than 1 KiB a second are not links a store can be moved over.
constexpr int kRecordPaceSeconds = 17;

class Connection::RecordPace {
 public:
  explicit RecordPace(Connection& c) : c_(c) {
    c_.read_until_deadline_ = false;
    if (c_.timeout_seconds_ <= 0) return;
    c_.pacing_ = true;
    c_.record_deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(c_.timeout_seconds_ + kRecordPaceSeconds);
  }
  ~RecordPace() {
    c_.pacing_ = false;
    if (c_.timeout_lowered_) {
      c_.timeout_lowered_ = false;
      timeval tv{c_.timeout_seconds_, 0};
      ::setsockopt(c_.fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
  }

 private:
  Connection& c_;
};

bool Connection::BeforeTlsRead() {
  if (!pacing_) return true;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(record_deadline_ - std::chrono::steady_clock::now());
  if (left.count() <= 0) {
    paced_out_ = true;
    errno = EAGAIN;
    return false;
  }
  if (left < std::chrono::seconds(timeout_seconds_)) {
    timeval tv{static_cast<time_t>(left.count() / 1000), static_cast<suseconds_t>(left.count() % 1000 * 1000)};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    timeout_lowered_ = true;
    read_until_deadline_ = true;  // a timeout of this read is the record's pace running out
  }
  return true;
}

long PacedTlsRead(BIO* bio, int oper, const char*, size_t, int, long, int ret, size_t*) {
  if (oper != BIO_CB_READ) return ret;  // before a read of the socket only
  auto* c = static_cast<Connection*>(static_cast<void*>(BIO_get_callback_arg(bio)));
  return c->BeforeTlsRead() ? ret : -1;
}

void Connection::PaceTlsReads() {
  BIO* rbio = SSL_get_rbio(ssl_);
  BIO_set_callback_arg(rbio, reinterpret_cast<char*>(this));
  BIO_set_callback_ex(rbio, PacedTlsRead);
}

bool Connection::TlsInterrupted(int ret) {
  const int saved_errno = errno;
  const int err = SSL_get_error(ssl_, ret);
  return saved_errno == EINTR &&
         (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_SYSCALL);
}

void Connection::FailTls(const char* call, int ret) {
  int err = SSL_get_error(ssl_, ret);
  int saved_errno = errno;
  std::string reasons = OpenSslErrors();
  std::string verify;  // why a certificate was refused (certificate mode, during the handshake)
  if (!authenticated_ && !psk_ && SSL_get_verify_result(ssl_) != X509_V_OK)
    verify = X509_verify_cert_error_string(SSL_get_verify_result(ssl_));
  if (paced_out_ || (read_until_deadline_ && saved_errno == EAGAIN)) {
    paced_out_ = read_until_deadline_ = false;
    trickled_ = true;
    ThrowTimedOut(std::string(call) + " " + peer_ + ": a TLS record did not come whole within " +
                  std::to_string(timeout_seconds_ + kRecordPaceSeconds) + " s (the timeout, " +
                  std::to_string(timeout_seconds_) + " s, and a second for every KiB a record may hold): a link " +
                  "trickling its data, slower than 1 KiB a second");
  }
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ||
      (err == SSL_ERROR_SYSCALL && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK)))
    ThrowTimedOut(std::string(call) + " " + peer_ + ": timed out after " + std::to_string(timeout_seconds_) +
                               " s without progress");
  // A refused key or certificate is announced by an alert (OpenSSL names it in `reasons`). A
  // connection that just ends is the server stopping or killed, or dropping us at its handshake
  // limits: worth a retry, not the end a refused authentication is (migrate gives up on kAuth).
  const bool ended = verify.empty() &&
                     ((err == SSL_ERROR_ZERO_RETURN && reasons.empty()) ||
                      (err == SSL_ERROR_SYSCALL && (saved_errno == 0 || saved_errno == ECONNRESET || saved_errno == EPIPE) &&
                       reasons.empty()) ||
                      reasons == "unexpected eof while reading");
  // With certificates a refusal comes after our handshake, and the reset of a server closing on
  // our unread request may overtake its alert: only the key's refusal (in the handshake, alert
  // first) is told apart.
  if (client_ && psk_ && !authenticated_ && ended)
    Throw(Errc::kTempFail, std::string(call) + " " + peer_ +
                               ": the connection was closed before authentication finished, without a TLS alert (the "
                               "server stopped, or dropped it at its handshake limits; a refused key gets an alert)");
  // An IMAP server checks no certificate of ours: a handshake that just ends is the server (or a
  // proxy before it) going away, which a rerun may get past; moveuser takes kAuth as final.
  const bool no_refusal = verify.empty() && (reasons.empty() || reasons == "unexpected eof while reading");
  if (client_ && mail_server_ && !authenticated_ && (ended || no_refusal))
    Throw(Errc::kTempFail, std::string(call) + " " + peer_ +
                               ": the connection was closed during the TLS handshake, without a TLS alert (the server "
                               "stopped or is overloaded)");
  // A client killed (or stopped) in its handshake is no refused credential: logged as "refused
  // before authentication", not "authentication failed" (helper-132 #5: false alarms).
  if (!client_ && !authenticated_ && ended)
    Throw(Errc::kIo, std::string(call) + " " + peer_ +
                         ": the client closed the connection during the TLS handshake, without a TLS alert (killed "
                         "or stopped)");
  std::string why = !verify.empty() ? "certificate: " + verify
                    : !reasons.empty() ? reasons
                    : err == SSL_ERROR_SYSCALL && saved_errno ? std::strerror(saved_errno)
                                                              : "the peer closed the connection";
  Throw(authenticated_ ? Errc::kIo : Errc::kAuth, std::string(call) + " " + peer_ + ": " + why);
}

void Connection::Connect(const TlsContext& tls, const std::string& host) {
  if (!tls.get()) return;
  psk_ = tls.psk();
  client_ = true;
  mail_server_ = tls.mail_server();
  ERR_clear_error();
  ssl_ = SSL_new(tls.get());
  if (!ssl_ || SSL_set_fd(ssl_, fd_.get()) != 1) ThrowTls(Errc::kIo, "SSL_new");
  if (!tls.psk()) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    int ok = IsIpLiteral(host) ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                               : X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
    if (ok != 1) ThrowTls(Errc::kIo, "TLS host name " + host);
    // Server Name Indication: a mail host serving several names picks the certificate by it.
    if (!IsIpLiteral(host) && SSL_set_tlsext_host_name(ssl_, host.c_str()) != 1) ThrowTls(Errc::kIo, "TLS SNI " + host);
  }
  PaceTlsReads();
  int ret;
  do {
    RecordPace pace(*this);
    ret = SSL_connect(ssl_);
  } while (ret != 1 && TlsInterrupted(ret));
  if (ret != 1) FailTls("TLS handshake with", ret);
  if (tls.psk() && !SSL_session_reused(ssl_))
    Throw(Errc::kAuth, "TLS handshake with " + peer_ + ": the server did not use the pre-shared key");
  // A mail server is authenticated by its certificate, checked in the handshake: what fails later
  // (a reset, a record damaged on the way) is the connection's, which a rerun may get past. It
  // was kAuth, a permanent failure of moveuser's user, and "during the TLS handshake" (helper-99).
  if (mail_server_) authenticated_ = true;
}

// The first byte the client sent, left unread; -1 when it closed first. kTempFail after the timeout.
int Connection::PeekFirstByte() {
  for (;;) {
    uint8_t b;
    ssize_t n = ::recv(fd_.get(), &b, 1, MSG_PEEK);
    if (n == 1) return b;
    if (n == 0) return -1;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      ThrowTimedOut("read from " + peer_ + ": timed out after " + std::to_string(timeout_seconds_) +
                                 " s without data");
    return -1;  // a reset: the handshake's read reports it
  }
}

void Connection::Accept(const TlsContext& tls) {
  // A mismatch of --insecure and TLS gets an answer the other side understands, in its own
  // language, so that it ends with "refused" (exit 77) rather than "closed before READY", which
  // is a server stopping or dropping connections and worth a retry (docs/transport.md §3).
  const int first = PeekFirstByte();
  if (!tls.get()) {
    if (first == 0x16 || first == 0x15) {  // a TLS handshake (or alert) record
      // A fatal protocol_version alert, as a TLS server without a common version sends.
      static constexpr uint8_t kAlert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70};
      try {
        WriteAll(kAlert, sizeof kAlert);
      } catch (const Error&) {
      }
      Throw(Errc::kAuth, peer_ + " speaks TLS, but this side runs --insecure (plain TCP); give both sides the same "
                                 "--key or certificates");
    }
    return;
  }
  if (first == uint8_t(FrameType::kRequest)) {  // a plain REQUEST: a client running --insecure
    try {
      WriteErrorFrame(*this, Errc::kAuth,
                      "this server requires TLS (--key or certificates); the client connected with --insecure");
    } catch (const Error&) {
    }
    Throw(Errc::kAuth, "TLS handshake with " + peer_ + ": not a TLS client: it sent a plain REQUEST (one running "
                                                         "--insecure?)");
  }
  psk_ = tls.psk();
  ERR_clear_error();
  ssl_ = SSL_new(tls.get());
  if (!ssl_ || SSL_set_fd(ssl_, fd_.get()) != 1) ThrowTls(Errc::kIo, "SSL_new");
  PaceTlsReads();
  int ret;
  do {
    RecordPace pace(*this);
    ret = SSL_accept(ssl_);
  } while (ret != 1 && TlsInterrupted(ret));
  if (ret != 1) {
    try {
      FailTls("TLS handshake with", ret);
    } catch (const Error& e) {
      std::string what = e.what();
      if (what.find("wrong version number") != std::string::npos || what.find("http request") != std::string::npos)
        what += " (not a TLS client: one running --insecure?)";
      Throw(e.code(), what);
    }
  }
  if (tls.psk() && !SSL_session_reused(ssl_))
    Throw(Errc::kAuth, "TLS handshake with " + peer_ + ": the client did not use the pre-shared key");
}

size_t Connection::ReadRaw(void* data, size_t size) {
  while (ssl_) {
    ERR_clear_error();
    RecordPace pace(*this);
    int ret = SSL_read(ssl_, data, int(std::min<size_t>(size, 1 << 30)));
    if (ret > 0) return size_t(ret);
    if (TlsInterrupted(ret)) continue;
    if (SSL_get_error(ssl_, ret) == SSL_ERROR_ZERO_RETURN) return 0;
    FailTls("read from", ret);
  }
  for (;;) {
    ssize_t n = ::recv(fd_.get(), data, size, 0);
    if (n >= 0) return size_t(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      ThrowTimedOut("read from " + peer_ + ": timed out after " + std::to_string(timeout_seconds_) +
                                 " s without data");
    ThrowErrno("read from " + peer_);
  }
}

void Connection::WatchTrickle(StallPolicy policy) {
  trickle_policy_ = std::move(policy);
  trickle_ = TrickleWatch();
  waited_unread_ = {};
}

size_t Connection::Read(void* data, size_t size) {
  if (size == 0) return 0;
  if (in_pos_ == in_.size()) {
    const bool watched = trickle_policy_.active();
    const auto start = watched ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    in_.resize(kReadAhead);
    size_t n = ReadRaw(in_.data(), in_.size());
    in_.resize(n);
    in_pos_ = 0;
    if (n == 0) return 0;
    bytes_in_ += n;
    if (watched) {
      trickle_.Read(bytes_in_, std::exchange(waited_unread_, {}) + (std::chrono::steady_clock::now() - start), peer_,
                    trickle_policy_);
    }
  }
  size_t n = std::min(size, in_.size() - in_pos_);
  std::memcpy(data, in_.data() + in_pos_, n);
  in_pos_ += n;
  return n;
}

void Connection::ReadExact(void* data, size_t size, const char* what) {
  for (size_t got = 0; got < size;) {
    size_t n = Read(static_cast<char*>(data) + got, size - got);
    // After authentication a close is the connection's end (the peer stopped, was killed, or
    // cut off a session), as a reset is: an I/O failure (exit 74), not a broken protocol.
    if (n == 0)
      Throw(authenticated_ ? Errc::kIo : Errc::kAuth,
            peer_ + " closed the connection " + (got ? "inside " : "before ") + what);
    got += n;
  }
}

void Connection::WriteAll(const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    size_t n;
    if (ssl_) {
      ERR_clear_error();
      int ret = SSL_write(ssl_, p, int(std::min<size_t>(size, 1 << 30)));
      if (ret <= 0 && TlsInterrupted(ret)) continue;  // the same buffer and length, as OpenSSL asks
      if (ret <= 0) FailTls("write to", ret);
      n = size_t(ret);
    } else {
      ssize_t w = ::send(fd_.get(), p, size, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        ThrowTimedOut("write to " + peer_ + ": timed out after " + std::to_string(timeout_seconds_) +
                                   " s (the peer does not read)");
      if (w < 0) ThrowErrno("write to " + peer_);
      n = size_t(w);
    }
    p += n;
    size -= n;
    bytes_out_ += n;
  }
}

bool Connection::Readable() {
  if (in_pos_ < in_.size() || (ssl_ && SSL_pending(ssl_) > 0)) return true;
  pollfd p{fd_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

bool Connection::PeerClosed() {
  pollfd p{fd_.get(), POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

bool Connection::WaitReadable(int wake_fd) {
  if (in_pos_ < in_.size() || (ssl_ && SSL_pending(ssl_) > 0)) return true;
  pollfd p[2] = {{fd_.get(), POLLIN, 0}, {wake_fd, POLLIN, 0}};
  // The wait before the next frame is the next read's wait too (WatchTrickle).
  struct Counted {
    Connection& conn;
    const std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    ~Counted() {
      if (conn.trickle_policy_.active()) conn.waited_unread_ += std::chrono::steady_clock::now() - start;
    }
  } counted{*this};
  for (;;) {
    int n = ::poll(p, 2, timeout_seconds_ * 1000);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowErrno("poll " + peer_);
    if (n == 0)
      ThrowTimedOut("read from " + peer_ + ": timed out after " + std::to_string(timeout_seconds_) +
                                 " s without data");
    return p[1].revents == 0;  // a close or error on the socket is for the read to report
  }
}

void Connection::Close(int drain_seconds) {
  if (!fd_.valid()) return;
  if (ssl_) {
    ERR_clear_error();
    SSL_shutdown(ssl_);  // our close_notify; the peer's is not awaited
    ERR_clear_error();
  }
  ::shutdown(fd_.get(), SHUT_WR);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(drain_seconds);
  char sink[16384];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, int(left)) <= 0) break;
    ssize_t n = ::recv(fd_.get(), sink, sizeof sink, MSG_DONTWAIT);
    if (n <= 0 && !(n < 0 && errno == EINTR)) break;
  }
  std::lock_guard<std::mutex> lock(abort_mutex_);
  if (ssl_) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  fd_.reset();
}

void Connection::Abort(bool discard_unsent) {
  std::lock_guard<std::mutex> lock(abort_mutex_);
  aborted_ = true;
  if (!fd_.valid()) return;
  if (discard_unsent) {
    const linger reset{1, 0};
    (void)::setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  }
  ::shutdown(fd_.get(), SHUT_RDWR);
}

// --- frames --------------------------------------------------------------------------------------

const char* FrameName(FrameType type) {
  switch (type) {
    case FrameType::kRequest: return "REQUEST";
    case FrameType::kReady: return "READY";
    case FrameType::kData: return "DATA";
    case FrameType::kDataEnd: return "DATA-END";
    case FrameType::kQuery: return "QUERY";
    case FrameType::kAnswer: return "ANSWER";
    case FrameType::kResult: return "RESULT";
    case FrameType::kError: return "ERROR";
    case FrameType::kProgress: return "PROGRESS";
  }
  return nullptr;
}

uint32_t MaxFramePayload(FrameType type) {
  switch (type) {
    case FrameType::kRequest:
    case FrameType::kResult: return uint32_t{16} << 20;
    case FrameType::kData: return uint32_t(kMaxDataFrame);
    case FrameType::kDataEnd:
    case FrameType::kProgress: return 0;
    case FrameType::kQuery: return uint32_t{64} << 10;
    case FrameType::kReady:
    case FrameType::kAnswer:
    case FrameType::kError: return uint32_t{4} << 10;
  }
  return 0;
}

void WriteFrame(Connection& conn, FrameType type, std::string_view payload) {
  if (payload.size() > MaxFramePayload(type))
    Throw(Errc::kInvalidArgument, std::string(FrameName(type)) + " frame of " + std::to_string(payload.size()) +
                                      " bytes over its limit");
  std::string frame;
  frame.reserve(5 + payload.size());
  AppendU8(&frame, uint8_t(type));
  AppendU32(&frame, uint32_t(payload.size()));
  frame.append(payload);
  conn.WriteAll(frame.data(), frame.size());
}

namespace {

// The rest of a frame header whose type byte has been read.
FrameHeader ReadHeaderAfter(Connection& conn, uint8_t type) {
  uint8_t head[5] = {type};
  if (!conn.tls() && (head[0] == 0x15 || head[0] == 0x16))  // TLS alert / handshake record
    Throw(Errc::kAuth, conn.peer() + " speaks TLS, but this side runs --insecure (plain TCP); give both sides "
                                     "the same --key or certificates");
  FrameHeader h{FrameType(head[0]), 0};
  const char* name = FrameName(h.type);
  if (!name) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", head[0]);
    // A text protocol's first byte ("* OK" of IMAP, "220" of SMTP, "SSH-"): the port is another
    // server's (helper-72: backup --to an IMAP port said only "unknown frame type 0x2a").
    const bool text = head[0] >= 0x20 && head[0] < 0x7f;
    Throw(Errc::kProtocol, conn.peer() + " sent an unknown frame type " + hex +
                               (text ? std::string(" ('") + char(head[0]) +
                                           "', text: another protocol's server or client, not storemove's)"
                                     : std::string()));
  }
  conn.ReadExact(head + 1, 4, "a frame header");
  h.length = GetU32(head + 1);
  if (h.length > MaxFramePayload(h.type))
    Throw(Errc::kProtocol, conn.peer() + " sent a " + name + " frame of " + std::to_string(h.length) +
                               " bytes, over its limit of " + std::to_string(MaxFramePayload(h.type)));
  return h;
}

}  // namespace

FrameHeader ReadFrameHeader(Connection& conn) {
  uint8_t type;
  conn.ReadExact(&type, 1, "a frame");
  return ReadHeaderAfter(conn, type);
}

Frame ReadFramePayload(Connection& conn, const FrameHeader& header) {
  Frame f{header.type, {}};
  // Grows with what arrives, so a declared length costs nothing until the bytes are there.
  while (f.payload.size() < header.length) {
    size_t old = f.payload.size();
    size_t step = std::min<size_t>(header.length - old, kReadAhead);
    f.payload.resize(old + step);
    conn.ReadExact(f.payload.data() + old, step, FrameName(header.type));
  }
  // Grown by doubling, up to twice the frame: a REQUEST waiting for the large-request turn
  // (net_server.cc) keeps only its bytes.
  if (f.payload.capacity() > f.payload.size() + f.payload.size() / 8) f.payload.shrink_to_fit();
  return f;
}

Frame ReadFrame(Connection& conn) { return ReadFramePayload(conn, ReadFrameHeader(conn)); }

std::optional<Frame> ReadFrameOrEnd(Connection& conn) {
  std::optional<FrameHeader> header = ReadFrameHeaderOrEnd(conn);
  if (!header) return std::nullopt;
  return ReadFramePayload(conn, *header);
}

std::optional<FrameHeader> ReadFrameHeaderOrEnd(Connection& conn) {
  uint8_t type;
  if (conn.Read(&type, 1) == 0) return std::nullopt;
  return ReadHeaderAfter(conn, type);
}

nlohmann::json ParseFrameJson(std::string_view text, const std::string& what, const FrameJsonSinks& sinks) {
  using Event = nlohmann::json::parse_event_t;
  const size_t max_values = 1024 + text.size() / 8;
  size_t values = 0;
  bool statuses_key = false, in_statuses = false;
  auto bound = [&](int depth, Event event, nlohmann::json& parsed) {
    if (event == Event::object_start || event == Event::array_start || event == Event::value) {
      if (depth > kMaxFrameJsonDepth)
        Throw(Errc::kProtocol, what + ": JSON nested deeper than " + std::to_string(kMaxFrameJsonDepth) + " levels");
      if (++values > max_values)
        Throw(Errc::kProtocol, what + ": JSON with over " + std::to_string(max_values) + " values in " +
                                   std::to_string(text.size()) + " bytes");
      if (values % 4096 == 0 && sinks.cancelled && sinks.cancelled())
        Throw(Errc::kTempFail, what + ": not read to its end: the server is stopping");
    }
    if (!sinks.statuses) return true;
    if (depth == 1) {
      if (event == Event::key) {
        statuses_key = parsed.is_string() && parsed.get_ref<const std::string&>() == "statuses";
      } else if (event == Event::array_start) {
        in_statuses = statuses_key;
      } else if (event == Event::array_end) {
        in_statuses = false;
      }
    } else if (in_statuses && depth == 2) {
      if (event == Event::value || event == Event::array_start)
        Throw(Errc::kProtocol, what + ": an element of \"statuses\" is not an object");
      if (event == Event::object_end) {
        auto user = parsed.find("user"), status = parsed.find("status");
        if (user == parsed.end() || status == parsed.end() || !user->is_string() || !status->is_string())
          Throw(Errc::kProtocol, what + ": an element of \"statuses\" lacks the strings \"user\" and \"status\"");
        sinks.statuses->emplace_back(std::move(user->get_ref<std::string&>()), std::move(status->get_ref<std::string&>()));
        return false;  // kept out of the tree
      }
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text, bound);
  } catch (const nlohmann::json::exception& e) {
    Throw(Errc::kProtocol, what + ": " + e.what());
  }
}

void WriteErrorFrame(Connection& conn, Errc code, const std::string& message) {
  std::string payload(1, char(uint8_t(code)));
  std::string line = message.substr(0, MaxFramePayload(FrameType::kError) - 1);
  for (char& c : line)
    if (c == '\n' || c == '\r') c = ' ';
  WriteFrame(conn, FrameType::kError, payload + line);
}

Errc ErrcFromWire(uint64_t code) { return code <= uint64_t(Errc::kInterrupted) ? Errc(code) : Errc::kProtocol; }

void ThrowErrorFrame(const Frame& frame, const std::string& from) {
  Errc errc = ErrcFromWire(frame.payload.empty() ? 0xff : uint8_t(frame.payload[0]));
  std::string text = frame.payload.size() > 1 ? frame.payload.substr(1) : "unspecified error";
  // The peer's text becomes our one-line error: no line breaks or terminal controls from it.
  for (char& c : text)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    else if (uint8_t(c) < 0x20 || c == 0x7f) c = '?';
  Throw(errc, from + ": " + text);
}

void Unexpected(const Frame& frame, const char* expected, const std::string& from) {
  if (frame.type == FrameType::kError) ThrowErrorFrame(frame, from);
  Throw(Errc::kProtocol, from + " sent " + FrameName(frame.type) + " where " + expected + " was expected");
}

std::string EncodeQuery(const Query& q) {
  std::string out;
  AppendU16(&out, uint16_t(q.user.size()));
  out += q.user;
  AppendU16(&out, uint16_t(q.partition.size()));
  out += q.partition;
  AppendU32(&out, uint32_t(q.contents.size()));
  for (const auto& [digest, size] : q.contents) {
    out.append(reinterpret_cast<const char*>(digest.bytes.data()), digest.bytes.size());
    AppendU64(&out, size);
  }
  return out;
}

Query DecodeQuery(std::string_view p) {
  Query q;
  size_t pos = 0;
  auto need = [&](size_t n, const char* field) {
    if (p.size() - pos < n) Throw(Errc::kProtocol, std::string("QUERY frame ends inside ") + field);
  };
  auto name = [&](const char* field, std::string* out) {
    need(2, field);
    uint16_t len = GetU16(reinterpret_cast<const uint8_t*>(p.data() + pos));
    pos += 2;
    if (len > format::kMaxNameBytes) Throw(Errc::kProtocol, std::string("QUERY frame: ") + field + " too long");
    need(len, field);
    out->assign(p.substr(pos, len));
    pos += len;
  };
  name("user", &q.user);
  name("partition", &q.partition);
  need(4, "count");
  uint32_t count = GetU32(reinterpret_cast<const uint8_t*>(p.data() + pos));
  pos += 4;
  if (count > kMaxOracleBatch || p.size() - pos != size_t(count) * 24)
    Throw(Errc::kProtocol, "QUERY frame: " + std::to_string(count) + " entries do not fit its " +
                               std::to_string(p.size() - pos) + " bytes (at most " + std::to_string(kMaxOracleBatch) + ")");
  q.contents.resize(count);
  for (auto& [digest, size] : q.contents) {
    std::memcpy(digest.bytes.data(), p.data() + pos, 16);
    size = GetU64(reinterpret_cast<const uint8_t*>(p.data() + pos + 16));
    pos += 24;
  }
  return q;
}

std::string EncodeAnswer(const std::vector<bool>& have) {
  std::string out;
  AppendU32(&out, uint32_t(have.size()));
  out.append((have.size() + 7) / 8, '\0');
  for (size_t i = 0; i < have.size(); ++i)
    if (have[i]) out[4 + i / 8] = char(uint8_t(out[4 + i / 8]) | (1u << (i % 8)));
  return out;
}

std::vector<bool> DecodeAnswer(std::string_view p, size_t expected) {
  if (p.size() < 4 || GetU32(reinterpret_cast<const uint8_t*>(p.data())) != expected ||
      p.size() != 4 + (expected + 7) / 8)
    Throw(Errc::kProtocol, "ANSWER frame does not answer the " + std::to_string(expected) + " contents asked");
  std::vector<bool> have(expected);
  for (size_t i = 0; i < expected; ++i) have[i] = uint8_t(p[4 + i / 8]) >> (i % 8) & 1;
  return have;
}

// --- pipelined QUERYs ----------------------------------------------------------------------------

QueryPipeline::QueryPipeline(Connection& conn, std::string from, size_t max_outstanding)
    : conn_(conn), from_(std::move(from)), max_outstanding_(std::max<size_t>(1, max_outstanding)) {}

uint64_t QueryPipeline::Ask(const std::string& user, const std::string& partition,
                            const std::vector<std::pair<Digest, uint64_t>>& contents) {
  // The bound keeps the ANSWERs waiting in our receive buffer small, so the server never blocks
  // writing one while we block writing DATA to it.
  while (pending_.size() >= max_outstanding_) ReadOne();
  WriteFrame(conn_, FrameType::kQuery, EncodeQuery({user, partition, contents}));
  uint64_t ticket = next_ticket_++;
  pending_.emplace_back(ticket, contents.size());
  return ticket;
}

std::vector<bool> QueryPipeline::Answer(uint64_t ticket) {
  for (;;) {
    auto it = answered_.find(ticket);
    if (it != answered_.end()) {
      std::vector<bool> have = std::move(it->second);
      answered_.erase(it);
      return have;
    }
    if (pending_.empty() || ticket < pending_.front().first)
      Throw(Errc::kInvalidArgument, "QUERY ticket " + std::to_string(ticket) + " is not waiting for an answer");
    ReadOne();
  }
}

bool QueryPipeline::Take(const Frame& frame) {
  if (frame.type != FrameType::kAnswer) return false;
  if (pending_.empty()) Throw(Errc::kProtocol, from_ + " sent an ANSWER when no QUERY was waiting for one");
  auto [ticket, asked] = pending_.front();
  answered_[ticket] = DecodeAnswer(frame.payload, asked);
  pending_.pop_front();
  return true;
}

void QueryPipeline::ReadOne() {
  Frame f = ReadFrame(conn_);
  if (!Take(f)) Unexpected(f, "ANSWER", from_);
}

std::string ReportToJson(const SessionReport& r) {
  nlohmann::json j = {{"users", r.users},         {"folders", r.folders},       {"messages", r.messages},
                      {"links", r.links},         {"held", r.held},             {"message_bytes", r.message_bytes},
                      {"body_bytes", r.body_bytes}, {"stream_bytes", r.stream_bytes}, {"skipped", r.skipped},
                      {"linked", r.linked},       {"expunged", r.expunged},     {"errors", r.errors},
                      {"error_lines", r.error_lines}, {"seconds", r.seconds},
                      {"metas", r.metas},         {"unsettled", r.unsettled},
                      {"flags_updated", r.flags_updated}, {"notes", r.notes}};
  // The first error's kind, coded as in ERROR frames, so that the client exits as a local restore
  // would (a gap in a dated chain: 66); clients before 2026-12-05 ignore it and exit 65.
  if (r.first_error) j["first_error"] = uint8_t(*r.first_error);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

SessionReport ReportFromJson(std::string_view text) {
  SessionReport r;
  try {
    nlohmann::json j = ParseFrameJson(text, "RESULT frame");
    auto u64 = [&](const char* k) { return j.at(k).get<uint64_t>(); };
    r.users = u64("users");
    r.folders = u64("folders");
    r.messages = u64("messages");
    r.links = u64("links");
    r.held = u64("held");
    r.message_bytes = u64("message_bytes");
    r.body_bytes = u64("body_bytes");
    r.stream_bytes = u64("stream_bytes");
    r.skipped = u64("skipped");
    r.linked = u64("linked");
    r.expunged = u64("expunged");
    r.errors = u64("errors");
    r.error_lines = j.at("error_lines").get<std::vector<std::string>>();
    r.seconds = j.at("seconds").get<double>();
    r.metas = j.value("metas", uint64_t{0});
    r.flags_updated = j.value("flags_updated", uint64_t{0});  // servers before 2026-12-05 do not say
    r.unsettled = j.value("unsettled", std::vector<std::string>{});
    r.notes = j.value("notes", std::vector<std::string>{});
    if (r.errors) r.first_error = ErrcFromWire(j.value("first_error", uint64_t(Errc::kCorrupt)));
  } catch (const nlohmann::json::exception& e) {
    Throw(Errc::kProtocol, std::string("RESULT frame: ") + e.what());
  }
  return r;
}

}  // namespace storemove::stream::net
