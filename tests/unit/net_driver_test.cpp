// net/session_driver.hpp over the in-memory TestStream (net_test_stream.hpp):
// the driver the server runs per connection, without sockets -- timeouts,
// the login deadline, backpressure, STLS, a peer that vanishes mid-reply,
// the untrusted PROXY header, the failed-login reply delay.
#include "net/session_driver.hpp"

#include <gtest/gtest.h>

#include <asio.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "net_test_stream.hpp"
#include "pop3_support.hpp"

namespace apop::net {
namespace {

using namespace std::chrono_literals;
using apop::test::Harness;
using test::TestStream;

// Sets the driver's reply delay on a failed login, as the server's LogSink
// does with LoginEvent::delay.
// Failed-login throttling as the driver sees it: failed APOP and USER/PASS
// logins come back with `on_failure` in AuthResult::delay.
struct DelayingAuth final : pop3::Authenticator {
  explicit DelayingAuth(pop3::Authenticator& i) : inner(i) {}
  pop3::AuthResult verify_apop(std::string_view user, std::string_view timestamp,
                               std::string_view digest, const pop3::AuthContext& ctx) override {
    return delayed(inner.verify_apop(user, timestamp, digest, ctx));
  }
  pop3::AuthResult verify_plain(std::string_view user, std::string_view password,
                                const pop3::AuthContext& ctx) override {
    return delayed(inner.verify_plain(user, password, ctx));
  }
  pop3::AuthResult delayed(pop3::AuthResult r) const {
    if (!r.ok) r.delay = on_failure;
    return r;
  }
  pop3::Authenticator& inner;
  std::chrono::milliseconds on_failure{0};
};

std::string big_message(std::size_t size) {
  std::string m = "Subject: big\n\n";
  while (m.size() < size) m += "0123456789abcdefghijklmnopqrstuvwxyz.0123456789abcdefghijklmnopq\n";
  return m;
}

bool ends_with(const std::string& s, std::string_view tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

class DriverTest : public ::testing::Test {
 protected:
  static pop3::SessionConfig plain_config() {
    pop3::SessionConfig c;
    c.secure = false;
    c.stls_available = true;
    return c;
  }

  // `cfg`: the session's configuration (default: secure, as on loopback).
  void start(bool implicit_tls = false, bool refuse_proxy_header = true,
             std::chrono::steady_clock::duration login_deadline = 60s,
             std::optional<pop3::SessionConfig> cfg = std::nullopt) {
    session = std::make_unique<pop3::Session>(cfg ? *cfg : Harness::secure_config(), auth, h.mail,
                                              apop::test::kTimestamp);
    cx = std::make_unique<DriverContext>(
        DriverContext{options, tls_ctx, stopping, pool.get(), nullptr, nullptr, verifier});
    driver = std::make_unique<SessionDriver<TestStream>>(stream, *session, *cx);
    asio::co_spawn(io, drive(implicit_tls, refuse_proxy_header, login_deadline), asio::detached);
  }

  asio::awaitable<void> drive(bool implicit_tls, bool refuse_proxy_header,
                              std::chrono::steady_clock::duration login_deadline) {
    DriveResult r = co_await driver->run(implicit_tls, refuse_proxy_header,
                                         std::chrono::steady_clock::now() + login_deadline);
    driver->farewell(r);
    result = std::move(r);
  }

  // Runs the event loop until pred() holds or `limit` (wall clock) passed.
  template <typename Pred>
  bool run_until(Pred pred, std::chrono::milliseconds limit = 5000ms) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!pred() && std::chrono::steady_clock::now() < end) {
      if (io.stopped()) io.restart();
      io.run_one_for(10ms);
    }
    return pred();
  }
  // Runs the event loop for `d` whatever happens.
  void run_for(std::chrono::milliseconds d) {
    run_until([] { return false; }, d);
  }
  bool done() const { return result.has_value(); }
  bool output_has(std::string_view s) const { return stream.output().find(s) != std::string::npos; }

