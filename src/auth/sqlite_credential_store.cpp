#include <sqlite3.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <optional>
#include <thread>
#include <unordered_map>

#include "auth/credential_store.hpp"
#include "auth/foreign_hash.hpp"
#include "auth/password_hash.hpp"
#include "auth/username.hpp"

namespace apop::auth {
namespace {

constexpr int kSchemaVersion = 5;
constexpr int kBusyTimeoutMs = 5000;

std::int64_t now() { return static_cast<std::int64_t>(std::time(nullptr)); }

Errc classify(int rc) {
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
    case SQLITE_FORMAT:
    case SQLITE_MISUSE:
    case SQLITE_SCHEMA:
    case SQLITE_ERROR:
      return Errc::permanent;
    default:  // BUSY, LOCKED, IOERR, FULL, CANTOPEN, NOMEM, ...
      return Errc::temporary;
  }
}

Error db_error(sqlite3* db, int rc, const std::string& what) {
  // sqlite3_errmsg never contains bound parameter values, so no secret leaks.
  std::string msg = "credential database: " + what + ": ";
  msg += db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return make_error(classify(rc), std::move(msg));
}

Error no_user(std::string_view user) {
  return make_error(Errc::not_found, "no such user: " + std::string(user));
}

// A prepared statement, finalized on scope exit.
class Stmt {
 public:
  Stmt() = default;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { sqlite3_finalize(s_); }
  sqlite3_stmt* get() const { return s_; }
  sqlite3_stmt** out() { return &s_; }

 private:
  sqlite3_stmt* s_ = nullptr;
};

// A statement of the connection's cache (SqliteCredentialStore::cached_locked),
// reset and unbound on scope exit so that it holds no read transaction and
// no borrowed parameter once the lookup is done.
class Reused {
 public:
  explicit Reused(sqlite3_stmt* s) : s_(s) {}
  Reused(const Reused&) = delete;
  Reused& operator=(const Reused&) = delete;
  ~Reused() {
    if (s_ != nullptr) {
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
    }
  }
  sqlite3_stmt* get() const { return s_; }

 private:
  sqlite3_stmt* s_;
};

int prepare(sqlite3* db, const char* sql, Stmt& st) {
  return sqlite3_prepare_v2(db, sql, -1, st.out(), nullptr);
}

int bind_text(sqlite3_stmt* s, int i, std::string_view v) {
  return sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}

int bind_blob(sqlite3_stmt* s, int i, std::string_view v) {
  return sqlite3_bind_blob(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}

// Runs a statement without parameters that returns no rows we need.
Result<void> exec(sqlite3* db, const char* sql) {
  Stmt st;
  int rc = prepare(db, sql, st);
  if (rc != SQLITE_OK) return db_error(db, rc, sql);
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
  }
  if (rc != SQLITE_DONE) return db_error(db, rc, sql);
  return {};
}

std::string column_text(sqlite3_stmt* s, int i) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
  const int n = sqlite3_column_bytes(s, i);
  return p ? std::string(p, std::size_t(n)) : std::string();
}

std::string column_blob(sqlite3_stmt* s, int i) {
  const void* p = sqlite3_column_blob(s, i);
  const int n = sqlite3_column_bytes(s, i);
  return p && n > 0 ? std::string(static_cast<const char*>(p), std::size_t(n)) : std::string();
}

std::optional<bool> column_bool(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_int(s, i) != 0;
}

int bind_opt_bool(sqlite3_stmt* s, int i, std::optional<bool> v) {
  return v ? sqlite3_bind_int(s, i, *v ? 1 : 0) : sqlite3_bind_null(s, i);
}

Policy column_policy(sqlite3_stmt* s, int first) {
  Policy p;
  if (sqlite3_column_type(s, first) != SQLITE_NULL) {
    p.mechanisms = parse_mechanisms(column_text(s, first));
  }
  p.device_secrets_only = column_bool(s, first + 1);
  p.md5_challenge_requires_tls = column_bool(s, first + 2);
  p.require_tls = column_bool(s, first + 3);
  return p;
}

std::optional<std::int64_t> column_opt_int(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_int64(s, i);
}

// The per-account LOGIN-DELAY and EXPIRE columns (users only).
void column_login_limits(sqlite3_stmt* s, int first, Policy& p) {
  if (auto d = column_opt_int(s, first); d && *d >= 0 && *d <= 0xFFFFFFFFll) {
    p.login_delay = static_cast<std::uint32_t>(*d);
  }
  p.expire_days = column_opt_int(s, first + 1);
}

int bind_opt_int(sqlite3_stmt* s, int i, std::optional<std::int64_t> v) {
  return v ? sqlite3_bind_int64(s, i, *v) : sqlite3_bind_null(s, i);
}

int bind_policy(sqlite3_stmt* s, int first, const Policy& p, std::string& mech_buf) {
  int rc = SQLITE_OK;
  if (p.mechanisms) {
    mech_buf = format_mechanisms(*p.mechanisms);
    rc = bind_text(s, first, mech_buf);
  } else {
    rc = sqlite3_bind_null(s, first);
  }
  if (rc == SQLITE_OK) rc = bind_opt_bool(s, first + 1, p.device_secrets_only);
  if (rc == SQLITE_OK) rc = bind_opt_bool(s, first + 2, p.md5_challenge_requires_tls);
  if (rc == SQLITE_OK) rc = bind_opt_bool(s, first + 3, p.require_tls);
  return rc;
}

