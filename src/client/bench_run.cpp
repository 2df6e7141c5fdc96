// The engine of `apop bench` (see bench.hpp): one io_context on the calling
// thread, Options::concurrency worker coroutines, each running sessions one
// after another until the count or the time is used up.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>

#include <fmt/format.h>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ssl.hpp>
#include <csignal>
#include <deque>
#include <memory>
#include <set>

#include "auth/base64.hpp"
#include "client/bench.hpp"
#include "client/protocol.hpp"
#include "common/limits.hpp"
#include "common/text.hpp"

namespace apop::client::bench {
namespace {

using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// Status and SASL lines longer than this are a protocol error (the SASL limit
// is the largest a POP3 server sends outside a multi-line body).
constexpr std::size_t kMaxLine = limits::kMaxSaslLine + 2;
constexpr std::size_t kSmallBuffer = 4096;
constexpr std::size_t kBodyBuffer = 64 * 1024;

std::uint64_t micros_since(Clock::time_point t) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

class Engine;

// One session's connection, buffers and failure.
struct Session {
  Session(asio::io_context& io, std::uint64_t idx) : sock(io), index(idx) {}
  tcp::socket sock;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;
  std::uint64_t index;
  std::vector<char> buf;
  std::string pending;
  std::size_t off = 0;
  Clock::time_point deadline;
  std::string err_kind;
  std::string err_message;
  bool timed_out = false;

  bool fail(std::string kind, std::string message) {
    if (err_kind.empty()) {
      err_kind = std::move(kind);
      err_message = std::move(message);
    }
    return false;
  }
};

// The -ERR reply of a command or login, as an error kind.
std::string error_kind(const Reply& r, bool during_auth) {
  if (r.code == "IN-USE") return "in-use";
  if (r.code == "SYS/TEMP") return "sys-temp";
  if (r.code == "SYS/PERM") return "sys-perm";
  if (r.code == "LOGIN-DELAY") return "login-delay";
  return during_auth ? "auth" : "command";
}

std::string printable(std::string_view s) {
  return apop::printable(s, {.max = 120, .hex_escape = false, .ellipsis = false});
}

class Engine {
 public:
  explicit Engine(const Options& o)
      : o_(o), io_(1), duration_timer_(io_), signals_(io_, SIGINT, SIGTERM) {}

  Result<Report> run() {
    if (o_.accounts.empty()) return make_error(Errc::invalid, "no accounts");
    if (o_.concurrency == 0) return make_error(Errc::invalid, "concurrency must be at least 1");
    if (o_.sessions == 0 && o_.duration.count() == 0) {
      return make_error(Errc::invalid, "unbounded run: give a session count or a duration");
    }
    asio::error_code ec;
    tcp::resolver resolver(io_);
    auto results = resolver.resolve(o_.host, std::to_string(o_.port), ec);
    if (ec || results.empty()) {
      return make_error(Errc::not_found, "cannot resolve " + o_.host + ": " + ec.message());
    }
    endpoint_ = results.begin()->endpoint();
    if (o_.tls) {
      if (auto r = setup_tls(); !r) return r.error();
    }
    for (std::size_t i = 0; i < o_.accounts.size(); ++i) free_accounts_.push_back(i);

    report_.target = o_.host + ":" + std::to_string(o_.port);
    report_.workload = o_.workload;
    report_.auth = o_.auth;
    report_.tls = o_.tls;
    workers_ = o_.concurrency;
    if (o_.sessions != 0 && o_.sessions < workers_) workers_ = static_cast<unsigned>(o_.sessions);
    report_.concurrency = workers_;

    signals_.async_wait([this](const asio::error_code& e, int) {
      if (e) return;
      stop("signal");
      signals_.async_wait([this](const asio::error_code& e2, int) {
        if (!e2) io_.stop();  // a second signal: give up on sessions in flight
      });
    });
    if (o_.duration.count() > 0) {
      duration_timer_.expires_after(o_.duration);
      duration_timer_.async_wait([this](const asio::error_code& e) {
        if (!e) stop("duration");
      });
    }
    t0_ = Clock::now();
    live_workers_ = workers_;
    for (unsigned w = 0; w < workers_; ++w) {
      asio::co_spawn(io_, worker(), asio::detached);
    }
    io_.run();
    report_.elapsed_s = std::chrono::duration<double>(end_ - t0_).count();
    if (end_ < t0_) report_.elapsed_s = std::chrono::duration<double>(Clock::now() - t0_).count();
    return std::move(report_);
  }

