#include "net/conn_limits.hpp"

#include <gtest/gtest.h>

#include "store/memory.hpp"

namespace apop::net {
namespace {

using Verdict = ConnectionLimits::Verdict;

TEST(NetConnectionLimits, PerAddressAndTotal) {
  ConnectionLimits l;
  EXPECT_EQ(l.admit("192.0.2.1", 3, 2), Verdict::ok);
  EXPECT_EQ(l.admit("192.0.2.1", 3, 2), Verdict::ok);
  EXPECT_EQ(l.admit("192.0.2.1", 3, 2), Verdict::per_address);  // not counted
  EXPECT_EQ(l.from("192.0.2.1"), 2u);
  EXPECT_EQ(l.admit("192.0.2.2", 3, 2), Verdict::ok);
  EXPECT_EQ(l.admit("192.0.2.3", 3, 2), Verdict::total);
  EXPECT_EQ(l.total(), 3u);
  l.release("192.0.2.1");
  EXPECT_EQ(l.admit("192.0.2.3", 3, 2), Verdict::ok);
  EXPECT_EQ(l.admit("192.0.2.1", 4, 2), Verdict::ok);
  EXPECT_EQ(l.from("192.0.2.1"), 2u);
  EXPECT_EQ(l.total(), 4u);
}

TEST(NetConnectionLimits, ZeroMeansUnlimitedAndReleaseForgets) {
  ConnectionLimits l;
  for (int i = 0; i < 100; ++i) EXPECT_EQ(l.admit("192.0.2.1", 0, 0), Verdict::ok);
  for (int i = 0; i < 100; ++i) l.release("192.0.2.1");
  EXPECT_EQ(l.total(), 0u);
  EXPECT_EQ(l.from("192.0.2.1"), 0u);
  l.release("192.0.2.9");  // unknown: ignored
  EXPECT_EQ(l.total(), 0u);
}

TEST(NetAddressKey, Ipv4IsPerAddress) {
  EXPECT_EQ(address_key("192.0.2.7", 64), "192.0.2.7");
  EXPECT_EQ(address_key("192.0.2.7", 0), "192.0.2.7");
  EXPECT_EQ(address_key("127.0.0.1", 128), "127.0.0.1");
}

TEST(NetAddressKey, Ipv4MappedIsItsIpv4Address) {
  EXPECT_EQ(address_key("::ffff:192.0.2.7", 64), "192.0.2.7");
  EXPECT_EQ(address_key("::ffff:c000:207", 0), "192.0.2.7");
  EXPECT_EQ(address_key("::FFFF:192.0.2.7", 128), "192.0.2.7");
  // IPv4-compatible (deprecated, ::a.b.c.d) and NAT64 (64:ff9b::/96) are IPv6.
  EXPECT_NE(address_key("::192.0.2.7", 128), "192.0.2.7");
  EXPECT_EQ(address_key("::192.0.2.7", 64), "::/64");
  EXPECT_EQ(address_key("64:ff9b::192.0.2.7", 64), "64:ff9b::/64");
}

TEST(NetAddressKey, Ipv6ByPrefix) {
  EXPECT_EQ(address_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64), "2001:db8:1:2::/64");
  EXPECT_EQ(address_key("2001:db8:1:2::1", 64), address_key("2001:db8:1:2:ffff::9", 64));
  EXPECT_NE(address_key("2001:db8:1:2::1", 64), address_key("2001:db8:1:3::1", 64));
  EXPECT_EQ(address_key("2001:db8:1:2ff::1", 48), "2001:db8:1::/48");
  EXPECT_EQ(address_key("2001:0DB8:0001:0002:0000:0000:0000:0001", 128), "2001:db8:1:2::1");
  EXPECT_EQ(address_key("2001:db8:1:2::1", 128), "2001:db8:1:2::1");
  EXPECT_EQ(address_key("2001:db8:1:2::1", 500), "2001:db8:1:2::1");  // clamped to 128
  EXPECT_EQ(address_key("2001:db8:1:2::1", 127), "2001:db8:1:2::/127");
  EXPECT_EQ(address_key("2001:db8:1:2::1", 0), "::/0");
  EXPECT_EQ(address_key("::1", 64), "::/64");
  EXPECT_EQ(address_key("::1", 128), "::1");
}

TEST(NetAddressKey, PrefixNotAMultipleOfEight) {
  // /57: the 57th bit (the top bit of the 8th octet) is kept, the rest cleared.
  EXPECT_EQ(address_key("2001:db8:1:2ff::1", 57), "2001:db8:1:280::/57");
  EXPECT_EQ(address_key("2001:db8:1:27f::1", 57), "2001:db8:1:200::/57");
  EXPECT_EQ(address_key("2001:db8:1:27f::1", 57), address_key("2001:db8:1:200::", 57));
  EXPECT_EQ(address_key("ffff:ffff::", 1), "8000::/1");
  EXPECT_EQ(address_key("2001:db8::ffff", 125), "2001:db8::fff8/125");
}

TEST(NetAddressKey, ScopedAddressesKeepTheirZone) {
  // asio prints a link-local peer with its zone (the interface): equal
  // prefixes on two links are two networks.
  EXPECT_EQ(address_key("fe80::1%lo", 64), "fe80::%lo/64");
  EXPECT_EQ(address_key("fe80::1:2:3:4%eth0", 64), address_key("fe80::9%eth0", 64));
  EXPECT_NE(address_key("fe80::1%eth0", 64), address_key("fe80::1%eth1", 64));
  EXPECT_EQ(address_key("fe80::1%2", 128), "fe80::1%2");
}

TEST(NetAddressKey, AnythingElseIsUnchanged) {
  EXPECT_EQ(address_key("", 64), "");  // no address: not tracked
  EXPECT_EQ(address_key("not an address", 64), "not an address");
  EXPECT_EQ(address_key("192.0.2.7%eth0", 64), "192.0.2.7%eth0");
  EXPECT_EQ(address_key("2001:db8::1::2", 64), "2001:db8::1::2");
  const std::string long_text(200, '1');
  EXPECT_EQ(address_key(long_text, 64), long_text);
}

// An opener without locks, counting its calls, so that the session limit is
// what refuses (not a maildrop lock).
class FreeOpener final : public pop3::MaildropOpener {
 public:
  Result<std::unique_ptr<pop3::Maildrop>> open(const pop3::MailboxAddress& where) override {
    ++calls;
    (void)where;
    if (fail) return make_error(Errc::temporary, "disk on fire");
    return std::unique_ptr<pop3::Maildrop>(std::make_unique<Empty>());
  }
  bool opens_without_waiting(const pop3::MailboxAddress& where) override {
    return where.user == "maildir-user";
  }
  int calls = 0;
  bool fail = false;

