// RFC 2449 LOGIN-DELAY (§6.5, §8.1.1) and EXPIRE (§6.7) in the session core,
// over the in-memory stores with an injected clock.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "auth/base64.hpp"
#include "pop3_support.hpp"

namespace apop::test {
namespace {

constexpr std::int64_t kDay = 86400;

bool starts_with(const std::string& s, std::string_view p) { return s.rfind(p, 0) == 0; }

bool has_line(const std::string& out, std::string_view line) {
  return out.find("\r\n" + std::string(line) + "\r\n") != std::string::npos;
}

// A harness whose sessions read `now` as their clock.
struct Clocked {
  explicit Clocked(pop3::SessionConfig cfg = Harness::secure_config(), std::int64_t start = 1000)
      : now(std::make_shared<std::int64_t>(start)), h(with_clock(std::move(cfg), now)) {}
  static pop3::SessionConfig with_clock(pop3::SessionConfig cfg,
                                        std::shared_ptr<std::int64_t> now) {
    cfg.clock = [now] { return *now; };
    return cfg;
  }
  // A fresh connection (the previous one is dropped first).
  void reconnect() {
    h.session->abort();
    h.session = h.make_session();
    h.closed = false;
  }
  void set_policy(std::optional<std::uint32_t> delay, std::optional<std::int64_t> expire) {
    auth::Policy p = h.creds.policy("alice").value();
    p.login_delay = delay;
    p.expire_days = expire;
    ASSERT_TRUE(h.creds.set_policy("alice", p).ok());
  }
  std::shared_ptr<std::int64_t> now;
  Harness h;
};

pop3::SessionConfig defaults(std::uint32_t delay, std::int64_t expire) {
  pop3::SessionConfig c = Harness::secure_config();
  c.login_delay = delay;
  c.expire_days = expire;
  return c;
}

// ---- CAPA --------------------------------------------------------------------

TEST(SessionLimits, CapaBeforeLoginShowsTheServerDefaults) {
  Clocked c(defaults(300, 30));
  const std::string capa = c.h.cmd("CAPA");
  EXPECT_TRUE(has_line(capa, "LOGIN-DELAY 300")) << capa;
  EXPECT_TRUE(has_line(capa, "EXPIRE 30")) << capa;
  EXPECT_EQ(capa.find(" USER\r\n"), std::string::npos) << capa;
}

TEST(SessionLimits, CapaBeforeLoginSaysUserWhenAccountsDiffer) {
  pop3::SessionConfig cfg = defaults(0, pop3::kExpireNever);
  cfg.login_delay_per_user = true;
  cfg.expire_per_user = true;
  Clocked c(cfg);
  const std::string capa = c.h.cmd("CAPA");
  EXPECT_TRUE(has_line(capa, "LOGIN-DELAY 0 USER")) << capa;
  EXPECT_TRUE(has_line(capa, "EXPIRE NEVER USER")) << capa;
}

TEST(SessionLimits, CapaAfterLoginShowsTheUsersOwnValuesWithoutUser) {
  pop3::SessionConfig cfg = defaults(300, 30);
  cfg.login_delay_per_user = true;
  cfg.expire_per_user = true;
  Clocked c(cfg);
  c.set_policy(60, pop3::kExpireNever);
  c.h.login();
  const std::string capa = c.h.cmd("CAPA");
  EXPECT_TRUE(has_line(capa, "LOGIN-DELAY 60")) << capa;
  EXPECT_TRUE(has_line(capa, "EXPIRE NEVER")) << capa;
  EXPECT_EQ(capa.find(" USER\r\n"), std::string::npos) << capa;
  EXPECT_EQ(c.h.session->login_delay(), 60u);
  EXPECT_EQ(c.h.session->expire_days(), pop3::kExpireNever);
}

TEST(SessionLimits, CapaAfterLoginFollowsTheDefaultsForAUserWithoutOwnValues) {
  pop3::SessionConfig cfg = defaults(300, 0);
  cfg.login_delay_per_user = true;
  cfg.expire_per_user = true;
  Clocked c(cfg);
  c.h.login();
  const std::string capa = c.h.cmd("CAPA");
  EXPECT_TRUE(has_line(capa, "LOGIN-DELAY 300")) << capa;
  EXPECT_TRUE(has_line(capa, "EXPIRE 0")) << capa;
  EXPECT_EQ(capa.find(" USER\r\n"), std::string::npos) << capa;
}

// ---- LOGIN-DELAY -------------------------------------------------------------

TEST(SessionLimits, LoginDelayRefusesCorrectCredentialsTooSoonAfterALogin) {
  Clocked c(defaults(100, pop3::kExpireNever));
  c.h.mail.add_message("alice", "Subject: x\r\n\r\nbody\r\n");
  c.h.login();  // first login: nothing recorded before, allowed
  EXPECT_TRUE(starts_with(c.h.cmd("QUIT"), "+OK"));
  *c.now += 40;
  c.reconnect();
  const std::string r = c.h.cmd(c.h.apop_line());
  EXPECT_EQ(r,
            "-ERR [LOGIN-DELAY] Minimum time between logins is 100 seconds, try again in 60 "
            "seconds\r\n");
  EXPECT_EQ(c.h.session->state(), pop3::State::authorization);
  EXPECT_FALSE(c.h.mail.locked("alice"));  // the maildrop was not opened
  ASSERT_FALSE(c.h.sink.entries.empty());
  EXPECT_EQ(c.h.sink.entries.back().result, pop3::LoginResult::delayed);
  EXPECT_EQ(c.h.sink.entries.back().failure, apop::pop3::AuthFailure::none);
  // Once the delay has passed, the same credentials work.
  *c.now += 60;
  EXPECT_TRUE(starts_with(c.h.cmd(c.h.apop_line()), "+OK"));
}

TEST(SessionLimits, WrongCredentialsGetAuthNotLoginDelay) {
  Clocked c(defaults(100, pop3::kExpireNever));
  c.h.login();
  c.reconnect();
  *c.now += 1;
  EXPECT_TRUE(starts_with(c.h.cmd(c.h.apop_line("alice", "wrong-secret-xyz")), "-ERR [AUTH] "));
  EXPECT_TRUE(starts_with(c.h.cmd(c.h.apop_line("nobody", "wrong-secret-xyz")), "-ERR [AUTH] "));
}

TEST(SessionLimits, LoginDelayAppliesToUserPassAndSasl) {
  Clocked c;  // no server-wide delay: alice's own one
  c.set_policy(100, std::nullopt);
  c.h.login();
  c.reconnect();
  *c.now += 10;
  c.h.cmd("USER alice");
  EXPECT_TRUE(starts_with(c.h.cmd(std::string("PASS ") + kSecret), "-ERR [LOGIN-DELAY] "));
  const std::string plain = auth::base64_encode(std::string("\0alice\0", 7) + kSecret);
  EXPECT_TRUE(starts_with(c.h.cmd("AUTH PLAIN " + plain), "-ERR [LOGIN-DELAY] "));
  // bob has no delay of his own and the server none.
  EXPECT_TRUE(starts_with(c.h.cmd(c.h.apop_line("bob", "bobs-long-secret")), "+OK"));
}

TEST(SessionLimits, RefusedLoginsDoNotRestartTheDelay) {
  Clocked c(defaults(100, pop3::kExpireNever));
  c.h.login();
  c.reconnect();
  *c.now += 90;
  EXPECT_TRUE(starts_with(c.h.cmd(c.h.apop_line()), "-ERR [LOGIN-DELAY] "));
  *c.now += 10;  // 100 s after the successful login
  EXPECT_TRUE(starts_with(c.h.cmd(c.h.apop_line()), "+OK"));
}

TEST(SessionLimits, LoginDelayRefusalsCountTowardsTheConnectionLimit) {
  pop3::SessionConfig cfg = defaults(100, pop3::kExpireNever);
  cfg.max_auth_failures = 2;
  Clocked c(cfg);
  c.h.login();
  c.reconnect();
  c.h.cmd(c.h.apop_line());
  EXPECT_FALSE(c.h.closed);
  const std::string r = c.h.cmd(c.h.apop_line());
  EXPECT_NE(r.find("Too many authentication failures"), std::string::npos) << r;
  EXPECT_TRUE(c.h.closed);
}

TEST(SessionLimits, ALastLoginInTheFutureDoesNotLockTheUserOut) {
  Clocked c(defaults(100, pop3::kExpireNever));
  ASSERT_TRUE(c.h.creds.record_login("alice", 5000).ok());  // the clock went back since
  EXPECT_TRUE(starts_with(c.h.cmd(c.h.apop_line()), "+OK"));
}

TEST(SessionLimits, InUseDoesNotCountAsALogin) {
  Clocked c(defaults(100, pop3::kExpireNever));
  auto holder = c.h.mail.open("alice");  // another session holds the maildrop
  ASSERT_TRUE(holder.ok());
  EXPECT_TRUE(starts_with(c.h.cmd(c.h.apop_line()), "-ERR [IN-USE] "));
  holder.value().reset();
  EXPECT_TRUE(starts_with(c.h.cmd(c.h.apop_line()), "+OK"));
}

// ---- EXPIRE ------------------------------------------------------------------

TEST(SessionLimits, ExpireDeletesOldMessagesAtQuitWithTheDeletedOnes) {
  Clocked c(defaults(0, 5), 100 * kDay);
  c.h.mail.add_message("alice", "Subject: old\r\n\r\n1\r\n", 100 * kDay - 6 * kDay);
  c.h.mail.add_message("alice", "Subject: recent\r\n\r\n2\r\n", 100 * kDay - 1 * kDay);
  c.h.mail.add_message("alice", "Subject: unknown age\r\n\r\n3\r\n", 0);
  c.h.mail.add_message("alice", "Subject: dele\r\n\r\n4\r\n", 100 * kDay - 2 * kDay);
  c.h.login();
  // EXPIRE happens in UPDATE only: during the session every message is there.
  EXPECT_TRUE(starts_with(c.h.cmd("STAT"), "+OK 4 "));
  EXPECT_TRUE(starts_with(c.h.cmd("DELE 4"), "+OK"));
  EXPECT_EQ(c.h.cmd("QUIT"), "+OK Logging out (2 messages left)\r\n");
  auto left = c.h.mail.messages("alice");
  ASSERT_EQ(left.size(), 2u);
  EXPECT_NE(left[0].find("recent"), std::string::npos);
  EXPECT_NE(left[1].find("unknown age"), std::string::npos);
  EXPECT_EQ(c.h.session->stats().expired, 1u);
  EXPECT_EQ(c.h.session->stats().deleted, 1u);
}

TEST(SessionLimits, ExpireIsMeasuredInWholeDays) {
  Clocked c(defaults(0, 5), 100 * kDay);
  c.h.mail.add_message("alice", "a\r\n", 100 * kDay - 5 * kDay);      // exactly 5 days
  c.h.mail.add_message("alice", "b\r\n", 100 * kDay - 5 * kDay + 1);  // a second younger
  c.h.login();
  c.h.cmd("QUIT");
  auto left = c.h.mail.messages("alice");
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0], "b\r\n");
}

