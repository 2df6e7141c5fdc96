// Connection and session limits of the server (docs/security.md, "Limits"):
// concurrent connections in total and per client address, checked when a
// connection is accepted, and concurrent logged-in sessions per user,
// checked when a login opens the maildrop. Also the key under which a client
// is counted (address_key: an IPv6 client by its prefix).
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "net/shared_tally.hpp"
#include "pop3/interfaces.hpp"

namespace apop::net {

// The key under which the per-address connection cap and the failed-login
// defence (its counts, its blocks, its known-good pairs) count the client
// at `ip` (docs/security.md, "IPv6 clients are counted by prefix"):
//  - an IPv4 address: itself ("192.0.2.7");
//  - an IPv4-mapped IPv6 address (::ffff:192.0.2.7): its IPv4 address;
//  - an IPv6 address: its first `ipv6_prefix_length` bits (at most 128) as
//    "PREFIX/LEN" in canonical form ("2001:db8:1:2::/64"), or the address
//    alone at 128 ("2001:db8::1", as before prefixes);
//  - a scoped IPv6 address (link-local, "fe80::1%eth0"): the same, with its
//    zone kept (RFC 4007 §11.7: "fe80::%eth0/64"), since equal prefixes on
//    two links are two networks.
// Anything else (empty: no address; not an address) comes back unchanged.
// Pure; thread-safe.
std::string address_key(std::string_view ip, unsigned ipv6_prefix_length);

// Open connections, in total and per client address (its address_key()).
// Thread-safety: none; the event-loop thread owns it.
class ConnectionLimits {
 public:
  enum class Verdict { ok, total, per_address };
  // Counts a connection from `address` unless that would exceed a limit
  // (0: unlimited); a refused connection is not counted.
  Verdict admit(const std::string& address, unsigned max_total, unsigned max_per_address);
  // Uncounts a connection admitted earlier.
  void release(const std::string& address);
  std::size_t total() const { return total_; }
  std::size_t from(const std::string& address) const;
  // Workers of one server: the limits count every worker's connections
  // (`shared` must outlive this object; null: this process only).
  void share(SharedTally* shared) { shared_ = shared; }

 private:
  SharedTally* shared_ = nullptr;
  std::size_t total_ = 0;
  std::unordered_map<std::string, std::size_t> per_address_;
};

// Logged-in sessions per user. Thread-safe (logins run on the auth pool,
// sessions end on the event loop).
class UserSessions {
 public:
  // Counts a session of `user` unless it already has `max` (0: unlimited).
  bool acquire(const std::string& user, unsigned max);
  void release(const std::string& user);
  std::size_t count(const std::string& user) const;
  // As ConnectionLimits::share: the limit counts every worker's sessions.
  void share(SharedTally* shared) { shared_ = shared; }

 private:
  SharedTally* shared_ = nullptr;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::size_t> sessions_;
};

// A MaildropOpener decorator that enforces UserSessions: open() fails with
// Errc::in_use (the core replies "-ERR [IN-USE]", RFC 2449 §8.1.2) when the
// user has `max` sessions already, before the inner opener is asked; a
// maildrop it returns uncounts its session when destroyed.
// Ownership: borrows inner and sessions; both must outlive every Maildrop it
// returns. Thread-safety: as inner (UserSessions is thread-safe).
class SessionLimitOpener final : public pop3::MaildropOpener {
 public:
  SessionLimitOpener(pop3::MaildropOpener& inner, UserSessions& sessions, unsigned max)
      : inner_(inner), sessions_(sessions), max_(max) {}
  Result<std::unique_ptr<pop3::Maildrop>> open(const pop3::MailboxAddress& where) override;
  bool opens_without_waiting(const pop3::MailboxAddress& where) override {
    return inner_.opens_without_waiting(where);
  }

 private:
  pop3::MaildropOpener& inner_;
  UserSessions& sessions_;
  unsigned max_;
};

}  // namespace apop::net
