// SqliteCredentialStore: the account rows (SQL in, rows out; the domain
// logic is auth/account_codec.hpp). Opening and the schema:
// sqlite_schema.cpp; login times: sqlite_login_records.cpp.
#include "auth/sqlite_credential_store.hpp"

#include <ctime>

#include "auth/foreign_hash.hpp"
#include "auth/sqlite_db.hpp"
#include "auth/username.hpp"

namespace apop::auth {

using sqlite::Blob;
using sqlite::db_error;
using sqlite::Reused;
using sqlite::Row;
using sqlite::Stmt;

namespace {

std::int64_t now() { return static_cast<std::int64_t>(std::time(nullptr)); }

bool is_duplicate(int rc) {
  return rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE;
}

// Runs `sql`, an INSERT or UPDATE of users whose parameters are ?1 the
// name, ?2 now and ?3-?6 the new password's columns (hash, verifiers,
// sealed copy), the copy kept as the policies say.
int write_password(sqlite3* db, const char* sql, std::string_view user,
                   const SealedPassword& sealed, const Policy& own, const Policy& defaults) {
  std::optional<Blob> copy;
  if (auto c = sealed.copy_for(own, defaults)) copy = Blob{*c};
  return sqlite::run(db, sql, user, now(), sealed.hash, sealed.scram_sha256, sealed.scram_sha1,
                     copy);
}

// Runs `sql`, a SELECT with ?1 the user name, and calls fn(row) with its
// first row; no_such_user without one.
template <class Fn>
Result<void> read_user_row(sqlite3* db, const char* sql, std::string_view user,
                           const std::string& what, Fn fn) {
  Stmt st;
  int rc = sqlite::prepare(db, sql, st, user);
  if (rc == SQLITE_OK) rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) return no_such_user(user);
  if (rc != SQLITE_ROW) return db_error(db, rc, what);
  fn(Row{st.get()});
  return {};
}

// Steps a bound `SELECT name, sealed FROM device_secrets ...` to its end.
int read_devices(sqlite3_stmt* st, std::vector<SealedDevice>& out) {
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    out.push_back({sqlite::column_text(st, 0), sqlite::column_blob(st, 1)});
  }
  return rc;
}

}  // namespace

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
  return read_policy(Row{st.get()}, 0);
}

Result<Account> SqliteCredentialStore::account(std::string_view user) {
  if (!is_valid_username(user)) return codec_.unknown_user(user);
  std::optional<AccountRow> row;
  Policy defaults;
  std::vector<SealedDevice> devices;
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
    // row may be missing: all NULL, which read_policy reads as Policy{}).
    Reused st(
        cached_locked("SELECT u.password_hash, u.scram_sha256, u.scram_sha1, u.sealed_password,"
                      " u.mechanisms, u.device_secrets_only, u.apop_requires_tls, u.require_tls,"
                      " u.login_delay, u.expire_days, u.last_login, u.mail_location,"
                      " u.quota_bytes, u.quota_messages,"
                      " d.mechanisms, d.device_secrets_only, d.apop_requires_tls, d.require_tls"
                      " FROM users u LEFT JOIN policy_defaults d ON d.id = 1 WHERE u.name = ?1",
                      &rc));
    if (rc == SQLITE_OK) rc = sqlite::bind(st.get(), user);
    if (rc != SQLITE_OK) return db_error(db_, rc, "looking up user");
    rc = sqlite3_step(st.get());
    // An unknown user runs the same statements as a known one (the device
    // secrets' lookup finds nothing) and costs one decryption (of a dummy,
    // AccountCodec::unknown_user) like a known user's password copy: the
    // same store work whether the user exists or not (issue 17 item 11).
    if (rc == SQLITE_ROW) {
      row = read_account_row(Row{st.get()});
      row->last_login = noted_login(user, row->last_login);
      defaults = read_policy(Row{st.get()}, kAccountRowColumns);
    } else if (rc != SQLITE_DONE) {
      return db_error(db_, rc, "looking up user");
    }

    Reused dev(cached_locked(
        "SELECT name, sealed FROM device_secrets WHERE user = ?1 ORDER BY name", &rc));
    if (rc == SQLITE_OK) rc = sqlite::bind(dev.get(), user);
    if (rc == SQLITE_OK) rc = read_devices(dev.get(), devices);
    if (rc != SQLITE_DONE) return db_error(db_, rc, "looking up device secrets");
  }
  if (!row) return codec_.unknown_user(user);
  return codec_.unseal(user, std::move(*row), defaults, devices);
}

