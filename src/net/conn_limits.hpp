// Connection and session limits of the server (docs/security.md, "Limits"):
// concurrent connections in total and per client address, checked when a
// connection is accepted, and concurrent logged-in sessions per user,
// checked when a login opens the maildrop.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "pop3/interfaces.hpp"

namespace apop::net {

// Open connections, in total and per client address (IP without port).
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

 private:
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

 private:
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
  Result<std::unique_ptr<pop3::Maildrop>> open(std::string_view user) override;
  bool opens_without_waiting(std::string_view user) override {
    return inner_.opens_without_waiting(user);
  }

 private:
  pop3::MaildropOpener& inner_;
  UserSessions& sessions_;
  unsigned max_;
};

}  // namespace apop::net
