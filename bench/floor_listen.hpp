// Shared by the cost floors (pop3_floor.cpp, tls_floor.cpp): a non-blocking
// listening socket on 127.0.0.1:PORT (0: any), its "listening on" line for
// bench/compare.py, and an epoll set watching it.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

struct FloorListener {
  int fd = -1;  // the listening socket
  int ep = -1;  // epoll, with `fd` registered (data.fd)
};

// `name` prefixes the error message. fd < 0 on failure (reported).
inline FloorListener floor_listen(const char* port, const char* name) {
  FloorListener l;
  l.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(l.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(std::atoi(port)));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(l.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l.fd, 1024) != 0) {
    std::fprintf(stderr, "%s: bind/listen failed\n", name);
    l.fd = -1;
    return l;
  }
  socklen_t len = sizeof a;
  ::getsockname(l.fd, reinterpret_cast<sockaddr*>(&a), &len);
  std::printf("listening on 127.0.0.1:%u\n", ntohs(a.sin_port));
  std::fflush(stdout);
  l.ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = l.fd;
  ::epoll_ctl(l.ep, EPOLL_CTL_ADD, l.fd, &ev);
  return l;
}
