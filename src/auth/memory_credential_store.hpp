// In-memory CredentialStore for tests and `apop user import --dry-run`.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/account_codec.hpp"
#include "auth/credential_store.hpp"

namespace apop::auth {

// Keeps the rows a SQL store keeps (account_codec.hpp), in a map: secrets
// sealed with a key of its own, made at construction, and the same domain
// logic as the real stores (derived hashes and verifiers, keep-a-copy
// policy, device-secret checks). Thread-safe (one mutex).
class MemoryCredentialStore final : public CredentialStore {
 public:
  MemoryCredentialStore();

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

 private:
  struct Device {
    std::string sealed;
    std::int64_t created = 0;
  };
  struct Entry {
    AccountRow row;
    std::map<std::string, Device, std::less<>> devices;  // by name
    std::int64_t created = 0;
    std::int64_t updated = 0;
  };
  static std::vector<SealedDevice> sealed_devices(const Entry& e);
  // Drops the copy of every account that is now device-secrets-only.
  void drop_copies_locked();
  const AccountCodec codec_;
  std::mutex mu_;
  std::map<std::string, Entry, std::less<>> users_;
  Policy defaults_;
};

}  // namespace apop::auth
