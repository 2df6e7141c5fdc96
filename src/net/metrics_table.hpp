// The counters behind apop serve's Prometheus metrics (net/metrics.hpp), in
// one MAP_SHARED anonymous mapping: a row per process that counts. A single
// process has one row; a multi-process server (`--workers N`) has one per
// network worker, made by the master before it forks them, and the process
// that serves /metrics sums the rows. Nothing in the mapping is text: the
// reader adds fixed-size integers and names them itself, so a compromised
// worker can at worst make its own numbers wrong, never the exposition
// format or another worker's row malformed.
//
// Counters only grow (a restarted worker keeps adding to its row: totals
// stay monotonic, as Prometheus expects); gauges (open connections and
// sessions) are zeroed by the master before it restarts a dead worker, whose
// connections died with it.
//
// Thread-safety: lock-free; every cell is updated with a relaxed atomic
// read-modify-write (std::atomic_ref), from any thread of any process that
// has the mapping. A snapshot is not one instant: each cell is read once,
// which is what a scrape promises anyway.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "common/limits.hpp"
#include "common/result.hpp"

namespace apop::net {

// Label values of apop_logins_total{mech}: the known mechanisms and
// "other" (bounded, whatever a client sends).
inline constexpr std::array<std::string_view, 8> kMetricsMechanisms = {
    "APOP", "USER", "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "other"};
// Label values of apop_logins_total{result} (Metrics::login_result).
inline constexpr std::array<std::string_view, 9> kMetricsLoginResults = {
    "ok",    "failed",      "no-apop-secret", "policy", "in-use",
    "error", "login-delay", "throttled",      "blocked"};
// Upper bounds (seconds) of apop_session_duration_seconds: a mail client's
// check takes well under a second; a slow download or an idle client up to
// the 10-minute autologout (RFC 1939 §3) and beyond. One more bucket, +Inf.
inline constexpr std::array<double, 14> kMetricsDurationBounds = {
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600, 1800, 3600};

// One process's counts. Plain integers, only ever accessed through
// std::atomic_ref (MetricsTable::add and friends).
struct alignas(64) MetricsRow {
  struct Listener {
    std::uint64_t connections;         // apop_connections_total
    std::uint64_t connections_active;  // apop_connections_active (two's complement)
    std::uint64_t sessions;            // apop_sessions_total
    std::uint64_t sessions_active;     // apop_sessions_active (two's complement)
    std::uint64_t sent_bytes;          // apop_sent_bytes_total
  };
  std::array<Listener, limits::kMaxListeners> listeners;
  std::array<std::array<std::uint64_t, kMetricsLoginResults.size()>, kMetricsMechanisms.size()>
      logins;
  std::uint64_t retr, top, dele, retr_bytes;
  std::array<std::uint64_t, kMetricsDurationBounds.size() + 1> duration_buckets;  // not cumulative
  std::uint64_t duration_count;
  std::uint64_t duration_sum_us;        // microseconds
  std::uint64_t quota_rejections_lmtp;  // apop_quota_rejections_total{path="lmtp"}
};

// The sum of every row.
struct MetricsTotals {
  struct Listener {
    std::uint64_t connections = 0;
    std::int64_t connections_active = 0;
    std::uint64_t sessions = 0;
    std::int64_t sessions_active = 0;
    std::uint64_t sent_bytes = 0;
  };
  std::array<Listener, limits::kMaxListeners> listeners{};
  std::array<std::array<std::uint64_t, kMetricsLoginResults.size()>, kMetricsMechanisms.size()>
      logins{};
  std::uint64_t retr = 0, top = 0, dele = 0, retr_bytes = 0;
  std::array<std::uint64_t, kMetricsDurationBounds.size() + 1> duration_buckets{};
  std::uint64_t duration_count = 0;
  std::uint64_t duration_sum_us = 0;
  std::uint64_t quota_rejections_lmtp = 0;
};

class MetricsTable {
 public:
  // A zeroed mapping of `rows` rows (at least one). Errc::temporary when
  // the kernel refuses the mapping.
  static Result<std::shared_ptr<MetricsTable>> create(unsigned rows);
  // A zeroed table of one row on the heap, for a single process (cannot
  // fail short of std::bad_alloc).
  static std::shared_ptr<MetricsTable> local();
  ~MetricsTable();
  MetricsTable(const MetricsTable&) = delete;
  MetricsTable& operator=(const MetricsTable&) = delete;

  unsigned rows() const { return rows_; }
  // Row `i` (< rows()), to update with add().
  MetricsRow& row(unsigned i) const { return base_[i]; }
  // Adds `n` to `cell` (relaxed atomic; wraps, so a gauge may add -1).
  static void add(std::uint64_t& cell, std::uint64_t n);

  // Zeroes the gauges of row `i` (in the master, before a dead worker's
  // restart: its connections are gone).
  void reset_gauges(unsigned i);
  MetricsTotals totals() const;
  // Makes this process's view of the mapping read-only (the process that
  // serves /metrics only reads it). Errc::temporary when mprotect fails.
  Result<void> make_read_only();

 private:
  MetricsTable(MetricsRow* base, std::size_t bytes, unsigned rows)
      : base_(base), bytes_(bytes), rows_(rows) {}
  MetricsRow* base_;
  std::size_t bytes_;  // of the mapping; 0 for local()
  unsigned rows_;
};

}  // namespace apop::net
