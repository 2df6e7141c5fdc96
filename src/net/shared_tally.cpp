#include "net/shared_tally.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace apop::net {

namespace {

constexpr std::size_t kTables = 3;
constexpr std::size_t kRow = kTables * SharedTally::kSlots;  // counters per worker

// FNV-1a, 64 bits: the slot of a key (not a defence against chosen
// collisions: an attacker who picks colliding addresses only shares a
// count with them, which makes the limit stricter).
std::uint64_t hash(std::string_view key) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

Result<std::shared_ptr<SharedTally>> SharedTally::create(unsigned workers) {
  const std::size_t bytes = sizeof(std::atomic<std::int32_t>) * kRow * (workers == 0 ? 1 : workers);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return make_error(Errc::temporary,
                      std::string("shared counters: mmap: ") + std::strerror(errno));
  }
  // Anonymous shared memory starts zeroed: every count is 0.
  static_assert(std::atomic<std::int32_t>::is_always_lock_free);
  return std::shared_ptr<SharedTally>(
      new SharedTally(static_cast<std::atomic<std::int32_t>*>(p), bytes, workers));
}

SharedTally::~SharedTally() { ::munmap(base_, bytes_); }

std::atomic<std::int32_t>* SharedTally::cell(unsigned worker, Table table,
                                             std::string_view key) const {
  const std::size_t slot = table == Table::total ? 0 : hash(key) % kSlots;
  return base_ + worker * kRow + static_cast<std::size_t>(table) * kSlots + slot;
}

void SharedTally::reset_worker(unsigned index) {
  if (index >= workers_) return;
  for (std::size_t i = 0; i < kRow; ++i) {
    base_[index * kRow + i].store(0, std::memory_order_relaxed);
  }
}

std::uint64_t SharedTally::count(Table table, std::string_view key) const {
  std::int64_t sum = 0;
  for (unsigned w = 0; w < workers_; ++w)
    sum += cell(w, table, key)->load(std::memory_order_relaxed);
  return sum < 0 ? 0 : static_cast<std::uint64_t>(sum);
}

void SharedTally::add(Table table, std::string_view key, int delta) {
  cell(worker_, table, key)->fetch_add(delta, std::memory_order_relaxed);
}

}  // namespace apop::net
