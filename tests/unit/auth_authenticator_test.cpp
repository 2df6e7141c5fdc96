#include "auth/authenticator.hpp"

#include <gtest/gtest.h>

#include <string>

#include "auth/credential_store.hpp"
#include "auth/digest.hpp"

namespace apop::auth {
namespace {

constexpr std::string_view kTs = "<1896.697170952@dbc.mtview.ca.us>";

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
  EXPECT_TRUE(auth_.verify_apop("mrose", kTs, "c4c9334bac560ecc979e58001b3e22fb"));
  EXPECT_TRUE(auth_.verify_apop("mrose", kTs, "C4C9334BAC560ECC979E58001B3E22FB"));
}

TEST_F(AuthAuthenticator, ApopWrongDigestOrUser) {
  EXPECT_FALSE(auth_.verify_apop("mrose", kTs, "c4c9334bac560ecc979e58001b3e22fc"));
  EXPECT_FALSE(auth_.verify_apop("mrose", kTs, ""));
  EXPECT_FALSE(auth_.verify_apop("mrose", "<other@ts>", "c4c9334bac560ecc979e58001b3e22fb"));
  // alice's digest for this timestamp does not log in mrose, and vice versa.
  std::string alice = md5_hex(std::string(kTs) + "alice secret 12");
  EXPECT_TRUE(auth_.verify_apop("alice", kTs, alice));
  EXPECT_FALSE(auth_.verify_apop("mrose", kTs, alice));
  EXPECT_FALSE(auth_.verify_apop("alice", kTs, "c4c9334bac560ecc979e58001b3e22fb"));
}

TEST_F(AuthAuthenticator, UnknownUserAlwaysFalse) {
  EXPECT_FALSE(auth_.verify_apop("nobody", kTs, "c4c9334bac560ecc979e58001b3e22fb"));
  EXPECT_FALSE(auth_.verify_apop("", kTs, "c4c9334bac560ecc979e58001b3e22fb"));
  EXPECT_FALSE(auth_.verify_apop("../x", kTs, "c4c9334bac560ecc979e58001b3e22fb"));
  EXPECT_FALSE(auth_.verify_plain("nobody", "tanstaaf"));
  // Even the dummy secret's own digest does not log in an unknown user.
  EXPECT_FALSE(auth_.verify_plain("nobody", "apop-dummy-secret-for-unknown-users"));
  std::string dummy = md5_hex(std::string(kTs) + "apop-dummy-secret-for-unknown-users");
  EXPECT_FALSE(auth_.verify_apop("nobody", kTs, dummy));
}

TEST_F(AuthAuthenticator, Plain) {
  EXPECT_TRUE(auth_.verify_plain("mrose", "tanstaaf"));
  EXPECT_TRUE(auth_.verify_plain("alice", "alice secret 12"));
  EXPECT_FALSE(auth_.verify_plain("mrose", "tanstaaF"));
  EXPECT_FALSE(auth_.verify_plain("mrose", "tanstaa"));
  EXPECT_FALSE(auth_.verify_plain("mrose", "tanstaaf "));
  EXPECT_FALSE(auth_.verify_plain("mrose", ""));
  EXPECT_FALSE(auth_.verify_plain("alice", "tanstaaf"));
}

TEST_F(AuthAuthenticator, FollowsStoreChanges) {
  ASSERT_TRUE(store_.set_secret("mrose", "new-secret-value").ok());
  EXPECT_FALSE(auth_.verify_plain("mrose", "tanstaaf"));
  EXPECT_TRUE(auth_.verify_plain("mrose", "new-secret-value"));
  ASSERT_TRUE(store_.remove("mrose").ok());
  EXPECT_FALSE(auth_.verify_plain("mrose", "new-secret-value"));
}

}  // namespace
}  // namespace apop::auth
