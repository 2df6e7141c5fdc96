#include "auth/memory_credential_store.hpp"

#include <openssl/crypto.h>

#include <array>
#include <ctime>

#include "auth/foreign_hash.hpp"
#include "auth/random.hpp"
#include "auth/username.hpp"

namespace apop::auth {
namespace {

std::int64_t now() { return static_cast<std::int64_t>(std::time(nullptr)); }

// A key of this store's own: its rows live and die with it.
SecretBox fresh_box() {
  std::array<unsigned char, SecretBox::kKeySize> key{};
  auto r = random_bytes(key);  // a failed CSPRNG leaves zeros: a test twin's key
  (void)r;
  SecretBox box = SecretBox::from_key(key);
  OPENSSL_cleanse(key.data(), key.size());
  return box;
}

}  // namespace

MemoryCredentialStore::MemoryCredentialStore() : codec_(fresh_box()) {}

std::vector<SealedDevice> MemoryCredentialStore::sealed_devices(const Entry& e) {
  std::vector<SealedDevice> out;
  for (const auto& [name, d] : e.devices) out.push_back({name, d.sealed});
  return out;
}

Result<Account> MemoryCredentialStore::account(std::string_view user) {
  AccountRow row;
  std::vector<SealedDevice> devices;
  Policy defaults;
  {
    std::lock_guard lock(mu_);
    auto it = users_.find(user);
    if (it == users_.end()) return codec_.unknown_user(user);
    row = it->second.row;
    devices = sealed_devices(it->second);
    defaults = defaults_;
  }
  return codec_.unseal(user, std::move(row), defaults, devices);
}

Result<bool> MemoryCredentialStore::has_user(std::string_view user) {
  std::lock_guard lock(mu_);
  return users_.find(user) != users_.end();
}

Result<void> MemoryCredentialStore::add(std::string_view user, std::string_view password) {
  if (!is_valid_username(user)) return invalid_user_name(user);
  auto sealed = codec_.seal_password(user, password);
  if (!sealed) return sealed.error();
  std::lock_guard lock(mu_);
  if (users_.find(user) != users_.end()) return user_exists(user);
  Entry e;
  e.row.password_hash = std::move(sealed->hash);
  e.row.scram_sha256 = std::move(sealed->scram_sha256);
  e.row.scram_sha1 = std::move(sealed->scram_sha1);
  if (auto copy = sealed->copy_for(Policy{}, defaults_)) e.row.sealed_password = std::string(*copy);
  e.created = e.updated = now();
  users_.emplace(std::string(user), std::move(e));
  return {};
}

Result<void> MemoryCredentialStore::set_password(std::string_view user, std::string_view password) {
  {
    std::lock_guard lock(mu_);
    auto it = users_.find(user);
    if (it == users_.end()) return no_such_user(user);
    if (auto r = codec_.check_differs_from_devices(user, password, sealed_devices(it->second));
        !r) {
      return r;
    }
  }
  auto sealed = codec_.seal_password(user, password);
  if (!sealed) return sealed.error();
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  AccountRow& row = it->second.row;
  row.password_hash = std::move(sealed->hash);
  row.scram_sha256 = std::move(sealed->scram_sha256);
  row.scram_sha1 = std::move(sealed->scram_sha1);
  row.sealed_password.reset();
  if (auto copy = sealed->copy_for(row.policy, defaults_)) row.sealed_password = std::string(*copy);
  it->second.updated = now();
  return {};
}

Result<void> MemoryCredentialStore::remove(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  users_.erase(it);
  return {};
}

Result<void> MemoryCredentialStore::import_foreign_hash(std::string_view user,
                                                        std::string_view hash, bool replace) {
  if (!is_valid_username(user)) return invalid_user_name(user);
  if (!is_foreign_hash(hash)) return make_error(Errc::invalid, "not an imported hash");
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it != users_.end() && !replace) return user_exists(user);
  if (it == users_.end()) {
    it = users_.emplace(std::string(user), Entry{}).first;
    it->second.created = now();
  }
  AccountRow& row = it->second.row;
  row.password_hash = std::string(hash);
  row.scram_sha256.clear();
  row.scram_sha1.clear();
  row.sealed_password.reset();
  it->second.updated = now();
  return {};
}

