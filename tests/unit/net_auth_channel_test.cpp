// net/auth_channel.hpp: the worker's asynchronous channel to the auth
// process -- many APOP checks in flight on one socket, replies matched by
// id in any order, timeouts, a channel that fails or is replaced, login
// records from other threads, and the server's stop.
#include "net/auth_channel.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "ipc/auth_service.hpp"
#include "ipc/wire.hpp"
#include "ipc_support.hpp"

namespace apop::net {
namespace {

using namespace std::chrono_literals;
using ipc::test::FakeAuthenticator;
using ipc::test::kFakeSecret;
using ipc::test::Pair;
using ipc::test::ServedChannels;

constexpr std::string_view kTs = "<1896.697170952@dbc.mtview.ca.us>";

// Receives one packet from the auth end (blocking, 5 s at most).
std::optional<std::string> recv_packet(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string buf(limits::kMaxIpcMessage + 1, '\0');
  const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
  if (n <= 0) return std::nullopt;
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

void send_reply(int fd, std::uint32_t id, const ipc::Reply& reply) {
  std::string out;
  ASSERT_TRUE(ipc::encode_reply(id, reply, out).ok());
  ASSERT_EQ(::send(fd, out.data(), out.size(), MSG_NOSIGNAL), static_cast<ssize_t>(out.size()));
}

pop3::AuthResult verdict_for(std::string_view user) {
  pop3::AuthResult r;
  r.ok = user.back() % 2 == 0;  // "u0", "u2", ... log in
  r.credential = r.ok ? "device:" + std::string(user) : "";
  r.failure = r.ok ? pop3::AuthFailure::none : pop3::AuthFailure::credentials;
  return r;
}

class AuthChannelTest : public ::testing::Test {
 protected:
  // Starts a check for `user` on the loop; its verdict lands in results[i].
  void start_check(std::size_t i, std::string user, std::string digest = "d") {
    checks.resize(std::max(checks.size(), i + 1));
    results.resize(std::max(results.size(), i + 1));
    checks[i] = pop3::PendingCheck{std::move(user), std::move(digest), kTs, {true, "192.0.2.7"}};
    asio::co_spawn(
        io,
        [this, i]() -> asio::awaitable<void> { results[i] = co_await channel->verify(checks[i]); },
        asio::detached);
  }
  template <typename Pred>
  bool run_until(Pred pred, std::chrono::milliseconds limit = 5000ms) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!pred() && std::chrono::steady_clock::now() < end) {
      if (io.stopped()) io.restart();
      io.run_one_for(10ms);
    }
    return pred();
  }
  // The next request the auth end receives, running the loop meanwhile (the
  // channel sends from it).
  std::optional<std::string> request_at(int fd) {
    std::string buf(limits::kMaxIpcMessage + 1, '\0');
    std::optional<std::string> got;
    run_until([&] {
      if (got) return true;  // (run_until asks once more at the end)
      const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n > 0) got = buf.substr(0, static_cast<std::size_t>(n));
      return got.has_value();
    });
    return got;
  }
  void run_for(std::chrono::milliseconds d) {
    run_until([] { return false; }, d);
  }
  bool all_done(std::size_t n) const {
    if (results.size() < n) return false;
    for (std::size_t i = 0; i < n; ++i) {
      if (!results[i]) return false;
    }
    return true;
  }

  asio::io_context io;  // declared first: the channel goes before it
  std::vector<pop3::PendingCheck> checks;
  std::vector<std::optional<pop3::AuthResult>> results;
  std::unique_ptr<AuthChannel> channel;
};

