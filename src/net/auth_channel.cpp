#include "net/auth_channel.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <utility>

#include "common/wipe.hpp"
#include "ipc/wire.hpp"
#include "net/session_driver.hpp"

namespace apop::net {

namespace {

// Replies read per recvmmsg (more wait for the next call).
constexpr std::size_t kInboxSlots = 16;

}  // namespace

struct AuthChannel::Inbox {
  std::array<std::array<char, limits::kMaxIpcMessage + 1>, kInboxSlots> buf;
  std::array<iovec, kInboxSlots> iov;
  std::array<mmsghdr, kInboxSlots> msgs;
};

// A waiting check's entry, removed when its coroutine resumes or its frame
// is destroyed (the server stopping with checks in flight, possibly after
// the channel is gone: the list is shared).
class AuthChannel::Registration {
 public:
  Registration(std::shared_ptr<std::deque<Waiter>> list, std::uint32_t id)
      : list_(std::move(list)), id_(id) {}
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;
  ~Registration() {
    auto& w = *list_;
    const auto it = std::find_if(w.begin(), w.end(), [&](const Waiter& x) { return x.id == id_; });
    if (it != w.end()) w.erase(it);
  }

 private:
  std::shared_ptr<std::deque<Waiter>> list_;
  const std::uint32_t id_;
};

AuthChannel::AuthChannel(asio::io_context& io, UniqueFd fd, std::chrono::milliseconds timeout)
    : executor_(io.get_executor()),
      timeout_(timeout),
      sweep_timer_(executor_),
      record_timer_(executor_),
      inbox_(std::make_unique<Inbox>()) {
  for (std::size_t i = 0; i < kInboxSlots; ++i) {
    inbox_->iov[i] = {inbox_->buf[i].data(), inbox_->buf[i].size()};
  }
  if (fd) {
    socket_ = std::make_unique<asio::posix::stream_descriptor>(executor_, fd.release());
    read_some();
  }
}

AuthChannel::~AuthChannel() {
  for (auto& p : unsent_) wipe(p);
  for (auto& p : queue_) wipe(p);
  for (auto& p : records_) wipe(p);
}

std::uint32_t AuthChannel::next_id() {
  // 0 answers a request whose header was unreadable: never used.
  std::uint32_t id = last_id_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (id == 0) id = last_id_.fetch_add(1, std::memory_order_relaxed) + 1;
  return id;
}

asio::awaitable<pop3::AuthResult> AuthChannel::verify(const pop3::PendingCheck& check) {
  if (!socket_ || waiting_->size() >= limits::kIpcMaxInFlight)
    co_return pop3::AuthResult::temporary();
  const std::uint32_t id = next_id();
  std::string packet;
  const ipc::VerifyApop request{check.user, check.timestamp, check.digest, check.context.tls,
                                check.context.address.substr(0, ipc::kMaxAddress)};
  if (!ipc::encode_request(id, request, packet))
    co_return pop3::AuthResult::temporary();  // over a field bound
  asio::steady_timer wake(executor_, Clock::time_point::max());
  std::optional<pop3::AuthResult> verdict;
  waiting_->push_back(Waiter{id, Clock::now() + timeout_, &wake, &verdict});
  const Registration registered(waiting_, id);
  arm_sweep();
  enqueue(std::move(packet));
  co_await wake.async_wait(use_tuple);  // cancelled by settle()
  co_return verdict ? std::move(*verdict) : pop3::AuthResult::temporary();
}

void AuthChannel::record_login(std::string_view user, std::int64_t when) {
  std::string packet;
  if (!ipc::encode_request(next_id(), ipc::RecordLogin{user, when}, packet)) return;
  bool arm = false;
  bool now = false;
  {
    const std::lock_guard lock(mu_);
    records_.push_back(std::move(packet));
    now = records_.size() >= limits::kIpcMaxQueuedRecords;
    arm = !now && !record_timer_armed_;
    if (arm) record_timer_armed_ = true;
  }
  if (now) return post_flush();
  if (!arm) return;
  // Usually called by the loop itself (an APOP login finishing there): the
  // timer is armed without waking anything; a pool thread posts it.
  if (executor_.running_in_this_thread()) return arm_record_timer();
  asio::post(executor_, [this] { arm_record_timer(); });
}

void AuthChannel::arm_record_timer() {
  record_timer_.expires_after(limits::kIpcRecordFlush);
  record_timer_.async_wait([this](const asio::error_code& ec) {
    bool waiting = false;
    {
      const std::lock_guard lock(mu_);
      record_timer_armed_ = false;
      waiting = !records_.empty();
    }
    if (!ec && waiting) flush();
  });
}

void AuthChannel::enqueue(std::string packet) {
  {
    const std::lock_guard lock(mu_);
    queue_.push_back(std::move(packet));
  }
  post_flush();
}

void AuthChannel::post_flush() {
  {
    const std::lock_guard lock(mu_);
    if (flush_posted_) return;
    flush_posted_ = true;
  }
  // After the handlers already ready in this turn of the loop, so that their
  // requests leave together.
  asio::post(executor_, [this] { flush(); });
}

void AuthChannel::flush() {
  {
    const std::lock_guard lock(mu_);
    flush_posted_ = false;
    // Login records first: they ride with the checks (one wake-up of the
    // auth process for both).
    for (auto& p : records_) unsent_.push_back(std::move(p));
    records_.clear();
    for (auto& p : queue_) unsent_.push_back(std::move(p));
    queue_.clear();
  }
  if (writing_ || unsent_.empty()) return;  // the write wait sends them
  if (!socket_) {
    // No channel: the checks among them have failed already; records are
    // best effort.
    for (auto& p : unsent_) wipe(p);
    unsent_.clear();
    return;
  }
  thread_local std::vector<iovec> iov;
  thread_local std::vector<mmsghdr> msgs;
  iov.resize(unsent_.size());
  msgs.assign(unsent_.size(), mmsghdr{});
  for (std::size_t i = 0; i < unsent_.size(); ++i) {
    iov[i] = {unsent_[i].data(), unsent_[i].size()};
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  std::size_t sent = 0;
  while (sent < msgs.size()) {
    const int w =
        ::sendmmsg(socket_->native_handle(), msgs.data() + sent,
                   static_cast<unsigned>(msgs.size() - sent), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      sent += static_cast<std::size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    for (auto& p : unsent_) wipe(p);
    unsent_.clear();
    return fail("send to the auth process failed");
  }
  for (std::size_t i = 0; i < sent; ++i) wipe(unsent_[i]);
  unsent_.erase(unsent_.begin(), unsent_.begin() + static_cast<std::ptrdiff_t>(sent));
  if (unsent_.empty()) return;
  // The auth process is behind: send the rest when the socket takes more
  // (the checks' timeout still runs).
  writing_ = true;
  socket_->async_wait(asio::posix::descriptor_base::wait_write,
                      [this, gen = generation_](const asio::error_code& ec) {
                        if (gen != generation_) return;  // failed or replaced meanwhile
                        writing_ = false;
                        if (ec) return fail("waiting to send to the auth process: " + ec.message());
                        flush();
                      });
}

void AuthChannel::read_some() {
  socket_->async_wait(
      asio::posix::descriptor_base::wait_read,
      [this, gen = generation_](const asio::error_code& ec) { on_readable(gen, ec); });
}

void AuthChannel::on_readable(std::uint64_t generation, const asio::error_code& ec) {
  if (generation != generation_ || !socket_) return;
  if (ec) return fail("waiting for the auth process: " + ec.message());
  auto& in = *inbox_;
  for (;;) {
    for (std::size_t i = 0; i < kInboxSlots; ++i) {
      in.msgs[i] = mmsghdr{};
      in.msgs[i].msg_hdr.msg_iov = &in.iov[i];
      in.msgs[i].msg_hdr.msg_iovlen = 1;
    }
    const int n = ::recvmmsg(socket_->native_handle(), in.msgs.data(), kInboxSlots,
                             MSG_DONTWAIT | MSG_TRUNC, nullptr);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) return fail("receive from the auth process failed");
    for (int i = 0; i < n; ++i) {
      const auto len = in.msgs[i].msg_len;
      // An empty packet is the end of the channel (no valid message is empty).
      // The master logs the auth process's end and restarts it.
      if (len == 0) return fail("the auth process closed the channel", false);
      if (len > limits::kMaxIpcMessage || (in.msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0) {
        return fail("oversized reply from the auth process");
      }
      const std::uint64_t before = generation_;
      deliver(std::string_view(in.buf[i].data(), len));
      if (generation_ != before) return;  // it failed the channel
    }
    if (static_cast<std::size_t>(n) < kInboxSlots) break;
  }
  read_some();
}

void AuthChannel::deliver(std::string_view packet) {
  auto d = ipc::decode_reply(packet);
  if (!d) return fail("malformed reply from the auth process");
  const auto it = std::find_if(waiting_->begin(), waiting_->end(),
                               [&](const Waiter& w) { return w.id == d->id && !*w.verdict; });
  if (it == waiting_->end()) return;  // too late (timed out), or a login record's
  if (auto* result = std::get_if<pop3::AuthResult>(&d->body))
    return settle(*it, std::move(*result));
  // An error reply (refused, rate-limited) is a temporary failure; anything
  // else does not answer a check.
  if (!std::holds_alternative<ipc::ErrorReply>(d->body)) {
    return fail("unexpected reply type from the auth process");
  }
  settle(*it, pop3::AuthResult::temporary());
}

void AuthChannel::settle(Waiter& w, pop3::AuthResult verdict) {
  *w.verdict = std::move(verdict);
  w.wake->cancel();
}

void AuthChannel::close() {
  if (!socket_) return;
  flush();  // the login records still queued (best effort: what the socket takes now)
  record_timer_.cancel();
  if (socket_) fail("", false);
}

void AuthChannel::fail(std::string_view why, bool alarming) {
  if (socket_ && !why.empty()) {
    spdlog::log(alarming ? spdlog::level::warn : spdlog::level::info,
                "auth channel: {}; logins fail as temporary until it is replaced", why);
  }
  ++generation_;
  writing_ = false;
  socket_.reset();  // closes it; handlers still queued see the new generation
  for (auto& w : *waiting_) {
    if (!*w.verdict) settle(w, pop3::AuthResult::temporary());
  }
  sweep_timer_.cancel();  // nothing left to time out (and it would hold a stopping loop)
}

void AuthChannel::replace(UniqueFd fd) {
  // From the worker's control thread: the loop thread does it.
  auto shared = std::make_shared<UniqueFd>(std::move(fd));
  asio::post(executor_, [this, shared] {
    if (socket_) fail("replaced (the auth process restarted)", false);
    ++generation_;
    if (!*shared) return;
    socket_ = std::make_unique<asio::posix::stream_descriptor>(executor_, shared->release());
    read_some();
    flush();  // records queued meanwhile
  });
}

void AuthChannel::arm_sweep() {
  if (sweep_armed_) return;
  // At the first unsettled check's deadline only (they are in deadline
  // order), and again when it fires: one timer change per timeout period
  // however many checks pass, not one per check.
  const auto next =
      std::find_if(waiting_->begin(), waiting_->end(), [](const Waiter& w) { return !*w.verdict; });
  if (next == waiting_->end()) return;
  sweep_armed_ = true;
  sweep_timer_.expires_at(next->deadline);
  sweep_timer_.async_wait([this](const asio::error_code& ec) {
    sweep_armed_ = false;
    if (!ec) sweep();
  });
}

void AuthChannel::sweep() {
  const auto now = Clock::now();
  for (auto& w : *waiting_) {
    if (w.deadline > now) break;
    if (!*w.verdict) settle(w, pop3::AuthResult::temporary());
  }
  arm_sweep();
}

}  // namespace apop::net
