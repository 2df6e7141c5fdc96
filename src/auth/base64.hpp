// Base64 (RFC 4648 §4, standard alphabet) for SASL (RFC 4422, RFC 5034) and SCRAM.
// Thread-safety: pure functions, safe to call concurrently.
// Ownership: inputs are borrowed for the duration of the call; outputs are owned by the caller.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace apop::auth {

// Encodes `data` with the standard alphabet and '=' padding. The work per octet
// does not depend on the octet's value (no table lookups indexed by secrets).
std::string base64_encode(std::string_view data);

// Decodes the canonical encoding only, and nullopt for anything else:
//  - the length must be a multiple of 4 (padding required);
//  - only A-Z a-z 0-9 + / are allowed, no whitespace or line breaks;
//  - '=' only as the last one or two characters;
//  - the unused trailing bits before the padding must be zero (RFC 4648 §3.5),
//    so every byte string has exactly one accepted encoding.
// The empty string decodes to the empty string.
std::optional<std::string> base64_decode_strict(std::string_view text);

}  // namespace apop::auth
