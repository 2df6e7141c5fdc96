#include "auth/password_hash.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <atomic>
#include <optional>

#include "auth/base64.hpp"
#include "auth/foreign_hash.hpp"
#include "auth/random.hpp"
#include "common/parse.hpp"

namespace apop::auth {
namespace {

constexpr std::size_t kSaltLen = 16;
constexpr std::size_t kHashLen = 32;

std::atomic<std::uint64_t> g_scrypt_runs{0};  // scrypt_runs()

std::optional<std::string> scrypt(std::string_view password, std::string_view salt,
                                  const ScryptParams& p) {
  g_scrypt_runs.fetch_add(1, std::memory_order_relaxed);
  std::string out(kHashLen, '\0');
  const std::uint64_t n = std::uint64_t{1} << p.log2_n;
  // maxmem: 128 * r * N * p plus slack for OpenSSL's own bookkeeping.
  const std::uint64_t maxmem = 128ull * p.r * (n + p.p + 2) + (1u << 20);
  if (EVP_PBE_scrypt(password.data(), password.size(),
                     reinterpret_cast<const unsigned char*>(salt.data()), salt.size(), n, p.r, p.p,
                     maxmem, reinterpret_cast<unsigned char*>(out.data()), out.size()) != 1) {
    return std::nullopt;
  }
  return out;
}

// Strips the unpadded base64 of PHC strings back to padded RFC 4648 for the
// strict decoder.
std::optional<std::string> b64_decode_unpadded(std::string_view s) {
  std::string padded(s);
  while (padded.size() % 4 != 0) padded.push_back('=');
  return base64_decode_strict(padded);
}

std::string b64_encode_unpadded(std::string_view s) {
  std::string e = base64_encode(s);
  while (!e.empty() && e.back() == '=') e.pop_back();
  return e;
}

bool parse_u32(std::string_view s, std::uint32_t& out) {
  const auto v = parse_decimal<std::uint32_t>(s, {.max_digits = 9});
  if (v) out = *v;
  return v.has_value();
}

struct Parsed {
  ScryptParams params;
  std::string salt;
  std::string hash;
};

// "$scrypt$ln=L,r=R,p=P$SALT$HASH"
std::optional<Parsed> parse(std::string_view e) {
  constexpr std::string_view kPrefix = "$scrypt$";
  if (e.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  e.remove_prefix(kPrefix.size());
  std::array<std::string_view, 3> part;
  for (std::size_t i = 0; i < 3; ++i) {
    const std::size_t d = e.find('$');
    if ((d == std::string_view::npos) != (i == 2)) return std::nullopt;
    part[i] = e.substr(0, d);
    e = d == std::string_view::npos ? std::string_view() : e.substr(d + 1);
  }
  Parsed out;
  std::string_view params = part[0];
  std::array<std::pair<std::string_view, std::uint32_t*>, 3> keys = {
      {{"ln=", &out.params.log2_n}, {"r=", &out.params.r}, {"p=", &out.params.p}}};
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const std::size_t comma = params.find(',');
    std::string_view item = params.substr(0, comma);
    if ((comma == std::string_view::npos) != (i + 1 == keys.size())) return std::nullopt;
    if (item.substr(0, keys[i].first.size()) != keys[i].first) return std::nullopt;
    if (!parse_u32(item.substr(keys[i].first.size()), *keys[i].second)) return std::nullopt;
    params = comma == std::string_view::npos ? std::string_view() : params.substr(comma + 1);
  }
  const auto& p = out.params;
  if (p.log2_n < 1 || p.log2_n > kMaxScryptLog2N || p.r < 1 || p.r > kMaxScryptR || p.p < 1 ||
      p.p > kMaxScryptP) {
    return std::nullopt;
  }
  auto salt = b64_decode_unpadded(part[1]);
  auto hash = b64_decode_unpadded(part[2]);
  if (!salt || !hash || salt->size() < 8 || hash->size() != kHashLen) return std::nullopt;
  out.salt = std::move(*salt);
  out.hash = std::move(*hash);
  return out;
}

}  // namespace

Result<std::string> hash_password(std::string_view password, const ScryptParams& params) {
  std::array<unsigned char, kSaltLen> salt{};
  if (auto r = random_bytes(salt); !r) return r.error();
  std::string_view salt_view(reinterpret_cast<const char*>(salt.data()), salt.size());
  auto h = scrypt(password, salt_view, params);
  if (!h) return make_error(Errc::temporary, "scrypt failed (out of memory?)");
  std::string out = "$scrypt$ln=" + std::to_string(params.log2_n) +
                    ",r=" + std::to_string(params.r) + ",p=" + std::to_string(params.p) + "$" +
                    b64_encode_unpadded(salt_view) + "$" + b64_encode_unpadded(*h);
  OPENSSL_cleanse(h->data(), h->size());
  return out;
}

HashCheck check_password_hash(std::string_view encoded, std::string_view password) {
  if (is_foreign_hash(encoded)) {
    // An imported hash may be much cheaper than scrypt (unsalted SHA): then
    // add the default scrypt so that imported accounts cost what unknown
    // users and our own hashes cost (no user enumeration by timing). A
    // costlier one (bcrypt, SHA-crypt with many rounds) already costs at
    // least that: nothing on top. A refused one ran no check: one scrypt.
    bool cheap = false;
    const ForeignCheck c = check_foreign_hash(encoded, password, &cheap);
    if (cheap || c == ForeignCheck::refused) dummy_password_verify(password);
    if (c == ForeignCheck::refused) return HashCheck::refused;
    return c == ForeignCheck::match ? HashCheck::match : HashCheck::mismatch;
  }
  auto parsed = parse(encoded);
  if (!parsed) {
    dummy_password_verify(password);
    return HashCheck::mismatch;
  }
  auto h = scrypt(password, parsed->salt, parsed->params);
  if (!h) return HashCheck::mismatch;
  const bool match = CRYPTO_memcmp(h->data(), parsed->hash.data(), kHashLen) == 0;
  OPENSSL_cleanse(h->data(), h->size());
  return match ? HashCheck::match : HashCheck::mismatch;
}

bool verify_password_hash(std::string_view encoded, std::string_view password) {
  return check_password_hash(encoded, password) == HashCheck::match;
}

std::uint64_t scrypt_runs() { return g_scrypt_runs.load(std::memory_order_relaxed); }

void dummy_password_verify(std::string_view password) {
  static constexpr std::string_view kSalt = "apop-dummy-salt!";
  auto h = scrypt(password, kSalt, kDefaultScrypt);
  if (h) OPENSSL_cleanse(h->data(), h->size());
}

}  // namespace apop::auth