Result<bool> SqliteCredentialStore::has_user(std::string_view user) {
  if (!is_valid_username(user)) return false;
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = sqlite::prepare(db_, "SELECT 1 FROM users WHERE name = ?1", st, user);
  if (rc != SQLITE_OK) return db_error(db_, rc, "looking up user");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_error(db_, rc, "looking up user");
}

Result<void> SqliteCredentialStore::add(std::string_view user, std::string_view password) {
  if (!is_valid_username(user)) return invalid_user_name(user);
  auto sealed = codec_.seal_password(user, password);
  if (!sealed) return sealed.error();
  std::lock_guard lock(mu_);
  auto defaults = default_policy_locked();
  if (!defaults) return defaults.error();
  const int rc = write_password(db_,
                                "INSERT INTO users (name, created, updated, password_hash,"
                                " scram_sha256, scram_sha1, sealed_password)"
                                " VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6)",
                                user, *sealed, Policy{}, *defaults);
  if (is_duplicate(rc)) return user_exists(user);
  if (rc != SQLITE_DONE) return db_error(db_, rc, "adding user");
  return {};
}

Result<void> SqliteCredentialStore::set_password(std::string_view user, std::string_view password) {
  if (!is_valid_username(user)) return no_such_user(user);
  {
    // Only the device secrets are needed here (a broken password copy must
    // not stop the repair by a new password).
    std::vector<SealedDevice> devices;
    {
      std::lock_guard lock(mu_);
      Stmt dev;
      int rc = sqlite::prepare(db_, "SELECT name, sealed FROM device_secrets WHERE user = ?1", dev,
                               user);
      if (rc == SQLITE_OK) rc = read_devices(dev.get(), devices);
      if (rc != SQLITE_DONE) return db_error(db_, rc, "looking up device secrets");
    }
    if (auto r = codec_.check_differs_from_devices(user, password, devices); !r) return r;
  }
  auto sealed = codec_.seal_password(user, password);
  if (!sealed) return sealed.error();
  std::lock_guard lock(mu_);
  auto defaults = default_policy_locked();
  if (!defaults) return defaults.error();
  auto own = user_policy_locked(user);
  if (!own) return own.error();
  const int rc = write_password(db_,
                                "UPDATE users SET updated = ?2, password_hash = ?3,"
                                " scram_sha256 = ?4, scram_sha1 = ?5, sealed_password = ?6"
                                " WHERE name = ?1",
                                user, *sealed, *own, *defaults);
  if (rc != SQLITE_DONE) return db_error(db_, rc, "changing password");
  if (sqlite3_changes(db_) == 0) return no_such_user(user);
  return {};
}

// The foreign hash goes into password_hash (no schema change: the column
// holds a PHC string or "{SCHEME}..."); empty verifier columns decode to
// unusable verifiers, so SCRAM fails as for a wrong password.
Result<void> SqliteCredentialStore::import_foreign_hash(std::string_view user,
                                                        std::string_view hash, bool replace) {
  if (!is_valid_username(user)) return invalid_user_name(user);
  if (!is_foreign_hash(hash)) return make_error(Errc::invalid, "not an imported hash");
  std::lock_guard lock(mu_);
  const char* sql = replace
                        ? "INSERT INTO users (name, created, updated, password_hash, scram_sha256,"
                          " scram_sha1, sealed_password) VALUES (?1, ?2, ?2, ?3, '', '', NULL)"
                          " ON CONFLICT(name) DO UPDATE SET updated = ?2, password_hash = ?3,"
                          " scram_sha256 = '', scram_sha1 = '', sealed_password = NULL"
                        : "INSERT INTO users (name, created, updated, password_hash, scram_sha256,"
                          " scram_sha1, sealed_password) VALUES (?1, ?2, ?2, ?3, '', '', NULL)";
  const int rc = sqlite::run(db_, sql, user, now(), hash);
  if (is_duplicate(rc)) return user_exists(user);
  if (rc != SQLITE_DONE) return db_error(db_, rc, "importing user");
  return {};
}

Result<void> SqliteCredentialStore::remove(std::string_view user) {
  if (!is_valid_username(user)) return no_such_user(user);
  std::lock_guard lock(mu_);
  const int rc = sqlite::run(db_, "DELETE FROM users WHERE name = ?1", user);
  if (rc != SQLITE_DONE) return db_error(db_, rc, "removing user");
  if (sqlite3_changes(db_) == 0) return no_such_user(user);
  return {};
}

