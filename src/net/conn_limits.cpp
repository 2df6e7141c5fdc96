#include "net/conn_limits.hpp"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "pop3/guarded_maildrop.hpp"

namespace apop::net {

std::string address_key(std::string_view ip, unsigned ipv6_prefix_length) {
  std::string_view addr = ip, zone;
  if (const auto pct = ip.find('%'); pct != std::string_view::npos) {
    addr = ip.substr(0, pct);
    zone = ip.substr(pct);  // with its '%'
  }
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.empty() || addr.size() >= sizeof text) return std::string(ip);
  std::memcpy(text, addr.data(), addr.size());
  unsigned char bytes[16] = {};
  if (zone.empty() && ::inet_pton(AF_INET, text, bytes) == 1) return std::string(ip);
  if (::inet_pton(AF_INET6, text, bytes) != 1) return std::string(ip);
  static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(bytes, kMapped, sizeof kMapped) == 0) {
    // ::ffff:a.b.c.d is the IPv4 client a.b.c.d (a dual-stack listener's view).
    char v4[INET_ADDRSTRLEN] = {};
    if (::inet_ntop(AF_INET, bytes + 12, v4, sizeof v4) == nullptr) return std::string(ip);
    return v4;
  }
  const unsigned prefix = std::min(ipv6_prefix_length, 128u);
  for (unsigned bit = 0; bit < 128; bit += 8) {
    const unsigned keep = prefix > bit ? std::min(prefix - bit, 8u) : 0;
    bytes[bit / 8] &= static_cast<unsigned char>(0xff00u >> keep);
  }
  char out[INET6_ADDRSTRLEN] = {};
  if (::inet_ntop(AF_INET6, bytes, out, sizeof out) == nullptr) return std::string(ip);
  std::string key = out;
  key += zone;
  if (prefix < 128) key += "/" + std::to_string(prefix);
  return key;
}

ConnectionLimits::Verdict ConnectionLimits::admit(const std::string& address, unsigned max_total,
                                                  unsigned max_per_address) {
  using T = SharedTally::Table;
  const std::size_t total = shared_ ? shared_->count(T::total, {}) : total_;
  if (max_total != 0 && total >= max_total) return Verdict::total;
  std::size_t& n = per_address_[address];
  const std::size_t from = shared_ ? shared_->count(T::per_address, address) : n;
  if (max_per_address != 0 && from >= max_per_address) {
    if (n == 0) per_address_.erase(address);
    return Verdict::per_address;
  }
  ++n;
  ++total_;
  if (shared_) {
    shared_->add(T::total, {}, 1);
    shared_->add(T::per_address, address, 1);
  }
  return Verdict::ok;
}

void ConnectionLimits::release(const std::string& address) {
  auto it = per_address_.find(address);
  if (it == per_address_.end()) return;
  if (--it->second == 0) per_address_.erase(it);
  --total_;
  if (shared_) {
    shared_->add(SharedTally::Table::total, {}, -1);
    shared_->add(SharedTally::Table::per_address, address, -1);
  }
}

std::size_t ConnectionLimits::from(const std::string& address) const {
  auto it = per_address_.find(address);
  return it == per_address_.end() ? 0 : it->second;
}

bool UserSessions::acquire(const std::string& user, unsigned max) {
  std::lock_guard lock(mu_);
  std::size_t& n = sessions_[user];
  const std::size_t all = shared_ ? shared_->count(SharedTally::Table::per_user, user) : n;
  if (max != 0 && all >= max) {
    if (n == 0) sessions_.erase(user);
    return false;
  }
  ++n;
  if (shared_) shared_->add(SharedTally::Table::per_user, user, 1);
  return true;
}

void UserSessions::release(const std::string& user) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(user);
  if (it == sessions_.end()) return;
  if (--it->second == 0) sessions_.erase(it);
  if (shared_) shared_->add(SharedTally::Table::per_user, user, -1);
}

std::size_t UserSessions::count(const std::string& user) const {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(user);
  return it == sessions_.end() ? 0 : it->second;
}

Result<std::unique_ptr<pop3::Maildrop>> SessionLimitOpener::open(
    const pop3::MailboxAddress& where) {
  std::string user(where.user);
  if (!sessions_.acquire(user, max_)) {
    // Only authenticated names get here (the credential store's names).
    spdlog::warn("session limit user={} max={}", user, max_);
    return make_error(Errc::in_use, "too many sessions for " + user);
  }
  auto md = inner_.open(where);
  if (!md.ok()) {
    sessions_.release(user);
    return md.error();
  }
  // The session count is given back once the maildrop (and its lock) is gone.
  return pop3::guard_maildrop(
      std::move(*md), [&sessions = sessions_, user = std::move(user)] { sessions.release(user); });
}

}  // namespace apop::net
