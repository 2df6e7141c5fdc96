#include "pg/pool.hpp"

#include <libpq-fe.h>

#include <cstdlib>
#include <cstring>

namespace apop::pg {

bool is_postgres_url(std::string_view s) {
  return s.substr(0, 13) == "postgresql://" || s.substr(0, 11) == "postgres://";
}

std::string redact(std::string_view url_view) {
  std::string url(url_view);
  const auto scheme = url.find("://");
  if (scheme != std::string::npos) {
    const auto start = scheme + 3;
    const auto at = url.find('@', start);
    const auto slash = url.find('/', start);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      const auto colon = url.find(':', start);
      if (colon != std::string::npos && colon < at) url.replace(colon + 1, at - colon - 1, "***");
    }
  }
  for (auto p = url.find("password="); p != std::string::npos; p = url.find("password=", p + 1)) {
    const auto end = url.find('&', p);
    url.replace(p + 9, (end == std::string::npos ? url.size() : end) - p - 9, "***");
  }
  return url;
}

namespace {

Errc classify(const char* sqlstate) {
  if (sqlstate == nullptr || std::strlen(sqlstate) != 5) return Errc::temporary;
  const std::string_view s(sqlstate, 5);
  if (s == "23505") return Errc::exists;
  if (s == "23503") return Errc::not_found;
  if (s == "55P03" || s == "57014") return Errc::temporary;  // lock / statement timeout
  const std::string_view cls = s.substr(0, 2);
  if (cls == "08" || cls == "40" || cls == "53" || cls == "57" || cls == "58") {
    return Errc::temporary;
  }
  return Errc::permanent;
}

std::string first_line(const char* msg) {
  std::string m = msg ? msg : "";
  if (auto nl = m.find('\n'); nl != std::string::npos) m.resize(nl);
  return m.empty() ? "unknown error" : m;
}

}  // namespace

Rows::~Rows() { PQclear(r_); }
int Rows::size() const { return PQntuples(r_); }
std::int64_t Rows::affected() const {
  const char* n = PQcmdTuples(r_);
  return (n && *n) ? std::strtoll(n, nullptr, 10) : 0;
}
bool Rows::is_null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
std::string Rows::text(int row, int col) const {
  return std::string(PQgetvalue(r_, row, col), static_cast<std::size_t>(PQgetlength(r_, row, col)));
}
std::int64_t Rows::integer(int row, int col) const {
  if (is_null(row, col)) return 0;
  return std::strtoll(PQgetvalue(r_, row, col), nullptr, 10);
}
std::optional<std::int64_t> Rows::opt_integer(int row, int col) const {
  if (is_null(row, col)) return std::nullopt;
  return integer(row, col);
}
std::optional<bool> Rows::opt_boolean(int row, int col) const {
  if (is_null(row, col)) return std::nullopt;
  return PQgetvalue(r_, row, col)[0] == 't';
}
std::string Rows::bytea(int row, int col) const {
  if (is_null(row, col)) return {};
  std::size_t n = 0;
  unsigned char* raw =
      PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(r_, row, col)), &n);
  if (raw == nullptr) return {};
  std::string out(reinterpret_cast<const char*>(raw), n);
  PQfreemem(raw);
  return out;
}

Result<Rows> exec(pg_conn* conn, const char* sql, const std::vector<Param>& params,
                  std::string_view what) {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  for (const Param& p : params) {
    values.push_back(p.value ? p.value->data() : nullptr);
    lengths.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
    formats.push_back(p.binary ? 1 : 0);
  }
  PGresult* r = PQexecParams(conn, sql, static_cast<int>(params.size()), nullptr, values.data(),
                             lengths.data(), formats.data(), 0);
  Rows rows(r);
  const ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return rows;
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  const char* primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  const Errc code = PQstatus(conn) != CONNECTION_OK ? Errc::temporary : classify(state);
  return make_error(code, "PostgreSQL: " + std::string(what) + ": " +
                              first_line(primary ? primary : PQerrorMessage(conn)));
}

