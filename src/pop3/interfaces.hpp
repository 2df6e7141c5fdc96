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

// Opens (and locks) a user's maildrop. Errors: Errc::in_use when another
// session holds it, Errc::temporary on I/O failure.
class MaildropOpener {
 public:
  virtual ~MaildropOpener() = default;
  virtual Result<std::unique_ptr<Maildrop>> open(std::string_view user) = 0;
  // True when open(user) never waits for a lock held by someone else or for
  // the network (a Maildir on a local file system: its lock is taken or
  // refused at once), so a driver may run it on its event loop. Cheap; a
  // wrong `user` may give either answer. Default: false.
  virtual bool opens_without_waiting(std::string_view user) {
    (void)user;
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

// One SASL exchange (RFC 4422) as POP3 carries it (RFC 5034): the client's
// responses and the server's challenges are base64 text; decoding and the
// mechanism's logic live behind this interface (src/auth), so the core stays
// free of crypto.
struct SaslReply {
  enum class Kind {
    challenge,  // send "+ " text (base64; may be empty) and wait for a response
    success,    // authenticated as `user`
    failure,    // wrong credentials (same reply for unknown users)
    malformed,  // bad base64 or protocol violation from the client
  };
  Kind kind = Kind::failure;
  std::string text;        // base64 challenge for Kind::challenge
  std::string user;        // identity on success; the claimed one (if any) on failure, for logs
  std::string credential;  // on success: which secret matched (see AuthResult)
  std::string reason;      // on failure: why, for logs only (see AuthResult)
  std::chrono::milliseconds delay{0};  // on failure: see AuthResult::delay
  LoginLimits limits{};  // on success: the user's own LOGIN-DELAY/EXPIRE (see AuthResult)
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

// The outcome of a credential check. `credential` and `reason` are for logs
// only and never reach the client (every failure gets the same reply).
struct AuthResult {
  bool ok = false;
  std::string credential;  // on success: "password" or "device:NAME"
  std::string reason;      // on failure: "credentials", "policy-mechanism", "policy-tls", ...
                           // "throttled", "blocked" (auth/throttle.hpp); "temporary": the
                           // credentials could not be checked (account database down), the
                           // client gets [SYS/TEMP] and it is not counted as a failed login
  // On failure: how long the driver waits before sending the failure reply
  // (failed-login throttling). The core never sleeps: it passes this on in
  // LoginEvent::delay, and the network layer waits without blocking.
  std::chrono::milliseconds delay{0};
  // On success: the user's own RFC 2449 LOGIN-DELAY/EXPIRE and last login;
  // the Session enforces LOGIN-DELAY with them (after correct credentials only).
  LoginLimits limits{};
  explicit operator bool() const { return ok; }
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
