// The SQLite credential store (DATA/users.sqlite).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/account_codec.hpp"
#include "auth/credential_store.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace apop::auth {

// SQLite-backed store (DATA/users.sqlite). Secrets are stored only sealed
// (auth/account_codec.hpp: the domain logic it shares with the PostgreSQL
// and memory stores). One
// connection guarded by a mutex; WAL journal and a ~5 s busy timeout so that
// `apop user ...` works while `apop serve` runs. The database, -wal and -shm
// files are mode 0600. Schema version 5; older databases are upgraded in
// place on open: version 1 (one encrypted secret per user) to 2 (hash,
// verifiers, policy), version 2 to 3 (LOGIN-DELAY, EXPIRE, last login
// columns), version 3 to 4 (mail location column), version 4 to 5 (the key
// check value).
//
// Its files, by job: sqlite_credential_store.cpp (account rows),
// sqlite_schema.cpp (open, schema upgrades, key check),
// sqlite_login_records.cpp (record_login and its write-behind); the SQLite
// toolkit (statements, typed bind, columns) is auth/sqlite_db.hpp.
class SqliteCredentialStore final : public CredentialStore {
 public:
  // Opens or creates the database, creating/migrating the schema (PRAGMA
  // user_version). Errc::permanent for a file that is not a database of ours
  // or has a newer schema; Errc::temporary for I/O errors / busy database.
  // Note: briefly sets the process umask to 077 around sqlite3_open_v2 (umask
  // is process-wide), so call it before starting threads that create files.
  //
  // The key: the database keeps a key check value (SecretBox::seal_key_check,
  // schema version 5). With a box whose key does not open it — or, in a
  // database without one yet, does not open a stored secret — open() fails
  // with Errc::permanent (box.key_mismatch) and changes nothing (the schema
  // upgrade is rolled back with it); otherwise a missing check value is
  // written. A box without a key (SecretBox::without_key, for `apop
  // deliver`) skips the check: only calls that need no secret work then.
  static Result<std::unique_ptr<SqliteCredentialStore>> open(const std::filesystem::path& db_file,
                                                             SecretBox box);
  // Whether `db_file` holds anything sealed with a key (the key check value,
  // a password copy, a device secret): then a missing key file must not be
  // replaced by a new key. False when the file does not exist. Opens the
  // file read-only and changes nothing.
  static Result<bool> holds_sealed_secrets(const std::filesystem::path& db_file);
  ~SqliteCredentialStore() override;
  SqliteCredentialStore(const SqliteCredentialStore&) = delete;
  SqliteCredentialStore& operator=(const SqliteCredentialStore&) = delete;

  Result<Account> account(std::string_view user) override;
  Result<bool> has_user(std::string_view user) override;
  Result<void> add(std::string_view user, std::string_view password) override;
  Result<void> set_password(std::string_view user, std::string_view password) override;
  Result<void> import_foreign_hash(std::string_view user, std::string_view hash,
                                   bool replace) override;
  Result<void> remove(std::string_view user) override;
  Result<std::vector<UserRecord>> list() override;
  Result<void> add_device_secret(std::string_view user, std::string_view name,
                                 std::string_view secret) override;
  Result<std::vector<DeviceSecretInfo>> device_secrets(std::string_view user) override;
  Result<void> revoke_device_secret(std::string_view user, std::string_view name) override;
  Result<Policy> policy(std::string_view user) override;
  Result<void> set_policy(std::string_view user, const Policy& policy) override;
  Result<Policy> default_policy() override;
  Result<void> set_default_policy(const Policy& policy) override;
  Result<void> record_login(std::string_view user, std::int64_t when) override;
  Result<std::optional<std::string>> mail_location(std::string_view user) override;
  Result<void> set_mail_location(std::string_view user,
                                 const std::optional<std::string>& location) override;
  Result<AccountQuota> quota(std::string_view user) override;
  Result<void> set_quota(std::string_view user, const AccountQuota& quota) override;

  // Write-behind of record_login (apop serve): from now on record_login only
  // notes the time in memory (it no longer reports unknown users), and a
  // thread of the store writes the noted times every `interval` in one
  // transaction on a connection of its own (synchronous = NORMAL), so a login
  // never waits for a database write or its lock. account() and list() of
  // this store report the noted times at once, so RFC 2449 LOGIN-DELAY holds
  // across the sessions of this process. The trade-off: other processes
  // (`apop user list`) see a login up to `interval` late, and a crash of the
  // process loses at most the last `interval` of login times (LOGIN-DELAY
  // then counts from an earlier login). The destructor writes what is left.
  Result<void> defer_login_records(std::chrono::milliseconds interval);
  // Writes the noted login times now (also called by the write-behind thread).
  Result<void> flush_login_records();

  // Test seam: how many statements of the login path's cache
  // (cached_locked: account(), record_login()) this store has run.
  std::uint64_t cached_statements_run() {
    std::lock_guard lock(mu_);
    return cached_statements_run_;
  }

 private:
  SqliteCredentialStore(sqlite3* db, SecretBox box, std::filesystem::path path);
  // The noted login time of `user` (write-behind), else `stored`.
  std::optional<std::int64_t> noted_login(std::string_view user,
                                          std::optional<std::int64_t> stored);
  struct WriteBehind;
  std::unique_ptr<WriteBehind> write_behind_;
  Result<void> migrate();
  Result<void> upgrade_from_v1();
  Result<void> check_key_locked();
  Result<Policy> default_policy_locked();
  Result<Policy> user_policy_locked(std::string_view user);
  Result<void> drop_copies_locked();
  // The statements of the login path (account(), record_login()), prepared
  // once per connection and reset after each use. Guarded by mu_.
  sqlite3_stmt* cached_locked(const char* sql, int* rc);
  std::mutex mu_;
  sqlite3* db_;
  std::vector<std::pair<std::string, sqlite3_stmt*>> stmt_cache_;
  const AccountCodec codec_;
  std::filesystem::path path_;
  std::uint64_t cached_statements_run_ = 0;  // guarded by mu_
};

}  // namespace apop::auth