Result<std::vector<UserRecord>> SqliteCredentialStore::list() {
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = sqlite::prepare(db_,
                           "SELECT name, created, updated,"
                           " (SELECT COUNT(*) FROM device_secrets d WHERE d.user = users.name),"
                           " sealed_password IS NOT NULL,"
                           " mechanisms, device_secrets_only, apop_requires_tls, require_tls,"
                           " login_delay, expire_days, last_login, password_hash, mail_location,"
                           " quota_bytes, quota_messages"
                           " FROM users ORDER BY name",
                           st);
  if (rc != SQLITE_OK) return db_error(db_, rc, "listing users");
  std::vector<UserRecord> out;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    UserRecord u = read_user_record(Row{st.get()});
    u.last_login = noted_login(u.name, u.last_login);
    out.push_back(std::move(u));
  }
  if (rc != SQLITE_DONE) return db_error(db_, rc, "listing users");
  return out;
}

Result<void> SqliteCredentialStore::add_device_secret(std::string_view user, std::string_view name,
                                                      std::string_view secret) {
  if (auto r = check_new_device_secret(name, secret); !r) return r;
  if (!is_valid_username(user)) return no_such_user(user);
  std::string hash;
  {
    std::lock_guard lock(mu_);
    auto r = read_user_row(db_, "SELECT password_hash FROM users WHERE name = ?1", user,
                           "looking up user", [&](const Row& row) { hash = row.text(0); });
    if (!r) return r;
  }
  if (auto r = check_differs_from_password(hash, secret); !r) return r;
  auto sealed = codec_.seal_device_secret(user, name, secret);
  if (!sealed) return sealed.error();
  std::lock_guard lock(mu_);
  const int rc = sqlite::run(db_,
                             "INSERT INTO device_secrets (user, name, sealed, created)"
                             " VALUES (?1, ?2, ?3, ?4)",
                             user, name, Blob{*sealed}, now());
  if (is_duplicate(rc)) return device_secret_exists(name);
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return no_such_user(user);
  if (rc != SQLITE_DONE) return db_error(db_, rc, "adding device secret");
  return {};
}

Result<std::vector<DeviceSecretInfo>> SqliteCredentialStore::device_secrets(std::string_view user) {
  auto exists = has_user(user);
  if (!exists) return exists.error();
  if (!*exists) return no_such_user(user);
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = sqlite::prepare(
      db_, "SELECT name, created FROM device_secrets WHERE user = ?1 ORDER BY name", st, user);
  if (rc != SQLITE_OK) return db_error(db_, rc, "listing device secrets");
  std::vector<DeviceSecretInfo> out;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    out.push_back({sqlite::column_text(st.get(), 0), sqlite3_column_int64(st.get(), 1)});
  }
  if (rc != SQLITE_DONE) return db_error(db_, rc, "listing device secrets");
  return out;
}

Result<void> SqliteCredentialStore::revoke_device_secret(std::string_view user,
                                                         std::string_view name) {
  auto exists = has_user(user);
  if (!exists) return exists.error();
  if (!*exists) return no_such_user(user);
  std::lock_guard lock(mu_);
  const int rc =
      sqlite::run(db_, "DELETE FROM device_secrets WHERE user = ?1 AND name = ?2", user, name);
  if (rc != SQLITE_DONE) return db_error(db_, rc, "revoking device secret");
  if (sqlite3_changes(db_) == 0) return no_such_device_secret(name);
  return {};
}

Result<Policy> SqliteCredentialStore::user_policy_locked(std::string_view user) {
  Policy p;
  auto r =
      read_user_row(db_,
                    "SELECT mechanisms, device_secrets_only, apop_requires_tls, require_tls,"
                    " login_delay, expire_days"
                    " FROM users WHERE name = ?1",
                    user, "reading policy", [&](const Row& row) { p = read_own_policy(row, 0); });
  if (!r) return r.error();
  return p;
}

Result<Policy> SqliteCredentialStore::policy(std::string_view user) {
  if (!is_valid_username(user)) return no_such_user(user);
  std::lock_guard lock(mu_);
  return user_policy_locked(user);
}

// Deletes the encrypted copy of every account whose effective policy is
// device-secrets-only (secure_delete overwrites the freed pages).
Result<void> SqliteCredentialStore::drop_copies_locked() {
  auto defaults = default_policy_locked();
  if (!defaults) return defaults.error();
  const int rc = sqlite::run(db_,
                             "UPDATE users SET sealed_password = NULL WHERE sealed_password IS NOT"
                             " NULL AND COALESCE(device_secrets_only, ?1) = 1",
                             defaults->device_secrets_only.value_or(false));
  if (rc != SQLITE_DONE) return db_error(db_, rc, "deleting password copies");
  return {};
}

