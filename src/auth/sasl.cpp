#include "auth/sasl.hpp"

#include <cstddef>
#include <utility>
#include <vector>

#include "auth/digest.hpp"
#include "auth/sasl_crypto.hpp"
#include "auth/sasl_scram.hpp"
#include "common/text.hpp"

namespace apop::auth {
namespace {

using sasl_detail::check_password;

SaslStep challenge(std::string data) {
  return {SaslStep::Kind::challenge, std::move(data), {}, {}};
}
SaslStep failure() { return {SaslStep::Kind::failure, {}, {}, {}}; }
// A failure once the client named the user it tries (its authentication
// identity): the throttle counts the failure against that name and the log
// names it.
SaslStep failure_of(std::string_view user) {
  return {SaslStep::Kind::failure, {}, std::string(user), {}};
}
SaslStep success(std::string user, std::string credential = "password") {
  return {SaslStep::Kind::success, {}, std::move(user), std::move(credential)};
}

std::optional<SaslCredentials> lookup_user(const CredentialLookup& lookup, std::string_view user) {
  if (!lookup) return std::nullopt;
  return lookup(user);
}

// The credential name of a PLAIN or LOGIN success (see
// SaslCredentials::password_verified).
std::string after_password(const std::optional<SaslCredentials>& creds, std::string_view password) {
  if (creds && creds->password_verified) return creds->password_verified(password);
  return "password";
}

// RFC 4616. message = [authzid] NUL authcid NUL passwd. Client-first: without
// an initial response the server sends an empty challenge.
class PlainExchange final : public SaslExchange {
 public:
  explicit PlainExchange(CredentialLookup lookup) : lookup_(std::move(lookup)) {}

  SaslStep step(std::optional<std::string_view> response) override {
    switch (state_) {
      case State::start:
        if (!response) {
          state_ = State::wait_message;
          return challenge({});
        }
        state_ = State::done;
        return verify(*response);
      case State::wait_message:
        state_ = State::done;
        if (!response) return failure();
        return verify(*response);
      case State::done:
        break;
    }
    return failure();
  }

 private:
  enum class State { start, wait_message, done };

  SaslStep verify(std::string_view msg) {
    const std::size_t nul1 = msg.find('\0');
    if (nul1 == std::string_view::npos) return failure();
    const std::size_t nul2 = msg.find('\0', nul1 + 1);
    if (nul2 == std::string_view::npos) return failure();
    if (msg.find('\0', nul2 + 1) != std::string_view::npos) return failure();  // extra NUL
    const std::string_view authzid = msg.substr(0, nul1);
    const std::string_view authcid = msg.substr(nul1 + 1, nul2 - nul1 - 1);
    const std::string_view passwd = msg.substr(nul2 + 1);
    // Malformed messages fail at once: that depends on the message only, never on the user.
    if (authcid.empty() || passwd.empty()) return failure();
    if (!authzid.empty() && authzid != authcid) return failure();  // no proxy authentication
    const auto creds = lookup_user(lookup_, authcid);
    if (!check_password(creds, authcid, passwd)) return failure_of(authcid);
    return success(std::string(authcid), after_password(creds, passwd));
  }

  CredentialLookup lookup_;
  State state_ = State::start;
};

// draft-murchison-sasl-login: "Username:", then "Password:". An initial
// response, if any, is the user name.
class LoginExchange final : public SaslExchange {
 public:
  explicit LoginExchange(CredentialLookup lookup) : lookup_(std::move(lookup)) {}

  SaslStep step(std::optional<std::string_view> response) override {
    switch (state_) {
      case State::start:
        if (!response) {
          state_ = State::wait_user;
          return challenge("Username:");
        }
        user_ = std::string(*response);
        state_ = State::wait_password;
        return challenge("Password:");
      case State::wait_user:
        if (!response) break;
        user_ = std::string(*response);
        state_ = State::wait_password;
        return challenge("Password:");
      case State::wait_password: {
        state_ = State::done;
        if (!response) break;
        // An empty name or password cannot log in, but costs the same work and
        // takes the same steps as a wrong password.
        const bool usable = !user_.empty() && !response->empty();
        const auto creds = usable ? lookup_user(lookup_, user_) : std::nullopt;
        const bool ok = check_password(creds, user_, *response);
        if (!(ok && usable)) return failure_of(user_);
        return success(std::move(user_), after_password(creds, *response));
      }
      case State::done:
        break;
    }
    state_ = State::done;
    return failure();
  }

 private:
  enum class State { start, wait_user, wait_password, done };
  CredentialLookup lookup_;
  std::string user_;
  State state_ = State::start;
};

// RFC 2195: the server sends its msg-id challenge; the client answers
// "user SP hex(HMAC-MD5(secret, challenge))". Server-first: an initial response
// is a protocol error (RFC 4422 §3.3). Needs the plaintext secret; without one
// (or for an unknown user) a dummy secret gives the same work and fails.
class CramMd5Exchange final : public SaslExchange {
 public:
  CramMd5Exchange(CredentialLookup lookup, std::string challenge_id)
      : lookup_(std::move(lookup)), challenge_(std::move(challenge_id)) {}

