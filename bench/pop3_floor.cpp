// pop3_floor: the cost floor of a POP3 session on this machine, for
// bench/compare.py (issue 7, test 1).
//
// A single-threaded epoll loop that speaks just enough POP3 for `apop bench
// --workload stat`: a greeting with an APOP timestamp, "+OK" to APOP (no
// check), a canned STAT, and QUIT. No authentication, no mailbox, no
// logging: what it costs per session is what the kernel charges a server for
// accept, four replies over loopback TCP (the client's receive path runs in
// the sender's context), the reads, and the close. apop's figure minus this
// one is what apop itself spends; no server can go below it.
//
// Not a server: it trusts its client, keeps no limits and is never installed.
//   pop3_floor PORT      (127.0.0.1; prints "listening on 127.0.0.1:PORT")
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include "floor_listen.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>

namespace {

struct Conn {
  std::string in;
};

void reply(int fd, std::string_view s) { (void)::send(fd, s.data(), s.size(), MSG_NOSIGNAL); }

// Handles the complete lines buffered for `fd`; false once the session ends.
bool handle(int fd, Conn& c) {
  for (;;) {
    const auto nl = c.in.find('\n');
    if (nl == std::string::npos) return true;
    const std::string line = c.in.substr(0, nl);
    c.in.erase(0, nl + 1);
    if (line.rfind("APOP", 0) == 0 || line.rfind("USER", 0) == 0 || line.rfind("PASS", 0) == 0) {
      reply(fd, "+OK Logged in\r\n");
    } else if (line.rfind("STAT", 0) == 0) {
      reply(fd, "+OK 10 53088\r\n");
    } else if (line.rfind("QUIT", 0) == 0) {
      reply(fd, "+OK Logging out\r\n");
      return false;
    } else {
      reply(fd, "-ERR Unknown command\r\n");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: pop3_floor PORT\n");
    return 64;
  }
  const FloorListener listener = floor_listen(argv[1], "pop3_floor");
  if (listener.fd < 0) return 1;
  const int lfd = listener.fd;
  const int ep = listener.ep;
  const int one = 1;
  std::unordered_map<int, Conn> conns;
  epoll_event events[128];
  char buf[16384];
  unsigned counter = 0;
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
          conns[c];
          char greeting[96];
          const int g =
              std::snprintf(greeting, sizeof greeting, "+OK floor ready <%u.%u@localhost>\r\n",
                            ++counter, static_cast<unsigned>(::getpid()));
          reply(c, std::string_view(greeting, static_cast<std::size_t>(g)));
        }
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      const ssize_t got = ::recv(fd, buf, sizeof buf, 0);
      bool keep = got > 0 || (got < 0 && errno == EAGAIN);
      if (got > 0) {
        it->second.in.append(buf, static_cast<std::size_t>(got));
        keep = handle(fd, it->second);
      }
      if (!keep) {
        conns.erase(it);
        ::close(fd);  // also leaves the epoll set
      }
    }
  }
}
