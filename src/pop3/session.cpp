#include "pop3/session.hpp"

#include <array>
#include <chrono>
#include <cstdio>

#include "pop3/command.hpp"

namespace apop::pop3 {

namespace {

constexpr std::uint8_t kAuthz = 1 << 0;
constexpr std::uint8_t kTrans = 1 << 1;

std::string_view code_text(RespCode c) {
  switch (c) {
    case RespCode::none:
      return "";
    case RespCode::auth:
      return "[AUTH] ";
    case RespCode::in_use:
      return "[IN-USE] ";
    case RespCode::sys_temp:
      return "[SYS/TEMP] ";
    case RespCode::sys_perm:
      return "[SYS/PERM] ";
    case RespCode::login_delay:
      return "[LOGIN-DELAY] ";
  }
  return "";
}

// Identical for unknown users and wrong secrets (no user enumeration).
constexpr std::string_view kAuthFailed = "Authentication failed.";
constexpr std::string_view kPlaintextRefused =
    "Plaintext authentication disallowed on non-secure connection";

void append_u64(std::string& out, std::uint64_t v) {
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(v));
  out.append(buf, static_cast<std::size_t>(n));
}

}  // namespace

void append_ok(std::string& out, std::string_view text) {
  out.append(text.empty() ? "+OK" : "+OK ");
  out.append(text);
  out.append("\r\n");
}

void append_err(std::string& out, RespCode code, std::string_view text) {
  out.append("-ERR ");
  out.append(code_text(code));
  out.append(text);
  out.append("\r\n");
}

// The command table (Dovecot's pop3-commands idea): name, states, handler,
// and whether argument lengths are checked against RFC 1939's 40 octets.
struct CommandSpec {
  std::string_view name;
  std::uint8_t states;
  void (Session::*handler)(const ParsedCommand&, std::string&);
  bool check_arg_length;
};

struct SessionCommands {
  static const std::array<CommandSpec, 15>& table() {
    static const std::array<CommandSpec, 15> t{{
        {"CAPA", kAuthz | kTrans, &Session::cmd_capa, true},
        {"QUIT", kAuthz | kTrans, &Session::cmd_quit, true},
        {"USER", kAuthz, &Session::cmd_user, true},
        // PASS takes the rest of the line: passwords may hold spaces and
        // exceed 40 octets (as Dovecot and qpopper allow); the line limit holds.
        {"PASS", kAuthz, &Session::cmd_pass, false},
        {"APOP", kAuthz, &Session::cmd_apop, true},
        {"STLS", kAuthz, &Session::cmd_stls, true},
        // RFC 5034: the initial response may exceed 40 octets (the line limit holds).
        {"AUTH", kAuthz, &Session::cmd_auth, false},
        {"STAT", kTrans, &Session::cmd_stat, true},
        {"LIST", kTrans, &Session::cmd_list, true},
        {"UIDL", kTrans, &Session::cmd_uidl, true},
        {"RETR", kTrans, &Session::cmd_retr, true},
        {"TOP", kTrans, &Session::cmd_top, true},
        {"DELE", kTrans, &Session::cmd_dele, true},
        {"NOOP", kTrans, &Session::cmd_noop, true},
        {"RSET", kTrans, &Session::cmd_rset, true},
    }};
    return t;
  }
};

Session::Session(SessionConfig config, Authenticator& auth, MaildropOpener& opener,
                 std::string timestamp, EventSink* events)
    : config_(std::move(config)),
      auth_(auth),
      opener_(opener),
      events_(events),
      timestamp_(std::move(timestamp)),
      login_delay_(config_.login_delay),
      expire_days_(config_.expire_days) {}

Session::~Session() = default;

std::string Session::greeting() const {
  std::string g = "+OK ";
  g += config_.greeting_text;
  if (apop_possible()) {
    g += ' ';
    g += timestamp_;
  }
  g += "\r\n";
  return g;
}