TEST(SessionLimits, ExpireNeverDeletesNothingWithoutQuit) {
  Clocked c(defaults(0, 1), 100 * kDay);
  c.h.mail.add_message("alice", "old\r\n", 1 * kDay);
  c.h.login();
  c.h.session->abort();  // the connection dropped: no UPDATE state
  EXPECT_EQ(c.h.mail.messages("alice").size(), 1u);
}

TEST(SessionLimits, ExpireNeverKeepsOldMessages) {
  Clocked c(defaults(0, pop3::kExpireNever), 100 * kDay);
  c.h.mail.add_message("alice", "old\r\n", 1);
  c.h.login();
  EXPECT_EQ(c.h.cmd("QUIT"), "+OK Logging out (1 message left)\r\n");
  EXPECT_EQ(c.h.mail.messages("alice").size(), 1u);
}

TEST(SessionLimits, TheUsersOwnExpireReplacesTheDefault) {
  Clocked c(defaults(0, pop3::kExpireNever), 100 * kDay);
  c.set_policy(std::nullopt, 1);
  c.h.mail.add_message("alice", "old\r\n", 100 * kDay - 2 * kDay);
  c.h.mail.add_message("bob", "old\r\n", 100 * kDay - 2 * kDay);
  c.h.login();
  c.h.cmd("QUIT");
  EXPECT_TRUE(c.h.mail.messages("alice").empty());
  c.reconnect();
  ASSERT_TRUE(starts_with(c.h.cmd(c.h.apop_line("bob", "bobs-long-secret")), "+OK"));
  c.h.cmd("QUIT");
  EXPECT_EQ(c.h.mail.messages("bob").size(), 1u);
}

