// The dovecot-uidlist parser, the apop-uidl map parser and the
// pop3_uidl_format expansion on arbitrary bytes: no crash, and whatever is
// accepted satisfies the documented invariants (store/uidl_map.hpp).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "store/maildir_name.hpp"
#include "store/uidl_map.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  auto l = apop::store::parse_dovecot_uidlist(s);
  if (l) {
    if (l->uid_validity == 0 || l->next_uid == 0) __builtin_trap();
    if (l->version != 1 && l->version != 3) __builtin_trap();
    std::uint32_t prev = 0;
    for (const auto& r : l->records) {
      if (r.uid == 0 || r.uid <= prev) __builtin_trap();
      prev = r.uid;
      if (r.filename.empty() || r.filename.find('/') != std::string::npos) __builtin_trap();
      if (r.base.find(':') != std::string::npos) __builtin_trap();
      auto u = apop::store::expand_pop3_uidl_format(apop::store::kDovecotDefaultUidlFormat, r.uid,
                                                    l->uid_validity, r.base);
      if (!u || u->size() != 16 || !apop::store::valid_uidl(*u)) __builtin_trap();
    }
  }
  auto m = apop::store::parse_uidl_map(s);
  for (const auto& [base, uidl] : m.by_base) {
    if (!apop::store::valid_map_base(base) || !apop::store::valid_uidl(uidl)) __builtin_trap();
    auto again = apop::store::parse_uidl_map(apop::store::format_uidl_map_line(base, uidl));
    if (again.by_base.size() != 1 || again.by_base.at(base) != uidl) __builtin_trap();
  }
  // The input as a format string: expansion either fails or is bounded.
  if (size < 64) {
    auto f = apop::store::expand_pop3_uidl_format(s, 0xFFFFFFFFu, 1, "base");
    if (f && f->size() > size * 100 + 16) __builtin_trap();
  }
  return 0;
}
