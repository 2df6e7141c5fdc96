// The passwd-file and popauth import parsers (auth/user_import.hpp) and the
// foreign hash normaliser on arbitrary bytes: no crash, every accepted line
// is usable as documented, and no skip reason repeats the secret.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "auth/foreign_hash.hpp"
#include "auth/user_import.hpp"
#include "auth/username.hpp"
#include "common/limits.hpp"

namespace {

void check(const std::vector<apop::auth::ImportLine>& lines) {
  std::size_t prev = 0;
  std::set<std::string> users;
  for (const auto& l : lines) {
    if (l.line <= prev) __builtin_trap();
    prev = l.line;
    using K = apop::auth::ImportLine::Kind;
    if (l.kind == K::skip) {
      if (l.reason.empty() || !l.secret.empty()) __builtin_trap();
      continue;
    }
    if (!apop::auth::is_valid_username(l.user)) __builtin_trap();
    if (!users.insert(l.user).second) __builtin_trap();  // duplicates are skipped
    if (l.kind == K::password) {
      if (l.secret.empty() || l.secret.size() > apop::limits::kMaxSecret) __builtin_trap();
      if (l.secret.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos)
        __builtin_trap();
    } else {
      std::string why;
      auto again = apop::auth::normalize_foreign_hash(l.secret, why);
      if (!again || *again != l.secret) __builtin_trap();  // normalised and stable
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  check(apop::auth::parse_dovecot_passwd(s));
  check(apop::auth::parse_popauth(s));
  return 0;
}
