// When `apop fetch --config FILE --daemon` polls each account: every account
// on its own interval with jitter, at most max_parallel at once, and a
// failing account backing off exponentially (capped) without delaying the
// others.
//
// The scheduler is a state machine without clock, threads or sleeping: the
// caller passes the current time to each call and does the waiting (until
// next_due(), or until a poll finishes), so unit tests drive backoff, jitter
// and the parallel bound with made-up times. The random source is
// injectable for the same reason. Not thread-safe: one thread (the daemon's
// main loop) calls it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/limits.hpp"

namespace apop::client {

class PollScheduler {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;
  // Uniform in [0, 1).
  using Random = std::function<double()>;

  struct Account {
    std::string name;
    std::chrono::seconds interval = limits::kFetchPollInterval;
  };

  PollScheduler(unsigned max_parallel, Random random);

  // Replaces the account list (at start, and on SIGHUP). An account whose
  // name was already known keeps its next poll time and failure count (its
  // new interval applies from its next poll); a new one is due at `now`; a
  // removed one is forgotten (if it is being polled, that poll finishes and
  // its finished() is ignored, but it still holds its slot until then).
  void set_accounts(const std::vector<Account>& accounts, TimePoint now);
  void set_max_parallel(unsigned n);

  // The accounts to poll now: due at or before `now`, not being polled,
  // earliest due first, as many as max_parallel allows; they are marked as
  // being polled.
  std::vector<std::string> start_due(TimePoint now);

  // A poll of `name` ended at `now`: success resets its failure count, a
  // failure adds one; its next poll is at now + delay(interval, failures).
  void finished(const std::string& name, bool ok, TimePoint now);

  // When start_due() may next return an account: nullopt when nothing is
  // waiting or every slot is busy (then only finished() changes that).
  std::optional<TimePoint> next_due() const;

  std::size_t running() const { return running_; }
  unsigned failures(const std::string& name) const;
  std::optional<TimePoint> due(const std::string& name) const;

  // The wait after a poll: interval * 2^failures, at most
  // max(interval, kFetchBackoffCap), multiplied by 1 + kFetchPollJitter *
  // (2r - 1) for r in [0, 1).
  static std::chrono::milliseconds delay(std::chrono::seconds interval, unsigned failures,
                                         double r);

 private:
  struct State {
    std::chrono::seconds interval{};
    TimePoint due{};
    unsigned failures = 0;
    bool running = false;
    bool present = true;  // false: removed while its poll was running
  };
  unsigned max_parallel_;
  Random random_;
  std::size_t running_ = 0;
  std::map<std::string, State, std::less<>> accounts_;
};

}  // namespace apop::client
