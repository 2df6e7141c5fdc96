#include "pop3/session.hpp"

#include <array>
#include <charconv>
#include <chrono>

#include "common/wipe.hpp"
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

}  // namespace

void append_u64(std::string& out, std::uint64_t v) {
  char buf[20];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

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
// whether argument lengths are checked against RFC 1939's 40 octets, and
// whether the command may block (Session::blocking_step_next).
struct CommandSpec {
  std::string_view name;
  std::uint8_t states;
  void (Session::*handler)(const ParsedCommand&, std::string&);
  bool check_arg_length;
  bool (Session::*blocks)() const;
};

struct SessionCommands {
  static const std::array<CommandSpec, 15>& table() {
    static const std::array<CommandSpec, 15> t{{
        {"CAPA", kAuthz | kTrans, &Session::cmd_capa, true, &Session::never_blocks},
        // UPDATE unlinks (and fsyncs) when something is to be removed.
        {"QUIT", kAuthz | kTrans, &Session::cmd_quit, true, &Session::update_blocks},
        {"USER", kAuthz, &Session::cmd_user, true, &Session::never_blocks},
        // PASS takes the rest of the line: passwords may hold spaces and
        // exceed 40 octets (as Dovecot and qpopper allow); the line limit
        // holds. A slow hash.
        {"PASS", kAuthz, &Session::cmd_pass, false, &Session::always_blocks},
        // An MD5 per secret and a lookup: inline when the lookup is local
        // (SessionConfig::inline_apop); opening a maildrop that may wait is
        // handed on afterwards (pending_open_).
        {"APOP", kAuthz, &Session::cmd_apop, true, &Session::apop_blocks},
        {"STLS", kAuthz, &Session::cmd_stls, true, &Session::never_blocks},
        // RFC 5034: the initial response may exceed 40 octets (the line limit
        // holds). The mechanism may hash.
        {"AUTH", kAuthz, &Session::cmd_auth, false, &Session::always_blocks},
        {"STAT", kTrans, &Session::cmd_stat, true, &Session::never_blocks},
        {"LIST", kTrans, &Session::cmd_list, true, &Session::never_blocks},
        {"UIDL", kTrans, &Session::cmd_uidl, true, &Session::never_blocks},
        {"RETR", kTrans, &Session::cmd_retr, true, &Session::never_blocks},
        {"TOP", kTrans, &Session::cmd_top, true, &Session::never_blocks},
        {"DELE", kTrans, &Session::cmd_dele, true, &Session::never_blocks},
        {"NOOP", kTrans, &Session::cmd_noop, true, &Session::never_blocks},
        {"RSET", kTrans, &Session::cmd_rset, true, &Session::never_blocks},
    }};
    return t;
  }
  static const CommandSpec* find(std::string_view keyword) {
    for (const CommandSpec& spec : table()) {
      if (iequals(keyword, spec.name)) return &spec;
    }
    return nullptr;
  }
};

// The next input item, taken from the LineReader and looked up once.
struct Session::Staged {
  ~Staged() { wipe(line); }  // PASS and SASL lines carry secrets
  LineReader::Kind kind = LineReader::Kind::line;
  std::string line;         // Kind::line: the command (or SASL response) line
  ParsedCommand cmd;        // views into `line`; empty for a SASL response
  const CommandSpec* spec;  // nullptr: unknown command, SASL response or not a line
  bool sasl = false;        // a response of the AUTH exchange in progress
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

bool Session::stage() {
  if (staged_) return true;
  auto item = reader_.pop();
  if (!item) return false;
  auto st = std::make_unique<Staged>();
  st->kind = item->kind;
  st->spec = nullptr;
  if (item->kind == LineReader::Kind::line) {
    st->line.assign(item->text);
    st->sasl = sasl_ != nullptr;
    if (!st->sasl) {
      st->cmd = parse_command(st->line);
      st->spec = SessionCommands::find(st->cmd.keyword);
    }
  }
  staged_ = std::move(st);
  return true;
}

bool Session::update_blocks() const {
  return state_ == State::transaction && (stats_.deleted > 0 || expire_days_ >= 0);
}

bool Session::blocking_step_next() {
  if (pending_check_) return false;  // the driver awaits it (Next::verify)
  if (body_ || listing_next_ || close_after_output_) return false;  // output first
  if (pending_open_) return true;
  if (state_ != State::authorization && state_ != State::transaction) return false;
  if (!stage()) return false;
  if (staged_->sasl) return true;  // a SASL response: the mechanism may hash
  return staged_->spec != nullptr && (this->*(staged_->spec->blocks))();
}

void Session::feed(std::string_view bytes) {
  if (state_ == State::closed) return;
  reader_.feed(bytes);
}

void Session::abort() {
  pending_open_.reset();
  pending_check_.reset();
  staged_.reset();
  body_.reset();
  body_retr_index_.reset();
  listing_next_.reset();
  maildrop_.reset();  // releases the lock; nothing is committed
  state_ = State::closed;
}

Next Session::next(std::string& out) {
  if (state_ == State::closed) return Next::close;
  if (pending_check_) return Next::verify;  // the driver has not run it yet
  if (pending_open_) {
    // The second half of an inline APOP: the credentials are checked, the
    // maildrop is opened now (blocking_step_next() said so).
    const auto p = std::move(pending_open_);
    finish_login(std::move(p->verified), p->user, p->mech, out, /*open_now=*/true);
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
  if (!stage()) return Next::need_input;
  const std::unique_ptr<Staged> item = std::move(staged_);
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
      if (item->sasl) {
        sasl_continue(item->line, out);
      } else {
        dispatch(*item, out);
      }
      break;
  }
  if (start_tls_after_output_) {
    start_tls_after_output_ = false;
    return Next::start_tls;
  }
  if (pending_check_) return Next::verify;
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

void Session::dispatch(const Staged& staged, std::string& out) {
  const CommandSpec* spec = staged.spec;
  if (spec == nullptr) return bad_command(out, "Unknown command");
  const std::uint8_t state_bit = state_ == State::authorization ? kAuthz : kTrans;
  if (!(spec->states & state_bit)) {
    return bad_command(out, state_ == State::authorization ? "Not logged in" : "Already logged in");
  }
  if (spec->check_arg_length) {
    for (std::string_view a : staged.cmd.args) {
      if (a.size() > limits::kMaxArgument) return bad_command(out, "Argument too long");
    }
  }
  (this->*(spec->handler))(staged.cmd, out);
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
  staged_.reset();
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
  append_maildrop_ok(out, "Maildrop has ");
}

void Session::append_maildrop_ok(std::string& out, std::string_view lead) const {
  std::string text(lead);
  append_u64(text, live_count_);
  text += live_count_ == 1 ? " message (" : " messages (";
  append_u64(text, live_size_);
  text += " octets)";
  append_ok(out, text);
}

}  // namespace apop::pop3