 private:
  class Empty final : public pop3::Maildrop {
   public:
    std::span<const pop3::MessageInfo> messages() const override { return infos_; }
    void load_delivery_times() override { infos_[0].delivered = 42; }
    Result<std::unique_ptr<pop3::ByteSource>> open(std::size_t) override {
      return make_error(Errc::not_found, "none");
    }
    Result<void> commit(std::span<const std::size_t>) override { return {}; }

   private:
    std::vector<pop3::MessageInfo> infos_{pop3::MessageInfo{}};
  };
};

TEST(NetSessionLimit, ForwardsLoadDeliveryTimes) {
  // Regression: the counting wrapper did not forward it, so EXPIRE N never
  // saw a delivery time and expired nothing.
  FreeOpener inner;
  UserSessions sessions;
  SessionLimitOpener opener(inner, sessions, 2);
  auto a = opener.open("alice");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->messages()[0].delivered, 0);
  (*a)->load_delivery_times();
  EXPECT_EQ((*a)->messages()[0].delivered, 42);
}

TEST(NetSessionLimit, ForwardsOpensWithoutWaiting) {
  // The server runs APOP inline only when the real opener never waits; the
  // wrapper must not hide an mbox (lock wait) behind its own default.
  FreeOpener inner;
  UserSessions sessions;
  SessionLimitOpener opener(inner, sessions, 2);
  EXPECT_TRUE(opener.opens_without_waiting("maildir-user"));
  EXPECT_FALSE(opener.opens_without_waiting("mbox-user"));
}

TEST(NetSessionLimit, RefusesOverTheLimitWithInUseBeforeTheInnerOpener) {
  FreeOpener inner;
  UserSessions sessions;
  SessionLimitOpener opener(inner, sessions, 2);
  auto a = opener.open("alice");
  auto b = opener.open("alice");
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(sessions.count("alice"), 2u);
  auto c = opener.open("alice");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, Errc::in_use);
  EXPECT_EQ(inner.calls, 2);
  EXPECT_TRUE(opener.open("bob").ok());  // per user
  a.value().reset();                     // a session ends
  EXPECT_EQ(sessions.count("alice"), 1u);
  EXPECT_TRUE(opener.open("alice").ok());
}

TEST(NetSessionLimit, InnerFailureDoesNotHoldASession) {
  FreeOpener inner;
  inner.fail = true;
  UserSessions sessions;
  SessionLimitOpener opener(inner, sessions, 1);
  auto r = opener.open("alice");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_EQ(sessions.count("alice"), 0u);
  inner.fail = false;
  EXPECT_TRUE(opener.open("alice").ok());
}

TEST(NetSessionLimit, WrapsARealStoreAndKeepsItsLock) {
  store::MemoryStore store;
  store.add_message("alice", "Subject: x\n\nhi\n");
  UserSessions sessions;
  SessionLimitOpener opener(store, sessions, 0);  // unlimited: the lock decides
  auto a = opener.open("alice");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.value()->messages().size(), 1u);
  EXPECT_TRUE(store.locked("alice"));
  auto b = opener.open("alice");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code, Errc::in_use);
  EXPECT_EQ(sessions.count("alice"), 1u);
  a.value().reset();
  EXPECT_FALSE(store.locked("alice"));
  EXPECT_EQ(sessions.count("alice"), 0u);
}

}  // namespace
}  // namespace apop::net
