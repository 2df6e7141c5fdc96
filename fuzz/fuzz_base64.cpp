// SASL's base64 (src/auth/base64.hpp) on arbitrary bytes. Invariants: the
// strict decoder accepts only the canonical encoding (decode then encode gives
// the input back), only alphabet characters with '=' padding at the end, and
// the decoded length is exactly what the length of the text allows; encoding
// any bytes gives text the decoder turns back into the same bytes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "auth/base64.hpp"

namespace {

bool in_alphabet(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);

  // The input as text to decode.
  if (auto decoded = apop::auth::base64_decode_strict(in)) {
    if (in.size() % 4 != 0) __builtin_trap();
    std::size_t pad = 0;
    while (pad < in.size() && in[in.size() - 1 - pad] == '=') ++pad;
    if (pad > 2) __builtin_trap();
    for (std::size_t i = 0; i + pad < in.size(); ++i) {
      if (!in_alphabet(in[i])) __builtin_trap();
    }
    if (decoded->size() != in.size() / 4 * 3 - pad) __builtin_trap();
    if (apop::auth::base64_encode(*decoded) != in) __builtin_trap();
  }

  // The input as bytes to encode.
  const std::string text = apop::auth::base64_encode(in);
  if (text.size() != (size + 2) / 3 * 4) __builtin_trap();
  auto back = apop::auth::base64_decode_strict(text);
  if (!back || *back != in) __builtin_trap();
  return 0;
}
