// The SCRAM-SHA-256 client (client/protocol.hpp ScramClient) on hostile
// server messages: input = server-first '\n' server-final.
//
// Invariants (__builtin_trap): an accepted server-first extends our nonce and
// yields "c=biws,r=NONCE,p=PROOF"; the server-final is accepted only when it
// carries the right signature (computed here independently from the RFC 5802
// formulas), and the right signature is always accepted.
// Iteration counts above 8192 are skipped (each costs a PBKDF2 run; the
// limits themselves are unit-tested), to keep the fuzzer fast.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "auth/base64.hpp"
#include "auth/sasl.hpp"
#include "auth/sasl_crypto.hpp"
#include "client/protocol.hpp"

namespace {

constexpr std::string_view kNonce = "fuzznonce";
constexpr std::string_view kPassword = "pencil";

// True when some "i=" in the message is followed by a number above 8192.
bool expensive(std::string_view s) {
  for (std::size_t at = s.find("i="); at != std::string_view::npos; at = s.find("i=", at + 1)) {
    std::size_t digits = 0;
    std::uint64_t v = 0;
    for (std::size_t k = at + 2; k < s.size() && s[k] >= '0' && s[k] <= '9'; ++k) {
      if (++digits > 6) return true;
      v = v * 10 + static_cast<std::uint64_t>(s[k] - '0');
    }
    if (v > 8192) return true;
  }
  return false;
}

// The value of attribute `key` in a comma-separated SCRAM message.
std::string_view attr(std::string_view msg, char key) {
  std::size_t pos = 0;
  while (pos <= msg.size()) {
    std::size_t comma = msg.find(',', pos);
    if (comma == std::string_view::npos) comma = msg.size();
    std::string_view a = msg.substr(pos, comma - pos);
    if (a.size() >= 2 && a[0] == key && a[1] == '=') return a.substr(2);
    pos = comma + 1;
  }
  return {};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace apop;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::size_t nl = in.find('\n');
  const std::string_view first = in.substr(0, nl);
  const std::string_view final_msg =
      nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
  if (expensive(first)) return 0;

  client::ScramClient c("user", std::string(kPassword), std::string(kNonce));
  if (c.client_first() != "n,,n=user,r=fuzznonce") __builtin_trap();
  // Before client-final nothing verifies.
  if (c.verify_server_final(final_msg)) __builtin_trap();

  auto out = c.client_final(first);
  if (!out) {
    if (c.verify_server_final(final_msg)) __builtin_trap();
    return 0;
  }
  const std::string_view r = attr(first, 'r');
  if (!r.starts_with(kNonce) || r.size() <= kNonce.size()) __builtin_trap();
  const std::string prefix = "c=biws,r=" + std::string(r) + ",p=";
  if (!out->starts_with(prefix)) __builtin_trap();
  auto proof = auth::base64_decode_strict(std::string_view(*out).substr(prefix.size()));
  if (!proof || proof->size() != 32) __builtin_trap();

  // The right server signature, from the RFC 5802 formulas.
  auto salt = auth::base64_decode_strict(attr(first, 's'));
  if (!salt || salt->empty()) __builtin_trap();
  const auto iters = static_cast<std::uint32_t>(std::stoul(std::string(attr(first, 'i'))));
  const auth::ScramVerifier v = auth::make_scram_verifier("SHA-256", kPassword, *salt, iters);
  const std::string auth_message =
      "n=user,r=fuzznonce," + std::string(first) + "," + prefix.substr(0, prefix.size() - 3);
  const std::string expected = auth::base64_encode(
      auth::sasl_detail::hmac(auth::ScramHash::sha256, v.server_key, auth_message));
  if (c.verify_server_final(final_msg) && attr(final_msg, 'v') != expected) __builtin_trap();
  if (!c.verify_server_final("v=" + expected)) __builtin_trap();
  return 0;
}
