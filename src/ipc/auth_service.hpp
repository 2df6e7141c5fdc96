// The auth process's side of one network worker (issue 19): answers the
// worker's requests (ipc/wire.hpp) with the real pop3::Authenticator (the
// ThrottlingAuthenticator over the StoreAuthenticator), and treats the
// worker as hostile: every message is bounded and checked, no request
// returns a secret, SASL exchanges are bounded and expire, a token bucket
// limits the worker's request rate, and record_login is honoured only for a
// user who has just logged in through this worker. The failure delays
// (AuthResult::delay) are the worker's to await, so failed checks have their
// own budget per worker (AuthServiceLimits::failure_rate).
//
// Shared maildrop locks (with a pop3::MaildropLocks: PostgreSQL's, held by
// the auth process for its workers): lock_maildrop is honoured only for a
// user who has just logged in through this worker (once per login), the
// locks one worker holds are bounded (AuthServiceLimits::max_maildrop_locks),
// unlock_maildrop gives back only a lock this service took for the worker,
// and every lock the worker still holds is released when its last channel
// closes (the worker exited, died or was killed: serve() returned on every
// channel) or with the service.
//
// Ownership: holds non-owning references to the Authenticator and the
// MaildropLocks, which must outlive the service; the service must outlive
// its serve() calls. Thread-safety: one AuthService
// per worker; serve() runs on one thread per channel of that worker (so slow checks such as scrypt
// run in parallel), handle() may be called from any number of threads at once; the Authenticator
// must be thread-safe (StoreAuthenticator and ThrottlingAuthenticator are).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/limits.hpp"
#include "ipc/wire.hpp"
#include "pop3/interfaces.hpp"
#include "pop3/maildrop_locks.hpp"

namespace apop::ipc {

struct AuthServiceLimits {
  // SASL exchanges in flight; a sasl_start beyond it is refused (the worker's
  // login fails as temporary). An exchange not stepped for `sasl_idle`
  // expires (the client's login deadline has passed by then).
  std::size_t max_sasl_exchanges = limits::kIpcMaxSaslExchanges;
  std::chrono::milliseconds sasl_idle = limits::kLoginDeadline;
  // Token bucket over every request but sasl_end: `rate` per second, at most
  // `burst` at once.
  double rate = limits::kIpcRequestRate;
  double burst = limits::kIpcRequestBurst;
  // Token bucket over failed credential checks (any AuthResult failure but
  // temporary): when spent, verify_apop, verify_plain, sasl_start and
  // sasl_step are answered rate_limited.
  double failure_rate = limits::kIpcFailureRate;
  double failure_burst = limits::kIpcFailureBurst;
  // Successful logins awaiting their record_login (older ones are dropped).
  std::size_t pending_login_records = limits::kIpcPendingLoginRecords;
  // Shared maildrop locks the worker may hold at once (and have asked for);
  // a lock_maildrop beyond it is refused (the login fails as temporary).
  std::size_t max_maildrop_locks = limits::kIpcMaxMaildropLocks;
  // A lock the database granted only after this long is given back at once
  // and answered `temporary`: the worker may have stopped waiting for the
  // answer (kIpcReplyTimeout), and a lock it does not know it holds would
  // keep the user out everywhere until the worker exits.
  std::chrono::milliseconds lock_answer_within = limits::kIpcReplyTimeout - std::chrono::seconds(2);
};

// How serve() ended.
enum class ServeEnd {
  eof,        // the worker closed the channel (or someone shut it down)
  violation,  // a malformed or oversized message: the channel was shut down
  io_error,   // recv/send failed
};

class AuthService {
 public:
  // Without `locks` (a local account database: the maildrop's own lock is
  // the only one), lock_maildrop and unlock_maildrop are refused.
  explicit AuthService(pop3::Authenticator& auth, AuthServiceLimits limits = {},
                       pop3::MaildropLocks* locks = nullptr);
  AuthService(const AuthService&) = delete;
  AuthService& operator=(const AuthService&) = delete;
  ~AuthService();

  // Serves one connected SOCK_SEQPACKET channel of the worker: reads a
  // request, answers it, until end of file, an I/O error or a protocol
  // violation (after which the channel is shut down: shutdown(SHUT_RDWR),
  // the worker sees end of file). Blocking. The caller owns `fd` and closes
  // it after serve() returns; to stop serve() from another thread, shut the
  // socket down (shutdown(fd, SHUT_RDWR)). Request buffers are wiped. When
  // the last serve() running returns, the worker's maildrop locks are
  // released (release_maildrop_locks()).
  ServeEnd serve(int fd);

  // The I/O-free core: one request packet to one reply packet. `close` is
  // set when the request was malformed (serve() sends the error reply, then
  // shuts the channel down).
  struct Handled {
    std::string reply;
    bool close = false;
    // False for record_login: serve() does not send its (made) reply, the
    // worker does not wait for one.
    bool send = true;
  };
  Handled handle(std::string_view request);

  // Gives back every shared maildrop lock the worker holds; returns how
  // many. serve() calls it when the worker's last channel closes; not to be
  // called while handle() runs for this worker.
  std::size_t release_maildrop_locks();

  // For tests and logs.
  std::size_t sasl_exchanges() const;
  std::uint32_t worker_id() const;     // as the last hello announced it (0: none)
  std::size_t maildrop_locks() const;  // held for the worker, and being taken

 private:
  struct Exchange;
  using Clock = std::chrono::steady_clock;
  // A successful login awaiting its record_login; `locked` once it was used
  // for a lock_maildrop.
  struct PendingLogin {
    std::string user;
    Clock::time_point at;
    bool locked = false;
  };
  // The worker's locks of one user: `held` taken, `taking` asked for and
  // not answered yet (counted against the bound, not releasable).
  struct UserLocks {
    unsigned held = 0;
    unsigned taking = 0;
  };
  // record_login: a worker's `when` further than this from the auth
  // process's clock (seconds) is replaced by it.
  static constexpr std::int64_t kRecordSlack = 300;

  ServeEnd serve_channel(int fd);
  Reply dispatch(const DecodedRequest& request);
  Reply verified(std::string_view user, pop3::AuthResult r);
  Reply sasl_start(const SaslStart& m);
  Reply sasl_step(std::uint32_t exchange, std::optional<std::string_view> response);
  Reply sasl_end(std::uint32_t exchange);
  Reply run_step(std::uint32_t id, Exchange& ex, std::optional<std::string_view> response);
  Reply record_login(const RecordLogin& m);
  Reply lock_maildrop(std::string_view user);
  Reply unlock_maildrop(std::string_view user);
  // A token bucket; callers hold mu_.
  struct Bucket {
    double rate, burst, tokens;
    Clock::time_point refilled;
    void refill(Clock::time_point now);
  };
  bool take_token();
  bool failures_allowed();
  void count_result(const pop3::AuthResult& r);
  void expire_exchanges(Clock::time_point now);  // mu_ held
  void note_login(std::string_view user);

  pop3::Authenticator& auth_;
  const AuthServiceLimits limits_;
  pop3::MaildropLocks* const locks_;

  mutable std::mutex mu_;
  std::map<std::uint32_t, std::unique_ptr<Exchange>> exchanges_;
  std::deque<PendingLogin> logins_;  // awaiting record_login
  std::map<std::string, UserLocks, std::less<>> maildrop_locks_;
  std::size_t maildrop_lock_count_ = 0;  // held + taking, over every user
  unsigned serving_ = 0;                 // serve() calls running
  Bucket requests_;
  Bucket failures_;
  std::uint32_t worker_id_ = 0;
};

}  // namespace apop::ipc
