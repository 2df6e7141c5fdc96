#include "net/proxy_protocol.hpp"

#include <gtest/gtest.h>

#include <string>

#include "common/limits.hpp"

namespace apop::net {
namespace {

using namespace std::string_literals;

const std::string kSig = "\r\n\r\n\0\r\nQUIT\n"s;

// A v2 header: command (0 LOCAL, 1 PROXY), family byte, address block, TLVs.
std::string v2(unsigned cmd, unsigned char family, const std::string& body) {
  std::string h = kSig;
  h.push_back(static_cast<char>(0x20 | cmd));
  h.push_back(static_cast<char>(family));
  h.push_back(static_cast<char>(body.size() >> 8));
  h.push_back(static_cast<char>(body.size() & 0xff));
  return h + body;
}

std::string v4_block() {
  // 192.0.2.7:51234 -> 198.51.100.1:110
  return "\xc0\x00\x02\x07"s + "\xc6\x33\x64\x01"s + "\xc8\x22"s + "\x00\x6e"s;
}

ProxyHeader parsed(const std::string& data) {
  auto r = parse_proxy_header(data);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  if (!r.ok() || !*r) {
    ADD_FAILURE() << "no header";
    return {};
  }
  return **r;
}

bool incomplete(const std::string& data) {
  auto r = parse_proxy_header(data);
  return r.ok() && !*r;
}

bool rejected(const std::string& data) { return !parse_proxy_header(data).ok(); }

TEST(NetProxyProtocol, V1Tcp4) {
  const std::string line = "PROXY TCP4 192.0.2.7 198.51.100.1 51234 110\r\n";
  ProxyHeader h = parsed(line + "USER alice\r\n");
  EXPECT_EQ(h.version, 1);
  EXPECT_FALSE(h.local);
  EXPECT_EQ(h.source, "192.0.2.7");
  EXPECT_EQ(h.source_port, 51234);
  EXPECT_EQ(h.destination, "198.51.100.1");
  EXPECT_EQ(h.destination_port, 110);
  EXPECT_EQ(h.length, line.size());  // the client's bytes after it are not taken
}

TEST(NetProxyProtocol, V1Tcp6IsCanonicalised) {
  ProxyHeader h = parsed("PROXY TCP6 2001:DB8:0:0::1 ::1 65535 0\r\n");
  EXPECT_EQ(h.source, "2001:db8::1");
  EXPECT_EQ(h.source_port, 65535);
  EXPECT_EQ(h.destination_port, 0);
}

TEST(NetProxyProtocol, V1Unknown) {
  EXPECT_TRUE(parsed("PROXY UNKNOWN\r\n").local);
  EXPECT_TRUE(parsed("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").local);
}

TEST(NetProxyProtocol, V1Incomplete) {
  EXPECT_TRUE(incomplete(""));
  EXPECT_TRUE(incomplete("PRO"));
  EXPECT_TRUE(incomplete("PROXY TCP4 192.0.2.7"));
  EXPECT_TRUE(incomplete("PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r"));
}

TEST(NetProxyProtocol, V1Malformed) {
  EXPECT_TRUE(rejected("PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n"));        // bare LF
  EXPECT_TRUE(rejected("PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n"));    // wrong family
  EXPECT_TRUE(rejected("PROXY TCP6 192.0.2.7 ::1 1 2\r\n"));               // wrong family
  EXPECT_TRUE(rejected("PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n"));  // port range
  EXPECT_TRUE(rejected("PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n"));     // leading zero
  EXPECT_TRUE(rejected("PROXY TCP4 192.0.2.7 198.51.100.1 -1 2\r\n"));
  EXPECT_TRUE(rejected("PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n"));      // 4 fields
  EXPECT_TRUE(rejected("PROXY TCP4 192.0.2.7 198.51.100.1 1 2 3\r\n"));  // 6 fields
  EXPECT_TRUE(rejected("PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n"));   // double space
  EXPECT_TRUE(rejected("PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n"));
  EXPECT_TRUE(rejected("PROXY tcp4 192.0.2.7 198.51.100.1 1 2\r\n"));
  EXPECT_TRUE(rejected("PROXY TCP4 192.0.2.7 198.51.100.1 1 2x\r\n"));
}

TEST(NetProxyProtocol, V1LongerThan107BytesIsRefused) {
  std::string longest = "PROXY UNKNOWN " + std::string(limits::kProxyV1MaxHeader - 16, 'x');
  EXPECT_TRUE(parsed(longest + "\r\n").local);  // exactly 107
  EXPECT_EQ(longest.size() + 2, limits::kProxyV1MaxHeader);
  std::string too_long = "PROXY UNKNOWN " + std::string(limits::kProxyV1MaxHeader, 'x');
  EXPECT_TRUE(rejected(too_long));  // no LF within 107 bytes: refused without waiting
}

TEST(NetProxyProtocol, NotAProxyHeader) {
  EXPECT_TRUE(rejected("USER alice\r\n"));
  EXPECT_TRUE(rejected("PROXI TCP4\r\n"));
  EXPECT_TRUE(rejected("\r\n\r\n\0\r\nQUIX\n1234"s));
}

TEST(NetProxyProtocol, V2Ipv4WithTlvs) {
  const std::string tlv = "\x04\x00\x03"s + "abc";  // PP2_TYPE_NOOP, skipped
  const std::string h2 = v2(1, 0x11, v4_block() + tlv);
  ProxyHeader h = parsed(h2 + "CAPA\r\n");
  EXPECT_EQ(h.version, 2);
  EXPECT_FALSE(h.local);
  EXPECT_EQ(h.source, "192.0.2.7");
  EXPECT_EQ(h.source_port, 51234);
  EXPECT_EQ(h.destination, "198.51.100.1");
  EXPECT_EQ(h.destination_port, 110);
  EXPECT_EQ(h.length, h2.size());
}

TEST(NetProxyProtocol, V2Ipv6) {
  std::string block(36, '\0');
  block[0] = '\x20';
  block[1] = '\x01';
  block[2] = '\x0d';
  block[3] = '\xb8';
  block[15] = '\x05';
  block[31] = '\x01';
  block[32] = '\x01';
  block[33] = '\x00';  // port 256
  block[35] = '\x6e';
  ProxyHeader h = parsed(v2(1, 0x21, block));
  EXPECT_EQ(h.source, "2001:db8::5");
  EXPECT_EQ(h.source_port, 256);
  EXPECT_EQ(h.destination, "::1");
  EXPECT_EQ(h.destination_port, 110);
}

TEST(NetProxyProtocol, V2LocalAndUnspecCarryNoClient) {
  ProxyHeader local = parsed(v2(0, 0x00, ""));
  EXPECT_TRUE(local.local);
  EXPECT_EQ(local.length, 16u);
  EXPECT_TRUE(parsed(v2(0, 0x11, v4_block())).local);  // LOCAL ignores addresses
  EXPECT_TRUE(parsed(v2(1, 0x00, "")).local);
}

TEST(NetProxyProtocol, V2Refusals) {
  EXPECT_TRUE(rejected(v2(1, 0x11, v4_block().substr(0, 11))));  // truncated addresses
  EXPECT_TRUE(rejected(v2(1, 0x21, std::string(35, '\0'))));
  EXPECT_TRUE(rejected(v2(1, 0x12, v4_block())));              // UDP
  EXPECT_TRUE(rejected(v2(1, 0x31, std::string(216, '\0'))));  // UNIX socket
  EXPECT_TRUE(rejected(v2(2, 0x11, v4_block())));              // unknown command
  std::string v1ver = v2(1, 0x11, v4_block());
  v1ver[12] = '\x11';  // version 1 in the binary format
  EXPECT_TRUE(rejected(v1ver));
  // Announced length over the limit: refused from the fixed 16 bytes alone.
  std::string huge = kSig + "\x21\x11\xff\xff"s;
  EXPECT_TRUE(rejected(huge));
}

TEST(NetProxyProtocol, V2Incomplete) {
  const std::string full = v2(1, 0x11, v4_block());
  for (std::size_t n = 0; n < full.size(); ++n) {
    EXPECT_TRUE(incomplete(full.substr(0, n))) << n;
  }
}

// A reader that follows proxy_header_bytes_wanted never reads past the header.
TEST(NetProxyProtocol, BytesWantedStopsAtTheHeader) {
  for (const std::string& header :
       {v2(1, 0x11, v4_block() + "\x04\x00\x01z"s), v2(0, 0x00, ""), "PROXY UNKNOWN\r\n"s,
        "PROXY TCP4 192.0.2.7 198.51.100.1 51234 110\r\n"s}) {
    const std::string stream = header + "\x16\x03\x01 TLS ClientHello";
    std::string buf;
    for (;;) {
      auto r = parse_proxy_header(buf);
      ASSERT_TRUE(r.ok()) << r.error().message;
      if (*r) {
        EXPECT_EQ((*r)->length, header.size());
        break;
      }
      const std::size_t want = proxy_header_bytes_wanted(buf);
      ASSERT_GE(want, 1u);
      ASSERT_LE(buf.size() + want, header.size()) << "would read client bytes";
      buf += stream.substr(buf.size(), want);
    }
    EXPECT_EQ(buf, header);
  }
}

TEST(NetProxyProtocol, LooksLikeProxyHeader) {
  EXPECT_TRUE(looks_like_proxy_header("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"));
  EXPECT_TRUE(looks_like_proxy_header("PROXY"));
  EXPECT_TRUE(looks_like_proxy_header(kSig.substr(0, 5)));
  EXPECT_FALSE(looks_like_proxy_header("PASS secret\r\n"));
  EXPECT_FALSE(looks_like_proxy_header("USER alice\r\n"));
  EXPECT_FALSE(looks_like_proxy_header(""));
}

TEST(NetProxyProtocol, AddressRanges) {
  auto host = parse_address_range("127.0.0.1");
  ASSERT_TRUE(host.ok());
  EXPECT_TRUE(range_contains(*host, "127.0.0.1"));
  EXPECT_TRUE(range_contains(*host, "::ffff:127.0.0.1"));  // v4-mapped
  EXPECT_FALSE(range_contains(*host, "127.0.0.2"));
  auto net = parse_address_range("10.1.0.0/16");
  ASSERT_TRUE(net.ok());
  EXPECT_TRUE(range_contains(*net, "10.1.255.3"));
  EXPECT_FALSE(range_contains(*net, "10.2.0.1"));
  auto odd = parse_address_range("192.0.2.0/25");
  ASSERT_TRUE(odd.ok());
  EXPECT_TRUE(range_contains(*odd, "192.0.2.127"));
  EXPECT_FALSE(range_contains(*odd, "192.0.2.128"));
  auto v6 = parse_address_range("2001:db8::/32");
  ASSERT_TRUE(v6.ok());
  EXPECT_TRUE(range_contains(*v6, "2001:db8:ffff::1"));
  EXPECT_FALSE(range_contains(*v6, "2001:db9::1"));
  EXPECT_FALSE(range_contains(*v6, "10.1.0.1"));
  auto all = parse_address_range("0.0.0.0/0");
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(range_contains(*all, "203.0.113.9"));
  EXPECT_FALSE(range_contains(*all, "::1"));
  EXPECT_FALSE(range_contains(*host, "not-an-address"));
  for (const char* bad : {"", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/08", "host.example",
                          "10.0.0.0/1a", "10.0.0.1:110"}) {
    EXPECT_FALSE(parse_address_range(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace apop::net
