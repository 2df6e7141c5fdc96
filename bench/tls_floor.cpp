// tls_floor: the cost floor of an implicit-TLS POP3 session on this machine,
// for bench/compare.py (issue 19, test 7).
//
// pop3_floor.cpp over TLS: a single-threaded epoll loop that does the TLS
// handshake with OpenSSL, then speaks just enough POP3 for `apop bench --tls
// --workload stat`: a greeting with an APOP timestamp, "+OK" to APOP (no
// check), a canned STAT, and QUIT, then closes the TCP connection without a
// close_notify (as apop serve does). No authentication, no mailbox, no
// logging: what it costs per session is what OpenSSL and the kernel charge a
// server for that session. apop's figure minus this one is what apop itself
// spends above OpenSSL.
//
// The TLS context is apop serve's (src/net/server.cpp make_tls_context, on
// Asio's tls_server context): TLS_server_method, TLS 1.2 at least, OpenSSL's
// default cipher lists, groups and TLS 1.3 session tickets (two per full
// handshake), the default server-side session cache, no renegotiation, no
// compression, server cipher preference; the same certificate and key. So
// the client negotiates the same protocol, cipher, group and signature with
// both. Unlike apop (Asio's engine: a BIO pair, SSL_MODE_RELEASE_BUFFERS),
// the floor lets OpenSSL read and write the socket itself (SSL_set_fd) and
// keeps its buffers: the cheapest way OpenSSL can do the session.
//
// Not a server: it trusts its client, keeps no limits and is never installed.
// A write that would block is dropped (the replies are a few dozen bytes).
//   tls_floor PORT CERT KEY   (127.0.0.1; prints "listening on 127.0.0.1:PORT")
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include "floor_listen.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unordered_map>

namespace {

struct Conn {
  SSL* ssl = nullptr;
  bool ready = false;  // handshake done, greeting sent
  std::string in;
};

unsigned counter = 0;

void reply(SSL* ssl, std::string_view s) {
  (void)SSL_write(ssl, s.data(), static_cast<int>(s.size()));
}

// Handles the complete lines buffered in `c`; false once the session ends.
bool handle(Conn& c) {
  for (;;) {
    const auto nl = c.in.find('\n');
    if (nl == std::string::npos) return true;
    const std::string line = c.in.substr(0, nl);
    c.in.erase(0, nl + 1);
    if (line.rfind("APOP", 0) == 0 || line.rfind("USER", 0) == 0 || line.rfind("PASS", 0) == 0) {
      reply(c.ssl, "+OK Logged in\r\n");
    } else if (line.rfind("STAT", 0) == 0) {
      reply(c.ssl, "+OK 10 53088\r\n");
    } else if (line.rfind("QUIT", 0) == 0) {
      reply(c.ssl, "+OK Logging out\r\n");
      return false;
    } else {
      reply(c.ssl, "-ERR Unknown command\r\n");
    }
  }
}

// Moves the session on as far as the bytes that arrived allow; false once it
// ends (QUIT, EOF, an error).
bool advance(int ep, int fd, Conn& c) {
  if (!c.ready) {
    const int r = SSL_do_handshake(c.ssl);
    if (r != 1) {
      const int e = SSL_get_error(c.ssl, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return false;
      epoll_event ev{};
      ev.events = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
      ev.data.fd = fd;
      ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
      return true;
    }
    c.ready = true;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
    char greeting[96];
    const int g = std::snprintf(greeting, sizeof greeting, "+OK floor ready <%u.%u@localhost>\r\n",
                                ++counter, static_cast<unsigned>(::getpid()));
    reply(c.ssl, std::string_view(greeting, static_cast<std::size_t>(g)));
  }
  char buf[16384];
  for (;;) {
    const int got = SSL_read(c.ssl, buf, sizeof buf);
    if (got <= 0) {
      const int e = SSL_get_error(c.ssl, got);
      return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
    }
    c.in.append(buf, static_cast<std::size_t>(got));
    if (!handle(c)) return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: tls_floor PORT CERT KEY\n");
    return 64;
  }
  // apop serve's context (src/net/server.cpp make_tls_context; Asio's
  // tls_server constructor adds SSL_OP_NO_COMPRESSION).
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    ERR_print_errors_fp(stderr);
    return 1;
  }

  const FloorListener listener = floor_listen(argv[1], "tls_floor");
  if (listener.fd < 0) return 1;
  const int lfd = listener.fd;
  const int ep = listener.ep;
  const int one = 1;
  std::unordered_map<int, Conn> conns;
  epoll_event events[128];
  const auto finish = [&](int fd) {
    auto it = conns.find(fd);
    if (it == conns.end()) return;
    SSL_free(it->second.ssl);
    conns.erase(it);
    ::close(fd);  // also leaves the epoll set
  };
  for (;;) {
    const int n = ::epoll_wait(ep, events, 128, -1);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == lfd) {
        for (;;) {
          const int c = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = c;
          ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
          Conn& conn = conns[c];
          conn.ssl = SSL_new(ctx);
          SSL_set_fd(conn.ssl, c);
          SSL_set_accept_state(conn.ssl);
          // The ClientHello is usually not there yet: the first read waits
          // for EPOLLIN.
        }
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      if (!advance(ep, fd, it->second)) finish(fd);
      ERR_clear_error();
    }
  }
}
