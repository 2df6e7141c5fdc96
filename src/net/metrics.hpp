// Prometheus metrics of `apop serve` and the HTTP endpoint that serves them
// (`--metrics-listen ADDR:PORT`, GET /metrics).
//
// The metric names, labels and meanings are documented in
// docs/configuration.md ("Metrics"); they are an interface for dashboards and
// alerts: rename nothing, only add.
//
// Two halves, so that a multi-process server has one endpoint with totals:
//  - Metrics is what a serving process counts with: it adds to its row of a
//    MetricsTable (net/metrics_table.hpp), its own one-row table or, in a
//    network worker, row i of the table the master shares with all workers;
//  - MetricsEndpoint serves the sum of a table's rows over HTTP
//    (prometheus-cpp's exposer, civetweb): in the single process itself, or
//    in the multi-process server's metrics process, which only reads the
//    mapping.
//
// Threading: every counting method may be called from any thread at any
// time (relaxed atomic adds, no lock, no allocation). The endpoint runs its
// own threads and only reads the table.
//
// Ownership: Metrics shares its table (shared_ptr); listener handles
// returned by add_listener() live as long as the Metrics object.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "net/metrics_table.hpp"
#include "pop3/session.hpp"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace apop::net {

struct ListenSpec;

// The labels of one POP3 listener's series (listener="ADDR:PORT", tls).
struct MetricsListenerLabel {
  std::string name;
  bool tls = false;
};

// The text exposition of `table`'s totals (what GET /metrics returns, less
// the exposer's own metrics). `listeners` names the table's listener slots
// in order; slots beyond it are not shown.
std::string render_metrics(const MetricsTable& table,
                           const std::vector<MetricsListenerLabel>& listeners);

// GET /metrics over HTTP, serving the totals of a table.
class MetricsEndpoint {
 public:
  // Starts serving at http://ADDR:PORT/metrics (port 0: a free port).
  // Errc::temporary when the address cannot be bound.
  static Result<std::unique_ptr<MetricsEndpoint>> open(const ListenSpec& where,
                                                       std::shared_ptr<const MetricsTable> table,
                                                       std::vector<MetricsListenerLabel> listeners);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;
  // The bound "ADDR:PORT" ("[V6]:PORT" for IPv6).
  const std::string& where() const { return where_; }

 private:
  MetricsEndpoint() = default;
  struct Collector;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string where_;
};

class Metrics {
 public:
  // The series of one POP3 listener: its slot in the table's rows.
  struct Listener {
    unsigned slot = 0;
  };

  // Counts into a table of its own (one row).
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Counts into row `row` of a shared table instead (a network worker).
  // Before the first count.
  void share(std::shared_ptr<MetricsTable> table, unsigned row);

  // Starts serving this Metrics' table at http://ADDR:PORT/metrics (port 0:
  // a free port). Returns the bound "ADDR:PORT". Errc::temporary when the
  // address cannot be bound. At most once.
  Result<std::string> expose(const ListenSpec& where);

  // Names the next listener slot ("ADDR:PORT" as logged by `listening
  // on`). Call before run(); the handle stays valid. Errc::invalid beyond
  // limits::kMaxListeners.
  Result<Listener*> add_listener(const std::string& name, bool tls);
  const std::vector<MetricsListenerLabel>& listener_labels() const { return labels_; }

  void connection_opened(Listener& l);
  void connection_closed(Listener& l);
  // The connection logged in (entered TRANSACTION).
  void session_started(Listener& l);
  // A logged-in session ended (whatever the reason): adds its RETR/TOP/DELE
  // counts and observes its duration (connect to close).
  void session_ended(Listener& l, const pop3::SessionStats& stats,
                     std::chrono::duration<double> duration);
  void bytes_sent(Listener& l, std::uint64_t n);
  // A recipient the LMTP server refused for quota (any thread).
  void quota_rejection();

  // One login attempt: apop_logins_total{mech, result}. Mechanisms outside
  // the known set are counted as mech="other" (bounded label values); a
  // result outside kMetricsLoginResults as "error".
  void login(std::string_view mechanism, std::string_view result);
  // The `result` label of a login event: ok, failed (unknown user or wrong
  // secret), no-apop-secret (APOP for an account without a usable APOP
  // secret), policy (the account's policy refused it), in-use, error,
  // login-delay (RFC 2449 LOGIN-DELAY refused correct credentials),
  // throttled, blocked (failed-login defence, auth/throttle.hpp).
  static std::string_view login_result(const pop3::LoginEvent& event);

  // The current text exposition of this Metrics' table.
  std::string scrape() const;

 private:
  std::shared_ptr<MetricsTable> table_;
  MetricsRow* row_;
  std::vector<MetricsListenerLabel> labels_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unique_ptr<MetricsEndpoint> endpoint_;
};

}  // namespace apop::net