TEST(SessionLimits, ExpireZeroDeletesRetrievedMessagesAtQuit) {
  Clocked c(defaults(0, 0), 100 * kDay);
  c.h.mail.add_message("alice", "one\r\n", 100 * kDay);
  c.h.mail.add_message("alice", "two\r\n", 100 * kDay);
  c.h.mail.add_message("alice", "three\r\n", 1);
  c.h.login();
  EXPECT_TRUE(starts_with(c.h.cmd("RETR 1"), "+OK"));
  EXPECT_TRUE(starts_with(c.h.cmd("TOP 2 0"), "+OK"));  // TOP is not a retrieval
  EXPECT_TRUE(starts_with(c.h.cmd("RSET"), "+OK"));     // RSET undoes DELE only
  EXPECT_EQ(c.h.cmd("QUIT"), "+OK Logging out (2 messages left)\r\n");
  auto left = c.h.mail.messages("alice");
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[0], "two\r\n");
  EXPECT_EQ(left[1], "three\r\n");  // old but never retrieved: kept under EXPIRE 0
}

TEST(SessionLimits, ExpireZeroDeletesNothingWithoutQuit) {
  Clocked c(defaults(0, 0));
  c.h.mail.add_message("alice", "one\r\n", 1);
  c.h.login();
  EXPECT_TRUE(starts_with(c.h.cmd("RETR 1"), "+OK"));
  c.h.session->abort();
  EXPECT_EQ(c.h.mail.messages("alice").size(), 1u);
}

TEST(SessionLimits, ExpireZeroKeepsAMessageWhoseRetrievalFailed) {
  Clocked c(defaults(0, 0));
  c.h.mail.add_message("alice", "one\r\n", 1);
  c.h.mail.add_message("alice", "two\r\n", 1);
  c.h.login();
  c.h.mail.fail_read_after(1);
  c.h.cmd("RETR 1");  // the body cannot be read: the session ends, nothing is committed
  EXPECT_TRUE(c.h.closed);
  EXPECT_EQ(c.h.mail.messages("alice").size(), 2u);
}

TEST(SessionLimits, ExpireCommitFailureIsReported) {
  Clocked c(defaults(0, 1), 100 * kDay);
  c.h.mail.add_message("alice", "old\r\n", 1);
  c.h.login();
  c.h.mail.fail_commit_after(1);
  EXPECT_TRUE(starts_with(c.h.cmd("QUIT"), "-ERR [SYS/TEMP] "));
  EXPECT_EQ(c.h.mail.messages("alice").size(), 1u);
}

}  // namespace
}  // namespace apop::test