std::string device_aad(std::string_view user, std::string_view name) {
  std::string aad(user);
  aad.push_back('\0');
  aad += "device";
  aad.push_back('\0');
  aad.append(name);
  return aad;
}

constexpr const char* kCreateV2 =
    "CREATE TABLE users ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " created INTEGER NOT NULL,"
    " updated INTEGER NOT NULL,"
    " password_hash TEXT NOT NULL,"
    " scram_sha256 TEXT NOT NULL,"
    " scram_sha1 TEXT NOT NULL,"
    " sealed_password BLOB,"  // NULL under device-secrets-only
    " mechanisms TEXT,"       // NULL: the default
    " device_secrets_only INTEGER,"
    // Policy::md5_challenge_requires_tls (APOP and CRAM-MD5): the column
    // keeps its old name, no migration needed.
    " apop_requires_tls INTEGER,"
    " require_tls INTEGER);"
    "CREATE TABLE device_secrets ("
    " user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,"
    " name TEXT NOT NULL,"
    " sealed BLOB NOT NULL,"
    " created INTEGER NOT NULL,"
    " PRIMARY KEY (user, name));"
    "CREATE TABLE policy_defaults ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " mechanisms TEXT,"
    " device_secrets_only INTEGER,"
    " apop_requires_tls INTEGER,"
    " require_tls INTEGER);"
    "INSERT INTO policy_defaults (id) VALUES (1);";

Result<void> chmod_0600(const std::filesystem::path& p, bool must_exist) {
  if (::chmod(p.c_str(), 0600) != 0) {
    int e = errno;
    if (e == ENOENT && !must_exist) return {};
    return make_error(Errc::permanent, "cannot chmod 600 " + p.string() + ": " + std::strerror(e));
  }
  return {};
}

class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {}
  ~Transaction() {
    if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Result<void> begin() {
    auto r = exec(db_, "BEGIN IMMEDIATE");
    open_ = r.ok();
    return r;
  }
  Result<void> commit() {
    auto r = exec(db_, "COMMIT");
    if (r) open_ = false;
    return r;
  }

 private:
  sqlite3* db_;
  bool open_ = false;
};

}  // namespace

SqliteCredentialStore::SqliteCredentialStore(sqlite3* db, SecretBox box, std::filesystem::path path)
    : db_(db), box_(std::move(box)), path_(std::move(path)) {
  auto dummy = box_.seal("apop-dummy-secret-for-unknown-users", "\x01dummy");
  if (dummy) dummy_sealed_ = std::move(*dummy);
}

Error SqliteCredentialStore::unknown_user(std::string_view user) const {
  auto discarded = box_.open(dummy_sealed_, "\x01dummy");
  (void)discarded;
  return no_user(user);
}

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
  sqlite3_busy_timeout(wb->db, kBusyTimeoutMs);
  // Login times only: durable against a crash of the process once written
  // (they are in the WAL), not against a power loss, where the database
  // stays consistent and LOGIN-DELAY at worst counts from an earlier login.
  for (const char* pragma : {"PRAGMA synchronous = NORMAL", "PRAGMA trusted_schema = OFF"}) {
    if (auto r = exec(wb->db, pragma); !r) return r.error();
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
  Transaction tx(w.db);
  if (auto r = tx.begin(); !r) return r;
  Stmt st;
  int rc = prepare(w.db, "UPDATE users SET last_login = ?2 WHERE name = ?1", st);
  if (rc != SQLITE_OK) return db_error(w.db, rc, "recording logins");
  for (const auto& [user, when] : batch) {
    rc = bind_text(st.get(), 1, user);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 2, when);
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

sqlite3_stmt* SqliteCredentialStore::cached_locked(const char* sql, int* rc) {
  ++cached_statements_run_;
  for (auto& [text, st] : stmt_cache_) {
    if (text == sql) {
      *rc = SQLITE_OK;
      return st;
    }
  }
  sqlite3_stmt* st = nullptr;
  *rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, nullptr);
  if (*rc != SQLITE_OK) {
    sqlite3_finalize(st);
    return nullptr;
  }
  stmt_cache_.emplace_back(sql, st);
  return st;
}

