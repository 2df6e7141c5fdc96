// SqliteCredentialStore: opening the database, the schema and its upgrades,
// the key check (auth/sqlite_credential_store.hpp).
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "auth/sqlite_credential_store.hpp"
#include "auth/sqlite_db.hpp"

namespace apop::auth {

using sqlite::Blob;
using sqlite::db_error;
using sqlite::exec;
using sqlite::kBusyTimeoutMs;
using sqlite::Stmt;

namespace {

constexpr int kSchemaVersion = 6;

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

// Runs a query without parameters that returns at most one row we need:
// fn(row) when there is one. SQLITE_DONE, or the failing code.
template <class Fn>
int first_row(sqlite3* db, const char* sql, Fn fn) {
  Stmt st;
  int rc = sqlite::prepare(db, sql, st);
  if (rc == SQLITE_OK) rc = sqlite3_step(st.get());
  if (rc != SQLITE_ROW) return rc;
  fn(st.get());
  return SQLITE_DONE;
}

}  // namespace

// Version 1: users(name, secret, created, updated), one sealed secret per
// user. Version 2 derives the hash and verifiers from it and keeps it as the
// encrypted copy of the password.
Result<void> SqliteCredentialStore::upgrade_from_v1() {
  Stmt old;
  int rc = sqlite::prepare(db_, "SELECT name, secret, created, updated FROM users_v1", old);
  if (rc != SQLITE_OK) return db_error(db_, rc, "upgrading schema");
  while ((rc = sqlite3_step(old.get())) == SQLITE_ROW) {
    std::string name = sqlite::column_text(old.get(), 0);
    std::string sealed = sqlite::column_blob(old.get(), 1);
    auto secret = codec_.box().open(sealed, password_aad(name));
    if (!secret) {
      return make_error(Errc::permanent, "upgrading schema: secret of " + name +
                                             " cannot be decrypted: " + secret.error().message);
    }
    auto derived = derive_password(*secret);
    OPENSSL_cleanse(secret->data(), secret->size());
    if (!derived) return derived.error();
    const std::string v256 = encode_verifier(derived->scram_sha256);
    const std::string v1 = encode_verifier(derived->scram_sha1);
    const int irc =
        sqlite::run(db_,
                    "INSERT INTO users (name, created, updated, password_hash,"
                    " scram_sha256, scram_sha1, sealed_password)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    name, sqlite3_column_int64(old.get(), 2), sqlite3_column_int64(old.get(), 3),
                    derived->hash, v256, v1, Blob{sealed});
    if (irc != SQLITE_DONE) return db_error(db_, irc, "upgrading schema");
  }
  if (rc != SQLITE_DONE) return db_error(db_, rc, "upgrading schema");
  sqlite3_reset(old.get());  // a running SELECT would lock the table
  return exec(db_, "DROP TABLE users_v1");
}

Result<void> SqliteCredentialStore::migrate() {
  sqlite::Transaction tx(db_);
  if (auto r = tx.begin(); !r) return r;
  int version = 0;
  if (int rc = first_row(db_, "PRAGMA user_version",
                         [&](sqlite3_stmt* st) { version = sqlite3_column_int(st, 0); });
      rc != SQLITE_DONE) {
    return db_error(db_, rc, "reading schema version");
  }
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
    if (auto r = upgrade_from_v1(); !r) return r;
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
  // Version 6: the account's own quota limits (NULL: the server's defaults;
  // 0: unlimited), store/quota.hpp.
  // Added only when missing: a database an older apop reopened (and marked
  // with its own, older user_version) may have them already.
  if (version < 6) {
    bool have = false;
    if (int rc = first_row(
            db_, "SELECT COUNT(*) FROM pragma_table_info('users') WHERE name = 'quota_bytes'",
            [&](sqlite3_stmt* st) { have = sqlite3_column_int(st, 0) != 0; });
        rc != SQLITE_DONE) {
      return db_error(db_, rc, "reading the schema");
    }
    if (!have) {
      for (const char* sql : {"ALTER TABLE users ADD COLUMN quota_bytes INTEGER",
                              "ALTER TABLE users ADD COLUMN quota_messages INTEGER"}) {
        if (auto r = exec(db_, sql); !r) return r;
      }
    }
    if (auto r = exec(db_, "PRAGMA user_version = 6"); !r) return r;
  }
  // In the same transaction: a wrong key rolls the upgrade back too.
  if (codec_.box().has_key()) {
    if (auto r = check_key_locked(); !r) return r;
  }
  return tx.commit();
}

// The key check value: present, it must open with the box; absent (a
// database of schema version 4 or older, or one created by `apop deliver`,
// which runs without the key), the stored secrets must open (one password
// copy and one device secret are tried), then the value is written.
Result<void> SqliteCredentialStore::check_key_locked() {
  KeySample sample;
  int rc = first_row(db_, "SELECT sealed FROM key_check WHERE id = 1",
                     [&](sqlite3_stmt* st) { sample.check = sqlite::column_blob(st, 0); });
  if (rc == SQLITE_DONE && !sample.check) {
    rc =
        first_row(db_,
                  "SELECT name, sealed_password FROM users WHERE sealed_password IS NOT NULL"
                  " LIMIT 1",
                  [&](sqlite3_stmt* st) {
                    sample.password.emplace(sqlite::column_text(st, 0), sqlite::column_blob(st, 1));
                  });
  }
  if (rc == SQLITE_DONE && !sample.check) {
    rc = first_row(db_, "SELECT user, name, sealed FROM device_secrets LIMIT 1",
                   [&](sqlite3_stmt* st) {
                     sample.device.emplace(
                         sqlite::column_text(st, 0),
                         SealedDevice{sqlite::column_text(st, 1), sqlite::column_blob(st, 2)});
                   });
  }
  if (rc != SQLITE_DONE) return db_error(db_, rc, "reading the key check");
  auto check = check_key(codec_.box(), sample, path_.string());
  if (!check) return check.error();
  if (!*check) return {};
  rc = sqlite::run(db_, "INSERT INTO key_check (id, sealed) VALUES (1, ?1)", Blob{**check});
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
    int trc = sqlite::prepare(raw, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                              t, table);
    if (trc == SQLITE_OK) trc = sqlite3_step(t.get());
    if (trc == SQLITE_DONE) return false;
    if (trc != SQLITE_ROW) return db_error(raw, trc, "reading the schema");
    bool found = false;
    trc = first_row(raw, query, [&](sqlite3_stmt* q) { found = sqlite3_column_int(q, 0) != 0; });
    if (trc != SQLITE_DONE) return db_error(raw, trc, "reading the schema");
    return found;
  };
  int version = 0;
  rc = first_row(raw, "PRAGMA user_version",
                 [&](sqlite3_stmt* v) { version = sqlite3_column_int(v, 0); });
  if (rc != SQLITE_DONE) return db_error(raw, rc, "reading schema version");
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

}  // namespace apop::auth