  SaslStep step(std::optional<std::string_view> response) override {
    switch (state_) {
      case State::start:
        if (response || challenge_.empty()) break;
        state_ = State::wait_answer;
        return challenge(challenge_);
      case State::wait_answer:
        if (!response) break;
        state_ = State::done;
        return verify(*response);
      case State::done:
        break;
    }
    state_ = State::done;
    return failure();
  }

 private:
  enum class State { start, wait_answer, done };
  static constexpr std::size_t kDigestHex = 32;

  SaslStep verify(std::string_view answer) {
    const std::size_t sp = answer.rfind(' ');
    if (sp == std::string_view::npos || sp == 0) return failure();
    const std::string_view user = answer.substr(0, sp);
    const std::string_view digest = answer.substr(sp + 1);

    const auto creds = lookup_user(lookup_, user);
    // Candidates: the password's plaintext copy and the extra secrets; one
    // dummy when there are none (unknown user, or device secrets only and
    // none set), so every path computes at least one HMAC. All are tried
    // (no early exit): the work depends on the number of secrets only.
    std::vector<std::pair<std::string_view, std::string_view>> candidates;
    if (creds && creds->plaintext && !creds->plaintext->empty()) {
      candidates.emplace_back("password", *creds->plaintext);
    }
    if (creds) {
      for (const auto& [name, secret] : creds->extra_secrets) {
        if (!secret.empty()) candidates.emplace_back(name, secret);
      }
    }
    const bool known = !candidates.empty();
    std::string dummy = sasl_detail::keyed_tag("cram-md5 dummy secret", user);
    if (!known) candidates.emplace_back("", dummy);
    // Fixed-size, branch-free normalisation of the client's digest (as for APOP):
    // lowercase A-F, and note without early exit whether all are hex digits.
    std::string given(kDigestHex, '\0');
    unsigned bad = digest.size() == kDigestHex ? 0u : 1u;
    for (std::size_t i = 0; i < kDigestHex; ++i) {
      auto c = i < digest.size() ? static_cast<unsigned char>(digest[i]) : 0;
      const auto upper = static_cast<unsigned>((c >= 'A') & (c <= 'F'));
      c = static_cast<unsigned char>(c | (upper << 5));
      const auto dig = static_cast<unsigned>((c >= '0') & (c <= '9'));
      const auto low = static_cast<unsigned>((c >= 'a') & (c <= 'f'));
      bad |= (dig | low) ^ 1u;
      given[i] = static_cast<char>(c);
    }
    std::string_view matched;
    bool any = false;
    for (const auto& [name, secret] : candidates) {
      std::string mac = sasl_detail::hmac_md5(secret, challenge_);
      std::string expected = to_hex(mac);
      const bool match = ct_equal(expected, given);
      sasl_detail::cleanse(mac);
      sasl_detail::cleanse(expected);
      if (match && !any) matched = name;
      any = any || match;
    }
    sasl_detail::cleanse(dummy);
    if (!(any && bad == 0 && known)) return failure_of(user);
    return success(std::string(user), std::string(matched));
  }

  CredentialLookup lookup_;
  std::string challenge_;
  State state_ = State::start;
};

}  // namespace

std::unique_ptr<SaslExchange> make_sasl_exchange(std::string_view mechanism,
                                                 CredentialLookup lookup,
                                                 std::string challenge_id) {
  if (iequals(mechanism, "SCRAM-SHA-256")) {
    return make_scram_exchange(ScramHash::sha256, std::move(lookup));
  }
  if (iequals(mechanism, "SCRAM-SHA-1")) {
    return make_scram_exchange(ScramHash::sha1, std::move(lookup));
  }
  if (iequals(mechanism, "CRAM-MD5")) {
    return std::make_unique<CramMd5Exchange>(std::move(lookup), std::move(challenge_id));
  }
  if (iequals(mechanism, "PLAIN")) return std::make_unique<PlainExchange>(std::move(lookup));
  if (iequals(mechanism, "LOGIN")) return std::make_unique<LoginExchange>(std::move(lookup));
  return nullptr;
}

ScramVerifier make_scram_verifier(std::string_view hash, std::string_view password,
                                  std::string_view salt, std::uint32_t iterations) {
  if (iequals(hash, "SHA-256")) {
    return sasl_detail::derive_verifier(ScramHash::sha256, password, salt, iterations);
  }
  if (iequals(hash, "SHA-1")) {
    return sasl_detail::derive_verifier(ScramHash::sha1, password, salt, iterations);
  }
  return {};
}

}  // namespace apop::auth
