#include "net/lmtp_server.hpp"

#include <grp.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <atomic>
#include <cstring>
#include <future>
#include <thread>
#include <variant>

#include "common/posix_fd.hpp"
#include "common/text.hpp"
#include "net/listeners_internal.hpp"
#include "store/maildir.hpp"
#include "store/maildir_deliver.hpp"
#include "store/mbox.hpp"

namespace apop::net {

namespace {

using asio::local::stream_protocol;
using namespace asio::experimental::awaitable_operators;
constexpr auto tuple_awaitable = asio::experimental::as_tuple(asio::use_awaitable);

// One connection: greeting, then read, feed, write until the session closes,
// the client goes away or is silent for `timeout`.
template <typename Socket>
asio::awaitable<void> serve_lmtp(Socket socket, LmtpConfig config, LmtpDelivery& delivery,
                                 std::chrono::milliseconds timeout) {
  LmtpSession session(std::move(config), delivery);
  asio::steady_timer timer(socket.get_executor());
  auto send = [&](const std::string& out) -> asio::awaitable<bool> {
    timer.expires_after(timeout);
    auto r = co_await (asio::async_write(socket, asio::buffer(out), tuple_awaitable) ||
                       timer.async_wait(tuple_awaitable));
    co_return r.index() == 0 && !std::get<0>(std::get<0>(r));
  };
  if (!co_await send(session.greeting())) co_return;
  std::array<char, 16 * 1024> buf{};
  while (!session.closed()) {
    timer.expires_after(timeout);
    auto r = co_await (socket.async_read_some(asio::buffer(buf), tuple_awaitable) ||
                       timer.async_wait(tuple_awaitable));
    if (r.index() == 1) {
      asio::error_code ignored;
      asio::write(socket, asio::buffer(std::string_view("421 4.4.2 Timeout, closing\r\n")),
                  ignored);
      co_return;
    }
    auto [ec, n] = std::get<0>(r);
    if (ec) co_return;
    const std::string out = session.feed(std::string_view(buf.data(), n));
    if (!out.empty() && !co_await send(out)) co_return;
  }
}

struct Listener {
  std::variant<tcp::acceptor, stream_protocol::acceptor> acceptor;
  std::string where;
};

}  // namespace

Result<LmtpListenSpec> parse_lmtp_listen(std::string_view text) {
  LmtpListenSpec spec;
  if (istarts_with(text, "unix:")) {
    spec.unix_path = std::string(text.substr(5));
    if (spec.unix_path.empty()) {
      return make_error(Errc::invalid, "lmtp_listen unix: needs a path: " + std::string(text));
    }
    // sockaddr_un's sun_path: 108 bytes with the terminating NUL.
    if (spec.unix_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      return make_error(Errc::invalid, "lmtp_listen: socket path too long: " + std::string(text));
    }
    return spec;
  }
  auto tcp_spec = parse_listen(text);
  if (!tcp_spec) return tcp_spec.error();
  spec.tcp = *tcp_spec;
  return spec;
}

namespace {

Result<UniqueFd> bind_unix(const std::string& path, const LmtpServerOptions& options) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return make_error(Errc::invalid, "lmtp_listen: " + path + " exists and is not a socket");
    }
    ::unlink(path.c_str());  // a stale socket of an earlier run
  }
  gid_t gid = static_cast<gid_t>(-1);
  if (!options.socket_group.empty()) {
    struct group* g = ::getgrnam(options.socket_group.c_str());
    if (g == nullptr) {
      return make_error(Errc::invalid, "lmtp_socket_group: no group " + options.socket_group);
    }
    gid = g->gr_gid;
  }
  uid_t uid = static_cast<uid_t>(-1);
  if (!options.socket_owner.empty()) {
    struct passwd* pw = ::getpwnam(options.socket_owner.c_str());
    if (pw == nullptr) {
      return make_error(Errc::invalid, "lmtp_socket_owner: no user " + options.socket_owner);
    }
    uid = pw->pw_uid;
  }
  asio::io_context io(1);
  stream_protocol::acceptor acc(io);
  asio::error_code ec;
  acc.open(stream_protocol(), ec);
  if (!ec) acc.bind(stream_protocol::endpoint(path), ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return make_error(Errc::temporary, "cannot listen on unix:" + path + ": " + ec.message());
  if (::chmod(path.c_str(), static_cast<mode_t>(options.socket_mode)) != 0 ||
      ((gid != static_cast<gid_t>(-1) || uid != static_cast<uid_t>(-1)) &&
       ::chown(path.c_str(), uid, gid) != 0)) {
    return make_error(Errc::temporary, "lmtp_listen: cannot set the mode, owner or group of " +
                                           path + ": " + std::strerror(errno));
  }
  acc.non_blocking(true, ec);
  return UniqueFd(acc.release());
}

}  // namespace

