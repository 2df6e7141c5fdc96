// PgCredentialStore: the CredentialStore contract over PostgreSQL, statement
// for statement the SQLite store's (sqlite_credential_store.cpp), with
// parameters only (PQexecParams) and a connection from the pool per call.
// It only moves rows: the domain logic (sealing, associated data, the
// keep-a-copy policy, device-secret checks, the dummy secret of unknown
// users, the key check) is auth/account_codec.hpp, shared with the SQLite
// store, so a database can be copied between the two with its secrets
// intact.
#include <ctime>

#include "auth/account_codec.hpp"
#include "auth/foreign_hash.hpp"
#include "auth/username.hpp"
#include "pg/shared.hpp"

namespace apop::pg {

using auth::no_such_user;
using auth::Policy;

namespace {

std::int64_t now() { return static_cast<std::int64_t>(std::time(nullptr)); }

// Row `row` of a result, as auth/account_codec.hpp's templates read it.
struct PgRow {
  const Rows& r;
  int row = 0;
  bool is_null(int c) const { return r.is_null(row, c); }
  std::string text(int c) const { return r.text(row, c); }
  std::string blob(int c) const { return r.bytea(row, c); }
  std::int64_t integer(int c) const { return r.integer(row, c); }
  std::optional<std::int64_t> opt_integer(int c) const { return r.opt_integer(row, c); }
  std::optional<bool> opt_boolean(int c) const { return r.opt_boolean(row, c); }
};

Param opt_text(const std::optional<std::string>& v) { return v ? Param::text(*v) : Param::null(); }

// The parameters of the policy columns (auth::PolicyColumns order): the
// four of a default policy, the six of an account's.
void push_policy(std::vector<Param>& ps, const auth::PolicyColumns& c, bool own) {
  ps.push_back(opt_text(c.mechanisms));
  ps.push_back(Param::opt_boolean(c.device_secrets_only));
  ps.push_back(Param::opt_boolean(c.apop_requires_tls));
  ps.push_back(Param::opt_boolean(c.require_tls));
  if (own) {
    ps.push_back(Param::opt_integer(c.login_delay));
    ps.push_back(Param::opt_integer(c.expire_days));
  }
}

std::vector<auth::SealedDevice> sealed_devices(const Rows& r) {
  std::vector<auth::SealedDevice> out;
  for (int i = 0; i < r.size(); ++i) out.push_back({r.text(i, 0), r.bytea(i, 1)});
  return out;
}

// Version 1: the accounts, as the SQLite schema version 3.
constexpr const char* kCreateV1 =
    "CREATE TABLE users ("
    " name text PRIMARY KEY,"
    " created bigint NOT NULL,"
    " updated bigint NOT NULL,"
    " password_hash text NOT NULL,"
    " scram_sha256 text NOT NULL,"
    " scram_sha1 text NOT NULL,"
    " sealed_password bytea,"  // NULL under device-secrets-only
    " mechanisms text,"        // NULL: the default
    " device_secrets_only boolean,"
    " apop_requires_tls boolean,"
    " require_tls boolean,"
    " login_delay bigint,"
    " expire_days bigint,"
    " last_login bigint);"
    "CREATE TABLE device_secrets ("
    " user_name text NOT NULL REFERENCES users(name) ON DELETE CASCADE,"
    " name text NOT NULL,"
    " sealed bytea NOT NULL,"
    " created bigint NOT NULL,"
    " PRIMARY KEY (user_name, name));"
    "CREATE TABLE policy_defaults ("
    " id integer PRIMARY KEY CHECK (id = 1),"
    " mechanisms text,"
    " device_secrets_only boolean,"
    " apop_requires_tls boolean,"
    " require_tls boolean);"
    "INSERT INTO policy_defaults (id) VALUES (1);"
    // A value sealed with the servers' secret.key: a tool run with another
    // key (a data directory without the right secret.key) is refused
    // instead of sealing secrets no server can open.
    "CREATE TABLE key_check ("
    " id integer PRIMARY KEY CHECK (id = 1),"
    " sealed bytea NOT NULL);";

// Version 2: the failed-login state shared by the servers (PgFailureTracker).
constexpr const char* kCreateV2 =
    "CREATE TABLE auth_failures ("
    " kind char(1) NOT NULL,"  // 'a': client address, 'u': user name (lowercased)
    " key text NOT NULL,"
    " at_ms bigint NOT NULL);"
    "CREATE INDEX auth_failures_key ON auth_failures (kind, key, at_ms);"
    "CREATE INDEX auth_failures_at ON auth_failures (at_ms);"
    "CREATE TABLE auth_blocks ("
    " address text PRIMARY KEY,"
    " until_ms bigint NOT NULL);"
    "CREATE TABLE auth_good ("
    " user_key text NOT NULL,"
    " address text NOT NULL,"
    " until_ms bigint NOT NULL,"
    " PRIMARY KEY (user_key, address));";

// Version 3: an account's own mail location (SQLite schema version 4).
constexpr const char* kCreateV3 = "ALTER TABLE users ADD COLUMN mail_location text;";

// Version 4: an account's own quota limits (SQLite schema version 6; NULL:
// the server's defaults, 0: unlimited).
constexpr const char* kCreateV4 =
    "ALTER TABLE users ADD COLUMN quota_bytes bigint;"
    "ALTER TABLE users ADD COLUMN quota_messages bigint;";

// An arbitrary constant: the advisory lock that serialises schema changes.
constexpr const char* kMigrationLock = "SELECT pg_advisory_xact_lock(7013390481632150617)";

Result<Policy> default_policy_on(pg_conn* c) {
  auto r = exec(c,
                "SELECT mechanisms, device_secrets_only, apop_requires_tls, require_tls"
                " FROM policy_defaults WHERE id = 1",
                {}, "reading default policy");
  if (!r) return r.error();
  if (r->size() == 0) return Policy{};
  return auth::read_policy(PgRow{*r}, 0);
}

Result<Policy> user_policy_on(pg_conn* c, std::string_view user) {
  auto r = exec(c,
                "SELECT mechanisms, device_secrets_only, apop_requires_tls, require_tls,"
                " login_delay, expire_days FROM users WHERE name = $1",
                {Param::text(user)}, "reading policy");
  if (!r) return r.error();
  if (r->size() == 0) return no_such_user(user);
  return auth::read_own_policy(PgRow{*r}, 0);
}

// Runs `sql`, an INSERT or UPDATE of users whose parameters are $1 the
// name, $2 now and $3-$6 the new password's columns (hash, verifiers,
// sealed copy). The copy is kept as the policies say: the defaults and,
// for an `existing` account, its own.
Result<Rows> write_password(pg_conn* c, const char* sql, std::string_view user,
                            const auth::SealedPassword& sealed, bool existing,
                            std::string_view what) {
  auto defaults = default_policy_on(c);
  if (!defaults) return defaults.error();
  Policy own;
  if (existing) {
    auto p = user_policy_on(c, user);
    if (!p) return p.error();
    own = *p;
  }
  const auto copy = sealed.copy_for(own, *defaults);
  return exec(c, sql,
              {Param::text(user), Param::integer(now()), Param::text(sealed.hash),
               Param::text(sealed.scram_sha256), Param::text(sealed.scram_sha1),
               copy ? Param::bytes(*copy) : Param::null()},
              what);
}

// Deletes the encrypted copy of every account whose effective policy is
// device-secrets-only.
Result<void> drop_copies_on(pg_conn* c) {
  auto defaults = default_policy_on(c);
  if (!defaults) return defaults.error();
  auto r = exec(c,
                "UPDATE users SET sealed_password = NULL WHERE sealed_password IS NOT NULL"
                " AND COALESCE(device_secrets_only, $1::boolean)",
                {Param::boolean(defaults->device_secrets_only.value_or(false))},
                "deleting password copies");
  if (!r) return r.error();
  return {};
}

// The key check (auth::check_key): present, it must open
// with the key; absent (a schema created by a command run without the key),
// one stored secret if any must open, then the check is written.
Result<void> check_key_on(pg_conn* c, const auth::SecretBox& box) {
  auth::KeySample sample;
  auto r = exec(c, "SELECT sealed FROM key_check WHERE id = 1", {}, "reading the key check");
  if (!r) return r.error();
  if (r->size() > 0) {
    sample.check = r->bytea(0, 0);
  } else {
    auto pw = exec(c,
                   "SELECT name, sealed_password FROM users WHERE sealed_password IS NOT NULL"
                   " LIMIT 1",
                   {}, "reading the key check");
    if (!pw) return pw.error();
    if (pw->size() > 0) sample.password.emplace(pw->text(0, 0), pw->bytea(0, 1));
    auto dev = exec(c, "SELECT user_name, name, sealed FROM device_secrets LIMIT 1", {},
                    "reading the key check");
    if (!dev) return dev.error();
    if (dev->size() > 0) {
      sample.device.emplace(dev->text(0, 0), auth::SealedDevice{dev->text(0, 1), dev->bytea(0, 2)});
    }
  }
  auto check = auth::check_key(box, sample, "the PostgreSQL account database");
  if (!check) return check.error();
  if (!*check) return {};
  auto ins = exec(c, "INSERT INTO key_check (id, sealed) VALUES (1, $1) ON CONFLICT DO NOTHING",
                  {Param::bytes(**check)}, "writing the key check");
  if (!ins) return ins.error();
  return {};
}

}  // namespace

Result<int> schema_version(Pool& pool) {
  auto lease = pool.acquire();
  if (!lease) return lease.error();
  auto r = exec(lease->get(),
                "SELECT CASE WHEN to_regclass('schema_version') IS NULL THEN 0"
                " ELSE (SELECT COALESCE(max(version), 0) FROM schema_version) END",
                {}, "reading schema version");
  if (!r) return r.error();
  return static_cast<int>(r->integer(0, 0));
}

Result<void> migrate(Pool& pool, const auth::SecretBox* box) {
  auto lease = pool.acquire();
  if (!lease) return lease.error();
  pg_conn* c = lease->get();
  Transaction tx(c);
  if (auto r = tx.begin(); !r) return r;
  if (auto r = exec(c, kMigrationLock, {}, "locking the schema"); !r) return r.error();
  if (auto r =
          exec_script(c, "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)",
                      "creating schema_version");
      !r) {
    return r;
  }
  auto v =
      exec(c, "SELECT COALESCE(max(version), 0) FROM schema_version", {}, "reading schema version");
  if (!v) return v.error();
  const auto version = v->integer(0, 0);
  if (version > kSchemaVersion) {
    return make_error(Errc::permanent, "PostgreSQL credential database has schema version " +
                                           std::to_string(version) +
                                           ", newer than this apop supports (" +
                                           std::to_string(kSchemaVersion) + ")");
  }
  if (version < 1) {
    if (auto r = exec_script(c, kCreateV1, "creating schema version 1"); !r) return r;
  }
  if (version < 2) {
    if (auto r = exec_script(c, kCreateV2, "upgrading schema to version 2"); !r) return r;
  }
  if (version < 3) {
    if (auto r = exec_script(c, kCreateV3, "upgrading schema to version 3"); !r) return r;
  }
  if (version < 4) {
    if (auto r = exec_script(c, kCreateV4, "upgrading schema to version 4"); !r) return r;
  }
  if (version < kSchemaVersion) {
    if (auto r = exec(c, "DELETE FROM schema_version", {}, "writing schema version"); !r) {
      return r.error();
    }
    if (auto r = exec(c, "INSERT INTO schema_version (version) VALUES ($1)",
                      {Param::integer(kSchemaVersion)}, "writing schema version");
        !r) {
      return r.error();
    }
  }
  // In the same transaction: a wrong key rolls the upgrade back too.
  if (box != nullptr && box->has_key()) {
    if (auto r = check_key_on(c, *box); !r) return r;
  }
  return tx.commit();
}

PgCredentialStore::PgCredentialStore(std::shared_ptr<Pool> pool, auth::SecretBox box)
    : pool_(std::move(pool)), codec_(std::move(box)) {}

Result<std::unique_ptr<PgCredentialStore>> PgCredentialStore::open(std::shared_ptr<Pool> pool,
                                                                   auth::SecretBox box) {
  // The schema, and the key check in the same transaction (skipped by a box
  // without a key: `apop deliver` reads no secret).
  if (auto r = migrate(*pool, &box); !r) return r.error();
  return std::unique_ptr<PgCredentialStore>(new PgCredentialStore(std::move(pool), std::move(box)));
}

Result<bool> PgCredentialStore::holds_sealed_secrets(Pool& pool) {
  auto lease = pool.acquire();
  if (!lease) return lease.error();
  pg_conn* c = lease->get();
  auto t = exec(c, "SELECT to_regclass('key_check') IS NOT NULL", {}, "reading the key check");
  if (!t) return t.error();
  if (!t->opt_boolean(0, 0).value_or(false)) return false;
  auto r = exec(c,
                "SELECT EXISTS (SELECT 1 FROM key_check)"
                " OR EXISTS (SELECT 1 FROM users WHERE sealed_password IS NOT NULL)"
                " OR EXISTS (SELECT 1 FROM device_secrets)",
                {}, "reading the key check");
  if (!r) return r.error();
  return r->opt_boolean(0, 0).value_or(false);
}

Result<auth::Account> PgCredentialStore::account(std::string_view user) {
  if (!auth::is_valid_username(user)) return codec_.unknown_user(user);
  std::optional<auth::AccountRow> row;
  Policy defaults;
  std::vector<auth::SealedDevice> devices;
  {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    pg_conn* c = lease->get();
    auto d = default_policy_on(c);
    if (!d) return d.error();
    defaults = *d;
    auto r =
        exec(c,
             "SELECT password_hash, scram_sha256, scram_sha1, sealed_password,"
             " mechanisms, device_secrets_only, apop_requires_tls, require_tls,"
             " login_delay, expire_days, last_login, mail_location, quota_bytes, quota_messages"
             " FROM users WHERE name = $1",
             {Param::text(user)}, "looking up user");
    if (!r) return r.error();
    // An unknown user runs the same queries as a known one (the device
    // secrets' query finds nothing) and costs one decryption (of a dummy,
    // AccountCodec::unknown_user) like a known user's password copy (issue
    // 17 item 11).
    if (r->size() > 0) row = auth::read_account_row(PgRow{*r});
    auto dev = exec(c, "SELECT name, sealed FROM device_secrets WHERE user_name = $1 ORDER BY name",
                    {Param::text(user)}, "looking up device secrets");
    if (!dev) return dev.error();
    devices = sealed_devices(*dev);
  }
  if (!row) return codec_.unknown_user(user);
  return codec_.unseal(user, std::move(*row), defaults, devices);
}

Result<bool> PgCredentialStore::has_user(std::string_view user) {
  if (!auth::is_valid_username(user)) return false;
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r = exec(lease->get(), "SELECT 1 FROM users WHERE name = $1", {Param::text(user)},
                "looking up user");
  if (!r) return r.error();
  return r->size() > 0;
}

Result<void> PgCredentialStore::add(std::string_view user, std::string_view password) {
  if (!auth::is_valid_username(user)) return auth::invalid_user_name(user);
  auto sealed = codec_.seal_password(user, password);
  if (!sealed) return sealed.error();
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r = write_password(lease->get(),
                          "INSERT INTO users (name, created, updated, password_hash,"
                          " scram_sha256, scram_sha1, sealed_password)"
                          " VALUES ($1, $2, $2, $3, $4, $5, $6)",
                          user, *sealed, false, "adding user");
  if (!r && r.error().code == Errc::exists) return auth::user_exists(user);
  if (!r) return r.error();
  return {};
}

Result<void> PgCredentialStore::set_password(std::string_view user, std::string_view password) {
  if (!auth::is_valid_username(user)) return no_such_user(user);
  {
    // As in the SQLite store: only the device secrets matter here.
    std::vector<auth::SealedDevice> devices;
    {
      auto lease = pool_->acquire();
      if (!lease) return lease.error();
      auto dev = exec(lease->get(), "SELECT name, sealed FROM device_secrets WHERE user_name = $1",
                      {Param::text(user)}, "looking up device secrets");
      if (!dev) return dev.error();
      devices = sealed_devices(*dev);
    }
    if (auto r = codec_.check_differs_from_devices(user, password, devices); !r) return r;
  }
  auto sealed = codec_.seal_password(user, password);
  if (!sealed) return sealed.error();
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r = write_password(lease->get(),
                          "UPDATE users SET updated = $2, password_hash = $3, scram_sha256 = $4,"
                          " scram_sha1 = $5, sealed_password = $6 WHERE name = $1",
                          user, *sealed, true, "changing password");
  if (!r) return r.error();
  if (r->affected() == 0) return no_such_user(user);
  return {};
}

Result<void> PgCredentialStore::remove(std::string_view user) {
  if (!auth::is_valid_username(user)) return no_such_user(user);
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r =
      exec(lease->get(), "DELETE FROM users WHERE name = $1", {Param::text(user)}, "removing user");
  if (!r) return r.error();
  if (r->affected() == 0) return no_such_user(user);
  return {};
}

Result<std::vector<auth::UserRecord>> PgCredentialStore::list() {
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  // COLLATE "C": bytewise order, as the SQLite store and the contract say.
  auto r = exec(lease->get(),
                "SELECT name, created, updated,"
                " (SELECT count(*) FROM device_secrets d WHERE d.user_name = users.name),"
                " sealed_password IS NOT NULL,"
                " mechanisms, device_secrets_only, apop_requires_tls, require_tls,"
                " login_delay, expire_days, last_login, password_hash, mail_location,"
                " quota_bytes, quota_messages"
                " FROM users ORDER BY name COLLATE \"C\"",
                {}, "listing users");
  if (!r) return r.error();
  std::vector<auth::UserRecord> out;
  for (int i = 0; i < r->size(); ++i) out.push_back(auth::read_user_record(PgRow{*r, i}));
  return out;
}

Result<void> PgCredentialStore::add_device_secret(std::string_view user, std::string_view name,
                                                  std::string_view secret) {
  if (auto r = auth::check_new_device_secret(name, secret); !r) return r;
  if (!auth::is_valid_username(user)) return no_such_user(user);
  std::string hash;
  {
    auto lease = pool_->acquire();
    if (!lease) return lease.error();
    auto r = exec(lease->get(), "SELECT password_hash FROM users WHERE name = $1",
                  {Param::text(user)}, "looking up user");
    if (!r) return r.error();
    if (r->size() == 0) return no_such_user(user);
    hash = r->text(0, 0);
  }
  if (auto r = auth::check_differs_from_password(hash, secret); !r) return r;
  auto sealed = codec_.seal_device_secret(user, name, secret);
  if (!sealed) return sealed.error();
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r =
      exec(lease->get(),
           "INSERT INTO device_secrets (user_name, name, sealed, created)"
           " VALUES ($1, $2, $3, $4)",
           {Param::text(user), Param::text(name), Param::bytes(*sealed), Param::integer(now())},
           "adding device secret");
  if (!r && r.error().code == Errc::exists) return auth::device_secret_exists(name);
  if (!r && r.error().code == Errc::not_found) return no_such_user(user);
  if (!r) return r.error();
  return {};
}

Result<std::vector<auth::DeviceSecretInfo>> PgCredentialStore::device_secrets(
    std::string_view user) {
  auto exists = has_user(user);
  if (!exists) return exists.error();
  if (!*exists) return no_such_user(user);
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r = exec(lease->get(),
                "SELECT name, created FROM device_secrets WHERE user_name = $1"
                " ORDER BY name COLLATE \"C\"",
                {Param::text(user)}, "listing device secrets");
  if (!r) return r.error();
  std::vector<auth::DeviceSecretInfo> out;
  for (int i = 0; i < r->size(); ++i) out.push_back({r->text(i, 0), r->integer(i, 1)});
  return out;
}

Result<void> PgCredentialStore::revoke_device_secret(std::string_view user, std::string_view name) {
  auto exists = has_user(user);
  if (!exists) return exists.error();
  if (!*exists) return no_such_user(user);
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r = exec(lease->get(), "DELETE FROM device_secrets WHERE user_name = $1 AND name = $2",
                {Param::text(user), Param::text(name)}, "revoking device secret");
  if (!r) return r.error();
  if (r->affected() == 0) return auth::no_such_device_secret(name);
  return {};
}

Result<Policy> PgCredentialStore::policy(std::string_view user) {
  if (!auth::is_valid_username(user)) return no_such_user(user);
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  return user_policy_on(lease->get(), user);
}

Result<void> PgCredentialStore::set_policy(std::string_view user, const Policy& policy) {
  if (!auth::is_valid_username(user)) return no_such_user(user);
  if (auto r = auth::check_login_limits(policy); !r) return r;
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  pg_conn* c = lease->get();
  Transaction tx(c);
  if (auto r = tx.begin(); !r) return r;
  std::vector<Param> ps{Param::text(user)};
  push_policy(ps, auth::policy_columns(policy), true);
  auto r = exec(c,
                "UPDATE users SET mechanisms = $2, device_secrets_only = $3,"
                " apop_requires_tls = $4, require_tls = $5, login_delay = $6,"
                " expire_days = $7 WHERE name = $1",
                ps, "setting policy");
  if (!r) return r.error();
  if (r->affected() == 0) return no_such_user(user);
  if (auto d = drop_copies_on(c); !d) return d;
  return tx.commit();
}

Result<Policy> PgCredentialStore::default_policy() {
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  return default_policy_on(lease->get());
}

Result<void> PgCredentialStore::set_default_policy(const Policy& policy) {
  if (auto r = auth::check_default_policy(policy); !r) return r;
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  pg_conn* c = lease->get();
  Transaction tx(c);
  if (auto r = tx.begin(); !r) return r;
  std::vector<Param> ps;
  push_policy(ps, auth::policy_columns(policy), false);
  auto r = exec(c,
                "UPDATE policy_defaults SET mechanisms = $1, device_secrets_only = $2,"
                " apop_requires_tls = $3, require_tls = $4 WHERE id = 1",
                ps, "setting default policy");
  if (!r) return r.error();
  if (auto d = drop_copies_on(c); !d) return d;
  return tx.commit();
}

Result<void> PgCredentialStore::record_login(std::string_view user, std::int64_t when) {
  if (!auth::is_valid_username(user)) return no_such_user(user);
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r = exec(lease->get(), "UPDATE users SET last_login = $2 WHERE name = $1",
                {Param::text(user), Param::integer(when)}, "recording login");
  if (!r) return r.error();
  if (r->affected() == 0) return no_such_user(user);
  return {};
}

// As the SQLite store: the foreign hash goes into password_hash; empty
// verifier columns decode to unusable verifiers, so SCRAM fails as for a
// wrong password, and no sealed copy means no APOP/CRAM-MD5 until the
// first plaintext login upgrades the account.
Result<void> PgCredentialStore::import_foreign_hash(std::string_view user, std::string_view hash,
                                                    bool replace) {
  if (!auth::is_valid_username(user)) return auth::invalid_user_name(user);
  if (!auth::is_foreign_hash(hash)) return make_error(Errc::invalid, "not an imported hash");
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  const char* sql = replace
                        ? "INSERT INTO users (name, created, updated, password_hash, scram_sha256,"
                          " scram_sha1, sealed_password) VALUES ($1, $2, $2, $3, '', '', NULL)"
                          " ON CONFLICT (name) DO UPDATE SET updated = $2, password_hash = $3,"
                          " scram_sha256 = '', scram_sha1 = '', sealed_password = NULL"
                        : "INSERT INTO users (name, created, updated, password_hash, scram_sha256,"
                          " scram_sha1, sealed_password) VALUES ($1, $2, $2, $3, '', '', NULL)";
  auto r = exec(lease->get(), sql, {Param::text(user), Param::integer(now()), Param::text(hash)},
                "importing user");
  if (!r && r.error().code == Errc::exists) return auth::user_exists(user);
  if (!r) return r.error();
  return {};
}

Result<std::optional<std::string>> PgCredentialStore::mail_location(std::string_view user) {
  if (!auth::is_valid_username(user)) return no_such_user(user);
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r = exec(lease->get(), "SELECT mail_location FROM users WHERE name = $1",
                {Param::text(user)}, "reading mail location");
  if (!r) return r.error();
  if (r->size() == 0) return no_such_user(user);
  if (r->is_null(0, 0)) return std::optional<std::string>{};
  return std::optional<std::string>{r->text(0, 0)};
}

Result<void> PgCredentialStore::set_mail_location(std::string_view user,
                                                  const std::optional<std::string>& location) {
  if (!auth::is_valid_username(user)) return no_such_user(user);
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r = exec(lease->get(), "UPDATE users SET mail_location = $2 WHERE name = $1",
                {Param::text(user), opt_text(location)}, "setting mail location");
  if (!r) return r.error();
  if (r->affected() == 0) return no_such_user(user);
  return {};
}

Result<auth::AccountQuota> PgCredentialStore::quota(std::string_view user) {
  if (!auth::is_valid_username(user)) return no_such_user(user);
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r = exec(lease->get(), "SELECT quota_bytes, quota_messages FROM users WHERE name = $1",
                {Param::text(user)}, "reading quota");
  if (!r) return r.error();
  if (r->size() == 0) return no_such_user(user);
  return auth::quota_columns(r->opt_integer(0, 0), r->opt_integer(0, 1));
}

Result<void> PgCredentialStore::set_quota(std::string_view user, const auth::AccountQuota& quota) {
  if (!auth::is_valid_username(user)) return no_such_user(user);
  if (auto ok = auth::check_quota(quota); !ok) return ok;
  auto lease = pool_->acquire();
  if (!lease) return lease.error();
  auto r =
      exec(lease->get(), "UPDATE users SET quota_bytes = $2, quota_messages = $3 WHERE name = $1",
           {Param::text(user), Param::opt_integer(quota.bytes), Param::opt_integer(quota.messages)},
           "setting quota");
  if (!r) return r.error();
  if (r->affected() == 0) return no_such_user(user);
  return {};
}

}  // namespace apop::pg
