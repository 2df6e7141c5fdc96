#include "net/process.hpp"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace apop::net {

namespace {

constexpr std::size_t kMaxPassedFds = 64;
constexpr std::size_t kMaxControlPayload = 64;

Error sys_error(const char* what) {
  return make_error(Errc::temporary, std::string(what) + ": " + std::strerror(errno));
}

sigset_t master_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  return set;
}

using Clock = std::chrono::steady_clock;

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  return "stopped";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

Result<std::pair<UniqueFd, UniqueFd>> seqpacket_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return sys_error("socketpair");
  }
  return std::make_pair(UniqueFd(sv[0]), UniqueFd(sv[1]));
}

Result<void> send_fds(int sock, std::string_view payload, std::span<const int> fds) {
  if (payload.empty() || payload.size() > kMaxControlPayload || fds.size() > kMaxPassedFds) {
    return make_error(Errc::invalid, "send_fds: bad message size");
  }
  msghdr msg{};
  iovec iov{const_cast<char*>(payload.data()), payload.size()};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  const ssize_t n = retry_eintr([&] { return ::sendmsg(sock, &msg, MSG_NOSIGNAL); });
  if (n < 0) return sys_error("sendmsg");
  return {};
}

Result<void> recv_fds(int sock, std::string& payload, std::vector<UniqueFd>& fds) {
  payload.clear();
  fds.clear();
  char buf[kMaxControlPayload];
  iovec iov{buf, sizeof buf};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t n = retry_eintr([&] { return ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); });
  if (n < 0) return sys_error("recvmsg");
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    fds.clear();  // closes what did arrive
    return make_error(Errc::invalid, "recv_fds: truncated message");
  }
  payload.assign(buf, static_cast<std::size_t>(n));
  return {};
}

struct Supervisor::Child {
  ChildSpec spec;
  pid_t pid = 0;
  Clock::time_point started{};
  std::chrono::milliseconds backoff = kRestartBackoffMin;
  Clock::time_point restart_at{};  // when pid == 0: the next start
  bool retired = false;            // wait_exit() took it over: never restarted
};

Supervisor::Supervisor() {
  const sigset_t set = master_signals();
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  signals_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
}

Supervisor::~Supervisor() = default;

bool Supervisor::launch(Child& c) {
  if (c.spec.prepare) {
    if (auto r = c.spec.prepare(); !r) {
      spdlog::error("{}: cannot start: {}", c.spec.name, r.error().message);
      return false;
    }
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    spdlog::error("{}: fork: {}", c.spec.name, std::strerror(errno));
    return false;
  }
  if (pid == 0) {
    // The child: default signal handling, nothing blocked, and it dies with
    // the master (a master killed by SIGKILL leaves no orphans serving).
    signals_.reset();
    const sigset_t set = master_signals();
    ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
    const pid_t master = ::getppid();
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != master) ::_exit(1);  // the master died before prctl
    const int code = c.spec.run();
    if (auto logger = spdlog::default_logger()) logger->flush();
    std::fflush(nullptr);
    ::_exit(code);
  }
  c.pid = pid;
  c.started = Clock::now();
  if (c.spec.started) c.spec.started(pid);
  spdlog::info("{} started pid={}", c.spec.name, pid);
  return true;
}

pid_t Supervisor::start(ChildSpec spec) {
  children_.push_back(Child{std::move(spec)});
  Child& c = children_.back();
  if (!launch(c)) {
    children_.pop_back();
    return 0;
  }
  return c.pid;
}

int Supervisor::wait_exit(pid_t pid) {
  int status = 0;
  if (retry_eintr([&] { return ::waitpid(pid, &status, 0); }) < 0) return 1;
  for (Child& c : children_) {
    if (c.pid == pid) {
      c.pid = 0;
      c.retired = true;
    }
  }
  return exit_code(status);
}

void Supervisor::fail(int status) { failed_ = status; }

std::vector<pid_t> Supervisor::pids() const {
  std::vector<pid_t> out;
  for (const Child& c : children_) {
    if (c.pid > 0) out.push_back(c.pid);
  }
  return out;
}

int Supervisor::run(std::function<void()> on_hup) {
  bool stopping = false;
  while (!stopping && failed_ < 0) {
    // Sleep until a signal or the earliest pending restart.
    int timeout_ms = -1;
    const auto now = Clock::now();
    for (const Child& c : children_) {
      if (c.pid != 0 || c.retired) continue;
      const auto wait =
          std::chrono::duration_cast<std::chrono::milliseconds>(c.restart_at - now).count();
      const int w = static_cast<int>(std::clamp<long long>(wait, 0, 60'000));
      timeout_ms = timeout_ms < 0 ? w : std::min(timeout_ms, w);
    }
    pollfd p{signals_.get(), POLLIN, 0};
    retry_eintr([&] { return ::poll(&p, 1, timeout_ms); });
    signalfd_siginfo si{};
    while (::read(signals_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
        spdlog::info("signal {} received, stopping the workers and the auth process", si.ssi_signo);
        stopping = true;
      } else if (si.ssi_signo == SIGHUP) {
        if (on_hup) on_hup();
        for (const Child& c : children_) {
          if (c.pid > 0) ::kill(c.pid, SIGHUP);
        }
      }
    }
    // Reap every child that ended; schedule its restart.
    for (;;) {
      int status = 0;
      const pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      for (Child& c : children_) {
        if (c.pid != pid) continue;
        c.pid = 0;
        if (stopping) break;
        const bool healthy = Clock::now() - c.started >= kRestartHealthy;
        c.backoff = healthy ? kRestartBackoffMin : std::min(c.backoff * 2, kRestartBackoffMax);
        c.restart_at = Clock::now() + (healthy ? kRestartBackoffMin : c.backoff);
        spdlog::error("{} pid={} {}; restarting in {} ms", c.spec.name, pid,
                      describe_status(status), (healthy ? kRestartBackoffMin : c.backoff).count());
      }
    }
    if (stopping) break;
    for (Child& c : children_) {
      if (c.pid != 0 || c.retired || Clock::now() < c.restart_at) continue;
      if (!launch(c)) c.restart_at = Clock::now() + c.backoff;
    }
  }
  // Drain: SIGTERM to every child (workers end their sessions without
  // UPDATE, so nothing is deleted), wait, then SIGKILL what is left.
  for (const Child& c : children_) {
    if (c.pid > 0) ::kill(c.pid, SIGTERM);
  }
  const auto deadline = Clock::now() + kStopGrace;
  for (;;) {
    bool any = false;
    for (Child& c : children_) {
      if (c.pid <= 0) continue;
      int status = 0;
      const pid_t r = ::waitpid(c.pid, &status, WNOHANG);
      if (r == c.pid || (r < 0 && errno == ECHILD)) {
        c.pid = 0;
      } else {
        any = true;
      }
    }
    if (!any) break;
    if (Clock::now() >= deadline) {
      for (const Child& c : children_) {
        if (c.pid > 0) {
          spdlog::warn("{} pid={} did not stop in time: SIGKILL", c.spec.name, c.pid);
          ::kill(c.pid, SIGKILL);
          ::waitpid(c.pid, nullptr, 0);
        }
      }
      break;
    }
    ::usleep(20'000);
  }
  return failed_ < 0 ? 0 : failed_;
}

}  // namespace apop::net
