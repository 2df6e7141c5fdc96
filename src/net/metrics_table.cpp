#include "net/metrics_table.hpp"

#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <type_traits>

namespace apop::net {

namespace {

static_assert(std::is_trivially_copyable_v<MetricsRow>);
static_assert(std::atomic_ref<std::uint64_t>::required_alignment <= alignof(std::uint64_t));
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

std::uint64_t load(const std::uint64_t& cell) {
  return std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(cell))
      .load(std::memory_order_relaxed);
}

void store_zero(std::uint64_t& cell) {
  std::atomic_ref<std::uint64_t>(cell).store(0, std::memory_order_relaxed);
}

}  // namespace

Result<std::shared_ptr<MetricsTable>> MetricsTable::create(unsigned rows) {
  if (rows == 0) rows = 1;
  const std::size_t bytes = sizeof(MetricsRow) * rows;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return make_error(Errc::temporary, std::string("metrics: mmap: ") + std::strerror(errno));
  }
  // Anonymous shared memory starts zeroed: every count is 0. MetricsRow is
  // an aggregate of integers, so the zero bytes are its value.
  return std::shared_ptr<MetricsTable>(new MetricsTable(static_cast<MetricsRow*>(p), bytes, rows));
}

std::shared_ptr<MetricsTable> MetricsTable::local() {
  return std::shared_ptr<MetricsTable>(new MetricsTable(new MetricsRow{}, 0, 1));
}

MetricsTable::~MetricsTable() {
  if (bytes_ == 0) {
    delete base_;
  } else {
    ::munmap(base_, bytes_);
  }
}

void MetricsTable::add(std::uint64_t& cell, std::uint64_t n) {
  std::atomic_ref<std::uint64_t>(cell).fetch_add(n, std::memory_order_relaxed);
}

void MetricsTable::reset_gauges(unsigned i) {
  if (i >= rows_) return;
  for (auto& l : base_[i].listeners) {
    store_zero(l.connections_active);
    store_zero(l.sessions_active);
  }
}

MetricsTotals MetricsTable::totals() const {
  MetricsTotals t;
  for (unsigned r = 0; r < rows_; ++r) {
    const MetricsRow& row = base_[r];
    for (std::size_t i = 0; i < row.listeners.size(); ++i) {
      const auto& from = row.listeners[i];
      auto& to = t.listeners[i];
      to.connections += load(from.connections);
      to.connections_active += static_cast<std::int64_t>(load(from.connections_active));
      to.sessions += load(from.sessions);
      to.sessions_active += static_cast<std::int64_t>(load(from.sessions_active));
      to.sent_bytes += load(from.sent_bytes);
    }
    for (std::size_t m = 0; m < row.logins.size(); ++m) {
      for (std::size_t k = 0; k < row.logins[m].size(); ++k)
        t.logins[m][k] += load(row.logins[m][k]);
    }
    t.retr += load(row.retr);
    t.top += load(row.top);
    t.dele += load(row.dele);
    t.retr_bytes += load(row.retr_bytes);
    t.quota_rejections_lmtp += load(row.quota_rejections_lmtp);
    for (std::size_t b = 0; b < row.duration_buckets.size(); ++b) {
      t.duration_buckets[b] += load(row.duration_buckets[b]);
    }
    t.duration_count += load(row.duration_count);
    t.duration_sum_us += load(row.duration_sum_us);
  }
  return t;
}

Result<void> MetricsTable::make_read_only() {
  if (bytes_ == 0) return make_error(Errc::invalid, "metrics: a local table has no mapping");
  if (::mprotect(base_, bytes_, PROT_READ) != 0) {
    return make_error(Errc::temporary, std::string("metrics: mprotect: ") + std::strerror(errno));
  }
  return {};
}

}  // namespace apop::net