// Version 1: users(name, secret, created, updated), one sealed secret per
// user. Version 2 derives the hash and verifiers from it and keeps it as the
// encrypted copy of the password.
Result<void> SqliteCredentialStore::migrate() {
  Transaction tx(db_);
  if (auto r = tx.begin(); !r) return r;
  Stmt st;
  int rc = prepare(db_, "PRAGMA user_version", st);
  if (rc != SQLITE_OK) return db_error(db_, rc, "reading schema version");
  rc = sqlite3_step(st.get());
  if (rc != SQLITE_ROW) return db_error(db_, rc, "reading schema version");
  const int version = sqlite3_column_int(st.get(), 0);
  sqlite3_reset(st.get());
  if (version > kSchemaVersion) {
    return make_error(Errc::permanent, "credential database has schema version " +
                                           std::to_string(version) +
                                           ", newer than this apop supports (" +
                                           std::to_string(kSchemaVersion) + ")");
  }
  if (version == 1) {
    if (auto r = exec(db_, "ALTER TABLE users RENAME TO users_v1"); !r) return r;
  }
  if (version < 2) {
    if (sqlite3_exec(db_, kCreateV2, nullptr, nullptr, nullptr) != SQLITE_OK) {
      return db_error(db_, sqlite3_errcode(db_), "creating schema");
    }
  }
  if (version == 1) {
    Stmt old;
    rc = prepare(db_, "SELECT name, secret, created, updated FROM users_v1", old);
    if (rc != SQLITE_OK) return db_error(db_, rc, "upgrading schema");
    while ((rc = sqlite3_step(old.get())) == SQLITE_ROW) {
      std::string name = column_text(old.get(), 0);
      std::string sealed = column_blob(old.get(), 1);
      auto secret = box_.open(sealed, name);
      if (!secret) {
        return make_error(Errc::permanent, "upgrading schema: secret of " + name +
                                               " cannot be decrypted: " + secret.error().message);
      }
      auto derived = derive_password(*secret);
      OPENSSL_cleanse(secret->data(), secret->size());
      if (!derived) return derived.error();
      Stmt ins;
      int irc = prepare(db_,
                        "INSERT INTO users (name, created, updated, password_hash, scram_sha256,"
                        " scram_sha1, sealed_password) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        ins);
      std::string v256 = encode_verifier(derived->scram_sha256);
      std::string v1 = encode_verifier(derived->scram_sha1);
      if (irc == SQLITE_OK) irc = bind_text(ins.get(), 1, name);
      if (irc == SQLITE_OK)
        irc = sqlite3_bind_int64(ins.get(), 2, sqlite3_column_int64(old.get(), 2));
      if (irc == SQLITE_OK)
        irc = sqlite3_bind_int64(ins.get(), 3, sqlite3_column_int64(old.get(), 3));
      if (irc == SQLITE_OK) irc = bind_text(ins.get(), 4, derived->hash);
      if (irc == SQLITE_OK) irc = bind_text(ins.get(), 5, v256);
      if (irc == SQLITE_OK) irc = bind_text(ins.get(), 6, v1);
      if (irc == SQLITE_OK) irc = bind_blob(ins.get(), 7, sealed);
      if (irc == SQLITE_OK) irc = sqlite3_step(ins.get());
      if (irc != SQLITE_DONE) return db_error(db_, irc, "upgrading schema");
    }
    if (rc != SQLITE_DONE) return db_error(db_, rc, "upgrading schema");
    sqlite3_reset(old.get());  // a running SELECT would lock the table
    if (auto r = exec(db_, "DROP TABLE users_v1"); !r) return r;
  }
  // Version 3: RFC 2449 LOGIN-DELAY / EXPIRE per account (NULL: the server's
  // defaults) and the last successful login (NULL: never).
  if (version < 3) {
    for (const char* sql :
         {"ALTER TABLE users ADD COLUMN login_delay INTEGER",
          "ALTER TABLE users ADD COLUMN expire_days INTEGER",
          "ALTER TABLE users ADD COLUMN last_login INTEGER", "PRAGMA user_version = 3"}) {
      if (auto r = exec(db_, sql); !r) return r;
    }
  }
  // Version 4: the account's own mail location (NULL: the server's).
  if (version < 4) {
    for (const char* sql :
         {"ALTER TABLE users ADD COLUMN mail_location TEXT", "PRAGMA user_version = 4"}) {
      if (auto r = exec(db_, sql); !r) return r;
    }
  }
  // Version 5: the key check value (SecretBox::seal_key_check), one row.
  if (version < 5) {
    for (const char* sql : {"CREATE TABLE IF NOT EXISTS key_check ("
                            " id INTEGER PRIMARY KEY CHECK (id = 1),"
                            " sealed BLOB NOT NULL)",
                            "PRAGMA user_version = 5"}) {
      if (auto r = exec(db_, sql); !r) return r;
    }
  }
  // In the same transaction: a wrong key rolls the upgrade back too.
  if (box_.has_key()) {
    if (auto r = check_key_locked(); !r) return r;
  }
  return tx.commit();
}

// The key check value: present, it must open with box_; absent (a database
// of schema version 4 or older, or one created by `apop deliver`, which runs
// without the key), the stored secrets must open (one password copy and one
// device secret are tried), then the value is written.
Result<void> SqliteCredentialStore::check_key_locked() {
  {
    Stmt st;
    int rc = prepare(db_, "SELECT sealed FROM key_check WHERE id = 1", st);
    if (rc != SQLITE_OK) return db_error(db_, rc, "reading the key check");
    rc = sqlite3_step(st.get());
    if (rc == SQLITE_ROW) {
      if (!box_.opens_key_check(column_blob(st.get(), 0))) return box_.key_mismatch(path_.string());
      return {};
    }
    if (rc != SQLITE_DONE) return db_error(db_, rc, "reading the key check");
  }
  {
    Stmt st;
    int rc = prepare(db_,
                     "SELECT name, sealed_password FROM users WHERE sealed_password IS NOT NULL"
                     " LIMIT 1",
                     st);
    if (rc != SQLITE_OK) return db_error(db_, rc, "reading the key check");
    rc = sqlite3_step(st.get());
    if (rc == SQLITE_ROW && !box_.open(column_blob(st.get(), 1), column_text(st.get(), 0))) {
      return box_.key_mismatch(path_.string());
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_error(db_, rc, "reading the key check");
  }
  {
    Stmt st;
    int rc = prepare(db_, "SELECT user, name, sealed FROM device_secrets LIMIT 1", st);
    if (rc != SQLITE_OK) return db_error(db_, rc, "reading the key check");
    rc = sqlite3_step(st.get());
    if (rc == SQLITE_ROW &&
        !box_.open(column_blob(st.get(), 2),
                   device_aad(column_text(st.get(), 0), column_text(st.get(), 1)))) {
      return box_.key_mismatch(path_.string());
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_error(db_, rc, "reading the key check");
  }
  auto sealed = box_.seal_key_check();
  if (!sealed) return sealed.error();
  Stmt ins;
  int rc = prepare(db_, "INSERT INTO key_check (id, sealed) VALUES (1, ?1)", ins);
  if (rc == SQLITE_OK) rc = bind_blob(ins.get(), 1, *sealed);
  if (rc == SQLITE_OK) rc = sqlite3_step(ins.get());
  if (rc != SQLITE_DONE) return db_error(db_, rc, "writing the key check");
  return {};
}

Result<bool> SqliteCredentialStore::holds_sealed_secrets(const std::filesystem::path& db_file) {
  struct stat st {};
  if (::lstat(db_file.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return make_error(Errc::temporary,
                      "cannot stat " + db_file.string() + ": " + std::strerror(errno));
  }
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(db_file.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, nullptr);
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> db(raw, sqlite3_close_v2);
  if (rc != SQLITE_OK) return db_error(raw, rc, "cannot open " + db_file.string());
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);
  // Whether a table exists, then whether it has a row matching `where`.
  auto any = [raw](const char* table, const char* query) -> Result<bool> {
    Stmt t;
    int trc = prepare(raw, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", t);
    if (trc == SQLITE_OK) trc = bind_text(t.get(), 1, table);
    if (trc == SQLITE_OK) trc = sqlite3_step(t.get());
    if (trc == SQLITE_DONE) return false;
    if (trc != SQLITE_ROW) return db_error(raw, trc, "reading the schema");
    Stmt q;
    trc = prepare(raw, query, q);
    if (trc == SQLITE_OK) trc = sqlite3_step(q.get());
    if (trc != SQLITE_ROW) return db_error(raw, trc, "reading the schema");
    return sqlite3_column_int(q.get(), 0) != 0;
  };
  Stmt v;
  rc = prepare(raw, "PRAGMA user_version", v);
  if (rc == SQLITE_OK) rc = sqlite3_step(v.get());
  if (rc != SQLITE_ROW) return db_error(raw, rc, "reading schema version");
  const int version = sqlite3_column_int(v.get(), 0);
  // Version 1 kept one sealed secret per user in `users`.
  const char* users_query =
      version == 1 ? "SELECT EXISTS (SELECT 1 FROM users)"
                   : "SELECT EXISTS (SELECT 1 FROM users WHERE sealed_password IS NOT NULL)";
  for (auto [table, query] :
       {std::pair{"key_check", "SELECT EXISTS (SELECT 1 FROM key_check)"},
        std::pair{"users", users_query},
        std::pair{"device_secrets", "SELECT EXISTS (SELECT 1 FROM device_secrets)"}}) {
    auto found = any(table, query);
    if (!found) return found.error();
    if (*found) return true;
  }
  return false;
}

Result<std::unique_ptr<SqliteCredentialStore>> SqliteCredentialStore::open(
    const std::filesystem::path& db_file, SecretBox box) {
  sqlite3* raw = nullptr;
  const mode_t old_mask = ::umask(077);
  int rc = sqlite3_open_v2(
      db_file.c_str(), &raw,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
      nullptr);
  ::umask(old_mask);
  // From here the store owns the connection (closed by its destructor).
  std::unique_ptr<SqliteCredentialStore> store(
      new SqliteCredentialStore(raw, std::move(box), db_file));
  if (rc != SQLITE_OK) return db_error(raw, rc, "cannot open " + db_file.string());

  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);
  if (auto r = chmod_0600(db_file, true); !r) return r.error();
  // SQLite answers some lock conflicts of a connection's first statements
  // with SQLITE_BUSY at once, without calling the busy handler (a switch to
  // WAL or a schema upgrade racing another process that opens the same new
  // file: `apop user add` run in parallel on a fresh data directory): the
  // whole setup is retried, with a short sleep, until the busy timeout.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  for (int attempt = 0;; ++attempt) {
    Result<void> r;
    for (const char* pragma :
         {"PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL", "PRAGMA secure_delete = ON",
          "PRAGMA trusted_schema = OFF", "PRAGMA foreign_keys = ON"}) {
      r = exec(raw, pragma);
      if (!r) break;
    }
    if (r) r = store->migrate();
    if (r) break;
    // Errc::temporary: BUSY and LOCKED (also I/O errors, which a retry does
    // not make worse); anything else fails at once.
    if (r.error().code != Errc::temporary || std::chrono::steady_clock::now() >= give_up) {
      return r.error();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(5 << std::min(attempt, 4), 50)));
  }
  // SQLite gives -wal/-shm the main file's mode; make sure anyway.
  for (const char* suffix : {"-wal", "-shm"}) {
    std::filesystem::path p = db_file;
    p += suffix;
    if (auto r = chmod_0600(p, false); !r) return r.error();
  }
  return store;
}

Result<Policy> SqliteCredentialStore::default_policy_locked() {
  int rc = SQLITE_OK;
  Reused st(
      cached_locked("SELECT mechanisms, device_secrets_only, apop_requires_tls, require_tls"
                    " FROM policy_defaults WHERE id = 1",
                    &rc));
  if (rc != SQLITE_OK) return db_error(db_, rc, "reading default policy");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) return Policy{};
  if (rc != SQLITE_ROW) return db_error(db_, rc, "reading default policy");
  return column_policy(st.get(), 0);
}

