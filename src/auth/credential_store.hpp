// Accounts and their credentials.
//
// An account has one login password and any number of named device secrets.
// The password is kept as (1) a slow hash (scrypt, password_hash.hpp) for
// USER/PASS, PLAIN and LOGIN, (2) SCRAM-SHA-256 and SCRAM-SHA-1 verifiers, and
// (3) unless the account's policy is device-secrets-only, an encrypted copy
// (AES-256-GCM, secret_box.hpp) for APOP and CRAM-MD5, which need a
// plaintext-equivalent. Device secrets (APOP/CRAM-MD5 only) are kept
// encrypted; each can be revoked alone.
//
// Policy: per-account overrides of global defaults (both kept in the store).
//
// Implementations: SqliteCredentialStore (sqlite_credential_store.hpp),
// pg::PgCredentialStore (pg/shared.hpp) and MemoryCredentialStore
// (memory_credential_store.hpp), on the domain logic they share
// (account_codec.hpp).
//
// Thread-safety: implementations are thread-safe; every method may be called
// concurrently on one store. Returned strings are copies owned by the caller;
// secrets are never part of an error message.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/sasl.hpp"
#include "auth/secret_box.hpp"
#include "auth/secret_string.hpp"
#include "common/result.hpp"

namespace apop::auth {

// Login mechanisms, as a bit set.
enum Mechanism : unsigned {
  kMechApop = 1u << 0,
  kMechUser = 1u << 1,  // USER/PASS
  kMechPlain = 1u << 2,
  kMechLogin = 1u << 3,
  kMechCramMd5 = 1u << 4,
  kMechScramSha256 = 1u << 5,
  kMechScramSha1 = 1u << 6,
};
using MechanismSet = unsigned;
inline constexpr MechanismSet kAllMechanisms = (1u << 7) - 1;

// The bit for a protocol name ("APOP", "USER", "PLAIN", "LOGIN", "CRAM-MD5",
// "SCRAM-SHA-256", "SCRAM-SHA-1"; case-insensitive), 0 for others.
MechanismSet mechanism_bit(std::string_view name);
// "apop,scram-sha-256" (comma-separated, case-insensitive, "all" for every
// one). nullopt on an unknown name or an empty list.
std::optional<MechanismSet> parse_mechanisms(std::string_view list);
// Lower-case names, comma-separated, in a fixed order.
std::string format_mechanisms(MechanismSet set);

// Per-account policy; an empty field follows the global default.
struct Policy {
  std::optional<MechanismSet> mechanisms;
  // The account password no longer works for APOP/CRAM-MD5 and its encrypted
  // copy is deleted: only the hash and the SCRAM verifiers remain.
  std::optional<bool> device_secrets_only;
  // APOP and CRAM-MD5 only inside TLS (`apop user policy
  // --md5-challenge-requires-tls`, alias --apop-requires-tls): both are MD5
  // challenge-responses over the same plaintext-equivalent secret, which one
  // sniffed exchange lets an attacker crack offline (RFC 1939 §7's advice,
  // and the CVE-2007-1558 defence for APOP). Stored in the column
  // apop_requires_tls (its name from before CRAM-MD5 was covered; kept so
  // that existing databases need no migration).
  std::optional<bool> md5_challenge_requires_tls;
  // Every mechanism only inside TLS.
  std::optional<bool> require_tls;
  // RFC 2449 LOGIN-DELAY (seconds) and EXPIRE (days, or kExpireNever) of
  // this account. Per account only: their defaults are `apop serve` settings
  // (login_delay, expire), so set_default_policy refuses them (Errc::invalid)
  // and default_policy() leaves them empty.
  std::optional<std::uint32_t> login_delay;
  std::optional<std::int64_t> expire_days;
  bool operator==(const Policy&) const = default;
};

// RFC 2449 §6.7 "EXPIRE NEVER" as a number of days (= pop3::kExpireNever).
inline constexpr std::int64_t kExpireNever = -1;

struct EffectivePolicy {
  MechanismSet mechanisms = kAllMechanisms;
  bool device_secrets_only = false;
  bool md5_challenge_requires_tls = false;
  bool require_tls = false;
};

// Errc::invalid unless login_delay <= limits::kMaxLoginDelay and
// expire_days is kExpireNever or 0..limits::kMaxExpireDays.
Result<void> check_login_limits(const Policy& policy);

// User fields first, then the defaults, then the built-in defaults.
EffectivePolicy resolve_policy(const Policy& user, const Policy& defaults);

struct NamedSecret {
  std::string name;
  SecretString secret;  // plaintext
};

// What the authenticator needs to know of one account. The plaintext fields
// are SecretStrings: wiped on destruction and when moved from.
// An account's own quota limits (store/quota.hpp); a limit that is not set
// is the server's default (quota_bytes / quota_messages), and 0 is
// "unlimited" for this account whatever the default.
struct AccountQuota {
  std::optional<std::uint64_t> bytes;
  std::optional<std::uint64_t> messages;
  friend bool operator==(const AccountQuota&, const AccountQuota&) = default;
};

struct Account {
  std::string name;
  std::string password_hash;  // PHC string (password_hash.hpp)
  ScramVerifier scram_sha256;
  ScramVerifier scram_sha1;
  std::optional<SecretString> password;  // absent under device-secrets-only
  std::vector<NamedSecret> device_secrets;
  EffectivePolicy policy;
  // The account's own LOGIN-DELAY/EXPIRE (empty: the server's defaults) and
  // the time of its last successful login (record_login), unix seconds.
  std::optional<std::uint32_t> login_delay;
  std::optional<std::int64_t> expire_days;
  std::optional<std::int64_t> last_login;
  // The account's own mail location ("mbox:/var/mail/alice",
  // store/mail_location.hpp); empty: the server's default. Read with the rest
  // of the row, so a login costs one lookup.
  std::optional<std::string> mail_location;
  // Its own quota limits (unset: the server's defaults), from the same row.
  AccountQuota quota;
  Account() = default;
  Account(Account&&) = default;
  Account& operator=(Account&&) = default;
  Account(const Account&) = delete;
  Account& operator=(const Account&) = delete;
  ~Account();
};

struct UserRecord {
  std::string name;
  std::int64_t created = 0;  // unix seconds
  std::int64_t updated = 0;  // unix seconds, last add/set_password
  std::size_t device_secrets = 0;
  bool has_password_copy = false;  // the encrypted copy for APOP/CRAM-MD5 exists
  std::string foreign_scheme;      // "SHA512-CRYPT" for an imported hash not yet upgraded
  Policy policy;
  std::optional<std::int64_t> last_login;  // unix seconds, last successful POP3 login
  // The account's own mail location (store/mail_location.hpp), e.g.
  // "mbox:/var/mail/alice"; empty: the server's (apop serve mail_location).
  std::optional<std::string> mail_location;
  AccountQuota quota;  // its own limits; unset: the server's defaults
};

struct DeviceSecretInfo {
  std::string name;
  std::int64_t created = 0;
};

// Device secret names: 1-32 of [A-Za-z0-9._-].
bool is_valid_secret_name(std::string_view name);

// The hash and verifiers of a password (scrypt + two PBKDF2 runs: slow on
// purpose). Errc::temporary if the CSPRNG or a KDF fails.
struct DerivedPassword {
  std::string hash;
  ScramVerifier scram_sha256;
  ScramVerifier scram_sha1;
};
Result<DerivedPassword> derive_password(std::string_view password);

// Verifiers as stored: "ITERATIONS$SALT$STOREDKEY$SERVERKEY" (base64 fields).
std::string encode_verifier(const ScramVerifier& v);
std::optional<ScramVerifier> decode_verifier(std::string_view s);

// What a login reads and writes: the only part of a store on the login
// path (auth::StoreAuthenticator). Account administration is CredentialStore.
class AccountSource {
 public:
  virtual ~AccountSource() = default;
  // Errc::not_found for unknown users (including names that are not valid
  // user names); Errc::permanent if a stored secret cannot be decrypted;
  // Errc::temporary on I/O errors / busy database.
  virtual Result<Account> account(std::string_view user) = 0;
  // Remembers `when` (unix seconds) as the user's last successful login (RFC
  // 2449 LOGIN-DELAY counts from it). One small write per login.
  // Errc::not_found for unknown users.
  virtual Result<void> record_login(std::string_view user, std::int64_t when) = 0;
  // After a correct password checked against an imported foreign hash
  // (foreign_hash.hpp) over TLS: replaces that hash by our own secrets (the
  // scrypt hash, SCRAM verifiers and, policy permitting, the encrypted copy),
  // so APOP, CRAM-MD5 and SCRAM work from now on. Errc::not_found for
  // unknown users.
  virtual Result<void> replace_imported_hash(std::string_view user, std::string_view password) = 0;
};

// Account administration (`apop user ...`, import, the server's start-up
// checks): a store is also the AccountSource its logins read.
class CredentialStore : public AccountSource {
 public:
  Result<void> replace_imported_hash(std::string_view user, std::string_view password) final {
    return set_password(user, password);
  }
  // Cheap existence check (no decryption).
  virtual Result<bool> has_user(std::string_view user) = 0;
  // Errc::exists if the user exists, Errc::invalid if !is_valid_username(user).
  // The password is stored as given: strength checks are the caller's business.
  virtual Result<void> add(std::string_view user, std::string_view password) = 0;
  // Errc::not_found for unknown users. Errc::invalid if the password equals
  // one of the user's device secrets.
  virtual Result<void> set_password(std::string_view user, std::string_view password) = 0;
  // An imported account whose login password is a foreign hash
  // (foreign_hash.hpp, already normalised): USER/PASS, PLAIN and LOGIN only;
  // no SCRAM verifiers, no encrypted copy (APOP/CRAM-MD5 get nothing) until
  // set_password. With replace, an existing account's password is
  // overwritten (device secrets and policy stay); without, Errc::exists.
  // Errc::invalid for a bad user name or a hash that is not foreign.
  virtual Result<void> import_foreign_hash(std::string_view user, std::string_view hash,
                                           bool replace) = 0;
  // Errc::not_found for unknown users. Device secrets go with the account.
  virtual Result<void> remove(std::string_view user) = 0;
  // All users, sorted by name (bytewise).
  virtual Result<std::vector<UserRecord>> list() = 0;

