// The server's whole session state machine (pop3::Session) over the in-memory
// store, with the real StoreAuthenticator and SASL mechanisms behind it.
//
// Input: byte 0 chooses the options (see kFlag*); the rest is the client's
// byte stream, cut into feeds at control bytes:
//   \x01       feed what came before and run the session until it needs input
//              (partial lines, pipelining);
//   \x02 K     the same, then a correct login by the "oracle", K % 6 choosing
//              APOP, USER/PASS, AUTH PLAIN, AUTH LOGIN, AUTH CRAM-MD5 or AUTH
//              SCRAM-SHA-256 (the last two answer the server's challenges
//              with the client library), so the TRANSACTION state and the
//              UPDATE commit are reached from anywhere in the input.
// STLS's handshake succeeds at once (tls_started()).
//
// Invariants (__builtin_trap): output bounded per step; every line it writes
// is at most 512 octets with CRLF (the test messages have short lines); no
// secret is ever echoed, nor reported to the event sink other than in the
// user name the client sent; after the session the
// maildrop is unlocked and holds exactly its messages minus those a committed
// UPDATE removed (no mail lost or duplicated).
//
// Every user name is an account here (with a cheap scrypt hash), so that no
// login costs the default-parameter dummy hash of the unknown-user path: that
// path is covered by the unit tests and the SASL fuzzer.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "auth/authenticator.hpp"
#include "auth/base64.hpp"
#include "auth/challenge.hpp"
#include "auth/credential_store.hpp"
#include "auth/digest.hpp"
#include "auth/password_hash.hpp"
#include "client/protocol.hpp"
#include "common/limits.hpp"
#include "pop3/session.hpp"
#include "store/memory.hpp"

namespace {

using namespace apop;

constexpr std::string_view kUser = "u";
constexpr std::string_view kPassword = "fuzzing-secret-1";
constexpr std::string_view kDeviceSecret = "fuzzing-device-2";
const std::string kTs = "<1.2@fuzz>";

constexpr std::uint8_t kFlagSecure = 1;
constexpr std::uint8_t kFlagStls = 2;
constexpr std::uint8_t kFlagApopRequiresTls = 4;
constexpr std::uint8_t kFlagAllowPlaintext = 8;
constexpr std::uint8_t kFlagPolicyShift = 4;  // bits 4-5: account policy variant
constexpr std::uint8_t kFlagFaults = 64;      // store faults (open, read, commit)
constexpr std::uint8_t kFlagLoginDelay = 128;

const auth::DerivedPassword& derived() {
  static const auth::DerivedPassword d = [] {
    auto r = auth::derive_password(kPassword);
    if (!r) __builtin_trap();
    // A cheap hash (same password): logins must not cost 15 ms each here.
    auto cheap = auth::hash_password(kPassword, auth::ScryptParams{1, 1, 1});
    if (!cheap) __builtin_trap();
    r->hash = *cheap;
    return std::move(*r);
  }();
  return d;
}

// Every name is an account with the fuzz password; the policy variant comes
// from the input. All a login reads is the AccountSource (the login seam):
// account administration is not on this path.
class FuzzStore final : public auth::AccountSource {
 public:
  explicit FuzzStore(unsigned variant) : variant_(variant) {}
  Result<auth::Account> account(std::string_view user) override {
    auth::Account a;
    a.name = std::string(user);
    a.password_hash = derived().hash;
    a.scram_sha256 = derived().scram_sha256;
    a.scram_sha1 = derived().scram_sha1;
    a.password = std::string(kPassword);
    a.device_secrets.push_back({"phone", std::string(kDeviceSecret)});
    switch (variant_) {
      case 1:
        a.policy.require_tls = true;
        a.policy.md5_challenge_requires_tls = true;
        break;
      case 2:
        a.policy.mechanisms = auth::kMechApop | auth::kMechScramSha256;
        a.login_delay = 600;
        a.expire_days = 0;
        a.last_login = 1'000'000'000;
        break;
      case 3:
        a.policy.device_secrets_only = true;
        a.password.reset();
        a.expire_days = 1;
        break;
      default:
        break;
    }
    return a;
  }
  Result<void> record_login(std::string_view, std::int64_t) override { return {}; }
  Result<void> replace_imported_hash(std::string_view, std::string_view) override {
    return Error{Errc::permanent, "not in the fuzzer"};
  }