Result<Account> SqliteCredentialStore::account(std::string_view user) {
  if (!is_valid_username(user)) return unknown_user(user);
  Account a;
  std::string sealed;
  bool has_sealed = false;
  std::vector<std::pair<std::string, std::string>> sealed_devices;
  bool unknown = false;
  {
    std::lock_guard lock(mu_);
    // One read transaction for the three lookups: SQLite takes and drops
    // its file and WAL locks (fcntl calls) once, not per statement.
    int rc = SQLITE_OK;
    struct ReadTx {
      SqliteCredentialStore& s;
      bool open = false;
      ~ReadTx() {
        if (!open) return;
        int rc = SQLITE_OK;
        Reused end(s.cached_locked("COMMIT", &rc));
        if (rc == SQLITE_OK) sqlite3_step(end.get());
      }
    } tx{*this};
    {
      Reused begin(cached_locked("BEGIN", &rc));
      if (rc == SQLITE_OK) rc = sqlite3_step(begin.get());
      if (rc != SQLITE_DONE) return db_error(db_, rc, "looking up user");
      tx.open = true;
    }
    // The user's row and the default policy in one statement (the defaults
    // row may be missing: all NULL, which column_policy reads as Policy{}).
    Reused st(
        cached_locked("SELECT u.password_hash, u.scram_sha256, u.scram_sha1, u.sealed_password,"
                      " u.mechanisms, u.device_secrets_only, u.apop_requires_tls, u.require_tls,"
                      " u.login_delay, u.expire_days, u.last_login,"
                      " d.mechanisms, d.device_secrets_only, d.apop_requires_tls, d.require_tls,"
                      " u.mail_location"
                      " FROM users u LEFT JOIN policy_defaults d ON d.id = 1 WHERE u.name = ?1",
                      &rc));
    if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
    if (rc != SQLITE_OK) return db_error(db_, rc, "looking up user");
    rc = sqlite3_step(st.get());
    // An unknown user runs the same statements as a known one (the device
    // secrets' lookup finds nothing) and costs one decryption (of a dummy,
    // unknown_user) like a known user's password copy: the same store work
    // whether the user exists or not (issue 17 item 11).
    unknown = rc == SQLITE_DONE;
    if (!unknown && rc != SQLITE_ROW) return db_error(db_, rc, "looking up user");
    if (!unknown) {
      a.name = std::string(user);
      a.password_hash = column_text(st.get(), 0);
      a.scram_sha256 = decode_verifier(column_text(st.get(), 1)).value_or(ScramVerifier{});
      a.scram_sha1 = decode_verifier(column_text(st.get(), 2)).value_or(ScramVerifier{});
      has_sealed = sqlite3_column_type(st.get(), 3) != SQLITE_NULL;
      sealed = column_blob(st.get(), 3);
      a.policy = resolve_policy(column_policy(st.get(), 4), column_policy(st.get(), 11));
      if (sqlite3_column_type(st.get(), 15) != SQLITE_NULL) {
        a.mail_location = column_text(st.get(), 15);
      }
      Policy own;
      column_login_limits(st.get(), 8, own);
      a.login_delay = own.login_delay;
      a.expire_days = own.expire_days;
      a.last_login = noted_login(user, column_opt_int(st.get(), 10));
    }

    Reused dev(cached_locked(
        "SELECT name, sealed FROM device_secrets WHERE user = ?1 ORDER BY name", &rc));
    if (rc == SQLITE_OK) rc = bind_text(dev.get(), 1, user);
    if (rc != SQLITE_OK) return db_error(db_, rc, "looking up device secrets");
    while ((rc = sqlite3_step(dev.get())) == SQLITE_ROW) {
      sealed_devices.emplace_back(column_text(dev.get(), 0), column_blob(dev.get(), 1));
    }
    if (rc != SQLITE_DONE) return db_error(db_, rc, "looking up device secrets");
  }
  if (unknown) return unknown_user(user);
  if (has_sealed && !a.policy.device_secrets_only) {
    auto opened = box_.open(sealed, user);
    if (!opened) {
      return make_error(Errc::permanent, "stored password of user " + std::string(user) +
                                             " cannot be decrypted: " + opened.error().message);
    }
    a.password = std::move(*opened);
  }
  for (const auto& [name, blob] : sealed_devices) {
    auto opened = box_.open(blob, device_aad(user, name));
    if (!opened) {
      return make_error(Errc::permanent, "device secret " + name + " of user " + std::string(user) +
                                             " cannot be decrypted: " + opened.error().message);
    }
    a.device_secrets.push_back({name, std::move(*opened)});
  }
  return a;
}

