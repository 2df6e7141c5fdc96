// The mbox parser (store/mbox.hpp) on arbitrary bytes: it must never crash,
// and what it accepts must satisfy the documented invariants: the spans are
// ordered and contiguous and cover everything after the leading empty lines,
// each message lies inside its span, every span but the first starts with
// "From " after an empty line, the size is the CRLF size of exactly the bytes
// RETR sends, an X-UIDL is used only when it is a valid RFC 1939 UIDL, and
// the header UIDL is valid too.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pop3/crlf.hpp"
#include "store/maildir_name.hpp"
#include "store/mbox.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  auto spans = apop::store::parse_mbox(s);
  if (!spans.ok()) {
    // Refused only when there is something other than LFs before a "From ".
    std::size_t i = 0;
    while (i < s.size() && s[i] == '\n') ++i;
    if (i == s.size() || s.substr(i, 5) == "From ") __builtin_trap();
    return 0;
  }
  std::size_t expect_start = 0;
  while (expect_start < s.size() && s[expect_start] == '\n') ++expect_start;
  if (spans->empty() && expect_start != s.size()) __builtin_trap();
  for (std::size_t k = 0; k < spans->size(); ++k) {
    const auto& sp = (*spans)[k];
    if (sp.start != expect_start) __builtin_trap();
    if (!(sp.start <= sp.body && sp.body <= sp.end && sp.end <= sp.next && sp.next <= s.size())) {
      __builtin_trap();
    }
    if (sp.next - sp.end > 1) __builtin_trap();
    if (s.substr(sp.start, 5) != "From ") __builtin_trap();
    if (k > 0 && s.substr(sp.start - 2, 2) != "\n\n") __builtin_trap();
    const auto facts = apop::store::mbox_message_facts(s, sp);
    if (facts.size != apop::pop3::crlf_size(s.substr(sp.body, sp.end - sp.body))) {
      __builtin_trap();
    }
    if (!facts.x_uidl.empty() && !apop::store::valid_uidl(facts.x_uidl)) __builtin_trap();
    if (!apop::store::valid_uidl(facts.header_uidl)) __builtin_trap();
    expect_start = sp.next;
  }
  if (!spans->empty() && expect_start != s.size()) __builtin_trap();
  return 0;
}
