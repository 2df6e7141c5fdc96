#include "auth/throttle.hpp"

#include <algorithm>
#include <iterator>

#include "common/text.hpp"

namespace apop::auth {

namespace {

// User names are counted case-insensitively: "Alice" and "alice" share one
// count whatever the store thinks of them (more counting, never less).
std::string user_key(std::string_view user) { return ascii_lowercase(user); }

std::string pair_key(const std::string& user, const std::string& address) {
  return user + '\n' + address;
}

bool is_credentials_failure(pop3::AuthFailure why) {
  return why == pop3::AuthFailure::none || why == pop3::AuthFailure::credentials;
}

}  // namespace

std::chrono::milliseconds failure_delay(const ThrottleConfig& config, unsigned n) {
  if (n == 0 || config.base_delay.count() <= 0) return std::chrono::milliseconds(0);
  std::chrono::milliseconds d = config.base_delay;
  for (unsigned i = 1; i < n && d < config.max_delay; ++i) d *= 2;
  return std::min(d, config.max_delay);
}

// --- MemoryFailureTracker ----------------------------------------------------

template <typename V>
V* MemoryFailureTracker::Lru<V>::find(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  order_.splice(order_.begin(), order_, it->second);
  return &it->second->second;
}

template <typename V>
V& MemoryFailureTracker::Lru<V>::get(const std::string& key) {
  if (V* v = find(key)) return *v;
  order_.emplace_front(key, V{});
  index_.emplace(key, order_.begin());
  while (index_.size() > cap_) {
    index_.erase(order_.back().first);
    order_.pop_back();
  }
  return order_.front().second;
}

MemoryFailureTracker::AddressEntry* MemoryFailureTracker::AddressTable::find(const std::string& key,
                                                                             ThrottleTime now) {
  auto found = index_.find(key);
  if (found == index_.end()) return nullptr;
  Where& w = found->second;
  if (w.blocked && w.it->second.blocked_until > now) return &w.it->second;  // keeps its place
  // Not blocked (any more): most recently used.
  lru_.splice(lru_.begin(), w.blocked ? blocked_ : lru_, w.it);
  w.blocked = false;
  return &w.it->second;
}

MemoryFailureTracker::AddressEntry& MemoryFailureTracker::AddressTable::get(const std::string& key,
                                                                            ThrottleTime now) {
  if (AddressEntry* a = find(key, now)) return *a;
  lru_.emplace_front(key, AddressEntry{});
  index_.emplace(key, Where{lru_.begin(), false});
  evict(now);
  return lru_.front().second;
}

void MemoryFailureTracker::AddressTable::evict(ThrottleTime now) {
  while (index_.size() > cap_) {
    List* from = nullptr;
    if (!blocked_.empty() && blocked_.front().second.blocked_until <= now) {
      from = &blocked_;  // a block that has ended: nothing left to remember
    } else if (lru_.size() > 1) {
      from = &lru_;  // never the entry get() just inserted (the front)
    } else {
      from = &blocked_;  // every other entry is a block: the one that ends first
    }
    auto victim = from == &lru_ ? std::prev(lru_.end()) : blocked_.begin();
    index_.erase(victim->first);
    from->erase(victim);
  }
}

void MemoryFailureTracker::AddressTable::block(const std::string& key, ThrottleTime until) {
  auto found = index_.find(key);
  if (found == index_.end()) return;
  Where& w = found->second;
  w.it->second.blocked_until = until;
  if (!w.blocked) blocked_.splice(blocked_.end(), lru_, w.it);
  w.blocked = true;
}

MemoryFailureTracker::MemoryFailureTracker(ThrottleConfig config)
    : config_(config),
      addresses_(config.max_entries),
      users_(config.max_entries),
      good_(config.max_entries) {
  // Keep enough failures per entry to reach the block and the delay cap.
  unsigned to_cap = 1;
  while (failure_delay(config_, to_cap) < config_.max_delay && to_cap < 64) ++to_cap;
  counted_ = std::max<std::size_t>({config_.block_after, to_cap, 1});
}

void MemoryFailureTracker::prune(std::vector<ThrottleTime>& failures, ThrottleTime now) const {
  const ThrottleTime oldest = now - config_.window;
  auto keep =
      std::find_if(failures.begin(), failures.end(), [&](ThrottleTime t) { return t > oldest; });
  failures.erase(failures.begin(), keep);
  if (failures.size() > counted_) {
    failures.erase(failures.begin(),
                   failures.begin() + static_cast<std::ptrdiff_t>(failures.size() - counted_));
  }
}

FailureStatus MemoryFailureTracker::status_locked(const std::string& address,
                                                  const std::string& user, ThrottleTime now) {
  FailureStatus s;
  if (!address.empty()) {
    if (AddressEntry* a = addresses_.find(address, now)) {
      prune(a->failures, now);
      s.address_failures = static_cast<unsigned>(a->failures.size());
      s.blocked_until = a->blocked_until;
    }
  }
  if (!user.empty()) {
    if (UserEntry* u = users_.find(user)) {
      prune(u->failures, now);
      s.user_failures = static_cast<unsigned>(u->failures.size());
    }
    if (!address.empty()) {
      if (ThrottleTime* until = good_.find(pair_key(user, address))) s.known_good = *until > now;
    }
  }
  return s;
}

FailureStatus MemoryFailureTracker::status(std::string_view address, std::string_view user,
                                           ThrottleTime now) {
  std::lock_guard lock(mu_);
  return status_locked(std::string(address), user_key(user), now);
}

FailureStatus MemoryFailureTracker::record_failure(std::string_view address_view,
                                                   std::string_view user_view, ThrottleTime now) {
  const std::string address(address_view), user = user_key(user_view);
  std::lock_guard lock(mu_);
  FailureStatus s = status_locked(address, user, now);
  if (s.blocked(now)) return s;
  if (!user.empty()) {
    UserEntry& u = users_.get(user);
    u.failures.push_back(now);
    prune(u.failures, now);
    s.user_failures = static_cast<unsigned>(u.failures.size());
  }
  if (!address.empty()) {
    AddressEntry& a = addresses_.get(address, now);
    a.failures.push_back(now);
    prune(a.failures, now);
    s.address_failures = static_cast<unsigned>(a.failures.size());
    if (config_.block_after > 0 && a.failures.size() >= config_.block_after) {
      a.failures.clear();  // after the block, the address starts from zero
      addresses_.block(address, now + config_.block_duration);
      s.blocked_until = a.blocked_until;
    }
  }
  return s;
}

void MemoryFailureTracker::record_success(std::string_view address, std::string_view user,
                                          ThrottleTime now) {
  if (address.empty() || user.empty()) return;
  std::lock_guard lock(mu_);
  good_.get(pair_key(user_key(user), std::string(address))) = now + config_.good_login_memory;
}

std::size_t MemoryFailureTracker::address_entries() const {
  std::lock_guard lock(mu_);
  return addresses_.size();
}

std::size_t MemoryFailureTracker::blocked_entries() const {
  std::lock_guard lock(mu_);
  return addresses_.blocked();
}

std::size_t MemoryFailureTracker::user_entries() const {
  std::lock_guard lock(mu_);
  return users_.size();
}

// --- ThrottlingAuthenticator -------------------------------------------------

namespace {

// Runs the wrapped exchange step by step; its final reply is judged like an
// APOP or USER/PASS result.
class ThrottlingSasl final : public pop3::SaslSession {
 public:
  ThrottlingSasl(std::unique_ptr<pop3::SaslSession> inner, ThrottlingAuthenticator& owner,
                 std::string_view address)
      : inner_(std::move(inner)), owner_(owner), address_(address) {}