Result<bool> SqliteCredentialStore::has_user(std::string_view user) {
  if (!is_valid_username(user)) return false;
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = prepare(db_, "SELECT 1 FROM users WHERE name = ?1", st);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc != SQLITE_OK) return db_error(db_, rc, "looking up user");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_error(db_, rc, "looking up user");
}

Result<void> SqliteCredentialStore::add(std::string_view user, std::string_view password) {
  if (!is_valid_username(user)) {
    return make_error(Errc::invalid, "invalid user name: " + std::string(user));
  }
  auto derived = derive_password(password);
  if (!derived) return derived.error();
  auto sealed = box_.seal(password, user);
  if (!sealed) return sealed.error();
  std::lock_guard lock(mu_);
  auto defaults = default_policy_locked();
  if (!defaults) return defaults.error();
  const bool keep_copy = !resolve_policy(Policy{}, *defaults).device_secrets_only;
  Stmt st;
  int rc = prepare(db_,
                   "INSERT INTO users (name, created, updated, password_hash, scram_sha256,"
                   " scram_sha1, sealed_password) VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6)",
                   st);
  std::string v256 = encode_verifier(derived->scram_sha256);
  std::string v1 = encode_verifier(derived->scram_sha1);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 2, now());
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 3, derived->hash);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 4, v256);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 5, v1);
  if (rc == SQLITE_OK)
    rc = keep_copy ? bind_blob(st.get(), 6, *sealed) : sqlite3_bind_null(st.get(), 6);
  if (rc != SQLITE_OK) return db_error(db_, rc, "adding user");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
    return make_error(Errc::exists, "user already exists: " + std::string(user));
  }
  if (rc != SQLITE_DONE) return db_error(db_, rc, "adding user");
  return {};
}

