#include "net/server.hpp"

#include <spdlog/spdlog.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <array>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ssl.hpp>
#include <list>
#include <memory>
#include <utility>

#include "common/parse.hpp"
#include "common/text.hpp"
#include "common/wipe.hpp"
#include "net/auth_channel.hpp"
#include "net/conn_limits.hpp"
#include "net/listeners_internal.hpp"
#include "net/metrics.hpp"
#include "net/session_driver.hpp"

namespace apop::net {

using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {

// User names in logs come from the network: print only safe characters.
std::string log_safe(std::string_view s) {
  std::string out = printable(
      s, {.max = 64, .space = false, .hex_escape = false, .replace = "\"\\", .ellipsis = false});
  if (out.empty()) out = "-";
  return out;
}

class LogSink final : public pop3::EventSink {
 public:
  // `addr`: the client's ADDR:PORT; `prefix`: the IPv6 prefix the client is
  // counted under (address_key), empty when that is its address.
  LogSink(std::string addr, std::string prefix)
      : addr_(std::move(addr)), prefix_(std::move(prefix)) {}
  // Stable formats (fail2ban filters and tests read them):
  //   login ok user=U mech=M addr=A tls=0|1 credential=password|device:NAME
  //   login failed user=U mech=M addr=A tls=0|1 reason=auth|in-use|mailbox-error
  //   login failed user=U mech=M addr=A tls=0|1 reason=store-unavailable  (account database down)
  //   login failed user=U mech=M addr=A tls=0|1 reason=policy policy=mechanism|tls|apop-tls
  //   login failed user=U mech=M addr=A tls=0|1 reason=throttled|blocked  (auth/throttle.hpp)
  //     (... reason=blocked prefix=P/LEN when an IPv6 client is counted by its prefix)
  //   login refused user=U mech=M addr=A tls=0|1 reason=login-delay retry_after=SECS
  //     (correct credentials, RFC 2449 LOGIN-DELAY: not a failure, never for fail2ban)
  void on_login(const pop3::LoginEvent& e) override {
    if (metrics != nullptr) {
      metrics->login(e.mechanism, Metrics::login_result(e));
      if (e.result == pop3::LoginResult::ok) metrics->session_started(*listener);
    }
    const std::string user = log_safe(e.user);
    const int tls = e.tls ? 1 : 0;
    switch (e.result) {
      case pop3::LoginResult::ok:
        spdlog::info("login ok user={} mech={} addr={} tls={} credential={}", user, e.mechanism,
                     addr_, tls, log_safe(e.credential));
        break;
      case pop3::LoginResult::failed:
        if (e.failure == pop3::AuthFailure::blocked && !prefix_.empty()) {
          spdlog::warn("login failed user={} mech={} addr={} tls={} reason=blocked prefix={}", user,
                       e.mechanism, addr_, tls, prefix_);
        } else if (e.failure == pop3::AuthFailure::throttled ||
                   e.failure == pop3::AuthFailure::blocked) {
          spdlog::warn("login failed user={} mech={} addr={} tls={} reason={}", user, e.mechanism,
                       addr_, tls, pop3::auth_failure_name(e.failure));
        } else if (pop3::is_policy_refusal(e.failure)) {
          spdlog::warn(
              "login failed user={} mech={} addr={} tls={} reason=policy policy={}", user,
              e.mechanism, addr_, tls,
              pop3::auth_failure_name(e.failure).substr(std::string_view("policy-").size()));
        } else {
          spdlog::warn("login failed user={} mech={} addr={} tls={} reason=auth", user, e.mechanism,
                       addr_, tls);
        }
        break;
      case pop3::LoginResult::in_use:
        spdlog::warn("login failed user={} mech={} addr={} tls={} reason=in-use", user, e.mechanism,
                     addr_, tls);
        break;
      case pop3::LoginResult::error:
        spdlog::error(
            "login failed user={} mech={} addr={} tls={} reason={}", user, e.mechanism, addr_, tls,
            e.failure == pop3::AuthFailure::temporary ? "store-unavailable" : "mailbox-error");
        break;
      case pop3::LoginResult::delayed:
        spdlog::info(
            "login refused user={} mech={} addr={} tls={} reason=login-delay retry_after={}", user,
            e.mechanism, addr_, tls, e.retry_after);
        break;
    }
  }
  const std::string& addr() const { return addr_; }
  // Set by the driver; on_login() runs on the event loop or on an auth
  // thread (Metrics is thread-safe).
  Metrics* metrics = nullptr;
  Metrics::Listener* listener = nullptr;

 private:
  std::string addr_;
  std::string prefix_;
};

// The client's IP as logs and the loopback test see it: IPv4-mapped IPv6
// addresses in their IPv4 form (the limits and the throttle count under its
// address_key()).
std::string client_ip(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
  }
  return a.to_string();
}

// One client connection: the TCP socket, and the TLS stream over it once
// TLS is active (at accept for implicit TLS, after STLS otherwise).
struct Connection {
  explicit Connection(tcp::socket s) : sock(std::move(s)) {}
  tcp::socket sock;
  TlsContext ctx;  // keeps the certificate this session uses alive across reloads
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;