  // Errc::exists for a name in use, Errc::invalid for a bad name or a secret
  // equal to the account password (checked against the hash) or empty.
  virtual Result<void> add_device_secret(std::string_view user, std::string_view name,
                                         std::string_view secret) = 0;
  virtual Result<std::vector<DeviceSecretInfo>> device_secrets(std::string_view user) = 0;
  // Errc::not_found for an unknown user or secret name.
  virtual Result<void> revoke_device_secret(std::string_view user, std::string_view name) = 0;

  virtual Result<Policy> policy(std::string_view user) = 0;
  // When the effective policy becomes device-secrets-only, the encrypted copy
  // of the password is deleted (it comes back only with a new password).
  virtual Result<void> set_policy(std::string_view user, const Policy& policy) = 0;
  virtual Result<Policy> default_policy() = 0;
  // Deletes the copies of every account that becomes device-secrets-only.
  // Errc::invalid if login_delay or expire_days is set (per account only).
  virtual Result<void> set_default_policy(const Policy& policy) = 0;

  // The account's own mail location ("mbox:/var/mail/alice", see
  // store/mail_location.hpp); nullopt: the server's default. Stored as given
  // (the caller validates it). Errc::not_found for unknown users.
  virtual Result<std::optional<std::string>> mail_location(std::string_view user) = 0;
  virtual Result<void> set_mail_location(std::string_view user,
                                         const std::optional<std::string>& location) = 0;

  // The account's own quota limits (AccountQuota). Errc::not_found for
  // unknown users; Errc::invalid for a limit above 2^63-1.
  virtual Result<AccountQuota> quota(std::string_view user) = 0;
  virtual Result<void> set_quota(std::string_view user, const AccountQuota& quota) = 0;
};

}  // namespace apop::auth
