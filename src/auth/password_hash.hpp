// The slow password hash kept for every account (the login password), in the
// PHC string format:  $scrypt$ln=12,r=8,p=1$<salt b64>$<hash b64>
// scrypt (RFC 7914, OpenSSL EVP_PBE_scrypt) is memory-hard; argon2 would be
// the first choice but needs OpenSSL 3.2 (Debian 12 has 3.0).
//
// Used for USER/PASS, AUTH PLAIN and AUTH LOGIN, and to refuse a device secret
// equal to the account password. Unknown users cost one verification against a
// dummy hash with the default parameters, like known ones.
// Thread-safety: all functions are safe to call concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace apop::auth {

struct ScryptParams {
  std::uint32_t log2_n = 12;  // N = 2^12: 4 MiB with r = 8 (about 15 ms on a 2020 core)
  std::uint32_t r = 8;
  std::uint32_t p = 1;
};

// Parameters of new hashes. Stored hashes with other (bounded) parameters
// still verify at their own cost.
inline constexpr ScryptParams kDefaultScrypt{};

// Refused when parsing a stored hash (a tampered database must not make one
// verification cost gigabytes or minutes).
inline constexpr std::uint32_t kMaxScryptLog2N = 20;
inline constexpr std::uint32_t kMaxScryptR = 32;
inline constexpr std::uint32_t kMaxScryptP = 16;

// A new hash with a 16-octet CSPRNG salt. Errc::temporary if the CSPRNG or
// scrypt fails (out of memory).
Result<std::string> hash_password(std::string_view password,
                                  const ScryptParams& params = kDefaultScrypt);

enum class HashCheck {
  match,
  mismatch,
  // An imported hash apop does not verify (malformed, or above the cost
  // limits: foreign_hash.hpp ForeignCheck::refused). Never a match.
  refused,
};

// Checks `password` against `encoded` (constant-time comparison); an
// imported "{SCHEME}..." hash is checked by check_foreign_hash. Work, so
// that an account costs about what an unknown user costs
// (dummy_password_verify: one default scrypt) without doubling it:
//  - our scrypt hash: one scrypt at its own (bounded) parameters;
//  - an imported hash cheaper than one scrypt (digests, MD5-crypt, ...): its
//    check plus one default scrypt;
//  - an imported hash as costly as scrypt or more (bcrypt, SHA-crypt with
//    many rounds, yescrypt): its check only, no scrypt after it (issue 17
//    item 8: a failed check must not cost scrypt on top);
//  - a malformed or out-of-bounds hash, ours or imported: one default
//    scrypt, no other check (refused for an imported one, else mismatch).
HashCheck check_password_hash(std::string_view encoded, std::string_view password);
// check_password_hash(...) == HashCheck::match.
bool verify_password_hash(std::string_view encoded, std::string_view password);

// The work of one verification with default parameters, for unknown users.
void dummy_password_verify(std::string_view password);

// Test seam: how many scrypt computations this process ran (hashing,
// verification and dummy work; relaxed atomic).
std::uint64_t scrypt_runs();

}  // namespace apop::auth