 private:
  Result<void> setup_tls() {
    ssl_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    ssl_->set_options(asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                      asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    asio::error_code ec;
    if (o_.tls_options.insecure) {
      ssl_->set_verify_mode(asio::ssl::verify_none);
      return {};
    }
    ssl_->set_verify_mode(asio::ssl::verify_peer);
    if (!o_.tls_options.ca_file.empty()) {
      ssl_->load_verify_file(o_.tls_options.ca_file, ec);
      if (ec) {
        return make_error(Errc::invalid, "cannot load the CA file " + o_.tls_options.ca_file +
                                             ": " + ec.message());
      }
    } else {
      ssl_->set_default_verify_paths(ec);
      if (ec) return make_error(Errc::invalid, "cannot load the system CA store: " + ec.message());
    }
    return {};
  }

  void stop(const char* why) {
    (void)why;
    stopping_ = true;
    for (auto* t : holds_) t->cancel();
  }

  void finish_worker() {
    if (--live_workers_ == 0) {
      end_ = Clock::now();
      duration_timer_.cancel();
      asio::error_code ec;
      signals_.cancel(ec);
    }
  }

  asio::awaitable<void> worker() {
    while (!stopping_ && (o_.sessions == 0 || started_ < o_.sessions)) {
      std::uint64_t idx = started_++;
      co_await one_session(idx);
    }
    finish_worker();
  }

  // Every session in flight is holding and no more will start: tell the caller.
  void maybe_announce() {
    if (announced_ || holding_ == 0 || holding_ != in_flight_) return;
    if (!stopping_ && o_.sessions != 0 && started_ < o_.sessions) return;
    if (o_.sessions == 0 && !stopping_) return;
    announced_ = true;
    if (o_.progress) {
      o_.progress(
          fmt::format("holding {} sessions ({} failed)", holding_, report_.sessions_failed));
    }
  }

  std::size_t take_account() {
    if (!free_accounts_.empty()) {
      std::size_t a = free_accounts_.front();
      free_accounts_.pop_front();
      return a;
    }
    return rr_++ % o_.accounts.size();  // fewer accounts than sessions in flight: share
  }

  asio::awaitable<void> one_session(std::uint64_t idx) {
    Session s(io_, idx);
    std::size_t account = take_account();
    ++in_flight_;
    report_.peak_in_flight = std::max<std::uint64_t>(report_.peak_in_flight, in_flight_);
    s.deadline = Clock::now() + o_.timeout;
    Clock::time_point t_start = Clock::now();
    std::chrono::microseconds held{0};
    auto r = co_await (body(s, o_.accounts[account], held) || watchdog(s));
    bool ok = r.index() == 0 && std::get<0>(r);
    if (s.timed_out) s.fail("timeout", "no reply within the timeout");
    asio::error_code ec;
    s.sock.close(ec);
    free_accounts_.push_back(account);
    --in_flight_;
    if (ok) {
      ++report_.sessions_ok;
      report_.session.add(micros_since(t_start) - static_cast<std::uint64_t>(held.count()));
    } else {
      ++report_.sessions_failed;
      if (s.err_kind.empty()) s.fail("io", "session aborted");
      ++report_.errors[s.err_kind];
      report_.error_samples.emplace(s.err_kind, s.err_message);
    }
    maybe_announce();
  }

  asio::awaitable<void> watchdog(Session& s) {
    asio::steady_timer t(io_);
    for (;;) {
      t.expires_at(s.deadline);
      auto [ec] = co_await t.async_wait(use_tuple);
      if (ec == asio::error::operation_aborted) co_return;  // the session finished first
      if (Clock::now() >= s.deadline) {
        s.timed_out = true;
        asio::error_code ignored;
        s.sock.close(ignored);  // aborts whatever the session waits for, TLS included
        co_return;
      }
    }
  }

  void touch(Session& s) { s.deadline = Clock::now() + o_.timeout; }

  asio::awaitable<std::tuple<asio::error_code, std::size_t>> read_some(Session& s,
                                                                       std::size_t want) {
    if (s.buf.size() < want) s.buf.resize(want);
    auto b = asio::buffer(s.buf.data(), s.buf.size());
    std::tuple<asio::error_code, std::size_t> r;
    if (s.tls) {
      r = co_await s.tls->async_read_some(b, use_tuple);
    } else {
      r = co_await s.sock.async_read_some(b, use_tuple);
    }
    report_.bytes_received += std::get<1>(r);
    touch(s);
    co_return r;
  }

  asio::awaitable<bool> write(Session& s, std::string_view data) {
    touch(s);
    std::tuple<asio::error_code, std::size_t> r;
    if (s.tls) {
      r = co_await asio::async_write(*s.tls, asio::buffer(data), use_tuple);
    } else {
      r = co_await asio::async_write(s.sock, asio::buffer(data), use_tuple);
    }
    report_.bytes_sent += std::get<1>(r);
    if (auto ec = std::get<0>(r)) co_return s.fail("io", "write: " + ec.message());
    co_return true;
  }

  static bool read_failed(Session& s, const asio::error_code& ec) {
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
      return s.fail("closed", "the server closed the connection");
    }
    return s.fail("io", "read: " + ec.message());
  }

