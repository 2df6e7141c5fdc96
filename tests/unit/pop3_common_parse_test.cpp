// common/parse.hpp: the one decimal parser (in unit_pop3: common is
// header-only and pop3 is the lowest module linking it).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "common/parse.hpp"

namespace apop {
namespace {

TEST(ParseDecimal, DigitsOnly) {
  EXPECT_EQ(parse_decimal("0"), 0u);
  EXPECT_EQ(parse_decimal("42"), 42u);
  EXPECT_EQ(parse_decimal("18446744073709551615"), UINT64_MAX);
  for (const char* bad : {"", "+1", "-1", "-0", " 1", "1 ", "1x", "x1", "0x10", "1.5", "1e3", "\t7",
                          "7\n", "１", "18446744073709551616", "99999999999999999999"}) {
    EXPECT_FALSE(parse_decimal(bad).has_value()) << bad;
  }
}

TEST(ParseDecimal, TypeBoundsTheValue) {
  EXPECT_EQ(parse_decimal<std::uint32_t>("4294967295"), 4294967295u);
  EXPECT_FALSE(parse_decimal<std::uint32_t>("4294967296").has_value());
  EXPECT_EQ(parse_decimal<std::uint16_t>("65535"), 65535u);
  EXPECT_FALSE(parse_decimal<std::uint16_t>("65536").has_value());
  EXPECT_EQ(parse_decimal<std::uint8_t>("255"), 255u);
  EXPECT_FALSE(parse_decimal<std::uint8_t>("256").has_value());
}

TEST(ParseDecimal, LeadingZerosByDefault) {
  EXPECT_EQ(parse_decimal("007"), 7u);
  EXPECT_EQ(parse_decimal("000"), 0u);
  // A zero run longer than any value (RFC 1939 message numbers in apop).
  EXPECT_EQ(parse_decimal<std::uint32_t>(std::string(100, '0') + "3"), 3u);
  EXPECT_EQ(parse_decimal("0000"
                          "18446744073709551615"),
            UINT64_MAX);
  EXPECT_FALSE(parse_decimal("0000"
                             "18446744073709551616")
                   .has_value());
}

TEST(ParseDecimal, LeadingZerosRefused) {
  const DecimalRules strict{.leading_zeros = false};
  EXPECT_EQ(parse_decimal("0", strict), 0u);
  EXPECT_EQ(parse_decimal("10", strict), 10u);
  EXPECT_FALSE(parse_decimal("00", strict).has_value());
  EXPECT_FALSE(parse_decimal("01", strict).has_value());
}

TEST(ParseDecimal, MaxValue) {
  const DecimalRules rules{.max = 128};
  EXPECT_EQ(parse_decimal("128", rules), 128u);
  EXPECT_EQ(parse_decimal("0128", rules), 128u);
  EXPECT_FALSE(parse_decimal("129", rules).has_value());
  EXPECT_FALSE(parse_decimal("99999999999999999999", rules).has_value());
  // The type's own bound applies first when it is lower.
  EXPECT_FALSE(parse_decimal<std::uint8_t>("300", {.max = 1000}).has_value());
}

TEST(ParseDecimal, MaxDigitsCountsLeadingZeros) {
  const DecimalRules rules{.max_digits = 3};
  EXPECT_EQ(parse_decimal("999", rules), 999u);
  EXPECT_EQ(parse_decimal("007", rules), 7u);
  EXPECT_FALSE(parse_decimal("0007", rules).has_value());
  EXPECT_FALSE(parse_decimal("1000", rules).has_value());
}

TEST(LeadingDigits, Prefix) {
  EXPECT_EQ(leading_digits("123abc"), "123");
  EXPECT_EQ(leading_digits("0042"), "0042");
  EXPECT_EQ(leading_digits("abc"), "");
  EXPECT_EQ(leading_digits(""), "");
  EXPECT_EQ(leading_digits("12 3"), "12");
}

}  // namespace
}  // namespace apop
