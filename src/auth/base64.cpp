#include "auth/base64.hpp"

#include <cstdint>

namespace apop::auth {
namespace {

// Sextet (0..63) to character, with arithmetic instead of a table lookup, so
// the memory access pattern does not depend on secret data (passwords and
// proofs pass through here).
char encode_sextet(unsigned v) {
  int x = static_cast<int>(v & 0x3f);
  int diff = 'A';
  diff += ((25 - x) >> 8) & ('a' - 26 - 'A');           // 26..63: 'a'..
  diff -= ((51 - x) >> 8) & ('a' - 26 - ('0' - 52));    // 52..63: '0'..
  diff -= ((61 - x) >> 8) & (('0' - 52) - ('+' - 62));  // 62, 63: '+'
  diff += ((62 - x) >> 8) & (('/' - 63) - ('+' - 62));  // 63: '/'
  return static_cast<char>(x + diff);
}

// Character to sextet (0..63), or -1 when it is not in the alphabet. Branch-free
// for the same reason as encode_sextet(). Relies on arithmetic right shift of
// negative ints (guaranteed since C++20).
int decode_char(unsigned char uc) {
  int c = uc;
  int r = -1;
  r += (((0x40 - c) & (c - 0x5b)) >> 8) & (c - 64);  // A-Z -> 0..25
  r += (((0x60 - c) & (c - 0x7b)) >> 8) & (c - 70);  // a-z -> 26..51
  r += (((0x2f - c) & (c - 0x3a)) >> 8) & (c + 5);   // 0-9 -> 52..61
  r += (((0x2a - c) & (c - 0x2c)) >> 8) & 63;        // +   -> 62
  r += (((0x2e - c) & (c - 0x30)) >> 8) & 64;        // /   -> 63
  return r;
}

}  // namespace

std::string base64_encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    std::uint32_t n = (std::uint32_t{static_cast<unsigned char>(data[i])} << 16) |
                      (std::uint32_t{static_cast<unsigned char>(data[i + 1])} << 8) |
                      std::uint32_t{static_cast<unsigned char>(data[i + 2])};
    out += encode_sextet(n >> 18);
    out += encode_sextet(n >> 12);
    out += encode_sextet(n >> 6);
    out += encode_sextet(n);
  }
  std::size_t rest = data.size() - i;
  if (rest == 1) {
    std::uint32_t n = std::uint32_t{static_cast<unsigned char>(data[i])} << 16;
    out += encode_sextet(n >> 18);
    out += encode_sextet(n >> 12);
    out += "==";
  } else if (rest == 2) {
    std::uint32_t n = (std::uint32_t{static_cast<unsigned char>(data[i])} << 16) |
                      (std::uint32_t{static_cast<unsigned char>(data[i + 1])} << 8);
    out += encode_sextet(n >> 18);
    out += encode_sextet(n >> 12);
    out += encode_sextet(n >> 6);
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode_strict(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  if (text.empty()) return std::string();
  // Padding: only "xx==" or "xxx=" at the very end.
  std::size_t pad = 0;
  if (text[text.size() - 1] == '=') pad = text[text.size() - 2] == '=' ? 2 : 1;
  const std::size_t body = text.size() - pad;  // characters that must be in the alphabet

  std::string out;
  out.reserve(text.size() / 4 * 3);
  int bad = 0;  // accumulates (no early exit) whether any character is outside the alphabet
  std::uint32_t acc = 0;
  unsigned bits = 0;
  for (std::size_t i = 0; i < body; ++i) {
    int v = decode_char(static_cast<unsigned char>(text[i]));
    bad |= v;  // -1 sets the sign bit
    acc = (acc << 6) | static_cast<std::uint32_t>(v & 0x3f);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  // Leftover bits (2 with one '=', 4 with "==") must be zero: canonical form only.
  const std::uint32_t leftover = acc & ((1u << bits) - 1u);
  if (bad < 0 || leftover != 0) {
    return std::nullopt;
  }
  return out;
}

}  // namespace apop::auth