  asio::io_context io;
  TestStream stream{io.get_executor()};
  ServerOptions options;
  TlsContext tls_ctx;  // the test stream does not look at it
  bool stopping = false;
  std::unique_ptr<asio::thread_pool> pool;  // null: blocking steps inline
  AsyncVerifier* verifier = nullptr;        // Next::verify's checks
  Harness h;
  DelayingAuth auth{h.auth};
  std::unique_ptr<pop3::Session> session;
  std::unique_ptr<DriverContext> cx;
  std::unique_ptr<SessionDriver<TestStream>> driver;
  std::optional<DriveResult> result;
};

TEST_F(DriverTest, WritesExactlyWhatTheSessionProduces) {
  h.mail.add_message("alice", "Subject: one\n\n.leading dot\nbody\n");
  h.mail.add_message("alice", big_message(200 * 1024));
  const std::string input = h.apop_line() + "\r\nSTAT\r\nRETR 1\r\nRETR 2\r\nQUIT\r\n";
  start();
  stream.push(input);
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_FALSE(result->timed_out);
  EXPECT_EQ(result->failure, "");
  EXPECT_TRUE(session->stats().committed);
  // The same bytes fed to a session directly.
  Harness twin;
  twin.mail.add_message("alice", "Subject: one\n\n.leading dot\nbody\n");
  twin.mail.add_message("alice", big_message(200 * 1024));
  auto s = twin.make_session();
  const std::string expected = s->greeting() + twin.drive(*s, input);
  EXPECT_EQ(stream.output(), expected);
}

TEST_F(DriverTest, AClientThatStopsReadingStallsTheSessionUntilItReadsAgain) {
  const std::string body = big_message(1024 * 1024);
  h.mail.add_message("alice", body);
  stream.set_read_window(4000);
  start();
  stream.push(h.apop_line() + "\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n");
  run_for(300ms);
  // The write stalls at the window; the pipelined DELE and QUIT wait behind it.
  EXPECT_FALSE(done());
  EXPECT_EQ(stream.output().size(), 4000u);
  EXPECT_EQ(session->state(), pop3::State::transaction);
  EXPECT_FALSE(session->stats().committed);
  EXPECT_EQ(h.mail.messages("alice").size(), 1u);
  stream.set_read_window(TestStream::kUnlimited);
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_FALSE(result->timed_out);
  EXPECT_TRUE(session->stats().committed);
  EXPECT_TRUE(h.mail.messages("alice").empty());
  // Byte-exact once the client reads again.
  Harness twin;
  twin.mail.add_message("alice", body);
  auto s = twin.make_session();
  const std::string expected =
      s->greeting() + twin.drive(*s, h.apop_line() + "\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n");
  EXPECT_EQ(stream.output(), expected);
}

TEST_F(DriverTest, AClientThatNeverReadsIsDisconnectedAfterTheIdleTimeout) {
  h.mail.add_message("alice", big_message(1024 * 1024));
  // Both: the watchdog's timer notices a deadline that moved earlier only
  // when it fires (the default login timeout is longer than a second).
  options.login_timeout = 1s;
  options.idle_timeout = 1s;
  stream.set_read_window(4000);
  start();
  stream.push(h.apop_line() + "\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n");
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(run_until([&] { return done(); }, 5000ms));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 900ms);
  EXPECT_TRUE(result->timed_out);
  EXPECT_FALSE(result->login_expired);
  EXPECT_GE(stream.cancels(), 1u);
  EXPECT_EQ(stream.output().size(), 4000u);  // nothing more: not even the goodbye
  EXPECT_FALSE(session->stats().committed);
  EXPECT_EQ(h.mail.messages("alice").size(), 1u);
}

TEST_F(DriverTest, ASilentClientHearsWhyItWasDisconnected) {
  options.login_timeout = 1s;
  start();
  ASSERT_TRUE(run_until([&] { return done(); }, 5000ms));
  EXPECT_TRUE(result->timed_out);
  EXPECT_FALSE(result->login_expired);
  EXPECT_TRUE(ends_with(stream.output(), "-ERR Disconnected for inactivity\r\n"))
      << stream.output();
}

TEST_F(DriverTest, ATricklingClientMeetsTheLoginDeadline) {
  options.login_timeout = 1s;
  start(false, true, 2s);
  const auto t0 = std::chrono::steady_clock::now();
  // One byte every 300 ms: never silent for login_timeout, never a whole line.
  while (!done() && std::chrono::steady_clock::now() - t0 < 5s) {
    stream.push("x");
    run_for(300ms);
  }
  ASSERT_TRUE(done());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 1900ms);
  EXPECT_TRUE(result->timed_out);
  EXPECT_TRUE(result->login_expired);
  EXPECT_TRUE(ends_with(stream.output(), "-ERR Disconnected: login took too long\r\n"))
      << stream.output();
}

