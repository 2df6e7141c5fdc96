#include "store/maildir_name.hpp"

#include <openssl/evp.h>

#include <cstdlib>
#include <limits>
#include <span>

#include "common/limits.hpp"
#include "common/parse.hpp"
#include "common/text.hpp"

namespace apop::store {

std::string_view maildir_base_name(std::string_view filename) {
  const auto colon = filename.find(':');
  return colon == std::string_view::npos ? filename : filename.substr(0, colon);
}

namespace {

// Calls f(field) for each comma-separated field after the first one.
template <typename F>
void for_each_field(std::string_view base, F&& f) {
  auto pos = base.find(',');
  while (pos != std::string_view::npos) {
    const auto next = base.find(',', pos + 1);
    f(base.substr(pos + 1,
                  next == std::string_view::npos ? std::string_view::npos : next - pos - 1));
    pos = next;
  }
}

bool is_size_field(std::string_view field) {
  return field.size() >= 2 && (field[0] == 'S' || field[0] == 'W') && field[1] == '=';
}

}  // namespace

std::optional<std::uint64_t> maildir_name_field(std::string_view base, char key) {
  std::optional<std::uint64_t> result;
  bool found = false;
  for_each_field(base, [&](std::string_view field) {
    if (found || field.size() < 2 || field[0] != key || field[1] != '=') return;
    found = true;
    result = parse_decimal(field.substr(2));
  });
  return result;
}

std::uint64_t maildir_name_time(std::string_view base) {
  const std::string_view digits = leading_digits(base);
  if (digits.empty()) return 0;
  return parse_decimal(digits).value_or(std::numeric_limits<std::uint64_t>::max());
}

bool maildir_name_less(std::string_view a, std::string_view b) {
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (is_digit(a[i]) && is_digit(b[j])) {
      std::size_t ie = i, je = j;
      while (ie < a.size() && a[ie] == '0') ++ie;  // leading zeros do not count
      while (je < b.size() && b[je] == '0') ++je;
      std::size_t id = ie, jd = je;
      while (id < a.size() && is_digit(a[id])) ++id;
      while (jd < b.size() && is_digit(b[jd])) ++jd;
      if (id - ie != jd - je) return id - ie < jd - je;  // fewer digits: smaller
      int c = a.substr(ie, id - ie).compare(b.substr(je, jd - je));
      if (c != 0) return c < 0;
      i = id;
      j = jd;
      continue;
    }
    if (a[i] != b[j]) return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
    ++i;
    ++j;
  }
  return a.size() - i < b.size() - j;
}

bool valid_uidl(std::string_view s) {
  if (s.empty() || s.size() > limits::kMaxUidl) return false;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7E) return false;
  }
  return true;
}

std::string hashed_uidl(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha1(), nullptr) != 1 || len < 20) {
    std::abort();  // SHA-1 is always available in libcrypto's default provider.
  }
  std::string out = "H";
  append_hex(out, std::span<const unsigned char>(md, 20));
  return out;
}

std::string maildir_uidl(std::string_view base) {
  const auto comma = base.find(',');
  std::string candidate(base.substr(0, comma));
  for_each_field(base, [&](std::string_view field) {
    if (is_size_field(field)) return;
    candidate += ',';
    candidate += field;
  });
  if (valid_uidl(candidate)) return candidate;
  return hashed_uidl(base);
}

std::string escape_maildir_host(std::string_view host) {
  std::string out;
  out.reserve(host.size());
  for (char c : host) {
    switch (c) {
      case '/':
        out += "\\057";
        break;
      case ':':
        out += "\\072";
        break;
      case ',':
        out += "\\054";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace apop::store
