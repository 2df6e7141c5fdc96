// Cryptographically secure randomness (OpenSSL RAND_bytes, a CSPRNG).
// Thread-safety: all functions are safe to call concurrently (OpenSSL 3's
// default DRBG is thread-safe). Outputs are owned by the caller.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "common/limits.hpp"
#include "common/result.hpp"

namespace apop::auth {

// Fills `out` with CSPRNG bytes. Errc::temporary if the CSPRNG is unavailable.
Result<void> random_bytes(std::span<unsigned char> out);

// `nbytes` CSPRNG bytes as 2*nbytes lowercase hex digits. Aborts if the CSPRNG
// fails (never expected; continuing with weak randomness would be worse).
std::string random_hex(std::size_t nbytes);

// A random secret of `length` characters (at least 24; smaller requests are
// raised to 24), drawn uniformly (rejection sampling, no modulo bias) from
// letters and digits without the look-alikes 0 O 1 l I. Aborts on CSPRNG failure.
std::string generate_secret(std::size_t length = limits::kGeneratedSecret);

// The alphabet generate_secret() draws from (exposed for tests).
inline constexpr std::string_view kSecretAlphabet =
    "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

}  // namespace apop::auth
