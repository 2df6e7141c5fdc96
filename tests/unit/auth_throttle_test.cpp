#include "auth/throttle.hpp"

#include <gtest/gtest.h>

#include <string>

#include "auth/authenticator.hpp"
#include "auth/base64.hpp"
#include "auth/challenge.hpp"
#include "auth/digest.hpp"
#include "auth/memory_credential_store.hpp"
#include "auth_sasl_support.hpp"
#include "pop3/session.hpp"
#include "store/memory.hpp"

namespace apop::auth {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::string_view kTs = "<1.2@test>";
constexpr std::string_view kAttacker = "192.0.2.66";
constexpr std::string_view kHome = "198.51.100.7";

// A wrapped authenticator that counts its calls: "right" is the password of
// every user.
class CountingAuth final : public pop3::Authenticator {
 public:
  pop3::AuthResult verify_apop(std::string_view, std::string_view, std::string_view digest,
                               const pop3::AuthContext&) override {
    ++calls;
    return result(digest == "right");
  }
  pop3::AuthResult verify_plain(std::string_view, std::string_view password,
                                const pop3::AuthContext&) override {
    ++calls;
    return result(password == "right");
  }
  void record_login(std::string_view user, std::int64_t when) override {
    recorded = std::string(user) + "@" + std::to_string(when);
  }
  int calls = 0;
  std::string recorded;

 private:
  static pop3::AuthResult result(bool ok) {
    pop3::AuthResult r;
    r.ok = ok;
    if (ok)
      r.credential = "password";
    else
      r.failure = pop3::AuthFailure::credentials;
    return r;
  }
};

class AuthThrottle : public ::testing::Test {
 protected:
  AuthThrottle() { config_ = make_config(); }
  static ThrottleConfig make_config() {
    ThrottleConfig c;
    c.base_delay = milliseconds(2000);
    c.max_delay = milliseconds(15000);
    c.block_after = 10;
    c.window = seconds(600);
    c.block_duration = seconds(900);
    return c;
  }
  pop3::AuthResult plain(std::string_view user, std::string_view pw, std::string_view addr) {
    return auth_.verify_plain(user, pw, pop3::AuthContext{false, addr});
  }
  ThrottleConfig config_;
  ThrottleTime now_ = ThrottleTime(seconds(1'700'000'000));
  CountingAuth inner_;
  MemoryFailureTracker tracker_{config_};
  ThrottlingAuthenticator auth_{inner_, tracker_, config_, [this] { return now_; }};
};

TEST(AuthThrottleDelay, DoublesFromBaseUpToMax) {
  ThrottleConfig c;
  c.base_delay = milliseconds(2000);
  c.max_delay = milliseconds(15000);
  EXPECT_EQ(failure_delay(c, 0), milliseconds(0));
  EXPECT_EQ(failure_delay(c, 1), milliseconds(2000));
  EXPECT_EQ(failure_delay(c, 2), milliseconds(4000));
  EXPECT_EQ(failure_delay(c, 3), milliseconds(8000));
  EXPECT_EQ(failure_delay(c, 4), milliseconds(15000));
  EXPECT_EQ(failure_delay(c, 1000), milliseconds(15000));  // no overflow
  c.base_delay = milliseconds(0);
  EXPECT_EQ(failure_delay(c, 5), milliseconds(0));
}

TEST_F(AuthThrottle, FailuresFromOneAddressDoubleTheDelayUpToTheCap) {
  const milliseconds expect[] = {milliseconds(2000), milliseconds(4000), milliseconds(8000),
                                 milliseconds(15000), milliseconds(15000)};
  for (int i = 0; i < 5; ++i) {
    // A different user each time: the address count alone drives the delay.
    auto r = plain("user" + std::to_string(i), "wrong", kAttacker);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.delay, expect[i]) << i;
    EXPECT_EQ(r.failure,
              i == 0 ? apop::pop3::AuthFailure::credentials : apop::pop3::AuthFailure::throttled)
        << i;
    now_ += seconds(1);
  }
}

TEST_F(AuthThrottle, SuccessHasNoDelayAndDoesNotResetTheCount) {
  EXPECT_FALSE(plain("mallory", "wrong", kAttacker).ok);
  EXPECT_FALSE(plain("mallory", "wrong", kAttacker).ok);
  auto ok = plain("mallory", "right", kAttacker);
  EXPECT_TRUE(ok.ok);
  EXPECT_EQ(ok.delay, milliseconds(0));
  EXPECT_EQ(ok.credential, "password");
  // The third failure from the address is delayed as the third.
  EXPECT_EQ(plain("victim", "wrong", kAttacker).delay, milliseconds(8000));
}

TEST_F(AuthThrottle, FailuresExpireAfterTheWindow) {
  EXPECT_EQ(plain("a", "wrong", kAttacker).delay, milliseconds(2000));
  EXPECT_EQ(plain("b", "wrong", kAttacker).delay, milliseconds(4000));
  now_ += seconds(601);
  EXPECT_EQ(plain("c", "wrong", kAttacker).delay, milliseconds(2000));
}

TEST_F(AuthThrottle, BlocksAfterNFailuresWithinTheWindowAndRunsTheCheckAnyway) {
  for (int i = 0; i < 10; ++i) {
    auto r = plain("u" + std::to_string(i), "wrong", kAttacker);
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.failure, apop::pop3::AuthFailure::blocked) << i;  // the 10th failure sets the block
    now_ += seconds(10);
  }
  const int calls = inner_.calls;
  // While blocked even the right secret fails, like a wrong one, and the
  // wrapped check still runs (equal work).
  auto r = plain("owner", "right", kAttacker);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.failure, apop::pop3::AuthFailure::blocked);
  EXPECT_EQ(r.delay, milliseconds(15000));
  EXPECT_TRUE(r.credential.empty());
  EXPECT_EQ(inner_.calls, calls + 1);
  auto a = auth_.verify_apop("owner", kTs, "right", pop3::AuthContext{true, kAttacker});
  EXPECT_FALSE(a.ok);
  EXPECT_EQ(a.failure, apop::pop3::AuthFailure::blocked);
  EXPECT_EQ(inner_.calls, calls + 2);
  // Another address is not affected.
  EXPECT_TRUE(plain("owner", "right", kHome).ok);
}