bool Session::blocking_step_next() const {
  if (body_ || listing_next_ || close_after_output_) return false;  // output first
  if (pending_open_) return true;
  if (state_ != State::authorization && state_ != State::transaction) return false;
  const auto line = reader_.peek_line();
  if (!line) return false;
  const std::string_view verb = line->substr(0, line->find(' '));
  if (state_ == State::transaction) {
    // UPDATE unlinks (and fsyncs) only when something is to be removed:
    // DELE'd messages, or an EXPIRE policy (its delivery times cost a stat
    // per message).
    return iequals(verb, "QUIT") && (stats_.deleted > 0 || expire_days_ >= 0);
  }
  if (sasl_) return true;  // a SASL response: the mechanism may hash
  if (iequals(verb, "PASS") || iequals(verb, "AUTH")) return true;
  // inline_apop: the check runs here; opening a maildrop that may wait is
  // handed on afterwards (pending_open_ above).
  if (iequals(verb, "APOP")) return !config_.inline_apop;
  return false;
}

void Session::feed(std::string_view bytes) {
  if (state_ == State::closed) return;
  reader_.feed(bytes);
}

void Session::abort() {
  pending_open_.reset();
  body_.reset();
  body_retr_index_.reset();
  listing_next_.reset();
  maildrop_.reset();  // releases the lock; nothing is committed
  state_ = State::closed;
}

Next Session::next(std::string& out) {
  if (state_ == State::closed) return Next::close;
  if (pending_open_) {
    // The second half of an inline APOP: the credentials are checked, the
    // maildrop is opened now (blocking_step_next() said so).
    const auto p = std::move(pending_open_);
    finish_login(p->verified, p->user, p->mech, out, /*open_now=*/true);
    return Next::output;
  }
  if (body_) {
    auto r = body_->produce(out);
    if (!r.ok()) {
      // The +OK is already sent; the only honest end is to drop the
      // connection (the client sees a truncated reply, never a wrong one).
      abort();
      return Next::close;
    }
    if (*r) {
      body_.reset();
      // The whole message went out: EXPIRE 0 deletes it at QUIT.
      if (body_retr_index_) retrieved_[*body_retr_index_] = true;
      body_retr_index_.reset();
    }
    return Next::output;
  }
  if (listing_next_) {
    produce_listing(out);
    return Next::output;
  }
  if (close_after_output_) {
    abort();
    return Next::close;
  }
  auto item = reader_.pop();
  if (!item) return Next::need_input;
  switch (item->kind) {
    case LineReader::Kind::too_long:
      sasl_.reset();
      bad_command(out, "Line too long");
      break;
    case LineReader::Kind::bad_byte:
      sasl_.reset();
      bad_command(out, "Invalid character in command");
      break;
    case LineReader::Kind::line:
      if (sasl_) {
        sasl_continue(item->text, out);
      } else {
        dispatch(item->text, out);
      }
      break;
  }
  if (start_tls_after_output_) {
    start_tls_after_output_ = false;
    return Next::start_tls;
  }
  if (close_after_output_ && !body_ && !listing_next_) {
    // Keep the maildrop state decided by the handler (QUIT already committed).
    maildrop_.reset();
    state_ = State::closed;
    return Next::close;
  }
  return Next::output;
}

void Session::bad_command(std::string& out, std::string_view text) {
  ++bad_commands_;
  if (bad_commands_ >= config_.max_bad_commands) {
    append_err(out, RespCode::none, "Too many bad commands, closing connection");
    close_after_output_ = true;
    return;
  }
  append_err(out, RespCode::none, text);
}

void Session::dispatch(std::string_view line, std::string& out) {
  ParsedCommand cmd = parse_command(line);
  const std::uint8_t state_bit = state_ == State::authorization ? kAuthz : kTrans;
  for (const CommandSpec& spec : SessionCommands::table()) {
    if (!iequals(cmd.keyword, spec.name)) continue;
    if (!(spec.states & state_bit)) {
      bad_command(out, state_ == State::authorization ? "Not logged in" : "Already logged in");
      return;
    }
    if (spec.check_arg_length) {
      for (std::string_view a : cmd.args) {
        if (a.size() > limits::kMaxArgument) {
          bad_command(out, "Argument too long");
          return;
        }
      }
    }
    (this->*spec.handler)(cmd, out);
    return;
  }
  bad_command(out, "Unknown command");
}

