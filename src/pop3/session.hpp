// One POP3 session (RFC 1939, RFC 2449, RFC 3206) with no I/O: the driver
// feeds client bytes and writes what next() appends. Unit tests and fuzzers
// drive it with plain strings.
//
// Ownership: the Session borrows the Authenticator, MaildropOpener and
// EventSink (they must outlive it) and owns the opened Maildrop, whose lock
// is released when the Session is destroyed, however the connection ended.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/limits.hpp"
#include "pop3/body.hpp"
#include "pop3/command.hpp"
#include "pop3/interfaces.hpp"
#include "pop3/line_reader.hpp"

namespace apop::pop3 {

enum class State { authorization, transaction, update, closed };

// RFC 2449 §8 / RFC 3206 extended response codes.
enum class RespCode { none, auth, in_use, sys_temp, sys_perm, login_delay };

struct SessionConfig {
  std::string greeting_text = "POP3 server ready";
  // The connection is secure (TLS, or loopback unless disabled): plaintext
  // mechanisms (USER/PASS) are allowed on it.
  bool secure = false;
  // STLS (RFC 2595) can be offered: a plain listener with TLS configured.
  bool stls_available = false;
  // Refuse APOP and CRAM-MD5 before TLS (--md5-challenge-requires-tls, alias
  // --apop-requires-tls): both are MD5 challenge-responses over the same
  // plaintext-equivalent secret, so a sniffed exchange of either is an
  // offline cracking target; RFC 1939 §7's advice not to accept both PASS
  // and APOP in the clear; and it denies the MD5 collision attack
  // (CVE-2007-1558) to anyone outside the TLS session. CRAM-MD5 is then not
  // listed by CAPA/AUTH before TLS (CAPA is asked again after STLS); the
  // greeting keeps APOP's timestamp where STLS is offered (it is sent once).
  bool md5_challenge_requires_tls = false;
  // APOP can be used at all (no account's policy allows it: false). When
  // false the greeting carries no timestamp and APOP is refused.
  bool apop_enabled = true;
  // Allow USER/PASS on insecure connections too (--allow-plaintext-auth).
  bool allow_plaintext_auth = false;
  // APOP's credential check (an MD5 per secret and a lookup in a local
  // database) is cheap enough to run on the driver's event loop: set by the
  // server when the account database is the local SQLite file (never with
  // PostgreSQL, whose lookups wait on the network). See blocking_step_next().
  bool inline_apop = false;
  // APOP's check is awaited by the driver instead of run by the session
  // (a network worker's: the check is a round trip to the auth process, and
  // its event loop keeps serving other sessions, with many checks in flight
  // on one channel). next() returns Next::verify with the request in
  // pending_check(); complete_check() finishes the login. A maildrop that
  // may wait to open is then opened as after an inline APOP (pending_open_).
  bool deferred_apop = false;
  unsigned max_auth_failures = limits::kMaxAuthFailures;
  unsigned max_bad_commands = limits::kMaxBadCommands;
  // RFC 2449 IMPLEMENTATION capability; empty omits it.
  std::string implementation = "apop";
  // The client's address as the failed-login defence counts it (set per
  // connection by the driver: the IP without port, an IPv6 client's prefix,
  // net::address_key); passed to the Authenticator in AuthContext::address.
  std::string client_address;
  // RFC 2449 LOGIN-DELAY (§6.5, seconds) and EXPIRE (§6.7, days or
  // kExpireNever): the server-wide defaults, announced by CAPA before login;
  // a user's own values (AuthResult::limits) replace them after login. The
  // *_per_user flags say some account has its own value, so the pre-login
  // CAPA appends "USER" as RFC 2449 requires.
  std::uint32_t login_delay = 0;
  std::int64_t expire_days = kExpireNever;
  bool login_delay_per_user = false;
  bool expire_per_user = false;
  // The wall clock, unix seconds (LOGIN-DELAY and EXPIRE ages); empty: the
  // system clock. Tests inject their own.
  std::function<std::int64_t()> clock;
};

// delayed: correct credentials, refused by RFC 2449 LOGIN-DELAY.
enum class LoginResult { ok, failed, in_use, error, delayed };

// One login attempt, for logs and metrics. Never holds a secret.
struct LoginEvent {
  std::string_view user;       // as the client sent it (untrusted)
  std::string_view mechanism;  // "APOP", "USER", or the SASL mechanism
  LoginResult result = LoginResult::failed;
  std::string_view credential;  // on success: "password" or "device:NAME"
  // LoginResult::failed / error: why the credentials were refused
  // (AuthFailure::none for a mailbox that could not be opened).
  AuthFailure failure = AuthFailure::none;
  bool tls = false;
  // LoginResult::delayed: seconds until LOGIN-DELAY allows the next login.
  std::uint32_t retry_after = 0;
};

// Notifications for logs and metrics. Never receives a secret.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void on_login(const LoginEvent& event) = 0;
};

