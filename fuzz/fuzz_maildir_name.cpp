// The Maildir file-name parser (src/store/maildir_name.hpp) on arbitrary
// names: input = up to three names separated by '/' (a character no file
// name contains).
//
// Invariants (__builtin_trap): the base name is the part before the first
// ':'; S=/W= fields are only found where ",S=DIGITS" is written; every
// derived UIDL is valid (RFC 1939 §7), and the server's and the client's UIDL
// validators agree; the delivery order is a strict weak ordering (irreflexive,
// asymmetric, transitive, and so is its incomparability), which std::sort
// relies on; an escaped host name contains no '/', ':' or ','.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "client/protocol.hpp"
#include "store/maildir_name.hpp"

namespace {

using namespace apop::store;

void one(std::string_view name) {
  const std::string_view base = maildir_base_name(name);
  if (base != name.substr(0, name.find(':'))) __builtin_trap();
  for (char key : {'S', 'W'}) {
    if (auto v = maildir_name_field(base, key)) {
      const std::string field = "," + std::string(1, key) + "=";
      if (base.find(field) == std::string_view::npos) __builtin_trap();
    }
  }
  (void)maildir_name_time(base);
  if (maildir_name_less(base, base)) __builtin_trap();
  const std::string uidl = maildir_uidl(base);
  if (!valid_uidl(uidl)) __builtin_trap();
  if (uidl != maildir_uidl(base)) __builtin_trap();  // stable
  if (valid_uidl(name) != apop::client::is_valid_uidl(name)) __builtin_trap();
  const std::string h = hashed_uidl(name);
  if (h.size() != 41 || !valid_uidl(h)) __builtin_trap();
  const std::string host = escape_maildir_host(name);
  if (host.find_first_of("/:,") != std::string::npos) __builtin_trap();
}

bool equiv(std::string_view a, std::string_view b) {
  return !maildir_name_less(a, b) && !maildir_name_less(b, a);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string_view names[3];
  for (auto& n : names) {
    const std::size_t slash = in.find('/');
    n = in.substr(0, slash);
    in = slash == std::string_view::npos ? std::string_view() : in.substr(slash + 1);
  }
  for (auto n : names) one(n);
  const auto& [a, b, c] = names;
  if (maildir_name_less(a, b) && maildir_name_less(b, a)) __builtin_trap();
  if (maildir_name_less(a, b) && maildir_name_less(b, c) && !maildir_name_less(a, c)) {
    __builtin_trap();
  }
  if (equiv(a, b) && equiv(b, c) && !equiv(a, c)) __builtin_trap();
  return 0;
}