  // Reads what the client sent and hands it to `sink` (a callable taking a
  // std::string_view). An idle plaintext session owns no read buffer: it
  // waits for readability, then reads into the thread's buffer, which is
  // consumed before the coroutine suspends again. A TLS session needs a
  // buffer across the suspension (the TLS engine fills it), a small one,
  // allocated on first use.
  template <typename Sink>
  asio::awaitable<asio::error_code> read_into(Sink&& sink) {
    if (tls) {
      if (!tls_in) tls_in = std::make_unique<std::array<char, kTlsReadBuffer>>();
      auto [ec, got] = co_await tls->async_read_some(asio::buffer(*tls_in), use_tuple);
      if (ec) co_return ec;
      sink(std::string_view(tls_in->data(), got));
      wipe(tls_in->data(), got);  // a PASS line or SASL response: no copy left behind
      co_return asio::error_code{};
    }
    thread_local std::array<char, kPlainReadBuffer> shared;
    for (;;) {
      asio::error_code ec;
      // Non-blocking socket (set at accept): would_block after a spurious
      // wakeup, then wait again.
      const std::size_t got = sock.read_some(asio::buffer(shared), ec);
      if (!ec) {
        sink(std::string_view(shared.data(), got));
        wipe(shared.data(), got);  // a PASS line or SASL response: no copy left behind
        co_return ec;
      }
      if (ec != asio::error::would_block && ec != asio::error::try_again) co_return ec;
      auto [wec] = co_await sock.async_wait(tcp::socket::wait_read, use_tuple);
      if (wec) co_return wec;
    }
  }
  static constexpr std::size_t kPlainReadBuffer = 16 * 1024;
  static constexpr std::size_t kTlsReadBuffer = 4 * 1024;
  std::unique_ptr<std::array<char, kTlsReadBuffer>> tls_in;
  asio::awaitable<std::tuple<asio::error_code, std::size_t>> write(asio::const_buffer b) {
    if (tls) co_return co_await asio::async_write(*tls, b, use_tuple);
    co_return co_await asio::async_write(sock, b, use_tuple);
  }
  asio::awaitable<asio::error_code> handshake(const TlsContext& context) {
    ctx = context;
    tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(sock, *ctx);
    auto [ec] = co_await tls->async_handshake(asio::ssl::stream_base::server, use_tuple);
    co_return ec;
  }
  bool secure() const { return tls != nullptr; }
  void cancel() {
    asio::error_code ec;
    sock.cancel(ec);
  }
  // Best effort on the non-blocking socket: what fits the send buffer now.
  void write_now(std::string_view text) {
    asio::error_code ec;
    sock.non_blocking(true, ec);
    sock.write_some(asio::buffer(text), ec);
  }
};
static_assert(SessionStream<Connection>);

}  // namespace

