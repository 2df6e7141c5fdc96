// The credential domain logic of the stores, written once: what a store keeps
// of an account (a row with its secrets sealed) and how it becomes the
// auth::Account a login reads. The SQLite and PostgreSQL stores only move
// rows (SQL in, AccountRow out) and call this; the memory store keeps the
// same rows in a map.
//
//  - Associated data (AES-256-GCM, secret_box.hpp), byte for byte what
//    existing databases hold: a password copy is sealed with the user name,
//    a device secret with user NUL "device" NUL name. A sealed secret copied
//    onto another row does not open.
//  - Keep-a-copy policy: under device-secrets-only (the account's own policy,
//    else the default) no encrypted copy of the password is stored.
//  - Unknown users cost one decryption too (of a dummy), like a known user's
//    password copy (issue 17 item 11).
//  - Device secrets: a valid name, not empty, not the account password
//    (checked against the hash); a new password must not equal one of them.
//  - The key check of a store opened with a key (SecretBox::seal_key_check).
//  - The error texts of the CredentialStore contract.
//
// Rows are read through a column accessor (template parameter Row) with
//   bool is_null(int) const;            std::string text(int) const;
//   std::string blob(int) const;        std::int64_t integer(int) const;
//   std::optional<std::int64_t> opt_integer(int) const;
//   std::optional<bool> opt_boolean(int) const;
// (auth/sqlite_db.hpp's sqlite::Row, pg/credential_store.cpp's PgRow).
//
// Thread-safety: AccountCodec is immutable after construction (SecretBox's
// seal/open are const and thread-safe); the free functions are pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/credential_store.hpp"
#include "auth/foreign_hash.hpp"
#include "auth/secret_box.hpp"
#include "common/result.hpp"

