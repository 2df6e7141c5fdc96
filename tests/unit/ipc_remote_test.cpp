#include "ipc/remote_authenticator.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "auth/authenticator.hpp"
#include "auth/base64.hpp"
#include "auth/digest.hpp"
#include "auth/memory_credential_store.hpp"
#include "ipc/auth_service.hpp"
#include "ipc_support.hpp"

namespace apop::ipc {
namespace {

using namespace std::chrono_literals;
using test::FakeAuthenticator;
using test::kFakePassword;
using test::kFakeSecret;
using test::Pair;
using test::ServedChannels;

constexpr std::string_view kTs = "<1896.697170952@dbc.mtview.ca.us>";
const pop3::AuthContext kClear{false, "192.0.2.7"};
const pop3::AuthContext kTls{true, "192.0.2.7"};

std::vector<UniqueFd> one(UniqueFd fd) {
  std::vector<UniqueFd> v;
  v.push_back(std::move(fd));
  return v;
}

// Reads one request on the auth end of a Pair (test servers below).
DecodedRequest read_request(int fd, std::string& buf) {
  buf.assign(limits::kMaxIpcMessage, '\0');
  const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
  EXPECT_GT(n, 0);
  buf.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  auto d = decode_request(buf);
  EXPECT_TRUE(d.ok());
  return d ? *d : DecodedRequest{};
}

void send_reply(int fd, std::uint32_t id, const Reply& r) {
  std::string out;
  ASSERT_TRUE(encode_reply(id, r, out).ok());
  ASSERT_EQ(::send(fd, out.data(), out.size(), MSG_NOSIGNAL), static_cast<ssize_t>(out.size()));
}

class IpcRemoteReal : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(store_.add("mrose", "tanstaaf").ok());
    ASSERT_TRUE(store_.set_mail_location("mrose", std::string("mbox:/var/mail/mrose")).ok());
    remote_.start_flusher();
  }
  auth::MemoryCredentialStore store_;
  auth::StoreAuthenticator real_{store_};
  AuthService service_{real_};
  ServedChannels served_{service_, 2};
  RemoteAuthenticator remote_{served_.worker_fds(), 5s};
};

TEST_F(IpcRemoteReal, ApopAndPlainOkAndWrong) {
  pop3::AuthResult ok =
      remote_.verify_apop("mrose", kTs, "c4c9334bac560ecc979e58001b3e22fb", kClear);
  EXPECT_TRUE(ok.ok);
  EXPECT_EQ(ok.credential, "password");
  EXPECT_EQ(ok.mail_location, "mbox:/var/mail/mrose");
  pop3::AuthResult wrong =
      remote_.verify_apop("mrose", kTs, "c4c9334bac560ecc979e58001b3e22fc", kClear);
  EXPECT_FALSE(wrong.ok);
  EXPECT_EQ(wrong.failure, pop3::AuthFailure::credentials);
  EXPECT_FALSE(remote_.verify_apop("nobody", kTs, "c4c9334bac560ecc979e58001b3e22fb", kClear).ok);
  EXPECT_TRUE(remote_.verify_plain("mrose", "tanstaaf", kClear).ok);
  pop3::AuthResult bad = remote_.verify_plain("mrose", "tanstaaF", kClear);
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.failure, pop3::AuthFailure::credentials);
}

TEST_F(IpcRemoteReal, MechanismsAreFetchedAtStart) {
  const auto here = remote_.sasl_mechanisms();
  const auto there = real_.sasl_mechanisms();
  ASSERT_EQ(here.size(), there.size());
  for (std::size_t i = 0; i < here.size(); ++i) {
    EXPECT_EQ(here[i].name, there[i].name);
    EXPECT_EQ(here[i].plaintext, there[i].plaintext);
  }
  EXPECT_EQ(remote_.start_sasl("NO-SUCH", kTls), nullptr);
}

