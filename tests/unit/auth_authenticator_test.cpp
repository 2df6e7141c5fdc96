#include "auth/authenticator.hpp"

#include <gtest/gtest.h>

#include <string>

#include "auth/base64.hpp"
#include "auth/challenge.hpp"
#include "auth/digest.hpp"
#include "auth/memory_credential_store.hpp"
#include "auth/sasl_crypto.hpp"

namespace apop::auth {
namespace {

constexpr std::string_view kTs = "<1896.697170952@dbc.mtview.ca.us>";
const pop3::AuthContext kClear{false};
const pop3::AuthContext kTls{true};

std::string apop(std::string_view secret) {
  return md5_hex(std::string(kTs) + std::string(secret));
}

class AuthAuthenticator : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(store_.add("mrose", "tanstaaf").ok());
    ASSERT_TRUE(store_.add("alice", "alice secret 12").ok());
  }
  MemoryCredentialStore store_;
  StoreAuthenticator auth_{store_};
};

TEST_F(AuthAuthenticator, ApopRfc1939Example) {
  EXPECT_TRUE(auth_.verify_apop("mrose", kTs, "c4c9334bac560ecc979e58001b3e22fb", kClear));
  EXPECT_TRUE(auth_.verify_apop("mrose", kTs, "C4C9334BAC560ECC979E58001B3E22FB", kClear));
}

TEST_F(AuthAuthenticator, ApopWrongDigestOrUser) {
  EXPECT_FALSE(auth_.verify_apop("mrose", kTs, "c4c9334bac560ecc979e58001b3e22fc", kClear));
  EXPECT_FALSE(auth_.verify_apop("mrose", kTs, "", kClear));
  EXPECT_FALSE(
      auth_.verify_apop("mrose", "<other@ts>", "c4c9334bac560ecc979e58001b3e22fb", kClear));
  // alice's digest for this timestamp does not log in mrose, and vice versa.
  std::string alice = md5_hex(std::string(kTs) + "alice secret 12");
  EXPECT_TRUE(auth_.verify_apop("alice", kTs, alice, kClear));
  EXPECT_FALSE(auth_.verify_apop("mrose", kTs, alice, kClear));
  EXPECT_FALSE(auth_.verify_apop("alice", kTs, "c4c9334bac560ecc979e58001b3e22fb", kClear));
}

TEST_F(AuthAuthenticator, UnknownUserAlwaysFalse) {
  EXPECT_FALSE(auth_.verify_apop("nobody", kTs, "c4c9334bac560ecc979e58001b3e22fb", kClear));
  EXPECT_FALSE(auth_.verify_apop("", kTs, "c4c9334bac560ecc979e58001b3e22fb", kClear));
  EXPECT_FALSE(auth_.verify_apop("../x", kTs, "c4c9334bac560ecc979e58001b3e22fb", kClear));
  EXPECT_FALSE(auth_.verify_plain("nobody", "tanstaaf", kClear));
  // Even the dummy secret's own digest does not log in an unknown user.
  EXPECT_FALSE(auth_.verify_plain("nobody", "apop-dummy-secret-for-unknown-users", kClear));
  std::string dummy = md5_hex(std::string(kTs) + "apop-dummy-secret-for-unknown-users");
  EXPECT_FALSE(auth_.verify_apop("nobody", kTs, dummy, kClear));
}

TEST_F(AuthAuthenticator, Plain) {
  EXPECT_TRUE(auth_.verify_plain("mrose", "tanstaaf", kClear));
  EXPECT_TRUE(auth_.verify_plain("alice", "alice secret 12", kClear));
  EXPECT_FALSE(auth_.verify_plain("mrose", "tanstaaF", kClear));
  EXPECT_FALSE(auth_.verify_plain("mrose", "tanstaa", kClear));
  EXPECT_FALSE(auth_.verify_plain("mrose", "tanstaaf ", kClear));
  EXPECT_FALSE(auth_.verify_plain("mrose", "", kClear));
  EXPECT_FALSE(auth_.verify_plain("alice", "tanstaaf", kClear));
}

