// User credentials: name -> secret (the APOP shared secret, also the USER/PASS
// password). Implementations are thread-safe: every method may be called
// concurrently on one store. Returned strings are copies owned by the caller;
// secrets are never part of an error message.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "auth/secret_box.hpp"
#include "common/result.hpp"

struct sqlite3;

namespace apop::auth {

struct UserRecord {
  std::string name;
  std::int64_t created = 0;  // unix seconds
  std::int64_t updated = 0;  // unix seconds, last add/set_secret
};

class CredentialStore {
 public:
  virtual ~CredentialStore() = default;
  // The plaintext secret. Errc::not_found for unknown users (including names
  // that are not valid user names); Errc::permanent if the stored secret
  // cannot be decrypted; Errc::temporary on I/O errors / busy database.
  virtual Result<std::string> secret(std::string_view user) = 0;
  // Errc::exists if the user exists, Errc::invalid if !is_valid_username(user).
  // The secret is stored as given: strength checks are the caller's business.
  virtual Result<void> add(std::string_view user, std::string_view secret) = 0;
  // Errc::not_found for unknown users.
  virtual Result<void> set_secret(std::string_view user, std::string_view secret) = 0;
  // Errc::not_found for unknown users.
  virtual Result<void> remove(std::string_view user) = 0;
  // All users, sorted by name (bytewise).
  virtual Result<std::vector<UserRecord>> list() = 0;
};

// In-memory store for tests. Thread-safe (one mutex).
class MemoryCredentialStore final : public CredentialStore {
 public:
  Result<std::string> secret(std::string_view user) override;
  Result<void> add(std::string_view user, std::string_view secret) override;
  Result<void> set_secret(std::string_view user, std::string_view secret) override;
  Result<void> remove(std::string_view user) override;
  Result<std::vector<UserRecord>> list() override;

 private:
  struct Entry {
    std::string secret;
    std::int64_t created = 0;
    std::int64_t updated = 0;
  };
  std::mutex mu_;
  std::map<std::string, Entry, std::less<>> users_;
};

// SQLite-backed store (DATA/users.db). Secrets are stored only sealed by the
// SecretBox, with aad = user name. One connection guarded by a mutex; WAL
// journal and a ~5 s busy timeout so that `apop user ...` works while
// `apop serve` runs. The database, -wal and -shm files are mode 0600.
class SqliteCredentialStore final : public CredentialStore {
 public:
  // Opens or creates the database, creating/migrating the schema (PRAGMA
  // user_version). Errc::permanent for a file that is not a database of ours
  // or has a newer schema; Errc::temporary for I/O errors / busy database.
  // Note: briefly sets the process umask to 077 around sqlite3_open_v2 (umask
  // is process-wide), so call it before starting threads that create files.
  static Result<std::unique_ptr<SqliteCredentialStore>> open(const std::filesystem::path& db_file,
                                                             SecretBox box);
  ~SqliteCredentialStore() override;
  SqliteCredentialStore(const SqliteCredentialStore&) = delete;
  SqliteCredentialStore& operator=(const SqliteCredentialStore&) = delete;

  Result<std::string> secret(std::string_view user) override;
  Result<void> add(std::string_view user, std::string_view secret) override;
  Result<void> set_secret(std::string_view user, std::string_view secret) override;
  Result<void> remove(std::string_view user) override;
  Result<std::vector<UserRecord>> list() override;

 private:
  SqliteCredentialStore(sqlite3* db, SecretBox box, std::filesystem::path path);
  // Unknown users cost a decryption too (of this dummy), like known ones.
  Error unknown_user(std::string_view user) const;
  std::mutex mu_;
  sqlite3* db_;
  SecretBox box_;
  std::filesystem::path path_;
  std::string dummy_sealed_;
};

}  // namespace apop::auth
