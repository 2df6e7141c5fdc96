#include "auth/foreign_hash.hpp"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <cstring>
#include <memory>

#include "auth/base64.hpp"
#include "common/limits.hpp"

namespace apop::auth {
namespace {

char upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }

std::string to_upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = upper(c);
  return out;
}

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

bool cost_ok(std::string_view h);

bool crypt_setting_ok(const std::string& data, std::string_view prefix, std::string& why) {
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
  if (!cost_ok(data)) {
    why = "the hash's cost is above what apop verifies at login (limits.hpp)";
    return false;
  }
  return true;
}

// "$5$rounds=N$", "$6$rounds=N$", "$2b$NN$", "$y$<flags><N><r>...$": bounded
// so that one login cannot stall the auth threads.
bool cost_ok(std::string_view h) {
  auto number = [](std::string_view s) -> std::optional<std::uint64_t> {
    std::uint64_t v = 0;
    if (s.empty() || s.size() > 12) return std::nullopt;
    for (char c : s) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
  };
  if (h.rfind("$5$rounds=", 0) == 0 || h.rfind("$6$rounds=", 0) == 0) {
    std::string_view r = h.substr(10);
    auto n = number(r.substr(0, r.find('$')));
    return n && *n <= limits::kMaxImportedShaCryptRounds;
  }
  if (h.size() > 6 && h[0] == '$' && h[1] == '2' && h[3] == '$') {
    auto n = number(h.substr(4, 2));
    return n && *n <= limits::kMaxImportedBcryptCost;
  }
  if (h.rfind("$y$", 0) == 0 || h.rfind("$gy$", 0) == 0) {
    // Parameters in crypt's base-64 digits: flags, then log2(N) - 1, ...
    static constexpr std::string_view kItoa64 =
        "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const std::string_view p = h.substr(h[1] == 'y' ? 3 : 4);
    if (p.size() < 2) return false;
    const std::size_t n = kItoa64.find(p[1]);
    return n != std::string_view::npos && n + 1 <= limits::kMaxImportedYescryptLog2N;
  }
  return true;  // $1$ and the SHA-crypt defaults have fixed costs
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
  std::string name = to_upper(encoded.substr(1, close - 1));
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
    if (p.data.find('\0') != std::string::npos || !crypt_setting_ok(p.data, scheme->prefix, why)) {
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
  return to_upper(encoded.substr(1, encoded.find('}') - 1));
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

bool verify_foreign_hash(std::string_view encoded, std::string_view password) {
  std::string why;
  auto p = parse(encoded, why);
  if (!p) return false;
  if (p->kind == Kind::crypt) {
    if (password.find('\0') != std::string_view::npos) return false;
    auto data = std::make_unique<crypt_data>();
    const std::string pw(password);
    const char* out = crypt_r(pw.c_str(), p->data.c_str(), data.get());
    bool match = false;
    if (out != nullptr && out[0] != '*') {
      const std::string_view got(out);
      match = got.size() == p->data.size() &&
              CRYPTO_memcmp(got.data(), p->data.data(), got.size()) == 0;
    }
    OPENSSL_cleanse(data.get(), sizeof(crypt_data));
    return match;
  }
  const EVP_MD* md = EVP_get_digestbyname(p->md);
  if (md == nullptr) return false;
  std::string_view salt;
  if (p->kind == Kind::salted_digest) salt = std::string_view(p->data).substr(p->digest_len);
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  unsigned int n = 0;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), password.data(), password.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), salt.data(), salt.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), &n) != 1 || n != p->digest_len) {
    return false;
  }
  const bool match = CRYPTO_memcmp(out.data(), p->data.data(), n) == 0;
  OPENSSL_cleanse(out.data(), out.size());
  return match;
}

}  // namespace apop::auth
