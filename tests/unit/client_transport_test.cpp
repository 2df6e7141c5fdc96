// The client transport (src/client/transport.hpp) against a scripted server
// on a loopback socket: line splitting, the line limit, timeouts, EOF, and
// STLS injection detection (both buffered and still on the socket).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "client/transport.hpp"

namespace apop::client {
namespace {

// Listens on 127.0.0.1:0 and runs `script` on the first accepted socket.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<void(int)> script) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 1), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this, script = std::move(script)] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      script(c);
      ::close(c);
    });
  }
  ~ScriptedServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::uint16_t port() const { return port_; }

 private:
  int fd_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

void send_all(int fd, std::string_view s) {
  ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
}

std::string recv_some(int fd) {
  char buf[512];
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

std::unique_ptr<Transport> dial(std::uint16_t port, int timeout_s = 5) {
  ConnectOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.timeout = std::chrono::seconds(timeout_s);
  auto t = connect(o);
  EXPECT_TRUE(t) << t.error().message;
  return t ? std::move(t).value() : nullptr;
}

// A self-signed certificate (PEM) whose subjectAltName is `san`
// ("DNS:f*.example.test"), made with OpenSSL's API.
std::string make_cert(const std::string& san) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  std::unique_ptr<X509, decltype(&X509_free)> x(X509_new(), X509_free);
  if (!key || !x) return {};
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 3600);
  X509_set_pubkey(x.get(), key.get());
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("apop test"), -1, -1, 0);
  X509_set_issuer_name(x.get(), name);
  X509_EXTENSION* ext =
      X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, const_cast<char*>(san.c_str()));
  if (ext == nullptr) return {};
  X509_add_ext(x.get(), ext, -1);
  X509_EXTENSION_free(ext);
  if (X509_sign(x.get(), key.get(), EVP_sha256()) == 0) return {};
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_X509(bio.get(), x.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

// Issue 17 item 11: a partial wildcard ("f*.example.test") names no host
// (RFC 6125 §7.2; OpenSSL accepts it unless told not to), a whole-label
// wildcard still does.
TEST(ClientTransport, PartialWildcardCertificatesNameNoHost) {
  const std::string partial = make_cert("DNS:f*.example.test");
  ASSERT_FALSE(partial.empty());
  EXPECT_FALSE(pem_certificate_names_host(partial, "foo.example.test"));
  EXPECT_FALSE(pem_certificate_names_host(partial, "f.example.test"));

  const std::string whole = make_cert("DNS:*.example.test");
  ASSERT_FALSE(whole.empty());
  EXPECT_TRUE(pem_certificate_names_host(whole, "foo.example.test"));
  EXPECT_FALSE(pem_certificate_names_host(whole, "example.test"));
  EXPECT_FALSE(pem_certificate_names_host(whole, "a.foo.example.test"));

  const std::string exact = make_cert("DNS:pop.example.test, IP:192.0.2.7");
  ASSERT_FALSE(exact.empty());
  EXPECT_TRUE(pem_certificate_names_host(exact, "pop.example.test"));
  EXPECT_TRUE(pem_certificate_names_host(exact, "192.0.2.7"));
  EXPECT_FALSE(pem_certificate_names_host(exact, "192.0.2.8"));
  EXPECT_FALSE(pem_certificate_names_host("not a certificate", "pop.example.test"));
}

TEST(ClientTransport, LinesCrlfAndBareLf) {
  ScriptedServer srv([](int c) {
    send_all(c, "+OK hello\r\nsecond\nthird\r\n");
    EXPECT_EQ(recv_some(c), "CAPA\r\n");
    send_all(c, "+OK ");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    send_all(c, "split\r\n");
  });
  auto t = dial(srv.port());
  ASSERT_TRUE(t);
  EXPECT_EQ(t->read_line(100).value(), "+OK hello");
  EXPECT_EQ(t->read_line(100).value(), "second");
  EXPECT_EQ(t->read_line(100).value(), "third");
  EXPECT_EQ(t->buffered(), 0u);
  ASSERT_TRUE(t->write("CAPA\r\n"));
  EXPECT_EQ(t->read_line(100).value(), "+OK split");
  EXPECT_EQ(t->last_failure(), NetFailure::none);
  EXPECT_FALSE(t->tls().active);
}

TEST(ClientTransport, OverlongLineIsRefused) {
  ScriptedServer srv([](int c) {
    send_all(c, std::string(5000, 'x'));  // never a LF
    recv_some(c);
  });
  auto t = dial(srv.port());
  ASSERT_TRUE(t);
  auto l = t->read_line(512);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, Errc::invalid);
  EXPECT_EQ(t->last_failure(), NetFailure::overlong);
  EXPECT_FALSE(t->read_line(512));  // unusable afterwards
}

