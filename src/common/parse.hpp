// Strict decimal parsing on std::from_chars: the one number parser of apop.
// Protocol numbers, PROXY ports, hash costs and state files all read
// unsigned decimals from untrusted text: digits only (no sign, no '+', no
// blank, no base prefix), never wrapping on overflow. Each caller states the
// rest of its grammar in DecimalRules (e.g. RFC 1939 message numbers accept
// leading zeros; a PROXY port does not).
// Thread-safety: pure functions.
#pragma once

#include <charconv>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <system_error>

namespace apop {

struct DecimalRules {
  // The largest value accepted (T's own maximum bounds it too).
  std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  // The longest text accepted, leading zeros included.
  std::size_t max_digits = std::numeric_limits<std::size_t>::max();
  // false: a number with more than one digit may not start with '0'.
  bool leading_zeros = true;
};

// The value of `s`, a non-empty run of ASCII digits within `rules`;
// nullopt for anything else (empty, a sign, another character, a value
// beyond T or rules.max).
template <std::unsigned_integral T = std::uint64_t>
std::optional<T> parse_decimal(std::string_view s, const DecimalRules& rules = {}) {
  if (s.empty() || s.size() > rules.max_digits) return std::nullopt;
  if (!rules.leading_zeros && s.size() > 1 && s.front() == '0') return std::nullopt;
  // from_chars takes no '+' and, for an unsigned T, no '-'; a leading-zero
  // run of any length is fine; overflow is errc::result_out_of_range.
  T v{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  if (static_cast<std::uint64_t>(v) > rules.max) return std::nullopt;
  return v;
}

// The leading run of ASCII digits of `s` (possibly empty).
inline std::string_view leading_digits(std::string_view s) {
  std::size_t n = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
  return s.substr(0, n);
}

}  // namespace apop