// draft-murchison-sasl-login: "Username:", "Password:", then the verdict:
// sasl_start and two sasl_steps.
TEST_F(IpcRemoteReal, SaslLoginOverThreeSteps) {
  auto ex = remote_.start_sasl("LOGIN", kTls);
  ASSERT_NE(ex, nullptr);
  pop3::SaslReply r = ex->step(std::nullopt);
  ASSERT_EQ(r.kind, pop3::SaslReply::Kind::challenge);
  EXPECT_EQ(auth::base64_decode_strict(r.text), "Username:");
  EXPECT_EQ(service_.sasl_exchanges(), 1u);
  r = ex->step(auth::base64_encode("mrose"));
  ASSERT_EQ(r.kind, pop3::SaslReply::Kind::challenge);
  EXPECT_EQ(auth::base64_decode_strict(r.text), "Password:");
  r = ex->step(auth::base64_encode("tanstaaf"));
  EXPECT_TRUE(r.succeeded());
  EXPECT_EQ(r.user, "mrose");
  EXPECT_EQ(r.result.mail_location, "mbox:/var/mail/mrose");
  EXPECT_EQ(service_.sasl_exchanges(), 0u);
  ex.reset();
  // The login is recorded (the auth side saw it succeed).
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  remote_.record_login("mrose", now);
  EXPECT_TRUE(ipc_test::eventually([&] { return store_.account("mrose")->last_login == now; }));
}