TEST_F(AuthThrottle, BlockExpiresAndTheAddressStartsFromZero) {
  for (int i = 0; i < 10; ++i) (void)plain("u", "wrong", kAttacker);
  now_ += seconds(899);
  EXPECT_EQ(plain("owner", "right", kAttacker).failure, apop::pop3::AuthFailure::blocked);
  // Attempts while blocked are not counted and do not extend the block.
  for (int i = 0; i < 20; ++i) (void)plain("u", "wrong", kAttacker);
  now_ += seconds(2);  // 901 s after the block started
  auto r = plain("owner", "right", kAttacker);
  EXPECT_TRUE(r.ok) << pop3::auth_failure_name(r.failure);
  EXPECT_EQ(plain("v", "wrong", kAttacker).delay, milliseconds(2000));
}

TEST_F(AuthThrottle, FailuresSpreadBeyondTheWindowNeverBlock) {
  for (int i = 0; i < 30; ++i) {
    EXPECT_NE(plain("u", "wrong", kAttacker).failure, apop::pop3::AuthFailure::blocked) << i;
    now_ += seconds(70);  // at most 9 failures in any 600 s
    EXPECT_NE(plain("owner", "right", kAttacker).failure, apop::pop3::AuthFailure::blocked) << i;
  }
}

TEST_F(AuthThrottle, UserFailuresFromManyAddressesDelayEveryAddress) {
  // A distributed guesser: one failure per address, all against alice.
  for (int i = 0; i < 4; ++i) {
    auto r = plain("alice", "wrong", "203.0.113." + std::to_string(i));
    EXPECT_EQ(r.delay, failure_delay(config_, static_cast<unsigned>(i + 1))) << i;
  }
  // A fresh address guessing alice is delayed by alice's count...
  EXPECT_EQ(plain("alice", "wrong", "203.0.113.200").delay, milliseconds(15000));
  // ... but not when guessing someone else (its own count is 1).
  EXPECT_EQ(plain("bob", "wrong", "203.0.113.201").delay, milliseconds(2000));
  // The user count never blocks anyone: alice logs in from anywhere.
  EXPECT_TRUE(plain("alice", "right", "203.0.113.202").ok);
}

