// SCRAM server state machine (RFC 5802 §5, §7):
//   client-first  "n,,n=user,r=CNONCE"                (gs2 header "n,," / "y,," [+ a=user])
//   server-first  "r=CNONCE SNONCE,s=SALT,i=ITER"       (challenge)
//   client-final  "c=biws,r=CNONCE SNONCE,p=PROOF"
//   server-final  "v=SERVER_SIGNATURE"                 (challenge, RFC 5034 §4)
//   client        ""                                    -> success
// Verifier choice, per user:
//   1. the stored verifier for this hash, when usable (no PBKDF2 on the server);
//   2. FALLBACK: only a plaintext secret is known -> derive a verifier on the fly
//      with a salt derived from the user name and a process-random key
//      (sasl_detail::fallback_salt) and kScramMinIterations. This costs one
//      PBKDF2 per exchange, and the salt changes when the process restarts;
//      accounts should carry stored verifiers;
//   3. unknown user (or nothing usable) -> sasl_detail::dummy_verifier(): same
//      salt derivation (so repeated attempts for one unknown name see the same
//      salt), kScramMinIterations, random-looking keys, no PBKDF2 (as in case
//      1); the exchange runs to the proof check and fails there.
#include "auth/sasl_scram.hpp"

#include <cstddef>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/base64.hpp"
#include "auth/digest.hpp"
#include "auth/random.hpp"

namespace apop::auth {
namespace {

using sasl_detail::cleanse;

SaslStep challenge(std::string data) {
  return {SaslStep::Kind::challenge, std::move(data), {}, {}};
}
SaslStep failure() { return {SaslStep::Kind::failure, {}, {}, {}}; }

// printable = %x21-2B / %x2D-7E (RFC 5802 §7): visible ASCII except ','.
bool is_printable_nonce(std::string_view s) {
  if (s.empty()) return false;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

// saslname (RFC 5802 §7): "=2C" is ',', "=3D" is '=', any other '=' is an error.
// Empty names are rejected. (',' cannot occur: callers split on it.)
std::optional<std::string> decode_saslname(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '=') {
      out += s[i];
      continue;
    }
    const std::string_view esc = s.substr(i + 1, 2);
    if (esc == "2C") {
      out += ',';
    } else if (esc == "3D") {
      out += '=';
    } else {
      return std::nullopt;
    }
    i += 2;
  }
  return out;
}

std::vector<std::string_view> split_commas(std::string_view s) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = s.find(',', start);
    if (comma == std::string_view::npos) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
}

// An optional extension: attr-val = ALPHA "=" value, value non-empty. The
// reserved "m" attribute must fail the exchange (RFC 5802 §5.1).
bool is_extension(std::string_view a) {
  if (a.size() < 3 || a[1] != '=') return false;
  const char c = a[0];
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return alpha && c != 'm';
}

class ScramExchange final : public SaslExchange {
 public:
  ScramExchange(ScramHash hash, CredentialLookup lookup, std::optional<std::string> server_nonce)
      : hash_(hash), lookup_(std::move(lookup)), fixed_nonce_(std::move(server_nonce)) {}

  ~ScramExchange() override {
    cleanse(verifier_.stored_key);
    cleanse(verifier_.server_key);
  }

  SaslStep step(std::optional<std::string_view> response) override {
    const State state = state_;
    state_ = State::done;  // each handler sets the next state on success
    switch (state) {
      case State::start:
        if (!response) {
          state_ = State::wait_first;
          return challenge({});
        }
        return client_first(*response);
      case State::wait_first:
        if (!response) break;
        return client_first(*response);
      case State::wait_final:
        if (!response) break;
        return client_final(*response);
      case State::wait_ack:
        // The client acknowledges the server-final message with an empty response.
        if (!response || !response->empty()) break;
        return {SaslStep::Kind::success, {}, std::move(user_), "password"};
      case State::done:
        break;
    }
    return failure();
  }

 private:
  enum class State { start, wait_first, wait_final, wait_ack, done };

