// The small parsers and validators of the credential database and the
// account administration (auth/credential_store.hpp, auth/username.hpp):
// stored SCRAM verifiers, mechanism lists, user and device secret names.
// (The PHC password hash parser is not here: every verification costs one
// scrypt by design, too slow for a fuzzer; its bounds are unit-tested.)
//
// Invariants (__builtin_trap): a decoded verifier encodes back to the same
// text unless the iteration count had leading zeros, and decodes again to
// the same verifier; a parsed mechanism list formats to a list that parses
// to the same set; accepted user and device secret names stay within their
// documented alphabets and lengths.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "auth/credential_store.hpp"
#include "auth/username.hpp"
#include "common/limits.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace apop::auth;
  std::string_view in(reinterpret_cast<const char*>(data), size);

  if (auto v = decode_verifier(in)) {
    if (v->iterations == 0 || v->salt.empty()) __builtin_trap();
    const std::string text = encode_verifier(*v);
    if (!in.starts_with('0') && text != in) __builtin_trap();
    auto again = decode_verifier(text);
    if (!again || again->iterations != v->iterations || again->salt != v->salt ||
        again->stored_key != v->stored_key || again->server_key != v->server_key) {
      __builtin_trap();
    }
  }

  if (auto set = parse_mechanisms(in)) {
    if (*set == 0 || (*set & ~kAllMechanisms) != 0) __builtin_trap();
    auto back = parse_mechanisms(format_mechanisms(*set));
    if (!back || *back != *set) __builtin_trap();
  }

  if (is_valid_secret_name(in)) {
    if (in.empty() || in.size() > 32) __builtin_trap();
    for (char c : in) {
      const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-';
      if (!ok) __builtin_trap();
    }
  }

  if (is_valid_username(in)) {
    // [A-Za-z0-9] then [A-Za-z0-9._+@-], no "..": safe as a Maildir path
    // component and in log lines.
    if (in.empty() || in.size() > apop::limits::kMaxUsername) __builtin_trap();
    if (in.front() == '.' || in.find("..") != std::string_view::npos) __builtin_trap();
    for (char c : in) {
      const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '+' || c == '@' || c == '-';
      if (!ok) __builtin_trap();
    }
  }
  return 0;
}