struct Server::Impl {
  ServerOptions options;
  pop3::Authenticator& auth;
  pop3::MaildropOpener& opener;
  ChallengeSource challenge;
  // Declared before io: sessions' frames, destroyed with io, release into them.
  ConnectionLimits conn_limits;  // event-loop thread only
  unsigned tls_refusals = 0;     // refuse_tls() handshakes under way (event-loop thread)
  UserSessions user_sessions;    // thread-safe
  std::shared_ptr<SharedTally> shared_limits;  // workers: counts across processes
  // Declared before io and auth_pool: session frames and login steps still
  // running when those are destroyed update it. Thread-safe; scraped by the
  // exposer's own threads.
  Metrics metrics;
  asio::io_context io{1};
  // Declared after io: its socket and timer go before the io_context; the
  // frames of sessions still awaiting a check, destroyed with io, do not
  // need it (net/auth_channel.hpp).
  std::unique_ptr<AuthChannel> auth_channel;
  // Runs AUTHORIZATION-state steps (slow password hashes, SQLite lookups,
  // opening a maildrop) so that they never stall the event loop.
  asio::thread_pool auth_pool;
  std::vector<tcp::acceptor> acceptors;
  std::vector<bool> acceptor_tls;                    // parallel to acceptors: implicit TLS
  std::vector<Metrics::Listener*> acceptor_metrics;  // parallel to acceptors
  TlsContext tls_ctx;                                // current certificate; replaced on reload
  std::list<tcp::socket*> live;                      // open session sockets, for shutdown
  asio::signal_set signals{io, SIGINT, SIGTERM};
  asio::signal_set reload_signal{io, SIGHUP};
  std::function<void()> reload_hook;  // SIGHUP: set by on_reload()
  bool stopping = false;
  bool shared_listeners = false;  // adopt(): other processes accept on them too

