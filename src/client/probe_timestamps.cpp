// `apop probe`: the APOP timestamp entropy estimate (client/probe.hpp,
// "Timestamp entropy estimate").
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <set>

#include "auth/challenge.hpp"
#include "client/probe.hpp"
#include "client/probe_internal.hpp"
#include "client/protocol.hpp"
#include "common/parse.hpp"

namespace apop::client::probe {

namespace detail {

std::string fmt_bits(double b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", b);
  return buf;
}

}  // namespace detail

namespace {

using detail::fmt_bits;

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    std::size_t p = s.find(sep, start);
    if (p == std::string_view::npos) {
      out.emplace_back(s.substr(start));
      return out;
    }
    out.emplace_back(s.substr(start, p - start));
    start = p + 1;
  }
}

bool all_of(std::string_view s, bool (*pred)(char)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), pred);
}
bool is_dec(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_dec(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool is_b64(char c) {
  return is_alnum(c) || c == '+' || c == '/' || c == '=' || c == '-' || c == '_';
}

// Parses s as an unsigned integer in `base` (10 or 16) without overflow.
std::optional<std::uint64_t> parse_uint(std::string_view s, int base) {
  if (base == 10) return parse_decimal(s, {.max_digits = 19});
  // Hex: at most 16 digits, so no overflow; from_chars takes no sign or 0x.
  std::uint64_t v = 0;
  if (s.empty() || s.size() > 16) return std::nullopt;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// The smallest standard alphabet holding every character of every value,
// with its name.
std::pair<double, const char*> alphabet(const std::vector<std::string>& values) {
  auto every = [&](bool (*pred)(char)) {
    return std::all_of(values.begin(), values.end(),
                       [&](const std::string& v) { return std::all_of(v.begin(), v.end(), pred); });
  };
  if (every(is_dec)) return {10, "decimal"};
  auto lower_hex = [](char c) { return is_dec(c) || (c >= 'a' && c <= 'f'); };
  auto upper_hex = [](char c) { return is_dec(c) || (c >= 'A' && c <= 'F'); };
  if (every(+lower_hex) || every(+upper_hex)) return {16, "hex"};
  if (every(is_alnum)) return {62, "alphanumeric"};
  if (every(is_b64)) return {64, "base64"};
  return {94, "printable"};
}

double log2_1p(std::uint64_t v) { return std::log2(static_cast<double>(v) + 1.0); }

}  // namespace

const char* to_string(FieldKind k) {
  switch (k) {
    case FieldKind::constant:
      return "constant";
    case FieldKind::counter:
      return "counter";
    case FieldKind::numeric:
      return "numeric";
    case FieldKind::random:
      return "random";
  }
  return "random";
}

FieldEstimate estimate_field(const std::vector<std::string>& values) {
  FieldEstimate f;
  if (values.empty()) {
    f.kind = FieldKind::constant;
    f.detail = "no samples";
    return f;
  }
  const bool several = values.size() >= 2;
  if (several && std::all_of(values.begin(), values.end(),
                             [&](const std::string& v) { return v == values[0]; })) {
    f.kind = FieldKind::constant;
    f.detail = "same in every connection";
    return f;
  }

  // Character estimate: varying positions x log2(alphabet).
  auto [alpha, alpha_name] = alphabet(values);
  std::size_t max_len = 0;
  for (const auto& v : values) max_len = std::max(max_len, v.size());
  std::size_t varying = 0;  // a position some value lacks counts as varying
  if (!several) {
    varying = values[0].size();
  } else {
    for (std::size_t i = 0; i < max_len; ++i) {
      bool differs = std::any_of(values.begin(), values.end(), [&](const std::string& v) {
        return i >= v.size() || i >= values[0].size() || v[i] != values[0][i];
      });
      if (differs) ++varying;
    }
  }
  const double char_bits = static_cast<double>(varying) * std::log2(alpha);

  // Integers: decimal if every value is decimal, else hex.
  int base = 0;
  if (std::all_of(values.begin(), values.end(),
                  [](const std::string& v) { return all_of(v, is_dec); })) {
    base = 10;
  } else if (std::all_of(values.begin(), values.end(),
                         [](const std::string& v) { return all_of(v, is_hex); })) {
    base = 16;
  }
  std::vector<std::uint64_t> nums;
  if (base != 0) {
    for (const auto& v : values) {
      auto n = parse_uint(v, base);
      if (!n) {
        nums.clear();
        break;
      }
      nums.push_back(*n);
    }
  }
  if (!nums.empty() && several) {
    const char* base_name = base == 10 ? "decimal" : "hex";
    bool nondecreasing = std::is_sorted(nums.begin(), nums.end());
    if (nondecreasing && values.size() >= kMinSamplesForTrend) {
      std::uint64_t step = 0;
      for (std::size_t i = 1; i < nums.size(); ++i) step = std::max(step, nums[i] - nums[i - 1]);
      f.kind = FieldKind::counter;
      f.bits = std::min(log2_1p(step), char_bits);
      f.detail = std::string(base_name) + " value increasing between connections, largest step " +
                 std::to_string(step);
      return f;
    }
    auto [lo, hi] = std::minmax_element(nums.begin(), nums.end());
    f.kind = FieldKind::numeric;
    f.bits = std::min(log2_1p(*hi - *lo), char_bits);
    f.detail = std::string(base_name) + " value, observed spread " + std::to_string(*hi - *lo);
    return f;
  }
  f.kind = FieldKind::random;
  f.bits = char_bits;
  f.detail = std::string(alpha_name) + ", " + std::to_string(varying) + " varying position(s)";
  return f;
}

namespace {

// Splits v into maximal runs of decimal digits and of other characters.
std::vector<std::string> digit_runs(std::string_view v) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < v.size()) {
    const bool digit = is_dec(v[i]);
    std::size_t j = i;
    while (j < v.size() && is_dec(v[j]) == digit) ++j;
    out.emplace_back(v.substr(i, j - i));
    i = j;
  }
  return out;
}

int randomness_rank(FieldKind k) {
  switch (k) {
    case FieldKind::constant:
      return 0;
    case FieldKind::counter:
      return 1;
    case FieldKind::numeric:
      return 2;
    case FieldKind::random:
      return 3;
  }
  return 3;
}

// A '.'-field whose samples all consist of the same sequence of digit and
// non-digit runs ("conn17x4711", "c99999995", "t1701916500123456") is
// estimated run by run: a counter, clock or pid run gets its counter/numeric
// estimate instead of log2(alphabet) bits for each of its changing characters
// (or a misreading of the whole field as one hex number; issue 17 item 12).
// Random text (hex, base64) has a different run structure in almost every
// sample and is left to the field estimate. nullopt when the field does not
// split so.
std::optional<FieldEstimate> estimate_by_runs(const std::vector<std::string>& values) {
  if (values.size() < 2) return std::nullopt;
  std::vector<std::vector<std::string>> runs;
  for (const auto& v : values) runs.push_back(digit_runs(v));
  const std::size_t n = runs[0].size();
  if (n < 2) return std::nullopt;
  const bool first_digit = !runs[0][0].empty() && is_dec(runs[0][0][0]);
  for (const auto& r : runs) {
    if (r.size() != n || r[0].empty() || is_dec(r[0][0]) != first_digit) return std::nullopt;
  }
  FieldEstimate f;
  f.kind = FieldKind::constant;
  std::string parts;
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<std::string> column;
    for (const auto& r : runs) column.push_back(r[i]);
    FieldEstimate e = estimate_field(column);
    f.bits += e.bits;
    if (randomness_rank(e.kind) > randomness_rank(f.kind)) f.kind = e.kind;
    parts += (parts.empty() ? "" : "; ") + std::string(to_string(e.kind)) + " " + fmt_bits(e.bits);
  }
  f.detail = std::to_string(n) + " digit/non-digit runs (" + parts + ")";
  return f;
}

}  // namespace

