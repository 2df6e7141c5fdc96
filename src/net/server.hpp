// The thin network layer: Asio listeners and one C++20 coroutine per
// session, feeding bytes to the I/O-free pop3::Session and writing what it
// returns. Owns sockets, timers and backpressure; nothing protocol-specific.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/limits.hpp"
#include "common/posix_fd.hpp"
#include "common/result.hpp"
#include "net/metrics_table.hpp"
#include "net/proxy_protocol.hpp"
#include "net/shared_tally.hpp"
#include "pop3/interfaces.hpp"
#include "pop3/session.hpp"

namespace apop::net {

struct ListenSpec {
  std::string address;  // IPv4 dotted quad or IPv6 (without brackets)
  std::uint16_t port = 0;
};

// Parses "ADDR:PORT" or "[V6ADDR]:PORT".
Result<ListenSpec> parse_listen(std::string_view text);

struct TlsOptions {
  std::string cert_file;  // PEM certificate chain (leaf first)
  std::string key_file;   // PEM private key
  bool enabled() const { return !cert_file.empty(); }
};

struct ServerOptions {
  std::vector<ListenSpec> listen;      // plain listeners (STLS offered when TLS is configured)
  std::vector<ListenSpec> tls_listen;  // implicit-TLS listeners (RFC 8314, port 995)
  TlsOptions tls;
  pop3::SessionConfig session;  // template for every session; `secure` is set per connection
  bool secure_loopback = true;  // loopback connections count as secure
  std::chrono::seconds login_timeout = limits::kIdleTimeoutAuthorization;
  std::chrono::seconds idle_timeout = limits::kIdleTimeoutTransaction;
  // Threads that run login steps off the event loop (slow hashes, lookups).
  unsigned auth_threads = 2;
  // Serve Prometheus metrics at http://ADDR:PORT/metrics (net/metrics.hpp);
  // bind() logs "metrics on ADDR:PORT". Fixed at bind(), like the listeners.
  std::optional<ListenSpec> metrics_listen;
  // Connection limits (0: unlimited): over one, a connection gets a single
  // "-ERR [SYS/TEMP] ..." line and is closed (conn_limits.hpp); on an
  // implicit-TLS listener that line comes inside TLS, after a handshake
  // (bounded by limits::kTlsRefusalTimeout and kMaxTlsRefusals), never
  // in plaintext.
  unsigned max_connections = limits::kMaxConnections;
  unsigned max_connections_per_address = limits::kMaxConnectionsPerAddress;
  // The per-address cap and the failed-login defence (the address the
  // Authenticator sees, AuthContext::address) count an IPv6 client by this
  // prefix of its address (net::address_key; 128: per address). Logs show
  // the client's own address.
  unsigned ipv6_prefix_length = limits::kIpv6PrefixLength;
  // Logged-in sessions per user (0: unlimited); over it a login gets [IN-USE].
  unsigned max_sessions_per_user = limits::kMaxSessionsPerUser;
  // A client not logged in this long after connecting is disconnected,
  // however it trickles bytes (login_timeout bounds silence only).
  std::chrono::seconds login_deadline = limits::kLoginDeadline;
  // Load balancers allowed to send a PROXY protocol header (v1 or v2,
  // net/proxy_protocol.hpp). A connection from one of them must start with
  // a header within proxy_timeout, else it is closed; the header's client
  // address then replaces the peer's everywhere (logs, throttling, limits,
  // metrics, the loopback "secure" test). From any other peer a PROXY
  // header is a protocol error and closes the connection.
  std::vector<AddressRange> trusted_proxies;
  std::chrono::seconds proxy_timeout = limits::kProxyHeaderTimeout;
};

// A listening socket bound before the server runs (by the master of a
// multi-process server, as root, before it forks the workers that adopt it).
struct BoundListener {
  UniqueFd fd;
  bool tls = false;   // an implicit-TLS listener
  std::string where;  // "ADDR:PORT" as bound (port 0 resolved)
};

// Binds every listener of `options` (plain ones first, then TLS ones). The
// caller logs them with log_listening() once it serves them. The sockets are close-on-exec and
// non-blocking. With `copies` > 1, every listener is bound `copies` times to
// the same address and port with SO_REUSEPORT (the kernel spreads new
// connections over the copies by a hash of their addresses; a port 0 is the
// first copy's): the result is `copies` sets, one per worker, each in the
// order above.
Result<std::vector<std::vector<BoundListener>>> bind_listeners(const ServerOptions& options,
                                                               unsigned copies = 1);
// Logs "listening on ADDR:PORT" for each, with " (tls)" for implicit TLS,
// exactly as Server::bind() does (one set: the copies share the addresses).
void log_listening(const std::vector<BoundListener>& listeners);
// Loads the certificate and key of `options` (when TLS is configured) as a
// server would, and discards them: a multi-process server's check before it
// starts workers that each load them. The error Server::bind() would give.
Result<void> check_tls(const ServerOptions& options);

class AuthChannel;

// Produces a fresh, never-repeated APOP timestamp per connection.
using ChallengeSource = std::function<std::string()>;

class Server {
 public:
  // Borrows auth and opener; they must outlive the Server.
  Server(ServerOptions options, pop3::Authenticator& auth, pop3::MaildropOpener& opener,
         ChallengeSource challenge);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads the TLS certificate (when configured), binds every listener and
  // logs "listening on ADDR:PORT" for each, with " (tls)" for implicit TLS.
  Result<void> bind();
  // Instead of bind(): loads the TLS certificate and serves the listeners
  // another process bound (bind_listeners), which may be shared with other
  // processes serving them too (each connection is accepted by one). Does
  // not log "listening on" again and serves no metrics endpoint.
  Result<void> adopt(std::vector<BoundListener> listeners);
  // Re-reads the certificate and key (SIGHUP does this too). New sessions
  // use the new ones; open sessions keep theirs and are not dropped.
  Result<void> reload_tls();
  // Replaces what new sessions start with: the session template,
  // secure_loopback, the timeouts (open sessions use the new ones from their
  // next read on) and the TLS files, whose certificate is loaded first: when
  // that fails nothing changes and the error is returned. Listeners
  // (listen, tls_listen, metrics_listen) and auth_threads are fixed by bind() and the
  // constructor; their values in `next` are ignored. Call on the server's
  // thread (from the reload hook) or before run().
  Result<void> reconfigure(const ServerOptions& next);
  // SIGHUP calls `hook` on the server's thread instead of reload_tls()
  // (apop serve re-reads its configuration file and calls reconfigure()).
  // Set before run().
  void on_reload(std::function<void()> hook);
  // A worker of a multi-process server: the connection and session limits
  // count the connections of every worker (net/shared_tally.hpp). Before run().
  void share_limits(std::shared_ptr<SharedTally> shared);
  // A worker of a multi-process server: count the metrics in row `row` of
  // the table the master shares with every worker, whose totals the metrics
  // process serves (net/metrics.hpp). Before run().
  void share_metrics(std::shared_ptr<MetricsTable> table, unsigned row);
  // Counts a recipient refused for quota by the LMTP server in this server's
  // metrics (apop_quota_rejections_total{path="lmtp"}); any thread.
  void count_quota_rejection();
  // A worker of a multi-process server: APOP checks that the session
  // template would run inline (session.inline_apop: a local account
  // database) are sent over `fd`, a channel to the auth process, and
  // awaited on the event loop, many at once (net/auth_channel.hpp), instead
  // of blocking it one at a time. The channel lives as long as the server;
  // the reference is for AuthChannel::record_login() and replace(), which
  // any thread may call. Before run().
  AuthChannel& use_auth_channel(UniqueFd fd);
  // Runs until SIGTERM/SIGINT or stop(); open sessions then end without
  // UPDATE (nothing is deleted, no mail is lost).
  void run();
  void stop();
  // Actual bound ports, plain listeners first then TLS ones (after bind()).
  std::vector<std::uint16_t> ports() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True for 127.0.0.0/8, ::1 and IPv4-mapped loopback.
bool is_loopback(std::string_view address);

}  // namespace apop::net