void Session::cmd_capa(const ParsedCommand& cmd, std::string& out) {
  if (!cmd.args.empty()) return bad_command(out, "CAPA takes no arguments");
  out.append("+OK Capability list follows\r\nTOP\r\nUIDL\r\n");
  if (state_ == State::authorization && config_.stls_available && !tls_) out.append("STLS\r\n");
  if (state_ == State::authorization && plaintext_allowed()) out.append("USER\r\n");
  if (state_ == State::authorization) {
    auto mechs = usable_mechanisms();
    if (!mechs.empty()) {
      out.append("SASL");
      for (const auto& m : mechs) {
        out.push_back(' ');
        out.append(m.name);
      }
      out.append("\r\n");
    }
  }
  out.append("RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
  append_limit_capas(out);
  if (!config_.implementation.empty()) {
    out.append("IMPLEMENTATION ");
    out.append(config_.implementation);
    out.append("\r\n");
  }
  out.append(".\r\n");
}

void Session::tls_started() {
  tls_ = true;
  config_.secure = true;
  // Anything read before the handshake was sent in plaintext and must never
  // be executed (STARTTLS injection: CVE-2011-0411, CVE-2021-38084).
  reader_.clear();
}

void Session::cmd_stls(const ParsedCommand& cmd, std::string& out) {
  if (!cmd.args.empty()) return bad_command(out, "STLS takes no arguments");
  if (tls_) return append_err(out, RespCode::none, "TLS is already active");
  if (!config_.stls_available) return append_err(out, RespCode::none, "TLS is not available");
  append_ok(out, "Begin TLS negotiation now");
  // Bytes pipelined after STLS are discarded now, and again when the
  // handshake completes (tls_started), so none is ever executed.
  reader_.clear();
  pending_user_.reset();
  start_tls_after_output_ = true;
}

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
    case SaslReply::Kind::success:
    case SaslReply::Kind::failure: {
      sasl_.reset();
      AuthResult r{reply.kind == SaslReply::Kind::success, std::move(reply.credential),
                   std::move(reply.reason)};
      r.delay = reply.delay;
      r.limits = reply.limits;
      return finish_login(r, reply.user, sasl_mech_, out);
    }
  }
}

void Session::cmd_quit(const ParsedCommand& cmd, std::string& out) {
  if (!cmd.args.empty()) return bad_command(out, "QUIT takes no arguments");
  close_after_output_ = true;
  if (state_ == State::authorization) {
    append_ok(out, "Logging out");
    return;
  }
  // RFC 1939 §6: the UPDATE state. RFC 2449 EXPIRE removes its messages
  // here too, and only here (a session ending without QUIT removes nothing).
  state_ = State::update;
  const std::vector<std::size_t> expired = expired_messages();
  std::vector<std::size_t> doomed;
  for (std::size_t i = 0, e = 0; i < deleted_.size(); ++i) {
    const bool is_expired = e < expired.size() && expired[e] == i;
    if (is_expired) ++e;
    if (deleted_[i] || is_expired) doomed.push_back(i);
  }
  if (!doomed.empty()) {
    auto r = maildrop_->commit(doomed);
    if (!r.ok()) {
      append_err(out, RespCode::sys_temp, "Some deleted messages were not removed");
      return;
    }
  }
  stats_.committed = true;
  stats_.expired = expired.size();
  const std::uint64_t left = live_count_ - expired.size();
  std::string text = "Logging out (";
  append_u64(text, left);
  text += left == 1 ? " message left)" : " messages left)";
  append_ok(out, text);
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
  finish_login(auth_.verify_apop(cmd.args[0], timestamp_, cmd.args[1],
                                 AuthContext{tls_, config_.client_address}),
               cmd.args[0], "APOP", out);
}

