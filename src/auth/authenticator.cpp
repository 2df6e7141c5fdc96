#include "auth/authenticator.hpp"

#include <openssl/crypto.h>

#include <string>

#include "auth/base64.hpp"
#include "auth/digest.hpp"
#include "auth/sasl.hpp"

namespace apop::auth {
namespace {

// Used for unknown users so that they cost the same work as known ones. Its
// value does not matter: a match against it is never reported as success.
constexpr std::string_view kDummySecret = "apop-dummy-secret-for-unknown-users";

// The user's secret, or the dummy one; `known` tells which.
std::string lookup(CredentialStore& store, std::string_view user, bool& known) {
  auto r = store.secret(user);
  known = r.ok();
  if (!known) return std::string(kDummySecret);
  return std::move(r).value();
}

}  // namespace

bool StoreAuthenticator::verify_apop(std::string_view user, std::string_view timestamp,
                                     std::string_view digest) {
  bool known = false;
  std::string secret = lookup(store_, user, known);
  const bool match = apop_digest_matches(timestamp, secret, digest);
  OPENSSL_cleanse(secret.data(), secret.size());
  return known & match;
}

bool StoreAuthenticator::verify_plain(std::string_view user, std::string_view password) {
  bool known = false;
  std::string secret = lookup(store_, user, known);
  const bool match = ct_equal(secret, password);
  OPENSSL_cleanse(secret.data(), secret.size());
  return known & match;
}

namespace {

// Carries a SASL exchange over POP3's base64 lines (RFC 5034 §4).
class Base64Sasl final : public pop3::SaslSession {
 public:
  explicit Base64Sasl(std::unique_ptr<SaslExchange> exchange) : exchange_(std::move(exchange)) {}

  pop3::SaslReply step(std::optional<std::string_view> b64) override {
    std::optional<std::string> decoded;
    if (b64) {
      decoded = base64_decode_strict(*b64);
      if (!decoded) return {pop3::SaslReply::Kind::malformed, {}, {}};
    }
    SaslStep s =
        exchange_->step(decoded ? std::optional<std::string_view>(*decoded) : std::nullopt);
    if (decoded) OPENSSL_cleanse(decoded->data(), decoded->size());
    switch (s.kind) {
      case SaslStep::Kind::challenge:
        return {pop3::SaslReply::Kind::challenge, base64_encode(s.data), std::move(s.user)};
      case SaslStep::Kind::success:
        return {pop3::SaslReply::Kind::success, {}, std::move(s.user)};
      case SaslStep::Kind::failure:
        break;
    }
    return {pop3::SaslReply::Kind::failure, {}, std::move(s.user)};
  }

 private:
  std::unique_ptr<SaslExchange> exchange_;
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

std::unique_ptr<pop3::SaslSession> StoreAuthenticator::start_sasl(std::string_view mechanism) {
  if (mechanism == "CRAM-MD5" && challenges_ == nullptr) return nullptr;
  // The store keeps the plaintext-equivalent secret; SCRAM verifiers are
  // derived from it (stored verifiers come with per-user policy).
  CredentialLookup lookup = [this](std::string_view user) -> std::optional<SaslCredentials> {
    auto secret = store_.secret(user);
    if (!secret) return std::nullopt;
    SaslCredentials c;
    c.plaintext = std::move(*secret);
    return c;
  };
  auto exchange = make_sasl_exchange(mechanism, std::move(lookup),
                                     challenges_ ? challenges_->next() : std::string());
  if (!exchange) return nullptr;
  return std::make_unique<Base64Sasl>(std::move(exchange));
}

}  // namespace apop::auth
