// The client transport (src/client/transport.hpp) against a scripted server
// on a loopback socket: line splitting, the line limit, timeouts, EOF, and
// STLS injection detection (both buffered and still on the socket).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
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
