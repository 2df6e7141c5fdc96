// Command-line parsing: keyword and arguments, and strict numbers.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "common/text.hpp"  // iequals: keywords compare case-insensitively

namespace apop::pop3 {

struct ParsedCommand {
  std::string_view keyword;            // as sent (compare case-insensitively)
  std::vector<std::string_view> args;  // split on runs of spaces
  std::string_view rest;               // everything after the keyword and one space (for PASS)
};

// Splits a command line. Arguments are separated by spaces (RFC 1939 §3
// says one; runs of spaces are tolerated, as mature servers do).
ParsedCommand parse_command(std::string_view line);

// RFC 1939 message numbers: ASCII digits only (no sign, no space, no hex),
// value fits in 32 bits; leading zeros are allowed ("0002" is 2, as Dovecot's
// str_to_uint). Anything else is nullopt, so "1x", "+1", "-1" and
// "4294967297" never alias a real message.
std::optional<std::uint32_t> parse_number(std::string_view s);

// TOP's line count: the same syntax, value fits in 64 bits. A count beyond
// any message ("TOP 1 99999999999") means the whole message, as in Dovecot.
std::optional<std::uint64_t> parse_count(std::string_view s);

}  // namespace apop::pop3