namespace apop::auth {

// --- Associated data ------------------------------------------------------------

// Of an account's password copy: the user name.
constexpr std::string_view password_aad(std::string_view user) { return user; }
// Of a device secret: user NUL "device" NUL name.
std::string device_aad(std::string_view user, std::string_view name);

// --- Error texts of the contract -------------------------------------------------

Error no_such_user(std::string_view user);           // Errc::not_found
Error invalid_user_name(std::string_view user);      // Errc::invalid
Error user_exists(std::string_view user);            // Errc::exists
Error device_secret_exists(std::string_view name);   // Errc::exists
Error no_such_device_secret(std::string_view name);  // Errc::not_found

// --- Checks ------------------------------------------------------------------------

// Errc::invalid when the default policy sets LOGIN-DELAY or EXPIRE (per
// account only: their defaults are `apop serve` settings).
Result<void> check_default_policy(const Policy& policy);
// Errc::invalid for a bad device secret name or an empty secret.
Result<void> check_new_device_secret(std::string_view name, std::string_view secret);
// Errc::invalid when `secret` is the account password (`password_hash`, a
// PHC or imported hash): slow on purpose, one hash verification.
Result<void> check_differs_from_password(std::string_view password_hash, std::string_view secret);

// Whether an account keeps the encrypted copy of its password: not under
// device-secrets-only (its own policy, else the default).
bool keeps_password_copy(const Policy& own, const Policy& defaults);

// --- Rows --------------------------------------------------------------------------

// A device secret as stored.
struct SealedDevice {
  std::string name;
  std::string sealed;
};

// An account as stored (table users), its secrets sealed.
struct AccountRow {
  std::string password_hash;  // PHC string, or an imported "{SCHEME}..." hash
  std::string scram_sha256;   // encode_verifier(); empty for an imported hash
  std::string scram_sha1;
  std::optional<std::string> sealed_password;  // absent: no copy kept
  Policy policy;                               // the account's own, with its LOGIN-DELAY and EXPIRE
  std::optional<std::int64_t> last_login;
  std::optional<std::string> mail_location;
  AccountQuota quota;
};

// A new password as stored: the hash, the encoded verifiers and the sealed
// copy, which copy_for() keeps or not.
struct SealedPassword {
  std::string hash;
  std::string scram_sha256;
  std::string scram_sha1;
  std::string sealed_copy;
  // The copy to store for an account with these policies; nullopt under
  // device-secrets-only.
  std::optional<std::string_view> copy_for(const Policy& own, const Policy& defaults) const {
    if (!keeps_password_copy(own, defaults)) return std::nullopt;
    return sealed_copy;
  }
};

// The policy columns as stored, in this order: mechanisms (text, NULL: the
// default), device_secrets_only, apop_requires_tls (the column of
// Policy::md5_challenge_requires_tls, named before CRAM-MD5 was covered),
// require_tls, then, per account only, login_delay and expire_days.
struct PolicyColumns {
  std::optional<std::string> mechanisms;
  std::optional<bool> device_secrets_only;
  std::optional<bool> apop_requires_tls;
  std::optional<bool> require_tls;
  std::optional<std::int64_t> login_delay;
  std::optional<std::int64_t> expire_days;
};
PolicyColumns policy_columns(const Policy& policy);

// Stored quota limits: a negative value (never written) reads as unset.
AccountQuota quota_columns(std::optional<std::int64_t> bytes, std::optional<std::int64_t> messages);
// Errc::invalid when a limit does not fit a signed 64-bit column.
Result<void> check_quota(const AccountQuota& quota);

// A stored login_delay: out of range (not 0..2^32-1) reads as unset.
std::optional<std::uint32_t> login_delay_column(std::optional<std::int64_t> stored);

// The four policy columns from `first` on (PolicyColumns order).
template <class Row>
Policy read_policy(const Row& r, int first) {
  Policy p;
  if (!r.is_null(first)) p.mechanisms = parse_mechanisms(r.text(first));
  p.device_secrets_only = r.opt_boolean(first + 1);
  p.md5_challenge_requires_tls = r.opt_boolean(first + 2);
  p.require_tls = r.opt_boolean(first + 3);
  return p;
}

// The six columns of an account's own policy from `first` on.
template <class Row>
Policy read_own_policy(const Row& r, int first) {
  Policy p = read_policy(r, first);
  p.login_delay = login_delay_column(r.opt_integer(first + 4));
  p.expire_days = r.opt_integer(first + 5);
  return p;
}

// An AccountRow from the columns password_hash, scram_sha256, scram_sha1,
// sealed_password, the six own-policy columns, last_login, mail_location,
// quota_bytes, quota_messages (14 columns from `first` on).
inline constexpr int kAccountRowColumns = 14;
template <class Row>
AccountRow read_account_row(const Row& r, int first = 0) {
  AccountRow a;
  a.password_hash = r.text(first);
  a.scram_sha256 = r.text(first + 1);
  a.scram_sha1 = r.text(first + 2);
  if (!r.is_null(first + 3)) a.sealed_password = r.blob(first + 3);
  a.policy = read_own_policy(r, first + 4);
  a.last_login = r.opt_integer(first + 10);
  if (!r.is_null(first + 11)) a.mail_location = r.text(first + 11);
  a.quota = quota_columns(r.opt_integer(first + 12), r.opt_integer(first + 13));
  return a;
}

// A UserRecord from the columns name, created, updated, the number of
// device secrets, whether a password copy is stored, the six own-policy
// columns, last_login, password_hash, mail_location, quota_bytes,
// quota_messages (16 columns).
template <class Row>
UserRecord read_user_record(const Row& r) {
  UserRecord u;
  u.name = r.text(0);
  u.created = r.integer(1);
  u.updated = r.integer(2);
  u.device_secrets = static_cast<std::size_t>(r.integer(3));
  u.has_password_copy = r.opt_boolean(4).value_or(false);
  u.policy = read_own_policy(r, 5);
  u.last_login = r.opt_integer(11);
  u.foreign_scheme = foreign_scheme(r.text(12));
  if (!r.is_null(13)) u.mail_location = r.text(13);
  u.quota = quota_columns(r.opt_integer(14), r.opt_integer(15));
  return u;
}

// What a store opened with a key finds for the key check: the stored check
// value, and (a database without one yet) one password copy and one device
// secret, if any.
struct KeySample {
  std::optional<std::string> check;
  std::optional<std::pair<std::string, std::string>> password;  // user, sealed copy
  std::optional<std::pair<std::string, SealedDevice>> device;   // user, device secret
};

// The key check: the stored value must open with `box`; without one, the
// sampled secrets must. Errc::permanent (SecretBox::key_mismatch, naming
// `where`) when they do not; else the check value to store when there is
// none yet, or nullopt.
Result<std::optional<std::string>> check_key(const SecretBox& box, const KeySample& sample,
                                             const std::string& where);

// --- The sealing -----------------------------------------------------------------

// Seals and unseals the secrets of accounts with the store's SecretBox.
class AccountCodec {
 public:
  explicit AccountCodec(SecretBox box);
  const SecretBox& box() const { return box_; }

  // The account of `user` (a row that exists) with its secrets unsealed;
  // the password copy only when the effective policy (own, `defaults`) is
  // not device-secrets-only. Errc::permanent when a secret cannot be
  // decrypted (wrong key, tampered or swapped row).
  Result<Account> unseal(std::string_view user, AccountRow row, const Policy& defaults,
                         const std::vector<SealedDevice>& devices) const;
  // For a user without a row: one decryption of a dummy (the store work of
  // a known user), then no_such_user.
  Error unknown_user(std::string_view user) const;

  // Derives the hash and verifiers of `password` (slow on purpose) and seals
  // its copy. Errc::temporary if the CSPRNG or a KDF fails.
  Result<SealedPassword> seal_password(std::string_view user, std::string_view password) const;
  Result<std::string> seal_device_secret(std::string_view user, std::string_view name,
                                         std::string_view secret) const;
  // Errc::invalid when `password` equals one of the user's device secrets;
  // one that cannot be decrypted cannot equal anything and is skipped (a
  // broken row must not stop its repair by a new password).
  Result<void> check_differs_from_devices(std::string_view user, std::string_view password,
                                          const std::vector<SealedDevice>& devices) const;

 private:
  SecretBox box_;
  std::string dummy_sealed_;
};

}  // namespace apop::auth
