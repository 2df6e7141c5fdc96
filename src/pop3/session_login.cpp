// pop3::Session, AUTHORIZATION state: USER/PASS, APOP, AUTH (SASL) and the
// one path every login ends in (finish_login). The rest of the session is in
// session.cpp.
#include <algorithm>

#include "pop3/command.hpp"
#include "pop3/session.hpp"

namespace apop::pop3 {

namespace {

// Identical for unknown users and wrong secrets (no user enumeration).
constexpr std::string_view kAuthFailed = "Authentication failed.";
constexpr std::string_view kPlaintextRefused =
    "Plaintext authentication disallowed on non-secure connection";

}  // namespace

bool Session::md5_challenge_refused(std::string_view mechanism) const {
  return config_.md5_challenge_requires_tls && !tls_ && iequals(mechanism, "CRAM-MD5");
}

std::vector<SaslMechanism> Session::usable_mechanisms() const {
  std::vector<SaslMechanism> all = auth_.sasl_mechanisms();
  std::vector<SaslMechanism> usable;
  for (auto& m : all) {
    if (m.plaintext && !plaintext_allowed()) continue;
    if (md5_challenge_refused(m.name)) continue;  // listed again after STLS
    usable.push_back(std::move(m));
  }
  return usable;
}

// RFC 5034 AUTH.
void Session::cmd_auth(const ParsedCommand& cmd, std::string& out) {
  pending_user_.reset();
  if (cmd.args.empty()) {
    out.append("+OK Supported mechanisms follow\r\n");
    for (const auto& m : usable_mechanisms()) {
      out.append(m.name);
      out.append("\r\n");
    }
    out.append(".\r\n");
    return;
  }
  if (cmd.args.size() > 2) return bad_command(out, "Usage: AUTH mechanism [initial-response]");
  std::string_view name = cmd.args[0];
  bool known = false;
  for (const auto& m : auth_.sasl_mechanisms()) {
    if (!iequals(m.name, name)) continue;
    known = true;
    if (m.plaintext && !plaintext_allowed()) {
      return append_err(out, RespCode::auth, kPlaintextRefused);
    }
    if (md5_challenge_refused(m.name)) {
      // As APOP under the same policy: the same reply for every user,
      // nothing looked up, no challenge sent.
      return append_err(out, RespCode::auth, "CRAM-MD5 requires TLS: use STLS first");
    }
    sasl_mech_ = m.name;
  }
  if (!known) return append_err(out, RespCode::none, "Unsupported authentication mechanism");
  sasl_ = auth_.start_sasl(sasl_mech_, AuthContext{tls_, config_.client_address});
  if (!sasl_) return append_err(out, RespCode::none, "Unsupported authentication mechanism");
  std::optional<std::string_view> initial;
  if (cmd.args.size() == 2) initial = cmd.args[1] == "=" ? std::string_view() : cmd.args[1];
  sasl_reply(sasl_->step(initial), out);
}

void Session::sasl_continue(std::string_view line, std::string& out) {
  if (line == "*") {
    sasl_.reset();
    return append_err(out, RespCode::none, "Authentication cancelled");
  }
  sasl_reply(sasl_->step(line), out);
}

void Session::sasl_reply(SaslReply reply, std::string& out) {
  switch (reply.kind) {
    case SaslReply::Kind::challenge:
      out.append("+ ");
      out.append(reply.text);
      out.append("\r\n");
      return;
    case SaslReply::Kind::malformed:
      sasl_.reset();
      return bad_command(out, "Invalid SASL response");
    case SaslReply::Kind::done:
      sasl_.reset();
      return finish_login(std::move(reply.result), reply.user, sasl_mech_, out);
  }
}

void Session::cmd_user(const ParsedCommand& cmd, std::string& out) {
  if (!plaintext_allowed()) {
    return append_err(out, RespCode::auth, kPlaintextRefused);
  }
  if (cmd.args.size() != 1) return bad_command(out, "Usage: USER name");
  pending_user_ = std::string(cmd.args[0]);
  // Never reveals whether the user exists.
  append_ok(out, "Send your password");
}

void Session::cmd_pass(const ParsedCommand& cmd, std::string& out) {
  if (!plaintext_allowed()) {
    pending_user_.reset();
    return append_err(out, RespCode::auth, kPlaintextRefused);
  }
  if (!pending_user_) return bad_command(out, "No username given");
  std::string user = std::move(*pending_user_);
  pending_user_.reset();
  if (cmd.rest.empty()) return bad_command(out, "Usage: PASS password");
  finish_login(auth_.verify_plain(user, cmd.rest, AuthContext{tls_, config_.client_address}), user,
               "USER", out);
}

void Session::cmd_apop(const ParsedCommand& cmd, std::string& out) {
  pending_user_.reset();
  if (cmd.args.size() != 2) return bad_command(out, "Usage: APOP name digest");
  if (!config_.apop_enabled) {
    return append_err(out, RespCode::auth, "APOP is not available on this server");
  }
  if (config_.md5_challenge_requires_tls && !tls_) {
    // The same reply for every user: nothing is looked up.
    return append_err(out, RespCode::auth, "APOP requires TLS: use STLS first");
  }
  const AuthContext ctx{tls_, config_.client_address};
  if (config_.deferred_apop) {
    // The driver runs the check (Next::verify) and hands the result to
    // complete_check(); nothing is appended now.
    pending_check_ = std::make_unique<PendingCheck>(
        PendingCheck{std::string(cmd.args[0]), std::string(cmd.args[1]), timestamp_, ctx});
    return;
  }
  finish_login(auth_.verify_apop(cmd.args[0], timestamp_, cmd.args[1], ctx), cmd.args[0], "APOP",
               out);
}

void Session::complete_check(AuthResult result, std::string& out) {
  if (!pending_check_) return;
  const auto check = std::move(pending_check_);
  finish_login(std::move(result), check->user, "APOP", out);
}

std::uint32_t Session::login_delay_wait(const LoginLimits& limits) const {
  const std::uint32_t delay = limits.login_delay.value_or(config_.login_delay);
  if (delay == 0 || !limits.last_login) return 0;
  // A last login in the future (the clock went back) does not lock the user out.
  const std::int64_t elapsed = now() - *limits.last_login;
  if (elapsed < 0 || elapsed >= delay) return 0;
  return static_cast<std::uint32_t>(delay - elapsed);
}

void Session::refuse_login(const LoginEvent& event, RespCode code, std::string_view text,
                           std::string& out) {
  notify(event);
  // Counted per connection whatever the reason, so that a client cannot spin
  // on a database that is down or on LOGIN-DELAY.
  ++auth_failures_;
  append_err(out, code, text);
  if (auth_failures_ >= config_.max_auth_failures) {
    append_err(out, RespCode::none, "Too many authentication failures, closing connection");
    close_after_output_ = true;
  }
}

void Session::finish_login(AuthResult verified, std::string_view user, std::string_view mech,
                           std::string& out, bool open_now) {
  LoginEvent event;
  event.user = user;
  event.mechanism = mech;
  event.credential = verified.credential;
  event.tls = tls_;
  if (!verified) {
    event.failure =
        verified.failure == AuthFailure::none ? AuthFailure::credentials : verified.failure;
    reply_delay_ = verified.delay;
    if (event.failure == AuthFailure::temporary) {
      // The account database is unavailable: the client may try again later.
      event.result = LoginResult::error;
      return refuse_login(event, RespCode::sys_temp,
                          "Authentication temporarily unavailable, try again later", out);
    }
    event.result = LoginResult::failed;
    return refuse_login(event, RespCode::auth, kAuthFailed, out);
  }
  // RFC 2449 §6.5 LOGIN-DELAY, checked only after correct credentials (a
  // wrong secret gets [AUTH] above, whatever the delay): a user who logged in
  // less than the delay ago is refused with [LOGIN-DELAY] and the maildrop is
  // not opened.
  const std::uint32_t delay = verified.limits.login_delay.value_or(config_.login_delay);
  if (const std::uint32_t wait = login_delay_wait(verified.limits); wait > 0) {
    event.result = LoginResult::delayed;
    event.retry_after = wait;
    std::string text = "Minimum time between logins is ";
    append_u64(text, delay);
    text += " seconds, try again in ";
    append_u64(text, wait);
    text += wait == 1 ? " second" : " seconds";
    return refuse_login(event, RespCode::login_delay, text, out);
  }
  const MailboxAddress where{user, verified.mail_location
                                       ? std::string_view(*verified.mail_location)
                                       : std::string_view()};
  if ((config_.inline_apop || config_.deferred_apop) && mech == "APOP" && !open_now &&
      !opener_.opens_without_waiting(where)) {
    // Checked on the event loop (inline, or awaited there: only APOP is;
    // PASS and AUTH steps already run off the loop), but this maildrop may take long to open (a big
    // Maildir, an mbox lock): the driver runs the open off its event loop (next() returns with
    // nothing written, blocking_step_next() is true).
    pending_open_ = std::make_unique<PendingOpen>(
        PendingOpen{std::move(verified), std::string(user), std::string(mech)});
    return;
  }
  auto md = opener_.open(where);
  if (!md.ok()) {
    if (md.error().code == Errc::in_use) {
      event.result = LoginResult::in_use;
      notify(event);
      return append_err(out, RespCode::in_use, "Mailbox is locked by another POP3 session");
    }
    event.result = LoginResult::error;
    notify(event);
    return append_err(out, RespCode::sys_temp, "Cannot open mailbox, try again later");
  }
  maildrop_ = std::move(*md);
  auto msgs = maildrop_->messages();
  // Message numbers are 32-bit; a larger maildrop is served in part.
  std::size_t count = std::min<std::uint64_t>(msgs.size(), limits::kMaxMessages);
  deleted_.assign(count, false);
  retrieved_.assign(count, false);
  live_count_ = count;
  live_size_ = 0;
  for (std::size_t i = 0; i < count; ++i) live_size_ += msgs[i].size;
  stats_.messages_at_login = count;
  user_ = std::string(user);
  state_ = State::transaction;
  login_delay_ = delay;
  expire_days_ = verified.limits.expire_days.value_or(config_.expire_days);
  auth_.record_login(user_, now());
  event.result = LoginResult::ok;
  notify(event);
  append_maildrop_ok(out, "Logged in, ");
}

}  // namespace apop::pop3