TEST_F(AuthChannelTest, ManyChecksGoOutTogetherAndRepliesInAnyOrderReachTheirSessions) {
  Pair p;
  channel = std::make_unique<AuthChannel>(io, std::move(p.worker));
  constexpr std::size_t kChecks = 40;
  for (std::size_t i = 0; i < kChecks; ++i) start_check(i, "u" + std::to_string(i));
  // The fake auth side reads every request before it answers any: all of
  // them were in flight at once.
  std::vector<std::pair<std::uint32_t, std::string>> got;
  std::thread auth([&] {
    for (std::size_t i = 0; i < kChecks; ++i) {
      auto packet = recv_packet(p.auth.get());
      if (!packet) return;
      auto d = ipc::decode_request(*packet);
      if (!d) return;
      const auto& v = std::get<ipc::VerifyApop>(d->body);
      EXPECT_EQ(v.timestamp, kTs);
      EXPECT_EQ(v.digest, "d");
      EXPECT_TRUE(v.tls);
      EXPECT_EQ(v.address, "192.0.2.7");
      got.emplace_back(d->id, std::string(v.user));
    }
    // Answered last first.
    for (auto it = got.rbegin(); it != got.rend(); ++it) {
      send_reply(p.auth.get(), it->first, verdict_for(it->second));
    }
  });
  ASSERT_TRUE(run_until([&] { return all_done(kChecks); }));
  auth.join();
  ASSERT_EQ(got.size(), kChecks);
  for (std::size_t i = 0; i < kChecks; ++i) {
    const auto want = verdict_for("u" + std::to_string(i));
    EXPECT_EQ(results[i]->ok, want.ok) << i;
    EXPECT_EQ(results[i]->credential, want.credential) << i;
  }
  EXPECT_EQ(channel->in_flight(), 0u);
  EXPECT_TRUE(channel->open());
}