TEST(ClientTransport, OverlongCompleteLineIsRefused) {
  ScriptedServer srv([](int c) {
    send_all(c, std::string(20, 'y') + "\r\n");
    recv_some(c);
  });
  auto t = dial(srv.port());
  ASSERT_TRUE(t);
  EXPECT_FALSE(t->read_line(19));
  EXPECT_EQ(t->last_failure(), NetFailure::overlong);
}

TEST(ClientTransport, ExactlyMaxIsAccepted) {
  ScriptedServer srv([](int c) {
    send_all(c, std::string(19, 'y') + "\r\n");
    recv_some(c);
  });
  auto t = dial(srv.port());
  ASSERT_TRUE(t);
  EXPECT_EQ(t->read_line(19).value().size(), 19u);
}

TEST(ClientTransport, TimeoutAndClose) {
  ScriptedServer srv([](int c) {
    send_all(c, "+OK\r\n");
    recv_some(c);  // waits for the client to give up and close
  });
  auto t = dial(srv.port(), 1);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->read_line(100));
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(t->read_line(100));
  EXPECT_EQ(t->last_failure(), NetFailure::timeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  t.reset();

  ScriptedServer eof([](int c) { send_all(c, "+OK bye\r\npartial"); });
  auto t2 = dial(eof.port());
  ASSERT_TRUE(t2);
  EXPECT_TRUE(t2->read_line(100));
  EXPECT_FALSE(t2->read_line(100));
  EXPECT_EQ(t2->last_failure(), NetFailure::closed);
}

TEST(ClientTransport, StlsInjectionBuffered) {
  ScriptedServer srv([](int c) {
    send_all(c, "+OK go\r\n+OK injected\r\n");
    recv_some(c);
  });
  auto t = dial(srv.port());
  ASSERT_TRUE(t);
  ASSERT_EQ(t->read_line(100).value(), "+OK go");
  EXPECT_GT(t->buffered(), 0u);
  auto r = t->start_tls(TlsOptions{});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid);
  EXPECT_NE(r.error().message.find("injection"), std::string::npos);
}

TEST(ClientTransport, StlsInjectionStillOnTheSocket) {
  ScriptedServer srv([](int c) {
    send_all(c, "+OK go\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    send_all(c, "+OK late injection\r\n");
    recv_some(c);
  });
  auto t = dial(srv.port());
  ASSERT_TRUE(t);
  ASSERT_EQ(t->read_line(100).value(), "+OK go");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(t->buffered(), 0u);
  auto r = t->start_tls(TlsOptions{});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid);
}

TEST(ClientTransport, HandshakeWithANonTlsPeerFails) {
  ScriptedServer srv([](int c) {
    send_all(c, "+OK go\r\n");
    recv_some(c);  // the ClientHello
    send_all(c, "-ERR this is not TLS\r\n");
  });
  auto t = dial(srv.port());
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->read_line(100));
  auto r = t->start_tls(TlsOptions{});
  ASSERT_FALSE(r);
  EXPECT_EQ(t->last_failure(), NetFailure::tls_handshake);
  EXPECT_FALSE(t->tls().active);
}

TEST(ClientTransport, ConnectFailures) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);  // bound then closed: nothing listens there
  ConnectOptions o;
  o.host = "127.0.0.1";
  o.port = ntohs(a.sin_port);
  o.timeout = std::chrono::seconds(2);
  NetFailure f = NetFailure::none;
  EXPECT_FALSE(connect(o, &f));
  EXPECT_EQ(f, NetFailure::connect);
  o.host = "name.invalid";
  EXPECT_FALSE(connect(o, &f));
  EXPECT_EQ(f, NetFailure::resolve);
}

}  // namespace
}  // namespace apop::client