Result<std::vector<UserRecord>> MemoryCredentialStore::list() {
  std::lock_guard lock(mu_);
  std::vector<UserRecord> out;
  out.reserve(users_.size());
  for (const auto& [name, e] : users_) {
    out.push_back(UserRecord{name, e.created, e.updated, e.devices.size(),
                             e.row.sealed_password.has_value(), foreign_scheme(e.row.password_hash),
                             e.row.policy, e.row.last_login, e.row.mail_location, e.row.quota});
  }
  return out;
}

Result<void> MemoryCredentialStore::add_device_secret(std::string_view user, std::string_view name,
                                                      std::string_view secret) {
  if (auto r = check_new_device_secret(name, secret); !r) return r;
  std::string hash;
  {
    std::lock_guard lock(mu_);
    auto it = users_.find(user);
    if (it == users_.end()) return no_such_user(user);
    if (it->second.devices.count(name) != 0) return device_secret_exists(name);
    hash = it->second.row.password_hash;
  }
  if (auto r = check_differs_from_password(hash, secret); !r) return r;
  auto sealed = codec_.seal_device_secret(user, name, secret);
  if (!sealed) return sealed.error();
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  auto [pos, inserted] = it->second.devices.emplace(std::string(name), Device{*sealed, now()});
  (void)pos;
  if (!inserted) return device_secret_exists(name);
  return {};
}

Result<std::vector<DeviceSecretInfo>> MemoryCredentialStore::device_secrets(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  std::vector<DeviceSecretInfo> out;
  for (const auto& [name, d] : it->second.devices) out.push_back({name, d.created});
  return out;
}

Result<void> MemoryCredentialStore::revoke_device_secret(std::string_view user,
                                                         std::string_view name) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  auto d = it->second.devices.find(name);
  if (d == it->second.devices.end()) return no_such_device_secret(name);
  it->second.devices.erase(d);
  return {};
}

Result<Policy> MemoryCredentialStore::policy(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  return it->second.row.policy;
}

void MemoryCredentialStore::drop_copies_locked() {
  for (auto& [name, e] : users_) {
    if (!keeps_password_copy(e.row.policy, defaults_)) e.row.sealed_password.reset();
  }
}

Result<void> MemoryCredentialStore::set_policy(std::string_view user, const Policy& policy) {
  if (auto r = check_login_limits(policy); !r) return r;
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  it->second.row.policy = policy;
  drop_copies_locked();
  return {};
}

Result<Policy> MemoryCredentialStore::default_policy() {
  std::lock_guard lock(mu_);
  return defaults_;
}

Result<void> MemoryCredentialStore::set_default_policy(const Policy& policy) {
  if (auto r = check_default_policy(policy); !r) return r;
  std::lock_guard lock(mu_);
  defaults_ = policy;
  drop_copies_locked();
  return {};
}

Result<void> MemoryCredentialStore::record_login(std::string_view user, std::int64_t when) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  it->second.row.last_login = when;
  return {};
}

Result<std::optional<std::string>> MemoryCredentialStore::mail_location(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  return it->second.row.mail_location;
}

Result<void> MemoryCredentialStore::set_mail_location(std::string_view user,
                                                      const std::optional<std::string>& location) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  it->second.row.mail_location = location;
  return {};
}

Result<AccountQuota> MemoryCredentialStore::quota(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  return it->second.row.quota;
}

Result<void> MemoryCredentialStore::set_quota(std::string_view user, const AccountQuota& quota) {
  if (auto ok = check_quota(quota); !ok) return ok;
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_such_user(user);
  it->second.row.quota = quota;
  return {};
}

}  // namespace apop::auth
