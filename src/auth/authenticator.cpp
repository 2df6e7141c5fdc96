#include "auth/authenticator.hpp"

#include <openssl/crypto.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "auth/base64.hpp"
#include "auth/digest.hpp"
#include "auth/foreign_hash.hpp"
#include "auth/password_hash.hpp"
#include "auth/sasl.hpp"

namespace apop::auth {
namespace {

// Used for unknown users so that they cost the same work as known ones. Its
// value does not matter: a match against it is never reported as success.
constexpr std::string_view kDummySecret = "apop-dummy-secret-for-unknown-users";

// The account, or nullopt for an unknown user (and an unreadable one: a
// secret that cannot be decrypted fails like a wrong one). `unavailable` is
// set when the store could not be asked at all (Errc::temporary: database
// down or busy): the login then fails with AuthFailure::temporary
// ([SYS/TEMP]), not as wrong credentials.
std::optional<Account> find(AccountSource& store, std::string_view user, bool& unavailable) {
  auto r = store.account(user);
  unavailable = !r && r.error().code == Errc::temporary;
  if (!r) return std::nullopt;
  return std::move(*r);
}

pop3::AuthResult failed(pop3::AuthFailure why) {
  pop3::AuthResult r;
  r.failure = why;
  return r;
}

static_assert(kExpireNever == pop3::kExpireNever);

pop3::LoginLimits login_limits(const Account& a) {
  pop3::LoginLimits l;
  l.login_delay = a.login_delay;
  l.expire_days = a.expire_days;
  l.last_login = a.last_login;
  return l;
}

pop3::AuthResult succeeded(std::string credential, const Account& a) {
  pop3::AuthResult r;
  r.ok = true;
  r.credential = std::move(credential);
  r.limits = login_limits(a);
  r.mail_location = a.mail_location;
  return r;
}

}  // namespace

pop3::AuthFailure policy_refusal(const EffectivePolicy& policy, MechanismSet mechanism,
                                 const pop3::AuthContext& ctx) {
  using pop3::AuthFailure;
  if ((policy.mechanisms & mechanism) == 0) return AuthFailure::policy_mechanism;
  if (policy.require_tls && !ctx.tls) return AuthFailure::policy_tls;
  // APOP and CRAM-MD5: MD5 challenge-responses over the same
  // plaintext-equivalent secret (Policy::md5_challenge_requires_tls).
  if (policy.md5_challenge_requires_tls && !ctx.tls) {
    if (mechanism == kMechApop) return AuthFailure::policy_apop_tls;
    if (mechanism == kMechCramMd5) return AuthFailure::policy_cram_md5_tls;
  }
  return AuthFailure::none;
}

pop3::AuthResult StoreAuthenticator::verify_apop(std::string_view user, std::string_view timestamp,
                                                 std::string_view digest,
                                                 const pop3::AuthContext& ctx) {
  bool unavailable = false;
  std::optional<Account> acct = find(store_, user, unavailable);
  if (unavailable) return failed(pop3::AuthFailure::temporary);
  std::vector<std::pair<std::string, std::string_view>> candidates;
  if (acct) {
    if (acct->password) candidates.emplace_back("password", *acct->password);
    for (const auto& d : acct->device_secrets)
      candidates.emplace_back("device:" + d.name, d.secret);
  }
  const bool known = acct.has_value();
  if (candidates.empty()) candidates.emplace_back("", kDummySecret);
  // Every candidate is tried (no early exit).
  std::string matched;
  bool any = false;
  for (const auto& [name, secret] : candidates) {
    const bool m = apop_digest_matches(timestamp, secret, digest);
    if (m && !any) matched = name;
    any = any || m;
  }
  // A known account without any APOP secret (device-secrets-only and no
  // device secret yet): a distinct reason for logs and metrics only.
  if (known && !any && acct->device_secrets.empty() && !acct->password) {
    return failed(pop3::AuthFailure::no_apop_secret);
  }
  if (!known || !any || matched.empty()) return failed(pop3::AuthFailure::credentials);
  if (auto why = policy_refusal(acct->policy, kMechApop, ctx); why != pop3::AuthFailure::none) {
    return failed(why);
  }
  return succeeded(std::move(matched), *acct);
}

pop3::AuthResult StoreAuthenticator::verify_plain(std::string_view user, std::string_view password,
                                                  const pop3::AuthContext& ctx) {
  bool unavailable = false;
  std::optional<Account> acct = find(store_, user, unavailable);
  if (unavailable) return failed(pop3::AuthFailure::temporary);
  if (!acct) {
    dummy_password_verify(password);
    return failed(pop3::AuthFailure::credentials);
  }
  switch (check_password_hash(acct->password_hash, password)) {
    case HashCheck::match:
      break;
    case HashCheck::mismatch:
      return failed(pop3::AuthFailure::credentials);
    case HashCheck::refused:
      // An imported hash above the cost limits (or malformed): never
      // verified; the log says why (reason=policy policy=imported-hash).
      return failed(pop3::AuthFailure::policy_imported_hash);
  }
  if (auto why = policy_refusal(acct->policy, kMechUser, ctx); why != pop3::AuthFailure::none) {
    return failed(why);
  }
  return succeeded(upgrade_foreign_hash(user, password, acct->password_hash, ctx), *acct);
}

std::string StoreAuthenticator::upgrade_foreign_hash(std::string_view user,
                                                     std::string_view password,
                                                     std::string_view password_hash,
                                                     const pop3::AuthContext& ctx) {
  // An imported hash (apop user import) is upgraded on the first login over
  // TLS: our scrypt hash, SCRAM verifiers and (policy permitting) the
  // encrypted copy, so APOP, CRAM-MD5 and SCRAM work from now on. Best
  // effort: a failure leaves the imported hash, which keeps working.
  if (ctx.tls && is_foreign_hash(password_hash)) {
    auto upgraded = store_.replace_imported_hash(user, password);
    return upgraded ? "password-upgraded" : "password";
  }
  return "password";
}

namespace {

// The outcome of the credential lookup inside an exchange, for the reply.
struct LookupNote {
  // credentials, unless the lookup knew better: the policy refused the
  // login, or the store could not be asked.
  pop3::AuthFailure refusal = pop3::AuthFailure::credentials;
  pop3::LoginLimits limits;                  // of the account looked up (reported on success)
  std::optional<std::string> mail_location;  // of the account looked up (reported on success)
};

// Carries a SASL exchange over POP3's base64 lines (RFC 5034 §4).
class Base64Sasl final : public pop3::SaslSession {
 public:
  Base64Sasl(std::unique_ptr<SaslExchange> exchange, std::shared_ptr<LookupNote> note)
      : exchange_(std::move(exchange)), note_(std::move(note)) {}

