// Blocking POP3 client transport over POSIX sockets and OpenSSL.
//
// The socket is non-blocking from the start; every operation waits with
// poll() against a deadline of `timeout` from the start of that call, so a
// silent or slow peer costs at most one timeout per call. TLS runs directly on
// the socket (no BIO pair); OpenSSL's WANT_READ / WANT_WRITE become polls.
#include "client/transport.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <string>

#include "common/limits.hpp"

namespace apop::client {
namespace {

using Clock = std::chrono::steady_clock;

std::string ssl_error_text() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

std::string name_text(const X509_NAME* name) {
  if (name == nullptr) return {};
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr) return {};
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string out(data != nullptr && n > 0 ? std::string(data, static_cast<std::size_t>(n)) : "");
  BIO_free(bio);
  return out;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

int remaining_ms(Clock::time_point deadline) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 0x7fffffff ? 0x7fffffff : static_cast<int>(left);
}

// ConnectOptions::stop: a wait's deadline, moved to at most kFetchStopGrace
// after the stop was first seen, and the longest single poll before the
// flag is looked at again.
class StopWatch {
 public:
  explicit StopWatch(const std::atomic<bool>* stop) : stop_(stop) {}
  Clock::time_point deadline(Clock::time_point d) {
    if (stop_ == nullptr || !stop_->load(std::memory_order_relaxed)) return d;
    if (!stopping_) {
      stopping_ = true;
      seen_ = Clock::now();
    }
    return std::min(d, seen_ + limits::kFetchStopGrace);
  }
  int slice(int ms) const {
    if (stop_ == nullptr) return ms;
    return std::min(ms, static_cast<int>(limits::kFetchStopCheck.count()));
  }

 private:
  const std::atomic<bool>* stop_;
  // Not a std::optional: g++ 12 -O2 then warns that it may be read
  // uninitialized (-Wmaybe-uninitialized), which breaks the release build.
  bool stopping_ = false;
  Clock::time_point seen_{};
};

class SocketTransport final : public Transport {
 public:
  SocketTransport(int fd, std::chrono::seconds timeout, std::string host,
                  const std::atomic<bool>* stop)
      : fd_(fd), timeout_(timeout), host_(std::move(host)), stop_(stop) {}
  ~SocketTransport() override {
    if (ssl_ != nullptr) {
      // Best effort close_notify; never wait for the peer's.
      SSL_set_quiet_shutdown(ssl_, 0);
      (void)SSL_shutdown(ssl_);
      SSL_free(ssl_);
    }
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }
  SocketTransport(const SocketTransport&) = delete;
  SocketTransport& operator=(const SocketTransport&) = delete;

  Result<void> write(std::string_view data) override {
    if (broken_) return fail(NetFailure::io, "connection unusable after an earlier error");
    auto deadline = Clock::now() + timeout_;
    std::size_t off = 0;
    while (off < data.size()) {
      std::size_t chunk = data.size() - off;
      if (ssl_ != nullptr) {
        if (chunk > 0x7fffffff) chunk = 0x7fffffff;
        ERR_clear_error();
        int n = SSL_write(ssl_, data.data() + off, static_cast<int>(chunk));
        if (n > 0) {
          off += static_cast<std::size_t>(n);
          continue;
        }
        int err = SSL_get_error(ssl_, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          if (auto w = wait(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline); !w) return w;
          continue;
        }
        return fail(err == SSL_ERROR_ZERO_RETURN ? NetFailure::closed : NetFailure::io,
                    "TLS write failed: " + ssl_error_text());
      }
      ssize_t n = ::send(fd_, data.data() + off, chunk, MSG_NOSIGNAL);
      if (n >= 0) {
        off += static_cast<std::size_t>(n);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (auto w = wait(POLLOUT, deadline); !w) return w;
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET)
        return fail(NetFailure::closed, "connection closed by the server");
      return fail(NetFailure::io, std::string("send: ") + std::strerror(errno));
    }
    last_ = NetFailure::none;
    return {};
  }

