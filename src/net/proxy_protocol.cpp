#include "net/proxy_protocol.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "common/limits.hpp"
#include "common/parse.hpp"

namespace apop::net {

namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr std::string_view kV2Signature{"\r\n\r\n\0\r\nQUIT\n", 12};
constexpr std::size_t kV2Fixed = 16;

Error bad(std::string reason) { return make_error(Errc::invalid, "PROXY header: " + reason); }

bool is_prefix_of(std::string_view data, std::string_view whole) {
  const std::size_t n = std::min(data.size(), whole.size());
  return data.substr(0, n) == whole.substr(0, n);
}

// IPv4 (family AF_INET) or IPv6 text -> canonical text, nullopt if invalid.
std::optional<std::string> canonical(int family, std::string_view text) {
  if (text.empty() || text.size() > 45) return std::nullopt;
  const std::string s(text);
  unsigned char buf[16];
  if (::inet_pton(family, s.c_str(), buf) != 1) return std::nullopt;
  char out[INET6_ADDRSTRLEN];
  if (::inet_ntop(family, buf, out, sizeof out) == nullptr) return std::nullopt;
  return std::string(out);
}

std::string format(int family, const unsigned char* bytes) {
  char out[INET6_ADDRSTRLEN];
  if (::inet_ntop(family, bytes, out, sizeof out) == nullptr) return {};
  return out;
}

// A v1 port: 0-65535 in decimal, without a leading zero.
std::optional<std::uint16_t> parse_port(std::string_view s) {
  return parse_decimal<std::uint16_t>(s, {.leading_zeros = false});
}

Result<std::optional<ProxyHeader>> parse_v1(std::string_view data) {
  const std::size_t window = std::min(data.size(), limits::kProxyV1MaxHeader);
  const std::size_t lf = data.substr(0, window).find('\n');
  if (lf == std::string_view::npos) {
    if (data.size() >= limits::kProxyV1MaxHeader) return bad("v1 line longer than 107 bytes");
    return std::optional<ProxyHeader>();
  }
  if (lf == 0 || data[lf - 1] != '\r') return bad("v1 line does not end with CRLF");
  const std::string_view line = data.substr(kV1Prefix.size(), lf - 1 - kV1Prefix.size());
  ProxyHeader h;
  h.version = 1;
  h.length = lf + 1;
  if (line == "UNKNOWN" || line.substr(0, 8) == "UNKNOWN ") {
    h.local = true;
    return std::optional<ProxyHeader>(std::move(h));
  }
  // TCP4|TCP6 SP src SP dst SP sport SP dport, single spaces.
  std::array<std::string_view, 5> f;
  std::size_t pos = 0;
  for (std::size_t i = 0; i < f.size(); ++i) {
    const std::size_t sp = line.find(' ', pos);
    if ((sp == std::string_view::npos) != (i + 1 == f.size())) return bad("v1 needs 5 fields");
    f[i] = line.substr(pos, sp == std::string_view::npos ? std::string_view::npos : sp - pos);
    if (f[i].empty()) return bad("v1 empty field");
    pos = sp + 1;
  }
  int family = 0;
  if (f[0] == "TCP4") {
    family = AF_INET;
  } else if (f[0] == "TCP6") {
    family = AF_INET6;
  } else {
    return bad("v1 protocol must be TCP4, TCP6 or UNKNOWN");
  }
  auto src = canonical(family, f[1]);
  auto dst = canonical(family, f[2]);
  if (!src || !dst) return bad("v1 address does not match its family");
  auto sport = parse_port(f[3]);
  auto dport = parse_port(f[4]);
  if (!sport || !dport) return bad("v1 bad port");
  h.source = std::move(*src);
  h.destination = std::move(*dst);
  h.source_port = *sport;
  h.destination_port = *dport;
  return std::optional<ProxyHeader>(std::move(h));
}

Result<std::optional<ProxyHeader>> parse_v2(std::string_view data) {
  if (data.size() < kV2Fixed) return std::optional<ProxyHeader>();
  const auto* b = reinterpret_cast<const unsigned char*>(data.data());
  const unsigned version = b[12] >> 4, command = b[12] & 0x0f;
  if (version != 2) return bad("v2 signature with version " + std::to_string(version));
  if (command > 1) return bad("v2 unknown command");
  const std::size_t len = (static_cast<std::size_t>(b[14]) << 8) | b[15];
  if (kV2Fixed + len > limits::kProxyV2MaxHeader) return bad("v2 header too long");
  if (data.size() < kV2Fixed + len) return std::optional<ProxyHeader>();
  ProxyHeader h;
  h.version = 2;
  h.length = kV2Fixed + len;
  const unsigned family = b[13];
  if (command == 0) {  // LOCAL: the proxy's own connection (health check); ignore the rest
    h.local = true;
    return std::optional<ProxyHeader>(std::move(h));
  }
  const unsigned char* a = b + kV2Fixed;
  auto port = [](const unsigned char* p) {
    return static_cast<std::uint16_t>((static_cast<unsigned>(p[0]) << 8) | p[1]);
  };
  switch (family) {
    case 0x00:  // AF_UNSPEC: no address
      h.local = true;
      break;
    case 0x11:  // TCP over IPv4: src(4) dst(4) sport(2) dport(2)
      if (len < 12) return bad("v2 IPv4 addresses truncated");
      h.source = format(AF_INET, a);
      h.destination = format(AF_INET, a + 4);
      h.source_port = port(a + 8);
      h.destination_port = port(a + 10);
      break;
    case 0x21:  // TCP over IPv6: src(16) dst(16) sport(2) dport(2)
      if (len < 36) return bad("v2 IPv6 addresses truncated");
      h.source = format(AF_INET6, a);
      h.destination = format(AF_INET6, a + 16);
      h.source_port = port(a + 32);
      h.destination_port = port(a + 34);
      break;
    default:
      return bad("v2 transport/family not TCP over IPv4/IPv6");
  }
  return std::optional<ProxyHeader>(std::move(h));
}

}  // namespace