// The login seam: one value with everything the session needs after the
// check (limits, mail location), for every mechanism; nothing on failure.
TEST_F(AuthAuthenticator, OneResultCarriesTheMailLocationAndLimits) {
  ASSERT_TRUE(store_.set_mail_location("alice", std::string("mbox:/var/mail/alice")).ok());
  Policy p;
  p.login_delay = 300;
  ASSERT_TRUE(store_.set_policy("alice", p).ok());
  const auto apop_ok = auth_.verify_apop("alice", kTs, apop("alice secret 12"), kClear);
  const auto plain_ok = auth_.verify_plain("alice", "alice secret 12", kClear);
  auto sasl = auth_.start_sasl("PLAIN", kTls);
  ASSERT_NE(sasl, nullptr);
  const auto sasl_ok = sasl->step(base64_encode(std::string("\0alice\0alice secret 12", 22)));
  ASSERT_TRUE(sasl_ok.succeeded());
  for (const pop3::AuthResult* r : {&apop_ok, &plain_ok, &sasl_ok.result}) {
    EXPECT_TRUE(r->ok);
    EXPECT_EQ(r->failure, pop3::AuthFailure::none);
    EXPECT_EQ(r->mail_location, "mbox:/var/mail/alice");
    EXPECT_EQ(r->limits.login_delay, std::optional<std::uint32_t>(300));
  }
  const auto wrong = auth_.verify_apop("alice", kTs, apop("wrong"), kClear);
  EXPECT_FALSE(wrong.ok);
  EXPECT_EQ(wrong.failure, pop3::AuthFailure::credentials);
  EXPECT_EQ(wrong.mail_location, std::nullopt);
  EXPECT_EQ(
      auth_.verify_apop("mrose", kTs, "c4c9334bac560ecc979e58001b3e22fb", kClear).mail_location,
      std::nullopt);  // no own location: the server's default
}

TEST(AuthFailureNames, AreTheNamesLogsAndMetricsUse) {
  using pop3::AuthFailure;
  EXPECT_EQ(pop3::auth_failure_name(AuthFailure::none), "");
  EXPECT_EQ(pop3::auth_failure_name(AuthFailure::credentials), "credentials");
  EXPECT_EQ(pop3::auth_failure_name(AuthFailure::no_apop_secret), "no-apop-secret");
  EXPECT_EQ(pop3::auth_failure_name(AuthFailure::policy_cram_md5_tls), "policy-cram-md5-tls");
  EXPECT_EQ(pop3::auth_failure_name(AuthFailure::policy_imported_hash), "policy-imported-hash");
  EXPECT_EQ(pop3::auth_failure_name(AuthFailure::temporary), "temporary");
  EXPECT_TRUE(pop3::is_policy_refusal(AuthFailure::policy_tls));
  EXPECT_TRUE(pop3::is_policy_refusal(AuthFailure::policy_imported_hash));
  EXPECT_FALSE(pop3::is_policy_refusal(AuthFailure::blocked));
  EXPECT_FALSE(pop3::is_policy_refusal(AuthFailure::credentials));
}

TEST_F(AuthAuthenticator, FollowsStoreChanges) {
  ASSERT_TRUE(store_.set_password("mrose", "new-secret-value").ok());
  EXPECT_FALSE(auth_.verify_plain("mrose", "tanstaaf", kClear));
  EXPECT_TRUE(auth_.verify_plain("mrose", "new-secret-value", kClear));
  ASSERT_TRUE(store_.remove("mrose").ok());
  EXPECT_FALSE(auth_.verify_plain("mrose", "new-secret-value", kClear));
}

