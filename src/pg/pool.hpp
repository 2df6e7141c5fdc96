// PostgreSQL access for the shared state of several apop servers
// (docs/scaling.md): a small thread-safe connection pool over libpq, and
// parameterised statements (PQexecParams: values never go into SQL text).
//
// Errors are values: a connection or server problem (SQLSTATE classes 08,
// 40, 53, 57, lock_not_available, or no connection at all) is
// Errc::temporary, a unique violation Errc::exists, a foreign-key violation
// Errc::not_found, anything else Errc::permanent. Messages carry the
// server's primary message only (never a DETAIL, which may quote values).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/limits.hpp"
#include "common/result.hpp"

struct pg_conn;
struct pg_result;

namespace apop::pg {

// True for "postgresql://..." and "postgres://..." (libpq's URI schemes).
bool is_postgres_url(std::string_view s);

// The URL with any password replaced by "***" (for logs).
std::string redact(std::string_view url);

// One statement parameter: text, bytea (sent in binary) or NULL.
struct Param {
  std::optional<std::string> value;
  bool binary = false;
  static Param text(std::string_view v) { return {std::string(v), false}; }
  static Param bytes(std::string_view v) { return {std::string(v), true}; }
  static Param integer(std::int64_t v) { return {std::to_string(v), false}; }
  static Param boolean(bool v) { return {v ? "true" : "false", false}; }
  static Param null() { return {std::nullopt, false}; }
  template <typename T>
  static Param opt_integer(const std::optional<T>& v) {
    return v ? integer(static_cast<std::int64_t>(*v)) : null();
  }
  static Param opt_boolean(const std::optional<bool>& v) { return v ? boolean(*v) : null(); }
};

// A statement's result (text format). Owns the PGresult.
class Rows {
 public:
  explicit Rows(pg_result* r) : r_(r) {}
  Rows(Rows&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  Rows& operator=(Rows&&) = delete;
  Rows(const Rows&) = delete;
  ~Rows();
  int size() const;
  // Rows changed by INSERT/UPDATE/DELETE.
  std::int64_t affected() const;
  bool is_null(int row, int col) const;
  std::string text(int row, int col) const;
  std::int64_t integer(int row, int col) const;  // 0 when NULL or not a number
  std::optional<std::int64_t> opt_integer(int row, int col) const;
  std::optional<bool> opt_boolean(int row, int col) const;
  std::string bytea(int row, int col) const;  // decoded from the hex text format

 private:
  pg_result* r_;
};

// Runs one statement on `conn`. `what` names the operation in errors.
Result<Rows> exec(pg_conn* conn, const char* sql, const std::vector<Param>& params,
                  std::string_view what);
// Runs constant SQL (possibly several statements; no parameters).
Result<void> exec_script(pg_conn* conn, const char* sql, std::string_view what);

// Connects with apop's defaults (connect_timeout, TCP keepalives, a
// statement_timeout, application_name=apop) that the URL may override.
Result<pg_conn*> connect(const std::string& url);

class Pool;

// A connection borrowed from the pool; returned on destruction (closed
// instead when it broke or is inside a transaction).
class Lease {
 public:
  Lease(Pool* pool, pg_conn* conn) : pool_(pool), conn_(conn) {}
  Lease(Lease&& o) noexcept : pool_(o.pool_), conn_(o.conn_) { o.conn_ = nullptr; }
  Lease& operator=(Lease&&) = delete;
  Lease(const Lease&) = delete;
  ~Lease();
  pg_conn* get() const { return conn_; }

 private:
  Pool* pool_;
  pg_conn* conn_;
};

// At most `size` connections, opened on demand and kept. Thread-safe. A
// caller finding all in use waits up to `wait`, then gets Errc::temporary;
// a failed connect is Errc::temporary too (the next acquire tries again),
// so a database that is down makes logins fail with [SYS/TEMP] and comes
// back by itself.
class Pool {
 public:
  Pool(std::string url, unsigned size = limits::kPgPoolSize,
       std::chrono::milliseconds wait = limits::kPgAcquireTimeout);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  Result<Lease> acquire();
  const std::string& url() const { return url_; }
  // Connections currently open (idle or leased), for tests.
  unsigned open_connections() const;

 private:
  friend class Lease;
  void release(pg_conn* conn);
  const std::string url_;
  const unsigned size_;
  const std::chrono::milliseconds wait_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<pg_conn*> idle_;
  unsigned open_ = 0;
};

// BEGIN ... COMMIT on a leased connection; rolled back unless committed.
class Transaction {
 public:
  explicit Transaction(pg_conn* conn) : conn_(conn) {}
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  Result<void> begin();
  Result<void> commit();

 private:
  pg_conn* conn_;
  bool open_ = false;
};

}  // namespace apop::pg
