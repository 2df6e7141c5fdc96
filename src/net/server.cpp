#include "net/server.hpp"

#include <spdlog/spdlog.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <list>

namespace apop::net {

using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

Result<ListenSpec> parse_listen(std::string_view text) {
  std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size()) {
    return make_error(Errc::invalid, "listen address must be ADDR:PORT: " + std::string(text));
  }
  std::string_view host = text.substr(0, colon);
  std::string_view port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned long p = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || p > 65535) {
      return make_error(Errc::invalid, "bad port in listen address: " + std::string(text));
    }
    p = p * 10 + static_cast<unsigned>(c - '0');
  }
  if (p > 65535) return make_error(Errc::invalid, "bad port in listen address: " + std::string(text));
  asio::error_code ec;
  asio::ip::make_address(std::string(host), ec);
  if (ec) return make_error(Errc::invalid, "bad IP address in listen address: " + std::string(text));
  return ListenSpec{std::string(host), static_cast<std::uint16_t>(p)};
}

bool is_loopback(std::string_view address) {
  asio::error_code ec;
  auto a = asio::ip::make_address(std::string(address), ec);
  if (ec) return false;
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).is_loopback();
  }
  return a.is_loopback();
}

namespace {

std::string endpoint_text(const tcp::endpoint& ep) {
  auto a = ep.address();
  if (a.is_v6()) return "[" + a.to_string() + "]:" + std::to_string(ep.port());
  return a.to_string() + ":" + std::to_string(ep.port());
}

// User names in logs come from the network: print only safe characters.
std::string log_safe(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) {
    out.push_back(c > 0x20 && c < 0x7f && c != '"' && c != '\\' ? c : '?');
  }
  if (out.empty()) out = "-";
  return out;
}

class LogSink final : public pop3::EventSink {
 public:
  explicit LogSink(std::string addr) : addr_(std::move(addr)) {}
  void on_login(std::string_view user, std::string_view mech, pop3::LoginResult r) override {
    switch (r) {
      case pop3::LoginResult::ok:
        spdlog::info("login ok user={} mech={} addr={}", log_safe(user), mech, addr_);
        break;
      case pop3::LoginResult::failed:
        spdlog::warn("login failed user={} mech={} addr={} reason=auth", log_safe(user), mech,
                     addr_);
        break;
      case pop3::LoginResult::in_use:
        spdlog::warn("login failed user={} mech={} addr={} reason=in-use", log_safe(user), mech,
                     addr_);
        break;
      case pop3::LoginResult::error:
        spdlog::error("login failed user={} mech={} addr={} reason=mailbox-error", log_safe(user),
                      mech, addr_);
        break;
    }
  }
  const std::string& addr() const { return addr_; }

 private:
  std::string addr_;
};

}  // namespace

struct Server::Impl {
  ServerOptions options;
  pop3::Authenticator& auth;
  pop3::MaildropOpener& opener;
  ChallengeSource challenge;
  asio::io_context io{1};
  std::vector<tcp::acceptor> acceptors;
  std::list<tcp::socket*> live;  // open session sockets, for shutdown
  asio::signal_set signals{io, SIGINT, SIGTERM};
  bool stopping = false;