Result<std::vector<BoundLmtpListener>> bind_lmtp_listeners(const LmtpServerOptions& options) {
  std::vector<BoundLmtpListener> out;
  for (const LmtpListenSpec& spec : options.listen) {
    if (spec.is_unix()) {
      auto fd = bind_unix(spec.unix_path, options);
      if (!fd) return fd.error();
      out.push_back({std::move(*fd), true, "unix:" + spec.unix_path});
      continue;
    }
    asio::io_context io(1);
    auto acc = listen_on(io, spec.tcp);
    if (!acc) return acc.error();
    const std::string where = endpoint_text(acc->local_endpoint());
    asio::error_code ec;
    acc->non_blocking(true, ec);
    out.push_back({UniqueFd(acc->release()), false, where});
  }
  return out;
}

void log_lmtp_listening(const std::vector<BoundLmtpListener>& listeners) {
  for (const auto& l : listeners) spdlog::info("listening on {} (lmtp)", l.where);
}

// Threads: each serving thread runs an io_context of its own (a lane) with
// the connections given to it, start to end; one more thread runs the
// acceptors. A connection never changes threads: no handler of one
// connection wakes another thread (a shared io_context with several threads
// did, tens of futex wake-ups per message), and a delivery blocking its lane
// blocks neither accepting nor the other lanes. A new connection goes to the
// lane with the fewest open connections.
struct LmtpServer::Impl {
  struct Lane {
    asio::io_context io{1};
    std::atomic<unsigned> open{0};
  };

  LmtpServerOptions options;
  LmtpDelivery& delivery;
  // Destroyed in reverse: the acceptors, then accept_io (a pending accept
  // holds a socket of a lane's io_context), then the lanes.
  std::vector<std::unique_ptr<Lane>> lanes;
  asio::io_context accept_io{1};
  std::vector<Listener> listeners;
  std::vector<std::thread> threads;
  std::atomic<unsigned> active{0};  // open connections

  Impl(LmtpServerOptions o, LmtpDelivery& d) : options(std::move(o)), delivery(d) {
    for (unsigned i = 0; i < std::max(1u, options.threads); ++i) {
      lanes.push_back(std::make_unique<Lane>());
      // Asio makes an io_context's reactor (epoll, eventfd, timerfd) and its
      // socket services when first used: here, before a seccomp filter that
      // no longer allows those calls (the LMTP process).
      asio::steady_timer timer(lanes.back()->io);
      tcp::socket tcp_socket(lanes.back()->io);
      stream_protocol::socket unix_socket(lanes.back()->io);
    }
  }

  Lane& least_loaded() {
    Lane* best = lanes.front().get();
    for (auto& l : lanes) {
      if (l->open.load(std::memory_order_relaxed) < best->open.load(std::memory_order_relaxed)) {
        best = l.get();
      }
    }
    return *best;
  }

  template <typename Acceptor>
  asio::awaitable<void> accept_loop(Acceptor& acceptor) {
    for (;;) {
      Lane& lane = least_loaded();
      // The socket belongs to the lane's io_context from the start.
      auto [ec, socket] = co_await acceptor.async_accept(lane.io, tuple_awaitable);
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) continue;  // EMFILE and the like: the next accept may work
      if (active >= limits::kLmtpMaxConnections) {
        asio::error_code ignored;
        asio::write(socket, asio::buffer(std::string_view("421 4.3.2 Too many connections\r\n")),
                    ignored);
        continue;  // closed here
      }
      ++active;
      ++lane.open;
      asio::co_spawn(lane.io,
                     serve_lmtp(std::move(socket), options.session, delivery, options.timeout),
                     [this, &lane](std::exception_ptr) {
                       --lane.open;
                       --active;
                     });
    }
  }
};

