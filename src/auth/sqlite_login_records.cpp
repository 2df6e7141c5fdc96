// SqliteCredentialStore: record_login and its write-behind (apop serve), and
// the store's constructor and destructor, which writes what is left
// (auth/sqlite_credential_store.hpp).
#include <condition_variable>
#include <thread>
#include <unordered_map>

#include "auth/sqlite_credential_store.hpp"
#include "auth/sqlite_db.hpp"
#include "auth/username.hpp"

namespace apop::auth {

using sqlite::db_error;
using sqlite::Reused;

// The write-behind of record_login: noted times, and the thread that
// writes them through a connection of its own.
struct SqliteCredentialStore::WriteBehind {
  std::mutex mu;
  std::condition_variable wake;
  bool stopping = false;
  // user -> latest noted login; an entry stays until a write of that very
  // value has committed, so account() never misses a login in between.
  std::unordered_map<std::string, std::int64_t> noted;
  sqlite3* db = nullptr;  // used by flush only (serialised by flush_mu)
  std::mutex flush_mu;
  std::thread thread;

  ~WriteBehind() { sqlite3_close_v2(db); }
};

// The constructor and destructor are here, where WriteBehind is complete.
SqliteCredentialStore::SqliteCredentialStore(sqlite3* db, SecretBox box, std::filesystem::path path)
    : db_(db), codec_(std::move(box)), path_(std::move(path)) {}

SqliteCredentialStore::~SqliteCredentialStore() {
  if (write_behind_) {
    {
      std::lock_guard lock(write_behind_->mu);
      write_behind_->stopping = true;
    }
    write_behind_->wake.notify_all();
    if (write_behind_->thread.joinable()) write_behind_->thread.join();
    auto r = flush_login_records();  // what is left; nothing to report it to
    (void)r;
    write_behind_.reset();
  }
  for (auto& [sql, st] : stmt_cache_) sqlite3_finalize(st);
  sqlite3_close_v2(db_);
}

Result<void> SqliteCredentialStore::defer_login_records(std::chrono::milliseconds interval) {
  if (write_behind_) return {};
  auto wb = std::make_unique<WriteBehind>();
  int rc = sqlite3_open_v2(path_.c_str(), &wb->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
                           nullptr);
  if (rc != SQLITE_OK) return db_error(wb->db, rc, "cannot open " + path_.string());
  sqlite3_extended_result_codes(wb->db, 1);
  sqlite3_busy_timeout(wb->db, sqlite::kBusyTimeoutMs);
  // Login times only: durable against a crash of the process once written
  // (they are in the WAL), not against a power loss, where the database
  // stays consistent and LOGIN-DELAY at worst counts from an earlier login.
  for (const char* pragma : {"PRAGMA synchronous = NORMAL", "PRAGMA trusted_schema = OFF"}) {
    if (auto r = sqlite::exec(wb->db, pragma); !r) return r.error();
  }
  write_behind_ = std::move(wb);
  WriteBehind* w = write_behind_.get();
  w->thread = std::thread([this, w, interval] {
    std::unique_lock lock(w->mu);
    while (!w->stopping) {
      w->wake.wait_for(lock, interval, [w] { return w->stopping; });
      if (w->stopping || w->noted.empty()) continue;
      lock.unlock();
      auto r = flush_login_records();  // a busy database: the times stay noted, next round
      (void)r;
      lock.lock();
    }
  });
  return {};
}

Result<void> SqliteCredentialStore::flush_login_records() {
  if (!write_behind_) return {};
  WriteBehind& w = *write_behind_;
  std::lock_guard flushing(w.flush_mu);
  std::vector<std::pair<std::string, std::int64_t>> batch;
  {
    std::lock_guard lock(w.mu);
    batch.assign(w.noted.begin(), w.noted.end());
  }
  if (batch.empty()) return {};
  sqlite::Transaction tx(w.db);
  if (auto r = tx.begin(); !r) return r;
  sqlite::Stmt st;
  int rc = sqlite::prepare(w.db, "UPDATE users SET last_login = ?2 WHERE name = ?1", st);
  if (rc != SQLITE_OK) return db_error(w.db, rc, "recording logins");
  for (const auto& [user, when] : batch) {
    rc = sqlite::bind(st.get(), user, when);
    if (rc == SQLITE_OK) rc = sqlite3_step(st.get());
    if (rc != SQLITE_DONE) return db_error(w.db, rc, "recording logins");
    sqlite3_reset(st.get());
  }
  if (auto r = tx.commit(); !r) return r;
  std::lock_guard lock(w.mu);
  for (const auto& [user, when] : batch) {
    auto it = w.noted.find(user);
    if (it != w.noted.end() && it->second == when) w.noted.erase(it);
  }
  return {};
}

std::optional<std::int64_t> SqliteCredentialStore::noted_login(std::string_view user,
                                                               std::optional<std::int64_t> stored) {
  if (!write_behind_) return stored;
  std::lock_guard lock(write_behind_->mu);
  auto it = write_behind_->noted.find(std::string(user));
  // The noted time is the latest record_login (as the database would hold
  // after the write, even if the clock went back).
  return it == write_behind_->noted.end() ? stored : std::optional<std::int64_t>(it->second);
}

Result<void> SqliteCredentialStore::record_login(std::string_view user, std::int64_t when) {
  if (!is_valid_username(user)) return no_such_user(user);
  if (write_behind_) {
    // Noted only; the write-behind thread writes it (an unknown user's
    // UPDATE changes nothing).
    std::lock_guard lock(write_behind_->mu);
    auto [it, added] = write_behind_->noted.try_emplace(std::string(user), when);
    if (!added) it->second = when;
    return {};
  }
  std::lock_guard lock(mu_);
  // A login time is not worth a disk flush per login: in WAL mode,
  // synchronous=NORMAL makes this commit durable against a crash of the
  // process (it is in the WAL) but not against a power loss, where the
  // database stays consistent and at worst LOGIN-DELAY counts from an
  // earlier login. Everything else keeps synchronous=FULL.
  int rc = SQLITE_OK;
  auto pragma = [this, &rc](const char* sql) {
    Reused p(cached_locked(sql, &rc));
    if (rc == SQLITE_OK) rc = sqlite3_step(p.get());
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) rc = SQLITE_OK;
  };
  pragma("PRAGMA synchronous = NORMAL");
  if (rc != SQLITE_OK) return db_error(db_, rc, "recording login");
  {
    Reused st(cached_locked("UPDATE users SET last_login = ?2 WHERE name = ?1", &rc));
    if (rc == SQLITE_OK) rc = sqlite::bind(st.get(), user, when);
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(st.get());
      if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
  }
  const int changes = rc == SQLITE_OK ? sqlite3_changes(db_) : 0;
  if (rc != SQLITE_OK) {
    auto err = db_error(db_, rc, "recording login");
    pragma("PRAGMA synchronous = FULL");
    return err;
  }
  pragma("PRAGMA synchronous = FULL");
  if (rc != SQLITE_OK) return db_error(db_, rc, "restoring synchronous = FULL");
  if (changes == 0) return no_such_user(user);
  return {};
}

}  // namespace apop::auth