TEST_F(AuthAuthenticator, DeviceSecretsWorkForApopAndAreNamed) {
  ASSERT_TRUE(store_.add_device_secret("alice", "phone", "phone-secret-1234").ok());
  ASSERT_TRUE(store_.add_device_secret("alice", "laptop", "laptop-secret-1234").ok());
  auto r = auth_.verify_apop("alice", kTs, apop("phone-secret-1234"), kClear);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.credential, "device:phone");
  EXPECT_EQ(auth_.verify_apop("alice", kTs, apop("alice secret 12"), kClear).credential,
            "password");
  // Device secrets are APOP/CRAM-MD5 secrets, not login passwords.
  EXPECT_FALSE(auth_.verify_plain("alice", "phone-secret-1234", kClear));
  // Revoking one leaves the other and the password working.
  ASSERT_TRUE(store_.revoke_device_secret("alice", "phone").ok());
  EXPECT_FALSE(auth_.verify_apop("alice", kTs, apop("phone-secret-1234"), kClear));
  EXPECT_TRUE(auth_.verify_apop("alice", kTs, apop("laptop-secret-1234"), kClear));
  EXPECT_TRUE(auth_.verify_apop("alice", kTs, apop("alice secret 12"), kClear));
}

TEST_F(AuthAuthenticator, DeviceSecretEqualToPasswordRefused) {
  auto r = store_.add_device_secret("alice", "phone", "alice secret 12");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::invalid);
  ASSERT_TRUE(store_.add_device_secret("alice", "phone", "phone-secret-1234").ok());
  auto p = store_.set_password("alice", "phone-secret-1234");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, Errc::invalid);
}

TEST_F(AuthAuthenticator, DeviceSecretsOnlyDropsThePasswordCopy) {
  ASSERT_TRUE(store_.add_device_secret("alice", "phone", "phone-secret-1234").ok());
  Policy p;
  p.device_secrets_only = true;
  ASSERT_TRUE(store_.set_policy("alice", p).ok());
  auto acct = store_.account("alice");
  ASSERT_TRUE(acct.ok());
  EXPECT_FALSE(acct->password.has_value());
  EXPECT_FALSE(auth_.verify_apop("alice", kTs, apop("alice secret 12"), kClear));
  EXPECT_TRUE(auth_.verify_apop("alice", kTs, apop("phone-secret-1234"), kClear));
  // The hash and the verifiers remain: USER/PASS still works.
  EXPECT_TRUE(auth_.verify_plain("alice", "alice secret 12", kClear));
  // Turning the policy off does not bring the copy back; a new password does.
  ASSERT_TRUE(store_.set_policy("alice", Policy{}).ok());
  EXPECT_FALSE(auth_.verify_apop("alice", kTs, apop("alice secret 12"), kClear));
  ASSERT_TRUE(store_.set_password("alice", "alice secret 13").ok());
  EXPECT_TRUE(auth_.verify_apop("alice", kTs, apop("alice secret 13"), kClear));
}

TEST_F(AuthAuthenticator, PolicyMechanismsAndTls) {
  Policy p;
  p.mechanisms = kMechApop;
  ASSERT_TRUE(store_.set_policy("alice", p).ok());
  auto refused = auth_.verify_plain("alice", "alice secret 12", kTls);
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.failure, apop::pop3::AuthFailure::policy_mechanism);
  EXPECT_TRUE(auth_.verify_apop("alice", kTs, apop("alice secret 12"), kClear));

  p.md5_challenge_requires_tls = true;
  ASSERT_TRUE(store_.set_policy("alice", p).ok());
  auto clear = auth_.verify_apop("alice", kTs, apop("alice secret 12"), kClear);
  EXPECT_FALSE(clear.ok);
  EXPECT_EQ(clear.failure, apop::pop3::AuthFailure::policy_apop_tls);
  EXPECT_TRUE(auth_.verify_apop("alice", kTs, apop("alice secret 12"), kTls));
  // A wrong digest is reported as wrong credentials, never as a policy matter.
  EXPECT_EQ(auth_.verify_apop("alice", kTs, apop("wrong"), kClear).failure,
            apop::pop3::AuthFailure::credentials);

  Policy tls_only;
  tls_only.require_tls = true;
  ASSERT_TRUE(store_.set_policy("mrose", tls_only).ok());
  EXPECT_EQ(auth_.verify_plain("mrose", "tanstaaf", kClear).failure,
            apop::pop3::AuthFailure::policy_tls);
  EXPECT_TRUE(auth_.verify_plain("mrose", "tanstaaf", kTls));
}