  pop3::SaslReply step(std::optional<std::string_view> b64) override {
    std::optional<std::string> decoded;
    if (b64) {
      decoded = base64_decode_strict(*b64);
      if (!decoded) return {pop3::SaslReply::Kind::malformed, {}, {}, {}};
    }
    SaslStep s =
        exchange_->step(decoded ? std::optional<std::string_view>(*decoded) : std::nullopt);
    if (decoded) OPENSSL_cleanse(decoded->data(), decoded->size());
    pop3::SaslReply r;
    r.user = std::move(s.user);
    switch (s.kind) {
      case SaslStep::Kind::challenge:
        r.kind = pop3::SaslReply::Kind::challenge;
        r.text = base64_encode(s.data);
        return r;
      case SaslStep::Kind::success:
        r.result.ok = true;
        r.result.credential =
            s.credential.empty() ? std::string("password") : std::move(s.credential);
        r.result.limits = note_->limits;
        r.result.mail_location = note_->mail_location;
        return r;
      case SaslStep::Kind::failure:
        break;
    }
    r.result.failure = note_->refusal;
    return r;
  }

 private:
  std::unique_ptr<SaslExchange> exchange_;
  std::shared_ptr<LookupNote> note_;
};

}  // namespace

std::vector<pop3::SaslMechanism> StoreAuthenticator::sasl_mechanisms() const {
  std::vector<pop3::SaslMechanism> out;
  for (std::string_view m : kSaslMechanisms) {
    if (m == "CRAM-MD5" && challenges_ == nullptr) continue;
    out.push_back({std::string(m), m == "PLAIN" || m == "LOGIN"});
  }
  return out;
}

std::unique_ptr<pop3::SaslSession> StoreAuthenticator::start_sasl(std::string_view mechanism,
                                                                  const pop3::AuthContext& ctx) {
  const MechanismSet bit = mechanism_bit(mechanism);
  if (bit == 0) return nullptr;
  if (bit == kMechCramMd5 && challenges_ == nullptr) return nullptr;
  auto note = std::make_shared<LookupNote>();
  // A policy refusal hands the exchange nothing (the unknown-user path: same
  // steps, dummy work, failure) and leaves the reason for the log.
  CredentialLookup lookup = [this, bit, ctx,
                             note](std::string_view user) -> std::optional<SaslCredentials> {
    bool unavailable = false;
    std::optional<Account> acct = find(store_, user, unavailable);
    if (unavailable) note->refusal = pop3::AuthFailure::temporary;
    if (!acct) return std::nullopt;
    if (auto why = policy_refusal(acct->policy, bit, ctx); why != pop3::AuthFailure::none) {
      note->refusal = why;
      return std::nullopt;
    }
    if ((bit == kMechPlain || bit == kMechLogin) && is_foreign_hash(acct->password_hash) &&
        !foreign_hash_refusal(acct->password_hash).empty()) {
      // Checked against nothing (check_password_hash refuses it): say why
      // in the log, as verify_plain does.
      note->refusal = pop3::AuthFailure::policy_imported_hash;
    }
    note->limits = login_limits(*acct);
    note->mail_location = acct->mail_location;
    SaslCredentials c;
    c.plaintext = acct->password;
    c.scram_sha256 = acct->scram_sha256;
    c.scram_sha1 = acct->scram_sha1;
    c.password_hash = acct->password_hash;
    if (is_foreign_hash(acct->password_hash)) {
      c.password_verified = [this, ctx, hash = std::string(acct->password_hash),
                             name = std::string(user)](std::string_view password) {
        return upgrade_foreign_hash(name, password, hash, ctx);
      };
    }
    for (const auto& d : acct->device_secrets)
      c.extra_secrets.emplace_back("device:" + d.name, d.secret);
    return c;
  };
  auto exchange = make_sasl_exchange(mechanism, std::move(lookup),
                                     challenges_ ? challenges_->next() : std::string());
  if (!exchange) return nullptr;
  return std::make_unique<Base64Sasl>(std::move(exchange), std::move(note));
}

void StoreAuthenticator::record_login(std::string_view user, std::int64_t when) {
  // Best effort: a busy database must not fail a login that succeeded.
  auto r = store_.record_login(user, when);
  (void)r;
}

}  // namespace apop::auth
