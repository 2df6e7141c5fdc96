#include "auth/foreign_hash.hpp"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>

#include "auth/base64.hpp"
#include "common/limits.hpp"
#include "common/parse.hpp"
#include "common/text.hpp"

namespace apop::auth {
namespace {

std::atomic<std::uint64_t> g_crypt_runs{0};  // foreign_crypt_runs()

enum class Kind { crypt, digest, salted_digest };
enum class Enc { b64, hex };

struct Scheme {
  std::string_view name;
  Kind kind;
  const char* md;           // OpenSSL digest name (digest kinds)
  std::string_view prefix;  // required crypt prefix ("" = any supported)
  Enc default_enc = Enc::b64;
};

constexpr std::array<Scheme, 13> kSchemes = {{
    {"CRYPT", Kind::crypt, nullptr, ""},
    {"MD5-CRYPT", Kind::crypt, nullptr, "$1$"},
    {"MD5", Kind::crypt, nullptr, "$1$"},  // Dovecot's {MD5} is MD5-CRYPT
    {"SHA256-CRYPT", Kind::crypt, nullptr, "$5$"},
    {"SHA512-CRYPT", Kind::crypt, nullptr, "$6$"},
    {"BLF-CRYPT", Kind::crypt, nullptr, "$2"},
    {"SHA", Kind::digest, "SHA1", ""},
    {"SHA256", Kind::digest, "SHA256", ""},
    {"SHA512", Kind::digest, "SHA512", ""},
    {"SSHA", Kind::salted_digest, "SHA1", ""},
    {"SSHA256", Kind::salted_digest, "SHA256", ""},
    {"SSHA512", Kind::salted_digest, "SHA512", ""},
    {"SMD5", Kind::salted_digest, "MD5", ""},
}};

struct Md5Scheme {
  std::string_view name;
  Enc enc;
};
constexpr std::array<Md5Scheme, 2> kMd5Schemes = {
    {{"PLAIN-MD5", Enc::hex}, {"LDAP-MD5", Enc::b64}}};

struct Parsed {
  Kind kind = Kind::digest;
  const char* md = nullptr;
  Enc enc = Enc::b64;
  std::string scheme;  // normalised, with suffix
  std::string data;    // crypt string, or decoded digest (|| salt)
  std::size_t digest_len = 0;
  // Checking it costs less than one default scrypt (all digests, cheap
  // crypt settings: see crypt_cost).
  bool cheap = true;
};

std::optional<std::string> hex_decode(std::string_view s) {
  if (s.size() % 2 != 0) return std::nullopt;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size() / 2);
  for (std::size_t i = 0; i < s.size(); i += 2) {
    const int hi = nib(s[i]), lo = nib(s[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

std::size_t digest_size(const char* md) {
  const EVP_MD* m = EVP_get_digestbyname(md);
  return m ? static_cast<std::size_t>(EVP_MD_get_size(m)) : 0;
}

// What checking a crypt(3) hash costs, from its setting: whether apop
// verifies it at all (`refusal` empty) and whether it is cheaper than one
// default scrypt (password_hash.hpp), which a login then adds so that the
// account costs what an unknown user costs.
struct CryptCost {
  std::string refusal;  // non-empty: above limits.hpp or a method whose cost apop cannot bound
  bool cheap = false;
};

CryptCost crypt_cost(std::string_view h);

bool crypt_setting_ok(const std::string& data, std::string_view prefix, std::string& why,
                      bool& cheap) {
  if (data.empty() || data.front() != '$') {
    why = "traditional DES crypt (8-character limit) is not accepted";
    return false;
  }
  if (!prefix.empty() && data.compare(0, prefix.size(), prefix) != 0) {
    why = "the hash does not match its scheme";
    return false;
  }
  const int c = crypt_checksalt(data.c_str());
  if (c != CRYPT_SALT_OK && c != CRYPT_SALT_METHOD_LEGACY && c != CRYPT_SALT_TOO_CHEAP) {
    why = c == CRYPT_SALT_METHOD_DISABLED ? "crypt method disabled in libcrypt"
                                          : "malformed or unsupported crypt(3) hash";
    return false;
  }
  CryptCost cost = crypt_cost(data);
  if (!cost.refusal.empty()) {
    why = std::move(cost.refusal);
    return false;
  }
  cheap = cost.cheap;
  return true;
}

// A cost field: 1-12 digits (no crypt(3) cost needs more, so no overflow).
std::optional<std::uint64_t> decimal(std::string_view s) {
  return parse_decimal(s, {.max_digits = 12});
}

// crypt's base-64 digit value ('.' = 0 ... 'z' = 63), or 64 for others.
unsigned itoa64_value(char c) {
  static constexpr std::string_view kItoa64 =
      "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  const std::size_t i = kItoa64.find(c);
  return i == std::string_view::npos ? 64u : static_cast<unsigned>(i);
}

// Below these a check costs less than one default scrypt (ln=12, r=8: about
// 7.5 ms on the reference machine of docs/security.md): SHA-crypt 20,000
// rounds about 6 ms, bcrypt cost 7 about 6 ms, and yescrypt/scrypt below
// scrypt's own 128 * r * N = 4 MiB.
constexpr std::uint64_t kShaCryptCheapRounds = 20'000;
constexpr unsigned kBcryptCheapCost = 7;
constexpr std::uint64_t kScryptCheapWork = 4ull << 20;

std::string too_costly(std::string_view what, std::uint64_t value, std::uint64_t limit,
                       std::string_view name) {
  return std::string(what) + " " + std::to_string(value) + " is above apop's limit of " +
         std::to_string(limit) + " for an imported hash (limits.hpp " + std::string(name) +
         "): set a new password";
}

// "$5$rounds=N$", "$6$rounds=N$", "$2b$NN$", "$y$FNR$" (flavor, log2(N) - 1,
// r - 1 as single crypt base-64 digits), "$7$NRRRRRPPPPP" (log2 N, then r and
// p as five digits each, little-endian): bounded so that one login cannot
// stall the auth threads (limits.hpp). Methods whose cost apop does not parse
// ($sha1$, $md5 SunMD5, $sm3$, ...) are refused.
CryptCost crypt_cost(std::string_view h) {
  CryptCost c;
  if (h.rfind("$1$", 0) == 0 || h.rfind("$3$", 0) == 0) {
    c.cheap = true;  // MD5-crypt (1000 MD5 rounds), NT hash (one MD4): fixed and cheap
    return c;
  }
  if (h.rfind("$5$", 0) == 0 || h.rfind("$6$", 0) == 0) {
    std::uint64_t rounds = 5000;  // the default when the setting names none
    if (h.rfind("rounds=", 3) == 3) {
      const std::string_view r = h.substr(10);
      auto n = decimal(r.substr(0, r.find('$')));
      if (!n) {
        c.refusal = "malformed SHA-crypt rounds";
        return c;
      }
      rounds = *n;
    }
    if (rounds > limits::kMaxImportedShaCryptRounds) {
      c.refusal = too_costly("SHA-crypt rounds", rounds, limits::kMaxImportedShaCryptRounds,
                             "kMaxImportedShaCryptRounds");
    }
    c.cheap = rounds < kShaCryptCheapRounds;
    return c;
  }
  if (h.size() > 6 && h[0] == '$' && h[1] == '2' && h[3] == '$' &&
      std::string_view("abxy").find(h[2]) != std::string_view::npos) {
    auto cost = decimal(h.substr(4, 2));
    if (!cost || h[6] != '$') {
      c.refusal = "malformed bcrypt cost";
    } else if (*cost > limits::kMaxImportedBcryptCost) {
      c.refusal = too_costly("bcrypt cost", *cost, limits::kMaxImportedBcryptCost,
                             "kMaxImportedBcryptCost");
    } else {
      c.cheap = *cost <= kBcryptCheapCost;
    }
    return c;
  }
  if (h.rfind("$y$", 0) == 0 || h.rfind("$gy$", 0) == 0) {
    // yescrypt_encode_params: flavor, log2(N) (minimum 1), r (minimum 1), each
    // one digit while below 48, then '$' unless more parameters follow (p,
    // t, g, ROM: not accepted, Dovecot and crypt_gensalt never write them).
    const std::string_view p = h.substr(h[1] == 'y' ? 3 : 4);
    const unsigned flavor = p.size() > 3 ? itoa64_value(p[0]) : 64;
    const unsigned log2n = p.size() > 3 ? itoa64_value(p[1]) + 1 : 64;
    const unsigned r = p.size() > 3 ? itoa64_value(p[2]) + 1 : 64;
    if (flavor >= 48 || log2n > 48 || r > 48 || p[3] != '$') {
      c.refusal = "yescrypt parameters apop does not accept (only N and r)";
      return c;
    }
    const std::uint64_t work = 128ull * r << log2n;
    if (work > limits::kMaxImportedScryptWork) {
      c.refusal = too_costly("yescrypt 128*r*N bytes", work, limits::kMaxImportedScryptWork,
                             "kMaxImportedScryptWork");
    }
    c.cheap = work < kScryptCheapWork;
    return c;
  }
  if (h.rfind("$7$", 0) == 0) {
    // $7$ + log2(N) digit + r (5 digits) + p (5 digits), 6 bits each, LSB first.
    if (h.size() < 14) {
      c.refusal = "malformed scrypt ($7$) parameters";
      return c;
    }
    const unsigned log2n = itoa64_value(h[3]);
    std::uint64_t r = 0, par = 0;
    bool ok = log2n < 64;
    for (unsigned i = 0; i < 5; ++i) {
      const unsigned dr = itoa64_value(h[4 + i]), dp = itoa64_value(h[9 + i]);
      ok = ok && dr < 64 && dp < 64;
      r |= std::uint64_t{dr & 63u} << (6 * i);
      par |= std::uint64_t{dp & 63u} << (6 * i);
    }
    if (!ok || log2n > 40 || r == 0 || par == 0) {
      c.refusal = "malformed scrypt ($7$) parameters";
      return c;
    }
    // 128 * r * N bytes of memory, N * r * p block mixes of time: bounded
    // as 128 * r * p * N (compared without overflow: r * p < 2^60).
    const std::uint64_t per_n = 128ull * r * par;
    const bool small = r * par <= (1ull << 20);
    if (!small || per_n > (limits::kMaxImportedScryptWork >> log2n)) {
      c.refusal = "scrypt ($7$) 128*r*p*N above apop's limit of " +
                  std::to_string(limits::kMaxImportedScryptWork) +
                  " for an imported hash (limits.hpp kMaxImportedScryptWork): set a new password";
      return c;
    }
    c.cheap = (per_n << log2n) < kScryptCheapWork;
    return c;
  }
  c.refusal = "crypt method " + std::string(h.substr(0, h.find('$', 1) + 1)) +
              " is not accepted: apop cannot bound its cost";
  return c;
}

// A complete hash, not just a setting: crypt(3) of anything with it gives a
// string of the same length and the same setting part.
bool complete_crypt_hash(const std::string& data) {
  auto buf = std::make_unique<crypt_data>();
  const char* out = crypt_r("apop-check", data.c_str(), buf.get());
  const std::size_t setting = data.rfind('$');
  const bool ok =
      out != nullptr && out[0] != '*' && std::strlen(out) == data.size() &&
      setting != std::string::npos && setting + 1 < data.size() &&
      std::string_view(out).substr(0, setting) == std::string_view(data).substr(0, setting);
  OPENSSL_cleanse(buf.get(), sizeof(crypt_data));
  return ok;
}

std::optional<Parsed> parse(std::string_view encoded, std::string& why) {
  if (!is_foreign_hash(encoded)) {
    why = "not a {SCHEME} hash";
    return std::nullopt;
  }
  const std::size_t close = encoded.find('}');
  std::string name = ascii_uppercase(encoded.substr(1, close - 1));
  std::string_view rest = encoded.substr(close + 1);
  std::optional<Enc> forced;
  for (std::string_view suffix : {".HEX", ".B64", ".BASE64"}) {
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      forced = suffix == ".HEX" ? Enc::hex : Enc::b64;
      name.resize(name.size() - suffix.size());
      break;
    }
  }
  Parsed p;
  const Scheme* scheme = nullptr;
  for (const auto& s : kSchemes)
    if (s.name == name) scheme = &s;
  std::optional<Enc> md5_enc;
  for (const auto& s : kMd5Schemes)
    if (s.name == name) md5_enc = s.enc;
  if (scheme == nullptr && !md5_enc) {
    why = "scheme {" + name + "} cannot be verified by apop";
    return std::nullopt;
  }
  p.scheme = name;
  if (scheme != nullptr && scheme->kind == Kind::crypt) {
    if (forced) {
      why = "crypt schemes take no encoding suffix";
      return std::nullopt;
    }
    p.kind = Kind::crypt;
    p.data = std::string(rest);
    if (p.data.find('\0') != std::string::npos ||
        !crypt_setting_ok(p.data, scheme->prefix, why, p.cheap)) {
      if (why.empty()) why = "malformed crypt(3) hash";
      return std::nullopt;
    }
    return p;
  }
  p.kind = md5_enc ? Kind::digest : scheme->kind;
  p.md = md5_enc ? "MD5" : scheme->md;
  p.enc = forced.value_or(md5_enc.value_or(Enc::b64));
  if (forced) p.scheme += p.enc == Enc::hex ? ".HEX" : ".B64";
  auto raw = p.enc == Enc::hex ? hex_decode(rest) : base64_decode_strict(rest);
  if (!raw) {
    why = std::string("the hash is not valid ") + (p.enc == Enc::hex ? "hex" : "base64");
    return std::nullopt;
  }
  p.digest_len = digest_size(p.md);
  if (p.digest_len == 0) {
    why = "digest unavailable in OpenSSL";
    return std::nullopt;
  }
  const bool salted = p.kind == Kind::salted_digest;
  if ((!salted && raw->size() != p.digest_len) || (salted && raw->size() <= p.digest_len)) {
    why = "the hash has the wrong length for {" + name + "}";
    return std::nullopt;
  }
  p.data = std::move(*raw);
  return p;
}

}  // namespace

bool is_foreign_hash(std::string_view encoded) {
  if (encoded.size() < 3 || encoded.front() != '{') return false;
  const std::size_t close = encoded.find('}');
  return close != std::string_view::npos && close > 1 && close <= 32;
}

std::string foreign_scheme(std::string_view encoded) {
  if (!is_foreign_hash(encoded)) return {};
  return ascii_uppercase(encoded.substr(1, encoded.find('}') - 1));
}

std::optional<std::string> normalize_foreign_hash(std::string_view encoded, std::string& why) {
  why.clear();
  auto p = parse(encoded, why);
  if (!p) return std::nullopt;
  if (p->kind == Kind::crypt && !complete_crypt_hash(p->data)) {
    why = "incomplete crypt(3) hash (a setting without the hash)";
    return std::nullopt;
  }
  return "{" + p->scheme + "}" + std::string(encoded.substr(encoded.find('}') + 1));
}

std::string foreign_hash_refusal(std::string_view encoded) {
  std::string why;
  if (parse(encoded, why)) return {};
  return why.empty() ? std::string("malformed hash") : why;
}

std::uint64_t foreign_crypt_runs() { return g_crypt_runs.load(std::memory_order_relaxed); }

bool verify_foreign_hash(std::string_view encoded, std::string_view password) {
  return check_foreign_hash(encoded, password) == ForeignCheck::match;
}

ForeignCheck check_foreign_hash(std::string_view encoded, std::string_view password, bool* cheap) {
  std::string why;
  auto p = parse(encoded, why);
  if (cheap != nullptr) *cheap = p ? p->cheap : false;
  if (!p) return ForeignCheck::refused;
  if (p->kind == Kind::crypt) {
    if (password.find('\0') != std::string_view::npos) return ForeignCheck::mismatch;
    auto data = std::make_unique<crypt_data>();
    std::string pw(password);
    g_crypt_runs.fetch_add(1, std::memory_order_relaxed);
    const char* out = crypt_r(pw.c_str(), p->data.c_str(), data.get());
    bool match = false;
    if (out != nullptr && out[0] != '*') {
      const std::string_view got(out);
      match = got.size() == p->data.size() &&
              CRYPTO_memcmp(got.data(), p->data.data(), got.size()) == 0;
    }
    OPENSSL_cleanse(data.get(), sizeof(crypt_data));
    OPENSSL_cleanse(pw.data(), pw.size());
    return match ? ForeignCheck::match : ForeignCheck::mismatch;
  }
  const EVP_MD* md = EVP_get_digestbyname(p->md);
  if (md == nullptr) return ForeignCheck::refused;
  std::string_view salt;
  if (p->kind == Kind::salted_digest) salt = std::string_view(p->data).substr(p->digest_len);
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  unsigned int n = 0;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), password.data(), password.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), salt.data(), salt.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), &n) != 1 || n != p->digest_len) {
    return ForeignCheck::refused;
  }
  const bool match = CRYPTO_memcmp(out.data(), p->data.data(), n) == 0;
  OPENSSL_cleanse(out.data(), out.size());
  return match ? ForeignCheck::match : ForeignCheck::mismatch;
}

}  // namespace apop::auth
