// Digests and constant-time comparison for APOP (RFC 1939 §7).
// Thread-safety: all functions are pure and safe to call concurrently.
// Ownership: inputs are borrowed for the duration of the call only.
#pragma once

#include <string>
#include <string_view>

namespace apop::auth {

// MD5 of `data` as 32 lowercase hex digits (OpenSSL EVP). Aborts only if
// libcrypto itself fails (not an expected failure).
std::string md5_hex(std::string_view data);

// Equality in time that depends only on the lengths of the inputs (not on
// their contents or on where they first differ). Inputs of unequal length
// compare unequal after the same work (SHA-256 of both, then CRYPTO_memcmp).
bool ct_equal(std::string_view a, std::string_view b);

// RFC 1939 §7: true when client_digest (either case) equals
// hex(MD5(timestamp + secret)). A digest that is not exactly 32 hex digits
// never matches, but costs the same work as one that does.
bool apop_digest_matches(std::string_view timestamp, std::string_view secret,
                         std::string_view client_digest);

}  // namespace apop::auth