TEST(IpcRemote, TwoStepExchangeAndCancel) {
  FakeAuthenticator fake;
  AuthService service(fake);
  ServedChannels served(service, 1);
  RemoteAuthenticator remote(served.worker_fds(), 5s);
  ASSERT_EQ(remote.sasl_mechanisms().size(), 2u);
  {
    auto ex = remote.start_sasl("TWO-STEP", kTls);
    ASSERT_NE(ex, nullptr);
    EXPECT_EQ(ex->step(std::nullopt).kind, pop3::SaslReply::Kind::challenge);
    pop3::SaslReply done = ex->step(kFakePassword);
    EXPECT_TRUE(done.succeeded());
    EXPECT_EQ(done.user, "bob");
  }
  {
    // Cancelled after the challenge ("*"): the destructor ends it at the auth side.
    auto ex = remote.start_sasl("TWO-STEP", kTls);
    EXPECT_EQ(ex->step(std::nullopt).kind, pop3::SaslReply::Kind::challenge);
    EXPECT_EQ(service.sasl_exchanges(), 1u);
    EXPECT_EQ(fake.live_exchanges, 1);
  }
  EXPECT_EQ(service.sasl_exchanges(), 0u);
  EXPECT_EQ(fake.live_exchanges, 0);
  // record_login after the SASL login above: recorded once.
  remote.start_flusher();
  remote.record_login("bob", 1'700'000'000);
  remote.record_login("bob", 1'700'000'000);  // refused at the auth side, ignored here
  auto recorded = [&] {
    std::lock_guard lock(fake.mu);
    return fake.recorded.size();
  };
  EXPECT_TRUE(ipc_test::eventually([&] { return recorded() >= 1; }));
  // The second is refused at the auth side (no second login to record).
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(recorded(), 1u);
}

// Login records are not sent on their own: they go ahead of the next
// request (one sendmmsg, one wake-up of the auth process), or with the
// flusher within kIpcRecordFlush when no request comes, or at once when
// kIpcMaxQueuedRecords are waiting.
TEST(IpcRemote, LoginRecordsGoAheadOfTheNextRequestOrWithTheFlusher) {
  FakeAuthenticator fake;
  AuthService service(fake);
  ServedChannels served(service, 1);
  RemoteAuthenticator remote(served.worker_fds(), 5s);
  auto recorded = [&] {
    std::lock_guard lock(fake.mu);
    return fake.recorded.size();
  };
  auto login = [&] {
    auto ex = remote.start_sasl("TWO-STEP", kTls);
    EXPECT_EQ(ex->step(std::nullopt).kind, pop3::SaslReply::Kind::challenge);
    EXPECT_TRUE(ex->step(kFakePassword).succeeded());
  };
  login();
  remote.record_login("bob", 1'700'000'000);
  std::this_thread::sleep_for(limits::kIpcRecordFlush * 3);
  EXPECT_EQ(recorded(), 0u);  // no flusher, no request: still queued
  login();                    // the record goes ahead of this login's first request
  EXPECT_TRUE(ipc_test::eventually([&] { return recorded() == 1; }));
  remote.start_flusher();
  remote.record_login("bob", 1'700'000'001);
  const auto queued = std::chrono::steady_clock::now();
  EXPECT_TRUE(ipc_test::eventually([&] { return recorded() == 2; }));
  EXPECT_LT(std::chrono::steady_clock::now() - queued, limits::kIpcRecordFlush * 20);
}

TEST(IpcRemote, AFullQueueOfLoginRecordsGoesAtOnce) {
  FakeAuthenticator fake;
  AuthServiceLimits lim;
  lim.pending_login_records = 2 * limits::kIpcMaxQueuedRecords;
  AuthService service(fake, lim);
  ServedChannels served(service, 1);
  RemoteAuthenticator remote(served.worker_fds(), 5s);
  for (std::size_t i = 0; i < limits::kIpcMaxQueuedRecords; ++i) {
    auto ex = remote.start_sasl("TWO-STEP", kTls);
    EXPECT_EQ(ex->step(std::nullopt).kind, pop3::SaslReply::Kind::challenge);
    EXPECT_TRUE(ex->step(kFakePassword).succeeded());
  }
  for (std::size_t i = 0; i < limits::kIpcMaxQueuedRecords; ++i) {
    remote.record_login("bob", 1'700'000'000 + static_cast<std::int64_t>(i));
  }
  // No flusher and no further request: the queue went when it was full.
  EXPECT_TRUE(ipc_test::eventually([&] {
    std::lock_guard lock(fake.mu);
    return fake.recorded.size() == limits::kIpcMaxQueuedRecords;
  }));
}

// An address key longer than the wire's bound (no IP key is) is cut, not a
// reason to fail the login.
TEST(IpcRemote, OverlongAddressIsCut) {
  FakeAuthenticator fake;
  AuthService service(fake);
  ServedChannels served(service, 1);
  RemoteAuthenticator remote(served.worker_fds(), 5s);
  const std::string address(kMaxAddress + 10, 'a');
  EXPECT_TRUE(remote.verify_plain("bob", kFakePassword, pop3::AuthContext{false, address}).ok);
  EXPECT_EQ(fake.last_address, address.substr(0, kMaxAddress));
}

TEST(IpcRemote, DeadAuthSideIsTemporaryAtOnce) {
  FakeAuthenticator fake;
  AuthService service(fake);
  ServedChannels served(service, 2);
  RemoteAuthenticator remote(served.worker_fds(), 5s);
  EXPECT_TRUE(remote.verify_plain("bob", kFakePassword, kClear).ok);
  served.stop();  // the auth process died
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    pop3::AuthResult r = remote.verify_plain("bob", kFakePassword, kClear);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.failure, pop3::AuthFailure::temporary);
  }
  auto ex = remote.start_sasl("TWO-STEP", kTls);
  ASSERT_NE(ex, nullptr);
  pop3::SaslReply r = ex->step(std::nullopt);
  EXPECT_TRUE(r.failed());
  EXPECT_EQ(r.result.failure, pop3::AuthFailure::temporary);
  ex.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);  // no timeout waited
  EXPECT_EQ(remote.live_channels(), 0u);
}

TEST(IpcRemote, SilentAuthSideIsTemporaryWithinTheTimeout) {
  Pair p;
  RemoteAuthenticator remote(one(std::move(p.worker)), 150ms, std::vector<pop3::SaslMechanism>{});
  const auto t0 = std::chrono::steady_clock::now();
  pop3::AuthResult r = remote.verify_apop("bob", kTs, kFakeSecret, kClear);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.failure, pop3::AuthFailure::temporary);
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 1s);
  EXPECT_EQ(remote.live_channels(), 1u);  // a timeout does not close the channel
}

