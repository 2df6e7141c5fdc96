#include "auth/sqlite_db.hpp"

namespace apop::auth::sqlite {

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

Result<void> exec(sqlite3* db, const char* sql) {
  if (int rc = run(db, sql); rc != SQLITE_DONE) return db_error(db, rc, sql);
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

Result<void> Transaction::begin() {
  auto r = exec(db_, "BEGIN IMMEDIATE");
  open_ = r.ok();
  return r;
}

Result<void> Transaction::commit() {
  auto r = exec(db_, "COMMIT");
  if (r) open_ = false;
  return r;
}

}  // namespace apop::auth::sqlite
