#include "pop3/command.hpp"

#include <algorithm>
#include <cstdint>

namespace apop::pop3 {

ParsedCommand parse_command(std::string_view line) {
  ParsedCommand cmd;
  std::size_t sp = line.find(' ');
  cmd.keyword = line.substr(0, sp);
  if (sp == std::string_view::npos) return cmd;
  cmd.rest = line.substr(sp + 1);
  std::string_view tail = cmd.rest;
  while (!tail.empty()) {
    std::size_t b = tail.find_first_not_of(' ');
    if (b == std::string_view::npos) break;
    tail.remove_prefix(b);
    std::size_t e = tail.find(' ');
    cmd.args.push_back(tail.substr(0, e));
    if (e == std::string_view::npos) break;
    tail.remove_prefix(e);
  }
  return cmd;
}

std::optional<std::uint64_t> parse_count(std::string_view s) {
  if (s.empty()) return std::nullopt;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  s.remove_prefix(std::min(s.find_first_not_of('0'), s.size()));
  // 2^64 - 1 has 20 digits; after the leading zeros the digits are exact.
  if (s.size() > 20) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

std::optional<std::uint32_t> parse_number(std::string_view s) {
  auto v = parse_count(s);
  if (!v || *v > 0xFFFFFFFFull) return std::nullopt;
  return static_cast<std::uint32_t>(*v);
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 32);
    if (y >= 'a' && y <= 'z') y = static_cast<char>(y - 32);
    if (x != y) return false;
  }
  return true;
}

}  // namespace apop::pop3