TimestampAnalysis analyze_timestamps(const std::vector<std::string>& greetings) {
  TimestampAnalysis a;
  a.greetings = greetings.size();
  for (const auto& g : greetings) {
    auto ts = auth::find_timestamp(g);
    if (!ts) continue;
    a.timestamps.emplace_back(*ts);
    // The same strict check `apop fetch` applies before sending a digest.
    if (std::string why = challenge_problem(*ts); !why.empty()) {
      ++a.invalid;
      if (a.invalid_examples.size() < 3) a.invalid_examples.push_back(why);
    }
  }
  if (a.timestamps.empty()) return a;
  std::set<std::string> uniq(a.timestamps.begin(), a.timestamps.end());
  a.distinct = uniq.size();
  a.repeats = a.distinct < a.timestamps.size();

  // Local parts (between '<' and the last '@'; the whole inside without '@').
  std::vector<std::string> locals;
  for (const auto& t : a.timestamps) {
    std::string_view in(t);
    if (in.size() >= 2) in = in.substr(1, in.size() - 2);
    auto at = in.rfind('@');
    locals.emplace_back(at == std::string_view::npos ? in : in.substr(0, at));
  }
  std::vector<std::vector<std::string>> fields;
  for (const auto& l : locals) fields.push_back(split(l, '.'));
  a.uniform_structure = std::all_of(fields.begin(), fields.end(),
                                    [&](const auto& f) { return f.size() == fields[0].size(); });
  if (!a.uniform_structure) {
    fields.clear();
    for (const auto& l : locals) fields.push_back({l});
  }
  for (std::size_t i = 0; i < fields[0].size(); ++i) {
    std::vector<std::string> column;
    for (const auto& f : fields) column.push_back(f[i]);
    FieldEstimate e = estimate_field(column);
    if (auto by_runs = estimate_by_runs(column); by_runs && by_runs->bits < e.bits) {
      e = std::move(*by_runs);
    }
    e.index = i;
    a.entropy_bits += e.bits;
    a.fields.push_back(std::move(e));
  }
  if (a.repeats) a.entropy_bits = 0;  // a repeat is the end of any estimate
  a.predictable = a.entropy_bits < kWeakBits;
  a.weak = !a.predictable && a.entropy_bits < kStrongBits;
  return a;
}

}  // namespace apop::client::probe