  // One line without its line end.
  asio::awaitable<bool> read_line(Session& s, std::string& line) {
    for (;;) {
      std::size_t nl = s.pending.find('\n', s.off);
      if (nl != std::string::npos) {
        std::size_t end = nl;
        if (end > s.off && s.pending[end - 1] == '\r') --end;
        line.assign(s.pending, s.off, end - s.off);
        s.off = nl + 1;
        if (s.off == s.pending.size()) {
          s.pending.clear();
          s.off = 0;
        }
        co_return true;
      }
      if (s.pending.size() - s.off > kMaxLine) {
        co_return s.fail("protocol", "overlong reply line");
      }
      auto [ec, n] = co_await read_some(s, kSmallBuffer);
      if (ec) co_return read_failed(s, ec);
      if (s.off > 0) {
        s.pending.erase(0, s.off);
        s.off = 0;
      }
      s.pending.append(s.buf.data(), n);
    }
  }

  // A status line; `what` names the command for messages.
  asio::awaitable<bool> read_reply(Session& s, Reply& reply, std::string_view what,
                                   bool during_auth) {
    std::string line;
    if (!co_await read_line(s, line)) co_return false;
    auto r = parse_reply(line);
    if (!r) co_return s.fail("protocol", fmt::format("{}: {}", what, printable(line)));
    reply = std::move(*r);
    if (!reply.ok) {
      co_return s.fail(error_kind(reply, during_auth),
                       fmt::format("{}: {}", what, printable(line)));
    }
    co_return true;
  }

  // Skips a multi-line body up to its terminator, without keeping it.
  asio::awaitable<bool> skip_body(Session& s) {
    TerminatorScanner sc;
    if (s.off < s.pending.size()) {
      auto end = sc.feed(std::string_view(s.pending).substr(s.off));
      if (end) {
        s.off += *end;
        if (s.off == s.pending.size()) {
          s.pending.clear();
          s.off = 0;
        }
        co_return true;
      }
    }
    s.pending.clear();
    s.off = 0;
    for (;;) {
      auto [ec, n] = co_await read_some(s, kBodyBuffer);
      if (ec) co_return read_failed(s, ec);
      auto end = sc.feed(std::string_view(s.buf.data(), n));
      if (end) {
        s.pending.assign(s.buf.data() + *end, n - *end);
        co_return true;
      }
    }
  }

