// The per-session driver: feeds a client's bytes to the I/O-free
// pop3::Session and writes what it returns, with the inactivity timeouts,
// the login deadline, backpressure, STLS and the failed-login reply delay.
// It is a template over the byte stream, so the server drives a TCP socket
// (with its TLS stream, server.cpp's Connection) and the unit tests an
// in-memory, fault-injecting one (tests/unit/net_test_stream.hpp) through
// the same code: no virtual call, one awaited operation per read or write.
//
// The stream (concept SessionStream) provides:
//   asio::awaitable<asio::error_code> read_into(Sink&& sink)
//       waits for the client's next bytes and hands them to `sink` (a
//       callable taking a std::string_view) before returning;
//   asio::awaitable<std::tuple<asio::error_code, std::size_t>> write(asio::const_buffer)
//       writes all of it (the write stalls while the client does not read);
//   asio::awaitable<asio::error_code> handshake(const TlsContext&)
//       the server side of a TLS handshake (implicit TLS, STLS);
//   bool secure() const     TLS is active;
//   void cancel()           aborts the pending read/write/handshake
//                           (operation_aborted), as the watchdog does;
//   void write_now(std::string_view)  best effort, never waits (the
//                           inactivity goodbye).
#pragma once

#include <algorithm>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ssl.hpp>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "common/limits.hpp"
#include "net/metrics.hpp"
#include "net/proxy_protocol.hpp"
#include "net/server.hpp"
#include "pop3/session.hpp"

namespace apop::net {

inline constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

using TlsContext = std::shared_ptr<asio::ssl::context>;

template <typename S>
concept SessionStream = requires(S& s, const S& cs, asio::const_buffer b, const TlsContext& ctx,
                                 std::string_view text) {
  { s.write(b) } -> std::same_as<asio::awaitable<std::tuple<asio::error_code, std::size_t>>>;
  { s.handshake(ctx) } -> std::same_as<asio::awaitable<asio::error_code>>;
  { cs.secure() } -> std::convertible_to<bool>;
  s.cancel();
  s.write_now(text);
};

// Ends a session whose deadline passed: one timer per session, re-armed
// only when it fires early (the deadline moves with every command). On
// expiry it sets `timed_out` and cancels the stream's pending operations,
// so the driver returns from its read or write at once (and checks the flag
// after anything that was not a stream operation). A plain timer costs
// less per session than a second coroutine joined with `||`.
// Owned by its session through the only shared_ptr; the handler holds a
// weak one, because a timer that fired just before the session ended may
// run its handler after the session's frame (and the references below)
// are gone.
template <typename Stream>
struct Watchdog : std::enable_shared_from_this<Watchdog<Stream>> {
  Watchdog(const asio::any_io_executor& ex, const std::chrono::steady_clock::time_point& d,
           Stream& s)
      : timer(ex), deadline(d), stream(s) {}
  asio::steady_timer timer;
  const std::chrono::steady_clock::time_point& deadline;
  Stream& stream;
  bool timed_out = false;
  void arm() {
    timer.expires_at(deadline);
    timer.async_wait([weak = this->weak_from_this()](const asio::error_code& ec) {
      const auto self = weak.lock();
      if (ec || !self) return;  // cancelled, or the session is over
      if (std::chrono::steady_clock::now() < self->deadline) return self->arm();
      self->timed_out = true;
      self->stream.cancel();
    });
  }
};

// A credential check the driver awaits instead of the session running it
// (pop3::SessionConfig::deferred_apop): the network worker's APOP check, a
// round trip to the auth process (net/auth_channel.hpp) during which the
// event loop serves other sessions. Never throws: every failure is an
// AuthResult with AuthFailure::temporary. Called on the event loop's thread.
class AsyncVerifier {
 public:
  virtual ~AsyncVerifier() = default;
  virtual asio::awaitable<pop3::AuthResult> verify(const pop3::PendingCheck& check) = 0;
};

// What the driver reads from the server around it. References: the server
// may change them while the session runs (reconfigure, certificate reload,
// shutdown), and the session sees the new values from its next step on.
struct DriverContext {
  const ServerOptions& options;  // login_timeout, idle_timeout
  const TlsContext& tls_ctx;     // the certificate a handshake uses now
  const bool& stopping;          // the server is shutting down
  // Runs the steps that may block (Session::blocking_step_next); null: inline.
  asio::thread_pool* blocking_pool = nullptr;
  // apop_sent_bytes_total of the listener; null: not counted.
  Metrics* metrics = nullptr;
  Metrics::Listener* listener = nullptr;
  // Runs the checks of Next::verify; required when the session template
  // sets deferred_apop.
  AsyncVerifier* verifier = nullptr;
};

struct DriveResult {
  bool timed_out = false;      // the watchdog ended it (inactivity or login deadline)
  bool login_expired = false;  // ... and it was the absolute login deadline
  // Empty, or why the driver ended it: "tls-handshake: ...",
  // "stls-handshake: ...", "proxy-header-untrusted".
  std::string failure;
};

// Output buffer capacity a session keeps while it waits for its client.
inline constexpr std::size_t kIdleOutputCapacity = 4096;

template <SessionStream Stream>
class SessionDriver {
 public:
  SessionDriver(Stream& stream, pop3::Session& session, const DriverContext& cx)
      : stream_(stream), session_(session), cx_(cx) {}

