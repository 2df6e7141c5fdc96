// Failed-login defence: a pop3::Authenticator decorator that slows and blocks
// password guessing (docs/security.md, "Failed-login defence").
//
// Rules (defaults in common/limits.hpp, all configurable):
//  - Every failed login is recorded against the client address (an IPv6
//    client's prefix, see ThrottlingAuthenticator) and against
//    the user name (as sent, lowercased; for SASL the authentication
//    identity the exchange named: SaslReply::user on failure). Its reply is delayed by
//    base * 2^(n-1), capped at the maximum, where n counts the failures in the
//    window from the address, or against the user when that is larger; a
//    user's count does not apply from an address that logged in successfully
//    as that user before ("known good"), so attacks on a name from many
//    addresses slow the attackers, not the owner at their usual address.
//  - `block_after` failures from one address within the window block the
//    address for `block_duration`. While blocked, every login from it fails
//    (reason "blocked", the maximum delay) after the wrapped check has run
//    anyway, so the reply and the work are those of a wrong secret, even for
//    the right one. Attempts while blocked are not counted; the block ends
//    on time, then the address starts from zero.
//  - A success records the (user, address) pair as known good; it does not
//    reset any count (an attacker with an account of their own cannot wash
//    out their failures against others).
//
// The decorator never sleeps: the delay travels in AuthResult::delay (also
// inside a SaslReply) and the network layer waits without blocking a thread.
//
// State lives behind FailureTracker so several servers can share it (a later
// PostgreSQL implementation); MemoryFailureTracker is the in-process one.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/limits.hpp"
#include "pop3/interfaces.hpp"

namespace apop::auth {

// Wall-clock time: a tracker shared by several servers needs one time base.
using ThrottleClock = std::chrono::system_clock;
using ThrottleTime = ThrottleClock::time_point;

struct ThrottleConfig {
  std::chrono::milliseconds base_delay = limits::kAuthFailureDelay;  // 0: no delays
  std::chrono::milliseconds max_delay = limits::kAuthFailureDelayMax;
  unsigned block_after = limits::kBlockAfterFailures;  // 0: never block
  std::chrono::seconds window = limits::kBlockWindow;
  std::chrono::seconds block_duration = limits::kBlockDuration;
  std::chrono::seconds good_login_memory = limits::kGoodLoginMemory;
  std::size_t max_entries = limits::kThrottleTrackedEntries;  // per table (memory tracker)
};

// What a tracker knows of one (address, user) at a given time.
struct FailureStatus {
  unsigned address_failures = 0;  // failures from the address within the window
  unsigned user_failures = 0;     // failures against the user within the window
  ThrottleTime blocked_until{};   // the address is blocked while this is later than now
  bool known_good = false;        // the user logged in from the address within the memory
  bool blocked(ThrottleTime now) const { return blocked_until > now; }
};

// The shared state of the defence. An empty address or user is not tracked
// (its counts stay 0). Counts may saturate at an implementation limit at or
// above block_after (the delay is capped long before).
// Thread-safety: implementations MUST be safe to call concurrently (logins
// run on several threads).
class FailureTracker {
 public:
  virtual ~FailureTracker() = default;
  virtual FailureStatus status(std::string_view address, std::string_view user,
                               ThrottleTime now) = 0;
  // Counts a failure (unless the address is blocked at `now`: nothing is
  // counted then) and blocks the address when its count reaches
  // block_after. Returns the status including this failure (counts as
  // before the block cleared them, so the caller can compute its delay).
  virtual FailureStatus record_failure(std::string_view address, std::string_view user,
                                       ThrottleTime now) = 0;
  // Remembers (user, address) as known good until now + good_login_memory.
  virtual void record_success(std::string_view address, std::string_view user,
                              ThrottleTime now) = 0;
};

// In-process tracker: three bounded LRU tables (addresses, users, good
// pairs) of at most config.max_entries each, so memory stays bounded however
// many names or addresses an attacker cycles through. A full address table
// drops the least recently used address that is not blocked: blocks are
// forgotten only when every entry is a block (then the one that ends first
// goes), so cycling through fresh addresses never lifts a block.
// Thread-safe (one mutex).
class MemoryFailureTracker final : public FailureTracker {
 public:
  explicit MemoryFailureTracker(ThrottleConfig config);
  FailureStatus status(std::string_view address, std::string_view user, ThrottleTime now) override;
  FailureStatus record_failure(std::string_view address, std::string_view user,
                               ThrottleTime now) override;
  void record_success(std::string_view address, std::string_view user, ThrottleTime now) override;

  // Entries currently held per table, and blocked addresses among them (for tests).
  std::size_t address_entries() const;
  std::size_t blocked_entries() const;
  std::size_t user_entries() const;