  Impl(ServerOptions o, pop3::Authenticator& a, pop3::MaildropOpener& m, ChallengeSource c)
      : options(std::move(o)),
        auth(a),
        opener(m),
        challenge(std::move(c)),
        auth_pool(options.auth_threads == 0 ? 1 : options.auth_threads) {}

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, bool implicit_tls,
                                    Metrics::Listener& ml) {
    for (;;) {
      // The peer's address comes with accept(2): no getpeername per session.
      tcp::endpoint remote;
      auto [ec, sock] = co_await acceptor.async_accept(remote, use_tuple);
      if (stopping) co_return;
      if (ec) {
        if (ec == asio::error::operation_aborted) co_return;
        // EMFILE and friends: back off briefly rather than spin.
        spdlog::error("accept failed: {}", ec.message());
        asio::steady_timer t(io, std::chrono::milliseconds(100));
        co_await t.async_wait(use_tuple);
        continue;
      }
      asio::co_spawn(io, run_session(std::move(sock), remote, implicit_tls, ml), asio::detached);
      if (shared_listeners) {
        // Other workers accept on the same socket: take one connection per
        // turn of the loop. The new session's first step (with implicit
        // TLS, the handshake's signature) runs before this worker accepts
        // again, and meanwhile an idle worker takes the next connection,
        // instead of one worker taking a burst and working through it while
        // the other waits.
        co_await asio::post(io, use_tuple);
      }
    }
  }

  static constexpr std::string_view kBusy =
      "-ERR [SYS/TEMP] Too many connections, try again later\r\n";

  // Over a connection limit on a plain listener: one line, then close (the
  // socket is still blocking-free: nothing was read, the write fits the
  // send buffer). `detail` is appended to the log line.
  void refuse(tcp::socket& sock, const std::string& addr, std::string_view reason,
              const std::string& detail) {
    spdlog::warn("connection refused addr={} reason={}{}", addr, reason, detail);
    asio::error_code ec;
    sock.non_blocking(true, ec);
    sock.write_some(asio::buffer(kBusy), ec);
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
  }

  // Over a connection limit on an implicit-TLS listener: the client's first
  // bytes are a ClientHello and it expects a ServerHello, so a plaintext line
  // would reach it as a bad TLS record ("wrong version number"). The line
  // goes inside TLS instead: handshake, -ERR, close. Kept cheap for a
  // flood: the connection is not counted against the limits, the handshake
  // and the write must finish within kTlsRefusalTimeout (or login_timeout
  // when shorter), and at most kMaxTlsRefusals run at once; beyond that the
  // connection is closed without a word (never with plaintext).
  asio::awaitable<void> refuse_tls(tcp::socket sock, const std::string& addr,
                                   std::string_view reason, const std::string& detail) {
    asio::error_code ec;
    if (tls_refusals >= limits::kMaxTlsRefusals || !tls_ctx) {
      spdlog::warn("connection refused addr={} reason={}{} tls=1 reply=none", addr, reason, detail);
      sock.shutdown(tcp::socket::shutdown_both, ec);
      sock.close(ec);
      co_return;
    }
    spdlog::warn("connection refused addr={} reason={}{} tls=1", addr, reason, detail);
    ++tls_refusals;
    struct Pending {
      unsigned& n;
      ~Pending() { --n; }
    } pending{tls_refusals};
    Connection conn(std::move(sock));
    auto it = live.insert(live.end(), &conn.sock);  // stop() cancels it
    const std::chrono::steady_clock::time_point deadline =
        std::chrono::steady_clock::now() +
        std::min<std::chrono::seconds>(options.login_timeout, limits::kTlsRefusalTimeout);
    const auto watchdog = std::make_shared<Watchdog<Connection>>(io.get_executor(), deadline, conn);
    watchdog->arm();
    if (auto hec = co_await conn.handshake(tls_ctx); !hec) {
      co_await conn.write(asio::buffer(kBusy));
    } else {
      spdlog::debug("disconnect addr={} reason=tls-handshake: {}", addr, hec.message());
    }
    watchdog->timer.cancel();
    live.erase(it);
    conn.sock.shutdown(tcp::socket::shutdown_both, ec);
    conn.sock.close(ec);
  }

  bool trusted_proxy(const std::string& ip) const {
    for (const auto& r : options.trusted_proxies) {
      if (range_contains(r, ip)) return true;
    }
    return false;
  }

  // Reads the PROXY header a trusted proxy sends first, and not one byte
  // more (the client's bytes behind it may be a TLS ClientHello, which the
  // TLS stream must read itself). Bounded: the parser refuses anything
  // longer than a header as soon as it sees it.
  static asio::awaitable<void> read_proxy_header(tcp::socket& sock,
                                                 std::optional<ProxyHeader>& header,
                                                 std::string& failure) {
    std::string buf;
    for (;;) {
      auto parsed = parse_proxy_header(buf);
      if (!parsed) {
        failure = parsed.error().message;
        co_return;
      }
      if (*parsed) {
        header = std::move(*parsed);
        co_return;
      }
      const std::size_t want = proxy_header_bytes_wanted(buf);
      const std::size_t had = buf.size();
      buf.resize(had + want);
      auto [ec, n] =
          co_await asio::async_read(sock, asio::buffer(buf.data() + had, want), use_tuple);
      if (ec) {
        failure = "connection closed before the PROXY header";
        co_return;
      }
    }
  }

  static asio::awaitable<void> sleep_for(std::chrono::steady_clock::duration d) {
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(use_tuple);
  }

  asio::awaitable<void> run_session(tcp::socket sock, tcp::endpoint remote, bool implicit_tls,
                                    Metrics::Listener& ml) {
    asio::error_code ec;
    const auto connected = std::chrono::steady_clock::now();
    metrics.connection_opened(ml);
    struct Counted {
      Metrics& m;
      Metrics::Listener& l;
      ~Counted() { m.connection_closed(l); }
    } counted{metrics, ml};
    sock.set_option(tcp::no_delay(true), ec);
    sock.non_blocking(true, ec);  // Connection::read_into reads without blocking
    std::string ip = client_ip(remote.address());
    std::string peer_text = endpoint_text(remote);
    // Behind a trusted load balancer the client is the one its PROXY
    // header names; from here on everything keys on that address.
    std::string via;  // "proxy=ADDR:PORT" for the connect log line
    const bool proxied = trusted_proxy(ip);
    if (proxied) {
      std::optional<ProxyHeader> header;
      std::string failure;
      auto live_it = live.insert(live.end(), &sock);
      auto outcome =
          co_await (read_proxy_header(sock, header, failure) || sleep_for(options.proxy_timeout));
      live.erase(live_it);
      if (outcome.index() == 1) failure = "no PROXY header within the timeout";
      if (!header) {
        if (!stopping) {
          spdlog::warn("disconnect addr={} reason=proxy-header detail=\"{}\"", peer_text, failure);
        }
        sock.close(ec);
        co_return;
      }
      via = " proxy=" + peer_text;
      if (!header->local) {
        asio::error_code aec;
        auto real = asio::ip::make_address(header->source, aec);
        if (aec) {  // the parser only returns valid addresses; be safe anyway
          sock.close(ec);
          co_return;
        }
        ip = client_ip(real);
        peer_text = endpoint_text(tcp::endpoint(real, header->source_port));
      }
    }
    // What the limits and the failed-login defence count the client under:
    // its IPv4 address, or its IPv6 prefix. Logs show its own address (and
    // the prefix where a count of it refuses the client).
    const std::string key = address_key(ip, options.ipv6_prefix_length);
    const std::string prefix = key == ip ? std::string() : key;
    const char* refused = nullptr;
    switch (conn_limits.admit(key, options.max_connections, options.max_connections_per_address)) {
      case ConnectionLimits::Verdict::ok:
        break;
      case ConnectionLimits::Verdict::total:
        refused = "max-connections";
        break;
      case ConnectionLimits::Verdict::per_address:
        refused = "max-connections-per-address";
        break;
    }
    if (refused != nullptr) {
      const bool per_address = std::string_view(refused) == "max-connections-per-address";
      const std::string detail = per_address && !prefix.empty() ? " prefix=" + prefix : "";
      if (implicit_tls) {
        co_await refuse_tls(std::move(sock), peer_text, refused, detail);
      } else {
        refuse(sock, peer_text, refused, detail);
      }
      co_return;
    }
    struct Admitted {
      ConnectionLimits& limits;
      const std::string& key;
      ~Admitted() { limits.release(key); }
    } admitted{conn_limits, key};
    SessionLimitOpener limited_opener(opener, user_sessions, options.max_sessions_per_user);
    Connection conn(std::move(sock));
    LogSink sink(peer_text, prefix);
    sink.metrics = &metrics;
    sink.listener = &ml;
    pop3::SessionConfig cfg = options.session;
    cfg.client_address = key;  // the throttle's key (any tracker: memory or PostgreSQL)
    // The real client's address: a proxy on loopback does not make its
    // clients "local".
    cfg.secure = options.secure_loopback && is_loopback(ip);
    cfg.stls_available = tls_ctx != nullptr && !implicit_tls;
    cfg.deferred_apop = auth_channel != nullptr && cfg.inline_apop;
    pop3::Session session(cfg, auth, limited_opener, challenge(), &sink);
    spdlog::debug("connect addr={}{}{}", sink.addr(), via, implicit_tls ? " tls=1" : "");
    auto it = live.insert(live.end(), &conn.sock);
    const DriverContext cx{options,  tls_ctx, stopping,          &auth_pool,
                           &metrics, &ml,     auth_channel.get()};
    SessionDriver<Connection> driver(conn, session, cx);
    const DriveResult result = co_await driver.run(
        implicit_tls, !proxied, std::chrono::steady_clock::now() + options.login_deadline);
    const bool timed_out = result.timed_out;
    live.erase(it);
    if (!result.failure.empty()) {
      spdlog::info("disconnect addr={} reason={}", sink.addr(), result.failure);
    }
    if (result.login_expired) spdlog::info("disconnect addr={} reason=login-deadline", sink.addr());
    driver.farewell(result);  // a plaintext client hears why it timed out
    // user() is set by a successful login only (a QUIT before login also
    // leaves AUTHORIZATION, for the closed state).
    const bool was_logged_in = !session.user().empty();
    const bool committed = session.stats().committed;
    session.abort();  // releases the maildrop lock; no UPDATE unless QUIT did it
    conn.sock.shutdown(tcp::socket::shutdown_both, ec);
    conn.sock.close(ec);
    if (was_logged_in) {
      const auto& st = session.stats();
      metrics.session_ended(ml, st, std::chrono::steady_clock::now() - connected);
      spdlog::info("logout user={} addr={} retr={}/{} top={} dele={}/{} reason={}",
                   log_safe(session.user()), sink.addr(), st.retr, st.retr_bytes, st.top,
                   st.deleted, st.deleted_bytes,
                   committed   ? "quit"
                   : timed_out ? "timeout"
                   : stopping  ? "shutdown"
                               : "disconnected");
    }
  }

  void arm_reload() {
    reload_signal.async_wait([this](const asio::error_code& ec, int) {
      if (ec) return;
      if (reload_hook) {
        reload_hook();
      } else if (options.tls.enabled()) {
        auto ctx = make_tls_context(options.tls);
        if (ctx) {
          tls_ctx = std::move(*ctx);
          spdlog::info("tls certificate reloaded cert={}", options.tls.cert_file);
        } else {
          spdlog::error("tls reload failed, keeping the old certificate: {}", ctx.error().message);
        }
      }
      arm_reload();
    });
  }
};

