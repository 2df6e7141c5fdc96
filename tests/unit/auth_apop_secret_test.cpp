// verify_apop's log reason for an account that has no APOP secret at all
// (metrics count these apart: apop_logins_total{result="no-apop-secret"}).
#include <gtest/gtest.h>

#include <string>

#include "auth/authenticator.hpp"
#include "auth/digest.hpp"
#include "auth/memory_credential_store.hpp"

namespace apop::auth {
namespace {

constexpr std::string_view kTs = "<1896.697170952@dbc.mtview.ca.us>";
const pop3::AuthContext kClear{};  // not TLS

std::string apop(std::string_view secret) {
  return md5_hex(std::string(kTs) + std::string(secret));
}

TEST(AuthApopSecret, AccountWithoutApopSecretHasItsOwnReason) {
  MemoryCredentialStore store;
  StoreAuthenticator auth{store};
  ASSERT_TRUE(store.add("alice", "alice secret 12").ok());
  Policy p;
  p.device_secrets_only = true;  // drops the password copy; no device secret yet
  ASSERT_TRUE(store.set_policy("alice", p).ok());
  auto r = auth.verify_apop("alice", kTs, apop("alice secret 12"), kClear);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.failure, apop::pop3::AuthFailure::no_apop_secret);
  // Unknown users and wrong digests stay "credentials".
  EXPECT_EQ(auth.verify_apop("nobody", kTs, apop("alice secret 12"), kClear).failure,
            apop::pop3::AuthFailure::credentials);
  ASSERT_TRUE(store.add_device_secret("alice", "phone", "phone-secret-1234").ok());
  EXPECT_EQ(auth.verify_apop("alice", kTs, apop("alice secret 12"), kClear).failure,
            apop::pop3::AuthFailure::credentials);
  EXPECT_TRUE(auth.verify_apop("alice", kTs, apop("phone-secret-1234"), kClear).ok);
}

}  // namespace
}  // namespace apop::auth
