#include "auth/authenticator.hpp"

#include <openssl/crypto.h>

#include <string>

#include "auth/digest.hpp"

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

}  // namespace apop::auth
