// pop3::Session with SessionConfig::deferred_apop: APOP's check is handed to
// the driver (Next::verify, pending_check(), complete_check()), as a network
// worker runs it over its asynchronous channel to the auth process.
#include <gtest/gtest.h>

#include "pop3_support.hpp"

namespace apop::test {
namespace {

pop3::SessionConfig deferred_config() {
  pop3::SessionConfig c = Harness::secure_config();
  c.inline_apop = true;
  c.deferred_apop = true;
  c.client_address = "192.0.2.7";
  return c;
}

pop3::AuthResult ok_result() {
  pop3::AuthResult r;
  r.ok = true;
  r.credential = "password";
  return r;
}

TEST(DeferredCheck, ApopHandsTheCheckToTheDriverAndWaitsForIt) {
  Harness h(deferred_config());
  h.mail.add_message("alice", "a\n");
  auto& s = *h.session;
  s.feed(h.apop_line() + "\r\nSTAT\r\n");
  EXPECT_FALSE(s.blocking_step_next());  // awaited on the loop, not run on the pool
  std::string out;
  ASSERT_EQ(s.next(out), pop3::Next::verify);
  EXPECT_EQ(out, "");
  const pop3::PendingCheck* c = s.pending_check();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->user, "alice");
  EXPECT_EQ(c->digest, h.apop_line().substr(std::string("APOP alice ").size()));
  EXPECT_EQ(c->timestamp, kTimestamp);
  EXPECT_FALSE(c->context.tls);
  EXPECT_EQ(c->context.address, "192.0.2.7");
  // Until the verdict is in, the pipelined STAT waits: next() says so again,
  // and nothing is consumed or written.
  EXPECT_EQ(s.next(out), pop3::Next::verify);
  EXPECT_FALSE(s.blocking_step_next());
  EXPECT_EQ(out, "");
  EXPECT_TRUE(h.sink.entries.empty());

