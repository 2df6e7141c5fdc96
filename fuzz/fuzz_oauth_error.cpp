// The OAuth error decoder (client/protocol.hpp decode_oauth_error): a
// rejected token's JSON error as a hostile server sends it (RFC 7628 §3.2.2).
// The input is tried twice: as the challenge's base64 text itself, and as the
// decoded JSON (base64-encoded here first, so the JSON parser sees the fuzz
// bytes).
//
// Invariants (__builtin_trap): an accepted error has a non-empty status;
// every field and describe() are printable ASCII and bounded (the first
// kMaxOAuthErrorField octets, each at most 4 octets escaped, "..." after a
// cut); input beyond kMaxOAuthErrorJson decoded octets is refused.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "auth/base64.hpp"
#include "client/protocol.hpp"
#include "common/limits.hpp"

namespace {

using namespace apop;

bool printable_ascii(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

void check(std::string_view b64, std::size_t decoded_size) {
  auto e = client::decode_oauth_error(b64);
  if (!e) {
    if (e.error().code != Errc::invalid) __builtin_trap();
    return;
  }
  if (decoded_size > limits::kMaxOAuthErrorJson) __builtin_trap();
  if (e->status.empty()) __builtin_trap();
  constexpr std::size_t kMaxShown = limits::kMaxOAuthErrorField * 4 + 3;
  for (const std::string* f : {&e->status, &e->scope, &e->openid_configuration}) {
    if (f->size() > kMaxShown || !printable_ascii(*f)) __builtin_trap();
  }
  const std::string d = e->describe();
  if (d.empty() || !printable_ascii(d)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto raw = auth::base64_decode_strict(in);
  check(in, raw ? raw->size() : 0);
  check(auth::base64_encode(in), in.size());
  return 0;
}