TEST_F(AuthThrottle, KnownGoodAddressIsExemptFromTheUsersCount) {
  ASSERT_TRUE(plain("alice", "right", kHome).ok);
  for (int i = 0; i < 8; ++i) (void)plain("alice", "wrong", "203.0.113." + std::to_string(i));
  // alice mistypes at home: only her home address's own count applies.
  auto r = plain("Alice", "wrong", kHome);
  EXPECT_EQ(r.delay, milliseconds(2000));
  EXPECT_EQ(r.failure, apop::pop3::AuthFailure::credentials);
  EXPECT_TRUE(plain("alice", "right", kHome).ok);
  // A new address of hers is not known good: it gets the user's delay.
  EXPECT_EQ(plain("alice", "wrong", "198.51.100.99").delay, milliseconds(15000));
  // The exemption is per (user, address): home guessing bob is not exempt.
  for (int i = 0; i < 3; ++i) (void)plain("bob", "wrong", "203.0.113.50");
  EXPECT_EQ(plain("bob", "wrong", kHome).delay, milliseconds(15000));
}

TEST_F(AuthThrottle, KnownGoodPairIsForgottenAfterItsMemory) {
  ASSERT_TRUE(plain("alice", "right", kHome).ok);
  now_ += config_.good_login_memory + seconds(1);
  for (int i = 0; i < 3; ++i) (void)plain("alice", "wrong", "203.0.113." + std::to_string(i));
  EXPECT_EQ(plain("alice", "wrong", kHome).delay, milliseconds(15000));
}

TEST_F(AuthThrottle, PolicyReasonsAreKeptButCounted) {
  class PolicyAuth final : public pop3::Authenticator {
   public:
    pop3::AuthResult verify_apop(std::string_view, std::string_view, std::string_view,
                                 const pop3::AuthContext&) override {
      pop3::AuthResult r;
      r.failure = pop3::AuthFailure::policy_tls;
      return r;
    }
    pop3::AuthResult verify_plain(std::string_view, std::string_view,
                                  const pop3::AuthContext&) override {
      pop3::AuthResult r;
      r.failure = pop3::AuthFailure::policy_mechanism;
      return r;
    }
  } policy;
  ThrottlingAuthenticator a(policy, tracker_, config_, [this] { return now_; });
  for (int i = 0; i < 3; ++i) {
    auto r = a.verify_plain("alice", "x", pop3::AuthContext{false, kAttacker});
    EXPECT_EQ(r.failure, apop::pop3::AuthFailure::policy_mechanism);
    EXPECT_EQ(r.delay, failure_delay(config_, static_cast<unsigned>(i + 1)));
  }
}

TEST_F(AuthThrottle, NoAddressTracksTheUserOnly) {
  EXPECT_EQ(plain("alice", "wrong", "").delay, milliseconds(2000));
  EXPECT_EQ(plain("bob", "wrong", "").delay, milliseconds(2000));
  EXPECT_EQ(tracker_.address_entries(), 0u);
  EXPECT_EQ(tracker_.user_entries(), 2u);
}

TEST_F(AuthThrottle, ZeroBaseDisablesDelaysButNotBlocking) {
  ThrottleConfig c = config_;
  c.base_delay = milliseconds(0);
  c.block_after = 3;
  MemoryFailureTracker t(c);
  ThrottlingAuthenticator a(inner_, t, c, [this] { return now_; });
  for (int i = 0; i < 3; ++i) {
    auto r = a.verify_plain("u", "wrong", pop3::AuthContext{false, kAttacker});
    EXPECT_EQ(r.delay, milliseconds(0));
    EXPECT_EQ(r.failure, apop::pop3::AuthFailure::credentials);
  }
  EXPECT_EQ(a.verify_plain("u", "right", pop3::AuthContext{false, kAttacker}).failure,
            apop::pop3::AuthFailure::blocked);
}

