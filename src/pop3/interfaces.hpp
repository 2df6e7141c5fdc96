// The seams the protocol core names. src/store and src/auth implement them;
// tests and fuzzers use the in-memory twins. Nothing here does I/O itself.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/result.hpp"

namespace apop::pop3 {

// One message as the maildrop lists it. `size` is the exact octet count of
// the message as sent on the wire with CRLF line endings, before
// dot-stuffing (RFC 1939 §5 "exact size"). `uidl` is stable across sessions
// and restarts, 1..70 chars in 0x21..0x7E (RFC 1939 §7).
struct MessageInfo {
  std::uint64_t size = 0;
  std::string uidl;
  // Delivery time, unix seconds (Maildir: the file's mtime, as Dovecot
  // takes it); 0 when unknown. Valid after Maildrop::load_delivery_times(). Used by RFC 2449
  // EXPIRE: a message of unknown age never expires.
  std::int64_t delivered = 0;
};

// A pull source of a message's raw bytes (LF or CRLF line endings, as
// stored). read() fills up to buf.size() bytes and returns how many; 0 means
// end of message. Owned by the caller of Maildrop::open.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual Result<std::size_t> read(std::span<char> buf) = 0;
};

// One locked maildrop, opened after login. The lock (one session per
// maildrop) is held for the object's lifetime and released by the
// destructor, however the session ends. The message list is a snapshot:
// mail delivered later shows up only in the next session.
class Maildrop {
 public:
  virtual ~Maildrop() = default;
  virtual std::span<const MessageInfo> messages() const = 0;
  // Fills MessageInfo::delivered where the listing left it out because it
  // costs I/O per message (Maildir: a stat per file). Called before the
  // delivery times are used (RFC 2449 EXPIRE at QUIT). Pure, so that a
  // wrapping Maildrop cannot forget to forward it.
  virtual void load_delivery_times() = 0;
  // index is 0-based into messages().
  virtual Result<std::unique_ptr<ByteSource>> open(std::size_t index) = 0;
  // Removes the given messages (0-based, ascending, no duplicates). Called
  // only in the UPDATE state (QUIT from TRANSACTION). Messages already gone
  // are not an error.
  virtual Result<void> commit(std::span<const std::size_t> deleted) = 0;
};

// Whose maildrop to open, and where: `location` is the account's own mail
// location as the login returned it (AuthResult::mail_location, e.g.
// "mbox:/var/mail/alice"; opaque to the core), empty for the server's
// default. Borrowed for the call. Converts from a user name alone (tests).
struct MailboxAddress {
  std::string_view user;
  std::string_view location{};
  template <typename S>
  requires std::is_convertible_v<const S&, std::string_view> MailboxAddress(const S& u)
      : user(u) {}  // NOLINT(google-explicit-constructor)
  MailboxAddress(std::string_view u, std::string_view loc) : user(u), location(loc) {}
};

// Opens (and locks) a user's maildrop. Errors: Errc::in_use when another
// session holds it, Errc::temporary on I/O failure.
class MaildropOpener {
 public:
  virtual ~MaildropOpener() = default;
  virtual Result<std::unique_ptr<Maildrop>> open(const MailboxAddress& where) = 0;
  // True when open(where) never waits for a lock held by someone else or for
  // the network (a Maildir on a local file system: its lock is taken or
  // refused at once), so a driver may run it on its event loop. Cheap (no
  // lookup: the location comes with the address); a wrong user may give
  // either answer. Default: false.
  virtual bool opens_without_waiting(const MailboxAddress& where) {
    (void)where;
    return false;
  }
};

// RFC 2449 §6.7 "EXPIRE NEVER" as a number of days.
inline constexpr std::int64_t kExpireNever = -1;

// A user's own RFC 2449 LOGIN-DELAY / EXPIRE settings and the time of their
// previous successful login, as the Authenticator knows them after correct
// credentials. An empty field follows the server-wide default
// (SessionConfig); the Session resolves and enforces them.
struct LoginLimits {
  std::optional<std::uint32_t> login_delay;  // seconds between logins
  std::optional<std::int64_t> expire_days;   // days, or kExpireNever
  std::optional<std::int64_t> last_login;    // unix seconds; empty: never logged in
  bool operator==(const LoginLimits&) const = default;
};

// Why a login failed, for logs and metrics only: the client gets the same
// reply for every reason but `temporary` ([SYS/TEMP]).
enum class AuthFailure : std::uint8_t {
  none,                  // not a failure
  credentials,           // wrong secret, unknown user, or a malformed proof
  no_apop_secret,        // a known account without any APOP secret (device-secrets-only, none yet)
  policy_mechanism,      // the account's policy does not allow the mechanism
  policy_tls,            // the account allows no mechanism outside TLS
  policy_apop_tls,       // APOP only inside TLS (md5_challenge_requires_tls)
  policy_cram_md5_tls,   // CRAM-MD5 only inside TLS (md5_challenge_requires_tls)
  policy_imported_hash,  // an imported hash above the cost limits: never verified
  throttled,             // a failure whose reply earlier failures delayed (auth/throttle.hpp)
  blocked,               // the client's address is blocked (auth/throttle.hpp)
  temporary,             // the account database could not be asked: [SYS/TEMP], not counted
};
// "credentials", "no-apop-secret", "policy-mechanism", ..., "temporary"
// ("" for none): the names logs and metrics have always used.
std::string_view auth_failure_name(AuthFailure f);
// The policy_* reasons.
bool is_policy_refusal(AuthFailure f);

