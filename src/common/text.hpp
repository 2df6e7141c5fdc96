// Small ASCII text helpers used across the modules, written once:
// case-insensitive comparison (protocol keywords, SASL names and header
// names are ASCII; no locale is consulted), trimming, hexadecimal rendering,
// and the rendering of untrusted bytes for logs and error messages.
// Thread-safety: pure functions.
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <limits>
#include <span>
#include <string>
#include <string_view>

namespace apop {

// --- ASCII case --------------------------------------------------------------

constexpr char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}
constexpr char ascii_upper(char c) {
  return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
}

inline std::string ascii_lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}
inline std::string ascii_uppercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_upper(c);
  return out;
}

// Equal but for the case of ASCII letters.
constexpr bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

// `s` starts with `prefix` but for the case of ASCII letters.
constexpr bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// --- Trimming ------------------------------------------------------------------

// `s` without the octets of `chars` at its end.
constexpr std::string_view trim_right(std::string_view s, std::string_view chars = " \t") {
  while (!s.empty() && chars.find(s.back()) != std::string_view::npos) s.remove_suffix(1);
  return s;
}

// `s` without the octets of `chars` at either end (default: blanks).
constexpr std::string_view trim(std::string_view s, std::string_view chars = " \t") {
  while (!s.empty() && chars.find(s.front()) != std::string_view::npos) s.remove_prefix(1);
  return trim_right(s, chars);
}

// --- Hexadecimal -------------------------------------------------------------

// Appends two hex digits per byte (lower case unless `upper`).
inline void append_hex(std::string& out, std::span<const unsigned char> bytes, bool upper = false) {
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  const std::size_t at = out.size();
  out.resize(at + bytes.size() * 2);  // one resize: the per-login digests stay cheap
  char* p = out.data() + at;
  for (const unsigned char b : bytes) {
    *p++ = digits[b >> 4];
    *p++ = digits[b & 0x0f];
  }
}
inline void append_hex(std::string& out, std::string_view bytes, bool upper = false) {
  append_hex(out,
             std::span<const unsigned char>(reinterpret_cast<const unsigned char*>(bytes.data()),
                                            bytes.size()),
             upper);
}

// Two lower-case hex digits per byte.
inline std::string to_hex(std::span<const unsigned char> bytes) {
  std::string out;
  append_hex(out, bytes);
  return out;
}
inline std::string to_hex(std::string_view bytes) {
  std::string out;
  append_hex(out, bytes);
  return out;
}

// `v` in hexadecimal without leading zeros ("0" for 0).
inline std::string hex_number(std::uint64_t v, bool upper = false) {
  char buf[16];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, 16);  // always fits: 16 digits
  std::string out(buf, r.ptr);
  if (upper) {
    for (char& c : out) c = ascii_upper(c);
  }
  return out;
}

// --- Untrusted bytes in logs and messages --------------------------------------

// How printable() renders bytes. The defaults suit an error message: every
// octet outside 0x20-0x7E as \xNN, at most 80 octets, "..." after a cut.
struct PrintableRules {
  // Octets of input rendered; the rest is cut.
  std::size_t max = 80;
  // Keep ' ' (false: a space is replaced, for a token in key=value logs).
  bool space = true;
  // Replacement: true \xNN (lower-case hex), false '?'.
  bool hex_escape = true;
  // Further printable octets to replace (e.g. "\"\\" for quoted logs).
  std::string_view replace = {};
  // Append "..." when input was cut.
  bool ellipsis = true;
};

// `s` with every octet outside printable ASCII (0x21-0x7E, with the space
// unless rules.space is false) and every octet of rules.replace replaced.
inline std::string printable(std::string_view s, const PrintableRules& rules = {}) {
  std::string out;
  const std::string_view shown = s.substr(0, rules.max);
  out.reserve(shown.size());
  for (const char c : shown) {
    const auto u = static_cast<unsigned char>(c);
    const bool keep = (u > 0x20 || (u == 0x20 && rules.space)) && u < 0x7f &&
                      rules.replace.find(c) == std::string_view::npos;
    if (keep) {
      out.push_back(c);
    } else if (rules.hex_escape) {
      out += "\\x";
      append_hex(out, std::span<const unsigned char>(&u, 1));
    } else {
      out.push_back('?');
    }
  }
  if (rules.ellipsis && s.size() > rules.max) out += "...";
  return out;
}

// --- dates -------------------------------------------------------------------

// RFC 5322 §3.3 date-time of unix time `t`, in UTC ("Mon, 07 Dec 2026
// 21:30:00 +0000"); English names whatever the locale.
inline std::string rfc5322_date(std::int64_t t) {
  const std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", kDays[tm.tm_wday % 7],
                tm.tm_mday, kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

}  // namespace apop
