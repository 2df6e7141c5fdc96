// The APOP challenge validator (CVE-2007-1558 hardening) on arbitrary bytes:
// the client's explaining validator and the server's is_valid_msg_id must
// agree exactly, and anything accepted must satisfy the documented grammar's
// invariants (printable ASCII, bracketed, one '@', at most 256 octets).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "auth/challenge.hpp"
#include "client/protocol.hpp"
#include "common/limits.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  const bool client_ok = apop::client::is_valid_challenge(s);
  const bool server_ok = apop::auth::is_valid_msg_id(s);
  if (client_ok != server_ok) __builtin_trap();
  if (client_ok) {
    if (s.size() < 5 || s.size() > apop::limits::kMaxTimestamp) __builtin_trap();
    if (s.front() != '<' || s.back() != '>') __builtin_trap();
    for (char c : s) {
      auto u = static_cast<unsigned char>(c);
      if (u < 0x21 || u > 0x7e) __builtin_trap();
    }
    std::string_view inner = s.substr(1, s.size() - 2);
    std::size_t at = inner.find('@');
    if (at == std::string_view::npos || at == 0 || at + 1 == inner.size()) __builtin_trap();
    if (inner.substr(0, at).find_first_of("<>\"@ ") != std::string_view::npos) __builtin_trap();
    // A valid challenge in a greeting is found and accepted as is.
    auto c = apop::client::extract_challenge("+OK POP3 ready " + std::string(s));
    if (c.status != apop::client::Challenge::Status::valid || c.value != s) __builtin_trap();
  }
  // Whatever the greeting, extract_challenge never marks an invalid token valid.
  auto g = apop::client::extract_challenge(s);
  if (g.status == apop::client::Challenge::Status::valid && !apop::auth::is_valid_msg_id(g.value)) {
    __builtin_trap();
  }
  return 0;
}
