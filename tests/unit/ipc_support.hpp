// Shared by the ipc unit tests: a recording fake Authenticator (verdicts
// chosen by the test, a "secret" that must never appear in a reply) and the
// auth side served on threads over socketpair(AF_UNIX, SOCK_SEQPACKET).
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/posix_fd.hpp"
#include "ipc/auth_service.hpp"
#include "pop3/interfaces.hpp"
#include "pop3/maildrop_locks.hpp"

namespace apop {
namespace ipc_test {
// record_login is sent, not awaited: true once `pred` holds (within 2 s).
template <typename Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 200; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}
}  // namespace ipc_test
}  // namespace apop

namespace apop::ipc::test {

// What a fake account knows and must never send: a fuzzer and the tests
// look for it in every reply.
inline constexpr std::string_view kFakeSecret = "s3cret-never-on-the-wire";
inline constexpr std::string_view kFakePassword = "fake password";

// The fake's SASL: "TWO-STEP" sends challenge "Zmlyc3Q=" then succeeds
// when the second response is the password; anything else fails.
class FakeSasl final : public pop3::SaslSession {
 public:
  explicit FakeSasl(std::atomic<int>& live) : live_(live) { ++live_; }
  ~FakeSasl() override { --live_; }
  pop3::SaslReply step(std::optional<std::string_view> r) override {
    if (step_++ == 0) return pop3::SaslReply::challenge("Zmlyc3Q=");
    if (r && *r == "bad base64") return pop3::SaslReply::malformed();
    pop3::AuthResult res;
    res.ok = r && *r == kFakePassword;
    res.credential = res.ok ? "password" : "";
    res.failure = res.ok ? pop3::AuthFailure::none : pop3::AuthFailure::credentials;
    return pop3::SaslReply::done("bob", res);
  }

 private:
  std::atomic<int>& live_;
  int step_ = 0;
};

class FakeAuthenticator final : public pop3::Authenticator {
 public:
  pop3::AuthResult verify_apop(std::string_view user, std::string_view, std::string_view digest,
                               const pop3::AuthContext& ctx) override {
    note(ctx);
    return verdict(user, digest == kFakeSecret);
  }
  pop3::AuthResult verify_plain(std::string_view user, std::string_view password,
                                const pop3::AuthContext& ctx) override {
    note(ctx);
    return verdict(user, password == kFakePassword);
  }
  void record_login(std::string_view user, std::int64_t when) override {
    std::lock_guard lock(mu);
    recorded.emplace_back(std::string(user), when);
  }
  std::vector<pop3::SaslMechanism> sasl_mechanisms() const override {
    return {{"TWO-STEP", false}, {"PLAIN", true}, {"lower-case", false}};
  }
  std::unique_ptr<pop3::SaslSession> start_sasl(std::string_view mech,
                                                const pop3::AuthContext&) override {
    if (mech != "TWO-STEP") return nullptr;
    return std::make_unique<FakeSasl>(live_exchanges);
  }

  void note(const pop3::AuthContext& ctx) {
    ++calls;
    std::lock_guard lock(mu);
    last_address = std::string(ctx.address);
  }
  pop3::AuthResult verdict(std::string_view user, bool ok) const {
    pop3::AuthResult r;
    r.ok = ok;
    if (ok) {
      r.credential = "password";
      r.limits.login_delay = 60;
      r.limits.last_login = 1'700'000'000;
      r.mail_location = "maildir:/var/mail/" + std::string(user);
    } else {
      r.failure = pop3::AuthFailure::credentials;
      r.delay = std::chrono::milliseconds(2000);
    }
    return r;
  }

  std::atomic<int> calls{0};
  std::atomic<int> live_exchanges{0};
  std::mutex mu;  // guards last_address and recorded (serve() threads write them)
  std::string last_address;
  std::vector<std::pair<std::string, std::int64_t>> recorded;
};

// The auth process's shared maildrop locks (pg::MaildropLocks' contract):
// locks stack per "server" (this fake), users in `elsewhere` are held by
// another server, `down` makes try_lock a temporary error, `delay` a slow
// database.
class FakeMaildropLocks final : public pop3::MaildropLocks {
 public:
  Result<bool> try_lock(std::string_view user) override {
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    std::lock_guard lock(mu);
    if (down) return make_error(Errc::temporary, "database down");
    if (elsewhere.count(std::string(user)) != 0) return false;
    ++held[std::string(user)];
    return true;
  }
  void release(std::string_view user) override {
    std::lock_guard lock(mu);
    auto it = held.find(std::string(user));
    if (it == held.end()) return;
    if (--it->second == 0) held.erase(it);
  }
  unsigned count(const std::string& user) {
    std::lock_guard lock(mu);
    auto it = held.find(user);
    return it == held.end() ? 0 : it->second;
  }
  unsigned total() {
    std::lock_guard lock(mu);
    unsigned n = 0;
    for (const auto& [u, c] : held) n += c;
    return n;
  }

  std::mutex mu;  // guards everything below
  std::map<std::string, unsigned> held;
  std::set<std::string> elsewhere;
  bool down = false;
  std::chrono::milliseconds delay{0};
};

// A worker's end and the auth end of one channel nobody serves.
struct Pair {
  Pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    worker = UniqueFd(sv[0]);
    auth = UniqueFd(sv[1]);
  }
  UniqueFd worker, auth;
};

// `n` channels of one worker, each served by AuthService::serve on its own
// thread. worker_fds() hands the worker's ends out once.
class ServedChannels {
 public:
  ServedChannels(AuthService& service, int n) {
    for (int i = 0; i < n; ++i) {
      int sv[2];
      EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
      worker_.emplace_back(sv[0]);
      auth_.emplace_back(sv[1]);
      const int fd = sv[1];
      threads_.emplace_back([&service, fd, this] {
        const ServeEnd end = service.serve(fd);
        std::lock_guard lock(mu_);
        ends_.push_back(end);
      });
    }
  }
  ~ServedChannels() { stop(); }
  std::vector<UniqueFd> worker_fds() { return std::move(worker_); }
  // The auth process dies: every channel shut down, threads joined.
  void stop() {
    for (auto& fd : auth_) ::shutdown(fd.get(), SHUT_RDWR);
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    auth_.clear();
  }
  std::vector<ServeEnd> ends() {
    std::lock_guard lock(mu_);
    return ends_;
  }

 private:
  std::vector<UniqueFd> worker_;
  std::vector<UniqueFd> auth_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::vector<ServeEnd> ends_;
};

}  // namespace apop::ipc::test