  Result<std::string> read_line(std::size_t max) override {
    if (broken_) return fail(NetFailure::io, "connection unusable after an earlier error");
    auto deadline = Clock::now() + timeout_;
    std::size_t scanned = pos_;
    for (;;) {
      std::size_t nl = buf_.find('\n', scanned);
      if (nl != std::string::npos) {
        std::size_t end = nl;
        if (end > pos_ && buf_[end - 1] == '\r') --end;
        if (end - pos_ > max) return overlong(max);
        std::string line = buf_.substr(pos_, end - pos_);
        pos_ = nl + 1;
        compact();
        last_ = NetFailure::none;
        return line;
      }
      // No LF yet: a line longer than max (plus a CR) can never become valid.
      if (buf_.size() - pos_ > max + 1) return overlong(max);
      scanned = buf_.size();
      auto got = fill(deadline);
      if (!got) return got.error();
    }
  }

  std::size_t buffered() const override { return buf_.size() - pos_; }

  Result<void> start_tls(const TlsOptions& opts) override {
    if (ssl_ != nullptr)
      return fail(NetFailure::tls_handshake, "TLS is already active", Errc::invalid);
    if (buffered() != 0) {
      return fail(NetFailure::tls_handshake,
                  "the server sent data after its STLS reply (STLS response injection)",
                  Errc::invalid);
    }
    // Anything already waiting on the socket before our ClientHello is also
    // injected plaintext: the server must not speak first in TLS.
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & POLLIN) != 0) {
      char c;
      if (::recv(fd_, &c, 1, MSG_PEEK) == 1) {
        return fail(NetFailure::tls_handshake,
                    "the server sent data after its STLS reply (STLS response injection)",
                    Errc::invalid);
      }
    }
    return handshake(opts);
  }

  const TlsInfo& tls() const override { return tls_; }
  NetFailure last_failure() const override { return last_; }

  Result<void> handshake(const TlsOptions& opts) {
    auto deadline = Clock::now() + timeout_;
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (ctx_ == nullptr) return fail(NetFailure::tls_handshake, "TLS context: " + ssl_error_text());
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    // Verification runs in every mode (VERIFY_NONE still records the result);
    // the decision is taken after the handshake, so probe can report details.
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
    if (!opts.ca_file.empty()) {
      if (SSL_CTX_load_verify_locations(ctx_, opts.ca_file.c_str(), nullptr) != 1) {
        return fail(NetFailure::tls_verify,
                    "cannot load CA file " + opts.ca_file + ": " + ssl_error_text());
      }
    } else if (SSL_CTX_set_default_verify_paths(ctx_) != 1) {
      return fail(NetFailure::tls_verify, "cannot load the system CA store: " + ssl_error_text());
    }
    ssl_ = SSL_new(ctx_);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) {
      return fail(NetFailure::tls_handshake, "TLS session: " + ssl_error_text());
    }
    std::string name = opts.server_name.empty() ? host_ : opts.server_name;
    if (!name.empty() && !is_ip_literal(name)) {
      SSL_set_tlsext_host_name(ssl_, name.c_str());  // SNI is never an IP address (RFC 6066 §3)
    }
    for (;;) {
      ERR_clear_error();
      int r = SSL_connect(ssl_);
      if (r == 1) break;
      int err = SSL_get_error(ssl_, r);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        if (auto w = wait(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline); !w) {
          if (last_ == NetFailure::timeout) return w;
          return fail(NetFailure::tls_handshake, "TLS handshake: " + w.error().message);
        }
        continue;
      }
      std::string why = err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
                            ? std::string("connection closed during the handshake")
                            : ssl_error_text();
      return fail(NetFailure::tls_handshake, "TLS handshake failed: " + why);
    }
    tls_.active = true;
    tls_.protocol = SSL_get_version(ssl_);
    tls_.cipher = SSL_get_cipher_name(ssl_);
    X509* cert = SSL_get1_peer_certificate(ssl_);
    if (cert == nullptr) {
      tls_.verify_error = "no server certificate";
    } else {
      tls_.subject = name_text(X509_get_subject_name(cert));
      tls_.issuer = name_text(X509_get_issuer_name(cert));
      struct tm tm {};
      if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1) tls_.not_after = timegm(&tm);
      long vr = SSL_get_verify_result(ssl_);
      tls_.verified = vr == X509_V_OK;
      if (!tls_.verified) tls_.verify_error = X509_verify_cert_error_string(vr);
      tls_.hostname_match = certificate_names_host(cert, name);
      if (tls_.verified && !tls_.hostname_match) {
        tls_.verify_error = "certificate does not match host name " + name;
      }
      X509_free(cert);
    }
    if (!opts.insecure && !(tls_.verified && tls_.hostname_match)) {
      return fail(NetFailure::tls_verify,
                  "TLS certificate rejected: " + tls_.verify_error +
                      " (use --ca-file, or --insecure to skip verification)");
    }
    last_ = NetFailure::none;
    return {};
  }

 private:
  Error fail(NetFailure why, std::string message, Errc code = Errc::temporary) {
    last_ = why;
    broken_ = true;  // partial TLS records / lines: never reuse after a failure
    return make_error(code, std::move(message));
  }

  Error overlong(std::size_t max) {
    return fail(NetFailure::overlong, "server line longer than " + std::to_string(max) + " octets",
                Errc::invalid);
  }

  void compact() {
    if (pos_ == buf_.size()) {
      buf_.clear();
      pos_ = 0;
    } else if (pos_ > 64 * 1024 && pos_ > buf_.size() / 2) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
  }

  // Waits until the socket is ready for `events` or the deadline passes.
  // With ConnectOptions::stop set, a silent server is given up
  // kFetchStopGrace after the stop.
  Result<void> wait(short events, Clock::time_point deadline) {
    for (;;) {
      pollfd p{fd_, events, 0};
      const auto due = stop_.deadline(deadline);
      int ms = remaining_ms(due);
      if (ms == 0) {
        return fail(NetFailure::timeout,
                    due < deadline ? "stopping: the server sent nothing for " +
                                         std::to_string(limits::kFetchStopGrace.count()) + " s"
                                   : "timed out waiting for the server");
      }
      int r = ::poll(&p, 1, stop_.slice(ms));
      if (r > 0) return {};
      if (r == 0) continue;  // the deadline (or a stop) is checked above
      if (errno != EINTR) return fail(NetFailure::io, std::string("poll: ") + std::strerror(errno));
    }
  }

  // Appends at least one octet to buf_, or fails.
  Result<void> fill(Clock::time_point deadline) {
    char tmp[16 * 1024];
    for (;;) {
      if (ssl_ != nullptr) {
        ERR_clear_error();
        int n = SSL_read(ssl_, tmp, sizeof tmp);
        if (n > 0) {
          buf_.append(tmp, static_cast<std::size_t>(n));
          return {};
        }
        int err = SSL_get_error(ssl_, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          if (auto w = wait(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline); !w) return w;
          continue;
        }
        if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
          return fail(NetFailure::closed, "connection closed by the server");
        }
        return fail(NetFailure::io, "TLS read failed: " + ssl_error_text());
      }
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n > 0) {
        buf_.append(tmp, static_cast<std::size_t>(n));
        return {};
      }
      if (n == 0) return fail(NetFailure::closed, "connection closed by the server");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (auto w = wait(POLLIN, deadline); !w) return w;
        continue;
      }
      if (errno == ECONNRESET) return fail(NetFailure::closed, "connection reset by the server");
      return fail(NetFailure::io, std::string("recv: ") + std::strerror(errno));
    }
  }

  int fd_;
  std::chrono::seconds timeout_;
  std::string host_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string buf_;
  std::size_t pos_ = 0;
  TlsInfo tls_;
  NetFailure last_ = NetFailure::none;
  bool broken_ = false;
  StopWatch stop_;
};