  SaslStep client_first(std::string_view msg) {
    if (msg.find('\0') != std::string_view::npos) return failure();
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    // "p=..." (the client requires channel binding) is refused: no -PLUS mechanisms.
    if (msg.size() < 2 || (msg[0] != 'n' && msg[0] != 'y') || msg[1] != ',') return failure();
    std::size_t pos = 2;
    std::optional<std::string> authzid;
    if (msg.substr(pos, 2) == "a=") {
      const std::size_t comma = msg.find(',', pos);
      if (comma == std::string_view::npos) return failure();
      authzid = decode_saslname(msg.substr(pos + 2, comma - pos - 2));
      if (!authzid) return failure();
      pos = comma;
    }
    if (pos >= msg.size() || msg[pos] != ',') return failure();
    ++pos;
    gs2_header_ = std::string(msg.substr(0, pos));
    client_first_bare_ = std::string(msg.substr(pos));

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    const auto attrs = split_commas(client_first_bare_);
    if (attrs.size() < 2) return failure();
    if (attrs[0].substr(0, 2) != "n=") return failure();  // also rejects "m="
    auto user = decode_saslname(attrs[0].substr(2));
    if (!user) return failure();
    if (attrs[1].substr(0, 2) != "r=") return failure();
    const std::string_view client_nonce = attrs[1].substr(2);
    if (!is_printable_nonce(client_nonce)) return failure();
    for (std::size_t i = 2; i < attrs.size(); ++i) {
      if (!is_extension(attrs[i])) return failure();
    }
    if (authzid && *authzid != *user) return failure();  // no proxy authentication

    std::string server_nonce;
    if (fixed_nonce_) {
      server_nonce = *fixed_nonce_;
    } else {
      unsigned char raw[18];
      if (!random_bytes(std::span<unsigned char>(raw))) return failure();
      server_nonce =
          base64_encode(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
    }
    if (!is_printable_nonce(server_nonce)) return failure();

    user_ = std::move(*user);
    choose_verifier();
    nonce_ = std::string(client_nonce) + server_nonce;
    server_first_ = "r=" + nonce_ + ",s=" + base64_encode(verifier_.salt) +
                    ",i=" + std::to_string(verifier_.iterations);
    state_ = State::wait_final;
    return challenge(server_first_);
  }

  void choose_verifier() {
    std::optional<SaslCredentials> creds;
    if (lookup_) creds = lookup_(user_);
    const std::optional<ScramVerifier>* stored = nullptr;
    if (creds) stored = hash_ == ScramHash::sha256 ? &creds->scram_sha256 : &creds->scram_sha1;
    if (stored && *stored && sasl_detail::verifier_usable(hash_, **stored)) {
      verifier_ = **stored;
      known_ = true;
    } else if (creds && creds->plaintext && !creds->plaintext->empty()) {
      // FALLBACK (see the top of this file): derive from the plaintext secret.
      verifier_ = sasl_detail::derive_verifier(
          hash_, *creds->plaintext, sasl_detail::fallback_salt(hash_, user_), kScramMinIterations);
      known_ = true;
    } else {
      verifier_ = sasl_detail::dummy_verifier(hash_, user_);
      known_ = false;
    }
    if (creds && creds->plaintext) creds->plaintext->wipe();
  }

  SaslStep client_final(std::string_view msg) {
    if (msg.find('\0') != std::string_view::npos) return failure();
    // client-final-message = channel-binding "," nonce ["," extensions] "," proof
    const std::size_t proof_at = msg.rfind(",p=");
    if (proof_at == std::string_view::npos) return failure();
    const std::string_view without_proof = msg.substr(0, proof_at);
    const auto proof = base64_decode_strict(msg.substr(proof_at + 3));
    if (!proof || proof->size() != sasl_detail::hash_size(hash_)) return failure();

    const auto attrs = split_commas(without_proof);
    if (attrs.size() < 2) return failure();
    // c= is base64(gs2-header): "biws" for "n,,", "eSws" for "y,,".
    if (attrs[0] != "c=" + base64_encode(gs2_header_)) return failure();
    if (attrs[1] != "r=" + nonce_) return failure();
    for (std::size_t i = 2; i < attrs.size(); ++i) {
      if (!is_extension(attrs[i])) return failure();
    }

    // AuthMessage = client-first-message-bare "," server-first-message ","
    //               client-final-message-without-proof
    std::string auth_message;
    auth_message.reserve(client_first_bare_.size() + server_first_.size() + without_proof.size() +
                         2);
    auth_message.append(client_first_bare_).append(",").append(server_first_).append(",");
    auth_message.append(without_proof);

    // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) == StoredKey?
    std::string client_key = sasl_detail::hmac(hash_, verifier_.stored_key, auth_message);
    for (std::size_t i = 0; i < client_key.size(); ++i) client_key[i] ^= (*proof)[i];
    const bool proof_ok = ct_equal(sasl_detail::hash(hash_, client_key), verifier_.stored_key);
    cleanse(client_key);
    const std::string server_signature =
        sasl_detail::hmac(hash_, verifier_.server_key, auth_message);
    if (!(proof_ok && known_)) {
      // The proof was checked: a failed login of the user named in n=.
      SaslStep f = failure();
      f.user = user_;
      return f;
    }
    state_ = State::wait_ack;
    return challenge("v=" + base64_encode(server_signature));
  }

  ScramHash hash_;
  CredentialLookup lookup_;
  std::optional<std::string> fixed_nonce_;
  State state_ = State::start;
  std::string gs2_header_;
  std::string client_first_bare_;
  std::string server_first_;
  std::string nonce_;
  std::string user_;
  ScramVerifier verifier_;
  bool known_ = false;
};

}  // namespace

std::unique_ptr<SaslExchange> make_scram_exchange(ScramHash hash, CredentialLookup lookup,
                                                  std::optional<std::string> server_nonce) {
  return std::make_unique<ScramExchange>(hash, std::move(lookup), std::move(server_nonce));
}

}  // namespace apop::auth
