// An account database that cannot be reached (PostgreSQL down): logins fail
// with [SYS/TEMP], never as wrong credentials, and the failed-login defence
// does not count them (issue 9).
#include <gtest/gtest.h>

#include <string>

#include "auth/authenticator.hpp"
#include "auth/base64.hpp"
#include "auth/credential_store.hpp"
#include "auth/digest.hpp"
#include "auth/throttle.hpp"
#include "pop3/session.hpp"
#include "store/memory.hpp"

namespace apop::auth {
namespace {

constexpr std::string_view kTs = "<1896.697170952@dbc.mtview.ca.us>";

// Every call of the login seam fails as a database that is down does.
class DownStore final : public AccountSource {
 public:
  static Error down() { return make_error(Errc::temporary, "PostgreSQL: cannot connect"); }
  Result<Account> account(std::string_view) override { return down(); }
  Result<void> record_login(std::string_view, std::int64_t) override { return down(); }
  Result<void> replace_imported_hash(std::string_view, std::string_view) override { return down(); }
};

TEST(AuthStoreUnavailable, ApopAndPlainSayTemporary) {
  DownStore store;
  StoreAuthenticator auth(store);
  auto a = auth.verify_apop("alice", kTs, md5_hex(std::string(kTs) + "x"), {false, "192.0.2.1"});
  EXPECT_FALSE(a.ok);
  EXPECT_EQ(a.failure, apop::pop3::AuthFailure::temporary);
  auto p = auth.verify_plain("alice", "whatever", {true, "192.0.2.1"});
  EXPECT_FALSE(p.ok);
  EXPECT_EQ(p.failure, apop::pop3::AuthFailure::temporary);
}

TEST(AuthStoreUnavailable, SaslSaysTemporary) {
  DownStore store;
  StoreAuthenticator auth(store);
  auto sasl = auth.start_sasl("PLAIN", {true, "192.0.2.1"});
  ASSERT_NE(sasl, nullptr);
  auto r = sasl->step(base64_encode(std::string("\0alice\0secret", 13)));
  EXPECT_TRUE(r.failed());
  EXPECT_EQ(r.result.failure, apop::pop3::AuthFailure::temporary);
}

TEST(AuthStoreUnavailable, NotCountedAsFailedLogins) {
  DownStore store;
  StoreAuthenticator inner(store);
  ThrottleConfig cfg;
  cfg.block_after = 3;
  MemoryFailureTracker tracker(cfg);
  ThrottlingAuthenticator auth(inner, tracker, cfg);
  for (int i = 0; i < 10; ++i) {
    auto r = auth.verify_plain("alice", "whatever", {true, "192.0.2.1"});
    EXPECT_EQ(r.failure, apop::pop3::AuthFailure::temporary);
    EXPECT_EQ(r.delay.count(), 0);
  }
  const auto s = tracker.status("192.0.2.1", "alice", ThrottleClock::now());
  EXPECT_EQ(s.address_failures, 0u);
  EXPECT_EQ(s.user_failures, 0u);
  EXPECT_FALSE(s.blocked(ThrottleClock::now()));
}

TEST(AuthStoreUnavailable, SessionRepliesSysTemp) {
  DownStore store;
  StoreAuthenticator auth(store);
  store::MemoryStore mail;
  pop3::SessionConfig cfg;
  cfg.secure = true;
  pop3::Session s(cfg, auth, mail, std::string(kTs), nullptr);
  std::string out = s.greeting();
  s.feed("USER alice\r\nPASS whatever-secret\r\n");
  for (pop3::Next n = s.next(out); n != pop3::Next::need_input && n != pop3::Next::close;
       n = s.next(out)) {
  }
  EXPECT_NE(out.find("-ERR [SYS/TEMP] Authentication temporarily unavailable"), std::string::npos)
      << out;
  EXPECT_EQ(out.find("[AUTH]"), std::string::npos) << out;
  EXPECT_EQ(s.state(), pop3::State::authorization);
}

}  // namespace
}  // namespace apop::auth
