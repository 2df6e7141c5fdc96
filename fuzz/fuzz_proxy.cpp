// The PROXY protocol parser (net/proxy_protocol.hpp) on arbitrary bytes:
// never reads past what it was given, a parsed header never claims more
// bytes than it saw (the client's bytes behind it are never eaten), the
// result does not depend on bytes after the header, and a reader following
// proxy_header_bytes_wanted reaches the same verdict without over-reading.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/limits.hpp"
#include "net/proxy_protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  auto whole = apop::net::parse_proxy_header(s);
  if (whole.ok() && *whole) {
    const auto& h = **whole;
    if (h.length == 0 || h.length > s.size()) __builtin_trap();
    if (h.version == 1 && h.length > apop::limits::kProxyV1MaxHeader) __builtin_trap();
    if (h.version == 2 && h.length > apop::limits::kProxyV2MaxHeader) __builtin_trap();
    if (!h.local && h.source.empty()) __builtin_trap();
    // Bytes after the header change nothing.
    auto exact = apop::net::parse_proxy_header(s.substr(0, h.length));
    if (!exact.ok() || !*exact || (*exact)->length != h.length || (*exact)->source != h.source) {
      __builtin_trap();
    }
  }
  // The incremental reader: only ever asks for bytes up to the header's end.
  std::string buf;
  for (;;) {
    auto r = apop::net::parse_proxy_header(buf);
    if (!r.ok()) break;
    if (*r) {
      if (!whole.ok() || !*whole || (**whole).length != (*r)->length) __builtin_trap();
      break;
    }
    const std::size_t want = apop::net::proxy_header_bytes_wanted(buf);
    if (want == 0) __builtin_trap();
    if (buf.size() >= s.size()) break;  // input ended: incomplete
    buf.append(s.substr(buf.size(), want));
  }
  (void)apop::net::looks_like_proxy_header(s);
  return 0;
}