struct SessionStats {
  std::uint64_t retr = 0, retr_bytes = 0, top = 0, deleted = 0, deleted_bytes = 0;
  std::uint64_t messages_at_login = 0;
  // Removed at QUIT by RFC 2449 EXPIRE (older than the limit, or retrieved
  // under EXPIRE 0), besides the DELE'd ones.
  std::uint64_t expired = 0;
  bool committed = false;
};

enum class Next {
  output,      // output was appended; call next() again
  need_input,  // feed more client bytes (write pending output first)
  close,       // write pending output, then close the connection
  start_tls,   // write pending output, then run the TLS handshake and call tls_started()
  verify,      // run pending_check() (SessionConfig::deferred_apop), then complete_check()
};

// An APOP check the driver runs (Next::verify). Owned by the session; valid
// until complete_check() or abort().
struct PendingCheck {
  std::string user;    // as the client sent it (untrusted)
  std::string digest;  // the client's proof (not a secret: an MD5 over the timestamp)
  std::string_view timestamp;
  AuthContext context;
};

class Session {
 public:
  Session(SessionConfig config, Authenticator& auth, MaildropOpener& opener, std::string timestamp,
          EventSink* events = nullptr);
  ~Session();

  // True when next() would process a command line (rather than only return
  // pending output or ask for input).
  bool input_pending() const { return staged_ || reader_.has_line(); }
  // True when the next step may block on a slow hash, a remote database, a
  // lock wait or disk writes, so the network layer should run next() off its
  // event loop; everything else (CAPA, USER, STLS, QUIT with nothing to
  // remove, the TRANSACTION commands) costs less than the thread hand-off.
  // Answered from the session's state: the next command line is taken from
  // the input and looked up in the command table once ("staged"; next() runs
  // it), and the table says what may block: PASS and AUTH (and SASL
  // continuation lines); APOP unless SessionConfig::inline_apop; QUIT in
  // TRANSACTION when the UPDATE state has messages to remove (DELE'd ones,
  // or an EXPIRE policy in force). After an inline APOP with correct
  // credentials, the opening of a maildrop the opener cannot open without
  // waiting (MaildropOpener::opens_without_waiting, asked only for users who
  // gave correct credentials: an unknown user costs no file system call) is
  // such a step too.
  bool blocking_step_next();
  // Failed-login throttling: how long the driver waits before writing the
  // output of the last step (a failure reply; AuthResult::delay), then zero
  // until the next failed login. The core never sleeps.
  std::chrono::milliseconds take_reply_delay() {
    const auto d = reply_delay_;
    reply_delay_ = std::chrono::milliseconds(0);
    return d;
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // "+OK <text> <timestamp>\r\n" (RFC 1939 §7 banner with the APOP challenge).
  // The timestamp is left out where APOP cannot be used on this connection
  // at all, so clients do not try it in vain.
  std::string greeting() const;
  const std::string& timestamp() const { return timestamp_; }

  // Buffers client bytes; call next() until it returns need_input.
  void feed(std::string_view bytes);
  // Processes at most one command (or one chunk of a multi-line reply) and
  // appends its output to `out`.
  Next next(std::string& out);
  // The connection is gone (or timed out): no UPDATE, nothing is deleted.
  void abort();
  // After Next::verify: the check to run, and its result, which finishes the
  // login (the reply is appended to `out`; then call next() as after
  // Next::output). complete_check() without a pending check does nothing.
  const PendingCheck* pending_check() const { return pending_check_.get(); }
  void complete_check(AuthResult result, std::string& out);

  State state() const { return state_; }
  const std::string& user() const { return user_; }
  const SessionStats& stats() const { return stats_; }
  // RFC 2449 values in force: the defaults before login, the user's after.
  std::uint32_t login_delay() const { return login_delay_; }
  std::int64_t expire_days() const { return expire_days_; }
  bool secure() const { return config_.secure; }
  bool tls() const { return tls_; }
  // The driver finished a TLS handshake (implicit TLS at connect, or after
  // STLS): the connection is now secure and STLS is no longer offered.
  void tls_started();

 private:
  friend struct SessionCommands;
  // A command line looked up in the command table (SessionCommands).
  struct Staged;
  // Takes the next item from the input into staged_ (no-op when one is
  // staged or none is complete). False when there is none.
  bool stage();
  void dispatch(const Staged& staged, std::string& out);
  void bad_command(std::string& out, std::string_view text);
  bool apop_possible() const {
    return config_.apop_enabled &&
           (!config_.md5_challenge_requires_tls || tls_ || config_.stls_available);
  }
  // A mechanism this connection refuses for now under md5_challenge_requires_tls.
  bool md5_challenge_refused(std::string_view mechanism) const;
  bool plaintext_allowed() const { return config_.secure || config_.allow_plaintext_auth; }

  // Finds a live (not deleted) message by its 1-based number argument.
  std::optional<std::size_t> message_arg(std::string_view arg, std::string& out);

  void cmd_capa(const ParsedCommand&, std::string&);
  void cmd_quit(const ParsedCommand&, std::string&);
  void cmd_user(const ParsedCommand&, std::string&);
  void cmd_pass(const ParsedCommand&, std::string&);
  void cmd_apop(const ParsedCommand&, std::string&);
  void cmd_stat(const ParsedCommand&, std::string&);
  void cmd_list(const ParsedCommand&, std::string&);
  void cmd_uidl(const ParsedCommand&, std::string&);
  void cmd_retr(const ParsedCommand&, std::string&);
  void cmd_top(const ParsedCommand&, std::string&);
  void cmd_dele(const ParsedCommand&, std::string&);
  void cmd_noop(const ParsedCommand&, std::string&);
  void cmd_rset(const ParsedCommand&, std::string&);
  void cmd_stls(const ParsedCommand&, std::string&);
  void cmd_auth(const ParsedCommand&, std::string&);
  // Mechanisms this connection may use now (plaintext ones only when secure).
  std::vector<SaslMechanism> usable_mechanisms() const;
  void sasl_continue(std::string_view line, std::string& out);
  void sasl_reply(SaslReply reply, std::string& out);

  // After a credential check: the failure reply, or LOGIN-DELAY's, or the
  // maildrop opened and TRANSACTION. `open_now`: the second step of an
  // inline APOP (pending_open_): the maildrop is opened here, whatever the
  // opener says about waiting.
  void finish_login(AuthResult verified, std::string_view user, std::string_view mech,
                    std::string& out, bool open_now = false);
  // A login refused before its maildrop was opened (wrong credentials, the
  // account database down, LOGIN-DELAY): logged, counted against
  // max_auth_failures, answered.
  void refuse_login(const LoginEvent& event, RespCode code, std::string_view text,
                    std::string& out);
  void notify(const LoginEvent& event) {
    if (events_ != nullptr) events_->on_login(event);
  }
  // Seconds until the user's LOGIN-DELAY allows a login, or 0.
  std::uint32_t login_delay_wait(const LoginLimits& limits) const;
  // What the command table asks about a command before it runs
  // (blocking_step_next).
  bool never_blocks() const { return false; }
  bool always_blocks() const { return true; }
  bool apop_blocks() const { return !config_.inline_apop && !config_.deferred_apop; }
  bool update_blocks() const;
  // "+OK LEAD N messages (M octets)" of the live messages.
  void append_maildrop_ok(std::string& out, std::string_view lead) const;
  void start_listing(bool uidl, std::string& out);
  void produce_listing(std::string& out);
  void start_body(std::size_t index, std::optional<std::uint64_t> top, std::string& out);

  SessionConfig config_;
  Authenticator& auth_;
  MaildropOpener& opener_;
  EventSink* events_;
  std::string timestamp_;
  LineReader reader_;
  State state_ = State::authorization;
  unsigned auth_failures_ = 0;
  unsigned bad_commands_ = 0;
  std::optional<std::string> pending_user_;  // after USER, before PASS
  // An inline APOP whose maildrop is opened in the next (blocking) step.
  struct PendingOpen {
    AuthResult verified;
    std::string user;
    std::string mech;
  };
  std::unique_ptr<PendingOpen> pending_open_;
  std::unique_ptr<PendingCheck> pending_check_;  // Next::verify until complete_check()
  std::unique_ptr<Staged> staged_;               // the next command, taken from reader_
  std::chrono::milliseconds reply_delay_{0};
  std::unique_ptr<SaslSession> sasl_;  // an AUTH exchange in progress
  std::string sasl_mech_;
  std::string user_;

  std::unique_ptr<Maildrop> maildrop_;
  std::vector<bool> deleted_;
  std::uint64_t live_count_ = 0, live_size_ = 0;

  // Multi-line output in progress (RETR/TOP body or LIST/UIDL listing).
  std::unique_ptr<BodyStreamer> body_;
  std::optional<std::size_t> listing_next_;  // next 0-based index to list
  bool listing_uidl_ = false;
  bool close_after_output_ = false;
  bool start_tls_after_output_ = false;
  bool tls_ = false;
  SessionStats stats_;

  // RFC 2449 LOGIN-DELAY / EXPIRE (see SessionConfig).
  std::int64_t now() const;
  void append_limit_capas(std::string& out) const;
  // Messages QUIT removes besides the DELE'd ones (EXPIRE), ascending.
  std::vector<std::size_t> expired_messages() const;
  std::uint32_t login_delay_ = 0;
  std::int64_t expire_days_ = kExpireNever;
  std::vector<bool> retrieved_;                 // RETR sent the whole message (EXPIRE 0)
  std::optional<std::size_t> body_retr_index_;  // the RETR whose body is being sent
};

// Formats "+OK text\r\n" / "-ERR [CODE] text\r\n".
void append_ok(std::string& out, std::string_view text);
void append_err(std::string& out, RespCode code, std::string_view text);
// Appends v in decimal.
void append_u64(std::string& out, std::uint64_t v);

}  // namespace apop::pop3