 private:
  unsigned variant_;
};

bool has_secret(std::string_view s) {
  return s.find(kPassword) != std::string_view::npos ||
         s.find(kDeviceSecret) != std::string_view::npos;
}

class CheckingSink final : public pop3::EventSink {
 public:
  void on_login(const pop3::LoginEvent& e) override {
    // e.user is the name as the client sent it (it may be anything, even a
    // password typed into the wrong field): logged as sent, not checked.
    if (has_secret(e.mechanism) || has_secret(e.credential)) {
      __builtin_trap();
    }
  }
};

// Whether run() asks blocking_step_next() before each step, as the server's
// driver does (the command is then staged before it runs), or not, as a
// driver without a thread pool: both paths are fuzzed (by input length).
bool g_ask_blocking = false;
// The authenticator the driver runs deferred checks with (Next::verify).
pop3::Authenticator* g_authn = nullptr;

// Runs the session until it wants input or closes; returns everything it wrote.
std::string run(pop3::Session& s) {
  std::string all;
  pop3::Next n = pop3::Next::output;
  for (;;) {
    std::string out;
    if (g_ask_blocking) (void)s.blocking_step_next();
    n = s.next(out);
    (void)s.take_reply_delay();
    if (out.size() > 4 * 65536) __builtin_trap();  // bounded output per step
    all += out;
    if (n == pop3::Next::start_tls) {
      s.tls_started();
      continue;
    }
    if (n == pop3::Next::verify) {
      // SessionConfig::deferred_apop: the check is the driver's (here the
      // same authenticator); nothing is written while it is pending.
      const pop3::PendingCheck* c = s.pending_check();
      if (c == nullptr || !out.empty() || c->timestamp != kTs) __builtin_trap();
      s.complete_check(g_authn->verify_apop(c->user, c->timestamp, c->digest, c->context), out);
      if (s.pending_check() != nullptr) __builtin_trap();
      all += out;
      continue;
    }
    if (n != pop3::Next::output) break;
    if (all.size() > (1u << 22)) __builtin_trap();  // 4 MiB for at most 4 KiB of input
  }
  // A step may end inside a line (body chunks); once the session waits for
  // input or closes, every line it wrote is complete.
  // The exception: a store read error in the middle of a RETR/TOP body, after
  // its +OK, where the only honest end is to drop the connection (the client
  // sees a truncated reply, never a wrong one).
  if (!all.empty() && all.back() != '\n' && n != pop3::Next::close) __builtin_trap();
  std::size_t pos = 0;
  while (pos < all.size()) {
    std::size_t nl = all.find('\n', pos);
    if (nl == std::string::npos) nl = all.size();
    if (nl + 1 - pos > limits::kMaxResponseLine) __builtin_trap();
    pos = nl + 1;
  }
  if (has_secret(all)) __builtin_trap();
  return all;
}

// The payload of the last "+ BASE64" continuation line in `out`, decoded.
std::string last_challenge(std::string_view out) {
  std::string found;
  std::size_t pos = 0;
  while (pos < out.size()) {
    std::size_t nl = out.find('\n', pos);
    if (nl == std::string_view::npos) nl = out.size();
    std::string_view line = out.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (client::is_continuation(line)) {
      auto c = client::parse_continuation(line);
      found = c ? *c : std::string();
    }
    pos = nl + 1;
  }
  return found;
}

void send(pop3::Session& s, std::string_view line) {
  s.feed(line);
  s.feed("\r\n");
}

// A correct login with the mechanism `k` chooses, answering challenges.
void oracle_login(pop3::Session& s, unsigned k) {
  using auth::base64_encode;
  const std::string user(kUser);
  const std::string pw(kPassword);
  switch (k % 6) {
    case 0:
      send(s, "APOP " + user + " " + auth::md5_hex(kTs + pw));
      break;
    case 1:
      send(s, "USER " + user);
      (void)run(s);
      send(s, "PASS " + pw);
      break;
    case 2:
      send(s, "AUTH PLAIN " + base64_encode(std::string("\0", 1) + user + '\0' + pw));
      break;
    case 3:
      send(s, "AUTH LOGIN");
      (void)run(s);
      send(s, base64_encode(user));
      (void)run(s);
      send(s, base64_encode(pw));
      break;
    case 4: {
      send(s, "AUTH CRAM-MD5");
      const std::string challenge = last_challenge(run(s));
      send(s, base64_encode(client::cram_md5_response(user, pw, challenge)));
      break;
    }
    default: {
      client::ScramClient c(user, pw, "fuzzclientnonce");
      send(s, "AUTH SCRAM-SHA-256 " + base64_encode(c.client_first()));
      auto final_msg = c.client_final(last_challenge(run(s)));
      send(s, final_msg ? base64_encode(*final_msg) : std::string("*"));
      if (final_msg) {
        const std::string server_final = last_challenge(run(s));
        // A server that ran the exchange with the right verifier proves it.
        if (!server_final.empty() && !c.verify_server_final(server_final)) __builtin_trap();
        send(s, "");
      }
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t flags = data[0];
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  g_ask_blocking = (size & 1) != 0;

  FuzzStore creds((flags >> kFlagPolicyShift) & 3);
  static auth::ChallengeGenerator challenges("fuzz.example");
  auth::StoreAuthenticator authn(creds, &challenges);
  g_authn = &authn;
  store::MemoryStore mail;
  const std::vector<std::string> initial = {"Subject: a\n\n.line\nbody\r\n", "",
                                            "no newline at end", "..\r\n.\r\n. \n"};
  for (const auto& m : initial) mail.add_message(kUser, m, 1'000'000'000);
  if ((flags & kFlagFaults) != 0) {
    // Which operation fails is derived from the input length (cheap variety).
    switch (size % 3) {
      case 0:
        mail.fail_open_after(1);
        break;
      case 1:
        mail.fail_read_after(1 + static_cast<int>(size % 4));
        break;
      default:
        mail.fail_commit_after(1);
        break;
    }
  }
  pop3::SessionConfig cfg;
  cfg.secure = (flags & kFlagSecure) != 0;
  cfg.stls_available = (flags & kFlagStls) != 0;
  cfg.md5_challenge_requires_tls = (flags & kFlagApopRequiresTls) != 0;
  cfg.allow_plaintext_auth = (flags & kFlagAllowPlaintext) != 0;
  cfg.inline_apop = (size & 2) != 0;
  cfg.deferred_apop = (size & 4) != 0;  // a network worker's awaited check
  if ((flags & kFlagLoginDelay) != 0) {
    cfg.login_delay = 300;
    cfg.expire_days = 30;
  }
  cfg.clock = [] { return std::int64_t{1'000'000'100}; };
  CheckingSink sink;
  std::uint64_t committed_deletions = 0;
  bool committed = false;
  {
    pop3::Session s(cfg, authn, mail, kTs, &sink);
    std::string greeting = s.greeting();
    if (greeting.size() > limits::kMaxResponseLine) __builtin_trap();
    for (;;) {
      const std::size_t cut = in.find_first_of("\x01\x02");
      s.feed(in.substr(0, cut));
      (void)run(s);
      if (cut == std::string_view::npos || s.state() == pop3::State::closed) break;
      const bool login = in[cut] == '\x02';
      in.remove_prefix(cut + 1);
      if (login) {
        const unsigned k = in.empty() ? 0 : static_cast<unsigned char>(in[0]);
        if (!in.empty()) in.remove_prefix(1);
        oracle_login(s, k);
        (void)run(s);
        if (s.state() == pop3::State::closed) break;
      }
    }
    committed = s.stats().committed;
    committed_deletions = s.stats().deleted + s.stats().expired;
    if (!committed && s.user() == kUser && mail.locked(kUser) == false &&
        s.state() == pop3::State::transaction) {
      __builtin_trap();  // a session in TRANSACTION holds the lock
    }
    s.abort();
  }
  // After the session: unlocked, and nothing lost unless committed.
  if (mail.locked(kUser)) __builtin_trap();
  const auto left = mail.messages(kUser);
  if (!committed) {
    if (left != initial) __builtin_trap();
  } else {
    if (left.size() + committed_deletions != initial.size()) __builtin_trap();
  }
  return 0;
}
