#include "net/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <exception>
#include <sstream>

#include "net/server.hpp"

namespace apop::net {

namespace {

// Session durations in seconds: a mail client's check takes well under a
// second; a slow download or an idle client up to the 10-minute autologout
// (RFC 1939 §3) and beyond.
const prometheus::Histogram::BucketBoundaries kDurationBuckets = {
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600, 1800, 3600};

// Label values for `mech`: bounded, whatever a future mechanism is called.
constexpr std::array<std::string_view, 7> kMechanisms = {
    "APOP", "USER", "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"};

}  // namespace

struct Metrics::Families {
  explicit Families(prometheus::Registry& r)
      : connections(prometheus::BuildCounter()
                        .Name("apop_connections_total")
                        .Help("TCP connections accepted, per listener")
                        .Register(r)),
        connections_active(prometheus::BuildGauge()
                               .Name("apop_connections_active")
                               .Help("Open client connections, per listener")
                               .Register(r)),
        sessions(prometheus::BuildCounter()
                     .Name("apop_sessions_total")
                     .Help("Connections that logged in (entered TRANSACTION), per listener")
                     .Register(r)),
        sessions_active(prometheus::BuildGauge()
                            .Name("apop_sessions_active")
                            .Help("Logged-in sessions open now, per listener")
                            .Register(r)),
        sent_bytes(prometheus::BuildCounter()
                       .Name("apop_sent_bytes_total")
                       .Help("Bytes written to clients (before TLS), per listener")
                       .Register(r)),
        logins(prometheus::BuildCounter()
                   .Name("apop_logins_total")
                   .Help("Login attempts by mechanism and result")
                   .Register(r)),
        commands(prometheus::BuildCounter()
                     .Name("apop_commands_total")
                     .Help("RETR, TOP and DELE commands of ended sessions (DELE net of RSET)")
                     .Register(r)),
        retr_bytes(prometheus::BuildCounter()
                       .Name("apop_retr_bytes_total")
                       .Help("Message octets sent by RETR (CRLF size) in ended sessions")
                       .Register(r)),
        duration(prometheus::BuildHistogram()
                     .Name("apop_session_duration_seconds")
                     .Help("Duration of logged-in sessions, from connect to close")
                     .Register(r)),
        retr(commands.Add({{"command", "RETR"}})),
        top(commands.Add({{"command", "TOP"}})),
        dele(commands.Add({{"command", "DELE"}})),
        retr_octets(retr_bytes.Add({})),
        session_duration(duration.Add({}, kDurationBuckets)) {}

  prometheus::Family<prometheus::Counter>& connections;
  prometheus::Family<prometheus::Gauge>& connections_active;
  prometheus::Family<prometheus::Counter>& sessions;
  prometheus::Family<prometheus::Gauge>& sessions_active;
  prometheus::Family<prometheus::Counter>& sent_bytes;
  prometheus::Family<prometheus::Counter>& logins;
  prometheus::Family<prometheus::Counter>& commands;
  prometheus::Family<prometheus::Counter>& retr_bytes;
  prometheus::Family<prometheus::Histogram>& duration;
  prometheus::Counter& retr;
  prometheus::Counter& top;
  prometheus::Counter& dele;
  prometheus::Counter& retr_octets;
  prometheus::Histogram& session_duration;
};

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      families_(std::make_unique<Families>(*registry_)) {}

Metrics::~Metrics() = default;

Result<std::string> Metrics::expose(const ListenSpec& where) {
  if (exposer_) return make_error(Errc::invalid, "metrics are already exposed");
  const bool v6 = where.address.find(':') != std::string::npos;
  const std::string host = v6 ? "[" + where.address + "]" : where.address;
  try {
    // Two civetweb threads: scrapes are rare and cheap. Slow or idle scrapers
    // are cut off after 10 s so they cannot hold the threads.
    exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", host + ":" + std::to_string(where.port),
                                 "num_threads", "2", "request_timeout_ms", "10000"});
  } catch (const std::exception& e) {
    // Debian's civetweb is built without IPv6 (mg_check_feature(8) == 0).
    return make_error(Errc::temporary,
                      "cannot serve metrics on " + host + ":" + std::to_string(where.port) + ": " +
                          e.what() +
                          (v6 ? " (IPv6 may be unsupported by civetweb: use IPv4)" : ""));
  }
  exposer_->RegisterCollectable(registry_);
  const std::vector<int> ports = exposer_->GetListeningPorts();
  const int port = ports.empty() ? where.port : ports.front();
  return host + ":" + std::to_string(port);
}

Metrics::Listener& Metrics::add_listener(const std::string& name, bool tls) {
  const prometheus::Labels labels{{"listener", name}, {"tls", tls ? "1" : "0"}};
  auto l = std::make_unique<Listener>();
  l->connections = &families_->connections.Add(labels);
  l->connections_active = &families_->connections_active.Add(labels);
  l->sessions = &families_->sessions.Add(labels);
  l->sessions_active = &families_->sessions_active.Add(labels);
  l->sent_bytes = &families_->sent_bytes.Add(labels);
  listeners_.push_back(std::move(l));
  return *listeners_.back();
}

void Metrics::connection_opened(Listener& l) {
  l.connections->Increment();
  l.connections_active->Increment();
}

void Metrics::connection_closed(Listener& l) { l.connections_active->Decrement(); }

void Metrics::session_started(Listener& l) {
  l.sessions->Increment();
  l.sessions_active->Increment();
}

void Metrics::session_ended(Listener& l, const pop3::SessionStats& stats,
                            std::chrono::duration<double> duration) {
  l.sessions_active->Decrement();
  families_->retr.Increment(static_cast<double>(stats.retr));
  families_->top.Increment(static_cast<double>(stats.top));
  families_->dele.Increment(static_cast<double>(stats.deleted));
  families_->retr_octets.Increment(static_cast<double>(stats.retr_bytes));
  families_->session_duration.Observe(duration.count());
}

void Metrics::bytes_sent(Listener& l, std::uint64_t n) {
  l.sent_bytes->Increment(static_cast<double>(n));
}

void Metrics::login(std::string_view mechanism, std::string_view result) {
  std::string_view mech = "other";
  for (std::string_view m : kMechanisms) {
    if (m == mechanism) mech = m;
  }
  families_->logins.Add({{"mech", std::string(mech)}, {"result", std::string(result)}}).Increment();
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

std::string Metrics::scrape() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace apop::net