// The answer to a request that timed out arrives later: the next call skips
// it by its id and gets its own.
TEST(IpcRemote, LateReplyIsSkipped) {
  FakeAuthenticator fake;
  Pair p;
  std::thread auth([&] {
    std::string buf;
    DecodedRequest first = read_request(p.auth.get(), buf);
    std::this_thread::sleep_for(300ms);
    send_reply(p.auth.get(), first.id, fake.verdict("bob", true));
    DecodedRequest second = read_request(p.auth.get(), buf);
    send_reply(p.auth.get(), second.id, fake.verdict("bob", false));
  });
  RemoteAuthenticator remote(one(std::move(p.worker)), 150ms, std::vector<pop3::SaslMechanism>{});
  EXPECT_EQ(remote.verify_plain("bob", kFakePassword, kClear).failure,
            pop3::AuthFailure::temporary);
  std::this_thread::sleep_for(200ms);  // the late "ok" is in the socket now
  pop3::AuthResult r = remote.verify_plain("bob", "wrong", kClear);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.failure, pop3::AuthFailure::credentials);  // its own answer, not the stale success
  auth.join();
}

TEST(IpcRemote, MalformedOrUnexpectedReplyClosesTheChannel) {
  Pair p1, p2;
  std::thread auth([&] {
    std::string buf;
    DecodedRequest a = read_request(p1.auth.get(), buf);
    const std::string junk = "\x02\x82garbage";
    ::send(p1.auth.get(), junk.data(), junk.size(), MSG_NOSIGNAL);
    DecodedRequest b = read_request(p2.auth.get(), buf);
    send_reply(p2.auth.get(), b.id, MechanismList{});  // no answer to verify_plain
    (void)a;
  });
  std::vector<UniqueFd> fds;
  fds.push_back(std::move(p1.worker));
  RemoteAuthenticator remote(std::move(fds), 2s, std::vector<pop3::SaslMechanism>{});
  EXPECT_EQ(remote.verify_plain("bob", "x", kClear).failure, pop3::AuthFailure::temporary);
  EXPECT_EQ(remote.live_channels(), 0u);
  remote.replace_channels(one(std::move(p2.worker)));
  EXPECT_EQ(remote.verify_plain("bob", "x", kClear).failure, pop3::AuthFailure::temporary);
  EXPECT_EQ(remote.live_channels(), 0u);
  auth.join();
}

TEST(IpcRemote, RateLimitIsTemporary) {
  FakeAuthenticator fake;
  AuthServiceLimits lim;
  lim.rate = 0.001;
  lim.burst = 2;
  AuthService service(fake, lim);
  ServedChannels served(service, 1);
  RemoteAuthenticator remote(served.worker_fds(), 5s);  // the mechanisms request takes a token
  EXPECT_TRUE(remote.verify_plain("bob", kFakePassword, kClear).ok);
  pop3::AuthResult r = remote.verify_plain("bob", kFakePassword, kClear);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.failure, pop3::AuthFailure::temporary);
  EXPECT_EQ(remote.live_channels(), 1u);  // an answer, not a broken channel
}

