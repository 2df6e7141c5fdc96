#include "pop3/command.hpp"

#include <algorithm>
#include <cstdint>

#include "common/parse.hpp"

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

std::optional<std::uint64_t> parse_count(std::string_view s) { return parse_decimal(s); }

std::optional<std::uint32_t> parse_number(std::string_view s) {
  return parse_decimal<std::uint32_t>(s);
}

}  // namespace apop::pop3