// Connects one address with a deadline. Returns the fd or -1 (errno-ish text in `why`).
int connect_one(const addrinfo* ai, Clock::time_point deadline, StopWatch& stop, std::string& why,
                bool& timed_out) {
  int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
  if (fd < 0) {
    why = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  int r = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
  if (r != 0 && errno != EINPROGRESS) {
    why = std::strerror(errno);
    ::close(fd);
    return -1;
  }
  if (r != 0) {
    for (;;) {
      pollfd p{fd, POLLOUT, 0};
      int ms = remaining_ms(stop.deadline(deadline));
      int pr = ms == 0 ? 0 : ::poll(&p, 1, stop.slice(ms));
      if (pr < 0 && errno == EINTR) continue;
      if (pr == 0 && remaining_ms(stop.deadline(deadline)) > 0) continue;
      if (pr <= 0) {
        why = pr == 0 ? "timed out" : std::strerror(errno);
        timed_out = pr == 0;
        ::close(fd);
        return -1;
      }
      break;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      why = std::strerror(err != 0 ? err : errno);
      ::close(fd);
      return -1;
    }
  }
  int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

}  // namespace

Result<std::unique_ptr<Transport>> connect(const ConnectOptions& opts) {
  NetFailure ignored = NetFailure::none;
  return connect(opts, &ignored);
}

Result<std::unique_ptr<Transport>> connect(const ConnectOptions& opts, NetFailure* failure) {
  *failure = NetFailure::none;
  // OpenSSL writes to the socket with write(2): a peer that closed would
  // otherwise kill the process with SIGPIPE.
  static std::once_flag once;
  std::call_once(once, [] { ::signal(SIGPIPE, SIG_IGN); });

  auto deadline = Clock::now() + opts.timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* res = nullptr;
  std::string port = std::to_string(opts.port);
  int gai = ::getaddrinfo(opts.host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0 || res == nullptr) {
    *failure = NetFailure::resolve;
    return make_error(Errc::temporary, "cannot resolve " + opts.host + ": " + ::gai_strerror(gai));
  }
  std::string why = "no address";
  bool timed_out = false;
  StopWatch stop(opts.stop);
  int fd = -1;
  for (const addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = connect_one(ai, deadline, stop, why, timed_out);
    if (timed_out) break;
  }
  ::freeaddrinfo(res);
  if (fd < 0) {
    *failure = timed_out ? NetFailure::timeout : NetFailure::connect;
    return make_error(Errc::temporary, "cannot connect to " + opts.host + ":" + port + ": " + why);
  }
  auto t = std::make_unique<SocketTransport>(fd, opts.timeout, opts.host, opts.stop);
  if (opts.implicit_tls) {
    if (auto h = t->handshake(opts.tls); !h) {
      *failure = t->last_failure();
      return h.error();
    }
  }
  return std::unique_ptr<Transport>(std::move(t));
}

bool certificate_names_host(const void* cert_ptr, const std::string& host) {
  auto* cert = static_cast<X509*>(const_cast<void*>(cert_ptr));
  if (cert == nullptr || host.empty()) return false;
  if (is_ip_literal(host)) return X509_check_ip_asc(cert, host.c_str(), 0) == 1;
  // OpenSSL accepts partial wildcards ("f*.example.com") unless told not to;
  // RFC 6125 §7.2 advises against them, and browsers refuse them.
  return X509_check_host(cert, host.data(), host.size(), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                         nullptr) == 1;
}

bool pem_certificate_names_host(std::string_view pem, const std::string& host) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return false;
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (cert == nullptr) return false;
  const bool ok = certificate_names_host(cert, host);
  X509_free(cert);
  return ok;
}

}  // namespace apop::client