TEST_F(AuthThrottle, TrackerMemoryIsBounded) {
  ThrottleConfig c = config_;
  c.max_entries = 100;
  MemoryFailureTracker t(c);
  for (int i = 0; i < 1000; ++i) {
    (void)t.record_failure("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256),
                           "user" + std::to_string(i), now_);
  }
  EXPECT_EQ(t.address_entries(), 100u);
  EXPECT_EQ(t.user_entries(), 100u);
  // The most recent entries survive.
  EXPECT_EQ(t.status("10.0.3.231", "user999", now_).address_failures, 1u);
  EXPECT_EQ(t.status("10.0.0.0", "user0", now_).address_failures, 0u);
}

// A full table forgets addresses that are not blocked first: an attacker
// who gets blocked cannot lift the block by cycling through fresh addresses
// (or fresh IPv6 prefixes) until the table overflows.
TEST_F(AuthThrottle, FullTableKeepsBlocksAndDropsUnblockedEntriesFirst) {
  ThrottleConfig c = config_;
  c.max_entries = 100;
  c.block_after = 3;
  MemoryFailureTracker t(c);
  const std::string blocked = "2001:db8:1:2::/64";
  for (int i = 0; i < 3; ++i) (void)t.record_failure(blocked, "", now_);
  ASSERT_TRUE(t.status(blocked, "", now_).blocked(now_));
  // Ten times the table's size of other addresses, one failure each (none blocked).
  for (int i = 0; i < 1000; ++i) {
    (void)t.record_failure("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256), "",
                           now_ + seconds(1));
  }
  EXPECT_EQ(t.address_entries(), 100u);
  EXPECT_EQ(t.blocked_entries(), 1u);
  EXPECT_TRUE(t.status(blocked, "", now_ + seconds(2)).blocked(now_ + seconds(2)));
  // The unblocked entries still behave as an LRU: the newest are kept.
  EXPECT_EQ(t.status("10.0.3.231", "", now_ + seconds(2)).address_failures, 1u);
  EXPECT_EQ(t.status("10.0.0.0", "", now_ + seconds(2)).address_failures, 0u);
  // And the block ends on time, after which the entry is an ordinary one.
  const ThrottleTime later = now_ + c.block_duration + seconds(1);
  EXPECT_FALSE(t.status(blocked, "", later).blocked(later));
  EXPECT_EQ(t.blocked_entries(), 0u);
}

TEST_F(AuthThrottle, TableOfBlocksOnlyDropsTheBlockThatEndsFirstAndEndedOnesBeforeAnything) {
  ThrottleConfig c = config_;
  c.max_entries = 3;
  c.block_after = 1;
  MemoryFailureTracker t(c);
  // Three blocks, a second apart: the table is full of blocks.
  for (int i = 0; i < 3; ++i) {
    (void)t.record_failure("192.0.2." + std::to_string(i), "", now_ + seconds(i));
  }
  EXPECT_EQ(t.blocked_entries(), 3u);
  // A fourth address: memory stays bounded; the block that ends first goes.
  const ThrottleTime t4 = now_ + seconds(10);
  (void)t.record_failure("192.0.2.3", "", t4);
  EXPECT_EQ(t.address_entries(), 3u);
  EXPECT_FALSE(t.status("192.0.2.0", "", t4).blocked(t4));
  for (int i = 1; i <= 3; ++i) {
    EXPECT_TRUE(t.status("192.0.2." + std::to_string(i), "", t4).blocked(t4)) << i;
  }
  // Once 192.0.2.1's block has ended, a new address takes its place rather
  // than an entry still blocked (and rather than one merely unused).
  const ThrottleTime t5 = now_ + seconds(1) + c.block_duration;
  (void)t.record_failure("192.0.2.4", "", t5);
  EXPECT_EQ(t.address_entries(), 3u);
  for (int i = 2; i <= 4; ++i) {
    EXPECT_TRUE(t.status("192.0.2." + std::to_string(i), "", t5).blocked(t5)) << i;
  }
}

