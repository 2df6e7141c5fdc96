#include "ipc/auth_service.hpp"

#include <string.h>  // explicit_bzero (glibc)
#include <sys/socket.h>

#include <algorithm>
#include <utility>

#include "common/posix_fd.hpp"

namespace apop::ipc {

namespace {

Reply error(ErrorCode code) { return ErrorReply{code}; }

pop3::AuthContext context(bool tls, std::string_view address) {
  return pop3::AuthContext{tls, address};
}

// A name the decoder accepts (RFC 4422 §3.1).
bool sendable_mechanism(std::string_view name) {
  if (name.empty() || name.size() > kMaxMechanism) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

}  // namespace

// One SASL exchange of the worker. `busy` while a thread steps it outside the
// lock (a second request for it is refused: a worker steps an exchange from
// one session, one line at a time); `ended` when sasl_end came meanwhile.
struct AuthService::Exchange {
  std::unique_ptr<pop3::SaslSession> session;
  std::string address;  // AuthContext::address is borrowed: the exchange keeps it
  Clock::time_point last;
  bool busy = true;
  bool ended = false;
};

AuthService::AuthService(pop3::Authenticator& auth, AuthServiceLimits limits,
                         pop3::MaildropLocks* locks)
    : auth_(auth),
      limits_(limits),
      locks_(locks),
      requests_{limits.rate, limits.burst, limits.burst, Clock::now()},
      failures_{limits.failure_rate, limits.failure_burst, limits.failure_burst, Clock::now()} {}

void AuthService::Bucket::refill(Clock::time_point now) {
  const double elapsed = std::chrono::duration<double>(now - refilled).count();
  refilled = now;
  tokens = std::min(burst, tokens + elapsed * rate);
}

AuthService::~AuthService() { release_maildrop_locks(); }

std::size_t AuthService::sasl_exchanges() const {
  std::lock_guard lock(mu_);
  return exchanges_.size();
}

std::uint32_t AuthService::worker_id() const {
  std::lock_guard lock(mu_);
  return worker_id_;
}

std::size_t AuthService::maildrop_locks() const {
  std::lock_guard lock(mu_);
  return maildrop_lock_count_;
}

bool AuthService::take_token() {
  std::lock_guard lock(mu_);
  requests_.refill(Clock::now());
  if (requests_.tokens < 1) return false;
  requests_.tokens -= 1;
  return true;
}

bool AuthService::failures_allowed() {
  std::lock_guard lock(mu_);
  failures_.refill(Clock::now());
  return failures_.tokens >= 1;
}

void AuthService::count_result(const pop3::AuthResult& r) {
  // mu_ held.
  if (r.ok || r.failure == pop3::AuthFailure::temporary) return;
  failures_.refill(Clock::now());
  failures_.tokens = std::max(0.0, failures_.tokens - 1);
}

void AuthService::expire_exchanges(Clock::time_point now) {
  for (auto it = exchanges_.begin(); it != exchanges_.end();) {
    if (!it->second->busy && now - it->second->last > limits_.sasl_idle) {
      it = exchanges_.erase(it);
    } else {
      ++it;
    }
  }
}

void AuthService::note_login(std::string_view user) {
  // mu_ held.
  const auto now = Clock::now();
  while (!logins_.empty() && (logins_.size() >= limits_.pending_login_records ||
                              now - logins_.front().at > limits_.sasl_idle)) {
    logins_.pop_front();
  }
  if (limits_.pending_login_records > 0) logins_.push_back({std::string(user), now, false});
}

AuthService::Handled AuthService::handle(std::string_view request) {
  Handled h;
  auto decoded = decode_request(request);
  if (!decoded) {
    // The worker is broken or hostile: say so once (the id if the header
    // was readable) and close the channel.
    h.close = true;
    (void)encode_reply(peek_request_id(request).value_or(0), ErrorReply{ErrorCode::malformed},
                       h.reply);
    return h;
  }
  const DecodedRequest& req = *decoded;
  // Ending an exchange and giving back a lock are never rate limited: they
  // free what the worker holds.
  const bool frees =
      std::holds_alternative<SaslEnd>(req.body) || std::holds_alternative<UnlockMaildrop>(req.body);
  Reply reply = frees || take_token() ? dispatch(req) : error(ErrorCode::rate_limited);
  if (!encode_reply(req.id, reply, h.reply)) {
    // A result over a field's bound (a mail location longer than
    // kMaxIpcMailLocation): the worker's login fails as temporary.
    (void)encode_reply(req.id, ErrorReply{ErrorCode::refused}, h.reply);
  }
  // The worker never waits for record_login's answer (one system call on
  // each side less per login): it is made, for tests, but not sent.
  h.send = !std::holds_alternative<RecordLogin>(req.body);
  return h;
}

Reply AuthService::dispatch(const DecodedRequest& request) {
  struct Visitor {
    AuthService& s;
    Reply operator()(const Hello& m) {
      std::lock_guard lock(s.mu_);
      s.worker_id_ = m.worker_id;
      return Ack{};
    }
    Reply operator()(const VerifyApop& m) {
      if (!s.failures_allowed()) return error(ErrorCode::rate_limited);
      return s.verified(
          m.user, s.auth_.verify_apop(m.user, m.timestamp, m.digest, context(m.tls, m.address)));
    }
    Reply operator()(const VerifyPlain& m) {
      if (!s.failures_allowed()) return error(ErrorCode::rate_limited);
      return s.verified(m.user,
                        s.auth_.verify_plain(m.user, m.password, context(m.tls, m.address)));
    }
    Reply operator()(const SaslStart& m) {
      if (!s.failures_allowed()) return error(ErrorCode::rate_limited);
      return s.sasl_start(m);
    }
    Reply operator()(const SaslStep& m) {
      if (!s.failures_allowed()) return error(ErrorCode::rate_limited);
      return s.sasl_step(m.exchange, m.response);
    }
    Reply operator()(const SaslEnd& m) { return s.sasl_end(m.exchange); }
    Reply operator()(const RecordLogin& m) { return s.record_login(m); }
    Reply operator()(const LockMaildrop& m) { return s.lock_maildrop(m.user); }
    Reply operator()(const UnlockMaildrop& m) { return s.unlock_maildrop(m.user); }
    Reply operator()(const Mechanisms&) {
      MechanismList list;
      for (auto& mech : s.auth_.sasl_mechanisms()) {
        if (list.mechanisms.size() == kMaxMechanisms) break;
        if (sendable_mechanism(mech.name)) list.mechanisms.push_back(std::move(mech));
      }
      return list;
    }
  };
  return std::visit(Visitor{*this}, request.body);
}

Reply AuthService::verified(std::string_view user, pop3::AuthResult r) {
  std::lock_guard lock(mu_);
  count_result(r);
  if (r.ok) note_login(user);
  return r;
}

Reply AuthService::sasl_start(const SaslStart& m) {
  Exchange* ex = nullptr;
  {
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    expire_exchanges(now);
    if (exchanges_.count(m.exchange) != 0 || exchanges_.size() >= limits_.max_sasl_exchanges) {
      return error(ErrorCode::refused);
    }
    auto e = std::make_unique<Exchange>();
    e->address = std::string(m.address);
    e->last = now;
    ex = e.get();
    exchanges_.emplace(m.exchange, std::move(e));
  }
  // Busy: no other thread touches *ex until it is released below.
  ex->session = auth_.start_sasl(m.mechanism, context(m.tls, ex->address));
  if (!ex->session) {
    std::lock_guard lock(mu_);
    exchanges_.erase(m.exchange);
    return error(ErrorCode::refused);
  }
  return run_step(m.exchange, *ex, m.initial);
}

Reply AuthService::sasl_step(std::uint32_t exchange, std::optional<std::string_view> response) {
  Exchange* ex = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = exchanges_.find(exchange);
    if (it == exchanges_.end() || it->second->busy) return error(ErrorCode::refused);
    ex = it->second.get();
    ex->busy = true;
  }
  return run_step(exchange, *ex, response);
}

Reply AuthService::run_step(std::uint32_t id, Exchange& ex,
                            std::optional<std::string_view> response) {
  pop3::SaslReply r = ex.session->step(response);
  std::unique_ptr<Exchange> finished;  // destroyed outside the lock
  std::lock_guard lock(mu_);
  if (r.succeeded()) note_login(r.user);
  if (r.failed()) count_result(r.result);
  auto it = exchanges_.find(id);
  if (r.kind != pop3::SaslReply::Kind::challenge || ex.ended) {
    // The session drops an exchange after done or malformed.
    finished = std::move(it->second);
    exchanges_.erase(it);
  } else {
    ex.busy = false;
    ex.last = Clock::now();
  }
  return r;
}

Reply AuthService::sasl_end(std::uint32_t exchange) {
  std::unique_ptr<Exchange> finished;  // destroyed outside the lock
  std::lock_guard lock(mu_);
  auto it = exchanges_.find(exchange);
  if (it == exchanges_.end()) return Ack{};  // ended already (or never started): fine
  if (it->second->busy) {
    it->second->ended = true;  // the stepping thread removes it
  } else {
    finished = std::move(it->second);
    exchanges_.erase(it);
  }
  return Ack{};
}

Reply AuthService::record_login(const RecordLogin& m) {
  const auto now = Clock::now();
  {
    std::lock_guard lock(mu_);
    // Logins of one user are alike; one whose lock was taken goes first, so
    // that those still to take theirs keep an entry.
    auto fresh = [&](const PendingLogin& e) {
      return e.user == m.user && now - e.at <= limits_.sasl_idle;
    };
    auto it = std::find_if(logins_.begin(), logins_.end(),
                           [&](const PendingLogin& e) { return fresh(e) && e.locked; });
    if (it == logins_.end()) it = std::find_if(logins_.begin(), logins_.end(), fresh);
    if (it == logins_.end()) return error(ErrorCode::refused);
    logins_.erase(it);
  }
  // The worker's clock is the host's; a time far from ours is not believed.
  const std::int64_t ours = std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
  const std::int64_t when =
      m.when > ours - kRecordSlack && m.when < ours + kRecordSlack ? m.when : ours;
  auth_.record_login(m.user, when);
  return Ack{};
}

Reply AuthService::lock_maildrop(std::string_view user) {
  if (locks_ == nullptr) return error(ErrorCode::refused);
  {
    std::lock_guard lock(mu_);
    if (maildrop_lock_count_ >= limits_.max_maildrop_locks) return error(ErrorCode::refused);
    // Only for a user who just logged in through this worker, once per login.
    const auto now = Clock::now();
    auto it = std::find_if(logins_.begin(), logins_.end(), [&](const PendingLogin& e) {
      return e.user == user && !e.locked && now - e.at <= limits_.sasl_idle;
    });
    if (it == logins_.end()) return error(ErrorCode::refused);
    it->locked = true;
    auto [entry, _] = maildrop_locks_.try_emplace(std::string(user));
    ++entry->second.taking;
    ++maildrop_lock_count_;
  }
  // Outside the lock: a round trip to the database.
  const auto asked = Clock::now();
  Result<bool> got = locks_->try_lock(user);
  if (got && *got && Clock::now() - asked > limits_.lock_answer_within) {
    locks_->release(user);  // too late for the worker to be waiting
    got = make_error(Errc::temporary, "maildrop lock granted too late");
  }
  std::lock_guard lock(mu_);
  auto it = maildrop_locks_.find(user);  // there: only this thread removes a `taking`
  --it->second.taking;
  if (got && *got) {
    ++it->second.held;
    return LockStatus{LockOutcome::locked};
  }
  if (it->second.held == 0 && it->second.taking == 0) maildrop_locks_.erase(it);
  --maildrop_lock_count_;
  return LockStatus{got ? LockOutcome::in_use : LockOutcome::temporary};
}

Reply AuthService::unlock_maildrop(std::string_view user) {
  if (locks_ == nullptr) return error(ErrorCode::refused);
  {
    std::lock_guard lock(mu_);
    auto it = maildrop_locks_.find(user);
    // Only a lock taken for this worker, and answered.
    if (it == maildrop_locks_.end() || it->second.held == 0) return error(ErrorCode::refused);
    --it->second.held;
    if (it->second.held == 0 && it->second.taking == 0) maildrop_locks_.erase(it);
    --maildrop_lock_count_;
  }
  locks_->release(user);
  return Ack{};
}

std::size_t AuthService::release_maildrop_locks() {
  std::map<std::string, UserLocks, std::less<>> held;
  {
    std::lock_guard lock(mu_);
    for (auto it = maildrop_locks_.begin(); it != maildrop_locks_.end();) {
      maildrop_lock_count_ -= it->second.held;
      if (it->second.taking == 0) {
        held.insert(maildrop_locks_.extract(it++));
      } else {
        // Still being taken (a handle() running after all): its thread
        // finishes it.
        held.emplace(it->first, UserLocks{it->second.held, 0});
        it->second.held = 0;
        ++it;
      }
    }
  }
  std::size_t n = 0;
  for (const auto& [user, l] : held) {
    for (unsigned i = 0; i < l.held; ++i, ++n) locks_->release(user);
  }
  return n;
}

ServeEnd AuthService::serve(int fd) {
  {
    std::lock_guard lock(mu_);
    ++serving_;
  }
  const ServeEnd end = serve_channel(fd);
  bool last = false;
  {
    std::lock_guard lock(mu_);
    last = --serving_ == 0;
  }
  // The worker closed its last channel (exited, died, was killed): nothing
  // will give its locks back but us.
  if (last) release_maildrop_locks();
  return end;
}

ServeEnd AuthService::serve_channel(int fd) {
  // One buffer for the whole channel (never reallocated), wiped after each
  // request: it holds passwords, digests and SASL responses.
  std::string buf(limits::kMaxIpcMessage + 1, '\0');
  for (;;) {
    const ssize_t n = retry_eintr([&] { return ::recv(fd, buf.data(), buf.size(), MSG_TRUNC); });
    if (n == 0) return ServeEnd::eof;  // (an empty packet too: no valid message is empty)
    if (n < 0) return errno == ECONNRESET ? ServeEnd::eof : ServeEnd::io_error;
    const auto size = static_cast<std::size_t>(n);
    if (size > limits::kMaxIpcMessage) {
      explicit_bzero(buf.data(), buf.size());
      ::shutdown(fd, SHUT_RDWR);
      return ServeEnd::violation;
    }
    Handled h = handle(std::string_view(buf.data(), size));
    explicit_bzero(buf.data(), size);
    if (!h.send) continue;
    const ssize_t w =
        retry_eintr([&] { return ::send(fd, h.reply.data(), h.reply.size(), MSG_NOSIGNAL); });
    if (h.close) {
      ::shutdown(fd, SHUT_RDWR);
      return ServeEnd::violation;
    }
    if (w < 0) return errno == EPIPE || errno == ECONNRESET ? ServeEnd::eof : ServeEnd::io_error;
  }
}

}  // namespace apop::ipc
