// Prometheus metrics of `apop serve` (prometheus-cpp) and the HTTP endpoint
// that serves them (`--metrics-listen ADDR:PORT`, GET /metrics).
//
// The metric names, labels and meanings are documented in
// docs/configuration.md ("Metrics"); they are an interface for dashboards and
// alerts: rename nothing, only add.
//
// Threading: every method may be called from any thread at any time. The
// counters, gauges and histograms are prometheus-cpp's (atomic updates; a
// histogram observation takes a short internal lock). The per-listener
// series are created by add_listener() before the server runs, so the event
// loop never creates series; login() may create a (mech, result) series on
// first use under prometheus-cpp's family mutex, held only for a map lookup,
// never across I/O. The exposer runs its own threads (civetweb) and only
// reads the registry.
//
// Ownership: Metrics owns the registry and, after expose(), the HTTP server,
// which stops when Metrics is destroyed. Listener handles returned by
// add_listener() live as long as the Metrics object.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "pop3/session.hpp"

namespace prometheus {
class Counter;
class Exposer;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace apop::net {

struct ListenSpec;

class Metrics {
 public:
  // The series of one POP3 listener (labels listener="ADDR:PORT", tls="0|1").
  struct Listener {
    prometheus::Counter* connections = nullptr;       // apop_connections_total
    prometheus::Gauge* connections_active = nullptr;  // apop_connections_active
    prometheus::Counter* sessions = nullptr;          // apop_sessions_total
    prometheus::Gauge* sessions_active = nullptr;     // apop_sessions_active
    prometheus::Counter* sent_bytes = nullptr;        // apop_sent_bytes_total
  };

  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Starts serving the text exposition format at http://ADDR:PORT/metrics
  // (port 0: a free port). Returns the bound "ADDR:PORT" ("[V6]:PORT" for
  // IPv6). Errc::temporary when the address cannot be bound. At most once.
  Result<std::string> expose(const ListenSpec& where);

  // Creates the series of a listener ("ADDR:PORT" as logged by
  // `listening on`). Call before run(); the handle stays valid.
  Listener& add_listener(const std::string& name, bool tls);

  void connection_opened(Listener& l);
  void connection_closed(Listener& l);
  // The connection logged in (entered TRANSACTION).
  void session_started(Listener& l);
  // A logged-in session ended (whatever the reason): adds its RETR/TOP/DELE
  // counts and observes its duration (connect to close).
  void session_ended(Listener& l, const pop3::SessionStats& stats,
                     std::chrono::duration<double> duration);
  void bytes_sent(Listener& l, std::uint64_t n);

  // One login attempt: apop_logins_total{mech, result}. Mechanisms outside
  // the known set are counted as mech="other" (bounded label values).
  void login(std::string_view mechanism, std::string_view result);
  // The `result` label of a login event: ok, failed (unknown user or wrong
  // secret), no-apop-secret (APOP for an account without a usable APOP
  // secret), policy (the account's policy refused it), in-use, error,
  // login-delay (RFC 2449 LOGIN-DELAY refused correct credentials),
  // throttled, blocked (failed-login defence, auth/throttle.hpp).
  static std::string_view login_result(const pop3::LoginEvent& event);

  // The current text exposition (what GET /metrics returns).
  std::string scrape() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  struct Families;
  std::unique_ptr<Families> families_;
  std::vector<std::unique_ptr<Listener>> listeners_;
};

}  // namespace apop::net
