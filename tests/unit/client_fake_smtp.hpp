// A scripted SMTP/LMTP server on a thread (tests of client/handoff.hpp):
// listens on a Unix socket or on 127.0.0.1, serves one connection at a time,
// records what the client sent, and answers as its fields say.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace apop::client::test {

class FakeSmtp {
 public:
  // Replies; an empty reply means "say nothing" (the client times out).
  std::string greeting = "220 fake.example ready";
  bool lmtp = true;
  std::vector<std::string> extensions = {"PIPELINING", "SIZE 10000000", "8BITMIME",
                                         "ENHANCEDSTATUSCODES"};
  bool ehlo_refused = false;  // 502 to EHLO/LHLO (HELO then works)
  // Per transaction index n (0-based, counted by MAIL commands).
  std::function<std::string(int n)> mail_reply = [](int) { return "250 2.1.0 ok"; };
  std::function<std::string(int n)> rcpt_reply = [](int) { return "250 2.1.5 ok"; };
  std::function<std::string(int n)> final_reply = [](int) { return "250 2.0.0 queued"; };
  int cut_in_data = -1;          // close the connection after the first data line of transaction n
  int close_after = -1;          // close the connection after the final reply of transaction n
  bool pretend_data_ok = false;  // 354 to DATA even when MAIL/RCPT failed (a broken server)

  // What happened (read after stop() or under lock()).
  std::vector<std::string> commands;  // every command line (not message data)
  std::vector<std::string> chunks;    // command octets per recv() (pipelining check)
  std::vector<std::string> messages;  // raw DATA content (dot-stuffed, CRLF, without ".")
                                      // or BDAT chunks joined (offer "CHUNKING" for BDAT)
  int connections = 0;