Server::Server(ServerOptions options, pop3::Authenticator& auth, pop3::MaildropOpener& opener,
               ChallengeSource challenge)
    : impl_(std::make_unique<Impl>(std::move(options), auth, opener, std::move(challenge))) {}

Server::~Server() = default;

Result<void> Server::bind() {
  auto ctx = load_tls(impl_->options);
  if (!ctx) return ctx.error();
  impl_->tls_ctx = std::move(*ctx);
  auto add = [this](tcp::acceptor acc, bool tls) -> Result<void> {
    auto ml = impl_->metrics.add_listener(endpoint_text(acc.local_endpoint()), tls);
    if (!ml) return ml.error();
    impl_->acceptors.push_back(std::move(acc));
    impl_->acceptor_tls.push_back(tls);
    impl_->acceptor_metrics.push_back(*ml);
    return {};
  };
  for (const ListenSpec& spec : impl_->options.listen) {
    auto acc = listen_on(impl_->io, spec);
    if (!acc) return acc.error();
    spdlog::info("listening on {}", endpoint_text(acc->local_endpoint()));
    if (auto r = add(std::move(*acc), false); !r) return r;
  }
  for (const ListenSpec& spec : impl_->options.tls_listen) {
    auto acc = listen_on(impl_->io, spec);
    if (!acc) return acc.error();
    spdlog::info("listening on {} (tls)", endpoint_text(acc->local_endpoint()));
    if (auto r = add(std::move(*acc), true); !r) return r;
  }
  if (impl_->options.metrics_listen) {
    auto where = impl_->metrics.expose(*impl_->options.metrics_listen);
    if (!where) return where.error();
    spdlog::info("metrics on {}", *where);
  }
  return {};
}