  asio::awaitable<bool> command(Session& s, const Step& step) {
    Clock::time_point t = Clock::now();
    if (!co_await write(s, step_command(step))) co_return false;
    Reply reply;
    if (!co_await read_reply(s, reply, step_name(step.kind), false)) co_return false;
    if (step_multiline(step.kind)) {
      if (!co_await skip_body(s)) co_return false;
      if (step.kind == Step::Kind::retr || step.kind == Step::Kind::top) ++report_.messages;
    }
    report_.commands[std::string(step_name(step.kind))].add(micros_since(t));
    co_return true;
  }

  asio::awaitable<bool> connect(Session& s, std::string& greeting) {
    Clock::time_point t = Clock::now();
    auto [ec] = co_await s.sock.async_connect(endpoint_, use_tuple);
    if (ec) co_return s.fail("connect", "connect: " + ec.message());
    asio::error_code ignored;
    s.sock.set_option(tcp::no_delay(true), ignored);
    if (o_.tls) {
      Clock::time_point th = Clock::now();
      s.tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(s.sock, *ssl_);
      std::string name = o_.tls_options.server_name.empty() ? o_.host : o_.tls_options.server_name;
      asio::error_code addr_ec;
      (void)asio::ip::make_address(name, addr_ec);
      if (addr_ec) SSL_set_tlsext_host_name(s.tls->native_handle(), name.c_str());
      if (!o_.tls_options.insecure) {
        s.tls->set_verify_callback(asio::ssl::host_name_verification(name));
      }
      touch(s);
      auto [hec] = co_await s.tls->async_handshake(asio::ssl::stream_base::client, use_tuple);
      if (hec) co_return s.fail("tls", "TLS handshake: " + hec.message());
      report_.commands["tls"].add(micros_since(th));
    }
    Reply reply;
    if (!co_await read_line(s, greeting)) co_return false;
    auto r = parse_reply(greeting);
    if (!r || !r->ok) {
      co_return s.fail(r ? error_kind(*r, false) : "protocol", "greeting: " + printable(greeting));
    }
    report_.commands["connect"].add(micros_since(t));
    co_return true;
  }

  asio::awaitable<bool> login(Session& s, const Account& a, const std::string& greeting) {
    Clock::time_point t = Clock::now();
    Reply reply;
    switch (o_.auth) {
      case AuthKind::apop: {
        Challenge c = extract_challenge(greeting);
        if (c.status != Challenge::Status::valid) {
          co_return s.fail("greeting",
                           "no valid APOP challenge in the greeting: " + printable(greeting));
        }
        std::string cmd = "APOP " + a.user + " " + apop_digest(c.value, a.secret) + "\r\n";
        if (!co_await write(s, cmd)) co_return false;
        if (!co_await read_reply(s, reply, "APOP", true)) co_return false;
        break;
      }
      case AuthKind::user:
        if (!co_await write(s, "USER " + a.user + "\r\n")) co_return false;
        if (!co_await read_reply(s, reply, "USER", true)) co_return false;
        if (!co_await write(s, "PASS " + a.secret + "\r\n")) co_return false;
        if (!co_await read_reply(s, reply, "PASS", true)) co_return false;
        break;
      case AuthKind::scram_sha_256:
        if (!co_await scram(s, a)) co_return false;
        break;
      case AuthKind::none:
        co_return true;  // stays in the AUTHORIZATION state
    }
    report_.commands["auth"].add(micros_since(t));
    co_return true;
  }

  asio::awaitable<bool> continuation(Session& s, std::string& out) {
    std::string line;
    if (!co_await read_line(s, line)) co_return false;
    if (!is_continuation(line)) {
      auto r = parse_reply(line);
      if (r && !r->ok) co_return s.fail(error_kind(*r, true), "AUTH: " + printable(line));
      co_return s.fail("protocol", "AUTH: expected a continuation: " + printable(line));
    }
    auto c = parse_continuation(line);
    if (!c) co_return s.fail("protocol", "AUTH: " + c.error().message);
    out = std::move(*c);
    co_return true;
  }

