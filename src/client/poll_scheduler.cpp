#include "client/poll_scheduler.hpp"

#include <algorithm>
#include <cmath>

namespace apop::client {

PollScheduler::PollScheduler(unsigned max_parallel, Random random)
    : max_parallel_(std::max(1u, max_parallel)), random_(std::move(random)) {}

void PollScheduler::set_max_parallel(unsigned n) { max_parallel_ = std::max(1u, n); }

void PollScheduler::set_accounts(const std::vector<Account>& accounts, TimePoint now) {
  for (auto& [name, st] : accounts_) st.present = false;
  for (const auto& a : accounts) {
    auto it = accounts_.find(a.name);
    if (it == accounts_.end()) {
      State st;
      st.interval = a.interval;
      st.due = now;
      accounts_.emplace(a.name, st);
    } else {
      it->second.interval = a.interval;
      it->second.present = true;
    }
  }
  for (auto it = accounts_.begin(); it != accounts_.end();) {
    if (!it->second.present && !it->second.running) {
      it = accounts_.erase(it);
    } else {
      ++it;
    }
  }
}

std::vector<std::string> PollScheduler::start_due(TimePoint now) {
  std::vector<std::pair<TimePoint, const std::string*>> due;
  for (const auto& [name, st] : accounts_) {
    if (st.present && !st.running && st.due <= now) due.emplace_back(st.due, &name);
  }
  std::stable_sort(due.begin(), due.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (const auto& [when, name] : due) {
    if (running_ >= max_parallel_) break;
    accounts_.find(*name)->second.running = true;
    ++running_;
    out.push_back(*name);
  }
  return out;
}

void PollScheduler::finished(const std::string& name, bool ok, TimePoint now) {
  auto it = accounts_.find(name);
  if (it == accounts_.end() || !it->second.running) return;
  State& st = it->second;
  st.running = false;
  --running_;
  if (!st.present) {
    accounts_.erase(it);
    return;
  }
  st.failures = ok ? 0 : st.failures + 1;
  st.due = now + delay(st.interval, st.failures, random_ ? random_() : 0.5);
}

std::optional<PollScheduler::TimePoint> PollScheduler::next_due() const {
  if (running_ >= max_parallel_) return std::nullopt;
  std::optional<TimePoint> best;
  for (const auto& [name, st] : accounts_) {
    if (st.present && !st.running && (!best || st.due < *best)) best = st.due;
  }
  return best;
}

unsigned PollScheduler::failures(const std::string& name) const {
  auto it = accounts_.find(name);
  return it == accounts_.end() ? 0 : it->second.failures;
}

std::optional<PollScheduler::TimePoint> PollScheduler::due(const std::string& name) const {
  auto it = accounts_.find(name);
  if (it == accounts_.end() || it->second.running) return std::nullopt;
  return it->second.due;
}

std::chrono::milliseconds PollScheduler::delay(std::chrono::seconds interval, unsigned failures,
                                               double r) {
  const double base = static_cast<double>(interval.count());
  const double cap = std::max(base, static_cast<double>(limits::kFetchBackoffCap.count()));
  // 2^failures without overflow: past 2^30 the cap has long been reached.
  const double grown =
      std::min(cap, base * std::ldexp(1.0, static_cast<int>(std::min(failures, 30u))));
  const double wait = failures == 0 ? base : std::max(base, grown);
  r = std::clamp(r, 0.0, 1.0);
  const double factor = 1.0 + limits::kFetchPollJitter * (2.0 * r - 1.0);
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(wait * factor * 1000.0)));
}

}  // namespace apop::client
