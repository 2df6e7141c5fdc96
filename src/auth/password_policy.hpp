// Secret strength policy for `apop user add/passwd` (bypassed by
// --allow-weak, which is the CLI's business). Pure; thread-safe.
#pragma once

#include <string_view>

#include "common/result.hpp"

namespace apop::auth {

// Ok, or Errc::invalid with a human-readable reason (never containing the
// secret) when the secret:
//  - is shorter than limits::kMinSecret or longer than limits::kMaxSecret;
//  - has an octet outside printable ASCII 0x20-0x7E (it must be typeable in an
//    APOP/PASS line: no CR, LF, NUL, TAB, DEL or 8-bit octets);
//  - is (case-insensitively) in a built-in list of common passwords, or is a
//    common word with only digits/symbols around it ("Password2024!");
//  - is one character repeated, a short string repeated ("abcabcabcabc"), or
//    mostly a keyboard/alphabet/digit walk ("qwerty123456", "1qaz2wsx3edc").
Result<void> check_secret_strength(std::string_view secret);

}  // namespace apop::auth
