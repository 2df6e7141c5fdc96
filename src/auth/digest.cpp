#include "auth/digest.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <cstdlib>
#include <memory>
#include <span>

#include "common/limits.hpp"
#include "common/text.hpp"

namespace apop::auth {
namespace {

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

// An algorithm fetched once from the default provider. OpenSSL 3 answers
// EVP_md5() with a legacy object that every EVP_DigestInit_ex resolves
// again (a locked lookup in the method store): a measurable part of a
// login's CPU. Never freed (it lives as long as the process).
const EVP_MD* fetched_md(const char* name) {
  const EVP_MD* md = EVP_MD_fetch(nullptr, name, nullptr);
  if (md == nullptr) std::abort();
  return md;
}
const EVP_MD* md5() {
  static const EVP_MD* const md = fetched_md("MD5");
  return md;
}
const EVP_MD* sha256() {
  static const EVP_MD* const md = fetched_md("SHA2-256");
  return md;
}

// Digest of the concatenation of `parts` with `md`; aborts on libcrypto
// failure. The context is the thread's own, reset by each init.
template <std::size_t N>
unsigned digest(const EVP_MD* md, const std::array<std::string_view, N>& parts,
                unsigned char (&out)[EVP_MAX_MD_SIZE]) {
  thread_local const std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1) std::abort();
  for (std::string_view p : parts) {
    if (EVP_DigestUpdate(ctx.get(), p.data(), p.size()) != 1) std::abort();
  }
  unsigned len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), out, &len) != 1) std::abort();
  return len;
}

}  // namespace

std::string md5_hex(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = digest<1>(md5(), {data}, out);
  std::string hex = to_hex(std::span<const unsigned char>(out, len));
  OPENSSL_cleanse(out, sizeof out);
  return hex;
}

bool ct_equal(std::string_view a, std::string_view b) {
  unsigned char da[EVP_MAX_MD_SIZE];
  unsigned char db[EVP_MAX_MD_SIZE];
  unsigned la = digest<1>(sha256(), {a}, da);
  unsigned lb = digest<1>(sha256(), {b}, db);
  // Hashes equal <=> inputs equal (up to SHA-256 collisions); also fold in the
  // length comparison, which leaks nothing beyond the lengths themselves.
  int diff = CRYPTO_memcmp(da, db, la < lb ? la : lb);
  bool equal = (diff == 0) & (la == lb) & (a.size() == b.size());
  OPENSSL_cleanse(da, sizeof da);
  OPENSSL_cleanse(db, sizeof db);
  return equal;
}

bool apop_digest_matches(std::string_view timestamp, std::string_view secret,
                         std::string_view client_digest) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = digest<2>(md5(), {timestamp, secret}, out);
  std::string expected = to_hex(std::span<const unsigned char>(out, len));
  OPENSSL_cleanse(out, sizeof out);

  // Normalise a fixed-size copy of the client digest without branching on its
  // content: lowercase A-F, record (without early exit) whether every octet is
  // a hex digit. Work is always kApopDigestHex octets.
  std::string given(limits::kApopDigestHex, '\0');
  unsigned bad = client_digest.size() == limits::kApopDigestHex ? 0u : 1u;
  for (std::size_t i = 0; i < limits::kApopDigestHex; ++i) {
    unsigned char c = i < client_digest.size() ? static_cast<unsigned char>(client_digest[i]) : 0;
    unsigned upper = static_cast<unsigned>((c >= 'A') & (c <= 'F'));
    c = static_cast<unsigned char>(c | (upper << 5));  // 'A'..'F' -> 'a'..'f'
    unsigned digit = static_cast<unsigned>((c >= '0') & (c <= '9'));
    unsigned lower = static_cast<unsigned>((c >= 'a') & (c <= 'f'));
    bad |= (digit | lower) ^ 1u;
    given[i] = static_cast<char>(c);
  }
  // Both are exactly kApopDigestHex octets: a constant-time compare of the
  // two buffers (ct_equal's hashing only matters for inputs whose lengths
  // differ).
  static_assert(limits::kApopDigestHex == 32);
  bool match = expected.size() == given.size() &&
               CRYPTO_memcmp(expected.data(), given.data(), given.size()) == 0;
  OPENSSL_cleanse(expected.data(), expected.size());
  return match & (bad == 0);
}

}  // namespace apop::auth