LmtpServer::LmtpServer(LmtpServerOptions options, LmtpDelivery& delivery)
    : impl_(std::make_unique<Impl>(std::move(options), delivery)) {}

LmtpServer::~LmtpServer() { stop(); }

Result<void> LmtpServer::bind() {
  auto bound = bind_lmtp_listeners(impl_->options);
  if (!bound) return bound.error();
  return adopt(std::move(*bound));
}

Result<void> LmtpServer::adopt(std::vector<BoundLmtpListener> listeners) {
  for (auto& l : listeners) {
    asio::error_code ec;
    if (l.unix_socket) {
      stream_protocol::acceptor acc(impl_->accept_io);
      acc.assign(stream_protocol(), l.fd.get(), ec);
      if (ec) return make_error(Errc::temporary, "lmtp: " + l.where + ": " + ec.message());
      (void)l.fd.release();
      impl_->listeners.push_back(Listener{std::move(acc), l.where});
      continue;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
      return make_error(Errc::temporary, "lmtp: " + l.where + ": " + std::strerror(errno));
    }
    tcp::acceptor acc(impl_->accept_io);
    acc.assign(ss.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), l.fd.get(), ec);
    if (ec) return make_error(Errc::temporary, "lmtp: " + l.where + ": " + ec.message());
    (void)l.fd.release();
    impl_->listeners.push_back(Listener{std::move(acc), l.where});
  }
  return {};
}

void LmtpServer::log_listening() const {
  for (const Listener& l : impl_->listeners) spdlog::info("listening on {} (lmtp)", l.where);
}

bool LmtpServer::start(const std::function<bool()>& before_serving) {
  for (Listener& l : impl_->listeners) {
    std::visit(
        [this](auto& acceptor) {
          asio::co_spawn(impl_->accept_io, impl_->accept_loop(acceptor), asio::detached);
        },
        l.acceptor);
  }
  std::promise<bool> gate;
  std::shared_future<bool> open = gate.get_future().share();
  // A lane's io_context has no work until a connection comes: keep it running.
  auto run = [open](asio::io_context& io) {
    if (!open.get()) return;
    auto guard = asio::make_work_guard(io);
    io.run();
  };
  impl_->threads.emplace_back([run, this] { run(impl_->accept_io); });
  for (auto& lane : impl_->lanes) {
    impl_->threads.emplace_back([run, l = lane.get()] { run(l->io); });
  }
  const bool go = !before_serving || before_serving();
  gate.set_value(go);
  return go;
}

void LmtpServer::stop() {
  if (!impl_) return;
  impl_->accept_io.stop();
  for (auto& lane : impl_->lanes) lane->io.stop();
  for (auto& t : impl_->threads) {
    if (t.joinable()) t.join();
  }
  impl_->threads.clear();
}

StoreLmtpDelivery::StoreLmtpDelivery(Lookup lookup, store::MailLocation fallback,
                                     std::filesystem::path data_dir)
    : lookup_(std::move(lookup)),
      fallback_(std::move(fallback)),
      data_dir_(std::move(data_dir)),
      hostname_(store::local_hostname()) {}

Result<std::pair<store::MailLocation, std::filesystem::path>> StoreLmtpDelivery::resolve(
    std::string_view user, const Account& account) {
  const auto own = account.mail_location;
  store::LocationOpener locations(
      fallback_, data_dir_, store::MboxOptions{},
      [own](std::string_view) -> Result<std::optional<std::string>> { return own; });
  return locations.resolve(pop3::MailboxAddress(user));
}

StoreLmtpDelivery::Account StoreLmtpDelivery::cached_lookup(std::string_view user) {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(cache_mu_);
    if (auto it = cache_.find(std::string(user)); it != cache_.end()) {
      if (it->second.until > now) return it->second.account;
      cache_.erase(it);
    }
  }
  Account account = lookup_(user);
  if (account.status == LmtpRecipient::ok) {
    std::lock_guard lock(cache_mu_);
    if (cache_.size() >= limits::kLmtpLookupCacheEntries) cache_.clear();
    cache_[std::string(user)] = Cached{account, now + limits::kLmtpLookupCacheTtl};
  }
  return account;
}