  asio::awaitable<bool> scram(Session& s, const Account& a) {
    ScramClient c(a.user, a.secret);
    std::string first = auth::base64_encode(c.client_first());
    if (!co_await write(s, "AUTH SCRAM-SHA-256 " + first + "\r\n")) co_return false;
    std::string server_first;
    if (!co_await continuation(s, server_first)) co_return false;
    auto final_msg = c.client_final(server_first);
    if (!final_msg) {
      (void)co_await write(s, "*\r\n");
      co_return s.fail("protocol", "SCRAM: " + final_msg.error().message);
    }
    if (!co_await write(s, auth::base64_encode(*final_msg) + "\r\n")) co_return false;
    std::string server_final;
    if (!co_await continuation(s, server_final)) co_return false;
    if (auto v = c.verify_server_final(server_final); !v) {
      (void)co_await write(s, "*\r\n");
      co_return s.fail("auth", "SCRAM: " + v.error().message);
    }
    if (!co_await write(s, "\r\n")) co_return false;
    Reply reply;
    co_return co_await read_reply(s, reply, "AUTH SCRAM-SHA-256", true);
  }

  asio::awaitable<void> hold(Session& s, std::chrono::microseconds& held) {
    if (o_.hold.count() == 0 || stopping_) co_return;
    Clock::time_point t = Clock::now();
    // An idle session keeps no buffers.
    std::vector<char>().swap(s.buf);
    std::string().swap(s.pending);
    s.off = 0;
    asio::steady_timer timer(io_, o_.hold);
    s.deadline = Clock::now() + o_.hold + o_.timeout;
    holds_.insert(&timer);
    ++holding_;
    maybe_announce();
    (void)co_await timer.async_wait(use_tuple);
    --holding_;
    holds_.erase(&timer);
    touch(s);
    held = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t);
  }

  asio::awaitable<bool> body(Session& s, const Account& a, std::chrono::microseconds& held) {
    std::string greeting;
    if (!co_await connect(s, greeting)) co_return false;
    if (!co_await login(s, a, greeting)) co_return false;
    if (o_.auth == AuthKind::none) {  // not logged in: no workload, only QUIT
      co_await hold(s, held);
      co_return co_await command(s, Step{Step::Kind::quit, 0});
    }
    std::uint64_t count = 0;
    if (needs_stat(o_.workload)) {
      Clock::time_point t = Clock::now();
      if (!co_await write(s, "STAT\r\n")) co_return false;
      Reply reply;
      if (!co_await read_reply(s, reply, "STAT", false)) co_return false;
      auto st = parse_stat(reply.text);
      if (!st) co_return s.fail("protocol", "STAT: " + printable(reply.text));
      count = st->count;
      report_.commands["STAT"].add(micros_since(t));
    }
    for (const Step& step : plan(o_.workload, count, o_.max_messages, s.index)) {
      if (step.kind == Step::Kind::quit) co_await hold(s, held);
      if (!co_await command(s, step)) co_return false;
    }
    co_return true;
  }

  const Options& o_;
  asio::io_context io_;
  asio::steady_timer duration_timer_;
  asio::signal_set signals_;
  tcp::endpoint endpoint_;
  std::unique_ptr<asio::ssl::context> ssl_;
  Report report_;
  unsigned workers_ = 0;
  unsigned live_workers_ = 0;
  std::uint64_t started_ = 0;
  std::uint64_t in_flight_ = 0;
  std::uint64_t holding_ = 0;
  bool stopping_ = false;
  bool announced_ = false;
  std::deque<std::size_t> free_accounts_;
  std::size_t rr_ = 0;
  std::set<asio::steady_timer*> holds_;
  Clock::time_point t0_;
  Clock::time_point end_;
};

}  // namespace

Result<Report> run(const Options& opts) {
  // OpenSSL writes with write(2): a server that hangs up must not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  Engine e(opts);
  return e.run();
}

}  // namespace apop::client::bench
