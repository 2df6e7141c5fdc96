#include "auth/random.hpp"

#include <gtest/gtest.h>

#include <array>
#include <map>
#include <set>

namespace apop::auth {
namespace {

TEST(AuthRandom, RandomBytesFillsAndDiffers) {
  std::array<unsigned char, 32> a{};
  std::array<unsigned char, 32> b{};
  ASSERT_TRUE(random_bytes(a).ok());
  ASSERT_TRUE(random_bytes(b).ok());
  EXPECT_NE(a, b);
  EXPECT_NE(a, (std::array<unsigned char, 32>{}));
  std::span<unsigned char> empty;
  EXPECT_TRUE(random_bytes(empty).ok());
}

TEST(AuthRandom, RandomHex) {
  std::string h = random_hex(16);
  ASSERT_EQ(h.size(), 32u);
  for (char c : h) EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << c;
  EXPECT_NE(random_hex(16), random_hex(16));
  EXPECT_EQ(random_hex(0), "");
}

TEST(AuthRandom, GenerateSecretLengthAndAlphabet) {
  std::string s = generate_secret();
  EXPECT_EQ(s.size(), limits::kGeneratedSecret);
  EXPECT_GE(s.size(), 24u);
  EXPECT_EQ(generate_secret(40).size(), 40u);
  EXPECT_EQ(generate_secret(3).size(), 24u);  // never below 24
  for (int i = 0; i < 100; ++i) {
    for (char c : generate_secret()) {
      EXPECT_NE(kSecretAlphabet.find(c), std::string_view::npos) << c;
    }
  }
  for (char c : std::string_view("0O1lI"))
    EXPECT_EQ(kSecretAlphabet.find(c), std::string_view::npos);
  EXPECT_NE(generate_secret(), generate_secret());
}

TEST(AuthRandom, GenerateSecretRoughlyUniform) {
  // 57 symbols, 57,000 draws: each expected ~1000. A modulo-biased or broken
  // generator (e.g. one symbol never drawn) fails these loose bounds.
  std::map<char, int> counts;
  std::size_t total = 0;
  while (total < 57000) {
    for (char c : generate_secret(1000)) ++counts[c];
    total += 1000;
  }
  EXPECT_EQ(counts.size(), kSecretAlphabet.size());
  for (auto [c, n] : counts) {
    EXPECT_GT(n, 800) << c;
    EXPECT_LT(n, 1200) << c;
  }
  // Modulo bias (byte % 57) would favour the first 256 % 57 = 28 symbols:
  // their share would be 140/256 = 0.547 instead of 28/57 = 0.491 (sigma of
  // the share here is ~0.002).
  int first = 0;
  for (std::size_t i = 0; i < 28; ++i) first += counts[kSecretAlphabet[i]];
  double share = static_cast<double>(first) / static_cast<double>(total);
  EXPECT_NEAR(share, 28.0 / 57.0, 0.015);
}

}  // namespace
}  // namespace apop::auth
