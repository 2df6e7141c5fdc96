#include "net/metrics.hpp"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <exception>
#include <limits>
#include <sstream>

#include "net/server.hpp"

namespace apop::net {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

ClientMetric sample(std::vector<ClientMetric::Label> labels, MetricType type, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  if (type == MetricType::Gauge) {
    m.gauge.value = value;
  } else {
    m.counter.value = value;
  }
  return m;
}

std::vector<MetricFamily> families(const MetricsTable& table,
                                   const std::vector<MetricsListenerLabel>& listeners) {
  const MetricsTotals t = table.totals();
  std::vector<MetricFamily> out;
  // The per-listener series, one family each, in the documented order.
  struct PerListener {
    const char* name;
    const char* help;
    MetricType type;
    double (*value)(const MetricsTotals::Listener&);
  };
  const PerListener per_listener[] = {
      {"apop_connections_total", "TCP connections accepted, per listener", MetricType::Counter,
       [](const MetricsTotals::Listener& l) { return static_cast<double>(l.connections); }},
      {"apop_connections_active", "Open client connections, per listener", MetricType::Gauge,
       [](const MetricsTotals::Listener& l) { return static_cast<double>(l.connections_active); }},
      {"apop_sessions_total", "Connections that logged in (entered TRANSACTION), per listener",
       MetricType::Counter,
       [](const MetricsTotals::Listener& l) { return static_cast<double>(l.sessions); }},
      {"apop_sessions_active", "Logged-in sessions open now, per listener", MetricType::Gauge,
       [](const MetricsTotals::Listener& l) { return static_cast<double>(l.sessions_active); }},
      {"apop_sent_bytes_total", "Bytes written to clients (before TLS), per listener",
       MetricType::Counter,
       [](const MetricsTotals::Listener& l) { return static_cast<double>(l.sent_bytes); }},
  };
  const std::size_t shown = std::min(listeners.size(), t.listeners.size());
  for (const auto& p : per_listener) {
    MetricFamily f = family(p.name, p.help, p.type);
    for (std::size_t i = 0; i < shown; ++i) {
      f.metric.push_back(
          sample({{"listener", listeners[i].name}, {"tls", listeners[i].tls ? "1" : "0"}}, p.type,
                 p.value(t.listeners[i])));
    }
    out.push_back(std::move(f));
  }
  // Logins: only the (mech, result) pairs seen, as before (no wall of zeros).
  MetricFamily logins =
      family("apop_logins_total", "Login attempts by mechanism and result", MetricType::Counter);
  for (std::size_t m = 0; m < kMetricsMechanisms.size(); ++m) {
    for (std::size_t r = 0; r < kMetricsLoginResults.size(); ++r) {
      if (t.logins[m][r] == 0) continue;
      logins.metric.push_back(sample({{"mech", std::string(kMetricsMechanisms[m])},
                                      {"result", std::string(kMetricsLoginResults[r])}},
                                     MetricType::Counter, static_cast<double>(t.logins[m][r])));
    }
  }
  out.push_back(std::move(logins));
  MetricFamily commands = family("apop_commands_total",
                                 "RETR, TOP and DELE commands of ended sessions (DELE net of RSET)",
                                 MetricType::Counter);
  for (auto [name, value] :
       {std::pair<const char*, std::uint64_t>{"RETR", t.retr}, {"TOP", t.top}, {"DELE", t.dele}}) {
    commands.metric.push_back(
        sample({{"command", name}}, MetricType::Counter, static_cast<double>(value)));
  }
  out.push_back(std::move(commands));
  MetricFamily retr_bytes =
      family("apop_retr_bytes_total", "Message octets sent by RETR (CRLF size) in ended sessions",
             MetricType::Counter);
  retr_bytes.metric.push_back(sample({}, MetricType::Counter, static_cast<double>(t.retr_bytes)));
  out.push_back(std::move(retr_bytes));
  // Issue 21: recipients refused for quota by the LMTP server (at RCPT or
  // after DATA). `apop deliver` runs in the MTA's process and is counted by
  // the MTA (its bounces and deferrals); per-account usage is `apop user
  // quota --report`, not a series per account (unbounded label values).
  MetricFamily quota = family("apop_quota_rejections_total",
                              "Recipients refused because their mailbox is over quota, by path",
                              MetricType::Counter);
  quota.metric.push_back(sample({{"path", "lmtp"}}, MetricType::Counter,
                                static_cast<double>(t.quota_rejections_lmtp)));
  out.push_back(std::move(quota));
  MetricFamily duration =
      family("apop_session_duration_seconds",
             "Duration of logged-in sessions, from connect to close", MetricType::Histogram);
  ClientMetric h;
  std::uint64_t cumulative = 0;
  for (std::size_t b = 0; b < kMetricsDurationBounds.size(); ++b) {
    cumulative += t.duration_buckets[b];
    h.histogram.bucket.push_back({cumulative, kMetricsDurationBounds[b]});
  }
  cumulative += t.duration_buckets.back();
  h.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
  h.histogram.sample_count = cumulative;
  h.histogram.sample_sum = static_cast<double>(t.duration_sum_us) / 1e6;
  duration.metric.push_back(std::move(h));
  out.push_back(std::move(duration));
  return out;
}

}  // namespace

