// Pieces shared by every CredentialStore: mechanism names, policy resolution,
// password derivation and the verifier encoding.
#include "auth/credential_store.hpp"

#include <openssl/crypto.h>

#include <array>

#include "auth/base64.hpp"
#include "auth/password_hash.hpp"
#include "auth/random.hpp"
#include "common/limits.hpp"
#include "common/parse.hpp"
#include "common/text.hpp"

namespace apop::auth {
namespace {

struct MechName {
  std::string_view name;
  MechanismSet bit;
};
constexpr std::array<MechName, 7> kMechNames = {{{"apop", kMechApop},
                                                 {"user", kMechUser},
                                                 {"plain", kMechPlain},
                                                 {"login", kMechLogin},
                                                 {"cram-md5", kMechCramMd5},
                                                 {"scram-sha-256", kMechScramSha256},
                                                 {"scram-sha-1", kMechScramSha1}}};

constexpr std::size_t kScramSaltLen = 16;

Result<ScramVerifier> new_verifier(std::string_view hash, std::string_view password) {
  std::array<unsigned char, kScramSaltLen> salt{};
  if (auto r = random_bytes(salt); !r) return r.error();
  ScramVerifier v = make_scram_verifier(
      hash, password, std::string_view(reinterpret_cast<const char*>(salt.data()), salt.size()),
      kScramMinIterations);
  if (v.iterations == 0) return make_error(Errc::temporary, "PBKDF2 failed");
  return v;
}

}  // namespace

Account::~Account() = default;  // the SecretStrings wipe themselves

MechanismSet mechanism_bit(std::string_view name) {
  for (const auto& m : kMechNames) {
    if (iequals(m.name, name)) return m.bit;
  }
  return 0;
}

std::optional<MechanismSet> parse_mechanisms(std::string_view list) {
  MechanismSet set = 0;
  bool any = false;
  while (true) {
    const std::size_t comma = list.find(',');
    std::string_view item = trim(list.substr(0, comma));
    if (iequals(item, "all")) {
      set |= kAllMechanisms;
    } else {
      const MechanismSet bit = mechanism_bit(item);
      if (bit == 0) return std::nullopt;
      set |= bit;
    }
    any = true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  if (!any || set == 0) return std::nullopt;
  return set;
}

std::string format_mechanisms(MechanismSet set) {
  std::string out;
  for (const auto& m : kMechNames) {
    if ((set & m.bit) == 0) continue;
    if (!out.empty()) out.push_back(',');
    out.append(m.name);
  }
  return out;
}

EffectivePolicy resolve_policy(const Policy& user, const Policy& defaults) {
  EffectivePolicy e;
  e.mechanisms = user.mechanisms.value_or(defaults.mechanisms.value_or(kAllMechanisms));
  e.device_secrets_only =
      user.device_secrets_only.value_or(defaults.device_secrets_only.value_or(false));
  e.md5_challenge_requires_tls =
      user.md5_challenge_requires_tls.value_or(defaults.md5_challenge_requires_tls.value_or(false));
  e.require_tls = user.require_tls.value_or(defaults.require_tls.value_or(false));
  return e;
}

Result<void> check_login_limits(const Policy& policy) {
  if (policy.login_delay && *policy.login_delay > limits::kMaxLoginDelay) {
    return make_error(Errc::invalid, "LOGIN-DELAY must be at most " +
                                         std::to_string(limits::kMaxLoginDelay) + " seconds");
  }
  if (policy.expire_days && *policy.expire_days != kExpireNever &&
      (*policy.expire_days < 0 || *policy.expire_days > limits::kMaxExpireDays)) {
    return make_error(Errc::invalid, "EXPIRE must be never or 0.." +
                                         std::to_string(limits::kMaxExpireDays) + " days");
  }
  return {};
}

bool is_valid_secret_name(std::string_view name) {
  if (name.empty() || name.size() > 32) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Result<DerivedPassword> derive_password(std::string_view password) {
  DerivedPassword d;
  auto h = hash_password(password);
  if (!h) return h.error();
  d.hash = std::move(*h);
  auto v256 = new_verifier("SHA-256", password);
  if (!v256) return v256.error();
  d.scram_sha256 = std::move(*v256);
  auto v1 = new_verifier("SHA-1", password);
  if (!v1) return v1.error();
  d.scram_sha1 = std::move(*v1);
  return d;
}

std::string encode_verifier(const ScramVerifier& v) {
  return std::to_string(v.iterations) + "$" + base64_encode(v.salt) + "$" +
         base64_encode(v.stored_key) + "$" + base64_encode(v.server_key);
}

std::optional<ScramVerifier> decode_verifier(std::string_view s) {
  std::array<std::string_view, 4> f;
  for (std::size_t i = 0; i < 4; ++i) {
    const std::size_t d = s.find('$');
    if ((d == std::string_view::npos) != (i == 3)) return std::nullopt;
    f[i] = s.substr(0, d);
    s = d == std::string_view::npos ? std::string_view() : s.substr(d + 1);
  }
  ScramVerifier v;
  const auto iterations = parse_decimal<std::uint32_t>(f[0]);
  if (!iterations || *iterations == 0) return std::nullopt;
  v.iterations = *iterations;
  auto salt = base64_decode_strict(f[1]);
  auto stored = base64_decode_strict(f[2]);
  auto server = base64_decode_strict(f[3]);
  if (!salt || !stored || !server || salt->empty()) return std::nullopt;
  v.salt = std::move(*salt);
  v.stored_key = std::move(*stored);
  v.server_key = std::move(*server);
  return v;
}

}  // namespace apop::auth