TEST_F(DriverTest, StlsUpgradesTheStreamAndDropsPipelinedPlaintext) {
  start(false, true, 60s, plain_config());
  // CVE-2011-0411: a command injected behind STLS in the same packet.
  stream.push("STLS\r\nCAPA\r\n");
  run_for(100ms);
  EXPECT_EQ(stream.handshakes(), 1);
  EXPECT_TRUE(stream.secure());
  std::string out = stream.take_output();
  const std::size_t greeting_end = out.find("\r\n");
  ASSERT_NE(greeting_end, std::string::npos);
  EXPECT_EQ(out.substr(greeting_end + 2, 3), "+OK");
  EXPECT_EQ(out.find("\r\n", greeting_end + 2) + 2, out.size()) << out;  // no CAPA reply
  stream.push("CAPA\r\n");
  run_for(100ms);
  out = stream.take_output();
  EXPECT_EQ(out.substr(0, 3), "+OK");
  EXPECT_EQ(out.find("STLS"), std::string::npos) << out;
  stream.push("QUIT\r\n");
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_EQ(result->failure, "");
}

TEST_F(DriverTest, PlaintextWhereTheClientHelloShouldBeFailsTheHandshake) {
  start(false, true, 60s, plain_config());
  stream.set_read_chunk(6);  // "STLS\r\n" alone: the rest waits in the stream
  stream.push("STLS\r\nUSER alice\r\n");
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_EQ(result->failure.rfind("stls-handshake: ", 0), 0u) << result->failure;
  EXPECT_FALSE(stream.secure());
}

TEST_F(DriverTest, ImplicitTlsHandshakesBeforeTheGreeting) {
  start(true);
  run_for(50ms);
  EXPECT_EQ(stream.handshakes(), 1);
  EXPECT_EQ(stream.output().substr(0, 4), "+OK ");
  stream.push("QUIT\r\n");
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_EQ(result->failure, "");
}

TEST_F(DriverTest, AFailedImplicitTlsHandshakeEndsTheSessionWithoutAWord) {
  stream.fail_handshake(asio::error::connection_reset);
  start(true);
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_EQ(result->failure.rfind("tls-handshake: ", 0), 0u) << result->failure;
  EXPECT_EQ(stream.output(), "");
}

TEST_F(DriverTest, APeerThatVanishesMidReplyCommitsNothing) {
  h.mail.add_message("alice", "Subject: small\n\nhello\n");
  h.mail.add_message("alice", big_message(100 * 1024));
  stream.vanish_after(5000);
  start();
  stream.push(h.apop_line() + "\r\nDELE 1\r\nRETR 2\r\nQUIT\r\n");
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_TRUE(stream.gone());
  EXPECT_FALSE(result->timed_out);
  EXPECT_EQ(result->failure, "");
  EXPECT_EQ(stream.output().size(), 5000u);
  EXPECT_EQ(session->state(), pop3::State::transaction);  // QUIT never ran
  session->abort();
  EXPECT_EQ(h.mail.messages("alice").size(), 2u);
  EXPECT_FALSE(h.mail.locked("alice"));
}

TEST_F(DriverTest, AVanishedPeerEndsAWaitingRead) {
  start();
  run_for(50ms);
  EXPECT_FALSE(done());
  stream.vanish();
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_FALSE(result->timed_out);
}

TEST_F(DriverTest, AHalfCloseEndsTheSessionAfterItsCommands) {
  h.mail.add_message("alice", "Subject: small\n\nhello\n");
  start();
  stream.push(h.apop_line() + "\r\nSTAT\r\n");
  stream.close_input();
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_EQ(result->failure, "");
  EXPECT_TRUE(output_has("+OK 1 "));
  EXPECT_FALSE(session->stats().committed);
}

TEST_F(DriverTest, AProxyHeaderFromAnUntrustedPeerEndsTheSession) {
  start();
  stream.push("PROXY TCP4 192.0.2.1 192.0.2.2 1234 110\r\n");
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_EQ(result->failure, "proxy-header-untrusted");
}