 private:
  // A string-keyed map that keeps at most `cap` entries, dropping the least
  // recently used (list front = most recent).
  template <typename V>
  class Lru {
   public:
    explicit Lru(std::size_t cap) : cap_(cap == 0 ? 1 : cap) {}
    V* find(const std::string& key);
    V& get(const std::string& key);  // inserts a default V when missing
    std::size_t size() const { return index_.size(); }

   private:
    using List = std::list<std::pair<std::string, V>>;
    std::size_t cap_;
    List order_;
    std::unordered_map<std::string, typename List::iterator> index_;
  };
  struct AddressEntry {
    std::vector<ThrottleTime> failures;  // within the window, oldest first
    ThrottleTime blocked_until{};
  };
  // The address table: an LRU like Lru whose eviction spares blocks. An
  // entry under a block sits on a second list, in the order the blocks
  // began (with one block duration, the order they end); it returns to the
  // LRU list once the block has ended. Beyond `cap` entries, ended blocks
  // are dropped first, then the least recently used entry that is not
  // blocked, and only when there is none the block that ends first.
  // O(1) per call.
  class AddressTable {
   public:
    explicit AddressTable(std::size_t cap) : cap_(cap == 0 ? 1 : cap) {}
    AddressEntry* find(const std::string& key, ThrottleTime now);
    AddressEntry& get(const std::string& key, ThrottleTime now);  // inserts when missing
    // Blocks the entry of `key` (present: just returned by get()) until `until`.
    void block(const std::string& key, ThrottleTime until);
    std::size_t size() const { return index_.size(); }
    std::size_t blocked() const { return blocked_.size(); }

   private:
    using List = std::list<std::pair<std::string, AddressEntry>>;
    struct Where {
      List::iterator it;
      bool blocked;  // on blocked_ rather than lru_
    };
    void evict(ThrottleTime now);
    std::size_t cap_;
    List lru_;      // not blocked; front = most recently used
    List blocked_;  // blocked; front = blocked first
    std::unordered_map<std::string, Where> index_;
  };
  struct UserEntry {
    std::vector<ThrottleTime> failures;
  };
  void prune(std::vector<ThrottleTime>& failures, ThrottleTime now) const;
  FailureStatus status_locked(const std::string& address, const std::string& user,
                              ThrottleTime now);

  ThrottleConfig config_;
  std::size_t counted_;  // failures kept per entry (saturation point)
  mutable std::mutex mu_;
  AddressTable addresses_;
  Lru<UserEntry> users_;
  Lru<ThrottleTime> good_;  // key: user '\n' address -> expiry
};

// The delay before a failure reply for the n-th failure (n >= 1):
// base * 2^(n-1), capped at max; 0 for n == 0 or a zero base.
std::chrono::milliseconds failure_delay(const ThrottleConfig& config, unsigned n);

// The decorator. Wraps `inner` (every call is forwarded, blocked or not) and
// consults `tracker` with AuthContext::address, which the server sets to the
// client's key (an IPv4 address, or an IPv6 client's prefix:
// net::address_key), so every tracker counts prefixes; logins without an
// address (unit tests of other modules) are tracked by user only.
// Ownership: borrows inner and tracker (they must outlive it, and SASL
// sessions it starts must not outlive it). Thread-safety: as the tracker and
// inner; no state of its own besides the clock, which must be thread-safe.
class ThrottlingAuthenticator final : public pop3::Authenticator {
 public:
  using Clock = std::function<ThrottleTime()>;
  ThrottlingAuthenticator(
      pop3::Authenticator& inner, FailureTracker& tracker, ThrottleConfig config,
      Clock clock = [] { return ThrottleClock::now(); });

  pop3::AuthResult verify_apop(std::string_view user, std::string_view timestamp,
                               std::string_view digest, const pop3::AuthContext& ctx) override;
  pop3::AuthResult verify_plain(std::string_view user, std::string_view password,
                                const pop3::AuthContext& ctx) override;
  std::vector<pop3::SaslMechanism> sasl_mechanisms() const override;
  std::unique_ptr<pop3::SaslSession> start_sasl(std::string_view mechanism,
                                                const pop3::AuthContext& ctx) override;
  // RFC 2449 LOGIN-DELAY bookkeeping: forwarded as is.
  void record_login(std::string_view user, std::int64_t when) override {
    inner_.record_login(user, when);
  }

  // Applies the rules to the outcome of a check already done: records it and
  // returns what the client gets (blocked: failure; failure: with delay and
  // reason "throttled" when earlier failures raised the delay).
  pop3::AuthResult judge(pop3::AuthResult checked, std::string_view address, std::string_view user);

 private:
  pop3::Authenticator& inner_;
  FailureTracker& tracker_;
  ThrottleConfig config_;
  Clock clock_;
};

}  // namespace apop::auth