  explicit FakeSmtp(const std::string& unix_path) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, unix_path.c_str(), sizeof sa.sun_path - 1);
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ::unlink(unix_path.c_str());
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) std::abort();
    ::listen(listen_fd_, 8);
  }
  // TCP on 127.0.0.1, a free port.
  FakeSmtp() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) std::abort();
    socklen_t len = sizeof sa;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
    ::listen(listen_fd_, 8);
  }
  ~FakeSmtp() {
    stop();
    ::close(listen_fd_);
  }
  int port = 0;

  void start() {
    if (::pipe(stop_pipe_) != 0) std::abort();
    thread_ = std::thread([this] { run(); });
  }
  void stop() {
    if (!thread_.joinable()) return;
    char c = 'x';
    (void)!::write(stop_pipe_[1], &c, 1);
    thread_.join();
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
  }
  std::unique_lock<std::mutex> lock() { return std::unique_lock<std::mutex>(mu_); }

 private:
  // Waits for input on fd or the stop pipe: false when stopping.
  bool wait(int fd) {
    pollfd p[2] = {{fd, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    for (;;) {
      if (::poll(p, 2, -1) < 0) continue;
      if (p[1].revents != 0) return false;
      if (p[0].revents != 0) return true;
    }
  }
  void run() {
    for (;;) {
      if (!wait(listen_fd_)) return;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      {
        auto l = lock();
        ++connections;
      }
      serve(fd);
      ::close(fd);
    }
  }
  void send(int fd, const std::string& reply) {
    if (reply.empty()) return;
    std::string out = reply + "\r\n";
    (void)!::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
  }
  // Exactly `n` octets into `out` (BDAT's chunk); false on EOF or stop.
  bool octets(int fd, std::string& buf, std::size_t n, std::string& out) {
    while (buf.size() < n) {
      if (!wait(fd)) return false;
      char tmp[65536];
      const ssize_t got = ::recv(fd, tmp, sizeof tmp, 0);
      if (got <= 0) return false;
      buf.append(tmp, static_cast<std::size_t>(got));
    }
    out = buf.substr(0, n);
    buf.erase(0, n);
    return true;
  }
  // Next line into `line` (without CRLF); false on EOF or stop.
  bool line(int fd, std::string& buf, std::string& out, bool command) {
    for (;;) {
      const std::size_t nl = buf.find("\r\n");
      if (nl != std::string::npos) {
        out = buf.substr(0, nl);
        buf.erase(0, nl + 2);
        return true;
      }
      if (!wait(fd)) return false;
      char tmp[65536];
      const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) return false;
      buf.append(tmp, static_cast<std::size_t>(n));
      if (command) {
        auto l = lock();
        chunks.emplace_back(tmp, static_cast<std::size_t>(n));
      }
    }
  }
  void serve(int fd) {
    send(fd, greeting);
    if (greeting.rfind("220", 0) != 0) return;
    std::string buf, l;
    bool mail_ok = false, rcpt_ok = false;
    int& n = transactions_;  // counted across connections
    while (line(fd, buf, l, true)) {
      {
        auto g = lock();
        commands.push_back(l);
      }
      const std::string verb = l.substr(0, l.find_first_of(" :"));
      if (verb == "LHLO" || verb == "EHLO") {
        if (ehlo_refused) {
          send(fd, "502 5.5.1 no ESMTP here");
          continue;
        }
        std::string r = "250";
        r += extensions.empty() ? " " : "-";
        r += "fake.example hello";
        for (std::size_t i = 0; i < extensions.size(); ++i) {
          r += "\r\n250" + std::string(i + 1 == extensions.size() ? " " : "-") + extensions[i];
        }
        send(fd, r);
      } else if (verb == "HELO") {
        send(fd, "250 fake.example");
      } else if (verb == "MAIL") {
        ++n;
        const std::string r = mail_reply(n);
        mail_ok = r.rfind("2", 0) == 0;
        rcpt_ok = false;
        send(fd, r);
      } else if (verb == "RCPT") {
        const std::string r = rcpt_reply(n);
        rcpt_ok = r.rfind("2", 0) == 0;
        send(fd, r);
      } else if (verb == "DATA") {
        if (!(mail_ok && rcpt_ok) && !pretend_data_ok) {
          send(fd, "503 5.5.1 no valid recipients");
          continue;
        }
        send(fd, "354 go ahead");
        std::string msg;
        bool first = true;
        for (;;) {
          if (!line(fd, buf, l, false)) return;
          if (l == ".") break;
          msg += l + "\r\n";
          if (first && n == cut_in_data) return;
          first = false;
        }
        {
          auto g = lock();
          messages.push_back(msg);
        }
        send(fd, final_reply(n));
        mail_ok = rcpt_ok = false;
        if (n == close_after) return;
      } else if (verb == "BDAT") {
        // "BDAT n [LAST]": the n octets follow at once, read whatever the reply.
        const std::string arg = l.substr(5);
        const std::size_t size = std::stoul(arg.substr(0, arg.find(' ')));
        const bool last = arg.find(" LAST") != std::string::npos;
        std::string data;
        if (!octets(fd, buf, size, data)) return;
        if (!(mail_ok && rcpt_ok) && !pretend_data_ok) {
          send(fd, "503 5.5.1 no valid recipients");
          chunked_.clear();
          continue;
        }
        chunked_ += data;
        if (!last) {
          send(fd, "250 2.0.0 chunk ok");
          continue;
        }
        {
          auto g = lock();
          messages.push_back(std::move(chunked_));
        }
        chunked_.clear();
        send(fd, final_reply(n));
        mail_ok = rcpt_ok = false;
        if (n == close_after) return;
      } else if (verb == "RSET") {
        chunked_.clear();
        mail_ok = rcpt_ok = false;
        send(fd, "250 2.0.0 reset");
      } else if (verb == "QUIT") {
        send(fd, "221 2.0.0 bye");
        return;
      } else {
        send(fd, "500 5.5.2 what?");
      }
    }
  }

  std::string chunked_;  // BDAT chunks of the current transaction
  int transactions_ = -1;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::thread thread_;
  std::mutex mu_;
};

}  // namespace apop::client::test