  Impl(ServerOptions o, pop3::Authenticator& a, pop3::MaildropOpener& m, ChallengeSource c)
      : options(std::move(o)), auth(a), opener(m), challenge(std::move(c)) {}

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor) {
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
      if (stopping) co_return;
      if (ec) {
        if (ec == asio::error::operation_aborted) co_return;
        // EMFILE and friends: back off briefly rather than spin.
        spdlog::error("accept failed: {}", ec.message());
        asio::steady_timer t(io, std::chrono::milliseconds(100));
        co_await t.async_wait(use_tuple);
        continue;
      }
      asio::co_spawn(io, run_session(std::move(sock)), asio::detached);
    }
  }

  // Closes the socket when the deadline passes (the Asio deadline pattern).
  static asio::awaitable<void> watchdog(std::chrono::steady_clock::time_point& deadline,
                                        bool& timed_out) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    auto now = std::chrono::steady_clock::now();
    while (deadline > now) {
      timer.expires_at(deadline);
      auto [ec] = co_await timer.async_wait(use_tuple);
      if (ec) co_return;  // cancelled: the session finished
      now = std::chrono::steady_clock::now();
    }
    timed_out = true;
  }

  asio::awaitable<void> serve(tcp::socket& sock, pop3::Session& session,
                              std::chrono::steady_clock::time_point& deadline) {
    std::string out = session.greeting();
    std::array<char, 8192> in;
    for (;;) {
      pop3::Next n = session.next(out);
      if (n == pop3::Next::output && out.size() < limits::kOutputFlush) continue;
      if (!out.empty()) {
        // Backpressure: a client that stops reading stalls this write, and
        // no more output is produced until it completes (or times out).
        deadline = std::chrono::steady_clock::now() + timeout_for(session);
        auto [ec, written] = co_await asio::async_write(sock, asio::buffer(out), use_tuple);
        if (ec) co_return;
        out.clear();
      }
      if (n == pop3::Next::close) co_return;
      if (n == pop3::Next::need_input) {
        deadline = std::chrono::steady_clock::now() + timeout_for(session);
        auto [ec, got] = co_await sock.async_read_some(asio::buffer(in), use_tuple);
        if (ec) co_return;
        session.feed(std::string_view(in.data(), got));
      }
    }
  }

  std::chrono::seconds timeout_for(const pop3::Session& s) const {
    return s.state() == pop3::State::authorization ? options.login_timeout : options.idle_timeout;
  }

  asio::awaitable<void> run_session(tcp::socket sock) {
    asio::error_code ec;
    auto remote = sock.remote_endpoint(ec);
    if (ec) co_return;
    sock.set_option(tcp::no_delay(true), ec);
    LogSink sink(endpoint_text(remote));
    pop3::SessionConfig cfg = options.session;
    cfg.secure = options.secure_loopback && is_loopback(remote.address().to_string());
    pop3::Session session(cfg, auth, opener, challenge(), &sink);
    spdlog::debug("connect addr={}", sink.addr());
    auto it = live.insert(live.end(), &sock);
    auto deadline = std::chrono::steady_clock::now() + options.login_timeout;
    bool timed_out = false;
    co_await (serve(sock, session, deadline) || watchdog(deadline, timed_out));
    live.erase(it);
    if (timed_out && !stopping) {
      // RFC 1939 §3 autologout: no UPDATE. Tell the client why, briefly.
      static constexpr std::string_view kBye = "-ERR Disconnected for inactivity\r\n";
      sock.non_blocking(true, ec);
      sock.write_some(asio::buffer(kBye), ec);
    }
    const bool was_logged_in = session.state() != pop3::State::authorization;
    const bool committed = session.stats().committed;
    session.abort();  // releases the maildrop lock; no UPDATE unless QUIT did it
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
    if (was_logged_in) {
      const auto& st = session.stats();
      spdlog::info("logout user={} addr={} retr={}/{} top={} dele={}/{} reason={}",
                   log_safe(session.user()), sink.addr(), st.retr, st.retr_bytes, st.top,
                   st.deleted, st.deleted_bytes,
                   committed     ? "quit"
                   : timed_out   ? "timeout"
                   : stopping    ? "shutdown"
                                 : "disconnected");
    }
  }
};

Server::Server(ServerOptions options, pop3::Authenticator& auth, pop3::MaildropOpener& opener,
               ChallengeSource challenge)
    : impl_(std::make_unique<Impl>(std::move(options), auth, opener, std::move(challenge))) {}

Server::~Server() = default;

Result<void> Server::bind() {
  for (const ListenSpec& spec : impl_->options.listen) {
    asio::error_code ec;
    tcp::endpoint ep(asio::ip::make_address(spec.address, ec), spec.port);
    if (ec) return make_error(Errc::invalid, "bad listen address " + spec.address);
    tcp::acceptor acc(impl_->io);
    acc.open(ep.protocol(), ec);
    if (!ec) acc.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec && ep.address().is_v6()) acc.set_option(asio::ip::v6_only(true), ec);
    if (!ec) acc.bind(ep, ec);
    if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return make_error(Errc::temporary,
                        "cannot listen on " + endpoint_text(ep) + ": " + ec.message());
    }
    spdlog::info("listening on {}", endpoint_text(acc.local_endpoint()));
    impl_->acceptors.push_back(std::move(acc));
  }
  return {};
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
  for (auto& acc : impl_->acceptors) {
    asio::co_spawn(impl_->io, impl_->accept_loop(acc), asio::detached);
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
    for (auto& acc : impl->acceptors) acc.close(ec);
    // Sessions end without UPDATE: nothing is deleted, no mail is lost.
    for (tcp::socket* s : impl->live) s->cancel(ec);
  });
}

}  // namespace apop::net