void Session::finish_login(const AuthResult& verified, std::string_view user, std::string_view mech,
                           std::string& out, bool open_now) {
  auto notify = [&](LoginResult r) {
    if (!events_) return;
    LoginEvent e;
    e.user = user;
    e.mechanism = mech;
    e.result = r;
    e.credential = verified.credential;
    e.reason = verified.reason.empty() && !verified.ok ? std::string_view("credentials")
                                                       : std::string_view(verified.reason);
    e.tls = tls_;
    e.delay = verified.ok ? std::chrono::milliseconds(0) : verified.delay;
    events_->on_login(e);
  };
  if (!verified && verified.reason == "temporary") {
    // The account database is unavailable: the client may try again later
    // (still counted per connection, so that it cannot spin here).
    notify(LoginResult::error);
    ++auth_failures_;
    append_err(out, RespCode::sys_temp, "Authentication temporarily unavailable, try again later");
    if (auth_failures_ >= config_.max_auth_failures) {
      append_err(out, RespCode::none, "Too many authentication failures, closing connection");
      close_after_output_ = true;
    }
    return;
  }
  if (!verified) {
    notify(LoginResult::failed);
    ++auth_failures_;
    append_err(out, RespCode::auth, kAuthFailed);
    if (auth_failures_ >= config_.max_auth_failures) {
      append_err(out, RespCode::none, "Too many authentication failures, closing connection");
      close_after_output_ = true;
    }
    return;
  }
  // RFC 2449 §6.5 LOGIN-DELAY, checked only after correct credentials (a
  // wrong secret gets [AUTH] above, whatever the delay): a user who logged in
  // less than the delay ago is refused with [LOGIN-DELAY] and the maildrop is
  // not opened. A last login in the future (the clock went back) does not
  // lock the user out.
  const std::uint32_t delay = verified.limits.login_delay.value_or(config_.login_delay);
  if (delay > 0 && verified.limits.last_login) {
    const std::int64_t elapsed = now() - *verified.limits.last_login;
    if (elapsed >= 0 && elapsed < delay) {
      const auto wait = static_cast<std::uint32_t>(delay - elapsed);
      if (events_) {
        LoginEvent e;
        e.user = user;
        e.mechanism = mech;
        e.result = LoginResult::delayed;
        e.credential = verified.credential;
        e.reason = "login-delay";
        e.tls = tls_;
        e.retry_after = wait;
        events_->on_login(e);
      }
      // Counts as a failed login for the per-connection limit, so a client
      // cannot spin on it.
      ++auth_failures_;
      std::string text = "Minimum time between logins is ";
      append_u64(text, delay);
      text += " seconds, try again in ";
      append_u64(text, wait);
      text += wait == 1 ? " second" : " seconds";
      append_err(out, RespCode::login_delay, text);
      if (auth_failures_ >= config_.max_auth_failures) {
        append_err(out, RespCode::none, "Too many authentication failures, closing connection");
        close_after_output_ = true;
      }
      return;
    }
  }
  if (config_.inline_apop && mech == "APOP" && !open_now && !opener_.opens_without_waiting(user)) {
    // Checked inline (only APOP is: PASS and AUTH steps already run off the
    // loop), but this maildrop may take long to open (a big Maildir, an mbox
    // lock): the driver runs the open off its event loop (next() returns
    // with nothing written, blocking_step_next() is true).
    pending_open_ =
        std::make_unique<PendingOpen>(PendingOpen{verified, std::string(user), std::string(mech)});
    return;
  }
  auto md = opener_.open(user);
  if (!md.ok()) {
    if (md.error().code == Errc::in_use) {
      notify(LoginResult::in_use);
      return append_err(out, RespCode::in_use, "Mailbox is locked by another POP3 session");
    }
    notify(LoginResult::error);
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
  notify(LoginResult::ok);
  std::string text = "Logged in, ";
  append_u64(text, live_count_);
  text += live_count_ == 1 ? " message (" : " messages (";
  append_u64(text, live_size_);
  text += " octets)";
  append_ok(out, text);
}

std::optional<std::size_t> Session::message_arg(std::string_view arg, std::string& out) {
  auto n = parse_number(arg);
  if (!n) {
    bad_command(out, "Invalid message number");
    return std::nullopt;
  }
  if (*n == 0 || *n > deleted_.size()) {
    append_err(out, RespCode::none, "No such message");
    return std::nullopt;
  }
  std::size_t i = *n - 1;
  if (deleted_[i]) {
    append_err(out, RespCode::none, "Message is deleted");
    return std::nullopt;
  }
  return i;
}

void Session::cmd_stat(const ParsedCommand& cmd, std::string& out) {
  if (!cmd.args.empty()) return bad_command(out, "STAT takes no arguments");
  out.append("+OK ");
  append_u64(out, live_count_);
  out.push_back(' ');
  append_u64(out, live_size_);
  out.append("\r\n");
}

void Session::cmd_list(const ParsedCommand& cmd, std::string& out) {
  if (cmd.args.size() > 1) return bad_command(out, "Usage: LIST [message]");
  if (cmd.args.empty()) return start_listing(false, out);
  auto i = message_arg(cmd.args[0], out);
  if (!i) return;
  out.append("+OK ");
  append_u64(out, *i + 1);
  out.push_back(' ');
  append_u64(out, maildrop_->messages()[*i].size);
  out.append("\r\n");
}

void Session::cmd_uidl(const ParsedCommand& cmd, std::string& out) {
  if (cmd.args.size() > 1) return bad_command(out, "Usage: UIDL [message]");
  if (cmd.args.empty()) return start_listing(true, out);
  auto i = message_arg(cmd.args[0], out);
  if (!i) return;
  out.append("+OK ");
  append_u64(out, *i + 1);
  out.push_back(' ');
  out.append(maildrop_->messages()[*i].uidl);
  out.append("\r\n");
}

void Session::start_listing(bool uidl, std::string& out) {
  if (uidl) {
    out.append("+OK Unique-ID listing follows\r\n");
  } else {
    out.append("+OK ");
    append_u64(out, live_count_);
    out.append(live_count_ == 1 ? " message (" : " messages (");
    append_u64(out, live_size_);
    out.append(" octets)\r\n");
  }
  listing_uidl_ = uidl;
  listing_next_ = 0;
}

void Session::produce_listing(std::string& out) {
  auto msgs = maildrop_->messages();
  std::size_t i = *listing_next_;
  const std::size_t budget = out.size() + limits::kBodyChunk;
  for (; i < deleted_.size() && out.size() < budget; ++i) {
    if (deleted_[i]) continue;
    append_u64(out, i + 1);
    out.push_back(' ');
    if (listing_uidl_) {
      out.append(msgs[i].uidl);
    } else {
      append_u64(out, msgs[i].size);
    }
    out.append("\r\n");
  }
  if (i < deleted_.size()) {
    listing_next_ = i;
    return;
  }
  out.append(".\r\n");
  listing_next_.reset();
}

void Session::start_body(std::size_t index, std::optional<std::uint64_t> top, std::string& out) {
  auto src = maildrop_->open(index);
  if (!src.ok()) {
    if (src.error().code == Errc::not_found) {
      return append_err(out, RespCode::none, "Message is no longer available");
    }
    return append_err(out, RespCode::sys_temp, "Cannot read message, try again later");
  }
  const std::uint64_t size = maildrop_->messages()[index].size;
  body_retr_index_.reset();
  if (!top) body_retr_index_ = index;
  if (top) {
    ++stats_.top;
    out.append("+OK Top of message follows\r\n");
  } else {
    ++stats_.retr;
    stats_.retr_bytes += size;
    out.append("+OK ");
    append_u64(out, size);
    out.append(" octets\r\n");
  }
  body_ = std::make_unique<BodyStreamer>(std::move(*src), top);
}

void Session::cmd_retr(const ParsedCommand& cmd, std::string& out) {
  if (cmd.args.size() != 1) return bad_command(out, "Usage: RETR message");
  auto i = message_arg(cmd.args[0], out);
  if (!i) return;
  start_body(*i, std::nullopt, out);
}

void Session::cmd_top(const ParsedCommand& cmd, std::string& out) {
  if (cmd.args.size() != 2) return bad_command(out, "Usage: TOP message lines");
  auto lines = parse_count(cmd.args[1]);
  if (!lines) return bad_command(out, "Invalid number of lines");
  auto i = message_arg(cmd.args[0], out);
  if (!i) return;
  start_body(*i, *lines, out);
}

void Session::cmd_dele(const ParsedCommand& cmd, std::string& out) {
  if (cmd.args.size() != 1) return bad_command(out, "Usage: DELE message");
  auto i = message_arg(cmd.args[0], out);
  if (!i) return;
  deleted_[*i] = true;
  const std::uint64_t size = maildrop_->messages()[*i].size;
  --live_count_;
  live_size_ -= size;
  ++stats_.deleted;
  stats_.deleted_bytes += size;
  append_ok(out, "Message deleted");
}

std::int64_t Session::now() const {
  if (config_.clock) return config_.clock();
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// RFC 2449 §6.5 / §6.7: before login the server-wide values, with "USER"
// appended when some account has its own; after login the user's values,
// never with "USER".
void Session::append_limit_capas(std::string& out) const {
  const bool before_login = state_ == State::authorization;
  out.append("LOGIN-DELAY ");
  append_u64(out, login_delay_);
  if (before_login && config_.login_delay_per_user) out.append(" USER");
  out.append("\r\nEXPIRE ");
  if (expire_days_ < 0) {
    out.append("NEVER");
  } else {
    append_u64(out, static_cast<std::uint64_t>(expire_days_));
  }
  if (before_login && config_.expire_per_user) out.append(" USER");
  out.append("\r\n");
}

std::vector<std::size_t> Session::expired_messages() const {
  std::vector<std::size_t> out;
  if (expire_days_ < 0 || !maildrop_) return out;
  if (expire_days_ > 0) maildrop_->load_delivery_times();
  auto msgs = maildrop_->messages();
  const std::int64_t t = now();
  const std::int64_t max_age = expire_days_ * 86400;
  for (std::size_t i = 0; i < deleted_.size(); ++i) {
    if (deleted_[i]) continue;
    // EXPIRE 0: "the server MAY assume an implicit DELE for each message
    // which was downloaded via RETR" -- only those. Otherwise: messages of a
    // known delivery time at least the limit old.
    const bool expired = expire_days_ == 0
                             ? retrieved_[i]
                             : msgs[i].delivered > 0 && t - msgs[i].delivered >= max_age;
    if (expired) out.push_back(i);
  }
  return out;
}

void Session::cmd_noop(const ParsedCommand& cmd, std::string& out) {
  if (!cmd.args.empty()) return bad_command(out, "NOOP takes no arguments");
  append_ok(out, "");
}

void Session::cmd_rset(const ParsedCommand& cmd, std::string& out) {
  if (!cmd.args.empty()) return bad_command(out, "RSET takes no arguments");
  auto msgs = maildrop_->messages();
  live_count_ = deleted_.size();
  live_size_ = 0;
  for (std::size_t i = 0; i < deleted_.size(); ++i) {
    deleted_[i] = false;
    live_size_ += msgs[i].size;
  }
  stats_.deleted = 0;
  stats_.deleted_bytes = 0;
  std::string text = "Maildrop has ";
  append_u64(text, live_count_);
  text += live_count_ == 1 ? " message (" : " messages (";
  append_u64(text, live_size_);
  text += " octets)";
  append_ok(out, text);
}

}  // namespace apop::pop3