TEST_F(AuthChannelTest, WorksAgainstTheRealAuthServiceAndCarriesLoginRecords) {
  FakeAuthenticator fake;
  ipc::AuthService service(fake);
  ServedChannels served(service, 1);
  channel = std::make_unique<AuthChannel>(io, std::move(served.worker_fds()[0]));
  start_check(0, "alice", std::string(kFakeSecret));
  start_check(1, "bob", "wrong");
  ASSERT_TRUE(run_until([&] { return all_done(2); }));
  EXPECT_TRUE(results[0]->ok);
  EXPECT_EQ(results[0]->credential, "password");
  EXPECT_FALSE(results[1]->ok);
  EXPECT_EQ(results[1]->failure, pop3::AuthFailure::credentials);
  EXPECT_EQ(fake.last_address, "192.0.2.7");
  // A login record from another thread (a pool thread that opened the
  // maildrop) goes out with the loop's next batch; no reply comes.
  std::thread([&] { channel->record_login("alice", 1'800'000'000); }).join();
  ASSERT_TRUE(run_until([&] {
    std::lock_guard lock(fake.mu);
    return !fake.recorded.empty();
  }));
  std::lock_guard lock(fake.mu);
  EXPECT_EQ(fake.recorded[0].first, "alice");
}

TEST_F(AuthChannelTest, ALoginRecordWaitsForTheNextCheckOrTheFlushTick) {
  Pair p;
  channel = std::make_unique<AuthChannel>(io, std::move(p.worker));
  char buf[64];
  // Recorded on the loop (an APOP login finishing there): not sent alone.
  asio::post(io, [&] { channel->record_login("alice", 1'800'000'000); });
  run_for(30ms);
  EXPECT_LT(::recv(p.auth.get(), buf, sizeof buf, MSG_DONTWAIT), 0);
  // The next check takes it along, ahead of itself.
  start_check(0, "u0");
  auto first = request_at(p.auth.get());
  ASSERT_TRUE(first);
  EXPECT_EQ(ipc::request_type(ipc::decode_request(*first)->body), ipc::MsgType::record_login);
  auto second = request_at(p.auth.get());
  ASSERT_TRUE(second);
  EXPECT_EQ(ipc::request_type(ipc::decode_request(*second)->body), ipc::MsgType::verify_apop);
  // With no check to ride with, it goes within kIpcRecordFlush.
  const auto t0 = std::chrono::steady_clock::now();
  asio::post(io, [&] { channel->record_login("bob", 1'800'000'000); });
  auto alone = request_at(p.auth.get());
  ASSERT_TRUE(alone);
  EXPECT_EQ(std::get<ipc::RecordLogin>(ipc::decode_request(*alone)->body).user, "bob");
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, limits::kIpcRecordFlush + 500ms);  // the tick, with room for a slow machine
  channel->close();
}

TEST_F(AuthChannelTest, ACheckWithoutAnAnswerTimesOutAndALateAnswerIsSkipped) {
  Pair p;
  channel = std::make_unique<AuthChannel>(io, std::move(p.worker), 300ms);
  const auto t0 = std::chrono::steady_clock::now();
  start_check(0, "u0");
  auto first = request_at(p.auth.get());
  ASSERT_TRUE(first);
  ASSERT_TRUE(run_until([&] { return all_done(1); }));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 290ms);
  EXPECT_LT(waited, 3s);
  EXPECT_EQ(results[0]->failure, pop3::AuthFailure::temporary);
  EXPECT_EQ(channel->in_flight(), 0u);
  // The late answer is not taken for the next check's.
  send_reply(p.auth.get(), ipc::decode_request(*first)->id, verdict_for("u0"));
  start_check(1, "u2");
  auto second = request_at(p.auth.get());
  ASSERT_TRUE(second);
  pop3::AuthResult refused;
  refused.failure = pop3::AuthFailure::credentials;
  send_reply(p.auth.get(), ipc::decode_request(*second)->id, refused);
  ASSERT_TRUE(run_until([&] { return all_done(2); }));
  EXPECT_FALSE(results[1]->ok);
  EXPECT_EQ(results[1]->failure, pop3::AuthFailure::credentials);
  EXPECT_TRUE(channel->open());
}

TEST_F(AuthChannelTest, AnErrorReplyIsTemporaryAndKeepsTheChannel) {
  Pair p;
  channel = std::make_unique<AuthChannel>(io, std::move(p.worker));
  start_check(0, "u0");
  auto req = request_at(p.auth.get());
  ASSERT_TRUE(req);
  send_reply(p.auth.get(), ipc::decode_request(*req)->id,
             ipc::ErrorReply{ipc::ErrorCode::rate_limited});
  ASSERT_TRUE(run_until([&] { return all_done(1); }));
  EXPECT_EQ(results[0]->failure, pop3::AuthFailure::temporary);
  EXPECT_TRUE(channel->open());
}

TEST_F(AuthChannelTest, AMalformedOrUnexpectedReplyClosesTheChannel) {
  for (const bool malformed : {true, false}) {
    Pair p;
    results.clear();
    channel = std::make_unique<AuthChannel>(io, std::move(p.worker));
    start_check(0, "u0");
    start_check(1, "u2");
    auto req = request_at(p.auth.get());
    ASSERT_TRUE(req);
    if (malformed) {
      ASSERT_EQ(::send(p.auth.get(), "\x01\x82garbage", 9, MSG_NOSIGNAL), 9);
    } else {
      send_reply(p.auth.get(), ipc::decode_request(*req)->id, ipc::Ack{});
    }
    ASSERT_TRUE(run_until([&] { return all_done(2); })) << malformed;
    EXPECT_EQ(results[0]->failure, pop3::AuthFailure::temporary);
    EXPECT_EQ(results[1]->failure, pop3::AuthFailure::temporary);
    EXPECT_FALSE(channel->open());
    // Until it is replaced, a check fails at once.
    start_check(2, "u4");
    ASSERT_TRUE(run_until([&] { return all_done(3); }, 100ms));
    EXPECT_EQ(results[2]->failure, pop3::AuthFailure::temporary);
    channel.reset();
  }
}

TEST_F(AuthChannelTest, TheAuthProcessGoingAwayFailsChecksUntilANewChannelComes) {
  FakeAuthenticator fake;
  ipc::AuthService service(fake);
  auto served = std::make_unique<ServedChannels>(service, 1);
  channel = std::make_unique<AuthChannel>(io, std::move(served->worker_fds()[0]));
  served->stop();  // the auth process dies
  start_check(0, "alice", std::string(kFakeSecret));
  ASSERT_TRUE(run_until([&] { return all_done(1); }));
  EXPECT_EQ(results[0]->failure, pop3::AuthFailure::temporary);
  ASSERT_TRUE(run_until([&] { return !channel->open(); }));
  // Restarted: the worker's control thread hands the new channel over.
  ServedChannels again(service, 1);
  std::thread([&] { channel->replace(std::move(again.worker_fds()[0])); }).join();
  ASSERT_TRUE(run_until([&] { return channel->open(); }));
  start_check(1, "alice", std::string(kFakeSecret));
  ASSERT_TRUE(run_until([&] { return all_done(2); }));
  EXPECT_TRUE(results[1]->ok);
}

TEST_F(AuthChannelTest, ReplacingFailsTheChecksInFlightOnTheOldChannel) {
  Pair old_pair, new_pair;
  channel = std::make_unique<AuthChannel>(io, std::move(old_pair.worker));
  start_check(0, "u0");
  ASSERT_TRUE(request_at(old_pair.auth.get()));
  channel->replace(std::move(new_pair.worker));
  ASSERT_TRUE(run_until([&] { return all_done(1); }));
  EXPECT_EQ(results[0]->failure, pop3::AuthFailure::temporary);
  start_check(1, "u2");
  auto req = request_at(new_pair.auth.get());
  ASSERT_TRUE(req);
  send_reply(new_pair.auth.get(), ipc::decode_request(*req)->id, verdict_for("u2"));
  ASSERT_TRUE(run_until([&] { return all_done(2); }));
  EXPECT_TRUE(results[1]->ok);
}

TEST_F(AuthChannelTest, TooManyChecksInFlightFailAtOnce) {
  Pair p;
  channel = std::make_unique<AuthChannel>(io, std::move(p.worker));
  for (std::size_t i = 0; i < limits::kIpcMaxInFlight; ++i) start_check(i, "u0");
  ASSERT_TRUE(run_until([&] { return channel->in_flight() == limits::kIpcMaxInFlight; }));
  start_check(limits::kIpcMaxInFlight, "u0");
  ASSERT_TRUE(run_until([&] { return results.back().has_value(); }));
  EXPECT_EQ(results.back()->failure, pop3::AuthFailure::temporary);
  EXPECT_FALSE(results[0].has_value());
  channel->close();
  ASSERT_TRUE(run_until([&] { return all_done(results.size()); }));
}

TEST_F(AuthChannelTest, CloseFailsWaitingChecksAndLeavesTheLoopNothingToDo) {
  Pair p;
  channel = std::make_unique<AuthChannel>(io, std::move(p.worker));
  start_check(0, "u0");
  ASSERT_TRUE(request_at(p.auth.get()));
  asio::post(io, [&] { channel->close(); });
  // run() returns by itself: no read, write or timer is left pending.
  std::atomic<bool> returned{false};
  std::thread stopper([&] {
    for (int i = 0; i < 300 && !returned; ++i) std::this_thread::sleep_for(10ms);
    io.stop();  // a safety net: the test fails below when it was needed
  });
  const auto t0 = std::chrono::steady_clock::now();
  io.restart();
  io.run();
  returned = true;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  stopper.join();
  ASSERT_TRUE(results[0].has_value());
  EXPECT_EQ(results[0]->failure, pop3::AuthFailure::temporary);
  EXPECT_FALSE(channel->open());
}

TEST_F(AuthChannelTest, SessionsStillWaitingWhenTheServerGoesAreDestroyedSafely) {
  // The server's order: the channel first, then the io_context with the
  // frames of sessions that still await a verdict.
  Pair p;
  auto ctx = std::make_unique<asio::io_context>();
  auto ch = std::make_unique<AuthChannel>(*ctx, std::move(p.worker));
  pop3::PendingCheck check{"u0", "d", kTs, {}};
  bool resumed = false;
  asio::co_spawn(
      *ctx,
      [&]() -> asio::awaitable<void> {
        (void)co_await ch->verify(check);
        resumed = true;
      },
      asio::detached);
  for (int i = 0; i < 20 && ch->in_flight() == 0; ++i) ctx->run_one_for(10ms);
  ASSERT_EQ(ch->in_flight(), 1u);
  ch.reset();
  ctx.reset();  // ASan would see a use after free here
  EXPECT_FALSE(resumed);
}

}  // namespace
}  // namespace apop::net
