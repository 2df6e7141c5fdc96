// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): a
// load balancer in front of apop prepends one header to each connection that
// names the real client. This is a pure parser (no sockets, no Asio), so the
// unit tests and fuzz/fuzz_proxy.cpp drive it with plain bytes; net::Server
// reads the header and decides whom to trust (trusted-proxy list below).
//
// Accepted:
//  - v1: "PROXY TCP4 SRC DST SPORT DPORT\r\n", "PROXY TCP6 ...\r\n" and
//    "PROXY UNKNOWN[ anything]\r\n" (at most limits::kProxyV1MaxHeader bytes
//    with the CRLF). Addresses must parse as IPv4 / IPv6 of the family
//    named, ports are decimal 0-65535 without leading zeros or signs.
//  - v2: the 12-byte signature, version 2, command LOCAL or PROXY, family
//    UNSPEC, TCP over IPv4 or TCP over IPv6 (UDP and UNIX sockets are
//    refused: POP3 is TCP), a length up to limits::kProxyV2MaxHeader - 16
//    that covers the addresses; TLVs after them are skipped unread.
// LOCAL (v2), UNSPEC (v2) and UNKNOWN (v1) carry no client: the connection
// is the proxy's own (a health check), and `local` is set.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace apop::net {

struct ProxyHeader {
  int version = 0;     // 1 or 2
  bool local = false;  // no client address: use the connection's own
  std::string source;  // client IP as text ("192.0.2.1", "2001:db8::1"); empty when local
  std::uint16_t source_port = 0;
  std::string destination;  // the address the client connected to (the proxy's frontend)
  std::uint16_t destination_port = 0;
  std::size_t length = 0;  // bytes of the header, to drop before the POP3 stream
};

// Parses the header at the start of `data`. nullopt: a prefix of a valid
// header, read more; Errc::invalid (with a short reason for the log): not a
// PROXY header, or a malformed/too long/unsupported one. Never reads past
// the header: bytes after `length` belong to the client.
Result<std::optional<ProxyHeader>> parse_proxy_header(std::string_view data);

// How many more bytes a reader that must not read past the header should
// read, given the prefix `data` for which parse_proxy_header returned
// nullopt (at least 1): 8 to start, then up to the fixed v2 part and the
// v2 length it announces, or 1 at a time for a v1 line.
std::size_t proxy_header_bytes_wanted(std::string_view data);

// True when `data` (the first bytes a client sent) starts like a PROXY
// header of either version, or is a prefix of one ("PROX", the v2
// signature's first bytes). A client without a trusted proxy that sends
// this is refused.
bool looks_like_proxy_header(std::string_view data);

// An address range from --trusted-proxy: "ADDR" (a single host) or
// "ADDR/PREFIX" (IPv4 /0-/32, IPv6 /0-/128).
struct AddressRange {
  bool v6 = false;
  std::array<std::uint8_t, 16> bytes{};  // IPv4 in the first 4
  unsigned prefix = 0;
  std::string text;  // as given, for logs and config dumps
};

// Errc::invalid naming the problem.
Result<AddressRange> parse_address_range(std::string_view text);

// Whether `address` (IPv4, IPv6, or IPv4-mapped IPv6 which matches IPv4
// ranges) lies in `range`. False for text that is not an address.
bool range_contains(const AddressRange& range, std::string_view address);

}  // namespace apop::net