void StoreLmtpDelivery::note_quota_rejection() {
  ++quota_rejections_;
  if (on_quota_rejection) on_quota_rejection();
}

LmtpRecipient StoreLmtpDelivery::recipient(std::string_view user, std::uint64_t size) {
  const Account account = cached_lookup(user);
  if (account.status != LmtpRecipient::ok || account.quota.unlimited()) return account.status;
  // An early answer only (no lock): a full mailbox, or a SIZE= that cannot
  // fit, is refused before the data is sent. deliver() checks again under
  // the lock. A usage that cannot be read now is no refusal here.
  auto where = resolve(user, account);
  if (!where) return account.status;
  Result<store::QuotaUsage> usage = store::QuotaUsage{};
  if (where->first.format == store::MailLocation::Format::mbox) {
    usage = store::mbox_quota_usage(where->second);
  } else {
    std::error_code ec;
    // No Maildir yet: empty (it is made by the first delivery).
    if (std::filesystem::is_directory(where->second, ec)) {
      usage = store::maildir_quota_usage(where->second, account.quota);
    }
  }
  if (usage && !store::quota_allows(account.quota, *usage, size, 1)) {
    note_quota_rejection();
    spdlog::info("lmtp: user={} over quota at RCPT (size {})", user, size);
    return LmtpRecipient::over_quota;
  }
  return account.status;
}

Result<void> StoreLmtpDelivery::deliver(std::string_view user, std::string_view sender,
                                        std::string_view trace, std::string_view message) {
  // The RCPT's answer when it is recent, else looked up again.
  const Account account = cached_lookup(user);
  if (account.status == LmtpRecipient::unknown) {
    return make_error(Errc::permanent, "no such user " + std::string(user));
  }
  if (account.status != LmtpRecipient::ok) {
    return make_error(Errc::temporary, "cannot look " + std::string(user) + " up");
  }
  auto where = resolve(user, account);
  if (!where) return make_error(Errc::temporary, where.error().message);
  if (where->first.format == store::MailLocation::Format::mbox) {
    // mbox_deliver reads a descriptor, as `apop deliver` reads stdin: the
    // message goes through an anonymous memory file.
    UniqueFd fd(::memfd_create("apop-lmtp", MFD_CLOEXEC));
    if (!fd) {
      return make_error(Errc::temporary, std::string("memfd_create: ") + std::strerror(errno));
    }
    if (!write_all(fd.get(), trace) || !write_all(fd.get(), message) ||
        ::lseek(fd.get(), 0, SEEK_SET) != 0) {
      return make_error(Errc::temporary, std::string("memfd: ") + std::strerror(errno));
    }
    store::MboxDeliverOptions mopts;
    mopts.sender = std::string(sender);
    mopts.max_size = std::max<std::uint64_t>(mopts.max_size, trace.size() + message.size());
    mopts.quota = account.quota;
    auto r = store::mbox_deliver(where->second, fd.get(), mopts);
    if (!r) {
      if (r.error().code == Errc::over_quota) note_quota_rejection();
      spdlog::warn("lmtp: user={} mbox={} {}", user, where->second.string(), r.error().message);
      return r.error();
    }
    spdlog::info("lmtp: delivered user={} mbox={}", user, where->second.string());
    return {};
  }
  // Straight from memory (one writev of the trace and the message); the
  // Maildir is made only when it is missing, not checked per message.
  store::DeliverOptions opts;
  opts.hostname = hostname_;
  opts.max_size = std::max<std::uint64_t>(opts.max_size, trace.size() + message.size());
  opts.quota = account.quota;
  opts.create = true;
  const std::array<std::string_view, 2> parts{trace, message};
  auto r = store::deliver_parts(where->second, parts, opts);
  if (!r) {
    if (r.error().code == Errc::over_quota) note_quota_rejection();
    spdlog::warn("lmtp: user={} {}", user, r.error().message);
    return r.error();
  }
  spdlog::info("lmtp: delivered user={} file={}", user, *r);
  return {};
}

}  // namespace apop::net