  // Runs the session until it closes, the client goes, a handshake fails or
  // a deadline passes. `implicit_tls`: handshake before the greeting.
  // `refuse_proxy_header`: a PROXY header as the first bytes ends the
  // session (the peer is not a trusted proxy). `login_deadline`: no login
  // after it, however the client trickles bytes.
  asio::awaitable<DriveResult> run(bool implicit_tls, bool refuse_proxy_header,
                                   std::chrono::steady_clock::time_point login_deadline) {
    login_deadline_ = login_deadline;
    deadline_ =
        std::min(std::chrono::steady_clock::now() + cx_.options.login_timeout, login_deadline_);
    const auto watchdog =
        std::make_shared<Watchdog<Stream>>(co_await asio::this_coro::executor, deadline_, stream_);
    watchdog->arm();
    DriveResult r;
    co_await serve(implicit_tls, refuse_proxy_header, watchdog->timed_out, r.failure);
    watchdog->timer.cancel();
    r.timed_out = watchdog->timed_out;
    r.login_expired = r.timed_out && session_.state() == pop3::State::authorization &&
                      std::chrono::steady_clock::now() >= login_deadline_;
    co_return r;
  }

  // After run(): a plaintext client the watchdog disconnected is told why
  // (RFC 1939 §3 autologout: no UPDATE). Best effort, never waits.
  void farewell(const DriveResult& r) {
    if (!r.timed_out || cx_.stopping || stream_.secure()) return;
    static constexpr std::string_view kBye = "-ERR Disconnected for inactivity\r\n";
    static constexpr std::string_view kLate = "-ERR Disconnected: login took too long\r\n";
    stream_.write_now(r.login_expired ? kLate : kBye);
  }

 private:
  std::chrono::seconds timeout_for() const {
    return session_.state() == pop3::State::authorization ? cx_.options.login_timeout
                                                          : cx_.options.idle_timeout;
  }

  // The next inactivity deadline; before login never past the absolute
  // login deadline (a client trickling bytes cannot hold the socket).
  std::chrono::steady_clock::time_point next_deadline() const {
    auto d = std::chrono::steady_clock::now() + timeout_for();
    return session_.state() == pop3::State::authorization ? std::min(d, login_deadline_) : d;
  }

