// What several apop servers share through PostgreSQL (docs/scaling.md):
//  - PgCredentialStore: the account database, the same CredentialStore
//    contract as SqliteCredentialStore (auth/sqlite_credential_store.hpp), secrets
//    sealed with the same SecretBox (DATA/secret.key, identical on every
//    server);
//  - PgFailureTracker: the failed-login counters and blocks of the
//    ThrottlingAuthenticator (auth/throttle.hpp), so a brute force spread
//    over several servers is counted once;
//  - MaildropLocks (and SharedLockOpener, the opener that takes them): the
//    one-session-per-maildrop lock across servers, as PostgreSQL
//    session-level advisory locks held on one connection per server process
//    (a server that dies drops its connection, and its locks go with it;
//    with --workers the auth process holds them for its workers).
//
// Schema (table schema_version, one row): version 1 holds the accounts
// (users, device_secrets, policy_defaults: the columns of the SQLite schema
// version 3), version 2 adds the failed-login state (auth_failures,
// auth_blocks, auth_good). open() creates or upgrades it in one transaction
// under an advisory lock (servers starting together do it once); a newer
// version than this build knows is refused (Errc::permanent).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "auth/account_codec.hpp"
#include "auth/credential_store.hpp"
#include "auth/throttle.hpp"
#include "pg/pool.hpp"
#include "pop3/interfaces.hpp"
#include "pop3/maildrop_locks.hpp"

namespace apop::pg {

inline constexpr int kSchemaVersion = 4;

// Creates or upgrades the schema. Errc::permanent for a newer schema.
// With a `box` that has a key, checks it in the same transaction against
// the key check value (auth::SecretBox::seal_key_check), writing the value
// when there is none yet and the stored secrets open with the key;
// Errc::permanent (box->key_mismatch) when they do not, nothing changed.
Result<void> migrate(Pool& pool, const auth::SecretBox* box = nullptr);
// The schema version in the database (0: none yet).
Result<int> schema_version(Pool& pool);

class PgCredentialStore final : public auth::CredentialStore {
 public:
  // Connects once (Errc::temporary when the database is unreachable),
  // creates/upgrades the schema and checks `box` against the key check value
  // (see migrate(); Errc::permanent on a mismatch). A box without a key
  // (SecretBox::without_key) skips the check: only calls that need no
  // secret work then (has_user, mail_location).
  static Result<std::unique_ptr<PgCredentialStore>> open(std::shared_ptr<Pool> pool,
                                                         auth::SecretBox box);
  // Whether the database holds anything sealed with a key (the key check
  // value, an encrypted password copy, a device secret): then a missing
  // key file must not be replaced by a new key. Changes nothing.
  static Result<bool> holds_sealed_secrets(Pool& pool);

  Result<auth::Account> account(std::string_view user) override;
  Result<bool> has_user(std::string_view user) override;
  Result<void> add(std::string_view user, std::string_view password) override;
  Result<void> set_password(std::string_view user, std::string_view password) override;
  Result<void> remove(std::string_view user) override;
  Result<std::vector<auth::UserRecord>> list() override;
  Result<void> add_device_secret(std::string_view user, std::string_view name,
                                 std::string_view secret) override;
  Result<std::vector<auth::DeviceSecretInfo>> device_secrets(std::string_view user) override;
  Result<void> revoke_device_secret(std::string_view user, std::string_view name) override;
  Result<auth::Policy> policy(std::string_view user) override;
  Result<void> set_policy(std::string_view user, const auth::Policy& policy) override;
  Result<auth::Policy> default_policy() override;
  Result<void> set_default_policy(const auth::Policy& policy) override;
  Result<void> record_login(std::string_view user, std::int64_t when) override;
  Result<void> import_foreign_hash(std::string_view user, std::string_view hash,
                                   bool replace) override;
  Result<std::optional<std::string>> mail_location(std::string_view user) override;
  Result<void> set_mail_location(std::string_view user,
                                 const std::optional<std::string>& location) override;
  Result<auth::AccountQuota> quota(std::string_view user) override;
  Result<void> set_quota(std::string_view user, const auth::AccountQuota& quota) override;

  const std::shared_ptr<Pool>& pool() const { return pool_; }

