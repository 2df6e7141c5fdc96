#include "auth/username.hpp"

#include <gtest/gtest.h>

#include <string>

#include "common/limits.hpp"

namespace apop::auth {
namespace {

TEST(AuthUsername, Valid) {
  for (const char* s : {"a", "Z", "7", "alice", "bob.smith", "bob_smith", "bob+tag", "bob-smith",
                        "bob@example.org", "a.b.c", "a1", "x.", "A-_+@.9"}) {
    EXPECT_TRUE(is_valid_username(s)) << s;
  }
  EXPECT_TRUE(is_valid_username(std::string(limits::kMaxUsername, 'a')));
}

TEST(AuthUsername, Invalid) {
  for (std::string_view s :
       {std::string_view(""),        std::string_view("."),           std::string_view(".."),
        std::string_view(".alice"),  std::string_view("-alice"),      std::string_view("_alice"),
        std::string_view("+a"),      std::string_view("@a"),          std::string_view("a..b"),
        std::string_view("a/b"),     std::string_view("../etc"),      std::string_view("a\\b"),
        std::string_view("a b"),     std::string_view("a\tb"),        std::string_view("a\nb"),
        std::string_view("a\0b", 3), std::string_view("caf\xc3\xa9"), std::string_view("a:b"),
        std::string_view("a*"),      std::string_view("a%b"),         std::string_view("a~")}) {
    EXPECT_FALSE(is_valid_username(s)) << s;
  }
  EXPECT_FALSE(is_valid_username(std::string(limits::kMaxUsername + 1, 'a')));
}

}  // namespace
}  // namespace apop::auth
