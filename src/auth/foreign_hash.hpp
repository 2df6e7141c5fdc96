// Password hashes imported from other servers (`apop user import`), kept in
// Dovecot's "{SCHEME}data" notation in the password_hash column instead of our
// scrypt PHC string. They verify USER/PASS, AUTH PLAIN and AUTH LOGIN only:
// APOP, CRAM-MD5 and SCRAM need the password (or a verifier derived from it),
// which a one-way hash does not give. The first successful plaintext login
// over TLS replaces the foreign hash by our own hash, SCRAM verifiers and
// encrypted copy (StoreAuthenticator::verify_plain), as Dovecot admins do
// with password upgrades on login.
//
// Schemes (Dovecot names, case-insensitive; ".HEX"/".B64" suffixes where
// Dovecot allows them):
//   CRYPT, MD5-CRYPT, SHA256-CRYPT, SHA512-CRYPT, BLF-CRYPT  crypt(3) strings
//       ($1$, $5$, $6$, $2b$/$2y$, $y$ ...) verified by libxcrypt's crypt_r
//       (Debian's libcrypt); only hashes whose method libxcrypt supports are
//       accepted (crypt_checksalt), DES crypt is refused (8-character limit).
//       The cost of a check is capped (limits.hpp kMaxImportedBcryptCost,
//       kMaxImportedShaCryptRounds, kMaxImportedScryptWork: about 200 ms of
//       one core at most, docs/security.md): a costlier hash is refused at
//       import with the reason and never verified at login; methods whose
//       cost apop does not parse ($sha1$, SunMD5 $md5, ...) are refused.
//   SHA, SHA256, SHA512            unsalted digest (base64, or hex with .HEX)
//   SSHA, SSHA256, SSHA512, SMD5   digest || salt (base64, or hex with .HEX)
//   PLAIN-MD5, LDAP-MD5            unsalted MD5 (hex / base64)
// Everything else (ARGON2I/ARGON2ID: not in OpenSSL 3.0; PBKDF2, DIGEST-MD5,
// RPA, OTP, ...) is refused at import with the reason.
//
// Thread-safety: all functions are pure (crypt_r with a per-call buffer).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace apop::auth {

// True when `encoded` is in "{SCHEME}..." form (a foreign hash, not ours).
bool is_foreign_hash(std::string_view encoded);

// Checks an imported "{SCHEME}data" hash and returns it normalised (scheme
// upper-case), or nullopt with `why` set (for the import report; never
// contains the hash).
std::optional<std::string> normalize_foreign_hash(std::string_view encoded, std::string& why);

// The scheme name of a foreign hash ("SHA512-CRYPT"), empty if not foreign.
std::string foreign_scheme(std::string_view encoded);

// The outcome of checking a password against a stored foreign hash.
enum class ForeignCheck {
  match,
  mismatch,
  // Not checked at all (no crypt(3) run): the stored hash is malformed, or
  // its cost is above the limits (limits.hpp kMaxImported*, e.g. written by
  // an older apop or by hand). Fail closed; the login logs it.
  refused,
};

// Checks `password` against the foreign hash (constant-time comparison of
// digests). `cheap` (optional) is set when the check costs less than one
// default scrypt (every digest scheme, MD5-crypt, the NT hash, SHA-crypt
// below 20,000 rounds, bcrypt up to cost 7, yescrypt/scrypt below 4 MiB):
// verify_password_hash then adds one scrypt so that such an account costs
// what an unknown user costs; a costlier hash gets nothing on top.
ForeignCheck check_foreign_hash(std::string_view encoded, std::string_view password,
                                bool* cheap = nullptr);
// check_foreign_hash(...) == ForeignCheck::match.
bool verify_foreign_hash(std::string_view encoded, std::string_view password);

// Why apop refuses to verify `encoded` (malformed, or above the cost limits),
// or empty when it verifies it. Cheap: no hashing.
std::string foreign_hash_refusal(std::string_view encoded);

// Test seam: how many crypt(3) checks this process ran (relaxed atomic).
std::uint64_t foreign_crypt_runs();

}  // namespace apop::auth
