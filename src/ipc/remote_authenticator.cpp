#include "ipc/remote_authenticator.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <utility>

namespace apop::ipc {

namespace {

Error failed(std::string message) { return make_error(Errc::temporary, std::move(message)); }

// Whether `reply` answers `request` (an error reply answers anything).
bool answers(const Request& request, const Reply& reply) {
  if (std::holds_alternative<ErrorReply>(reply)) return true;
  switch (request_type(request)) {
    case MsgType::hello:
    case MsgType::sasl_end:
    case MsgType::record_login:
    case MsgType::unlock_maildrop:
      return std::holds_alternative<Ack>(reply);
    case MsgType::lock_maildrop:
      return std::holds_alternative<LockStatus>(reply);
    case MsgType::verify_apop:
    case MsgType::verify_plain:
      return std::holds_alternative<pop3::AuthResult>(reply);
    case MsgType::sasl_start:
    case MsgType::sasl_step:
      return std::holds_alternative<pop3::SaslReply>(reply);
    case MsgType::mechanisms:
      return std::holds_alternative<MechanismList>(reply);
    default:
      return false;
  }
}

// The address key as the wire carries it (an IP address key is far
// shorter; anything else is cut).
std::string_view wire_address(std::string_view a) { return a.substr(0, kMaxAddress); }

// Milliseconds left until `deadline` for poll(), rounded up; 0 when passed.
int poll_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left = deadline - std::chrono::steady_clock::now();
  if (left <= std::chrono::steady_clock::duration::zero()) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(ms);
}

}  // namespace

struct RemoteAuthenticator::Channel {
  UniqueFd fd;
  std::uint64_t generation = 0;
};

// One SASL exchange as the worker sees it: the mechanism and context are
// kept until the first step, which sends sasl_start with the initial
// response (one round trip less than a separate start).
class RemoteAuthenticator::Exchange final : public pop3::SaslSession {
 public:
  Exchange(RemoteAuthenticator& owner, std::uint32_t id, std::string mechanism,
           const pop3::AuthContext& ctx)
      : owner_(owner),
        id_(id),
        mechanism_(std::move(mechanism)),
        tls_(ctx.tls),
        address_(wire_address(ctx.address)) {}
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;
  ~Exchange() override {
    // Cancelled ("*"), a connection closed mid-exchange, or a failed step:
    // the auth process may still hold the exchange.
    if (open_at_auth_) (void)owner_.call(SaslEnd{id_});
  }

  pop3::SaslReply step(std::optional<std::string_view> response) override {
    if (finished_)
      return pop3::SaslReply::done("",
                                   pop3::AuthResult::temporary());  // the session never does this
    Result<Reply> r = started_ ? owner_.call(SaslStep{id_, response})
                               : owner_.call(SaslStart{id_, mechanism_, response, tls_, address_});
    started_ = true;
    open_at_auth_ = true;
    if (!r || !std::holds_alternative<pop3::SaslReply>(r.value())) {
      finished_ = true;  // open_at_auth_ stays: sasl_end at destruction
      return pop3::SaslReply::done("", pop3::AuthResult::temporary());
    }
    pop3::SaslReply reply = std::get<pop3::SaslReply>(std::move(r).value());
    if (reply.kind != pop3::SaslReply::Kind::challenge) {
      finished_ = true;
      open_at_auth_ = false;  // the auth process dropped it
    }
    return reply;
  }

 private:
  RemoteAuthenticator& owner_;
  const std::uint32_t id_;
  const std::string mechanism_;
  const bool tls_;
  const std::string address_;
  bool started_ = false;
  bool finished_ = false;
  bool open_at_auth_ = false;
};

RemoteAuthenticator::RemoteAuthenticator(std::vector<UniqueFd> channels,
                                         std::chrono::milliseconds timeout,
                                         std::optional<std::vector<pop3::SaslMechanism>> mechanisms)
    : timeout_(timeout) {
  replace_channels(std::move(channels));
  if (mechanisms) {
    mechanisms_ = std::move(*mechanisms);
  } else {
    (void)fetch_mechanisms();
  }
}