Result<void> exec_script(pg_conn* conn, const char* sql, std::string_view what) {
  // PQexec runs every statement and returns the last result, or the error
  // that stopped the script.
  PGresult* r = PQexec(conn, sql);
  Rows rows(r);
  const ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return {};
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  const char* primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  const Errc code = PQstatus(conn) != CONNECTION_OK ? Errc::temporary : classify(state);
  return make_error(code, "PostgreSQL: " + std::string(what) + ": " +
                              first_line(primary ? primary : PQerrorMessage(conn)));
}

Result<pg_conn*> connect(const std::string& url) {
  // Defaults first: the URL (expanded from "dbname") overrides any of them.
  const char* keys[] = {"connect_timeout",
                        "application_name",
                        "keepalives",
                        "keepalives_idle",
                        "keepalives_interval",
                        "keepalives_count",
                        "options",
                        "dbname",
                        nullptr};
  const std::string timeout = std::to_string(limits::kPgConnectTimeout);
  const char* vals[] = {timeout.c_str(),
                        "apop",
                        "1",
                        "30",
                        "10",
                        "3",
                        "-c statement_timeout=15000 -c client_min_messages=warning",
                        url.c_str(),
                        nullptr};
  PGconn* c = PQconnectdbParams(keys, vals, 1);
  if (c == nullptr) return make_error(Errc::temporary, "PostgreSQL: out of memory");
  if (PQstatus(c) != CONNECTION_OK) {
    std::string msg = first_line(PQerrorMessage(c));
    PQfinish(c);
    // A malformed URL is the configuration's fault, not the database's.
    const bool bad_url = msg.find("invalid") != std::string::npos &&
                         (msg.find("URI") != std::string::npos ||
                          msg.find("connection option") != std::string::npos);
    return make_error(bad_url ? Errc::invalid : Errc::temporary,
                      "PostgreSQL: cannot connect to " + redact(url) + ": " + msg);
  }
  return c;
}

Lease::~Lease() {
  if (conn_ != nullptr && pool_ != nullptr) pool_->release(conn_);
}

Pool::Pool(std::string url, unsigned size, std::chrono::milliseconds wait)
    : url_(std::move(url)), size_(size == 0 ? 1 : size), wait_(wait) {}

Pool::~Pool() {
  for (PGconn* c : idle_) PQfinish(c);
}

unsigned Pool::open_connections() const {
  std::lock_guard lock(mu_);
  return open_;
}

Result<Lease> Pool::acquire() {
  std::unique_lock lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + wait_;
  for (;;) {
    while (!idle_.empty()) {
      PGconn* c = idle_.back();
      idle_.pop_back();
      // Reads what the server sent while the connection was idle (without
      // blocking): a server that restarted or terminated it shows up here
      // as a bad connection, instead of failing the caller's first query.
      if (PQconsumeInput(c) == 1 && PQstatus(c) == CONNECTION_OK) return Lease(this, c);
      PQfinish(c);  // broken while idle (server restart): forget it
      --open_;
    }
    if (open_ < size_) {
      ++open_;
      lock.unlock();
      auto c = connect(url_);
      if (!c) {
        lock.lock();
        --open_;
        cv_.notify_one();
        return c.error();
      }
      return Lease(this, *c);
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
        open_ >= size_) {
      return make_error(Errc::temporary,
                        "PostgreSQL: all " + std::to_string(size_) + " connections busy");
    }
  }
}

void Pool::release(pg_conn* c) {
  const bool healthy = PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE;
  std::lock_guard lock(mu_);
  if (healthy) {
    idle_.push_back(c);
  } else {
    PQfinish(c);
    --open_;
  }
  cv_.notify_one();
}

Transaction::~Transaction() {
  if (open_) PQclear(PQexec(conn_, "ROLLBACK"));
}

Result<void> Transaction::begin() {
  auto r = exec(conn_, "BEGIN", {}, "begin transaction");
  if (!r) return r.error();
  open_ = true;
  return {};
}

Result<void> Transaction::commit() {
  auto r = exec(conn_, "COMMIT", {}, "commit");
  open_ = false;  // COMMIT ends the transaction either way (a failed one rolls back)
  if (!r) return r.error();
  return {};
}

}  // namespace apop::pg