Result<void> SqliteCredentialStore::set_password(std::string_view user, std::string_view password) {
  if (!is_valid_username(user)) return no_user(user);
  {
    // Only the device secrets are needed here (a broken password copy must
    // not stop the repair by a new password); one that cannot be decrypted
    // cannot equal anything and is skipped.
    std::vector<std::pair<std::string, std::string>> sealed_devices;
    {
      std::lock_guard lock(mu_);
      Stmt dev;
      int rc = prepare(db_, "SELECT name, sealed FROM device_secrets WHERE user = ?1", dev);
      if (rc == SQLITE_OK) rc = bind_text(dev.get(), 1, user);
      if (rc != SQLITE_OK) return db_error(db_, rc, "looking up device secrets");
      while ((rc = sqlite3_step(dev.get())) == SQLITE_ROW) {
        sealed_devices.emplace_back(column_text(dev.get(), 0), column_blob(dev.get(), 1));
      }
      if (rc != SQLITE_DONE) return db_error(db_, rc, "looking up device secrets");
    }
    for (const auto& [name, blob] : sealed_devices) {
      auto opened = box_.open(blob, device_aad(user, name));
      if (!opened) continue;
      const bool same = *opened == password;
      OPENSSL_cleanse(opened->data(), opened->size());
      if (same) return make_error(Errc::invalid, "the password equals device secret " + name);
    }
  }
  auto derived = derive_password(password);
  if (!derived) return derived.error();
  auto sealed = box_.seal(password, user);
  if (!sealed) return sealed.error();
  std::lock_guard lock(mu_);
  auto defaults = default_policy_locked();
  if (!defaults) return defaults.error();
  auto own = user_policy_locked(user);
  if (!own) return own.error();
  const bool keep_copy = !resolve_policy(*own, *defaults).device_secrets_only;
  Stmt st;
  int rc = prepare(db_,
                   "UPDATE users SET updated = ?2, password_hash = ?3, scram_sha256 = ?4,"
                   " scram_sha1 = ?5, sealed_password = ?6 WHERE name = ?1",
                   st);
  std::string v256 = encode_verifier(derived->scram_sha256);
  std::string v1 = encode_verifier(derived->scram_sha1);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 2, now());
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 3, derived->hash);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 4, v256);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 5, v1);
  if (rc == SQLITE_OK)
    rc = keep_copy ? bind_blob(st.get(), 6, *sealed) : sqlite3_bind_null(st.get(), 6);
  if (rc != SQLITE_OK) return db_error(db_, rc, "changing password");
  rc = sqlite3_step(st.get());
  if (rc != SQLITE_DONE) return db_error(db_, rc, "changing password");
  if (sqlite3_changes(db_) == 0) return no_user(user);
  return {};
}

// The foreign hash goes into password_hash (no schema change: the column
// holds a PHC string or "{SCHEME}..."); empty verifier columns decode to
// unusable verifiers, so SCRAM fails as for a wrong password.
Result<void> SqliteCredentialStore::import_foreign_hash(std::string_view user,
                                                        std::string_view hash, bool replace) {
  if (!is_valid_username(user)) {
    return make_error(Errc::invalid, "invalid user name: " + std::string(user));
  }
  if (!is_foreign_hash(hash)) return make_error(Errc::invalid, "not an imported hash");
  std::lock_guard lock(mu_);
  Stmt st;
  const char* sql = replace
                        ? "INSERT INTO users (name, created, updated, password_hash, scram_sha256,"
                          " scram_sha1, sealed_password) VALUES (?1, ?2, ?2, ?3, '', '', NULL)"
                          " ON CONFLICT(name) DO UPDATE SET updated = ?2, password_hash = ?3,"
                          " scram_sha256 = '', scram_sha1 = '', sealed_password = NULL"
                        : "INSERT INTO users (name, created, updated, password_hash, scram_sha256,"
                          " scram_sha1, sealed_password) VALUES (?1, ?2, ?2, ?3, '', '', NULL)";
  int rc = prepare(db_, sql, st);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 2, now());
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 3, hash);
  if (rc != SQLITE_OK) return db_error(db_, rc, "importing user");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
    return make_error(Errc::exists, "user already exists: " + std::string(user));
  }
  if (rc != SQLITE_DONE) return db_error(db_, rc, "importing user");
  return {};
}

