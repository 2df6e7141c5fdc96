// Internal to the SASL mechanisms (sasl.cpp, sasl_scram.cpp): OpenSSL wrappers,
// the process-random key behind dummy credentials, and the password check
// shared by PLAIN and LOGIN. Not for use outside src/auth.
// Thread-safety: all functions are safe to call concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "auth/sasl.hpp"

namespace apop::auth {

// The hash function of a SCRAM mechanism.
enum class ScramHash { sha1, sha256 };

namespace sasl_detail {

// Digest length in octets (20 or 32).
std::size_t hash_size(ScramHash h);
// H(data). Aborts only if libcrypto itself fails.
std::string hash(ScramHash h, std::string_view data);
// HMAC(key, data) with H. Aborts only if libcrypto itself fails.
std::string hmac(ScramHash h, std::string_view key, std::string_view data);
// HMAC-MD5(key, data) (RFC 2104, for CRAM-MD5).
std::string hmac_md5(std::string_view key, std::string_view data);

// RFC 5802 §3 verifier; empty (iterations == 0) when salt is empty or
// iterations is 0 or above INT_MAX.
ScramVerifier derive_verifier(ScramHash h, std::string_view password, std::string_view salt,
                              std::uint32_t iterations);
// True when `v` has a salt, a non-zero iteration count and keys of the right size.
bool verifier_usable(ScramHash h, const ScramVerifier& v);

// HMAC-SHA-256(process key, purpose NUL user): 32 octets, stable for the life
// of the process, unpredictable without the key (32 CSPRNG octets drawn on
// first use; aborts if the CSPRNG fails).
std::string keyed_tag(std::string_view purpose, std::string_view user);
// A 16-octet salt for `user`, derived with keyed_tag(): used for dummy
// verifiers (unknown users) and verifiers derived on the fly from plaintext, so
// both look like a real stored salt that stays the same on every attempt.
std::string fallback_salt(ScramHash h, std::string_view user);
// A verifier for an unknown user: fallback_salt(), kScramMinIterations, keys
// from keyed_tag(). Costs no PBKDF2 (as a stored verifier costs none).
ScramVerifier dummy_verifier(ScramHash h, std::string_view user);

// The PLAIN/LOGIN check of `password` for `user`. With a stored slow hash
// (every account of a CredentialStore has one): verify_password_hash(). An
// unknown user (nullopt) costs one dummy verification of the slow hash.
// Credentials without a hash (built by hand) fall back to:
//  - a usable stored SCRAM-SHA-256 (else SCRAM-SHA-1) verifier: derive with its
//    salt and iteration count, compare StoredKey in constant time;
//  - else a plaintext secret: constant-time compare, plus one PBKDF2-SHA-256 at
//    kScramMinIterations whose result is discarded (to cost what the others cost);
//  - else (unknown user, or nothing usable): PBKDF2-SHA-256 at kScramMinIterations
//    against a dummy verifier; always false.
// Known limitation: a stored verifier with more iterations than
// kScramMinIterations costs more than an unknown user does.
bool check_password(const std::optional<SaslCredentials>& creds, std::string_view user,
                    std::string_view password);

// Overwrites the string's bytes (OPENSSL_cleanse), then clears it.
void cleanse(std::string& s);

}  // namespace sasl_detail
}  // namespace apop::auth
