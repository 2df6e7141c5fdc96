#include "auth/password_policy.hpp"

#include <gtest/gtest.h>

#include <string>

#include "auth/random.hpp"
#include "common/limits.hpp"

namespace apop::auth {
namespace {

void expect_weak(std::string_view s) {
  auto r = check_secret_strength(s);
  ASSERT_FALSE(r.ok()) << "accepted: " << s;
  EXPECT_EQ(r.error().code, Errc::invalid) << s;
  EXPECT_FALSE(r.error().message.empty());
  // The reason never quotes the secret.
  if (s.size() >= 4) {
    EXPECT_EQ(r.error().message.find(s), std::string::npos) << s;
  }
}

TEST(AuthPasswordPolicy, AcceptsStrongSecrets) {
  for (const char* s : {"Tr0ub4dor&3xq", "correct horse battery staple", "gN7#kq!Zp2@wLm",
                        "my cat eats 7 green owls", "xK9mPq2vLr8T"}) {
    auto r = check_secret_strength(s);
    EXPECT_TRUE(r.ok()) << s << ": " << (r.ok() ? "" : r.error().message);
  }
  for (int i = 0; i < 200; ++i) {
    std::string g = generate_secret();
    auto r = check_secret_strength(g);
    EXPECT_TRUE(r.ok()) << g << ": " << (r.ok() ? "" : r.error().message);
  }
}

TEST(AuthPasswordPolicy, Length) {
  expect_weak("");
  expect_weak("Xk9#mP2q!Lw");                               // 11
  EXPECT_TRUE(check_secret_strength("Xk9#mP2q!Lwz").ok());  // 12
  std::string longest = generate_secret(limits::kMaxSecret);
  EXPECT_TRUE(check_secret_strength(longest).ok());
  expect_weak(generate_secret(limits::kMaxSecret + 1));
}

TEST(AuthPasswordPolicy, OnlyPrintableAscii) {
  const std::string base = "Xk9#mP2q!Lwz";
  for (char bad : {'\0', '\r', '\n', '\t', '\x1b', '\x7f', '\x80', '\xff'}) {
    std::string s = base;
    s.insert(s.begin() + 5, bad);
    expect_weak(s);
  }
  expect_weak("Xk9#mP2q\xc3\xa9Lwz");                         // UTF-8 é
  EXPECT_TRUE(check_secret_strength("Xk9 mP2q Lwz ~").ok());  // spaces are fine
}

TEST(AuthPasswordPolicy, CommonPasswordsCaseInsensitive) {
  for (const char* s : {"password1234", "123456789012", "qwertyuiop123", "iloveyou1234",
                        "passwordpassword", "abcdefghijkl", "PASSWORD1234", "Password1234",
                        "IloveYou1234", "1qaz2wsx3edc", "trustno1trustno1", "letmein12345",
                        "correcthorsebatterystaple", "ManchesterUnited", "!qaz@wsx#edc"}) {
    expect_weak(s);
  }
}

TEST(AuthPasswordPolicy, CommonWordWithDecoration) {
  for (const char* s : {"Password2024!", "!!Password!!!", "2024qwerty2024", "Summer2024!!!",
                        "administrator9", "Welcome#12345", "letmein!!!!!!"}) {
    expect_weak(s);
  }
}

TEST(AuthPasswordPolicy, Patterns) {
  expect_weak("aaaaaaaaaaaaaaaa");  // one character
  expect_weak("############");      // one character
  expect_weak("xyzxyzxyzxyz");      // short word repeated
  expect_weak("Blue7Blue7Blue7");   // short word repeated, case-insensitive
  expect_weak("blue7BLUE7blue7");
  expect_weak("mnopqrstuvwxyz");  // alphabet walk
  expect_weak("zyxwvutsrqponm");  // reversed
  expect_weak("98765432109876");  // digits walk down, wrapping
  expect_weak("34567890123456");  // digits walk up, wrapping
  expect_weak("ytrewqasdfgh");    // keyboard rows
  expect_weak("qwerty123456");
  expect_weak("zxcvbnmlkjhg");
  expect_weak("2wsx3edc4rfv");  // keyboard columns
}

}  // namespace
}  // namespace apop::auth