TEST_F(DriverTest, AfterTheFirstBytesProxyIsAnUnknownCommand) {
  start(false, /*refuse_proxy_header=*/false);
  stream.push("PROXY TCP4 192.0.2.1 192.0.2.2 1234 110\r\nQUIT\r\n");
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_EQ(result->failure, "");
  EXPECT_TRUE(output_has("\r\n-ERR")) << stream.output();
}

TEST_F(DriverTest, AFailedLoginReplyWaitsForTheDelay) {
  auth.on_failure = 400ms;
  start();
  run_for(50ms);
  stream.take_output();  // the greeting
  stream.push("APOP alice 0123456789abcdef0123456789abcdef\r\nNOOP\r\n");
  run_for(200ms);
  EXPECT_EQ(stream.output(), "");  // withheld, and NOOP not run meanwhile
  ASSERT_TRUE(run_until([&] { return output_has("-ERR"); }, 2000ms));
  EXPECT_EQ(session->take_reply_delay(), 0ms);  // taken
  stream.push("QUIT\r\n");
  ASSERT_TRUE(run_until([&] { return done(); }));
}

TEST_F(DriverTest, BlockingStepsRunOnThePool) {
  pool = std::make_unique<asio::thread_pool>(1);
  h.mail.add_message("alice", "Subject: small\n\nhello\n");
  start();
  stream.push(std::string("USER alice\r\nPASS ") + apop::test::kSecret + "\r\nSTAT\r\nQUIT\r\n");
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_TRUE(output_has("+OK 1 ")) << stream.output();
  EXPECT_TRUE(session->stats().committed);
  pool->join();
}

// The worker's APOP check as the driver sees it: awaited (here after a
// timer, as a round trip to the auth process would take), with the verdict
// of the test's authenticator.
struct TimedVerifier final : AsyncVerifier {
  explicit TimedVerifier(pop3::Authenticator& a) : auth(a) {}
  asio::awaitable<pop3::AuthResult> verify(const pop3::PendingCheck& c) override {
    ++calls;
    asio::steady_timer t(co_await asio::this_coro::executor, 100ms);
    co_await t.async_wait(use_tuple);
    co_return auth.verify_apop(c.user, c.timestamp, c.digest, c.context);
  }
  pop3::Authenticator& auth;
  int calls = 0;
};

pop3::SessionConfig deferred_config() {
  pop3::SessionConfig c = Harness::secure_config();
  c.inline_apop = true;
  c.deferred_apop = true;
  return c;
}

TEST_F(DriverTest, AnAwaitedApopCheckHoldsThePipelinedCommandsUntilItsVerdict) {
  TimedVerifier v(auth);
  verifier = &v;
  h.mail.add_message("alice", "Subject: small\n\nhello\n");
  start(false, true, 60s, deferred_config());
  run_for(50ms);
  stream.take_output();  // the greeting
  stream.push(h.apop_line() + "\r\nSTAT\r\nQUIT\r\n");
  run_for(40ms);
  EXPECT_EQ(stream.output(), "");  // the verdict is not in yet
  EXPECT_EQ(session->state(), pop3::State::authorization);
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_EQ(v.calls, 1);
  EXPECT_EQ(stream.output().substr(0, 13), "+OK Logged in");
  EXPECT_TRUE(output_has("\r\n+OK 1 ")) << stream.output();
  EXPECT_TRUE(session->stats().committed);
}

TEST_F(DriverTest, AnAwaitedFailedCheckStillWaitsForTheFailureDelay) {
  TimedVerifier v(auth);
  verifier = &v;
  auth.on_failure = 400ms;
  start(false, true, 60s, deferred_config());
  run_for(50ms);
  stream.take_output();
  const auto t0 = std::chrono::steady_clock::now();
  stream.push("APOP alice 0123456789abcdef0123456789abcdef\r\n");
  ASSERT_TRUE(run_until([&] { return output_has("-ERR [AUTH]"); }, 3000ms));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 480ms);  // the check, then the delay
  stream.push("QUIT\r\n");
  ASSERT_TRUE(run_until([&] { return done(); }));
}

TEST_F(DriverTest, WithoutAVerifierADeferredCheckFailsAsTemporary) {
  start(false, true, 60s, deferred_config());
  stream.push(h.apop_line() + "\r\nQUIT\r\n");
  ASSERT_TRUE(run_until([&] { return done(); }));
  EXPECT_TRUE(output_has("-ERR [SYS/TEMP]")) << stream.output();
}

}  // namespace
}  // namespace apop::net
