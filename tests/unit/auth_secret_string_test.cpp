// Issue 17 item 11: plaintext copies of secrets (SecretString, the SASL
// credential struct, Account) are wiped when they stop being used: on
// wipe(), destruction, assignment over them and when moved from, including
// the bytes a short string keeps inside the object.
#include "auth/secret_string.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "auth/credential_store.hpp"
#include "auth/sasl.hpp"

namespace apop::auth {
namespace {

// True when the `n` bytes at `p` (a buffer still owned by a live object) are all zero.
bool zeroed(const char* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (p[i] != '\0') return false;
  }
  return true;
}

constexpr std::string_view kShort = "pw-1234";  // fits the small-string buffer
constexpr std::string_view kLong = "a long secret that lives in a heap buffer, not in the object";

TEST(SecretString, WipeZeroesTheWholeBuffer) {
  for (std::string_view v : {kShort, kLong}) {
    SecretString s(v);
    EXPECT_TRUE(s == v);
    const char* p = s.data();
    const std::size_t cap = s.capacity();
    s.wipe();
    EXPECT_TRUE(s.empty());
    EXPECT_EQ(s.data(), p);            // the buffer is kept...
    EXPECT_TRUE(zeroed(p, cap)) << v;  // ... and overwritten
  }
}

TEST(SecretString, MovedFromLeavesNoCopyBehind) {
  SecretString a(kShort);
  const char* p = a.data();  // inside `a` (small-string buffer)
  const std::size_t cap = a.capacity();
  SecretString b(std::move(a));
  EXPECT_TRUE(b == kShort);
  EXPECT_TRUE(zeroed(p, cap));  // std::string would still hold "w-1234" here

  SecretString c;
  const char* pc = b.data();
  c = std::move(b);
  EXPECT_TRUE(c == kShort);
  EXPECT_TRUE(zeroed(pc, cap));

  std::string source(kShort);
  const char* ps = source.data();
  SecretString d(std::move(source));  // taking an rvalue std::string wipes it too
  EXPECT_TRUE(d == kShort);
  EXPECT_TRUE(zeroed(ps, source.capacity()));
}

TEST(SecretString, AssignmentWipesTheOldValue) {
  SecretString s(kLong);
  const char* p = s.data();
  const std::size_t cap = s.capacity();
  s = SecretString("x");  // fits: the same heap buffer is reused
  ASSERT_EQ(s.data(), p);
  EXPECT_EQ(p[0], 'x');
  EXPECT_TRUE(zeroed(p + 1, cap - 1));
  const SecretString other(kShort);
  s = other;
  EXPECT_TRUE(s == kShort);
  EXPECT_FALSE(s == "pw-1235");
  EXPECT_FALSE(s == "pw-123");
}

// The struct that carries a user's secret to the CRAM-MD5/PLAIN/SCRAM checks
// and the Account it is copied from keep their plaintext in SecretStrings.
TEST(SecretString, SaslCredentialsAndAccountWipeWhenMovedFrom) {
  static_assert(std::is_same_v<decltype(SaslCredentials::plaintext), std::optional<SecretString>>);
  static_assert(std::is_same_v<decltype(SaslCredentials::extra_secrets)::value_type::second_type,
                               SecretString>);
  static_assert(std::is_same_v<decltype(Account::password), std::optional<SecretString>>);
  static_assert(std::is_same_v<decltype(NamedSecret::secret), SecretString>);

  SaslCredentials c;
  c.plaintext = kShort;
  c.extra_secrets.emplace_back("device:phone", std::string(kShort));
  const char* p = c.plaintext->data();
  const char* e = c.extra_secrets[0].second.data();
  const std::size_t cap = c.plaintext->capacity();
  SaslCredentials moved = std::move(c);
  EXPECT_TRUE(*moved.plaintext == kShort);
  EXPECT_TRUE(zeroed(p, cap));  // `c` is alive, its optional still engaged
  // The vector's buffer moved as a whole: the element was not copied.
  EXPECT_EQ(moved.extra_secrets[0].second.data(), e);

  Account a;
  a.password = std::string(kShort);
  const char* ap = a.password->data();
  Account b(std::move(a));
  EXPECT_TRUE(*b.password == kShort);
  EXPECT_TRUE(zeroed(ap, cap));
}

}  // namespace
}  // namespace apop::auth
