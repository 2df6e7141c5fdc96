// The server's SASL exchanges (src/auth/sasl*.cpp: SCRAM-SHA-256, SCRAM-SHA-1,
// CRAM-MD5, PLAIN, LOGIN) on hostile client responses, and the agreement of
// the client's SCRAM (client/protocol.hpp) with the server's for any user name.
//
// Input: byte 0 = mechanism (bits 0-2, modulo 5), credentials variant (bits
// 3-4), whether an initial response is sent (bit 5), agreement check (bit 6);
// the rest is the client's decoded responses separated by '\n'.
// Credentials variants: 0 stored verifiers + cheap hash + plaintext + a device
// secret; 1 plaintext only (SCRAM derives a verifier on the fly); 2 unknown
// user (the lookup returns nothing; PLAIN/LOGIN then use variant 3, as their
// unknown-user path costs a default scrypt and parses nothing); 3 SCRAM
// verifiers only.
//
// Invariants (__builtin_trap): success only for the user whose credentials
// were looked up, "fuzzuser" unless PLAIN/LOGIN, never for an unknown user; after success or
// failure every step fails; challenges are bounded; a right password through ScramClient always
// succeeds, for any user name (saslname escaping agrees on both sides), and the client accepts the
// server's signature.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "auth/password_hash.hpp"
#include "auth/sasl.hpp"
#include "auth/sasl_crypto.hpp"
#include "auth/sasl_scram.hpp"
#include "client/protocol.hpp"

namespace {

using namespace apop::auth;

constexpr std::string_view kUser = "fuzzuser";
constexpr std::string_view kPassword = "pencil-fuzz";
constexpr std::string_view kSalt = "fuzzsalt16octets";
constexpr std::string_view kServerNonce = "SNONCEfuzz";
constexpr std::string_view kChallengeId = "<1.2@fuzz>";

const SaslCredentials& full_credentials() {
  static const SaslCredentials c = [] {
    SaslCredentials x;
    x.plaintext = std::string(kPassword);
    x.scram_sha256 = make_scram_verifier("SHA-256", kPassword, kSalt, 4096);
    x.scram_sha1 = make_scram_verifier("SHA-1", kPassword, kSalt, 4096);
    auto h = hash_password(kPassword, ScryptParams{1, 1, 1});
    if (!h) __builtin_trap();
    x.password_hash = *h;
    x.extra_secrets.emplace_back("device:phone", "device-secret-fuzz");
    return x;
  }();
  return c;
}

std::optional<SaslCredentials> credentials(unsigned variant) {
  switch (variant) {
    case 0:
      return full_credentials();
    case 1: {
      SaslCredentials c;
      c.plaintext = std::string(kPassword);
      return c;
    }
    case 2:
      return std::nullopt;
    default: {
      SaslCredentials c;
      c.scram_sha256 = full_credentials().scram_sha256;
      c.scram_sha1 = full_credentials().scram_sha1;
      return c;
    }
  }
}

std::unique_ptr<SaslExchange> make(std::string_view mech, CredentialLookup lookup) {
  if (mech == "SCRAM-SHA-256") {
    return make_scram_exchange(ScramHash::sha256, std::move(lookup), std::string(kServerNonce));
  }
  if (mech == "SCRAM-SHA-1") {
    return make_scram_exchange(ScramHash::sha1, std::move(lookup), std::string(kServerNonce));
  }
  return make_sasl_exchange(mech, std::move(lookup), std::string(kChallengeId));
}

// A full SCRAM-SHA-256 exchange between the client library and the server
// with the right password, for the user name `user`.
void agreement(std::string_view user) {
  if (user.empty() || user.find('\0') != std::string_view::npos) return;
  std::string looked_up;
  CredentialLookup lookup = [&looked_up](std::string_view u) -> std::optional<SaslCredentials> {
    looked_up = std::string(u);
    return full_credentials();
  };
  auto ex = make("SCRAM-SHA-256", lookup);
  apop::client::ScramClient client(std::string(user), std::string(kPassword), "clientnonce");
  SaslStep s = ex->step(client.client_first());
  if (s.kind != SaslStep::Kind::challenge) __builtin_trap();
  if (looked_up != user) __builtin_trap();  // the name arrived unchanged
  auto final_msg = client.client_final(s.data);
  if (!final_msg) __builtin_trap();
  s = ex->step(*final_msg);
  if (s.kind != SaslStep::Kind::challenge) __builtin_trap();
  if (!client.verify_server_final(s.data)) __builtin_trap();
  s = ex->step(std::string_view());
  if (s.kind != SaslStep::Kind::success || s.user != user) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t flags = data[0];
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::string_view mech = kSaslMechanisms[(flags & 7) % kSaslMechanisms.size()];
  unsigned variant = (flags >> 3) & 3;
  const bool plain_like = mech == "PLAIN" || mech == "LOGIN";
  if (variant == 2 && plain_like) variant = 3;
  const bool initial = (flags & 32) != 0;
  if ((flags & 64) != 0) {
    agreement(in.substr(0, in.find('\n')));
    return 0;
  }

  unsigned lookups = 0;
  std::string looked_up;
  CredentialLookup lookup = [&](std::string_view u) -> std::optional<SaslCredentials> {
    ++lookups;
    looked_up = std::string(u);
    // PLAIN/LOGIN: every name is an account (an unknown one costs a default
    // scrypt, which would make this fuzzer a scrypt benchmark).
    return u == kUser || plain_like ? credentials(variant) : std::nullopt;
  };
  auto ex = make(mech, lookup);
  if (!ex) __builtin_trap();  // every listed mechanism exists

  bool first = true;
  bool finished = false;
  for (unsigned steps = 0; steps < 16; ++steps) {
    std::optional<std::string_view> response;
    if (!first || initial) {
      const std::size_t nl = in.find('\n');
      response = in.substr(0, nl);
      in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
    }
    first = false;
    const SaslStep s = ex->step(response);
    if (lookups > 1) __builtin_trap();  // the lookup runs at most once
    if (finished && s.kind != SaslStep::Kind::failure) __builtin_trap();
    switch (s.kind) {
      case SaslStep::Kind::challenge:
        if (s.data.size() > 1024 || !s.user.empty()) __builtin_trap();
        break;
      case SaslStep::Kind::success:
        if (s.user != looked_up || (s.user != kUser && !plain_like) || variant == 2 ||
            s.credential.empty()) {
          __builtin_trap();
        }
        if (!s.data.empty()) __builtin_trap();
        finished = true;
        break;
      case SaslStep::Kind::failure:
        finished = true;
        break;
    }
    if (in.empty() && finished) break;
  }
  return 0;
}