TEST(IpcRemote, FourThreadsOverTwoChannels) {
  FakeAuthenticator fake;
  AuthService service(fake);
  ServedChannels served(service, 2);
  RemoteAuthenticator remote(served.worker_fds(), 5s);
  constexpr int kPerThread = 500;
  std::atomic<int> right{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const bool good = (i + t) % 2 == 0;
        const std::string user = "u" + std::to_string(t);
        pop3::AuthResult r = remote.verify_apop(user, kTs, good ? kFakeSecret : "nope", kClear);
        if (r.ok == good && (!good || r.mail_location == "maildir:/var/mail/" + user)) ++right;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(right, 4 * kPerThread);
  EXPECT_EQ(fake.calls, 4 * kPerThread);
  EXPECT_EQ(fake.last_address, "192.0.2.7");
}

// replace_channels while a call waits on a silent auth process: the call
// fails as temporary at once, and later calls use the new channels.
TEST(IpcRemote, ReplaceChannelsFailsCallsInFlight) {
  Pair silent;
  RemoteAuthenticator remote(one(std::move(silent.worker)), 10s,
                             std::vector<pop3::SaslMechanism>{});
  pop3::AuthResult in_flight;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread caller([&] { in_flight = remote.verify_plain("bob", kFakePassword, kClear); });
  std::this_thread::sleep_for(100ms);
  FakeAuthenticator fake;
  AuthService service(fake);
  ServedChannels served(service, 2);
  remote.replace_channels(served.worker_fds());
  caller.join();
  EXPECT_EQ(in_flight.failure, pop3::AuthFailure::temporary);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(remote.live_channels(), 2u);
  EXPECT_TRUE(remote.verify_plain("bob", kFakePassword, kClear).ok);
  ASSERT_TRUE(remote.fetch_mechanisms().ok());
  EXPECT_EQ(remote.sasl_mechanisms().size(), 2u);
  EXPECT_TRUE(remote.hello(4).ok());
  EXPECT_EQ(service.worker_id(), 4u);
}

// All channels busy: a call waits for one (within its timeout), then runs.
TEST(IpcRemote, BusyChannelsAreWaitedFor) {
  Pair p;
  std::thread auth([&] {
    std::string buf;
    for (int i = 0; i < 2; ++i) {
      DecodedRequest d = read_request(p.auth.get(), buf);
      std::this_thread::sleep_for(100ms);
      send_reply(p.auth.get(), d.id, pop3::AuthResult{});
    }
  });
  RemoteAuthenticator remote(one(std::move(p.worker)), 2s, std::vector<pop3::SaslMechanism>{});
  pop3::AuthResult a, b;
  std::thread t1([&] { a = remote.verify_plain("x", "y", kClear); });
  std::thread t2([&] { b = remote.verify_plain("x", "y", kClear); });
  t1.join();
  t2.join();
  auth.join();
  EXPECT_EQ(a.failure, pop3::AuthFailure::none);  // the server's (default) answer, not temporary
  EXPECT_EQ(b.failure, pop3::AuthFailure::none);
}

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Not a check: the cost of one verify_apop round trip (both processes' CPU:
// here one process), run with --gtest_also_run_disabled_tests.
TEST(IpcRemote, DISABLED_MeasureApopRoundTrip) {
  auth::MemoryCredentialStore store;
  ASSERT_TRUE(store.add("mrose", "tanstaaf").ok());
  auth::StoreAuthenticator real(store);
  FakeAuthenticator fake;
  for (pop3::Authenticator* a :
       {static_cast<pop3::Authenticator*>(&fake), static_cast<pop3::Authenticator*>(&real)}) {
    AuthService service(*a);
    ServedChannels served(service, 1);
    RemoteAuthenticator remote(served.worker_fds(), 5s);
    constexpr int kN = 10'000;
    const std::string digest =
        a == &fake ? std::string(kFakeSecret) : "c4c9334bac560ecc979e58001b3e22fb";
    const std::string user = a == &fake ? "bob" : "mrose";
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_seconds();
    int ok = 0;
    for (int i = 0; i < kN; ++i) ok += remote.verify_apop(user, kTs, digest, kClear).ok ? 1 : 0;
    const double cpu = cpu_seconds() - c0;
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(ok, kN);
    // The same calls directly, without IPC.
    const double d0 = cpu_seconds();
    for (int i = 0; i < kN; ++i) ok += a->verify_apop(user, kTs, digest, kClear).ok ? 1 : 0;
    const double direct = cpu_seconds() - d0;
    std::printf(
        "%s: %d verify_apop over IPC: %.1f us wall, %.1f us CPU each; direct call %.1f us CPU "
        "each\n",
        a == &fake ? "fake authenticator" : "StoreAuthenticator(memory)", kN, wall / kN * 1e6,
        cpu / kN * 1e6, direct / kN * 1e6);
  }
}

}  // namespace
}  // namespace apop::ipc