Result<void> Server::adopt(std::vector<BoundListener> listeners) {
  auto ctx = load_tls(impl_->options);
  if (!ctx) return ctx.error();
  impl_->tls_ctx = std::move(*ctx);
  impl_->shared_listeners = true;
  for (BoundListener& l : listeners) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
      return make_error(Errc::temporary, "listener " + l.where + ": getsockname failed");
    }
    tcp::acceptor acc(impl_->io);
    asio::error_code ec;
    acc.assign(ss.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), l.fd.get(), ec);
    if (ec) return make_error(Errc::temporary, "listener " + l.where + ": " + ec.message());
    auto ml = impl_->metrics.add_listener(l.where, l.tls);
    if (!ml) return ml.error();
    l.fd.release();
    impl_->acceptors.push_back(std::move(acc));
    impl_->acceptor_tls.push_back(l.tls);
    impl_->acceptor_metrics.push_back(*ml);
  }
  return {};
}

Result<void> Server::reload_tls() {
  if (!impl_->options.tls.enabled()) return {};
  auto ctx = make_tls_context(impl_->options.tls);
  if (!ctx) return ctx.error();
  asio::post(impl_->io, [impl = impl_.get(), c = std::move(*ctx)] { impl->tls_ctx = c; });
  return {};
}

Result<void> Server::reconfigure(const ServerOptions& next) {
  TlsContext ctx;
  if (next.tls.enabled()) {
    auto made = make_tls_context(next.tls);
    if (!made) return made.error();
    ctx = std::move(*made);
  } else if (!impl_->options.tls_listen.empty()) {
    return make_error(Errc::invalid, "TLS listeners need --tls-cert and --tls-key");
  }
  ServerOptions merged = next;
  merged.listen = impl_->options.listen;
  merged.tls_listen = impl_->options.tls_listen;
  merged.metrics_listen = impl_->options.metrics_listen;
  merged.auth_threads = impl_->options.auth_threads;
  impl_->options = std::move(merged);
  impl_->tls_ctx = std::move(ctx);
  return {};
}

