#include <openssl/crypto.h>

#include <ctime>

#include "auth/credential_store.hpp"
#include "auth/foreign_hash.hpp"
#include "auth/password_hash.hpp"
#include "auth/username.hpp"

namespace apop::auth {
namespace {
std::int64_t now() { return static_cast<std::int64_t>(std::time(nullptr)); }
Error per_account_only() {
  return make_error(Errc::invalid,
                    "LOGIN-DELAY and EXPIRE are per account; their defaults are apop serve "
                    "settings (login_delay, expire)");
}
Error no_user(std::string_view user) {
  return make_error(Errc::not_found, "no such user: " + std::string(user));
}
void wipe(std::optional<std::string>& s) {
  if (s) OPENSSL_cleanse(s->data(), s->size());
  s.reset();
}
}  // namespace

Result<Account> MemoryCredentialStore::account(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  const Entry& e = it->second;
  Account a;
  a.name = std::string(user);
  a.password_hash = e.derived.hash;
  a.scram_sha256 = e.derived.scram_sha256;
  a.scram_sha1 = e.derived.scram_sha1;
  a.policy = resolve_policy(e.policy, defaults_);
  a.login_delay = e.policy.login_delay;
  a.expire_days = e.policy.expire_days;
  a.last_login = e.last_login;
  a.mail_location = e.mail_location;
  if (!a.policy.device_secrets_only) a.password = e.password;
  for (const auto& [name, d] : e.devices) a.device_secrets.push_back({name, d.first});
  return a;
}

Result<bool> MemoryCredentialStore::has_user(std::string_view user) {
  std::lock_guard lock(mu_);
  return users_.find(user) != users_.end();
}

Result<void> MemoryCredentialStore::add(std::string_view user, std::string_view password) {
  if (!is_valid_username(user)) {
    return make_error(Errc::invalid, "invalid user name: " + std::string(user));
  }
  auto derived = derive_password(password);
  if (!derived) return derived.error();
  std::lock_guard lock(mu_);
  if (users_.find(user) != users_.end()) {
    return make_error(Errc::exists, "user already exists: " + std::string(user));
  }
  Entry e;
  e.derived = std::move(*derived);
  if (!resolve_policy(e.policy, defaults_).device_secrets_only) e.password = std::string(password);
  e.created = e.updated = now();
  users_.emplace(std::string(user), std::move(e));
  return {};
}

Result<void> MemoryCredentialStore::set_password(std::string_view user, std::string_view password) {
  auto derived = derive_password(password);
  if (!derived) return derived.error();
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  Entry& e = it->second;
  for (const auto& [name, d] : e.devices) {
    if (d.first == password) {
      return make_error(Errc::invalid, "the password equals device secret " + name);
    }
  }
  e.derived = std::move(*derived);
  wipe(e.password);
  if (!resolve_policy(e.policy, defaults_).device_secrets_only) e.password = std::string(password);
  e.updated = now();
  return {};
}

Result<void> MemoryCredentialStore::remove(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  wipe(it->second.password);
  users_.erase(it);
  return {};
}

Result<void> MemoryCredentialStore::import_foreign_hash(std::string_view user,
                                                        std::string_view hash, bool replace) {
  if (!is_valid_username(user)) {
    return make_error(Errc::invalid, "invalid user name: " + std::string(user));
  }
  if (!is_foreign_hash(hash)) return make_error(Errc::invalid, "not an imported hash");
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it != users_.end() && !replace) {
    return make_error(Errc::exists, "user already exists: " + std::string(user));
  }
  if (it == users_.end()) {
    it = users_.emplace(std::string(user), Entry{}).first;
    it->second.created = now();
  }
  Entry& e = it->second;
  e.derived = DerivedPassword{std::string(hash), {}, {}};
  wipe(e.password);
  e.updated = now();
  return {};
}

Result<std::vector<UserRecord>> MemoryCredentialStore::list() {
  std::lock_guard lock(mu_);
  std::vector<UserRecord> out;
  out.reserve(users_.size());
  for (const auto& [name, e] : users_) {
    out.push_back(UserRecord{name, e.created, e.updated, e.devices.size(), e.password.has_value(),
                             foreign_scheme(e.derived.hash), e.policy, e.last_login,
                             e.mail_location});
  }
  return out;
}

Result<void> MemoryCredentialStore::add_device_secret(std::string_view user, std::string_view name,
                                                      std::string_view secret) {
  if (!is_valid_secret_name(name)) {
    return make_error(Errc::invalid, "invalid secret name (1-32 of A-Z a-z 0-9 . _ -)");
  }
  if (secret.empty()) return make_error(Errc::invalid, "empty secret");
  std::string hash;
  {
    std::lock_guard lock(mu_);
    auto it = users_.find(user);
    if (it == users_.end()) return no_user(user);
    if (it->second.devices.count(name) != 0) {
      return make_error(Errc::exists, "secret " + std::string(name) + " already exists");
    }
    hash = it->second.derived.hash;
  }
  if (verify_password_hash(hash, secret)) {
    return make_error(Errc::invalid, "a device secret must differ from the account password");
  }
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  auto [pos, inserted] =
      it->second.devices.emplace(std::string(name), std::make_pair(std::string(secret), now()));
  (void)pos;
  if (!inserted) return make_error(Errc::exists, "secret " + std::string(name) + " already exists");
  return {};
}

Result<std::vector<DeviceSecretInfo>> MemoryCredentialStore::device_secrets(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  std::vector<DeviceSecretInfo> out;
  for (const auto& [name, d] : it->second.devices) out.push_back({name, d.second});
  return out;
}

Result<void> MemoryCredentialStore::revoke_device_secret(std::string_view user,
                                                         std::string_view name) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  auto d = it->second.devices.find(name);
  if (d == it->second.devices.end()) {
    return make_error(Errc::not_found, "no secret named " + std::string(name));
  }
  OPENSSL_cleanse(d->second.first.data(), d->second.first.size());
  it->second.devices.erase(d);
  return {};
}

Result<Policy> MemoryCredentialStore::policy(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  return it->second.policy;
}

void MemoryCredentialStore::apply_device_only_locked() {
  for (auto& [name, e] : users_) {
    if (resolve_policy(e.policy, defaults_).device_secrets_only) wipe(e.password);
  }
}

Result<void> MemoryCredentialStore::set_policy(std::string_view user, const Policy& policy) {
  if (auto r = check_login_limits(policy); !r) return r;
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  it->second.policy = policy;
  apply_device_only_locked();
  return {};
}

Result<Policy> MemoryCredentialStore::default_policy() {
  std::lock_guard lock(mu_);
  return defaults_;
}

Result<void> MemoryCredentialStore::set_default_policy(const Policy& policy) {
  if (policy.login_delay || policy.expire_days) return per_account_only();
  std::lock_guard lock(mu_);
  defaults_ = policy;
  apply_device_only_locked();
  return {};
}

Result<void> MemoryCredentialStore::record_login(std::string_view user, std::int64_t when) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  it->second.last_login = when;
  return {};
}

Result<std::optional<std::string>> MemoryCredentialStore::mail_location(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  return it->second.mail_location;
}

Result<void> MemoryCredentialStore::set_mail_location(std::string_view user,
                                                      const std::optional<std::string>& location) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  it->second.mail_location = location;
  return {};
}

}  // namespace apop::auth
