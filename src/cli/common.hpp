// Shared pieces of the subcommands: the data directory, secret input, exit codes.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "auth/sqlite_credential_store.hpp"
#include "common/limits.hpp"
#include "common/result.hpp"

namespace apop::pg {
class PgCredentialStore;
}

namespace apop::cli {

// sysexits(3) values used by the subcommands (documented in README.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 64;     // EX_USAGE
inline constexpr int kExitDataErr = 65;   // EX_DATAERR
inline constexpr int kExitNoUser = 67;    // EX_NOUSER
inline constexpr int kExitTempFail = 75;  // EX_TEMPFAIL
inline constexpr int kExitNoPerm = 77;    // EX_NOPERM: apop deliver over quota (a bounce)
inline constexpr int kExitConfig = 78;    // EX_CONFIG: bad configuration file

// DATA/: users.sqlite, secret.key, mail/USER/.
struct DataDir {
  std::filesystem::path root;
  std::filesystem::path users_db() const { return root / "users.sqlite"; }
  std::filesystem::path key_file() const { return root / "secret.key"; }
  std::filesystem::path mail_root() const { return root / "mail"; }
  std::filesystem::path maildir(std::string_view user) const { return mail_root() / user; }
};

// --data, else $APOP_DATA, else ./apop-data.
DataDir resolve_data_dir(const std::string& flag);

// Creates DATA and DATA/mail (mode 0700) when missing.
Result<void> ensure_layout(const DataDir& dir);

// The account store setting: --users, else $APOP_USERS; empty means the
// SQLite file DATA/users.sqlite.
std::string resolve_users(const std::string& flag);

// Whether a command needs the key that seals the stored secrets.
enum class KeyUse {
  required,  // load DATA/secret.key (created for a store with nothing sealed yet)
  none,      // neither read nor create it (`apop deliver`): no secret is read
};

// Opens the credential store: `users` (from resolve_users) empty ->
// DATA/users.sqlite (created); a postgresql:// URL -> PostgreSQL
// (pg::PgCredentialStore: the schema is created or upgraded); anything else
// -> Errc::invalid.
// The key file DATA/secret.key seals the secrets in either store. With
// KeyUse::required it is loaded; when it is missing it is created only if
// the store holds nothing sealed yet (a fresh data directory), else
// Errc::permanent naming the key file. A key that is not the one the store's
// secrets are sealed with is refused by the store's open (the key check
// value), before anything is changed. KeyUse::none reads no key: only calls
// that need no secret work (has_user, mail_location).
// `pool_size`: PostgreSQL connections (the server passes its auth threads + 1).
Result<std::unique_ptr<auth::CredentialStore>> open_credentials(
    const DataDir& dir, const std::string& users, unsigned pool_size = limits::kPgPoolSize,
    KeyUse key = KeyUse::required);

// The store open_credentials() opens, with the backend's type kept from
// where it was created: `apop serve` chooses what depends on the backend
// (write-behind login records, shared failure state and locks) from it.
struct OpenedCredentials {
  std::unique_ptr<auth::CredentialStore> store;
  auth::SqliteCredentialStore* sqlite = nullptr;  // `store`, when it is the SQLite file
  pg::PgCredentialStore* postgres = nullptr;      // `store`, when it is PostgreSQL
};
Result<OpenedCredentials> open_typed_credentials(const DataDir& dir, const std::string& users,
                                                 unsigned pool_size = limits::kPgPoolSize,
                                                 KeyUse key = KeyUse::required);

// Reads a secret: the first line of stdin when from_stdin, else a prompt
// without echo on the terminal (asked twice when confirm). Never from argv.
Result<std::string> read_secret(bool from_stdin, bool confirm);

}  // namespace apop::cli
