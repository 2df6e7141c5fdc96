// The line reader and command parser on arbitrary bytes: no crash, limits
// hold, message numbers and TOP counts agree.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pop3/command.hpp"
#include "pop3/line_reader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  apop::pop3::LineReader r;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::size_t half = size / 2;
  r.feed(in.substr(0, half));
  r.feed(in.substr(half));
  while (auto item = r.pop()) {
    if (item->kind != apop::pop3::LineReader::Kind::line) continue;
    if (item->text.size() + 2 > apop::limits::kMaxCommandLine) __builtin_trap();
    auto cmd = apop::pop3::parse_command(item->text);
    for (auto a : cmd.args) {
      // A message number is also a valid TOP count with the same value.
      const auto n = apop::pop3::parse_number(a);
      const auto c = apop::pop3::parse_count(a);
      if (n && (!c || *c != *n)) __builtin_trap();
    }
  }
  return 0;
}