std::string render_metrics(const MetricsTable& table,
                           const std::vector<MetricsListenerLabel>& listeners) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families(table, listeners));
  return out.str();
}

// Builds the families from the table at every scrape (exposer threads).
struct MetricsEndpoint::Collector final : prometheus::Collectable {
  Collector(std::shared_ptr<const MetricsTable> t, std::vector<MetricsListenerLabel> l)
      : table(std::move(t)), listeners(std::move(l)) {}
  std::vector<MetricFamily> Collect() const override { return families(*table, listeners); }
  std::shared_ptr<const MetricsTable> table;
  std::vector<MetricsListenerLabel> listeners;
};

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::open(
    const ListenSpec& where, std::shared_ptr<const MetricsTable> table,
    std::vector<MetricsListenerLabel> listeners) {
  const bool v6 = where.address.find(':') != std::string::npos;
  const std::string host = v6 ? "[" + where.address + "]" : where.address;
  std::unique_ptr<MetricsEndpoint> e(new MetricsEndpoint());
  try {
    // Two civetweb threads: scrapes are rare and cheap. Slow or idle scrapers
    // are cut off after 10 s so they cannot hold the threads.
    e->exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", host + ":" + std::to_string(where.port),
                                 "num_threads", "2", "request_timeout_ms", "10000"});
  } catch (const std::exception& ex) {
    // Debian's civetweb is built without IPv6 (mg_check_feature(8) == 0).
    return make_error(Errc::temporary,
                      "cannot serve metrics on " + host + ":" + std::to_string(where.port) + ": " +
                          ex.what() +
                          (v6 ? " (IPv6 may be unsupported by civetweb: use IPv4)" : ""));
  }
  e->collector_ = std::make_shared<Collector>(std::move(table), std::move(listeners));
  e->exposer_->RegisterCollectable(e->collector_);
  const std::vector<int> ports = e->exposer_->GetListeningPorts();
  e->where_ = host + ":" + std::to_string(ports.empty() ? where.port : ports.front());
  return e;
}

MetricsEndpoint::~MetricsEndpoint() = default;

Metrics::Metrics() : table_(MetricsTable::local()), row_(&table_->row(0)) {}

Metrics::~Metrics() = default;

void Metrics::share(std::shared_ptr<MetricsTable> table, unsigned row) {
  if (!table || row >= table->rows()) return;
  row_ = &table->row(row);
  table_ = std::move(table);
}