void Server::on_reload(std::function<void()> hook) { impl_->reload_hook = std::move(hook); }

AuthChannel& Server::use_auth_channel(UniqueFd fd) {
  impl_->auth_channel = std::make_unique<AuthChannel>(impl_->io, std::move(fd));
  return *impl_->auth_channel;
}

void Server::share_metrics(std::shared_ptr<MetricsTable> table, unsigned row) {
  impl_->metrics.share(std::move(table), row);
}

void Server::count_quota_rejection() { impl_->metrics.quota_rejection(); }

void Server::share_limits(std::shared_ptr<SharedTally> shared) {
  impl_->conn_limits.share(shared.get());
  impl_->user_sessions.share(shared.get());
  impl_->shared_limits = std::move(shared);
}

std::vector<std::uint16_t> Server::ports() const {
  std::vector<std::uint16_t> p;
  for (auto& a : impl_->acceptors) p.push_back(a.local_endpoint().port());
  return p;
}

void Server::run() {
  impl_->signals.async_wait([this](const asio::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("signal {} received, shutting down", sig);
    stop();
  });
  impl_->arm_reload();
  for (std::size_t i = 0; i < impl_->acceptors.size(); ++i) {
    asio::co_spawn(impl_->io,
                   impl_->accept_loop(impl_->acceptors[i], impl_->acceptor_tls[i],
                                      *impl_->acceptor_metrics[i]),
                   asio::detached);
  }
  impl_->io.run();
  spdlog::info("stopped");
}

void Server::stop() {
  asio::post(impl_->io, [impl = impl_.get()] {
    if (impl->stopping) return;
    impl->stopping = true;
    asio::error_code ec;
    impl->signals.cancel(ec);
    impl->reload_signal.cancel(ec);
    for (auto& acc : impl->acceptors) acc.close(ec);
    // Sessions end without UPDATE: nothing is deleted, no mail is lost.
    for (tcp::socket* s : impl->live) s->cancel(ec);
    // Sessions awaiting an APOP verdict get [SYS/TEMP] now, and the
    // channel's pending read no longer keeps the loop running.
    if (impl->auth_channel) impl->auth_channel->close();
  });
}

}  // namespace apop::net
