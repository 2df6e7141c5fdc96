// parse_listen: the ADDR:PORT of --listen, --tls-listen and --metrics-listen.
#include <gtest/gtest.h>

#include "net/server.hpp"

namespace apop::net {
namespace {

TEST(NetListen, AcceptsAddressesAndPorts) {
  auto a = parse_listen("127.0.0.1:110");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->address, "127.0.0.1");
  EXPECT_EQ(a->port, 110);
  auto b = parse_listen("[::1]:0");  // port 0: a free port
  ASSERT_TRUE(b);
  EXPECT_EQ(b->address, "::1");
  EXPECT_EQ(b->port, 0);
  auto c = parse_listen("0.0.0.0:65535");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->port, 65535);
  auto d = parse_listen("127.0.0.1:0995");  // leading zeros, as before
  ASSERT_TRUE(d);
  EXPECT_EQ(d->port, 995);
}

TEST(NetListen, RefusesBadPortsAndAddresses) {
  for (const char* bad :
       {"127.0.0.1:65536", "127.0.0.1:99999999999999999999", "127.0.0.1:-1", "127.0.0.1:+1",
        "127.0.0.1:1x", "127.0.0.1: 1", "127.0.0.1:", "127.0.0.1", "localhost:110", "[::1:110"}) {
    EXPECT_FALSE(parse_listen(bad)) << bad;
  }
}

}  // namespace
}  // namespace apop::net