std::size_t proxy_header_bytes_wanted(std::string_view data) {
  // Both versions' shortest headers ("PROXY UNKNOWN\r\n", v2 LOCAL) are
  // longer than 8 bytes.
  if (data.size() < 8) return 8 - data.size();
  if (is_prefix_of(data, kV2Signature)) {
    if (data.size() < kV2Fixed) return kV2Fixed - data.size();
    const auto* b = reinterpret_cast<const unsigned char*>(data.data());
    const std::size_t total = kV2Fixed + ((static_cast<std::size_t>(b[14]) << 8) | b[15]);
    return total > data.size() ? total - data.size() : 1;
  }
  return 1;
}

bool looks_like_proxy_header(std::string_view data) {
  if (data.empty()) return false;
  return is_prefix_of(data, kV1Prefix) || is_prefix_of(data, kV2Signature);
}

Result<std::optional<ProxyHeader>> parse_proxy_header(std::string_view data) {
  if (data.empty()) return std::optional<ProxyHeader>();
  if (is_prefix_of(data, kV2Signature)) {
    if (data.size() < kV2Signature.size()) return std::optional<ProxyHeader>();
    return parse_v2(data);
  }
  if (is_prefix_of(data, kV1Prefix)) {
    if (data.size() < kV1Prefix.size()) return std::optional<ProxyHeader>();
    return parse_v1(data);
  }
  return bad("missing (the connection did not start with a PROXY header)");
}

Result<AddressRange> parse_address_range(std::string_view text) {
  AddressRange r;
  r.text = std::string(text);
  std::string_view addr = text;
  std::optional<unsigned> prefix;
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    addr = text.substr(0, slash);
    const std::string_view p = text.substr(slash + 1);
    prefix = parse_decimal<unsigned>(p, {.max_digits = 3, .leading_zeros = false});
    if (!prefix) return make_error(Errc::invalid, "bad prefix length in " + std::string(text));
  }
  const std::string a(addr);
  if (::inet_pton(AF_INET, a.c_str(), r.bytes.data()) == 1) {
    r.v6 = false;
    r.prefix = prefix.value_or(32);
    if (r.prefix > 32) return make_error(Errc::invalid, "IPv4 prefix over 32 in " + r.text);
  } else if (::inet_pton(AF_INET6, a.c_str(), r.bytes.data()) == 1) {
    r.v6 = true;
    r.prefix = prefix.value_or(128);
    if (r.prefix > 128) return make_error(Errc::invalid, "IPv6 prefix over 128 in " + r.text);
  } else {
    return make_error(Errc::invalid,
                      "not an IP address (ADDR or ADDR/PREFIX expected): " + std::string(text));
  }
  return r;
}

bool range_contains(const AddressRange& range, std::string_view address) {
  if (address.size() > 45) return false;
  const std::string a(address);
  std::array<std::uint8_t, 16> bytes{};
  bool v6 = false;
  if (::inet_pton(AF_INET, a.c_str(), bytes.data()) == 1) {
    v6 = false;
  } else if (::inet_pton(AF_INET6, a.c_str(), bytes.data()) == 1) {
    v6 = true;
    static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!range.v6 && std::memcmp(bytes.data(), kMapped, 12) == 0) {
      std::memmove(bytes.data(), bytes.data() + 12, 4);
      v6 = false;
    }
  } else {
    return false;
  }
  if (v6 != range.v6) return false;
  unsigned bits = range.prefix;
  for (std::size_t i = 0; bits > 0; ++i) {
    const unsigned take = std::min(bits, 8u);
    const auto mask = static_cast<std::uint8_t>(0xff << (8 - take));
    if ((bytes[i] & mask) != (range.bytes[i] & mask)) return false;
    bits -= take;
  }
  return true;
}

}  // namespace apop::net
