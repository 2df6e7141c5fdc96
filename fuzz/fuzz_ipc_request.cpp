// The auth process's side of the worker IPC (src/ipc/auth_service.hpp) on
// hostile requests: a compromised worker sends anything.
//
// Input: a sequence of packets, each a big-endian u16 length and that many
// bytes (at most 32 packets), handed one by one to one AuthService (small
// SASL table and maildrop-lock bound, so its limits are reached) over a fake
// Authenticator and fake shared maildrop locks ("busyuser" is held by
// another server, "downuser"'s database is unreachable).
//
// Invariants (__builtin_trap): every reply is one well-formed reply message
// within limits::kMaxIpcMessage, with the request's id when its header was
// readable; the channel is closed exactly when the request does not decode;
// a request that decodes is in canonical form (encoding it again gives the
// same bytes); no reply ever contains the fake account's secret or
// password; SASL exchanges never exceed the table's bound; the worker never
// holds more maildrop locks than its bound, the fake database holds exactly
// the locks the service says it holds for the worker (none is released that
// was not taken, none leaks), and none is left once the service is gone.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "ipc/auth_service.hpp"
#include "ipc/wire.hpp"
#include "pop3/maildrop_locks.hpp"

namespace {

using namespace apop;

constexpr std::string_view kSecret = "S3cret-apop-fuzz";
constexpr std::string_view kPassword = "pa55word-fuzz";

class FuzzSasl final : public pop3::SaslSession {
 public:
  pop3::SaslReply step(std::optional<std::string_view> r) override {
    if (++steps_ < 3 && r && r->size() % 2 == 0) return pop3::SaslReply::challenge("Y2hhbGxlbmdl");
    if (r && r->empty()) return pop3::SaslReply::malformed();
    pop3::AuthResult res;
    res.ok = r && *r == kPassword;
    res.failure = res.ok ? pop3::AuthFailure::none : pop3::AuthFailure::credentials;
    return pop3::SaslReply::done("fuzzuser", res);
  }

 private:
  int steps_ = 0;
};

class FuzzAuthenticator final : public pop3::Authenticator {
 public:
  pop3::AuthResult verify_apop(std::string_view user, std::string_view, std::string_view digest,
                               const pop3::AuthContext&) override {
    return verdict(user == "fuzzuser" && digest == kSecret);
  }
  pop3::AuthResult verify_plain(std::string_view user, std::string_view password,
                                const pop3::AuthContext&) override {
    // busyuser and downuser log in too: their maildrop locks are refused.
    const bool known = user == "fuzzuser" || user == "busyuser" || user == "downuser";
    return verdict(known && password == kPassword);
  }
  std::vector<pop3::SaslMechanism> sasl_mechanisms() const override {
    return {{"FUZZ", false}, {"PLAIN", true}, {"bad name", false}};
  }
  std::unique_ptr<pop3::SaslSession> start_sasl(std::string_view mech,
                                                const pop3::AuthContext&) override {
    if (mech != "FUZZ") return nullptr;
    return std::make_unique<FuzzSasl>();
  }

 private:
  static pop3::AuthResult verdict(bool ok) {
    pop3::AuthResult r;
    r.ok = ok;
    if (ok) {
      r.credential = "password";
      r.limits.login_delay = 10;
      r.mail_location = "maildir:/var/mail/fuzzuser";
    } else {
      r.failure = pop3::AuthFailure::credentials;
      r.delay = std::chrono::milliseconds(2000);
    }
    return r;
  }
};

// The database's locks: a count per user; an unmatched release traps.
class FuzzLocks final : public pop3::MaildropLocks {
 public:
  Result<bool> try_lock(std::string_view user) override {
    if (user == "downuser") return make_error(Errc::temporary, "down");
    if (user == "busyuser") return false;
    ++held_[std::string(user)];
    return true;
  }
  void release(std::string_view user) override {
    auto it = held_.find(std::string(user));
    if (it == held_.end()) __builtin_trap();  // released what was never taken
    if (--it->second == 0) held_.erase(it);
  }
  std::size_t total() const {
    std::size_t n = 0;
    for (const auto& [u, c] : held_) n += c;
    return n;
  }

 private:
  std::map<std::string, unsigned> held_;
};

constexpr std::size_t kMaxExchanges = 4;
constexpr std::size_t kMaxLocks = 3;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzAuthenticator fake;
  FuzzLocks locks;
  ipc::AuthServiceLimits lim;
  lim.max_sasl_exchanges = kMaxExchanges;
  lim.max_maildrop_locks = kMaxLocks;
  lim.rate = 1e9;
  lim.burst = 24;  // the last packets of a long input are rate limited
  lim.failure_burst = 8;
  auto service = std::make_unique<ipc::AuthService>(fake, lim, &locks);
  std::string_view in(reinterpret_cast<const char*>(data), size);
  for (int packets = 0; packets < 32 && in.size() >= 2; ++packets) {
    const std::size_t n = static_cast<std::size_t>(static_cast<std::uint8_t>(in[0])) << 8 |
                          static_cast<std::uint8_t>(in[1]);
    in.remove_prefix(2);
    const std::string packet(in.substr(0, n));
    in.remove_prefix(std::min(n, in.size()));

    auto decoded = ipc::decode_request(packet);
    if (decoded) {
      std::string again;
      if (!ipc::encode_request(decoded->id, decoded->body, again) || again != packet) {
        __builtin_trap();
      }
    }
    const ipc::AuthService::Handled h = service->handle(packet);
    if (h.close != !decoded.ok()) __builtin_trap();
    if (h.reply.size() > apop::limits::kMaxIpcMessage) __builtin_trap();
    auto reply = ipc::decode_reply(h.reply);
    if (!reply) __builtin_trap();
    const auto id = ipc::peek_request_id(packet);
    if (reply->id != id.value_or(0)) __builtin_trap();
    if (h.reply.find(kSecret) != std::string::npos ||
        h.reply.find(kPassword) != std::string::npos) {
      __builtin_trap();
    }
    if (service->sasl_exchanges() > kMaxExchanges) __builtin_trap();
    if (service->maildrop_locks() > kMaxLocks || service->maildrop_locks() != locks.total()) {
      __builtin_trap();
    }
    if (h.close) break;  // serve() ends the channel here
  }
  service.reset();  // the worker's channels closed
  if (locks.total() != 0) __builtin_trap();
  return 0;
}