Result<void> SqliteCredentialStore::remove(std::string_view user) {
  if (!is_valid_username(user)) return no_user(user);
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = prepare(db_, "DELETE FROM users WHERE name = ?1", st);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc != SQLITE_OK) return db_error(db_, rc, "removing user");
  rc = sqlite3_step(st.get());
  if (rc != SQLITE_DONE) return db_error(db_, rc, "removing user");
  if (sqlite3_changes(db_) == 0) return no_user(user);
  return {};
}

Result<std::vector<UserRecord>> SqliteCredentialStore::list() {
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = prepare(db_,
                   "SELECT name, created, updated,"
                   " (SELECT COUNT(*) FROM device_secrets d WHERE d.user = users.name),"
                   " sealed_password IS NOT NULL,"
                   " mechanisms, device_secrets_only, apop_requires_tls, require_tls,"
                   " login_delay, expire_days, last_login, password_hash, mail_location"
                   " FROM users ORDER BY name",
                   st);
  if (rc != SQLITE_OK) return db_error(db_, rc, "listing users");
  std::vector<UserRecord> out;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    UserRecord u;
    u.name = column_text(st.get(), 0);
    u.created = sqlite3_column_int64(st.get(), 1);
    u.updated = sqlite3_column_int64(st.get(), 2);
    u.device_secrets = static_cast<std::size_t>(sqlite3_column_int64(st.get(), 3));
    u.has_password_copy = sqlite3_column_int(st.get(), 4) != 0;
    u.policy = column_policy(st.get(), 5);
    column_login_limits(st.get(), 9, u.policy);
    u.last_login = noted_login(u.name, column_opt_int(st.get(), 11));
    u.foreign_scheme = foreign_scheme(column_text(st.get(), 12));
    if (sqlite3_column_type(st.get(), 13) != SQLITE_NULL)
      u.mail_location = column_text(st.get(), 13);
    out.push_back(std::move(u));
  }
  if (rc != SQLITE_DONE) return db_error(db_, rc, "listing users");
  return out;
}

Result<void> SqliteCredentialStore::add_device_secret(std::string_view user, std::string_view name,
                                                      std::string_view secret) {
  if (!is_valid_secret_name(name)) {
    return make_error(Errc::invalid, "invalid secret name (1-32 of A-Z a-z 0-9 . _ -)");
  }
  if (secret.empty()) return make_error(Errc::invalid, "empty secret");
  if (!is_valid_username(user)) return no_user(user);
  std::string hash;
  {
    std::lock_guard lock(mu_);
    Stmt st;
    int rc = prepare(db_, "SELECT password_hash FROM users WHERE name = ?1", st);
    if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
    if (rc != SQLITE_OK) return db_error(db_, rc, "looking up user");
    rc = sqlite3_step(st.get());
    if (rc == SQLITE_DONE) return no_user(user);
    if (rc != SQLITE_ROW) return db_error(db_, rc, "looking up user");
    hash = column_text(st.get(), 0);
  }
  if (verify_password_hash(hash, secret)) {
    return make_error(Errc::invalid, "a device secret must differ from the account password");
  }
  auto sealed = box_.seal(secret, device_aad(user, name));
  if (!sealed) return sealed.error();
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = prepare(db_,
                   "INSERT INTO device_secrets (user, name, sealed, created)"
                   " VALUES (?1, ?2, ?3, ?4)",
                   st);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 2, name);
  if (rc == SQLITE_OK) rc = bind_blob(st.get(), 3, *sealed);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 4, now());
  if (rc != SQLITE_OK) return db_error(db_, rc, "adding device secret");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
    return make_error(Errc::exists, "secret " + std::string(name) + " already exists");
  }
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return no_user(user);
  if (rc != SQLITE_DONE) return db_error(db_, rc, "adding device secret");
  return {};
}

Result<std::vector<DeviceSecretInfo>> SqliteCredentialStore::device_secrets(std::string_view user) {
  auto exists = has_user(user);
  if (!exists) return exists.error();
  if (!*exists) return no_user(user);
  std::lock_guard lock(mu_);
  Stmt st;
  int rc =
      prepare(db_, "SELECT name, created FROM device_secrets WHERE user = ?1 ORDER BY name", st);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc != SQLITE_OK) return db_error(db_, rc, "listing device secrets");
  std::vector<DeviceSecretInfo> out;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    out.push_back({column_text(st.get(), 0), sqlite3_column_int64(st.get(), 1)});
  }
  if (rc != SQLITE_DONE) return db_error(db_, rc, "listing device secrets");
  return out;
}

Result<void> SqliteCredentialStore::revoke_device_secret(std::string_view user,
                                                         std::string_view name) {
  auto exists = has_user(user);
  if (!exists) return exists.error();
  if (!*exists) return no_user(user);
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = prepare(db_, "DELETE FROM device_secrets WHERE user = ?1 AND name = ?2", st);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 2, name);
  if (rc != SQLITE_OK) return db_error(db_, rc, "revoking device secret");
  rc = sqlite3_step(st.get());
  if (rc != SQLITE_DONE) return db_error(db_, rc, "revoking device secret");
  if (sqlite3_changes(db_) == 0) {
    return make_error(Errc::not_found, "no secret named " + std::string(name));
  }
  return {};
}

Result<Policy> SqliteCredentialStore::user_policy_locked(std::string_view user) {
  Stmt st;
  int rc = prepare(db_,
                   "SELECT mechanisms, device_secrets_only, apop_requires_tls, require_tls,"
                   " login_delay, expire_days"
                   " FROM users WHERE name = ?1",
                   st);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc != SQLITE_OK) return db_error(db_, rc, "reading policy");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) return no_user(user);
  if (rc != SQLITE_ROW) return db_error(db_, rc, "reading policy");
  Policy p = column_policy(st.get(), 0);
  column_login_limits(st.get(), 4, p);
  return p;
}