// The one value a login returns: the verdict and everything the session
// needs after it. Nothing here is a secret; `credential` and `failure` are
// for logs only and never reach the client.
struct AuthResult {
  bool ok = false;
  std::string credential;  // on success: "password", "password-upgraded" or "device:NAME"
  AuthFailure failure = AuthFailure::none;  // on failure: why (never none)
  // On failure: how long the driver waits before sending the failure reply
  // (failed-login throttling). The core never sleeps: the Session hands it to
  // the driver (Session::take_reply_delay), which waits without blocking.
  std::chrono::milliseconds delay{0};
  // On success: the user's own RFC 2449 LOGIN-DELAY/EXPIRE and last login;
  // the Session enforces LOGIN-DELAY with them (after correct credentials only).
  LoginLimits limits{};
  // On success: the account's own mail location (MailboxAddress::location);
  // empty: the server's default.
  std::optional<std::string> mail_location;
  explicit operator bool() const { return ok; }
  // A check that could not be made (the account database or the auth
  // process unreachable): the client gets -ERR [SYS/TEMP].
  static AuthResult temporary() {
    AuthResult r;
    r.failure = AuthFailure::temporary;
    return r;
  }
};

// One SASL exchange (RFC 4422) as POP3 carries it (RFC 5034): the client's
// responses and the server's challenges are base64 text; decoding and the
// mechanism's logic live behind this interface (src/auth), so the core stays
// free of crypto.
struct SaslReply {
  enum class Kind {
    challenge,  // send "+ " text (base64; may be empty) and wait for a response
    done,       // the exchange ended: `result` says how
    malformed,  // bad base64 or protocol violation from the client
  };
  Kind kind = Kind::done;
  std::string text;  // base64 challenge for Kind::challenge
  // The identity: on success the authenticated user; on failure the claimed
  // one (if any), for logs and the failed-login counts.
  std::string user;
  AuthResult result;  // Kind::done: the verdict, as for APOP and USER/PASS
  bool succeeded() const { return kind == Kind::done && result.ok; }
  bool failed() const { return kind == Kind::done && !result.ok; }

  static SaslReply challenge(std::string base64) {
    SaslReply r;
    r.kind = Kind::challenge;
    r.text = std::move(base64);
    return r;
  }
  static SaslReply malformed() {
    SaslReply r;
    r.kind = Kind::malformed;
    return r;
  }
  static SaslReply done(std::string user, AuthResult result) {
    SaslReply r;
    r.user = std::move(user);
    r.result = std::move(result);
    return r;
  }
};

class SaslSession {
 public:
  virtual ~SaslSession() = default;
  // First call: the initial response (nullopt when none was sent; "" for
  // RFC 5034's "="). Later calls: each client response line.
  virtual SaslReply step(std::optional<std::string_view> base64_response) = 0;
};

struct SaslMechanism {
  std::string name;  // e.g. "SCRAM-SHA-256"
  bool plaintext;    // sends the password itself (PLAIN, LOGIN): secure connections only
};

// What an Authenticator may know of the connection a login comes from.
struct AuthContext {
  bool tls = false;  // inside TLS (implicit, or after STLS)
  // The client's address (no port) as the failed-login defence counts it,
  // e.g. "192.0.2.7", or an IPv6 client's prefix "2001:db8:1:2::/64"
  // (net::address_key); empty when unknown (unit tests). Borrowed from the
  // Session's config.
  std::string_view address{};
};

// Verifies credentials. Implementations MUST do the same work for unknown
// users as for known ones (a dummy secret) and compare in constant time, so
// that replies and timing never reveal whether a user exists. A login refused
// by the user's policy fails exactly like wrong credentials.
class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // RFC 1939 §7: digest = hex(MD5(timestamp + secret)), either case.
  virtual AuthResult verify_apop(std::string_view user, std::string_view timestamp,
                                 std::string_view digest, const AuthContext& ctx) = 0;
  // RFC 1939 §7 USER/PASS: the plaintext password.
  virtual AuthResult verify_plain(std::string_view user, std::string_view password,
                                  const AuthContext& ctx) = 0;
  // A login of `user` succeeded at `when` (unix seconds): credentials were
  // right, LOGIN-DELAY allowed it and the maildrop is open. The next
  // AuthResult for the user reports it as LoginLimits::last_login (RFC 2449
  // LOGIN-DELAY counts from here). Called on the thread that verified the
  // credentials; best effort (a failure to record is not the client's
  // problem). Default: nothing is recorded.
  virtual void record_login(std::string_view user, std::int64_t when) {
    (void)user;
    (void)when;
  }
  // SASL mechanisms supported, strongest first. Default: none.
  virtual std::vector<SaslMechanism> sasl_mechanisms() const { return {}; }
  // Starts an exchange for a mechanism listed by sasl_mechanisms(); nullptr
  // for any other name.
  virtual std::unique_ptr<SaslSession> start_sasl(std::string_view mechanism,
                                                  const AuthContext& ctx) {
    (void)mechanism;
    (void)ctx;
    return nullptr;
  }
};

}  // namespace apop::pop3
