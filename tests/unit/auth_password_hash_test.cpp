#include "auth/password_hash.hpp"

#include <gtest/gtest.h>

#include <string>

namespace apop::auth {
namespace {

TEST(PasswordHash, RoundTripAndFormat) {
  auto h = hash_password("correct horse battery staple");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->substr(0, 22), "$scrypt$ln=12,r=8,p=1$");
  EXPECT_TRUE(verify_password_hash(*h, "correct horse battery staple"));
  EXPECT_FALSE(verify_password_hash(*h, "correct horse battery stapl"));
  EXPECT_FALSE(verify_password_hash(*h, ""));
  auto again = hash_password("correct horse battery staple");
  ASSERT_TRUE(again.ok());
  EXPECT_NE(*h, *again);  // random salt
}

TEST(PasswordHash, OtherParametersStillVerify) {
  auto h = hash_password("pw", ScryptParams{10, 4, 2});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->substr(0, 22), "$scrypt$ln=10,r=4,p=2$");
  EXPECT_TRUE(verify_password_hash(*h, "pw"));
}

TEST(PasswordHash, MalformedOrOutOfBoundsNeverMatches) {
  auto h = hash_password("pw");
  ASSERT_TRUE(h.ok());
  std::string good = *h;
  for (std::string bad : {std::string(), std::string("pw"), std::string("$scrypt$"),
                          std::string("$scrypt$ln=12,r=8,p=1$$"),
                          std::string("$scrypt$ln=40,r=8,p=1") + good.substr(good.find("$", 9)),
                          std::string("$scrypt$ln=12,r=0,p=1") + good.substr(good.find("$", 9)),
                          std::string("$scrypt$ln=12,r=8") + good.substr(good.find("$", 9)),
                          std::string("$scrypt$ln=12,r=8,p=1,x=2") + good.substr(good.find("$", 9)),
                          good.substr(0, good.size() - 2), good + "A", good + "$extra"}) {
    EXPECT_FALSE(verify_password_hash(bad, "pw")) << bad;
  }
}

}  // namespace
}  // namespace apop::auth
