#include "auth/random.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <array>
#include <climits>
#include <cstdlib>

#include "common/text.hpp"

namespace apop::auth {

Result<void> random_bytes(std::span<unsigned char> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    std::size_t chunk = out.size() - done;
    if (chunk > static_cast<std::size_t>(INT_MAX)) chunk = INT_MAX;
    if (RAND_bytes(out.data() + done, static_cast<int>(chunk)) != 1) {
      return make_error(Errc::temporary, "CSPRNG (RAND_bytes) failed");
    }
    done += chunk;
  }
  return {};
}

std::string random_hex(std::size_t nbytes) {
  std::string raw(nbytes, '\0');
  auto span = std::span<unsigned char>(reinterpret_cast<unsigned char*>(raw.data()), raw.size());
  if (!random_bytes(span)) std::abort();
  std::string hex = to_hex(raw);
  OPENSSL_cleanse(raw.data(), raw.size());
  return hex;
}

std::string generate_secret(std::size_t length) {
  if (length < limits::kGeneratedSecret) length = limits::kGeneratedSecret;
  constexpr std::size_t kN = kSecretAlphabet.size();
  static_assert(kN > 0 && kN <= 256);
  // Largest multiple of kN that fits in a byte: bytes >= kLimit are rejected.
  constexpr unsigned kLimit = 256 - (256 % kN);
  std::string out;
  out.reserve(length);
  std::array<unsigned char, 64> buf{};
  while (out.size() < length) {
    if (!random_bytes(buf)) std::abort();
    for (unsigned char b : buf) {
      if (b >= kLimit) continue;
      out.push_back(kSecretAlphabet[b % kN]);
      if (out.size() == length) break;
    }
  }
  OPENSSL_cleanse(buf.data(), buf.size());
  return out;
}

}  // namespace apop::auth