  asio::awaitable<void> serve(bool implicit_tls, bool refuse_proxy_header, const bool& timed_out,
                              std::string& failure) {
    if (implicit_tls) {
      if (auto ec = co_await stream_.handshake(cx_.tls_ctx)) {
        failure = "tls-handshake: " + ec.message();
        co_return;
      }
      session_.tls_started();
    }
    std::string out = session_.greeting();
    for (;;) {
      if (timed_out) co_return;
      pop3::Next n;
      if (cx_.blocking_pool != nullptr && session_.blocking_step_next()) {
        // Slow hashes, remote lookups, lock waits and UPDATE's unlink/fsync
        // run on the pool, so that they never stall the event loop (an APOP
        // check against the local database runs inline: cheaper than the
        // two hand-offs; Session::blocking_step_next).
        // The session is touched by one thread at a time: this coroutine is
        // suspended until the step completes (cancellation does not cut it short).
        pop3::Session& session = session_;
        n = co_await asio::co_spawn(
            *cx_.blocking_pool,
            [&session, &out]() -> asio::awaitable<pop3::Next> { co_return session.next(out); },
            asio::use_awaitable);
      } else {
        n = session_.next(out);
      }
      if (n == pop3::Next::verify) {
        // The check runs elsewhere (the auth process); this coroutine waits
        // for its verdict while the loop serves other sessions. The
        // verifier's own timeout bounds it (the watchdog only cancels
        // stream operations), so the verdict is always awaited and the
        // session is never left with a check half-done.
        // No verifier: misconfigured; a temporary failure, never a crash.
        // (Not `cond ? co_await ... : ...`: with g++ 12 that form aborted
        // in free() in DriverTest.AnAwaitedApopCheckHolds...; a compiler
        // bug with co_await in a conditional expression, by all signs.)
        pop3::AuthResult verdict = pop3::AuthResult::temporary();
        if (cx_.verifier != nullptr) {
          verdict = co_await cx_.verifier->verify(*session_.pending_check());
        }
        session_.complete_check(std::move(verdict), out);
        if (cx_.stopping) co_return;
        n = pop3::Next::output;
      }
      // The login result's failure delay, handed on by the session.
      const auto delay = session_.take_reply_delay();
      if (delay.count() > 0) {
        // Failed-login throttling: the reply waits (and no further pipelined
        // command runs meanwhile); no thread does.
        asio::steady_timer t(co_await asio::this_coro::executor, delay);
        co_await t.async_wait(use_tuple);
        if (cx_.stopping) co_return;
      } else if (n == pop3::Next::output && out.size() < limits::kOutputFlush) {
        continue;
      }
      if (!out.empty()) {
        // Backpressure: a client that stops reading stalls this write, and
        // no more output is produced until it completes (or times out).
        deadline_ = next_deadline();
        auto [ec, written] = co_await stream_.write(asio::buffer(out));
        if (cx_.metrics != nullptr) cx_.metrics->bytes_sent(*cx_.listener, written);
        if (ec) co_return;
        out.clear();
      }
      if (n == pop3::Next::close) co_return;
      if (n == pop3::Next::start_tls) {
        // STLS: the session already dropped any pipelined plaintext; the
        // handshake reads straight from the stream.
        deadline_ =
            std::min(std::chrono::steady_clock::now() + cx_.options.login_timeout, login_deadline_);
        if (auto ec = co_await stream_.handshake(cx_.tls_ctx)) {
          failure = "stls-handshake: " + ec.message();
          co_return;
        }
        session_.tls_started();
        continue;
      }
      if (n == pop3::Next::need_input) {
        // Waiting for the client: give back the output buffer a RETR grew.
        if (out.capacity() > kIdleOutputCapacity) std::string().swap(out);
        deadline_ = next_deadline();
        bool proxy_spoof = false;
        auto ec = co_await stream_.read_into([&](std::string_view data) {
          if (refuse_proxy_header) {
            // The first bytes of a connection not from a trusted proxy: a
            // PROXY header here is a misconfiguration or a spoofing attempt.
            refuse_proxy_header = false;
            if (data.size() >= 5 && !stream_.secure() && looks_like_proxy_header(data)) {
              proxy_spoof = true;
              return;
            }
          }
          session_.feed(data);
        });
        if (ec) co_return;
        if (proxy_spoof) {
          failure = "proxy-header-untrusted";
          co_return;
        }
      }
    }
  }

  Stream& stream_;
  pop3::Session& session_;
  const DriverContext& cx_;
  // The watchdog's deadline: moved before every read and write.
  std::chrono::steady_clock::time_point deadline_{};
  std::chrono::steady_clock::time_point login_deadline_{};
};

}  // namespace apop::net