// Issue 17 item 6: the account policy md5_challenge_requires_tls (older name
// apop-requires-tls) refuses CRAM-MD5 outside TLS too, after the same work as
// a wrong answer, with its own reason for the log.
TEST_F(AuthAuthenticator, Md5ChallengePolicyCoversCramMd5) {
  ChallengeGenerator challenges("test.example");
  StoreAuthenticator auth(store_, &challenges);
  auto cram = [&](const pop3::AuthContext& ctx, std::string_view secret) {
    auto s = auth.start_sasl("CRAM-MD5", ctx);
    EXPECT_NE(s, nullptr);
    pop3::SaslReply c = s->step(std::nullopt);
    EXPECT_EQ(c.kind, pop3::SaslReply::Kind::challenge);
    const std::string challenge = base64_decode_strict(c.text).value_or("");
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned char b : sasl_detail::hmac_md5(secret, challenge)) {
      hex += kHex[b >> 4];
      hex += kHex[b & 15];
    }
    return s->step(base64_encode("alice " + hex));
  };
  EXPECT_TRUE(cram(kClear, "alice secret 12").succeeded());
  Policy p;
  p.md5_challenge_requires_tls = true;
  ASSERT_TRUE(store_.set_policy("alice", p).ok());
  pop3::SaslReply clear = cram(kClear, "alice secret 12");
  EXPECT_TRUE(clear.failed());
  EXPECT_EQ(clear.result.failure, apop::pop3::AuthFailure::policy_cram_md5_tls);
  EXPECT_TRUE(cram(kTls, "alice secret 12").succeeded());
  // The policy leaves the other mechanisms alone.
  EXPECT_TRUE(auth.verify_plain("alice", "alice secret 12", kClear));
}

TEST_F(AuthAuthenticator, DefaultPolicyAppliesUnlessOverridden) {
  Policy d;
  d.mechanisms = kMechScramSha256 | kMechApop;
  ASSERT_TRUE(store_.set_default_policy(d).ok());
  EXPECT_FALSE(auth_.verify_plain("mrose", "tanstaaf", kTls));
  Policy own;
  own.mechanisms = kMechUser;
  ASSERT_TRUE(store_.set_policy("mrose", own).ok());
  EXPECT_TRUE(auth_.verify_plain("mrose", "tanstaaf", kTls));
  EXPECT_FALSE(auth_.verify_apop("mrose", kTs, apop("tanstaaf"), kTls));
  EXPECT_TRUE(auth_.verify_apop("alice", kTs, apop("alice secret 12"), kTls));
}

TEST(MechanismNames, ParseAndFormat) {
  EXPECT_EQ(parse_mechanisms("apop,SCRAM-SHA-256"), kMechApop | kMechScramSha256);
  EXPECT_EQ(parse_mechanisms("all"), kAllMechanisms);
  EXPECT_EQ(parse_mechanisms(" user , plain "), kMechUser | kMechPlain);
  EXPECT_FALSE(parse_mechanisms("apop,bogus").has_value());
  EXPECT_FALSE(parse_mechanisms("").has_value());
  EXPECT_EQ(format_mechanisms(kMechApop | kMechCramMd5), "apop,cram-md5");
  EXPECT_EQ(parse_mechanisms(format_mechanisms(kAllMechanisms)), kAllMechanisms);
}

}  // namespace
}  // namespace apop::auth
