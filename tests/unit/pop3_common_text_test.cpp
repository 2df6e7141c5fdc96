// common/text.hpp: ASCII case, hex and printable() (in unit_pop3: common is
// header-only and pop3 is the lowest module linking it).
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>

#include "common/text.hpp"

namespace apop {
namespace {

TEST(AsciiCase, LettersOnly) {
  EXPECT_EQ(ascii_lower('A'), 'a');
  EXPECT_EQ(ascii_lower('z'), 'z');
  EXPECT_EQ(ascii_upper('q'), 'Q');
  EXPECT_EQ(ascii_lower('@'), '@');  // 'A' - 1
  EXPECT_EQ(ascii_lower('['), '[');  // 'Z' + 1
  EXPECT_EQ(ascii_upper('`'), '`');  // 'a' - 1
  EXPECT_EQ(ascii_upper('{'), '{');  // 'z' + 1
  // Bytes above 0x7F are never folded, whatever the locale.
  EXPECT_EQ(ascii_lowercase("\xC4\xD6-Mixed 09"), "\xC4\xD6-mixed 09");
  EXPECT_EQ(ascii_uppercase("scram-sha-256\xE4"), "SCRAM-SHA-256\xE4");
}

TEST(AsciiCase, Iequals) {
  EXPECT_TRUE(iequals("quit", "QUIT"));
  EXPECT_TRUE(iequals("Cram-MD5", "CRAM-md5"));
  EXPECT_TRUE(iequals("", ""));
  EXPECT_FALSE(iequals("quit", "QUI"));
  EXPECT_FALSE(iequals("quit", "quiz"));
  EXPECT_FALSE(iequals("@", "`"));  // differ by 0x20 but are not letters
  EXPECT_FALSE(iequals("\xC4", "\xE4"));
  static_assert(iequals("Stls", "STLS"));
}

TEST(AsciiCase, IstartsWith) {
  EXPECT_TRUE(istarts_with("Return-Path: <a@b>", "return-path:"));
  EXPECT_TRUE(istarts_with("abc", ""));
  EXPECT_TRUE(istarts_with("ABC", "abc"));
  EXPECT_FALSE(istarts_with("ab", "abc"));
  EXPECT_FALSE(istarts_with("Return-Pat", "return-path:"));
}

TEST(Hex, Bytes) {
  EXPECT_EQ(to_hex(std::string_view("")), "");
  EXPECT_EQ(to_hex(std::string_view("\x00\x01\x7f\x80\xff", 5)), "00017f80ff");
  const std::array<unsigned char, 3> b{0xde, 0xad, 0x0b};
  EXPECT_EQ(to_hex(b), "dead0b");
  std::string out = "%";
  append_hex(out, std::string_view("\xab"), /*upper=*/true);
  EXPECT_EQ(out, "%AB");
  append_hex(out, b);
  EXPECT_EQ(out, "%ABdead0b");
}

TEST(Hex, Number) {
  EXPECT_EQ(hex_number(0), "0");
  EXPECT_EQ(hex_number(0xa), "a");
  EXPECT_EQ(hex_number(0x1f0), "1f0");
  EXPECT_EQ(hex_number(UINT64_MAX), "ffffffffffffffff");
  EXPECT_EQ(hex_number(0xbeef, /*upper=*/true), "BEEF");
}

TEST(Printable, DefaultsEscapeAndCut) {
  EXPECT_EQ(printable("+OK ready"), "+OK ready");
  EXPECT_EQ(printable(std::string_view("a\r\n\0\x7f\xff", 6)), "a\\x0d\\x0a\\x00\\x7f\\xff");
  EXPECT_EQ(printable(std::string(80, 'x')), std::string(80, 'x'));
  EXPECT_EQ(printable(std::string(81, 'x')), std::string(80, 'x') + "...");
  EXPECT_EQ(printable("abcdef", {.max = 3}), "abc...");
  EXPECT_EQ(printable(""), "");
}

TEST(Printable, QuestionMarks) {
  EXPECT_EQ(printable("a\tb\x80 c", {.hex_escape = false}), "a?b? c");
  EXPECT_EQ(printable("abcdef", {.max = 3, .hex_escape = false, .ellipsis = false}), "abc");
}

TEST(Printable, TokenForKeyValueLogs) {
  // What the server's log lines need (no space, no quote, no backslash).
  const PrintableRules token{
      .max = 64, .space = false, .hex_escape = false, .replace = "\"\\", .ellipsis = false};
  EXPECT_EQ(printable("al ice\"x\\y\x01", token), "al?ice?x?y?");
  EXPECT_EQ(printable(std::string(70, 'u'), token), std::string(64, 'u'));
  EXPECT_EQ(printable("~!", token), "~!");
}

TEST(Trim, BlanksByDefaultOtherOctetsOnRequest) {
  EXPECT_EQ(trim(" \t apop , user\t "), "apop , user");
  EXPECT_EQ(trim(" \t "), "");
  EXPECT_EQ(trim(""), "");
  EXPECT_EQ(trim("\r x \r"), "\r x \r");  // only blanks by default
  EXPECT_EQ(trim("..x..", "."), "x");
  EXPECT_EQ(trim_right(" x \r\t\r", " \t\r"), " x");
  EXPECT_EQ(trim_right("x"), "x");
  static_assert(trim(" a ") == "a");
}

}  // namespace
}  // namespace apop
