#include "auth/sasl_crypto.hpp"

#include "auth/password_hash.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <climits>
#include <cstdlib>
#include <span>

#include "auth/digest.hpp"
#include "auth/random.hpp"

namespace apop::auth::sasl_detail {
namespace {

const EVP_MD* md_of(ScramHash h) { return h == ScramHash::sha256 ? EVP_sha256() : EVP_sha1(); }

std::string hmac_with(const EVP_MD* md, std::string_view key, std::string_view data) {
  if (key.size() > static_cast<std::size_t>(INT_MAX)) std::abort();
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  static const unsigned char kEmpty = 0;
  const void* k = key.empty() ? static_cast<const void*>(&kEmpty) : key.data();
  const auto* d = data.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(data.data());
  if (HMAC(md, k, static_cast<int>(key.size()), d, data.size(), out, &len) == nullptr) {
    std::abort();
  }
  std::string result(reinterpret_cast<const char*>(out), len);
  OPENSSL_cleanse(out, sizeof out);
  return result;
}

const std::array<unsigned char, 32>& process_key() {
  static const std::array<unsigned char, 32> key = [] {
    std::array<unsigned char, 32> k{};
    if (!random_bytes(std::span<unsigned char>(k))) std::abort();
    return k;
  }();
  return key;
}

}  // namespace

std::size_t hash_size(ScramHash h) { return h == ScramHash::sha256 ? 32 : 20; }

std::string hash(ScramHash h, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (EVP_Digest(data.data(), data.size(), out, &len, md_of(h), nullptr) != 1) std::abort();
  std::string result(reinterpret_cast<const char*>(out), len);
  OPENSSL_cleanse(out, sizeof out);
  return result;
}

std::string hmac(ScramHash h, std::string_view key, std::string_view data) {
  return hmac_with(md_of(h), key, data);
}

std::string hmac_md5(std::string_view key, std::string_view data) {
  return hmac_with(EVP_md5(), key, data);
}

ScramVerifier derive_verifier(ScramHash h, std::string_view password, std::string_view salt,
                              std::uint32_t iterations) {
  if (salt.empty() || iterations == 0 || iterations > static_cast<std::uint32_t>(INT_MAX) ||
      password.size() > static_cast<std::size_t>(INT_MAX) ||
      salt.size() > static_cast<std::size_t>(INT_MAX)) {
    return {};
  }
  std::string salted(hash_size(h), '\0');
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()),
                        static_cast<int>(salt.size()), static_cast<int>(iterations), md_of(h),
                        static_cast<int>(salted.size()),
                        reinterpret_cast<unsigned char*>(salted.data())) != 1) {
    std::abort();
  }
  std::string client_key = hmac(h, salted, "Client Key");
  ScramVerifier v;
  v.salt = std::string(salt);
  v.iterations = iterations;
  v.stored_key = hash(h, client_key);
  v.server_key = hmac(h, salted, "Server Key");
  cleanse(client_key);
  cleanse(salted);
  return v;
}

bool verifier_usable(ScramHash h, const ScramVerifier& v) {
  return !v.salt.empty() && v.iterations != 0 &&
         v.iterations <= static_cast<std::uint32_t>(INT_MAX) &&
         v.stored_key.size() == hash_size(h) && v.server_key.size() == hash_size(h);
}

std::string keyed_tag(std::string_view purpose, std::string_view user) {
  const auto& key = process_key();
  std::string msg;
  msg.reserve(purpose.size() + 1 + user.size());
  msg.append(purpose);
  msg.push_back('\0');
  msg.append(user);
  return hmac_with(EVP_sha256(),
                   std::string_view(reinterpret_cast<const char*>(key.data()), key.size()), msg);
}

std::string fallback_salt(ScramHash h, std::string_view user) {
  return keyed_tag(h == ScramHash::sha256 ? "scram-sha-256 salt" : "scram-sha-1 salt", user)
      .substr(0, 16);
}

ScramVerifier dummy_verifier(ScramHash h, std::string_view user) {
  const bool s256 = h == ScramHash::sha256;
  ScramVerifier v;
  v.salt = fallback_salt(h, user);
  v.iterations = kScramMinIterations;
  v.stored_key = keyed_tag(s256 ? "scram-sha-256 dummy stored" : "scram-sha-1 dummy stored", user)
                     .substr(0, hash_size(h));
  v.server_key = keyed_tag(s256 ? "scram-sha-256 dummy server" : "scram-sha-1 dummy server", user)
                     .substr(0, hash_size(h));
  return v;
}

bool check_password(const std::optional<SaslCredentials>& creds, std::string_view user,
                    std::string_view password) {
  if (creds && creds->password_hash) return verify_password_hash(*creds->password_hash, password);
  if (!creds) {
    dummy_password_verify(password);  // what a known user's hash costs
    return false;
  }
  // Credentials without a hash (built by hand, as in tests): the SCRAM
  // verifier or the plaintext.
  const ScramVerifier* stored = nullptr;
  ScramHash h = ScramHash::sha256;
  if (creds && creds->scram_sha256 && verifier_usable(ScramHash::sha256, *creds->scram_sha256)) {
    stored = &*creds->scram_sha256;
  } else if (creds && creds->scram_sha1 && verifier_usable(ScramHash::sha1, *creds->scram_sha1)) {
    stored = &*creds->scram_sha1;
    h = ScramHash::sha1;
  }
  if (stored != nullptr) {
    ScramVerifier given = derive_verifier(h, password, stored->salt, stored->iterations);
    return ct_equal(given.stored_key, stored->stored_key);
  }
  // No usable verifier: pay for one PBKDF2 anyway, against a dummy verifier.
  ScramVerifier dummy = dummy_verifier(ScramHash::sha256, user);
  ScramVerifier given = derive_verifier(ScramHash::sha256, password, dummy.salt, dummy.iterations);
  const bool dummy_match = ct_equal(given.stored_key, dummy.stored_key);
  if (creds && creds->plaintext) {
    const bool equal = ct_equal(password, *creds->plaintext);
    return equal && !creds->plaintext->empty();
  }
  (void)dummy_match;  // an unknown user never logs in, whatever the password
  return false;
}

void cleanse(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

}  // namespace apop::auth::sasl_detail
