// The Maildir++ maildirsize parser (src/store/quota.hpp) on arbitrary file
// content, plus the decisions made from it.
//
// Invariants (__builtin_trap): a file that parses has every line ended by
// '\n' and one usage line per line after the first; a file made of the
// limits line written back (format_maildirsize_limits) and the usage as one
// line parses to the same limits and usage (unless the usage saturated);
// quota_allows never allows what is over a set limit; the recalculation rule
// always asks for one when the file is missing, its limits differ, or it has
// reached limits::kMaildirsizeMaxFile bytes. The quota size parser gives a
// value only for digits with at most one unit letter.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "common/limits.hpp"
#include "store/quota.hpp"

using namespace apop::store;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  auto parsed = parse_maildirsize(in);
  if (parsed) {
    if (in.empty() || in.back() != '\n') __builtin_trap();
    std::size_t lines = 0;
    for (char c : in) lines += c == '\n' ? 1 : 0;
    if (parsed->lines + 1 != lines) __builtin_trap();
    constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
    constexpr auto kMin = std::numeric_limits<std::int64_t>::min();
    const QuotaUsage u = parsed->usage;
    const bool saturated =
        u.bytes == kMax || u.bytes == kMin || u.messages == kMax || u.messages == kMin;
    const std::string again = format_maildirsize_limits(parsed->limits) + "\n" +
                              std::to_string(u.bytes) + " " + std::to_string(u.messages) + "\n";
    auto round = parse_maildirsize(again);
    if (!round || !(round->limits == parsed->limits)) __builtin_trap();
    if (!saturated && (round->usage.bytes != u.bytes || round->usage.messages != u.messages)) {
      __builtin_trap();
    }
    // Decisions from what was read: never allow what is over a set limit.
    const QuotaLimits& q = parsed->limits;
    for (std::uint64_t add : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{1} << 40}) {
      if (quota_allows(q, u, add, 1)) {
        if (q.bytes != 0 && u.bytes > 0 && static_cast<std::uint64_t>(u.bytes) > q.bytes) {
          __builtin_trap();
        }
        if (q.messages != 0 && u.messages >= 0 &&
            static_cast<std::uint64_t>(u.messages) + 1 > q.messages) {
          __builtin_trap();
        }
      }
    }
    if (!maildirsize_needs_recalc(parsed.value(), apop::limits::kMaildirsizeMaxFile,
                                  std::chrono::seconds(0), q, 0, 0)) {
      __builtin_trap();
    }
    const QuotaLimits other{q.bytes + 1, q.messages};
    if (!maildirsize_needs_recalc(parsed.value(), 0, std::chrono::seconds(0), other, 0, 0)) {
      __builtin_trap();
    }
  }
  if (!maildirsize_needs_recalc(std::nullopt, 0, std::chrono::seconds(0), {}, 0, 0)) {
    __builtin_trap();
  }
  // The first line alone as a quota size ("1G").
  const std::string_view first = in.substr(0, in.find('\n'));
  if (auto v = parse_quota_size(first)) {
    std::size_t letters = 0;
    for (char c : first) letters += (c < '0' || c > '9') ? 1 : 0;
    if (letters > 3 || first.empty() || first[0] < '0' || first[0] > '9') __builtin_trap();
  }
  return 0;
}