RemoteAuthenticator::~RemoteAuthenticator() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  records_queued_.notify_all();
  if (flusher_.joinable()) flusher_.join();
  flush_records();
}

void RemoteAuthenticator::replace_channels(std::vector<UniqueFd> channels) {
  std::lock_guard lock(mu_);
  ++generation_;
  // Free channels close now; those in use are shut down (the call waiting on
  // one sees end of file and fails as temporary) and closed at release().
  for (auto it = channels_.begin(); it != channels_.end();) {
    if (std::find(free_.begin(), free_.end(), it->get()) != free_.end()) {
      it = channels_.erase(it);
    } else {
      ::shutdown((*it)->fd.get(), SHUT_RDWR);
      ++it;
    }
  }
  free_.clear();
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout_).count();
  const timeval tv{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
  for (auto& fd : channels) {
    if (!fd) continue;
    // Bounds each blocking receive (exchange()); a channel without it would
    // wait for a hung auth process forever, so it is not used.
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) continue;
    auto ch = std::make_unique<Channel>();
    ch->fd = std::move(fd);
    ch->generation = generation_;
    free_.push_back(ch.get());
    channels_.push_back(std::move(ch));
  }
  freed_.notify_all();
}

UniqueFd RemoteAuthenticator::take_channel() {
  std::lock_guard lock(mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    Channel* ch = *it;
    if (ch->generation != generation_) continue;
    free_.erase(it);
    UniqueFd fd = std::move(ch->fd);
    channels_.erase(std::find_if(channels_.begin(), channels_.end(),
                                 [&](const auto& c) { return c.get() == ch; }));
    return fd;
  }
  return UniqueFd();
}

std::size_t RemoteAuthenticator::live_channels() const {
  std::lock_guard lock(mu_);
  return static_cast<std::size_t>(
      std::count_if(channels_.begin(), channels_.end(),
                    [&](const auto& c) { return c->generation == generation_; }));
}

RemoteAuthenticator::Channel* RemoteAuthenticator::acquire(Clock::time_point deadline,
                                                           std::vector<std::string>* records) {
  std::unique_lock lock(mu_);
  for (;;) {
    if (!free_.empty()) {
      Channel* ch = free_.back();
      free_.pop_back();
      if (records != nullptr) records->swap(records_);
      return ch;
    }
    const bool any_live = std::any_of(channels_.begin(), channels_.end(),
                                      [&](const auto& c) { return c->generation == generation_; });
    if (!any_live) return nullptr;  // every channel failed: no use waiting
    if (freed_.wait_until(lock, deadline) == std::cv_status::timeout && free_.empty())
      return nullptr;
  }
}

void RemoteAuthenticator::release(Channel* ch, bool broken) {
  std::lock_guard lock(mu_);
  if (broken || ch->generation != generation_) {
    auto it = std::find_if(channels_.begin(), channels_.end(),
                           [&](const auto& c) { return c.get() == ch; });
    if (it != channels_.end()) channels_.erase(it);
    freed_.notify_all();  // waiters re-check whether any channel is left
    return;
  }
  free_.push_back(ch);
  freed_.notify_one();
}

