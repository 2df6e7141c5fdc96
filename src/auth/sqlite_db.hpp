// The SQLite toolkit of SqliteCredentialStore: statements finalized or reset
// on scope exit, a typed bind of all of a statement's parameters at once,
// column reads (sqlite::Row, the row accessor of auth/account_codec.hpp),
// transactions, and errors as Result values (sqlite3_errmsg never contains
// bound values, so no secret reaches a message).
//
// Bound text and blobs are not copied (SQLITE_STATIC): they must outlive the
// statement's steps, so bind() refuses a temporary std::string (Bindable).
// Thread-safety: none of its own; the store serialises its connection.
#pragma once

#include <sqlite3.h>

#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "common/result.hpp"

namespace apop::auth::sqlite {

// How long a statement waits for another connection's lock.
inline constexpr int kBusyTimeoutMs = 5000;

// Errc::permanent for a database that is not ours or a statement that
// cannot run (corrupt, read-only, misuse, schema); Errc::temporary for the
// rest (busy, locked, I/O, full).
Errc classify(int rc);
// "credential database: WHAT: <sqlite message>", classified.
Error db_error(sqlite3* db, int rc, const std::string& what);

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

// A statement of a connection's cache, reset and unbound on scope exit so
// that it holds no read transaction and no borrowed parameter afterwards.
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

// --- Binding ------------------------------------------------------------------------

// A BLOB parameter (a std::string_view or std::string binds as TEXT).
struct Blob {
  std::string_view bytes;
};

// One parameter. std::nullopt and an empty optional bind NULL.
inline int bind_value(sqlite3_stmt* s, int i, std::string_view v) {
  return sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}
inline int bind_value(sqlite3_stmt* s, int i, Blob v) {
  return sqlite3_bind_blob(s, i, v.bytes.data(), static_cast<int>(v.bytes.size()), SQLITE_STATIC);
}
inline int bind_value(sqlite3_stmt* s, int i, std::nullopt_t) { return sqlite3_bind_null(s, i); }
// bool as 0/1; a template, so that a pointer never converts to it.
template <std::same_as<bool> B>
int bind_value(sqlite3_stmt* s, int i, B v) {
  return sqlite3_bind_int(s, i, v ? 1 : 0);
}
template <class T>
concept Integer = std::integral<T> && !std::same_as<T, bool>;
template <Integer I>
int bind_value(sqlite3_stmt* s, int i, I v) {
  return sqlite3_bind_int64(s, i, static_cast<sqlite3_int64>(v));
}
template <class T>
int bind_value(sqlite3_stmt* s, int i, const std::optional<T>& v) {
  return v ? bind_value(s, i, *v) : sqlite3_bind_null(s, i);
}

namespace detail {
template <class T>
inline constexpr bool kOwnsBytes =
    std::is_same_v<T, std::string> || std::is_same_v<T, std::optional<std::string>>;
}  // namespace detail

// An argument bind() takes (A as forwarded): anything but a temporary
// std::string (or optional one), whose bytes would be gone before the step.
template <class A>
concept Bindable = std::is_lvalue_reference_v<A> || !detail::kOwnsBytes<std::remove_cvref_t<A>>;

// Binds `args` to the parameters ?1, ?2, ... in order. Returns SQLITE_OK,
// or the first error (the parameters after it stay unbound).
template <Bindable... Args>
int bind([[maybe_unused]] sqlite3_stmt* s, Args&&... args) {
  int rc = SQLITE_OK;
  [[maybe_unused]] int i = 0;
  ((rc = rc == SQLITE_OK ? bind_value(s, ++i, args) : rc), ...);
  return rc;
}

// Prepares `sql` into `st` and binds `args`; SQLITE_OK or the first error.
template <Bindable... Args>
int prepare(sqlite3* db, const char* sql, Stmt& st, Args&&... args) {
  int rc = sqlite3_prepare_v2(db, sql, -1, st.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite::bind(st.get(), std::forward<Args>(args)...);
  return rc;
}

// Prepares `sql`, binds `args` and steps it to the end (rows discarded):
// SQLITE_DONE, or the first error. sqlite3_changes(db) tells what it did.
template <Bindable... Args>
int run(sqlite3* db, const char* sql, Args&&... args) {
  Stmt st;
  int rc = sqlite::prepare(db, sql, st, std::forward<Args>(args)...);
  if (rc != SQLITE_OK) return rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
  }
  return rc;
}

// Runs a statement without parameters that returns no rows we need.
Result<void> exec(sqlite3* db, const char* sql);

// --- Reading ------------------------------------------------------------------------

std::string column_text(sqlite3_stmt* s, int i);
std::string column_blob(sqlite3_stmt* s, int i);

// The current row of a statement, as account_codec.hpp's templates read it.
struct Row {
  sqlite3_stmt* s;
  bool is_null(int i) const { return sqlite3_column_type(s, i) == SQLITE_NULL; }
  std::string text(int i) const { return column_text(s, i); }
  std::string blob(int i) const { return column_blob(s, i); }
  std::int64_t integer(int i) const { return sqlite3_column_int64(s, i); }
  std::optional<std::int64_t> opt_integer(int i) const {
    if (is_null(i)) return std::nullopt;
    return integer(i);
  }
  std::optional<bool> opt_boolean(int i) const {
    if (is_null(i)) return std::nullopt;
    return sqlite3_column_int(s, i) != 0;
  }
};

// --- Transactions ---------------------------------------------------------------------

// BEGIN IMMEDIATE ... COMMIT; rolled back on scope exit unless committed.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {}
  ~Transaction() {
    if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  Result<void> begin();
  Result<void> commit();

 private:
  sqlite3* db_;
  bool open_ = false;
};

}  // namespace apop::auth::sqlite