  s.complete_check(ok_result(), out);
  EXPECT_EQ(s.pending_check(), nullptr);
  EXPECT_EQ(out.substr(0, 13), "+OK Logged in");
  EXPECT_EQ(s.state(), pop3::State::transaction);
  ASSERT_EQ(h.sink.entries.size(), 1u);
  EXPECT_EQ(h.sink.entries[0].mech, "APOP");
  EXPECT_EQ(h.sink.entries[0].result, pop3::LoginResult::ok);
  out.clear();
  EXPECT_EQ(s.next(out), pop3::Next::output);
  EXPECT_EQ(out, "+OK 1 3\r\n");  // "a" CRLF
}

TEST(DeferredCheck, TheSessionsOwnAuthenticatorIsNotAskedForApop) {
  // The verdict is the driver's: a session with a secret that its own
  // authenticator would refuse logs in when the driver says ok, and the
  // reverse.
  Harness h(deferred_config());
  std::string out;
  h.session->feed(h.apop_line("alice", "not-the-secret") + "\r\n");
  ASSERT_EQ(h.session->next(out), pop3::Next::verify);
  h.session->complete_check(ok_result(), out);
  EXPECT_EQ(out.substr(0, 13), "+OK Logged in");

  auto s = h.make_session();
  out.clear();
  s->feed(h.apop_line() + "\r\n");
  ASSERT_EQ(s->next(out), pop3::Next::verify);
  pop3::AuthResult refused;
  refused.failure = pop3::AuthFailure::credentials;
  refused.delay = std::chrono::milliseconds(1500);
  s->complete_check(refused, out);
  EXPECT_EQ(out, "-ERR [AUTH] Authentication failed.\r\n");
  EXPECT_EQ(s->take_reply_delay(), std::chrono::milliseconds(1500));
  EXPECT_EQ(s->state(), pop3::State::authorization);
}

TEST(DeferredCheck, ATemporaryFailureIsSysTempAndCountsAgainstTheConnection) {
  pop3::SessionConfig cfg = deferred_config();
  cfg.max_auth_failures = 2;
  Harness h(cfg);
  pop3::AuthResult down;
  down.failure = pop3::AuthFailure::temporary;
  std::string out;
  for (int i = 0; i < 2; ++i) {
    h.session->feed(h.apop_line() + "\r\n");
    ASSERT_EQ(h.session->next(out), pop3::Next::verify);
    h.session->complete_check(down, out);
  }
  EXPECT_NE(out.find("-ERR [SYS/TEMP] Authentication temporarily unavailable"), std::string::npos);
  EXPECT_NE(out.find("Too many authentication failures"), std::string::npos);
  EXPECT_EQ(h.session->next(out), pop3::Next::close);
}

TEST(DeferredCheck, AbortWithACheckPendingDropsIt) {
  Harness h(deferred_config());
  std::string out;
  h.session->feed(h.apop_line() + "\r\n");
  ASSERT_EQ(h.session->next(out), pop3::Next::verify);
  h.session->abort();
  EXPECT_EQ(h.session->pending_check(), nullptr);
  h.session->complete_check(ok_result(), out);  // a verdict after the end: ignored
  EXPECT_EQ(out, "");
  EXPECT_EQ(h.session->state(), pop3::State::closed);
  EXPECT_EQ(h.session->next(out), pop3::Next::close);
}

TEST(DeferredCheck, RefusalsThatNeedNoLookupAreAnsweredAtOnce) {
  pop3::SessionConfig cfg = deferred_config();
  cfg.md5_challenge_requires_tls = true;
  cfg.stls_available = true;
  Harness h(cfg);
  std::string out;
  h.session->feed(h.apop_line() + "\r\nAPOP onlyone\r\n");
  EXPECT_EQ(h.session->next(out), pop3::Next::output);
  EXPECT_EQ(out, "-ERR [AUTH] APOP requires TLS: use STLS first\r\n");
  out.clear();
  EXPECT_EQ(h.session->next(out), pop3::Next::output);  // a usage error: no check
  EXPECT_EQ(out.substr(0, 4), "-ERR");
  EXPECT_EQ(h.session->pending_check(), nullptr);
}

TEST(DeferredCheck, AMaildropThatMayWaitOpensInAStepOffTheLoop) {
  pop3::SessionConfig cfg = deferred_config();
  Harness h(cfg);
  h.mail.add_message("alice", "a\n");
  struct Waits final : pop3::MaildropOpener {
    explicit Waits(store::MemoryStore& m) : inner(m) {}
    Result<std::unique_ptr<pop3::Maildrop>> open(const pop3::MailboxAddress& u) override {
      return inner.open(u);
    }
    bool opens_without_waiting(const pop3::MailboxAddress&) override { return false; }
    store::MemoryStore& inner;
  } opener(h.mail);
  pop3::Session s(cfg, h.auth, opener, kTimestamp, &h.sink);
  s.feed(h.apop_line() + "\r\n");
  std::string out;
  ASSERT_EQ(s.next(out), pop3::Next::verify);
  s.complete_check(ok_result(), out);
  EXPECT_EQ(out, "");  // not opened yet
  EXPECT_TRUE(s.blocking_step_next());
  EXPECT_EQ(s.next(out), pop3::Next::output);
  EXPECT_EQ(out.substr(0, 13), "+OK Logged in");
}

TEST(DeferredCheck, PassAndSaslStillRunOffTheLoop) {
  Harness h(deferred_config());
  std::string out;
  h.session->feed("USER alice\r\nPASS x\r\n");
  ASSERT_EQ(h.session->next(out), pop3::Next::output);
  EXPECT_TRUE(h.session->blocking_step_next());
  EXPECT_EQ(h.session->next(out), pop3::Next::output);  // checked by the session itself
  EXPECT_EQ(h.session->pending_check(), nullptr);
}

TEST(DeferredCheck, TheHarnessDrivesWholeSessionsThroughIt) {
  Harness h(deferred_config());
  h.mail.add_message("alice", "Subject: x\n\nbody\n");
  const std::string out = h.send(h.apop_line() + "\r\nRETR 1\r\nQUIT\r\n");
  EXPECT_EQ(out.substr(0, 13), "+OK Logged in");
  EXPECT_NE(out.find("body"), std::string::npos);
  EXPECT_TRUE(h.closed);
}

}  // namespace
}  // namespace apop::test