 private:
  PgCredentialStore(std::shared_ptr<Pool> pool, auth::SecretBox box);
  std::shared_ptr<Pool> pool_;
  const auth::AccountCodec codec_;
};

// The failed-login state in PostgreSQL: one row per failure (kind 'a' for
// an address, 'u' for a user name) with its time, the blocks, and the known
// good (user, address) pairs; times are the callers' wall clock in
// milliseconds (servers must keep their clocks in sync, NTP). A failure is
// recorded in a transaction serialised per address (advisory transaction
// lock), so concurrent failures on two servers cannot both slip under the
// block. Expired rows are deleted as failures come in (at most once a
// minute). Counts saturate at block_after (or 64).
//
// When PostgreSQL cannot be reached the tracker falls back to an in-memory
// one (logged, once a minute at most): each server then defends alone until
// the database is back, rather than failing logins.
class PgFailureTracker final : public auth::FailureTracker {
 public:
  PgFailureTracker(std::shared_ptr<Pool> pool, auth::ThrottleConfig config);
  auth::FailureStatus status(std::string_view address, std::string_view user,
                             auth::ThrottleTime now) override;
  auth::FailureStatus record_failure(std::string_view address, std::string_view user,
                                     auth::ThrottleTime now) override;
  void record_success(std::string_view address, std::string_view user,
                      auth::ThrottleTime now) override;
  // Times the in-memory fallback answered (for tests and logs).
  std::uint64_t fallbacks() const { return fallbacks_.load(); }

 private:
  void degraded(const Error& e);
  std::shared_ptr<Pool> pool_;
  auth::ThrottleConfig config_;
  unsigned saturate_;
  auth::MemoryFailureTracker memory_;
  std::atomic<std::uint64_t> fallbacks_{0};
  std::atomic<std::int64_t> last_warning_ms_{0};
  std::atomic<std::int64_t> last_cleanup_ms_{0};
};

// The one-session-per-maildrop lock across servers: the server's lock
// connection takes pg_try_advisory_lock(hashtextextended('apop-maildrop:'
// || user, 0)); true when taken, false when another server holds it
// (pop3::LockingOpener makes that [IN-USE]), Errc::temporary when the
// database is unreachable ([SYS/TEMP]). Session-level advisory locks stack
// per connection: two sessions of one server are kept apart by the local
// lock, as before. Used by SharedLockOpener in a single-process server and
// by the auth process on the network workers' behalf (ipc::AuthService,
// which tracks which worker holds what).
//
// If the lock connection drops (PostgreSQL restarted) the server's locks
// are gone; the next lock operation reconnects and takes the locks still
// held here again (logged as an error where another server got one
// meanwhile). A lock that cannot be released drops the connection (and so
// every lock of this process) rather than keeping a user out everywhere.
// Thread-safe (one mutex around the lock connection).
class MaildropLocks final : public pop3::MaildropLocks {
 public:
  explicit MaildropLocks(std::string url);
  ~MaildropLocks() override;
  MaildropLocks(const MaildropLocks&) = delete;
  MaildropLocks& operator=(const MaildropLocks&) = delete;
  Result<bool> try_lock(std::string_view user) override;
  void release(std::string_view user) override;
  // Locks currently held (counting each stacked one), for tests.
  std::size_t held() const;

 private:
  Result<void> ensure_connected_locked();
  Result<bool> try_lock_locked(const std::string& user);
  const std::string url_;
  mutable std::mutex mu_;
  pg_conn* conn_ = nullptr;
  std::map<std::string, unsigned, std::less<>> held_;  // user -> locks taken here
};

// Decorates a MaildropOpener (the Maildir one, whose flock stays the local
// lock) with the cluster-wide MaildropLocks (pop3::LockingOpener): taken
// elsewhere -> Errc::in_use ([IN-USE]); database unreachable ->
// Errc::temporary ([SYS/TEMP]). The lock is released when the returned
// Maildrop is destroyed. Thread-safe.
class SharedLockOpener final : public pop3::MaildropOpener {
 public:
  SharedLockOpener(std::string url, pop3::MaildropOpener& inner);
  SharedLockOpener(const SharedLockOpener&) = delete;
  SharedLockOpener& operator=(const SharedLockOpener&) = delete;
  Result<std::unique_ptr<pop3::Maildrop>> open(const pop3::MailboxAddress& where) override {
    return opener_.open(where);
  }
  // Locks currently held through this opener (for tests).
  std::size_t held() const { return locks_.held(); }
  // The lock part alone (the auth process takes locks for its workers).
  MaildropLocks& locks() { return locks_; }

 private:
  MaildropLocks locks_;
  pop3::LockingOpener opener_;
};

}  // namespace apop::pg
