// The process model of a multi-process `apop serve` (docs/architecture.md,
// "Processes"): a master that starts one auth process and N network workers,
// restarts any that dies (with backoff), forwards SIGHUP and, on SIGTERM or
// SIGINT, stops them all and returns; plus passing descriptors between them
// (SCM_RIGHTS), how the master hands new auth channels to a running process.
//
// Plain POSIX: no Asio here, the master runs nothing else.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/posix_fd.hpp"
#include "common/result.hpp"

namespace apop::net {

// A connected pair of SOCK_SEQPACKET Unix sockets (close-on-exec): message
// boundaries are kept, a peer that dies is seen as EOF.
Result<std::pair<UniqueFd, UniqueFd>> seqpacket_pair();

// Sends one message `payload` (at most 64 bytes) with `fds` attached.
Result<void> send_fds(int sock, std::string_view payload, std::span<const int> fds);
// Receives one message and the descriptors attached (at most 64); an empty
// payload and no descriptors at EOF. Descriptors arrive close-on-exec.
Result<void> recv_fds(int sock, std::string& payload, std::vector<UniqueFd>& fds);

// One kind of child the master keeps running.
struct ChildSpec {
  std::string name;  // for logs: "auth", "worker 1"
  // Runs in the new child (after fork); its return value is the child's exit
  // status. The child starts with the master's signal mask cleared.
  std::function<int()> run;
  // Runs in the master right before each (re)start, e.g. to make fresh
  // channels; an error skips this start (retried after the backoff).
  std::function<Result<void>()> prepare;
  // Runs in the master right after each start, with the child's pid (e.g. to
  // close the child's ends of the channels, or hand them to another child).
  std::function<void(pid_t)> started;
};

// Restart backoff: 0.1 s after a short-lived child, doubling per quick death
// up to 10 s; a child that ran a minute starts from 0.1 s again.
inline constexpr std::chrono::milliseconds kRestartBackoffMin{100};
inline constexpr std::chrono::milliseconds kRestartBackoffMax{10'000};
inline constexpr std::chrono::seconds kRestartHealthy{60};
// SIGTERM drains: children get this long to finish, then SIGKILL.
inline constexpr std::chrono::seconds kStopGrace{30};

class Supervisor {
 public:
  // Blocks SIGCHLD, SIGTERM, SIGINT and SIGHUP in the calling (master)
  // thread; they are read with signalfd in run().
  Supervisor();
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts a child now and keeps it running; 0 (logged) when its first
  // start fails, else its pid.
  pid_t start(ChildSpec spec);
  // Waits for a child started here to exit (before run(): a child that
  // failed at start-up) and returns its exit status (128 + signal when
  // killed); it is not restarted.
  int wait_exit(pid_t pid);

  // Until SIGTERM/SIGINT: restarts children that die, forwards SIGHUP to
  // every child (`on_hup` runs first in the master). Then SIGTERM to every
  // child, waits up to kStopGrace, SIGKILLs the rest. Returns 0, or the exit
  // status given to fail().
  int run(std::function<void()> on_hup = {});
  // Ends run() at its next wake-up with `status` (e.g. the auth process
  // cannot start: nothing can log in).
  void fail(int status);
  // Pids of running children, in start order (tests, metrics).
  std::vector<pid_t> pids() const;

 private:
  struct Child;
  bool launch(Child& c);
  std::vector<Child> children_;
  UniqueFd signals_;
  int failed_ = -1;
};

}  // namespace apop::net