// SASL exchanges are judged on their final reply, with the same rules.
TEST_F(AuthThrottle, SaslFailuresAreThrottledAndBlocked) {
  MemoryCredentialStore store;
  ASSERT_TRUE(store.add("alice", "alice secret 12").ok());
  StoreAuthenticator real(store);
  ThrottleConfig c = config_;
  c.block_after = 2;
  MemoryFailureTracker t(c);
  ThrottlingAuthenticator a(real, t, c, [this] { return now_; });
  const pop3::AuthContext ctx{true, kAttacker};
  auto plain_sasl = [&](std::string_view pw) {
    auto s = a.start_sasl("PLAIN", ctx);
    EXPECT_NE(s, nullptr);
    std::string msg = std::string("\0alice\0", 7) + std::string(pw);
    return s->step(base64_encode(msg));
  };
  auto r1 = plain_sasl("wrong secret 1");
  EXPECT_TRUE(r1.failed());
  EXPECT_EQ(r1.result.delay, milliseconds(2000));
  auto r2 = plain_sasl("wrong secret 2");
  EXPECT_TRUE(r2.failed());
  EXPECT_EQ(r2.result.failure, apop::pop3::AuthFailure::throttled);
  auto r3 = plain_sasl("alice secret 12");  // right, but the address is blocked
  EXPECT_TRUE(r3.failed());
  EXPECT_EQ(r3.result.failure, apop::pop3::AuthFailure::blocked);
  EXPECT_TRUE(r3.result.credential.empty());
  auto home = a.start_sasl("PLAIN", pop3::AuthContext{true, kHome});
  auto ok = home->step(base64_encode(std::string("\0alice\0alice secret 12", 22)));
  EXPECT_TRUE(ok.succeeded());
  EXPECT_EQ(ok.result.delay, milliseconds(0));
}

// Issue 17 item 3: a failed SASL login of every mechanism is counted against
// the user name it tried (not only the address), so its failures slow a
// guesser of that name from any other address too; and the reply names the
// user for the log line.
class AuthThrottleSaslUser : public AuthThrottle,
                             public ::testing::WithParamInterface<std::string> {
 protected:
  // One wrong-secret exchange of GetParam() as `user` from `addr`, run to its end.
  pop3::SaslReply fail_once(ThrottlingAuthenticator& a, std::string_view user,
                            std::string_view addr) {
    auto s = a.start_sasl(GetParam(), pop3::AuthContext{true, addr});
    EXPECT_NE(s, nullptr);
    if (!s) return {};
    const std::string mech = GetParam();
    const std::string u(user);
    if (mech == "PLAIN") return s->step(base64_encode(std::string(1, '\0') + u + '\0' + "wrong"));
    if (mech == "LOGIN") {
      s->step(std::nullopt);
      s->step(base64_encode(u));
      return s->step(base64_encode("wrong"));
    }
    if (mech == "CRAM-MD5") {
      pop3::SaslReply c = s->step(std::nullopt);
      EXPECT_EQ(c.kind, pop3::SaslReply::Kind::challenge);
      return s->step(base64_encode(u + " 0123456789abcdef0123456789abcdef"));
    }
    // SCRAM-SHA-256 / SCRAM-SHA-1: a well-formed exchange with a wrong password.
    testing::ScramClient client(mech == "SCRAM-SHA-1" ? ScramHash::sha1 : ScramHash::sha256, u,
                                "wrong");
    pop3::SaslReply first = s->step(base64_encode(client.client_first()));
    EXPECT_EQ(first.kind, pop3::SaslReply::Kind::challenge);
    auto server_first = base64_decode_strict(first.text);
    EXPECT_TRUE(server_first.has_value());
    return s->step(base64_encode(client.client_final(server_first.value_or(""))));
  }
};

