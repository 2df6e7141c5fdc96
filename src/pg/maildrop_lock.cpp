// MaildropLocks and SharedLockOpener: [IN-USE] across servers with
// PostgreSQL advisory locks.
#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include "pg/shared.hpp"

namespace apop::pg {

namespace {

// 64 bits of hash: two users sharing a lock by collision is negligible.
constexpr const char* kLock =
    "SELECT pg_try_advisory_lock(hashtextextended('apop-maildrop:' || $1::text, 0))";
constexpr const char* kUnlock =
    "SELECT pg_advisory_unlock(hashtextextended('apop-maildrop:' || $1::text, 0))";

}  // namespace

MaildropLocks::MaildropLocks(std::string url) : url_(std::move(url)) {}

MaildropLocks::~MaildropLocks() {
  if (conn_ != nullptr) PQfinish(conn_);  // the server releases every lock
}

std::size_t MaildropLocks::held() const {
  std::lock_guard lock(mu_);
  std::size_t n = 0;
  for (const auto& [user, count] : held_) n += count;
  return n;
}

Result<void> MaildropLocks::ensure_connected_locked() {
  if (conn_ != nullptr && PQconsumeInput(conn_) == 1 && PQstatus(conn_) == CONNECTION_OK) {
    return {};
  }
  if (conn_ != nullptr) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  auto c = connect(url_);
  if (!c) return c.error();
  conn_ = *c;
  if (!held_.empty()) {
    // The old connection's locks went with it: take those of the sessions
    // still open here again.
    for (const auto& [user, count] : held_) {
      for (unsigned i = 0; i < count; ++i) {
        auto r = exec(conn_, kLock, {Param::text(user)}, "re-taking maildrop lock");
        if (!r || r->text(0, 0) != "t") {
          spdlog::error(
              "maildrop lock of user={} lost with the PostgreSQL connection and {}; the local "
              "lock still protects it on this server",
              user, r ? "taken by another server meanwhile" : r.error().message);
          break;
        }
      }
    }
    spdlog::warn("maildrop lock connection re-established; {} lock(s) re-taken", held_.size());
  }
  return {};
}

Result<bool> MaildropLocks::try_lock_locked(const std::string& user) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (auto r = ensure_connected_locked(); !r) return r.error();
    auto r = exec(conn_, kLock, {Param::text(user)}, "taking maildrop lock");
    if (r) return r->text(0, 0) == "t";
    // A connection that broke since the last use: reconnect once.
    if (PQstatus(conn_) == CONNECTION_OK || attempt == 1) return r.error();
  }
  return make_error(Errc::temporary, "PostgreSQL: taking maildrop lock failed");
}

Result<bool> MaildropLocks::try_lock(std::string_view user) {
  const std::string u(user);
  std::lock_guard lock(mu_);
  auto got = try_lock_locked(u);
  if (!got) return got.error();
  if (*got) ++held_[u];
  return *got;
}

void MaildropLocks::release(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = held_.find(user);
  if (it == held_.end()) return;
  const std::string u = it->first;
  if (--it->second == 0) held_.erase(it);
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) return;  // gone with the connection
  auto r = exec(conn_, kUnlock, {Param::text(u)}, "releasing maildrop lock");
  if (!r) {
    // A lock we cannot release would keep the user out on every server:
    // drop the connection, which releases all of this server's locks; the
    // next try_lock() reconnects and takes back those still in use.
    spdlog::error("{}; reconnecting the lock connection", r.error().message);
    PQfinish(conn_);
    conn_ = nullptr;
  }
}

SharedLockOpener::SharedLockOpener(std::string url, pop3::MaildropOpener& inner)
    : locks_(std::move(url)), opener_(locks_, inner) {}

}  // namespace apop::pg