Result<void> SqliteCredentialStore::set_policy(std::string_view user, const Policy& policy) {
  if (!is_valid_username(user)) return no_such_user(user);
  if (auto r = check_login_limits(policy); !r) return r;
  std::lock_guard lock(mu_);
  sqlite::Transaction tx(db_);
  if (auto r = tx.begin(); !r) return r;
  const PolicyColumns c = policy_columns(policy);
  const int rc = sqlite::run(db_,
                             "UPDATE users SET mechanisms = ?2, device_secrets_only = ?3,"
                             " apop_requires_tls = ?4, require_tls = ?5, login_delay = ?6,"
                             " expire_days = ?7 WHERE name = ?1",
                             user, c.mechanisms, c.device_secrets_only, c.apop_requires_tls,
                             c.require_tls, c.login_delay, c.expire_days);
  if (rc != SQLITE_DONE) return db_error(db_, rc, "setting policy");
  if (sqlite3_changes(db_) == 0) return no_such_user(user);
  if (auto r = drop_copies_locked(); !r) return r;
  return tx.commit();
}

Result<Policy> SqliteCredentialStore::default_policy() {
  std::lock_guard lock(mu_);
  return default_policy_locked();
}

Result<void> SqliteCredentialStore::set_default_policy(const Policy& policy) {
  if (auto r = check_default_policy(policy); !r) return r;
  std::lock_guard lock(mu_);
  sqlite::Transaction tx(db_);
  if (auto r = tx.begin(); !r) return r;
  const PolicyColumns c = policy_columns(policy);
  const int rc =
      sqlite::run(db_,
                  "UPDATE policy_defaults SET mechanisms = ?1, device_secrets_only = ?2,"
                  " apop_requires_tls = ?3, require_tls = ?4 WHERE id = 1",
                  c.mechanisms, c.device_secrets_only, c.apop_requires_tls, c.require_tls);
  if (rc != SQLITE_DONE) return db_error(db_, rc, "setting default policy");
  if (auto r = drop_copies_locked(); !r) return r;
  return tx.commit();
}

Result<std::optional<std::string>> SqliteCredentialStore::mail_location(std::string_view user) {
  if (!is_valid_username(user)) return no_such_user(user);
  std::lock_guard lock(mu_);
  std::optional<std::string> location;
  auto r = read_user_row(db_, "SELECT mail_location FROM users WHERE name = ?1", user,
                         "reading mail location", [&](const Row& row) {
                           if (!row.is_null(0)) location = row.text(0);
                         });
  if (!r) return r.error();
  return location;
}

Result<void> SqliteCredentialStore::set_mail_location(std::string_view user,
                                                      const std::optional<std::string>& location) {
  if (!is_valid_username(user)) return no_such_user(user);
  std::lock_guard lock(mu_);
  const int rc =
      sqlite::run(db_, "UPDATE users SET mail_location = ?2 WHERE name = ?1", user, location);
  if (rc != SQLITE_DONE) return db_error(db_, rc, "setting mail location");
  if (sqlite3_changes(db_) == 0) return no_such_user(user);
  return {};
}

Result<AccountQuota> SqliteCredentialStore::quota(std::string_view user) {
  if (!is_valid_username(user)) return no_such_user(user);
  std::lock_guard lock(mu_);
  AccountQuota q;
  auto r = read_user_row(
      db_, "SELECT quota_bytes, quota_messages FROM users WHERE name = ?1", user, "reading quota",
      [&](const Row& row) { q = quota_columns(row.opt_integer(0), row.opt_integer(1)); });
  if (!r) return r.error();
  return q;
}

Result<void> SqliteCredentialStore::set_quota(std::string_view user, const AccountQuota& quota) {
  if (!is_valid_username(user)) return no_such_user(user);
  if (auto ok = check_quota(quota); !ok) return ok;
  auto column = [](const std::optional<std::uint64_t>& v) -> std::optional<std::int64_t> {
    if (!v) return std::nullopt;
    return static_cast<std::int64_t>(*v);
  };
  std::lock_guard lock(mu_);
  const int rc =
      sqlite::run(db_, "UPDATE users SET quota_bytes = ?2, quota_messages = ?3 WHERE name = ?1",
                  user, column(quota.bytes), column(quota.messages));
  if (rc != SQLITE_DONE) return db_error(db_, rc, "setting quota");
  if (sqlite3_changes(db_) == 0) return no_such_user(user);
  return {};
}

}  // namespace apop::auth