Result<std::string> Metrics::expose(const ListenSpec& where) {
  if (endpoint_) return make_error(Errc::invalid, "metrics are already exposed");
  auto e = MetricsEndpoint::open(where, table_, labels_);
  if (!e) return e.error();
  endpoint_ = std::move(*e);
  return endpoint_->where();
}

Result<Metrics::Listener*> Metrics::add_listener(const std::string& name, bool tls) {
  if (labels_.size() >= limits::kMaxListeners) {
    return make_error(Errc::invalid, "at most " + std::to_string(limits::kMaxListeners) +
                                         " listeners (listen and tls_listen together)");
  }
  labels_.push_back({name, tls});
  listeners_.push_back(
      std::make_unique<Listener>(Listener{static_cast<unsigned>(labels_.size() - 1)}));
  return listeners_.back().get();
}

void Metrics::connection_opened(Listener& l) {
  auto& c = row_->listeners[l.slot];
  MetricsTable::add(c.connections, 1);
  MetricsTable::add(c.connections_active, 1);
}

void Metrics::connection_closed(Listener& l) {
  MetricsTable::add(row_->listeners[l.slot].connections_active, ~std::uint64_t{0});
}

void Metrics::quota_rejection() { MetricsTable::add(row_->quota_rejections_lmtp, 1); }

void Metrics::session_started(Listener& l) {
  auto& c = row_->listeners[l.slot];
  MetricsTable::add(c.sessions, 1);
  MetricsTable::add(c.sessions_active, 1);
}

void Metrics::session_ended(Listener& l, const pop3::SessionStats& stats,
                            std::chrono::duration<double> duration) {
  MetricsTable::add(row_->listeners[l.slot].sessions_active, ~std::uint64_t{0});
  MetricsTable::add(row_->retr, stats.retr);
  MetricsTable::add(row_->top, stats.top);
  MetricsTable::add(row_->dele, stats.deleted);
  MetricsTable::add(row_->retr_bytes, stats.retr_bytes);
  const double seconds = duration.count() < 0 ? 0.0 : duration.count();
  std::size_t b = 0;
  while (b < kMetricsDurationBounds.size() && seconds > kMetricsDurationBounds[b]) ++b;
  MetricsTable::add(row_->duration_buckets[b], 1);
  MetricsTable::add(row_->duration_count, 1);
  MetricsTable::add(row_->duration_sum_us, static_cast<std::uint64_t>(seconds * 1e6));
}

void Metrics::bytes_sent(Listener& l, std::uint64_t n) {
  MetricsTable::add(row_->listeners[l.slot].sent_bytes, n);
}

void Metrics::login(std::string_view mechanism, std::string_view result) {
  std::size_t m = kMetricsMechanisms.size() - 1;  // "other"
  for (std::size_t i = 0; i + 1 < kMetricsMechanisms.size(); ++i) {
    if (kMetricsMechanisms[i] == mechanism) m = i;
  }
  static_assert(kMetricsLoginResults[5] == "error");
  std::size_t r = 5;
  for (std::size_t i = 0; i < kMetricsLoginResults.size(); ++i) {
    if (kMetricsLoginResults[i] == result) r = i;
  }
  MetricsTable::add(row_->logins[m][r], 1);
}

std::string_view Metrics::login_result(const pop3::LoginEvent& e) {
  if (e.result == pop3::LoginResult::ok) return "ok";
  if (e.result == pop3::LoginResult::in_use) return "in-use";
  if (e.result == pop3::LoginResult::error) return "error";
  if (e.result == pop3::LoginResult::delayed) return "login-delay";
  switch (e.failure) {
    case pop3::AuthFailure::throttled:
    case pop3::AuthFailure::blocked:
    case pop3::AuthFailure::no_apop_secret:
      return pop3::auth_failure_name(e.failure);
    default:
      break;
  }
  if (pop3::is_policy_refusal(e.failure)) return "policy";
  return "failed";
}

std::string Metrics::scrape() const { return render_metrics(*table_, labels_); }

}  // namespace apop::net
