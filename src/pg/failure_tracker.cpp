// PgFailureTracker: the ThrottlingAuthenticator's state in PostgreSQL, so
// that every server behind the load balancer counts the same failures.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/text.hpp"
#include "pg/shared.hpp"

namespace apop::pg {

namespace {

using Ms = std::chrono::milliseconds;

std::int64_t to_ms(auth::ThrottleTime t) {
  return std::chrono::duration_cast<Ms>(t.time_since_epoch()).count();
}

auth::ThrottleTime from_ms(std::int64_t ms) { return auth::ThrottleTime(Ms(ms)); }

// As the memory tracker: user names are counted case-insensitively.
std::string user_key(std::string_view user) { return ascii_lowercase(user); }

// $1 address, $2 user key, $3 oldest counted time (exclusive), $4 count cap.
constexpr const char* kStatus =
    "SELECT (SELECT count(*) FROM (SELECT 1 FROM auth_failures WHERE kind = 'a' AND key = $1"
    "          AND at_ms > $3::bigint LIMIT $4::bigint) a),"
    " (SELECT count(*) FROM (SELECT 1 FROM auth_failures WHERE kind = 'u' AND key = $2"
    "          AND at_ms > $3 LIMIT $4) u),"
    " COALESCE((SELECT until_ms FROM auth_blocks WHERE address = $1), 0),"
    " COALESCE((SELECT until_ms FROM auth_good WHERE user_key = $2 AND address = $1), 0)";

Result<auth::FailureStatus> status_on(pg_conn* c, const std::string& address,
                                      const std::string& user, std::int64_t now_ms,
                                      std::int64_t window_ms, unsigned cap) {
  auto r = exec(c, kStatus,
                {Param::text(address), Param::text(user), Param::integer(now_ms - window_ms),
                 Param::integer(cap)},
                "reading failed-login state");
  if (!r) return r.error();
  auth::FailureStatus s;
  if (!address.empty()) {
    s.address_failures = static_cast<unsigned>(r->integer(0, 0));
    s.blocked_until = from_ms(r->integer(0, 2));
  }
  if (!user.empty()) s.user_failures = static_cast<unsigned>(r->integer(0, 1));
  s.known_good = !address.empty() && !user.empty() && r->integer(0, 3) > now_ms;
  return s;
}

}  // namespace

PgFailureTracker::PgFailureTracker(std::shared_ptr<Pool> pool, auth::ThrottleConfig config)
    : pool_(std::move(pool)), config_(config), memory_(config) {
  unsigned to_cap = 1;
  while (auth::failure_delay(config_, to_cap) < config_.max_delay && to_cap < 64) ++to_cap;
  saturate_ = std::max({config_.block_after, to_cap, 1u});
}

void PgFailureTracker::degraded(const Error& e) {
  ++fallbacks_;
  const std::int64_t now = to_ms(auth::ThrottleClock::now());
  std::int64_t last = last_warning_ms_.load();
  if (now - last >= 60'000 && last_warning_ms_.compare_exchange_strong(last, now)) {
    spdlog::error("failed-login state: {}; counting on this server alone until it is back",
                  e.message);
  }
}

auth::FailureStatus PgFailureTracker::status(std::string_view address, std::string_view user,
                                             auth::ThrottleTime now) {
  auto lease = pool_->acquire();
  if (lease) {
    auto s = status_on(lease->get(), std::string(address), user_key(user), to_ms(now),
                       std::chrono::duration_cast<Ms>(config_.window).count(), saturate_);
    if (s) return *s;
    degraded(s.error());
  } else {
    degraded(lease.error());
  }
  return memory_.status(address, user, now);
}

auth::FailureStatus PgFailureTracker::record_failure(std::string_view address_view,
                                                     std::string_view user_view,
                                                     auth::ThrottleTime now) {
  const std::string address(address_view), user = user_key(user_view);
  const std::int64_t now_ms = to_ms(now);
  const std::int64_t window_ms = std::chrono::duration_cast<Ms>(config_.window).count();
  auto attempt = [&]() -> Result<auth::FailureStatus> {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg_conn* c = lease->get();
    // Expired rows go at most once a minute (any server may do it).
    std::int64_t last = last_cleanup_ms_.load();
    if (now_ms - last >= 60'000 && last_cleanup_ms_.compare_exchange_strong(last, now_ms)) {
      const std::pair<const char*, std::int64_t> expiries[] = {
          {"DELETE FROM auth_failures WHERE at_ms <= $1", now_ms - window_ms},
          {"DELETE FROM auth_blocks WHERE until_ms <= $1", now_ms},
          {"DELETE FROM auth_good WHERE until_ms <= $1", now_ms}};
      for (const auto& [sql, limit] : expiries) {
        if (auto r = exec(c, sql, {Param::integer(limit)}, "expiring failed-login state"); !r) {
          return r.error();
        }
      }
    }
    Transaction tx(c);
    if (auto r = tx.begin(); !r) return r.error();
    // One failure at a time per address, across servers: the count that
    // reaches block_after is seen by exactly one of them.
    if (auto r = exec(
            c, "SELECT pg_advisory_xact_lock(hashtextextended('apop-throttle:' || $1::text, 0))",
            {Param::text(address)}, "locking failed-login state");
        !r) {
      return r.error();
    }
    auto s = status_on(c, address, user, now_ms, window_ms, saturate_);
    if (!s) return s.error();
    if (s->blocked(now)) {
      if (auto r = tx.commit(); !r) return r.error();
      return *s;
    }
    auto ins =
        exec(c,
             "INSERT INTO auth_failures (kind, key, at_ms)"
             " SELECT k, v, $3::bigint FROM (VALUES ('a', $1::text), ('u', $2::text)) AS f(k, v)"
             " WHERE v <> ''",
             {Param::text(address), Param::text(user), Param::integer(now_ms)},
             "recording failed login");
    if (!ins) return ins.error();
    s = status_on(c, address, user, now_ms, window_ms, saturate_);
    if (!s) return s.error();
    if (!address.empty() && config_.block_after > 0 && s->address_failures >= config_.block_after) {
      const std::int64_t until =
          now_ms + std::chrono::duration_cast<Ms>(config_.block_duration).count();
      auto b = exec(c,
                    "INSERT INTO auth_blocks (address, until_ms) VALUES ($1, $2)"
                    " ON CONFLICT (address) DO UPDATE SET until_ms = excluded.until_ms",
                    {Param::text(address), Param::integer(until)}, "blocking address");
      if (!b) return b.error();
      // After the block, the address starts from zero.
      auto d = exec(c, "DELETE FROM auth_failures WHERE kind = 'a' AND key = $1",
                    {Param::text(address)}, "blocking address");
      if (!d) return d.error();
      s->blocked_until = from_ms(until);
    }
    if (auto r = tx.commit(); !r) return r.error();
    return *s;
  };
  auto s = attempt();
  if (s) return *s;
  degraded(s.error());
  return memory_.record_failure(address_view, user_view, now);
}

void PgFailureTracker::record_success(std::string_view address, std::string_view user,
                                      auth::ThrottleTime now) {
  if (address.empty() || user.empty()) return;
  const std::int64_t until =
      to_ms(now) + std::chrono::duration_cast<Ms>(config_.good_login_memory).count();
  auto lease = pool_->acquire();
  if (lease) {
    auto r = exec(lease->get(),
                  "INSERT INTO auth_good (user_key, address, until_ms) VALUES ($1, $2, $3)"
                  " ON CONFLICT (user_key, address) DO UPDATE SET until_ms = excluded.until_ms",
                  {Param::text(user_key(user)), Param::text(address), Param::integer(until)},
                  "recording good login");
    if (r) return;
    degraded(r.error());
  } else {
    degraded(lease.error());
  }
  memory_.record_success(address, user, now);
}

}  // namespace apop::pg
