#include <openssl/crypto.h>

#include <ctime>

#include "auth/credential_store.hpp"
#include "auth/username.hpp"

namespace apop::auth {
namespace {
std::int64_t now() { return static_cast<std::int64_t>(std::time(nullptr)); }
Error no_user(std::string_view user) {
  return make_error(Errc::not_found, "no such user: " + std::string(user));
}
}  // namespace

Result<std::string> MemoryCredentialStore::secret(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  return it->second.secret;
}

Result<void> MemoryCredentialStore::add(std::string_view user, std::string_view secret) {
  if (!is_valid_username(user)) {
    return make_error(Errc::invalid, "invalid user name: " + std::string(user));
  }
  std::lock_guard lock(mu_);
  if (users_.find(user) != users_.end()) {
    return make_error(Errc::exists, "user already exists: " + std::string(user));
  }
  const std::int64_t t = now();
  users_.emplace(std::string(user), Entry{std::string(secret), t, t});
  return {};
}

Result<void> MemoryCredentialStore::set_secret(std::string_view user, std::string_view secret) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  OPENSSL_cleanse(it->second.secret.data(), it->second.secret.size());
  it->second.secret.assign(secret);
  it->second.updated = now();
  return {};
}

Result<void> MemoryCredentialStore::remove(std::string_view user) {
  std::lock_guard lock(mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return no_user(user);
  OPENSSL_cleanse(it->second.secret.data(), it->second.secret.size());
  users_.erase(it);
  return {};
}

Result<std::vector<UserRecord>> MemoryCredentialStore::list() {
  std::lock_guard lock(mu_);
  std::vector<UserRecord> out;
  out.reserve(users_.size());
  for (const auto& [name, e] : users_) out.push_back(UserRecord{name, e.created, e.updated});
  return out;
}

}  // namespace apop::auth