Result<Reply> RemoteAuthenticator::exchange(Channel& ch, std::uint32_t id,
                                            const std::vector<std::string>& ahead,
                                            std::string& packet, Clock::time_point deadline,
                                            bool& broken, bool await_reply) {
  const int fd = ch.fd.get();
  // One message per packet (SOCK_SEQPACKET keeps them apart), all in one
  // call: the records ahead, then the request. The vectors are the calling
  // thread's, reused: no allocation per login.
  thread_local std::vector<iovec> iov;
  thread_local std::vector<mmsghdr> msgs;
  iov.clear();
  for (const auto& r : ahead) iov.push_back({const_cast<char*>(r.data()), r.size()});
  if (!packet.empty()) iov.push_back({packet.data(), packet.size()});
  msgs.assign(iov.size(), mmsghdr{});
  for (std::size_t i = 0; i < iov.size(); ++i) {
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  for (std::size_t sent = 0; sent < msgs.size();) {
    const int w = ::sendmmsg(fd, msgs.data() + sent, static_cast<unsigned>(msgs.size() - sent),
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      sent += static_cast<std::size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      broken = true;
      return failed("send to the auth process failed");
    }
    pollfd p{fd, POLLOUT, 0};
    const int ms = poll_ms(deadline);
    if (ms == 0 || (::poll(&p, 1, ms) == 0 && poll_ms(deadline) == 0)) {
      // Part of a batch may be gone: the channel's state is unknown.
      broken = sent > 0;
      return failed("timeout sending to the auth process");
    }
  }
  wipe(packet);
  // Not awaited: its reply is skipped, by its id, by the next exchange on
  // this channel (the auth side answers in order).
  if (!await_reply) return Reply{Ack{}};
  std::array<char, limits::kMaxIpcMessage + 1> buf;
  for (;;) {
    // A blocking receive bounded by the channel's SO_RCVTIMEO (the call's
    // timeout, set in replace_channels): no poll() per answer.
    if (poll_ms(deadline) == 0) return failed("timeout waiting for the auth process");
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_TRUNC);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) {
      broken = true;
      return failed("the auth process closed the channel");
    }
    if (static_cast<std::size_t>(n) > limits::kMaxIpcMessage) {
      broken = true;
      return failed("oversized reply from the auth process");
    }
    auto d = decode_reply(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    if (!d) {
      broken = true;
      return failed("malformed reply from the auth process");
    }
    if (d->id != id) continue;  // the late answer to a request that timed out
    return std::move(d->body);
  }
}

Result<Reply> RemoteAuthenticator::call(const Request& request, bool await_reply) {
  std::string packet;
  packet.reserve(limits::kMaxIpcMessage);
  std::uint32_t id = next_id_.fetch_add(1);
  if (id == 0) id = next_id_.fetch_add(1);  // 0 answers a request whose header was unreadable
  if (auto e = encode_request(id, request, packet); !e) {
    wipe(packet);
    return failed("request not sendable: " + e.error().message);
  }
  const auto deadline = Clock::now() + timeout_;
  std::vector<std::string> ahead;
  Channel* ch = acquire(deadline, &ahead);
  if (ch == nullptr) {
    wipe(packet);
    // No channel, no records taken: they wait for the next call or the flusher.
    return failed("no channel to the auth process");
  }
  bool broken = false;
  Result<Reply> r = exchange(*ch, id, ahead, packet, deadline, broken, await_reply);
  wipe(packet);
  if (r && !answers(request, r.value())) {
    broken = true;
    r = failed("unexpected reply type from the auth process");
  }
  release(ch, broken);
  return r;
}

pop3::AuthResult RemoteAuthenticator::verdict(Result<Reply> reply) {
  if (!reply || !std::holds_alternative<pop3::AuthResult>(reply.value()))
    return pop3::AuthResult::temporary();
  return std::get<pop3::AuthResult>(std::move(reply).value());
}

pop3::AuthResult RemoteAuthenticator::verify_apop(std::string_view user, std::string_view timestamp,
                                                  std::string_view digest,
                                                  const pop3::AuthContext& ctx) {
  return verdict(call(VerifyApop{user, timestamp, digest, ctx.tls, wire_address(ctx.address)}));
}

pop3::AuthResult RemoteAuthenticator::verify_plain(std::string_view user, std::string_view password,
                                                   const pop3::AuthContext& ctx) {
  return verdict(call(VerifyPlain{user, password, ctx.tls, wire_address(ctx.address)}));
}

