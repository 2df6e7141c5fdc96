// The network worker's asynchronous channel to the auth process (issue 19):
// the APOP checks of every session on the worker's event loop go over one
// connected SOCK_SEQPACKET socket (the ipc/wire.hpp protocol), many in
// flight at once, and each session's coroutine waits for its verdict while
// the loop serves the others. Requests made during one turn of the loop
// leave in one sendmmsg, the replies that have arrived are read with one
// recvmmsg, and the auth process's thread for this channel takes the queued
// requests one after another without sleeping in between: one wake-up on
// each side serves several logins (ipc::RemoteAuthenticator blocks a thread
// per check, which costs two context switches each).
//
// Replies carry their request's id and are matched by it; a reply to no
// waiting request (one that timed out, or an answer to a login record) is
// skipped. Every failure -- end of file, an I/O error, an oversized,
// malformed or unexpected reply (the channel is then closed), the timeout,
// too many checks in flight -- is a verdict with AuthFailure::temporary
// (the client gets -ERR [SYS/TEMP]), never an exception.
//
// Thread-safety: verify() and the destructor run on the executor's thread
// (a single-threaded event loop); record_login() and replace() may be
// called from any thread. Lifetime: destroy it before its io_context, and
// do not run that context again afterwards (handlers still queued refer to
// the channel); coroutines still awaiting verify() may be destroyed after
// it (their registrations share the waiting list with the channel).
#pragma once

#include <array>
#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/limits.hpp"
#include "common/posix_fd.hpp"
#include "net/session_driver.hpp"

namespace apop::net {

class AuthChannel final : public AsyncVerifier {
 public:
  // `fd`: a connected SOCK_SEQPACKET socket to the auth process (owned).
  // `timeout`: the longest a check waits for its verdict.
  AuthChannel(asio::io_context& io, UniqueFd fd,
              std::chrono::milliseconds timeout = limits::kIpcReplyTimeout);
  AuthChannel(const AuthChannel&) = delete;
  AuthChannel& operator=(const AuthChannel&) = delete;
  ~AuthChannel() override;

  asio::awaitable<pop3::AuthResult> verify(const pop3::PendingCheck& check) override;
  // RFC 2449 LOGIN-DELAY's record of a login: queued, and sent with the
  // next check's batch, or within limits::kIpcRecordFlush when no check
  // comes, or at once when kIpcMaxQueuedRecords wait (a wake-up of the auth
  // process of its own per login would cost what the batching saves). Not
  // answered. Best effort.
  void record_login(std::string_view user, std::int64_t when);
  // The auth process restarted: checks in flight fail as temporary, new
  // ones go over `fd`.
  void replace(UniqueFd fd);
  // The server stops: checks in flight fail as temporary, the socket is
  // closed (nothing keeps the event loop running). Loop thread.
  void close();

  // Loop thread (tests): checks waiting for their verdict; whether the
  // channel is open (not failed).
  std::size_t in_flight() const { return waiting_->size(); }
  bool open() const { return socket_ != nullptr; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Waiter {
    std::uint32_t id = 0;
    Clock::time_point deadline;
    asio::steady_timer* wake = nullptr;  // cancelled when the verdict is in
    std::optional<pop3::AuthResult>* verdict = nullptr;
  };
  class Registration;

  void enqueue(std::string packet);
  void post_flush();
  void arm_record_timer();
  void flush();
  void read_some();
  void on_readable(std::uint64_t generation, const asio::error_code& ec);
  void deliver(std::string_view packet);
  // Closes the socket and gives every waiting check a temporary failure;
  // logs `why` (at warning level when `alarming`) unless it was closed.
  void fail(std::string_view why, bool alarming = true);
  void settle(Waiter& w, pop3::AuthResult verdict);
  void arm_sweep();
  void sweep();
  std::uint32_t next_id();

  asio::io_context::executor_type executor_;
  const std::chrono::milliseconds timeout_;
  // Loop-thread state.
  std::unique_ptr<asio::posix::stream_descriptor> socket_;  // null: failed, no channel
  std::uint64_t generation_ = 0;  // bumped by fail() and replace(): stale handlers return
  bool writing_ = false;          // waiting for the socket to take more
  // In send order, so the oldest deadline is first. Shared with the
  // waiting coroutines' registrations.
  std::shared_ptr<std::deque<Waiter>> waiting_ = std::make_shared<std::deque<Waiter>>();
  asio::steady_timer sweep_timer_;
  bool sweep_armed_ = false;
  asio::steady_timer record_timer_;
  std::atomic<std::uint32_t> last_id_{0};  // requests and login records (any thread)
  std::vector<std::string> unsent_;        // taken from the queue, not yet sent
  struct Inbox;
  std::unique_ptr<Inbox> inbox_;  // recvmmsg's buffers, allocated once
  // Any thread.
  std::mutex mu_;
  std::vector<std::string> queue_;    // encoded requests waiting for flush()
  std::vector<std::string> records_;  // encoded login records, sent with the next flush()
  bool flush_posted_ = false;
  bool record_timer_armed_ = false;
};

}  // namespace apop::net
