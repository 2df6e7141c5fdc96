// Server-side SASL exchanges (RFC 4422) for POP3 AUTH (RFC 5034): SCRAM-SHA-256
// (RFC 7677), SCRAM-SHA-1 (RFC 5802), CRAM-MD5 (RFC 2195), PLAIN (RFC 4616) and
// LOGIN (draft-murchison-sasl-login). Pure: no I/O; the caller does the base64
// framing of RFC 5034 and supplies a credential lookup.
//
// Driving an exchange (RFC 5034 §4):
//   auto ex = make_sasl_exchange(mech, lookup, challenge_id);   // nullptr: unknown mechanism
//   SaslStep s = ex->step(initial_response);                    // nullopt: none was sent
//   while (s.kind == SaslStep::Kind::challenge) {
//     send "+ " + base64_encode(s.data); read a line; "*" cancels (-ERR, drop `ex`);
//     decode it strictly (bad base64 -> -ERR, drop `ex`); s = ex->step(decoded);
//   }
//   success -> +OK, logged in as s.user; failure -> -ERR [AUTH].
// SCRAM's server-final message ("v=...") is sent as a challenge, per RFC 5034
// §4 (POP3 has no "additional data with success"): the client answers with an
// empty response, and only then does step() return success. The data of a
// success step is therefore always empty with these mechanisms.
//
// No user enumeration: for an unknown user (lookup returns nullopt) every
// exchange goes on with dummy credentials, sends the same number and shape of
// challenges as for a known user with a wrong password, does the same
// cryptographic work as a known user with the usual credentials (see the
// notes on each mechanism in sasl.cpp / sasl_scram.cpp), and fails at the end.
//
// Not implemented: SASLprep (RFC 4013) of names and passwords (they are compared
// as octets; apop user names are restricted ASCII), authorization identities
// different from the authentication identity (proxy authentication is refused),
// SCRAM channel binding (the -PLUS variants are not offered; "p=" is refused).
//
// Thread-safety: the free functions are safe to call concurrently; one
// SaslExchange must not be used by two threads at once. The lookup function is
// called at most once per exchange, from within step().
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/secret_string.hpp"

namespace apop::auth {

// A SCRAM verifier (RFC 5802 §3): what the server keeps instead of the password.
// All byte fields are raw bytes (not base64).
struct ScramVerifier {
  std::string salt;
  std::uint32_t iterations = 0;
  std::string stored_key;  // H(HMAC(SaltedPassword, "Client Key"))
  std::string server_key;  // HMAC(SaltedPassword, "Server Key")
};

// What the server knows about one user for SASL, looked up by name. Any field
// may be absent when not available. The plaintext-equivalent secrets are
// SecretStrings: wiped when the credentials are destroyed or moved from
// (issue 17 item 11).
struct SaslCredentials {
  // Plaintext-equivalent secret: needed by CRAM-MD5; also lets PLAIN/LOGIN
  // compare, and SCRAM derive a verifier on the fly (a fallback, see sasl_scram.cpp).
  std::optional<SecretString> plaintext;
  std::optional<ScramVerifier> scram_sha256;
  std::optional<ScramVerifier> scram_sha1;
  // The slow hash (password_hash.hpp): when present, PLAIN and LOGIN check
  // against it (and nothing else).
  std::optional<std::string> password_hash;
  // More plaintext-equivalent secrets CRAM-MD5 accepts besides `plaintext`,
  // as (name for logs, secret): per-device secrets.
  std::vector<std::pair<std::string, SecretString>> extra_secrets;
  // Called by PLAIN and LOGIN once the password matched, with the password;
  // returns the credential name for the logs ("password" when absent). The
  // authenticator upgrades an imported hash there (authenticator.cpp).
  std::function<std::string(std::string_view password)> password_verified;
};

// Looks up credentials; returns nullopt for unknown users. The exchange then
// continues with dummy credentials and fails at the end (no user enumeration).
using CredentialLookup = std::function<std::optional<SaslCredentials>(std::string_view user)>;

struct SaslStep {
  enum class Kind { challenge, success, failure };
  Kind kind = Kind::failure;
  // Raw bytes: the challenge to send (the caller base64-encodes it), or empty.
  std::string data;
  // The authenticated identity on success. On failure, the authentication
  // identity the client tried once the exchange got as far as checking its
  // credentials (PLAIN's authcid, LOGIN's user name, the user of a CRAM-MD5
  // answer, SCRAM's n= name after a wrong proof), so that the failure is
  // counted against that name (auth/throttle.hpp) and logged with it; empty
  // for a malformed exchange that named nobody. Untrusted client text.
  std::string user;
  // On success, which secret matched: "password", or the name of one of
  // SaslCredentials::extra_secrets.
  std::string credential;
};

class SaslExchange {
 public:
  virtual ~SaslExchange() = default;
  // First call: the initial response (nullopt when the client sent none; "" for
  // "="). Later calls: each decoded client response. After a success or failure
  // step, every further call returns failure.
  virtual SaslStep step(std::optional<std::string_view> response) = 0;
};

// Mechanism names in preference order (strongest first), as CAPA/AUTH list them.
inline constexpr std::array<std::string_view, 5> kSaslMechanisms = {"SCRAM-SHA-256", "SCRAM-SHA-1",
                                                                    "CRAM-MD5", "PLAIN", "LOGIN"};

// The iteration count of every SCRAM verifier apop generates itself (dummy and
// on-the-fly verifiers); RFC 7677 §4 asks for at least 4096.
inline constexpr std::uint32_t kScramMinIterations = 4096;

// A new exchange for `mechanism` (case-insensitive, one of kSaslMechanisms), or
// nullptr when the mechanism is unknown. `challenge_id` is CRAM-MD5's challenge,
// a fresh msg-id like "<HEX.PID@host>" (ignored by the other mechanisms).
std::unique_ptr<SaslExchange> make_sasl_exchange(std::string_view mechanism,
                                                 CredentialLookup lookup, std::string challenge_id);

// Derives the verifier for `password` (RFC 5802 §3, PBKDF2 via OpenSSL).
// `hash` is "SHA-256" or "SHA-1" (case-insensitive). An unknown hash, an empty
// salt or zero iterations give an empty verifier (iterations == 0), which never
// verifies anything. Callers generating new verifiers should use a random salt
// of at least 16 bytes and at least kScramMinIterations.
ScramVerifier make_scram_verifier(std::string_view hash, std::string_view password,
                                  std::string_view salt, std::uint32_t iterations);

}  // namespace apop::auth
