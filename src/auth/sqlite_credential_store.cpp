#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "auth/credential_store.hpp"
#include "auth/username.hpp"

namespace apop::auth {
namespace {

constexpr int kSchemaVersion = 1;
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

Result<void> migrate(sqlite3* db) {
  if (auto r = exec(db, "BEGIN IMMEDIATE"); !r) return r;
  auto fail = [db](Error e) -> Result<void> {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return e;
  };
  Stmt st;
  int rc = prepare(db, "PRAGMA user_version", st);
  if (rc != SQLITE_OK) return fail(db_error(db, rc, "reading schema version"));
  rc = sqlite3_step(st.get());
  if (rc != SQLITE_ROW) return fail(db_error(db, rc, "reading schema version"));
  const int version = sqlite3_column_int(st.get(), 0);
  if (version > kSchemaVersion) {
    return fail(make_error(Errc::permanent, "credential database has schema version " +
                                                std::to_string(version) +
                                                ", newer than this apop supports (" +
                                                std::to_string(kSchemaVersion) + ")"));
  }
  if (version < 1) {
    if (auto r = exec(db,
                      "CREATE TABLE users ("
                      " name TEXT PRIMARY KEY NOT NULL,"
                      " secret BLOB NOT NULL,"
                      " created INTEGER NOT NULL,"
                      " updated INTEGER NOT NULL)");
        !r) {
      return fail(r.error());
    }
    if (auto r = exec(db, "PRAGMA user_version = 1"); !r) return fail(r.error());
  }
  // Future migrations: if (version < 2) { ... PRAGMA user_version = 2 }.
  if (auto r = exec(db, "COMMIT"); !r) return fail(r.error());
  return {};
}

Result<void> chmod_0600(const std::filesystem::path& p, bool must_exist) {
  if (::chmod(p.c_str(), 0600) != 0) {
    int e = errno;
    if (e == ENOENT && !must_exist) return {};
    return make_error(Errc::permanent, "cannot chmod 600 " + p.string() + ": " + std::strerror(e));
  }
  return {};
}

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

SqliteCredentialStore::~SqliteCredentialStore() { sqlite3_close_v2(db_); }

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
  for (const char* pragma : {"PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL",
                             "PRAGMA secure_delete = ON", "PRAGMA trusted_schema = OFF"}) {
    if (auto r = exec(raw, pragma); !r) return r.error();
  }
  if (auto r = migrate(raw); !r) return r.error();
  // SQLite gives -wal/-shm the main file's mode; make sure anyway.
  for (const char* suffix : {"-wal", "-shm"}) {
    std::filesystem::path p = db_file;
    p += suffix;
    if (auto r = chmod_0600(p, false); !r) return r.error();
  }
  return store;
}

Result<std::string> SqliteCredentialStore::secret(std::string_view user) {
  if (!is_valid_username(user)) return unknown_user(user);
  std::string sealed;
  {
    std::lock_guard lock(mu_);
    Stmt st;
    int rc = prepare(db_, "SELECT secret FROM users WHERE name = ?1", st);
    if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
    if (rc != SQLITE_OK) return db_error(db_, rc, "looking up user");
    rc = sqlite3_step(st.get());
    if (rc == SQLITE_DONE) return unknown_user(user);
    if (rc != SQLITE_ROW) return db_error(db_, rc, "looking up user");
    const void* blob = sqlite3_column_blob(st.get(), 0);
    const int n = sqlite3_column_bytes(st.get(), 0);
    if (blob != nullptr && n > 0) sealed.assign(static_cast<const char*>(blob), std::size_t(n));
  }
  auto opened = box_.open(sealed, user);
  if (!opened) {
    return make_error(Errc::permanent, "stored secret of user " + std::string(user) +
                                           " cannot be decrypted: " + opened.error().message);
  }
  return opened;
}

Result<void> SqliteCredentialStore::add(std::string_view user, std::string_view secret) {
  if (!is_valid_username(user)) {
    return make_error(Errc::invalid, "invalid user name: " + std::string(user));
  }
  auto sealed = box_.seal(secret, user);
  if (!sealed) return sealed.error();
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = prepare(
      db_, "INSERT INTO users (name, secret, created, updated) VALUES (?1, ?2, ?3, ?3)", st);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc == SQLITE_OK) rc = bind_blob(st.get(), 2, *sealed);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 3, now());
  if (rc != SQLITE_OK) return db_error(db_, rc, "adding user");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
    return make_error(Errc::exists, "user already exists: " + std::string(user));
  }
  if (rc != SQLITE_DONE) return db_error(db_, rc, "adding user");
  return {};
}

Result<void> SqliteCredentialStore::set_secret(std::string_view user, std::string_view secret) {
  if (!is_valid_username(user)) return no_user(user);
  auto sealed = box_.seal(secret, user);
  if (!sealed) return sealed.error();
  std::lock_guard lock(mu_);
  Stmt st;
  int rc = prepare(db_, "UPDATE users SET secret = ?2, updated = ?3 WHERE name = ?1", st);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, user);
  if (rc == SQLITE_OK) rc = bind_blob(st.get(), 2, *sealed);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 3, now());
  if (rc != SQLITE_OK) return db_error(db_, rc, "changing secret");
  rc = sqlite3_step(st.get());
  if (rc != SQLITE_DONE) return db_error(db_, rc, "changing secret");
  if (sqlite3_changes(db_) == 0) return no_user(user);
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
  int rc = prepare(db_, "SELECT name, created, updated FROM users ORDER BY name", st);
  if (rc != SQLITE_OK) return db_error(db_, rc, "listing users");
  std::vector<UserRecord> out;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    const auto* name = reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0));
    const int n = sqlite3_column_bytes(st.get(), 0);
    out.push_back(UserRecord{name ? std::string(name, std::size_t(n)) : std::string(),
                             sqlite3_column_int64(st.get(), 1), sqlite3_column_int64(st.get(), 2)});
  }
  if (rc != SQLITE_DONE) return db_error(db_, rc, "listing users");
  return out;
}

}  // namespace apop::auth