Result<Policy> SqliteCredentialStore::policy(std::string_view user) {
  if (!is_valid_username(user)) return no_user(user);
  std::lock_guard lock(mu_);
  return user_policy_locked(user);
}

// Deletes the encrypted copy of every account whose effective policy is
// device-secrets-only (secure_delete overwrites the freed pages).
Result<void> SqliteCredentialStore::drop_copies_locked() {
  auto defaults = default_policy_locked();
  if (!defaults) return defaults.error();
  const bool default_only = defaults->device_secrets_only.value_or(false);
  Stmt st;
  int rc = prepare(db_,
                   "UPDATE users SET sealed_password = NULL WHERE sealed_password IS NOT NULL"
                   " AND COALESCE(device_secrets_only, ?1) = 1",
                   st);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int(st.get(), 1, default_only ? 1 : 0);
  if (rc == SQLITE_OK) rc = sqlite3_step(st.get());
  if (rc != SQLITE_DONE) return db_error(db_, rc, "deleting password copies");
  return {};
}

Result<void> SqliteCredentialStore::set_policy(std::string_view user, const Policy& policy) {
  if (!is_valid_username(user)) return no_user(user);
  if (auto r = check_login_limits(policy); !r) return r;
  std::lock_guard lock(mu_);
  Transaction tx(db_);
  if (auto r = tx.begin(); !r) return r;
  Stmt st;
  int rc = prepare(db_,
                   "UPDATE users SET mechanisms = ?2, device_secrets_only = ?3,"
                   " apop_requires_tls = ?4, require_tls = ?5, login_delay = ?6,"
                   " expire_days = ?7 WHERE name = ?1",
                   st);
  std::string buf;
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc == SQLITE_OK) rc = bind_policy(st.get(), 2, policy, buf);
  if (rc == SQLITE_OK) {
    rc = bind_opt_int(
        st.get(), 6,
        policy.login_delay ? std::optional<std::int64_t>(*policy.login_delay) : std::nullopt);
  }
  if (rc == SQLITE_OK) rc = bind_opt_int(st.get(), 7, policy.expire_days);
  if (rc == SQLITE_OK) rc = sqlite3_step(st.get());
  if (rc != SQLITE_DONE) return db_error(db_, rc, "setting policy");
  if (sqlite3_changes(db_) == 0) return no_user(user);
  if (auto r = drop_copies_locked(); !r) return r;
  return tx.commit();
}

Result<Policy> SqliteCredentialStore::default_policy() {
  std::lock_guard lock(mu_);
  return default_policy_locked();
}

Result<void> SqliteCredentialStore::set_default_policy(const Policy& policy) {
  if (policy.login_delay || policy.expire_days) {
    return make_error(Errc::invalid,
                      "LOGIN-DELAY and EXPIRE are per account; their defaults are apop serve "
                      "settings (login_delay, expire)");
  }
  std::lock_guard lock(mu_);
  Transaction tx(db_);
  if (auto r = tx.begin(); !r) return r;
  Stmt st;
  int rc = prepare(db_,
                   "UPDATE policy_defaults SET mechanisms = ?1, device_secrets_only = ?2,"
                   " apop_requires_tls = ?3, require_tls = ?4 WHERE id = 1",
                   st);
  std::string buf;
  if (rc == SQLITE_OK) rc = bind_policy(st.get(), 1, policy, buf);
  if (rc == SQLITE_OK) rc = sqlite3_step(st.get());
  if (rc != SQLITE_DONE) return db_error(db_, rc, "setting default policy");
  if (auto r = drop_copies_locked(); !r) return r;
  return tx.commit();
}

Result<void> SqliteCredentialStore::record_login(std::string_view user, std::int64_t when) {
  if (!is_valid_username(user)) return no_user(user);
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
    if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 2, when);
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
  if (changes == 0) return no_user(user);
  return {};
}

Result<std::optional<std::string>> SqliteCredentialStore::mail_location(std::string_view user) {
  if (!is_valid_username(user)) return no_user(user);
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = prepare(db_, "SELECT mail_location FROM users WHERE name = ?1", st);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc != SQLITE_OK) return db_error(db_, rc, "reading mail location");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) return no_user(user);
  if (rc != SQLITE_ROW) return db_error(db_, rc, "reading mail location");
  if (sqlite3_column_type(st.get(), 0) == SQLITE_NULL) return std::optional<std::string>{};
  return std::optional<std::string>{column_text(st.get(), 0)};
}

Result<void> SqliteCredentialStore::set_mail_location(std::string_view user,
                                                      const std::optional<std::string>& location) {
  if (!is_valid_username(user)) return no_user(user);
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = prepare(db_, "UPDATE users SET mail_location = ?2 WHERE name = ?1", st);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc == SQLITE_OK) {
    rc = location ? bind_text(st.get(), 2, *location) : sqlite3_bind_null(st.get(), 2);
  }
  if (rc != SQLITE_OK) return db_error(db_, rc, "setting mail location");
  rc = sqlite3_step(st.get());
  if (rc != SQLITE_DONE) return db_error(db_, rc, "setting mail location");
  if (sqlite3_changes(db_) == 0) return no_user(user);
  return {};
}

}  // namespace apop::auth