  pop3::SaslReply step(std::optional<std::string_view> response) override {
    pop3::SaslReply r = inner_->step(response);
    if (r.kind != pop3::SaslReply::Kind::done) return r;
    r.result = owner_.judge(std::move(r.result), address_, r.user);
    return r;
  }

 private:
  std::unique_ptr<pop3::SaslSession> inner_;
  ThrottlingAuthenticator& owner_;
  std::string address_;  // AuthContext::address is borrowed; the exchange outlives the call
};

}  // namespace

ThrottlingAuthenticator::ThrottlingAuthenticator(pop3::Authenticator& inner,
                                                 FailureTracker& tracker, ThrottleConfig config,
                                                 Clock clock)
    : inner_(inner), tracker_(tracker), config_(config), clock_(std::move(clock)) {}

pop3::AuthResult ThrottlingAuthenticator::judge(pop3::AuthResult checked, std::string_view address,
                                                std::string_view user) {
  const ThrottleTime now = clock_();
  const FailureStatus before = tracker_.status(address, user, now);
  if (before.blocked(now)) {
    // The same reply as a wrong secret, after the same work (the caller ran
    // the wrapped check), even when the secret was right.
    pop3::AuthResult blocked;
    blocked.failure = pop3::AuthFailure::blocked;
    blocked.delay = failure_delay(config_, 64);  // the maximum
    return blocked;
  }
  if (checked.ok) {
    tracker_.record_success(address, user, now);
    checked.delay = std::chrono::milliseconds(0);
    return checked;
  }
  // The account store could not be asked ([SYS/TEMP]): not a guess, not counted.
  if (checked.failure == pop3::AuthFailure::temporary) return checked;
  const FailureStatus after = tracker_.record_failure(address, user, now);
  unsigned n = after.address_failures;
  if (!after.known_good) n = std::max(n, after.user_failures);
  checked.delay = failure_delay(config_, n);
  // Earlier failures in the window slowed this reply: say so in logs.
  if (n >= 2 && checked.delay.count() > 0 && is_credentials_failure(checked.failure)) {
    checked.failure = pop3::AuthFailure::throttled;
  }
  checked.credential.clear();
  return checked;
}

pop3::AuthResult ThrottlingAuthenticator::verify_apop(std::string_view user,
                                                      std::string_view timestamp,
                                                      std::string_view digest,
                                                      const pop3::AuthContext& ctx) {
  return judge(inner_.verify_apop(user, timestamp, digest, ctx), ctx.address, user);
}

pop3::AuthResult ThrottlingAuthenticator::verify_plain(std::string_view user,
                                                       std::string_view password,
                                                       const pop3::AuthContext& ctx) {
  return judge(inner_.verify_plain(user, password, ctx), ctx.address, user);
}

std::vector<pop3::SaslMechanism> ThrottlingAuthenticator::sasl_mechanisms() const {
  return inner_.sasl_mechanisms();
}

std::unique_ptr<pop3::SaslSession> ThrottlingAuthenticator::start_sasl(
    std::string_view mechanism, const pop3::AuthContext& ctx) {
  auto inner = inner_.start_sasl(mechanism, ctx);
  if (!inner) return nullptr;
  return std::make_unique<ThrottlingSasl>(std::move(inner), *this, ctx.address);
}

}  // namespace apop::auth
