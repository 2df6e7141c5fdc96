// SCRAM-SHA-256 (RFC 7677) and SCRAM-SHA-1 (RFC 5802) server exchanges, without
// channel binding. make_sasl_exchange() (sasl.hpp) is the public entry point;
// this header adds a seam for tests: a fixed server nonce, so the RFC example
// exchanges can be replayed byte for byte.
// Thread-safety and ownership: as in sasl.hpp.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "auth/sasl.hpp"
#include "auth/sasl_crypto.hpp"

namespace apop::auth {

// The server nonce is normally 18 CSPRNG octets in base64 (24 printable
// characters, never ','). `server_nonce`, when given, is used instead: tests
// only. It must be non-empty printable ASCII without ',' or the exchange fails.
std::unique_ptr<SaslExchange> make_scram_exchange(
    ScramHash hash, CredentialLookup lookup,
    std::optional<std::string> server_nonce = std::nullopt);

}  // namespace apop::auth
