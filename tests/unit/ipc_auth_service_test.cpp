#include "ipc/auth_service.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <string>
#include <thread>

#include "auth/authenticator.hpp"
#include "auth/digest.hpp"
#include "auth/memory_credential_store.hpp"
#include "ipc_support.hpp"

namespace apop::ipc {
namespace {

using test::FakeAuthenticator;
using test::kFakePassword;
using test::kFakeSecret;

std::string request(const Request& r, std::uint32_t id = 1) {
  std::string out;
  EXPECT_TRUE(encode_request(id, r, out).ok());
  return out;
}

// handle() and the decoded reply (a failed decode aborts the test).
Reply ask(AuthService& s, const Request& r, std::uint32_t id = 1) {
  const std::string req = request(r, id);
  AuthService::Handled h = s.handle(req);
  EXPECT_FALSE(h.close);
  auto d = decode_reply(h.reply);
  EXPECT_TRUE(d.ok());
  if (!d) return ErrorReply{};
  EXPECT_EQ(d->id, id);
  return d->body;
}

bool is_error(const Reply& r, ErrorCode c) {
  const auto* e = std::get_if<ErrorReply>(&r);
  return e != nullptr && e->code == c;
}

TEST(IpcAuthService, VerifyOverTheRealStoreAuthenticator) {
  auth::MemoryCredentialStore store;
  ASSERT_TRUE(store.add("mrose", "tanstaaf").ok());
  ASSERT_TRUE(store.set_mail_location("mrose", std::string("mbox:/var/mail/mrose")).ok());
  auth::StoreAuthenticator real(store);
  AuthService s(real);
  const std::string ts = "<1896.697170952@dbc.mtview.ca.us>";
  Reply ok =
      ask(s, VerifyApop{"mrose", ts, "c4c9334bac560ecc979e58001b3e22fb", false, "192.0.2.7"});
  ASSERT_TRUE(std::holds_alternative<pop3::AuthResult>(ok));
  EXPECT_TRUE(std::get<pop3::AuthResult>(ok).ok);
  EXPECT_EQ(std::get<pop3::AuthResult>(ok).mail_location, "mbox:/var/mail/mrose");
  Reply wrong =
      ask(s, VerifyApop{"mrose", ts, "c4c9334bac560ecc979e58001b3e22fc", false, "192.0.2.7"});
  ASSERT_TRUE(std::holds_alternative<pop3::AuthResult>(wrong));
  EXPECT_FALSE(std::get<pop3::AuthResult>(wrong).ok);
  EXPECT_EQ(std::get<pop3::AuthResult>(wrong).failure, pop3::AuthFailure::credentials);
  Reply plain = ask(s, VerifyPlain{"mrose", "tanstaaf", false, ""});
  EXPECT_TRUE(std::get<pop3::AuthResult>(plain).ok);
  Reply mechs = ask(s, Mechanisms{});
  ASSERT_TRUE(std::holds_alternative<MechanismList>(mechs));
  EXPECT_FALSE(std::get<MechanismList>(mechs).mechanisms.empty());
}

TEST(IpcAuthService, MalformedRequestsCloseTheChannel) {
  FakeAuthenticator fake;
  AuthService s(fake);
  std::string req = request(VerifyPlain{"bob", kFakePassword, false, ""}, 77);
  req.push_back('x');
  AuthService::Handled h = s.handle(req);
  EXPECT_TRUE(h.close);
  auto d = decode_reply(h.reply);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->id, 77u);  // the header was readable
  EXPECT_TRUE(is_error(d->body, ErrorCode::malformed));
  EXPECT_EQ(fake.calls, 0);
  h = s.handle("");
  EXPECT_TRUE(h.close);
  ASSERT_TRUE(decode_reply(h.reply).ok());
  EXPECT_EQ(decode_reply(h.reply)->id, 0u);
  // A reply type sent as a request.
  std::string ack;
  ASSERT_TRUE(encode_reply(5, Ack{}, ack).ok());
  EXPECT_TRUE(s.handle(ack).close);
}

TEST(IpcAuthService, NoReplyCarriesTheSecret) {
  FakeAuthenticator fake;
  AuthService s(fake);
  for (const Request& r : std::vector<Request>{
           VerifyApop{"bob", "<t@h>", kFakeSecret, false, ""},
           VerifyApop{"bob", "<t@h>", "x", false, ""}, VerifyPlain{"bob", kFakePassword, false, ""},
           Mechanisms{}, SaslStart{1, "TWO-STEP", std::nullopt, false, ""},
           SaslStep{1, kFakePassword}}) {
    const std::string req = request(r);
    const std::string reply = s.handle(req).reply;
    EXPECT_EQ(reply.find(kFakeSecret), std::string::npos);
    EXPECT_EQ(reply.find(kFakePassword), std::string::npos);
  }
}

TEST(IpcAuthService, MechanismListLeavesOutNamesTheWireRefuses) {
  FakeAuthenticator fake;
  AuthService s(fake);
  Reply r = ask(s, Mechanisms{});
  const auto& list = std::get<MechanismList>(r).mechanisms;
  ASSERT_EQ(list.size(), 2u);  // "lower-case" is no RFC 4422 name
  EXPECT_EQ(list[0].name, "TWO-STEP");
  EXPECT_TRUE(list[1].plaintext);
}

TEST(IpcAuthService, RateLimitAnswersExcessRequestsButNotSaslEnd) {
  FakeAuthenticator fake;
  AuthServiceLimits lim;
  lim.rate = 0.001;
  lim.burst = 2;
  AuthService s(fake, lim);
  EXPECT_TRUE(std::holds_alternative<pop3::AuthResult>(ask(s, VerifyPlain{"bob", "x", false, ""})));
  EXPECT_TRUE(std::holds_alternative<pop3::AuthResult>(ask(s, VerifyPlain{"bob", "x", false, ""})));
  EXPECT_TRUE(is_error(ask(s, VerifyPlain{"bob", "x", false, ""}), ErrorCode::rate_limited));
  EXPECT_TRUE(is_error(ask(s, Mechanisms{}), ErrorCode::rate_limited));
  EXPECT_TRUE(std::holds_alternative<Ack>(ask(s, SaslEnd{1})));
  EXPECT_EQ(fake.calls, 2);
}

// A compromised worker does not await the failure delays: failed checks have
// their own budget, and successes do not spend it.
TEST(IpcAuthService, FailedChecksHaveTheirOwnBudget) {
  FakeAuthenticator fake;
  AuthServiceLimits lim;
  lim.failure_rate = 0.001;
  lim.failure_burst = 2;
  AuthService s(fake, lim);
  for (int i = 0; i < 5; ++i)
    EXPECT_TRUE(
        std::get<pop3::AuthResult>(ask(s, VerifyPlain{"bob", kFakePassword, false, ""})).ok);
  EXPECT_FALSE(std::get<pop3::AuthResult>(ask(s, VerifyPlain{"bob", "guess 1", false, ""})).ok);
  // A failed SASL exchange counts too.
  ask(s, SaslStart{1, "TWO-STEP", std::nullopt, false, ""});
  EXPECT_TRUE(std::get<pop3::SaslReply>(ask(s, SaslStep{1, "guess 2"})).failed());
  const int calls = fake.calls;
  EXPECT_TRUE(is_error(ask(s, VerifyPlain{"bob", "guess 3", false, ""}), ErrorCode::rate_limited));
  EXPECT_TRUE(
      is_error(ask(s, VerifyApop{"bob", "<t@h>", "guess 4", false, ""}), ErrorCode::rate_limited));
  EXPECT_TRUE(
      is_error(ask(s, SaslStart{2, "TWO-STEP", std::nullopt, false, ""}), ErrorCode::rate_limited));
  EXPECT_EQ(fake.calls, calls);  // nothing verified
  EXPECT_TRUE(
      std::holds_alternative<MechanismList>(ask(s, Mechanisms{})));  // other requests still run
}

TEST(IpcAuthService, RateRefills) {
  FakeAuthenticator fake;
  AuthServiceLimits lim;
  lim.rate = 1000;  // one token a millisecond
  lim.burst = 1;
  AuthService s(fake, lim);
  EXPECT_TRUE(std::holds_alternative<MechanismList>(ask(s, Mechanisms{})));
  EXPECT_TRUE(is_error(ask(s, Mechanisms{}), ErrorCode::rate_limited));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(std::holds_alternative<MechanismList>(ask(s, Mechanisms{})));
}

TEST(IpcAuthService, SaslExchangeRunsAndIsDropped) {
  FakeAuthenticator fake;
  AuthService s(fake);
  Reply first = ask(s, SaslStart{5, "TWO-STEP", std::nullopt, true, "192.0.2.1"});
  ASSERT_TRUE(std::holds_alternative<pop3::SaslReply>(first));
  EXPECT_EQ(std::get<pop3::SaslReply>(first).kind, pop3::SaslReply::Kind::challenge);
  EXPECT_EQ(std::get<pop3::SaslReply>(first).text, "Zmlyc3Q=");
  EXPECT_EQ(s.sasl_exchanges(), 1u);
  // The same id again while it runs: refused.
  EXPECT_TRUE(
      is_error(ask(s, SaslStart{5, "TWO-STEP", std::nullopt, true, ""}), ErrorCode::refused));
  Reply done = ask(s, SaslStep{5, kFakePassword});
  ASSERT_TRUE(std::holds_alternative<pop3::SaslReply>(done));
  EXPECT_TRUE(std::get<pop3::SaslReply>(done).succeeded());
  EXPECT_EQ(std::get<pop3::SaslReply>(done).user, "bob");
  EXPECT_EQ(s.sasl_exchanges(), 0u);
  EXPECT_EQ(fake.live_exchanges, 0);
  // Done: a further step is refused.
  EXPECT_TRUE(is_error(ask(s, SaslStep{5, kFakePassword}), ErrorCode::refused));
  // Malformed ends it too.
  ask(s, SaslStart{6, "TWO-STEP", std::nullopt, true, ""});
  Reply bad = ask(s, SaslStep{6, "bad base64"});
  EXPECT_EQ(std::get<pop3::SaslReply>(bad).kind, pop3::SaslReply::Kind::malformed);
  EXPECT_EQ(s.sasl_exchanges(), 0u);
  // Unknown mechanism at the auth side: refused, nothing kept.
  EXPECT_TRUE(is_error(ask(s, SaslStart{7, "PLAIN", std::nullopt, true, ""}), ErrorCode::refused));
  EXPECT_EQ(s.sasl_exchanges(), 0u);
}

TEST(IpcAuthService, SaslExchangesAreBoundedAndExpire) {
  FakeAuthenticator fake;
  AuthServiceLimits lim;
  lim.max_sasl_exchanges = 2;
  lim.sasl_idle = std::chrono::milliseconds(30);
  AuthService s(fake, lim);
  ask(s, SaslStart{1, "TWO-STEP", std::nullopt, false, ""});
  ask(s, SaslStart{2, "TWO-STEP", std::nullopt, false, ""});
  EXPECT_TRUE(
      is_error(ask(s, SaslStart{3, "TWO-STEP", std::nullopt, false, ""}), ErrorCode::refused));
  EXPECT_TRUE(std::holds_alternative<Ack>(ask(s, SaslEnd{1})));
  EXPECT_TRUE(std::holds_alternative<Ack>(ask(s, SaslEnd{1})));  // twice: still fine
  EXPECT_EQ(s.sasl_exchanges(), 1u);
  EXPECT_TRUE(std::holds_alternative<pop3::SaslReply>(
      ask(s, SaslStart{3, "TWO-STEP", std::nullopt, false, ""})));
  EXPECT_EQ(fake.live_exchanges, 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  // Both idle past the limit: the next start sweeps them.
  EXPECT_TRUE(std::holds_alternative<pop3::SaslReply>(
      ask(s, SaslStart{4, "TWO-STEP", std::nullopt, false, ""})));
  EXPECT_EQ(s.sasl_exchanges(), 1u);
  EXPECT_EQ(fake.live_exchanges, 1);
  EXPECT_TRUE(is_error(ask(s, SaslStep{2, kFakePassword}), ErrorCode::refused));
}

TEST(IpcAuthService, RecordLoginOnlyAfterALoginOfThatUser) {
  FakeAuthenticator fake;
  AuthService s(fake);
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  // A hostile worker moving someone's last login: refused.
  EXPECT_TRUE(is_error(ask(s, RecordLogin{"carol", now}), ErrorCode::refused));
  // A failed login gives no right either.
  ask(s, VerifyPlain{"carol", "wrong", false, ""});
  EXPECT_TRUE(is_error(ask(s, RecordLogin{"carol", now}), ErrorCode::refused));
  ask(s, VerifyPlain{"carol", kFakePassword, false, ""});
  EXPECT_TRUE(is_error(ask(s, RecordLogin{"dave", now}), ErrorCode::refused));
  EXPECT_TRUE(std::holds_alternative<Ack>(ask(s, RecordLogin{"carol", now})));
  EXPECT_TRUE(is_error(ask(s, RecordLogin{"carol", now}), ErrorCode::refused));  // once per login
  // A SASL login of bob; a time far from the auth process's clock is replaced by it.
  ask(s, SaslStart{1, "TWO-STEP", std::nullopt, false, ""});
  ask(s, SaslStep{1, kFakePassword});
  EXPECT_TRUE(std::holds_alternative<Ack>(ask(s, RecordLogin{"bob", now + 86400 * 365})));
  ASSERT_EQ(fake.recorded.size(), 2u);
  EXPECT_EQ(fake.recorded[0], std::make_pair(std::string("carol"), now));
  EXPECT_EQ(fake.recorded[1].first, "bob");
  EXPECT_LE(fake.recorded[1].second, now + 5);
}

// ---- shared maildrop locks (held by the auth process for the worker) -------

bool lock_answer(const Reply& r, LockOutcome o) {
  const auto* l = std::get_if<LockStatus>(&r);
  return l != nullptr && l->outcome == o;
}

TEST(IpcAuthService, LockOnlyAfterALoginOfThatUserOncePerLogin) {
  FakeAuthenticator fake;
  test::FakeMaildropLocks locks;
  AuthService s(fake, {}, &locks);
  // A hostile worker locking someone out everywhere: refused.
  EXPECT_TRUE(is_error(ask(s, LockMaildrop{"carol"}), ErrorCode::refused));
  ask(s, VerifyPlain{"carol", "wrong", false, ""});
  EXPECT_TRUE(is_error(ask(s, LockMaildrop{"carol"}), ErrorCode::refused));
  ask(s, VerifyPlain{"carol", kFakePassword, false, ""});
  EXPECT_TRUE(is_error(ask(s, LockMaildrop{"dave"}), ErrorCode::refused));
  EXPECT_TRUE(lock_answer(ask(s, LockMaildrop{"carol"}), LockOutcome::locked));
  EXPECT_TRUE(is_error(ask(s, LockMaildrop{"carol"}), ErrorCode::refused));  // once per login
  EXPECT_EQ(locks.count("carol"), 1u);
  EXPECT_EQ(s.maildrop_locks(), 1u);
  // The session's record_login still works after its lock (the same login).
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  EXPECT_TRUE(std::holds_alternative<Ack>(ask(s, RecordLogin{"carol", now})));
  EXPECT_TRUE(std::holds_alternative<Ack>(ask(s, UnlockMaildrop{"carol"})));
  EXPECT_EQ(locks.count("carol"), 0u);
  EXPECT_EQ(s.maildrop_locks(), 0u);
  // Two sessions of one user on this worker: two logins, two locks (they stack).
  ask(s, VerifyPlain{"bob", kFakePassword, false, ""});
  ask(s, SaslStart{1, "TWO-STEP", std::nullopt, false, ""});
  ask(s, SaslStep{1, kFakePassword});  // "bob" through SASL
  EXPECT_TRUE(lock_answer(ask(s, LockMaildrop{"bob"}), LockOutcome::locked));
  EXPECT_TRUE(std::holds_alternative<Ack>(ask(s, RecordLogin{"bob", now})));
  EXPECT_TRUE(lock_answer(ask(s, LockMaildrop{"bob"}), LockOutcome::locked));
  EXPECT_EQ(locks.count("bob"), 2u);
}

TEST(IpcAuthService, UnlockOnlyWhatThisWorkerTook) {
  FakeAuthenticator fake;
  test::FakeMaildropLocks locks;
  AuthService one(fake, {}, &locks), two(fake, {}, &locks);
  ask(one, VerifyPlain{"carol", kFakePassword, false, ""});
  ASSERT_TRUE(lock_answer(ask(one, LockMaildrop{"carol"}), LockOutcome::locked));
  // Another worker cannot give back the first one's lock.
  EXPECT_TRUE(is_error(ask(two, UnlockMaildrop{"carol"}), ErrorCode::refused));
  EXPECT_EQ(locks.count("carol"), 1u);
  EXPECT_TRUE(std::holds_alternative<Ack>(ask(one, UnlockMaildrop{"carol"})));
  // Nor can the first one give it back twice (it would be another's stacked lock).
  EXPECT_TRUE(is_error(ask(one, UnlockMaildrop{"carol"}), ErrorCode::refused));
  EXPECT_TRUE(is_error(ask(one, UnlockMaildrop{"nobody"}), ErrorCode::refused));
  EXPECT_EQ(locks.total(), 0u);
}

TEST(IpcAuthService, LockOutcomesAndTheirCost) {
  FakeAuthenticator fake;
  test::FakeMaildropLocks locks;
  locks.elsewhere.insert("carol");
  AuthService s(fake, {}, &locks);
  ask(s, VerifyPlain{"carol", kFakePassword, false, ""});
  EXPECT_TRUE(lock_answer(ask(s, LockMaildrop{"carol"}), LockOutcome::in_use));
  EXPECT_EQ(s.maildrop_locks(), 0u);  // nothing held, nothing to give back
  EXPECT_TRUE(is_error(ask(s, UnlockMaildrop{"carol"}), ErrorCode::refused));
  locks.down = true;
  ask(s, VerifyPlain{"bob", kFakePassword, false, ""});
  EXPECT_TRUE(lock_answer(ask(s, LockMaildrop{"bob"}), LockOutcome::temporary));
  EXPECT_EQ(s.maildrop_locks(), 0u);
  EXPECT_EQ(locks.total(), 0u);
}

TEST(IpcAuthService, WithoutSharedLocksTheyAreRefused) {
  FakeAuthenticator fake;
  AuthService s(fake);
  ask(s, VerifyPlain{"carol", kFakePassword, false, ""});
  EXPECT_TRUE(is_error(ask(s, LockMaildrop{"carol"}), ErrorCode::refused));
  EXPECT_TRUE(is_error(ask(s, UnlockMaildrop{"carol"}), ErrorCode::refused));
}

TEST(IpcAuthService, LocksPerWorkerAreBounded) {
  FakeAuthenticator fake;
  test::FakeMaildropLocks locks;
  AuthServiceLimits lim;
  lim.max_maildrop_locks = 3;
  AuthService s(fake, lim, &locks);
  for (int i = 0; i < 5; ++i)
    ask(s, VerifyPlain{"u" + std::to_string(i), kFakePassword, false, ""});
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(lock_answer(ask(s, LockMaildrop{"u" + std::to_string(i)}), LockOutcome::locked));
  }
  EXPECT_TRUE(is_error(ask(s, LockMaildrop{"u3"}), ErrorCode::refused));
  EXPECT_EQ(locks.total(), 3u);
  // One given back: room for one more.
  EXPECT_TRUE(std::holds_alternative<Ack>(ask(s, UnlockMaildrop{"u0"})));
  EXPECT_TRUE(lock_answer(ask(s, LockMaildrop{"u3"}), LockOutcome::locked));
  EXPECT_TRUE(is_error(ask(s, LockMaildrop{"u4"}), ErrorCode::refused));
  EXPECT_EQ(s.maildrop_locks(), 3u);
}

TEST(IpcAuthService, UnlockIsNotRateLimited) {
  FakeAuthenticator fake;
  test::FakeMaildropLocks locks;
  AuthServiceLimits lim;
  lim.rate = 0.001;
  lim.burst = 2;
  AuthService s(fake, lim, &locks);
  ask(s, VerifyPlain{"carol", kFakePassword, false, ""});
  ASSERT_TRUE(lock_answer(ask(s, LockMaildrop{"carol"}), LockOutcome::locked));
  EXPECT_TRUE(is_error(ask(s, Mechanisms{}), ErrorCode::rate_limited));
  EXPECT_TRUE(std::holds_alternative<Ack>(ask(s, UnlockMaildrop{"carol"})));
  EXPECT_EQ(locks.total(), 0u);
}

// The worker stopped waiting (kIpcReplyTimeout) before the database
// answered: a late lock is given back, not left held for a worker that does
// not know it holds it.
TEST(IpcAuthService, ALockGrantedTooLateIsGivenBack) {
  FakeAuthenticator fake;
  test::FakeMaildropLocks locks;
  locks.delay = std::chrono::milliseconds(50);
  AuthServiceLimits lim;
  lim.lock_answer_within = std::chrono::milliseconds(10);
  AuthService s(fake, lim, &locks);
  ask(s, VerifyPlain{"carol", kFakePassword, false, ""});
  EXPECT_TRUE(lock_answer(ask(s, LockMaildrop{"carol"}), LockOutcome::temporary));
  EXPECT_EQ(locks.total(), 0u);
  EXPECT_EQ(s.maildrop_locks(), 0u);
}

TEST(IpcAuthService, LocksAreReleasedWithTheService) {
  FakeAuthenticator fake;
  test::FakeMaildropLocks locks;
  {
    AuthService s(fake, {}, &locks);
    ask(s, VerifyPlain{"carol", kFakePassword, false, ""});
    ask(s, VerifyPlain{"carol", kFakePassword, false, ""});
    ask(s, VerifyPlain{"bob", kFakePassword, false, ""});
    ask(s, LockMaildrop{"carol"});
    ask(s, LockMaildrop{"carol"});
    ask(s, LockMaildrop{"bob"});
    EXPECT_EQ(locks.total(), 3u);
  }
  EXPECT_EQ(locks.total(), 0u);
}

// A worker that dies (SIGKILL) closes every channel: the auth process gives
// back every lock it held, and only when the last channel is gone.
TEST(IpcAuthService, LocksAreReleasedWhenTheWorkersLastChannelCloses) {
  FakeAuthenticator fake;
  test::FakeMaildropLocks locks;
  AuthService s(fake, {}, &locks);
  test::ServedChannels served(s, 2);
  auto fds = served.worker_fds();
  auto call = [](int fd, const Request& r, std::uint32_t id) {
    const std::string req = request(r, id);
    EXPECT_EQ(::send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
    char buf[8192];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    EXPECT_GT(n, 0);
    auto d = decode_reply(std::string_view(buf, n > 0 ? static_cast<std::size_t>(n) : 0));
    EXPECT_TRUE(d.ok());
    return d ? d->body : Reply{ErrorReply{}};
  };
  call(fds[0].get(), VerifyPlain{"carol", kFakePassword, false, ""}, 1);
  EXPECT_TRUE(lock_answer(call(fds[1].get(), LockMaildrop{"carol"}, 2), LockOutcome::locked));
  call(fds[1].get(), VerifyPlain{"bob", kFakePassword, false, ""}, 3);
  EXPECT_TRUE(lock_answer(call(fds[0].get(), LockMaildrop{"bob"}, 4), LockOutcome::locked));
  EXPECT_EQ(locks.total(), 2u);
  fds[0].reset();  // one channel gone: the worker may still hold its sessions
  EXPECT_TRUE(ipc_test::eventually([&] { return served.ends().size() == 1; }));
  EXPECT_EQ(locks.total(), 2u);
  fds.clear();  // the worker is dead
  EXPECT_TRUE(ipc_test::eventually([&] { return served.ends().size() == 2; }));
  EXPECT_EQ(locks.total(), 0u);
  EXPECT_EQ(s.maildrop_locks(), 0u);
  served.stop();
}

// serve() over a real socket pair: answers, then closes on a violation.
TEST(IpcAuthService, ServeAnswersAndClosesOnViolation) {
  FakeAuthenticator fake;
  AuthService s(fake);
  test::ServedChannels served(s, 1);
  auto fds = served.worker_fds();
  const int fd = fds[0].get();
  const std::string req = request(Hello{kProtocolVersion, 12}, 3);
  ASSERT_EQ(::send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  char buf[8192];
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  auto d = decode_reply(std::string_view(buf, static_cast<std::size_t>(n)));
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(std::holds_alternative<Ack>(d->body));
  EXPECT_EQ(s.worker_id(), 12u);
  // An oversized packet: no answer, the channel is shut down.
  const std::string huge(limits::kMaxIpcMessage + 1, '\1');
  ASSERT_EQ(::send(fd, huge.data(), huge.size(), 0), static_cast<ssize_t>(huge.size()));
  EXPECT_EQ(::recv(fd, buf, sizeof buf, 0), 0);
  served.stop();
  ASSERT_EQ(served.ends().size(), 1u);
  EXPECT_EQ(served.ends()[0], ServeEnd::violation);
}

TEST(IpcAuthService, ServeAnswersMalformedOnceThenCloses) {
  FakeAuthenticator fake;
  AuthService s(fake);
  test::ServedChannels served(s, 1);
  auto fds = served.worker_fds();
  const int fd = fds[0].get();
  const std::string junk("\x02\x03\x00\x00\x00\x00\x00\x09garbage", 15);
  ASSERT_GT(::send(fd, junk.data(), junk.size(), 0), 0);
  char buf[8192];
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  auto d = decode_reply(std::string_view(buf, static_cast<std::size_t>(n)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->id, 9u);
  EXPECT_TRUE(is_error(d->body, ErrorCode::malformed));
  EXPECT_EQ(::recv(fd, buf, sizeof buf, 0), 0);
  fds.clear();
  served.stop();
  EXPECT_EQ(served.ends()[0], ServeEnd::violation);
}

}  // namespace
}  // namespace apop::ipc