TEST_P(AuthThrottleSaslUser, FailuresRaiseTheUsersDelayFromEveryAddressAndNameTheUser) {
  MemoryCredentialStore store;
  ASSERT_TRUE(store.add("alice", "alice secret 12").ok());
  ChallengeGenerator challenges("test.example");
  StoreAuthenticator real(store, &challenges);
  ThrottlingAuthenticator a(real, tracker_, config_, [this] { return now_; });
  for (int i = 0; i < 3; ++i) {
    const std::string addr = "192.0.2." + std::to_string(10 + i);  // a new address each time
    pop3::SaslReply r = fail_once(a, "alice", addr);
    ASSERT_TRUE(r.failed()) << GetParam();
    EXPECT_EQ(r.user, "alice") << GetParam();  // the log line names the user
    // Each address is new, yet the delay grows with the user's count.
    EXPECT_EQ(r.result.delay, failure_delay(config_, static_cast<unsigned>(i + 1))) << GetParam();
  }
  // Seen from an address that never tried: the user's count is 3.
  EXPECT_EQ(tracker_.status(kHome, "alice", now_).user_failures, 3u) << GetParam();
  // An unknown user's failures are counted against that name too.
  pop3::SaslReply r = fail_once(a, "mallory", "192.0.2.99");
  EXPECT_EQ(r.user, "mallory");
  EXPECT_EQ(tracker_.status("", "mallory", now_).user_failures, 1u) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(EveryMechanism, AuthThrottleSaslUser,
                         ::testing::Values("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256",
                                           "SCRAM-SHA-1"));

TEST_F(AuthThrottle, RecordLoginIsForwarded) {
  auth_.record_login("alice", 1234);
  EXPECT_EQ(inner_.recorded, "alice@1234");
}

TEST_F(AuthThrottle, MechanismsAreForwarded) {
  MemoryCredentialStore store;
  StoreAuthenticator real(store);
  ThrottlingAuthenticator a(real, tracker_, config_);
  ASSERT_EQ(a.sasl_mechanisms().size(), real.sasl_mechanisms().size());
  EXPECT_EQ(a.start_sasl("NO-SUCH-MECH", pop3::AuthContext{}), nullptr);
}

// The core passes the client address in and the delay out, untouched: the
// delay travels in the login result and leaves the session through
// take_reply_delay() (never through the event sink).
TEST_F(AuthThrottle, SessionCarriesAddressInAndDelayOut) {
  struct Sink final : pop3::EventSink {
    std::vector<pop3::AuthFailure> events;
    void on_login(const pop3::LoginEvent& e) override { events.push_back(e.failure); }
  } sink;
  MemoryCredentialStore store;
  ASSERT_TRUE(store.add("alice", "alice secret 12").ok());
  StoreAuthenticator real(store);
  ThrottlingAuthenticator a(real, tracker_, config_, [this] { return now_; });
  store::MemoryStore mail;
  pop3::SessionConfig cfg;
  cfg.secure = true;
  cfg.client_address = std::string(kAttacker);
  pop3::Session session(cfg, a, mail, std::string(kTs), &sink);
  std::vector<milliseconds> delays;
  auto drive = [&](std::string line) {
    session.feed(line + "\r\n");
    std::string out;
    while (session.next(out) == pop3::Next::output) {
      delays.push_back(session.take_reply_delay());
    }
    return out;
  };
  const std::string wrong = drive("APOP alice " + md5_hex(std::string(kTs) + "nope"));
  EXPECT_EQ(wrong, "-ERR [AUTH] Authentication failed.\r\n");
  EXPECT_EQ(delays, std::vector<milliseconds>{milliseconds(2000)});
  EXPECT_EQ(session.take_reply_delay(), milliseconds(0));  // taken once
  EXPECT_EQ(drive("USER alice"), "+OK Send your password\r\n");
  EXPECT_EQ(drive("PASS nope nope"), wrong);
  EXPECT_EQ(delays,
            (std::vector<milliseconds>{milliseconds(2000), milliseconds(0), milliseconds(4000)}));
  ASSERT_EQ(sink.events.size(), 2u);
  EXPECT_EQ(sink.events[0], pop3::AuthFailure::credentials);
  EXPECT_EQ(sink.events[1], pop3::AuthFailure::throttled);
  // The failures were counted against the session's address.
  EXPECT_EQ(tracker_.status(kAttacker, "", now_).address_failures, 2u);
  EXPECT_EQ(drive("APOP alice " + md5_hex(std::string(kTs) + "alice secret 12")).substr(0, 3),
            "+OK");
  EXPECT_EQ(sink.events.back(), pop3::AuthFailure::none);
  EXPECT_EQ(delays.back(), milliseconds(0));
}

}  // namespace
}  // namespace apop::auth
