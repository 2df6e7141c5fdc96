// Counts shared by the network workers of one multi-process server, so that
// the connection limits (in total, per client address) and the session
// limit per user hold across workers rather than per worker
// (docs/security.md, "Connection limits").
//
// One MAP_SHARED anonymous mapping made by the master before it forks the
// workers: a row of counters per worker. A worker adds to its own row only;
// a verdict sums the rows. The master zeroes a dead worker's row before it
// starts the next one, so the connections of a killed worker do not stay
// counted. Keys are hashed into kSlots slots per table: two keys in one slot
// share a count, so a limit can bind early for them (never late); with the
// default sizes and a few thousand clients that is rare. Two workers
// admitting at the same instant may together exceed a limit by one
// connection each (the check and the increment are not one step).
// Thread-safety: lock-free (relaxed atomics); any process and thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "common/result.hpp"

namespace apop::net {

class SharedTally {
 public:
  enum class Table : unsigned { total = 0, per_address = 1, per_user = 2 };
  static constexpr std::size_t kSlots = 16384;

  // A mapping for `workers` rows (made by the master, inherited at fork).
  static Result<std::shared_ptr<SharedTally>> create(unsigned workers);
  ~SharedTally();
  SharedTally(const SharedTally&) = delete;
  SharedTally& operator=(const SharedTally&) = delete;

  // In a worker, after fork: its row (0-based).
  void set_worker(unsigned index) { worker_ = index; }
  // In the master, before a worker's restart: forget what it counted.
  void reset_worker(unsigned index);

  // The count of `key` in `table` over every worker.
  std::uint64_t count(Table table, std::string_view key) const;
  // Adds `delta` (+1 or -1) to this worker's count of `key`.
  void add(Table table, std::string_view key, int delta);

 private:
  SharedTally(std::atomic<std::int32_t>* base, std::size_t bytes, unsigned workers)
      : base_(base), bytes_(bytes), workers_(workers) {}
  std::atomic<std::int32_t>* cell(unsigned worker, Table table, std::string_view key) const;
  std::atomic<std::int32_t>* base_;
  std::size_t bytes_;
  unsigned workers_;
  unsigned worker_ = 0;
};

}  // namespace apop::net