void RemoteAuthenticator::record_login(std::string_view user, std::int64_t when) {
  if (record_sink_) return record_sink_(user, when);
  // Not awaited (the auth side answers none and still checks it against the
  // login), and not sent on its own: see the header.
  std::string packet;
  std::uint32_t id = next_id_.fetch_add(1);
  if (id == 0) id = next_id_.fetch_add(1);
  if (!encode_request(id, RecordLogin{user, when}, packet)) return;
  bool flush_now = false;
  {
    std::lock_guard lock(mu_);
    records_.push_back(std::move(packet));
    flush_now = records_.size() >= limits::kIpcMaxQueuedRecords;
  }
  if (flush_now) flush_records();
}

std::vector<std::string> RemoteAuthenticator::take_records() {
  std::lock_guard lock(mu_);
  return std::exchange(records_, {});
}

void RemoteAuthenticator::flush_records() {
  std::vector<std::string> ahead = take_records();
  if (ahead.empty()) return;
  const auto deadline = Clock::now() + timeout_;
  std::vector<std::string> more;  // queued meanwhile: they go too
  Channel* ch = acquire(deadline, &more);
  if (ch == nullptr) return;  // best effort: the records are dropped
  for (auto& r : more) ahead.push_back(std::move(r));
  bool broken = false;
  std::string none;
  (void)exchange(*ch, 0, ahead, none, deadline, broken, /*await_reply=*/false);
  release(ch, broken);
}

void RemoteAuthenticator::start_flusher() {
  std::lock_guard lock(mu_);
  if (flusher_.joinable()) return;
  flusher_ = std::thread([this] { flusher_loop(); });
}

void RemoteAuthenticator::flusher_loop() {
  // A tick, not a wake-up per record (that would cost the context switch
  // the queue saves): what no request took along since the last tick goes.
  std::unique_lock lock(mu_);
  while (!stopping_) {
    records_queued_.wait_for(lock, limits::kIpcRecordFlush, [&] { return stopping_; });
    if (stopping_ || records_.empty()) continue;
    lock.unlock();
    flush_records();
    lock.lock();
  }
}

std::vector<pop3::SaslMechanism> RemoteAuthenticator::sasl_mechanisms() const {
  std::lock_guard lock(mu_);
  return mechanisms_;
}

std::unique_ptr<pop3::SaslSession> RemoteAuthenticator::start_sasl(std::string_view mechanism,
                                                                   const pop3::AuthContext& ctx) {
  {
    std::lock_guard lock(mu_);
    if (std::none_of(mechanisms_.begin(), mechanisms_.end(),
                     [&](const pop3::SaslMechanism& m) { return m.name == mechanism; })) {
      return nullptr;
    }
  }
  return std::make_unique<Exchange>(*this, next_exchange_.fetch_add(1), std::string(mechanism),
                                    ctx);
}

Result<void> RemoteAuthenticator::fetch_mechanisms() {
  Result<Reply> r = call(Mechanisms{});
  if (!r) return r.error();
  auto* list = std::get_if<MechanismList>(&r.value());
  if (list == nullptr) return failed("the auth process refused the mechanisms request");
  std::lock_guard lock(mu_);
  mechanisms_ = std::move(list->mechanisms);
  return {};
}

Result<void> RemoteAuthenticator::hello(std::uint32_t worker_id) {
  std::vector<Channel*> taken;
  {
    std::lock_guard lock(mu_);
    taken.swap(free_);
  }
  for (Channel* ch : taken) {
    std::string packet;
    const std::uint32_t id = next_id_.fetch_add(1);
    bool broken = false;
    if (!encode_request(id, Hello{kProtocolVersion, worker_id}, packet))
      std::abort();  // fixed size
    Result<Reply> r = exchange(*ch, id, {}, packet, Clock::now() + timeout_, broken, true);
    if (!r || !std::holds_alternative<Ack>(r.value())) broken = true;
    release(ch, broken);
  }
  if (live_channels() == 0) return failed("no channel to the auth process answered hello");
  return {};
}

}  // namespace apop::ipc
