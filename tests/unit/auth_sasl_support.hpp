// Test support for the SASL unit tests: an in-memory credential directory that
// records lookups, and an independent SCRAM client.
#pragma once

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/base64.hpp"
#include "auth/sasl.hpp"
#include "auth/sasl_crypto.hpp"

namespace apop::auth::testing {

struct Directory {
  std::map<std::string, SaslCredentials, std::less<>> users;
  std::vector<std::string> looked_up;

  CredentialLookup lookup() {
    return [this](std::string_view user) -> std::optional<SaslCredentials> {
      looked_up.emplace_back(user);
      auto it = users.find(user);
      if (it == users.end()) return std::nullopt;
      return it->second;
    };
  }
};

inline std::string b64d(std::string_view text) {
  auto d = base64_decode_strict(text);
  EXPECT_TRUE(d.has_value()) << text;
  return d.value_or(std::string());
}

inline bool is_challenge(const SaslStep& s) { return s.kind == SaslStep::Kind::challenge; }
inline bool is_success(const SaslStep& s) { return s.kind == SaslStep::Kind::success; }
inline bool is_failure(const SaslStep& s) { return s.kind == SaslStep::Kind::failure; }

// The value of attribute `name` ("r", "s", "i", "v", ...) in a SCRAM message.
inline std::string scram_attr(std::string_view msg, char name) {
  std::size_t start = 0;
  while (start <= msg.size()) {
    std::size_t comma = msg.find(',', start);
    std::string_view a =
        msg.substr(start, comma == std::string_view::npos ? msg.npos : comma - start);
    if (a.size() >= 2 && a[0] == name && a[1] == '=') return std::string(a.substr(2));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return {};
}

// An independent SCRAM client (RFC 5802 §3), built on OpenSSL's PBKDF2 and the
// HMAC/hash wrappers (themselves checked against the RFC examples).
struct ScramClient {
  ScramClient(ScramHash h, std::string u, std::string p,
              std::string nonce = "clientnonce0123456789")
      : hash(h), user(std::move(u)), password(std::move(p)), client_nonce(std::move(nonce)) {}

  ScramHash hash;
  std::string user;  // already saslname-encoded
  std::string password;
  std::string client_nonce;
  std::string gs2 = "n,,";
  std::string final_extensions;  // e.g. ",x=ext", inserted before ",p="
  // When set, sent (and signed) instead of the right c= / r= values.
  std::optional<std::string> channel_binding_override;
  std::optional<std::string> nonce_override;
  std::string expected_server_signature;  // set by client_final()

  std::string bare() const { return "n=" + user + ",r=" + client_nonce; }
  std::string client_first() const { return gs2 + bare(); }

  std::string client_final(std::string_view server_first) {
    const std::string nonce = nonce_override.value_or(scram_attr(server_first, 'r'));
    const std::string salt = b64d(scram_attr(server_first, 's'));
    const int iterations = std::stoi(scram_attr(server_first, 'i'));
    const EVP_MD* md = hash == ScramHash::sha256 ? EVP_sha256() : EVP_sha1();
    std::string salted(static_cast<std::size_t>(EVP_MD_get_size(md)), '\0');
    EXPECT_EQ(PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                                reinterpret_cast<const unsigned char*>(salt.data()),
                                static_cast<int>(salt.size()), iterations, md,
                                static_cast<int>(salted.size()),
                                reinterpret_cast<unsigned char*>(salted.data())),
              1);
    const std::string client_key = sasl_detail::hmac(hash, salted, "Client Key");
    const std::string stored_key = sasl_detail::hash(hash, client_key);
    const std::string server_key = sasl_detail::hmac(hash, salted, "Server Key");
    const std::string without_proof = "c=" + channel_binding_override.value_or(base64_encode(gs2)) +
                                      ",r=" + nonce + final_extensions;
    const std::string auth = bare() + "," + std::string(server_first) + "," + without_proof;
    std::string proof = sasl_detail::hmac(hash, stored_key, auth);
    for (std::size_t i = 0; i < proof.size(); ++i) proof[i] ^= client_key[i];
    expected_server_signature = base64_encode(sasl_detail::hmac(hash, server_key, auth));
    return without_proof + ",p=" + base64_encode(proof);
  }
};

}  // namespace apop::auth::testing
