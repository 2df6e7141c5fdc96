#include "auth/account_codec.hpp"

#include <limits>

#include <openssl/crypto.h>

#include "auth/password_hash.hpp"

namespace apop::auth {
namespace {

// The dummy secret unknown users cost: sealed at construction, opened per
// lookup of an unknown user. Its aad starts with a control octet (0x1D:
// "\x01d" is one escape), which no user name has (username.hpp).
constexpr std::string_view kDummySecret = "apop-dummy-secret-for-unknown-users";
constexpr std::string_view kDummyAad = "\x01dummy";

Error undecryptable(const std::string& what, std::string_view user, const Error& e) {
  return make_error(Errc::permanent,
                    what + " of user " + std::string(user) + " cannot be decrypted: " + e.message);
}

}  // namespace

std::string device_aad(std::string_view user, std::string_view name) {
  std::string aad(user);
  aad.push_back('\0');
  aad += "device";
  aad.push_back('\0');
  aad.append(name);
  return aad;
}

Error no_such_user(std::string_view user) {
  return make_error(Errc::not_found, "no such user: " + std::string(user));
}

Error invalid_user_name(std::string_view user) {
  return make_error(Errc::invalid, "invalid user name: " + std::string(user));
}

Error user_exists(std::string_view user) {
  return make_error(Errc::exists, "user already exists: " + std::string(user));
}

Error device_secret_exists(std::string_view name) {
  return make_error(Errc::exists, "secret " + std::string(name) + " already exists");
}

Error no_such_device_secret(std::string_view name) {
  return make_error(Errc::not_found, "no secret named " + std::string(name));
}

Result<void> check_default_policy(const Policy& policy) {
  if (policy.login_delay || policy.expire_days) {
    return make_error(Errc::invalid,
                      "LOGIN-DELAY and EXPIRE are per account; their defaults are apop serve "
                      "settings (login_delay, expire)");
  }
  return {};
}

Result<void> check_new_device_secret(std::string_view name, std::string_view secret) {
  if (!is_valid_secret_name(name)) {
    return make_error(Errc::invalid, "invalid secret name (1-32 of A-Z a-z 0-9 . _ -)");
  }
  if (secret.empty()) return make_error(Errc::invalid, "empty secret");
  return {};
}

Result<void> check_differs_from_password(std::string_view password_hash, std::string_view secret) {
  if (verify_password_hash(password_hash, secret)) {
    return make_error(Errc::invalid, "a device secret must differ from the account password");
  }
  return {};
}

bool keeps_password_copy(const Policy& own, const Policy& defaults) {
  return !resolve_policy(own, defaults).device_secrets_only;
}

PolicyColumns policy_columns(const Policy& p) {
  PolicyColumns c;
  if (p.mechanisms) c.mechanisms = format_mechanisms(*p.mechanisms);
  c.device_secrets_only = p.device_secrets_only;
  c.apop_requires_tls = p.md5_challenge_requires_tls;
  c.require_tls = p.require_tls;
  if (p.login_delay) c.login_delay = *p.login_delay;
  c.expire_days = p.expire_days;
  return c;
}

std::optional<std::uint32_t> login_delay_column(std::optional<std::int64_t> stored) {
  if (!stored || *stored < 0 || *stored > 0xFFFFFFFFll) return std::nullopt;
  return static_cast<std::uint32_t>(*stored);
}

AccountCodec::AccountCodec(SecretBox box) : box_(std::move(box)) {
  auto dummy = box_.seal(kDummySecret, kDummyAad);
  if (dummy) dummy_sealed_ = std::move(*dummy);
}

Error AccountCodec::unknown_user(std::string_view user) const {
  auto discarded = box_.open(dummy_sealed_, kDummyAad);
  (void)discarded;
  return no_such_user(user);
}

Result<Account> AccountCodec::unseal(std::string_view user, AccountRow row, const Policy& defaults,
                                     const std::vector<SealedDevice>& devices) const {
  Account a;
  a.name = std::string(user);
  a.password_hash = std::move(row.password_hash);
  a.scram_sha256 = decode_verifier(row.scram_sha256).value_or(ScramVerifier{});
  a.scram_sha1 = decode_verifier(row.scram_sha1).value_or(ScramVerifier{});
  a.policy = resolve_policy(row.policy, defaults);
  a.login_delay = row.policy.login_delay;
  a.expire_days = row.policy.expire_days;
  a.last_login = row.last_login;
  a.mail_location = std::move(row.mail_location);
  a.quota = row.quota;
  if (row.sealed_password && !a.policy.device_secrets_only) {
    auto opened = box_.open(*row.sealed_password, password_aad(user));
    if (!opened) return undecryptable("stored password", user, opened.error());
    a.password = std::move(*opened);
  }
  for (const auto& d : devices) {
    auto opened = box_.open(d.sealed, device_aad(user, d.name));
    if (!opened) return undecryptable("device secret " + d.name, user, opened.error());
    a.device_secrets.push_back({d.name, std::move(*opened)});
  }
  return a;
}

Result<SealedPassword> AccountCodec::seal_password(std::string_view user,
                                                   std::string_view password) const {
  auto derived = derive_password(password);
  if (!derived) return derived.error();
  auto sealed = box_.seal(password, password_aad(user));
  if (!sealed) return sealed.error();
  return SealedPassword{std::move(derived->hash), encode_verifier(derived->scram_sha256),
                        encode_verifier(derived->scram_sha1), std::move(*sealed)};
}

Result<std::string> AccountCodec::seal_device_secret(std::string_view user, std::string_view name,
                                                     std::string_view secret) const {
  return box_.seal(secret, device_aad(user, name));
}

Result<void> AccountCodec::check_differs_from_devices(
    std::string_view user, std::string_view password,
    const std::vector<SealedDevice>& devices) const {
  for (const auto& d : devices) {
    auto opened = box_.open(d.sealed, device_aad(user, d.name));
    if (!opened) continue;
    const bool same = *opened == password;
    OPENSSL_cleanse(opened->data(), opened->size());
    if (same) return make_error(Errc::invalid, "the password equals device secret " + d.name);
  }
  return {};
}

Result<std::optional<std::string>> check_key(const SecretBox& box, const KeySample& sample,
                                             const std::string& where) {
  if (sample.check) {
    if (!box.opens_key_check(*sample.check)) return box.key_mismatch(where);
    return std::optional<std::string>{};
  }
  if (sample.password && !box.open(sample.password->second, password_aad(sample.password->first))) {
    return box.key_mismatch(where);
  }
  if (sample.device && !box.open(sample.device->second.sealed,
                                 device_aad(sample.device->first, sample.device->second.name))) {
    return box.key_mismatch(where);
  }
  auto sealed = box.seal_key_check();
  if (!sealed) return sealed.error();
  return std::optional<std::string>{std::move(*sealed)};
}

AccountQuota quota_columns(std::optional<std::int64_t> bytes,
                           std::optional<std::int64_t> messages) {
  AccountQuota q;
  if (bytes && *bytes >= 0) q.bytes = static_cast<std::uint64_t>(*bytes);
  if (messages && *messages >= 0) q.messages = static_cast<std::uint64_t>(*messages);
  return q;
}

Result<void> check_quota(const AccountQuota& quota) {
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if ((quota.bytes && *quota.bytes > kMax) || (quota.messages && *quota.messages > kMax)) {
    return make_error(Errc::invalid, "quota limit too large");
  }
  return {};
}

}  // namespace apop::auth
