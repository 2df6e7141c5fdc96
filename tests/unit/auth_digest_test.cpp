#include "auth/digest.hpp"

#include <gtest/gtest.h>

#include <string>

namespace apop::auth {
namespace {

constexpr std::string_view kTs = "<1896.697170952@dbc.mtview.ca.us>";
constexpr std::string_view kSecret = "tanstaaf";
constexpr std::string_view kDigest = "c4c9334bac560ecc979e58001b3e22fb";

TEST(AuthDigest, Md5KnownVectors) {
  EXPECT_EQ(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(md5_hex(std::string(kTs) + std::string(kSecret)), kDigest);
}

TEST(AuthDigest, Md5IsLowercaseHex) {
  std::string h = md5_hex("The quick brown fox");
  ASSERT_EQ(h.size(), 32u);
  for (char c : h) EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << c;
}

TEST(AuthDigest, CtEqual) {
  EXPECT_TRUE(ct_equal("", ""));
  EXPECT_TRUE(ct_equal("secret", "secret"));
  EXPECT_FALSE(ct_equal("secret", "secreT"));
  EXPECT_FALSE(ct_equal("secret", "secret "));
  EXPECT_FALSE(ct_equal("secret", ""));
  EXPECT_FALSE(ct_equal("", "x"));
  EXPECT_TRUE(ct_equal(std::string_view("a\0b", 3), std::string_view("a\0b", 3)));
  EXPECT_FALSE(ct_equal(std::string_view("a\0b", 3), std::string_view("a\0c", 3)));
}

TEST(AuthDigest, ApopRfc1939Example) { EXPECT_TRUE(apop_digest_matches(kTs, kSecret, kDigest)); }

TEST(AuthDigest, ApopAcceptsUpperAndMixedCase) {
  EXPECT_TRUE(apop_digest_matches(kTs, kSecret, "C4C9334BAC560ECC979E58001B3E22FB"));
  EXPECT_TRUE(apop_digest_matches(kTs, kSecret, "C4c9334bAC560ecc979E58001b3e22Fb"));
}

TEST(AuthDigest, ApopRejectsWrongDigests) {
  EXPECT_FALSE(apop_digest_matches(kTs, kSecret, "c4c9334bac560ecc979e58001b3e22fc"));
  EXPECT_FALSE(apop_digest_matches(kTs, "tanstaaF", kDigest));
  EXPECT_FALSE(apop_digest_matches("<1896.697170953@dbc.mtview.ca.us>", kSecret, kDigest));
  // Too short, too long, empty.
  EXPECT_FALSE(apop_digest_matches(kTs, kSecret, kDigest.substr(0, 31)));
  EXPECT_FALSE(apop_digest_matches(kTs, kSecret, std::string(kDigest) + "0"));
  EXPECT_FALSE(apop_digest_matches(kTs, kSecret, ""));
  // Non-hex characters never match, wherever they are.
  for (char bad : {'g', 'G', 'z', '#', ' ', '\0', '\x83', '\x03'}) {
    for (std::size_t pos : {std::size_t{0}, std::size_t{5}, std::size_t{31}}) {
      std::string g(kDigest);
      g[pos] = bad;
      EXPECT_FALSE(apop_digest_matches(kTs, kSecret, g)) << "pos " << pos;
    }
  }
  // Same bytes with spaces around must not match.
  EXPECT_FALSE(apop_digest_matches(kTs, kSecret, " " + std::string(kDigest).substr(1)));
}

}  // namespace
}  // namespace apop::auth
