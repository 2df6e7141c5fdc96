// Client authentication (client/protocol.hpp, "SASL"): the SCRAM-SHA-256,
// CRAM-MD5, PLAIN, OAUTHBEARER and XOAUTH2 responses, the OAuth error
// decoder, the choice of mechanism and the downgrade
// check between two connections.
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "auth/base64.hpp"
#include "auth/digest.hpp"
#include "auth/random.hpp"
#include "auth/sasl_crypto.hpp"
#include "client/protocol.hpp"
#include "client/protocol_internal.hpp"
#include "common/limits.hpp"
#include "common/text.hpp"

namespace apop::client {

using namespace protocol_detail;

namespace {
std::string scram_escape(std::string_view user) {
  std::string out;
  for (char c : user) {
    if (c == ',')
      out += "=2C";
    else if (c == '=')
      out += "=3D";
    else
      out.push_back(c);
  }
  return out;
}

// The value of attribute `name` in a comma-separated SCRAM message.
std::optional<std::string_view> scram_attr(std::string_view msg, char name) {
  while (!msg.empty()) {
    std::size_t comma = msg.find(',');
    std::string_view part = msg.substr(0, comma);
    if (part.size() >= 2 && part[0] == name && part[1] == '=') return part.substr(2);
    if (comma == std::string_view::npos) break;
    msg.remove_prefix(comma + 1);
  }
  return std::nullopt;
}
}  // namespace

ScramClient::ScramClient(std::string user, std::string password, std::string nonce)
    : user_(std::move(user)), password_(std::move(password)), nonce_(std::move(nonce)) {
  if (nonce_.empty()) {
    unsigned char raw[24];
    if (!auth::random_bytes(raw)) std::abort();  // never continue with a weak nonce
    nonce_ = auth::base64_encode(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
  }
  client_first_bare_ = "n=" + scram_escape(user_) + ",r=" + nonce_;
}

ScramClient::~ScramClient() {
  auth::sasl_detail::cleanse(password_);
  auth::sasl_detail::cleanse(server_key_);
}

std::string ScramClient::client_first() const { return "n,," + client_first_bare_; }

Result<std::string> ScramClient::client_final(std::string_view server_first) {
  using auth::ScramHash;
  namespace sd = auth::sasl_detail;
  if (server_first.substr(0, 2) == "m=")
    return invalid("SCRAM server requires an unknown extension");
  if (server_first.substr(0, 2) != "r=")
    return invalid("SCRAM server-first does not start with r=");
  auto r = scram_attr(server_first, 'r');
  auto s = scram_attr(server_first, 's');
  auto i = scram_attr(server_first, 'i');
  if (!r || !s || !i) return invalid("SCRAM server-first lacks r=, s= or i=");
  if (r->size() <= nonce_.size() || r->substr(0, nonce_.size()) != nonce_) {
    return invalid("SCRAM server nonce does not extend the client nonce");
  }
  for (unsigned char c : *r) {
    if (c < 0x21 || c > 0x7e) return invalid("SCRAM server nonce contains a non-printable octet");
  }
  auto salt = auth::base64_decode_strict(*s);
  if (!salt || salt->empty()) return invalid("SCRAM salt is empty or not valid base64");
  auto iters = parse_number(*i);
  if (!iters) return invalid("SCRAM iteration count: " + iters.error().message);
  if (*iters < limits::kMinScramIterations) {
    return invalid("SCRAM iteration count " + std::to_string(*iters) + " is below " +
                   std::to_string(limits::kMinScramIterations) + " (weak)");
  }
  if (*iters > limits::kMaxScramIterations) {
    return invalid("SCRAM iteration count " + std::to_string(*iters) + " is above " +
                   std::to_string(limits::kMaxScramIterations));
  }
  std::string salted(32, '\0');
  if (PKCS5_PBKDF2_HMAC(password_.data(), static_cast<int>(password_.size()),
                        reinterpret_cast<const unsigned char*>(salt->data()),
                        static_cast<int>(salt->size()), static_cast<int>(*iters), EVP_sha256(),
                        static_cast<int>(salted.size()),
                        reinterpret_cast<unsigned char*>(salted.data())) != 1) {
    return make_error(Errc::temporary, "PBKDF2 failed");
  }
  std::string client_key = sd::hmac(ScramHash::sha256, salted, "Client Key");
  std::string stored_key = sd::hash(ScramHash::sha256, client_key);
  server_key_ = sd::hmac(ScramHash::sha256, salted, "Server Key");
  std::string without_proof = "c=biws,r=" + std::string(*r);
  auth_message_ = client_first_bare_ + "," + std::string(server_first) + "," + without_proof;
  std::string signature = sd::hmac(ScramHash::sha256, stored_key, auth_message_);
  std::string proof = client_key;
  for (std::size_t k = 0; k < proof.size(); ++k)
    proof[k] = static_cast<char>(proof[k] ^ signature[k]);
  std::string out = without_proof + ",p=" + auth::base64_encode(proof);
  sd::cleanse(salted);
  sd::cleanse(client_key);
  sd::cleanse(proof);
  return out;
}

Result<void> ScramClient::verify_server_final(std::string_view server_final) const {
  namespace sd = auth::sasl_detail;
  if (server_key_.empty()) return invalid("SCRAM server-final before client-final");
  if (auto e = scram_attr(server_final, 'e'); e && server_final.substr(0, 2) == "e=") {
    return make_error(Errc::auth_failed, "SCRAM server error: " + printable(*e));
  }
  if (server_final.substr(0, 2) != "v=") return invalid("SCRAM server-final has no v=");
  auto v = scram_attr(server_final, 'v');
  auto sig = auth::base64_decode_strict(*v);
  std::string expected = sd::hmac(auth::ScramHash::sha256, server_key_, auth_message_);
  if (!sig || !auth::ct_equal(*sig, expected)) {
    return make_error(
        Errc::auth_failed,
        "SCRAM server signature is wrong: the server does not know the password (impostor?)");
  }
  return {};
}

std::string cram_md5_response(std::string_view user, std::string_view secret,
                              std::string_view challenge) {
  return std::string(user) + " " + to_hex(auth::sasl_detail::hmac_md5(secret, challenge));
}

std::string plain_response(std::string_view user, std::string_view secret) {
  std::string out;
  out.push_back('\0');
  out.append(user);
  out.push_back('\0');
  out.append(secret);
  return out;
}

std::string oauthbearer_response(std::string_view user, std::string_view token,
                                 std::string_view host, std::uint16_t port) {
  // RFC 7628 §3.1: gs2-header "n,a=saslname," (RFC 5801 §4 escaping), then
  // kvpairs each ended by %x01, then a final %x01.
  std::string out = "n,a=" + scram_escape(user) + ",\x01";
  if (!host.empty()) out.append("host=").append(host).push_back('\x01');
  if (port != 0) out.append("port=").append(std::to_string(port)).push_back('\x01');
  out.append("auth=Bearer ").append(token);
  out += "\x01\x01";
  return out;
}

std::string xoauth2_response(std::string_view user, std::string_view token) {
  std::string out = "user=";
  out.append(user).push_back('\x01');  // (not "\x01auth": \x01a is one hex escape)
  out.append("auth=Bearer ").append(token);
  out += "\x01\x01";
  return out;
}

std::string OAuthError::describe() const {
  if (status.empty()) return {};
  std::string out = status;
  std::string extra;
  if (!scope.empty()) extra = "scope: " + scope;
  if (!openid_configuration.empty()) {
    if (!extra.empty()) extra += "; ";
    extra += "openid-configuration: " + openid_configuration;
  }
  if (!extra.empty()) out += " (" + extra + ")";
  return out;
}

Result<OAuthError> decode_oauth_error(std::string_view base64) {
  using nlohmann::json;
  if (base64.size() > limits::kMaxOAuthErrorJson / 3 * 4 + 4)
    return invalid("OAuth error challenge is longer than " +
                   std::to_string(limits::kMaxOAuthErrorJson) + " octets");
  auto text = auth::base64_decode_strict(base64);
  if (!text) return invalid("OAuth error challenge is not valid base64");
  if (text->size() > limits::kMaxOAuthErrorJson) {
    return invalid("OAuth error challenge is longer than " +
                   std::to_string(limits::kMaxOAuthErrorJson) + " octets");
  }
  // nlohmann's lexer takes a NUL for the end of the input: refuse it here.
  if (text->find('\0') != std::string::npos) return invalid("OAuth error challenge contains a NUL");
  // No exceptions: a parse error (including ill-formed UTF-8 in a string)
  // gives a discarded value. nlohmann parses without recursion and destroys
  // nested values without recursion (3.10+), so deep nesting is harmless.
  const json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return invalid("OAuth error challenge is not JSON: " + printable(*text));
  }
  if (!j.is_object()) return invalid("OAuth error challenge is not a JSON object");
  auto field = [&j](const char* name) -> std::string {
    auto it = j.find(name);
    if (it == j.end()) return {};
    if (it->is_string())
      return apop::printable(it->get_ref<const std::string&>(),
                             {.max = limits::kMaxOAuthErrorField});
    if (it->is_number_integer()) return std::to_string(it->get<std::int64_t>());
    if (it->is_number_unsigned()) return std::to_string(it->get<std::uint64_t>());
    return {};
  };
  OAuthError e;
  e.status = field("status");
  if (e.status.empty()) return invalid("OAuth error challenge has no \"status\"");
  e.scope = field("scope");
  e.openid_configuration = field("openid-configuration");
  return e;
}

// ---------------------------------------------------------------------------

std::string_view auth_mech_name(AuthMech m) {
  switch (m) {
    case AuthMech::automatic:
      return "auto";
    case AuthMech::apop:
      return "apop";
    case AuthMech::scram_sha_256:
      return "scram-sha-256";
    case AuthMech::cram_md5:
      return "cram-md5";
    case AuthMech::plain:
      return "plain";
    case AuthMech::login:
      return "login";
    case AuthMech::user:
      return "user";
    case AuthMech::xoauth2:
      return "xoauth2";
    case AuthMech::oauthbearer:
      return "oauthbearer";
  }
  return "?";
}

std::optional<AuthMech> parse_auth_mech(std::string_view s) {
  const std::string l = ascii_lowercase(s);
  for (AuthMech m : kAllAuthMechs) {
    if (l == auth_mech_name(m)) return m;
  }
  return std::nullopt;
}

Result<AuthMech> choose_auth(AuthMech requested, const AuthContext& ctx) {
  const bool apop_ok = ctx.challenge.status == Challenge::Status::valid;
  const bool user_offered = ctx.caps.user || !ctx.caps.received;
  const bool clear_ok = ctx.tls || ctx.allow_plaintext;
  auto bad_challenge = [&] {
    return make_error(Errc::permanent,
                      "refusing APOP: invalid challenge from the server: " + ctx.challenge.reason +
                          " (CVE-2007-1558; no digest was sent)");
  };
  auto plaintext_refused = [&](std::string_view what) {
    return make_error(Errc::permanent, "refusing to send the password in the clear (" +
                                           std::string(what) +
                                           " without TLS); use TLS or --allow-plaintext");
  };
  switch (requested) {
    case AuthMech::apop:
      if (apop_ok) return AuthMech::apop;
      if (ctx.challenge.status == Challenge::Status::invalid) return bad_challenge();
      return make_error(Errc::not_found, "the server offers no APOP timestamp in its greeting");
    case AuthMech::scram_sha_256:
      if (ctx.caps.has_sasl("SCRAM-SHA-256")) return requested;
      return make_error(Errc::not_found, "the server does not offer SASL SCRAM-SHA-256");
    case AuthMech::cram_md5:
      if (ctx.caps.has_sasl("CRAM-MD5")) return requested;
      return make_error(Errc::not_found, "the server does not offer SASL CRAM-MD5");
    case AuthMech::plain:
    case AuthMech::login: {
      std::string name = requested == AuthMech::plain ? "PLAIN" : "LOGIN";
      if (!clear_ok) return plaintext_refused("AUTH " + name);
      if (ctx.caps.has_sasl(name)) return requested;
      return make_error(Errc::not_found, "the server does not offer SASL " + name);
    }
    case AuthMech::xoauth2:
    case AuthMech::oauthbearer: {
      std::string name = requested == AuthMech::xoauth2 ? "XOAUTH2" : "OAUTHBEARER";
      if (!clear_ok) {
        return make_error(Errc::permanent, "refusing to send the bearer token in the clear (AUTH " +
                                               name +
                                               " without TLS); use TLS or --allow-plaintext");
      }
      if (ctx.caps.has_sasl(name)) return requested;
      return make_error(Errc::not_found, "the server does not offer SASL " + name);
    }
    case AuthMech::user:
      if (!clear_ok) return plaintext_refused("USER/PASS");
      if (user_offered) return requested;
      return make_error(Errc::not_found, "the server does not offer USER/PASS");
    case AuthMech::automatic:
      break;
  }
  if (ctx.caps.has_sasl("SCRAM-SHA-256")) return AuthMech::scram_sha_256;
  if (ctx.tls && apop_ok) return AuthMech::apop;
  if (ctx.caps.has_sasl("CRAM-MD5")) return AuthMech::cram_md5;
  if (ctx.tls && ctx.caps.has_sasl("PLAIN")) return AuthMech::plain;
  if (apop_ok) return AuthMech::apop;
  if (clear_ok) {
    if (ctx.caps.has_sasl("PLAIN")) return AuthMech::plain;
    if (ctx.caps.has_sasl("LOGIN")) return AuthMech::login;
    if (user_offered) return AuthMech::user;
  }
  if (ctx.challenge.status == Challenge::Status::invalid) return bad_challenge();
  if (ctx.caps.has_sasl("PLAIN") || ctx.caps.has_sasl("LOGIN") || user_offered) {
    return plaintext_refused("the server offers only plaintext password logins");
  }
  // Only OAuth offered (auto never picks it): say how to use it.
  for (const char* m : {"OAUTHBEARER", "XOAUTH2"}) {
    if (ctx.caps.has_sasl(m)) {
      return make_error(Errc::not_found, std::string("the server offers only OAuth2 (") + m +
                                             "): use --auth " + ascii_lowercase(m) +
                                             " with an access token");
    }
  }
  return make_error(Errc::not_found, "the server offers no authentication mechanism apop supports");
}

Offer make_offer(bool tls, const Challenge& challenge, const Capabilities& caps) {
  Offer o;
  o.tls = tls;
  o.apop = challenge.status == Challenge::Status::valid;
  o.scram = caps.has_sasl("SCRAM-SHA-256");
  return o;
}

std::string downgrade(const Offer& last, const Offer& now) {
  std::string out;
  auto add = [&](std::string_view w) {
    if (!out.empty()) out += ", ";
    out += w;
  };
  if (last.tls && !now.tls) add("TLS (STLS or implicit)");
  if (last.apop && !now.apop) add("APOP");
  if (last.scram && !now.scram) add("SCRAM-SHA-256");
  return out;
}

}  // namespace apop::client
