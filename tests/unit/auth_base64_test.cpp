#include "auth/base64.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace apop::auth {
namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// A deliberately naive reference encoder (table lookups) to check the
// branch-free one against.
std::string reference_encode(std::string_view in) {
  std::string out;
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    unsigned n = (static_cast<unsigned char>(in[i]) << 16) |
                 (static_cast<unsigned char>(in[i + 1]) << 8) |
                 static_cast<unsigned char>(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(n >> s) & 63];
  }
  if (in.size() - i == 1) {
    unsigned n = static_cast<unsigned char>(in[i]) << 16;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += "==";
  } else if (in.size() - i == 2) {
    unsigned n =
        (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

TEST(AuthBase64, Rfc4648Section10Vectors) {
  const std::pair<std::string_view, std::string_view> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded);
    auto decoded = base64_decode_strict(encoded);
    ASSERT_TRUE(decoded.has_value()) << encoded;
    EXPECT_EQ(*decoded, plain);
  }
}

TEST(AuthBase64, EveryByteValueRoundTrips) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (std::size_t len = 0; len <= all.size(); ++len) {
    for (std::size_t off : {std::size_t{0}, std::size_t{1}, std::size_t{2}}) {
      if (off + len > all.size()) continue;
      std::string_view in = std::string_view(all).substr(off, len);
      std::string enc = base64_encode(in);
      ASSERT_EQ(enc, reference_encode(in)) << "len " << len;
      auto dec = base64_decode_strict(enc);
      ASSERT_TRUE(dec.has_value()) << enc;
      ASSERT_EQ(*dec, in);
    }
  }
}

TEST(AuthBase64, EncodesEverySextet) {
  // Three octets per sextet value v: 0b vvvvvv vvvvvv vvvvvv vvvvvv pattern.
  for (unsigned v = 0; v < 64; ++v) {
    unsigned n = (v << 18) | (v << 12) | (v << 6) | v;
    std::string in{static_cast<char>(n >> 16), static_cast<char>((n >> 8) & 0xff),
                   static_cast<char>(n & 0xff)};
    EXPECT_EQ(base64_encode(in), std::string(4, kAlphabet[v])) << v;
  }
}

TEST(AuthBase64, DecodesOnlyTheAlphabet) {
  for (int c = 0; c < 256; ++c) {
    std::string text = "QUJD";  // "ABC"
    text[1] = static_cast<char>(c);
    const bool in_alphabet = kAlphabet.find(static_cast<char>(c)) != std::string_view::npos;
    auto dec = base64_decode_strict(text);
    EXPECT_EQ(dec.has_value(), in_alphabet) << "char " << c;
    if (in_alphabet) {
      ASSERT_TRUE(dec.has_value());
      EXPECT_EQ(base64_encode(*dec), text);  // canonical: re-encodes to the same text
    }
  }
}

TEST(AuthBase64, RejectsNonZeroTrailingBits) {
  for (char x : kAlphabet) {
    const auto v = static_cast<unsigned>(kAlphabet.find(x));
    std::string two = std::string("Q") + x + "==";  // 4 unused bits
    EXPECT_EQ(base64_decode_strict(two).has_value(), (v & 0x0f) == 0) << two;
    std::string three = std::string("QU") + x + "=";  // 2 unused bits
    EXPECT_EQ(base64_decode_strict(three).has_value(), (v & 0x03) == 0) << three;
  }
  EXPECT_FALSE(base64_decode_strict("Zh==").has_value());
  EXPECT_FALSE(base64_decode_strict("Zm9=").has_value());
  EXPECT_TRUE(base64_decode_strict("Zg==").has_value());
  EXPECT_TRUE(base64_decode_strict("Zm8=").has_value());
}

TEST(AuthBase64, RejectsMalformedInput) {
  const std::string_view bad[] = {
      "Z",        "Zg",       "Zg=",      "Zm9vY",     "Zm9vYg=",    "Zm9vYg",   "====",  "Z===",
      "=Zm9",     "Zm=v",     "Z=g=",     "Zg==Zg==",  "Zg==Zm9v",   "Zm9v====", " Zm9v", "Zm9v ",
      "Zm 9v",    "Zm9v\r\n", "Zm9v\n",   "Zm\r\n9v",  "Zm9v\t",     "Zm9-",     "Zm9_",  "Zm9v.",
      "Zm9v!!!!", "Zg=\n",    "====Zm9v", "Zm9vYmFy=", "Zm9vYmFy==", "Zm9vYmF=", "YQ=a",
  };
  for (std::string_view b : bad) {
    EXPECT_FALSE(base64_decode_strict(b).has_value()) << "[" << b << "]";
  }
  // Embedded NUL and high-bit octets.
  EXPECT_FALSE(base64_decode_strict(std::string_view("Zm\0v", 4)).has_value());
  EXPECT_FALSE(base64_decode_strict(std::string_view("Zm9v\0\0\0\0", 8)).has_value());
  EXPECT_FALSE(base64_decode_strict("Zm9\xc3").has_value());
  EXPECT_FALSE(base64_decode_strict("\xff\xff\xff\xff").has_value());
}

TEST(AuthBase64, EmptyDecodesToEmpty) {
  auto dec = base64_decode_strict("");
  ASSERT_TRUE(dec.has_value());
  EXPECT_TRUE(dec->empty());
  EXPECT_EQ(base64_encode(""), "");
}

}  // namespace
}  // namespace apop::auth
