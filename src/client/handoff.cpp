#include "client/handoff.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "common/limits.hpp"
#include "common/posix_fd.hpp"
#include "common/text.hpp"
#include "store/maildir_deliver.hpp"

namespace apop::client {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string expand_home(std::string_view path) {
  if (path.size() >= 2 && path.substr(0, 2) == "~/") {
    const char* home = std::getenv("HOME");
    if (home != nullptr && home[0] != '\0') return std::string(home) + std::string(path.substr(1));
  }
  return std::string(path);
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<long long>(left, 1'000'000));
}

// A host name fit for EHLO/LHLO (RFC 5321 §4.1.1.1 Domain): letters, digits,
// '-' and '.'; anything else dropped; "localhost" if nothing remains.
std::string helo_name(const std::string& configured) {
  std::string raw = configured.empty() ? store::local_hostname() : configured;
  std::string out;
  for (char c : raw) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.';
    if (ok) out += c;
  }
  if (out.empty() || out.size() > 253) out = "localhost";
  return out;
}

// ---------------------------------------------------------------------------
// The connection: a non-blocking socket, bounded lines, deadlines.

class Conn {
 public:
  explicit Conn(UniqueFd fd) : fd_(std::move(fd)) {}

  // Writes all of `data`; fails when no octet could be written for `idle`.
  Result<void> write(std::string_view data, milliseconds idle) {
    auto deadline = Clock::now() + idle;
    while (!data.empty()) {
      const ssize_t w = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
      if (w > 0) {
        data.remove_prefix(static_cast<std::size_t>(w));
        deadline = Clock::now() + idle;
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        return make_error(Errc::temporary, std::string("write: ") + std::strerror(errno));
      }
      const int left = remaining_ms(deadline);
      if (left == 0) return make_error(Errc::temporary, "timeout writing to the server");
      pollfd pfd{fd_.get(), POLLOUT, 0};
      ::poll(&pfd, 1, left);
    }
    return {};
  }

  // One line without its CRLF (a bare LF is accepted), at most
  // limits::kMaxSmtpReplyLine octets (longer: Errc::invalid).
  Result<std::string> read_line(Clock::time_point deadline) {
    for (;;) {
      const std::size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.size() > limits::kMaxSmtpReplyLine) return overlong();
        return line;
      }
      if (buf_.size() > limits::kMaxSmtpReplyLine + 1) return overlong();
      char tmp[4096];
      const ssize_t n = ::recv(fd_.get(), tmp, sizeof tmp, 0);
      if (n > 0) {
        buf_.append(tmp, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) return make_error(Errc::temporary, "the server closed the connection");
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        return make_error(Errc::temporary, std::string("read: ") + std::strerror(errno));
      }
      const int left = remaining_ms(deadline);
      if (left == 0) return make_error(Errc::temporary, "timeout waiting for the server's reply");
      pollfd pfd{fd_.get(), POLLIN, 0};
      ::poll(&pfd, 1, left);
    }
  }

  // One whole reply. Malformed replies are Errc::invalid; the connection is
  // unusable after any error.
  Result<smtp::Reply> read_reply(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    smtp::ReplyParser parser;
    for (;;) {
      auto line = read_line(deadline);
      if (!line) return line.error();
      auto done = parser.feed(*line);
      if (!done) return done.error();
      if (*done) return parser.reply();
    }
  }

  // Whether the server has closed the connection or said something
  // unasked (a "421 idle timeout" before closing) while we were away.
  bool stale() {
    if (!buf_.empty()) return true;
    pollfd pfd{fd_.get(), POLLIN, 0};
    return ::poll(&pfd, 1, 0) != 0;
  }

 private:
  static Error overlong() {
    return make_error(Errc::invalid, "reply line longer than " +
                                         std::to_string(limits::kMaxSmtpReplyLine) + " octets");
  }

  UniqueFd fd_;
  std::string buf_;
};

Result<UniqueFd> connect_unix(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) {
    return make_error(Errc::invalid, "socket path too long: " + printable(path));
  }
  std::memcpy(sa.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return make_error(Errc::temporary, std::string("socket: ") + std::strerror(errno));
  // A Unix socket connect does not block on the peer (EAGAIN: backlog full).
  if (retry_eintr([&] {
        return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
      }) != 0) {
    return make_error(Errc::temporary, "connect " + printable(path) + ": " + std::strerror(errno));
  }
  return fd;
}

Result<UniqueFd> connect_tcp(const std::string& host, std::uint16_t port, milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    return make_error(Errc::temporary, "resolve " + printable(host) + ": " + ::gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
  const auto deadline = Clock::now() + timeout;
  std::string why = "no address";
  for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol));
    if (!fd) {
      why = std::strerror(errno);
      continue;
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    if (errno != EINPROGRESS) {
      why = std::strerror(errno);
      continue;
    }
    pollfd pfd{fd.get(), POLLOUT, 0};
    const int left = remaining_ms(deadline);
    const int p = left == 0 ? 0 : retry_eintr([&] { return ::poll(&pfd, 1, left); });
    if (p <= 0) {
      why = "timeout";
      break;
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == 0) return fd;
    why = std::strerror(err);
  }
  return make_error(Errc::temporary,
                    "connect " + printable(host) + " port " + service + ": " + why);
}

// QUIT, its reply read for at most `timeout` (RFC 5321 §4.1.1.10: the
// client should wait for it; nothing depends on it any more).
void quit(Conn& conn, milliseconds timeout) {
  if (conn.write("QUIT\r\n", limits::kSmtpQuitTimeout)) {
    (void)conn.read_reply(std::min(timeout, milliseconds(limits::kSmtpQuitTimeout)));
  }
}

// An idle connection in the pool: between transactions, with what its
// server offered at LHLO/EHLO.
struct Pooled {
  std::unique_ptr<Conn> conn;
  smtp::Extensions ext;
  Clock::time_point since;
};

}  // namespace

struct HandoffPool::Impl {
  mutable std::mutex mu;
  std::map<std::string, std::vector<Pooled>> idle;  // by server and HELO name

  // The newest usable connection for `key`; expired ones and ones the
  // server closed (or spoke on) meanwhile are dropped.
  std::optional<Pooled> take(const std::string& key) {
    std::vector<Pooled> drop;
    std::optional<Pooled> out;
    {
      std::lock_guard lock(mu);
      auto it = idle.find(key);
      if (it == idle.end()) return std::nullopt;
      auto& v = it->second;
      const auto now = Clock::now();
      while (!v.empty() && !out) {
        Pooled p = std::move(v.back());
        v.pop_back();
        if (now - p.since <= limits::kHandoffPoolIdle && !p.conn->stale()) {
          out = std::move(p);
        } else {
          drop.push_back(std::move(p));
        }
      }
      if (v.empty()) idle.erase(it);
    }
    for (auto& p : drop) {
      if (!p.conn->stale()) quit(*p.conn, limits::kSmtpQuitTimeout);
    }
    return out;
  }

  void give(const std::string& key, Pooled p) {
    {
      std::lock_guard lock(mu);
      auto& v = idle[key];
      if (v.size() < limits::kHandoffPoolPerTarget) {
        v.push_back(std::move(p));
        return;
      }
    }
    quit(*p.conn, limits::kSmtpQuitTimeout);
  }
};

HandoffPool::HandoffPool() : impl_(std::make_unique<Impl>()) {}

HandoffPool::~HandoffPool() { drain(); }

void HandoffPool::drain() {
  std::map<std::string, std::vector<Pooled>> all;
  {
    std::lock_guard lock(impl_->mu);
    all.swap(impl_->idle);
  }
  for (auto& [key, v] : all) {
    for (auto& p : v) {
      if (!p.conn->stale()) quit(*p.conn, limits::kSmtpQuitTimeout);
    }
  }
}

std::size_t HandoffPool::idle() const {
  std::lock_guard lock(impl_->mu);
  std::size_t n = 0;
  for (const auto& [key, v] : impl_->idle) n += v.size();
  return n;
}

namespace {

// How one transaction ended.
struct Outcome {
  enum class Kind { ok, refused, broken } kind = Kind::ok;
  smtp::Reply reply;         // refused: the reply that refused
  std::string stage;         // refused/broken: "MAIL FROM", "RCPT TO", "DATA", "end of data"
  Error error;               // broken: what went wrong with the connection
  bool nothing_sent = true;  // broken before the server answered anything (may retry)
};

class HandoffDestination final : public Destination {
 public:
  HandoffDestination(HandoffTarget target, DestinationOptions opts)
      : target_(std::move(target)),
        opts_(std::move(opts)),
        helo_(helo_name(opts_.hostname)),
        pool_key_(target_.describe() + " " + helo_) {}

  // A connection left between transactions goes to the pool, if any.
  ~HandoffDestination() override {
    if (!conn_) return;
    if (opts_.pool) {
      opts_.pool->impl_->give(pool_key_, Pooled{std::move(conn_), ext_, Clock::now()});
    } else {
      quit(*conn_, opts_.smtp_command_timeout);
    }
    conn_.reset();
  }

  std::string describe() const override { return target_.describe(); }

  Result<void> store(std::string_view message, const MessageMeta& meta) override {
    const std::string sender = smtp::reverse_path(meta.envelope_from);
    Outcome out = deliver(sender, opts_.deliver_to, message);
    if (out.kind == Outcome::Kind::ok) return {};
    if (out.kind == Outcome::Kind::broken) {
      return make_error(Errc::temporary,
                        describe() + ": " + out.error.message + " (at " + out.stage + ")");
    }
    const std::string refused =
        describe() + " refused the message at " + out.stage + ": " + out.reply.shown();
    if (!out.reply.permanent()) return make_error(Errc::temporary, refused);
    if (opts_.on_reject != DestinationOptions::OnReject::bounce) {
      return make_error(Errc::permanent, refused);
    }
    if (sender.empty()) {
      return make_error(Errc::permanent, refused + "; not bounced: no envelope sender");
    }
    static std::atomic<std::uint64_t> counter{0};
    BounceInfo info;
    info.sender = sender;
    info.recipient = opts_.deliver_to;
    info.reporting_host = helo_;
    info.remote = describe();
    info.now = static_cast<std::int64_t>(std::time(nullptr));
    info.unique = std::to_string(info.now) + "." + std::to_string(::getpid()) + "." +
                  std::to_string(counter.fetch_add(1) + 1);
    const std::string dsn = build_bounce(message, out.reply, info);
    Outcome b = deliver("", sender, dsn);
    if (b.kind == Outcome::Kind::ok) return {};
    const std::string why = b.kind == Outcome::Kind::broken
                                ? b.error.message + " (at " + b.stage + ")"
                                : "refused at " + b.stage + ": " + b.reply.shown();
    const Errc code =
        b.kind == Outcome::Kind::refused && b.reply.permanent() ? Errc::permanent : Errc::temporary;
    return make_error(code, refused + "; the bounce to <" + sender + "> failed: " + why);
  }

 private:
  // One message to one recipient, reconnecting once when a kept connection
  // turns out to be dead before the server answered anything.
  Outcome deliver(const std::string& sender, const std::string& rcpt, std::string_view message) {
    for (int attempt = 0;; ++attempt) {
      bool reused = conn_ != nullptr;
      if (!conn_ && attempt == 0 && opts_.pool) {
        // A connection another destination left: as kept as our own.
        if (auto p = opts_.pool->impl_->take(pool_key_)) {
          conn_ = std::move(p->conn);
          ext_ = std::move(p->ext);
          reused = true;
        }
      }
      if (conn_ && conn_->stale()) {
        conn_.reset();
        reused = false;
      }
      if (!conn_) {
        Outcome o;
        o.kind = Outcome::Kind::broken;
        o.stage = "connect";
        if (down_ && Clock::now() < down_until_) {
          o.error = *down_;
          o.error.message += " (not retried for " +
                             std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                limits::kSmtpReconnectBackoff)
                                                .count()) +
                             " s)";
          return o;
        }
        if (auto c = open(); !c) {
          down_ = c.error();
          down_until_ = Clock::now() + limits::kSmtpReconnectBackoff;
          o.error = c.error();
          return o;
        }
        down_.reset();
      }
      Outcome o = transaction(sender, rcpt, message);
      if (o.kind == Outcome::Kind::broken) conn_.reset();
      const bool closing = o.kind == Outcome::Kind::refused && o.reply.code == 421;
      if (closing) conn_.reset();
      if ((o.kind == Outcome::Kind::broken || closing) && reused && o.nothing_sent &&
          attempt == 0) {
        continue;  // the server dropped the idle connection: once more on a new one
      }
      if (o.kind == Outcome::Kind::refused && conn_) reset_transaction();
      return o;
    }
  }

  // Connects, reads the greeting, LHLO/EHLO (HELO as the SMTP fallback).
  Result<void> open() {
    Result<UniqueFd> fd = target_.unix_socket
                              ? connect_unix(target_.path)
                              : connect_tcp(target_.host, target_.port, opts_.smtp_connect_timeout);
    if (!fd) return make_error(Errc::temporary, fd.error().message);
    auto conn = std::make_unique<Conn>(std::move(*fd));
    auto greeting = conn->read_reply(opts_.smtp_command_timeout);
    if (!greeting) return make_error(Errc::temporary, "greeting: " + greeting.error().message);
    if (greeting->code != 220) {
      return make_error(Errc::temporary, "the server is not ready: " + greeting->shown());
    }
    const std::string hello = std::string(target_.lmtp ? "LHLO " : "EHLO ") + helo_ + "\r\n";
    if (auto w = conn->write(hello, opts_.smtp_command_timeout); !w) return w.error();
    auto ehlo = conn->read_reply(opts_.smtp_command_timeout);
    if (!ehlo) return make_error(Errc::temporary, "LHLO/EHLO: " + ehlo.error().message);
    if (ehlo->positive()) {
      ext_ = smtp::parse_extensions(*ehlo);
    } else if (!target_.lmtp && ehlo->permanent()) {
      // An old server without ESMTP (RFC 5321 §3.2): HELO, no extensions.
      if (auto w = conn->write("HELO " + helo_ + "\r\n", opts_.smtp_command_timeout); !w) {
        return w.error();
      }
      auto helo = conn->read_reply(opts_.smtp_command_timeout);
      if (!helo) return make_error(Errc::temporary, "HELO: " + helo.error().message);
      if (!helo->positive()) return make_error(Errc::temporary, "HELO refused: " + helo->shown());
      ext_ = smtp::Extensions{};
    } else {
      return make_error(Errc::temporary,
                        std::string(target_.lmtp ? "LHLO" : "EHLO") + " refused: " + ehlo->shown());
    }
    conn_ = std::move(conn);
    return {};
  }

  void reset_transaction() {
    if (!conn_->write("RSET\r\n", opts_.smtp_command_timeout)) {
      conn_.reset();
      return;
    }
    auto r = conn_->read_reply(opts_.smtp_command_timeout);
    if (!r || !r->positive()) conn_.reset();
  }

  // MAIL, RCPT and the message on the open connection: by BDAT LAST when
  // the server offers CHUNKING (RFC 3030), else by DATA. Pipelined (RFC
  // 2920), a BDAT transaction is one write and one read: MAIL, RCPT, BDAT
  // and the message out, their three replies back; DATA needs two.
  Outcome transaction(const std::string& sender, const std::string& rcpt,
                      std::string_view message) {
    Outcome o;
    auto broken = [&](const std::string& stage, Error e) {
      o.kind = Outcome::Kind::broken;
      o.stage = stage;
      if (e.code == Errc::invalid) e.message = "protocol error: " + e.message;
      o.error = std::move(e);
      return o;
    };
    auto refused = [&](const std::string& stage, smtp::Reply r) {
      o.kind = Outcome::Kind::refused;
      o.stage = stage;
      o.reply = std::move(r);
      return o;
    };
    const bool chunking = ext_.chunking;
    std::uint64_t size = 0;
    const std::string data =
        chunking ? smtp::chunk_encode(message) : smtp::data_encode(message, &size);
    if (chunking) size = data.size();
    std::string mail = "MAIL FROM:<" + sender + ">";
    if (ext_.size) mail += " SIZE=" + std::to_string(size);
    if (smtp::has_8bit(message) && ext_.eightbitmime) mail += " BODY=8BITMIME";
    mail += "\r\n";
    const std::string rcpt_cmd = "RCPT TO:<" + rcpt + ">\r\n";
    // The last command: DATA (its 354 comes before the message), or BDAT
    // with the message behind it (its reply is the final one).
    const std::string last_cmd =
        chunking ? "BDAT " + std::to_string(data.size()) + " LAST\r\n" : std::string("DATA\r\n");
    const milliseconds t = opts_.smtp_command_timeout;
    const milliseconds block = std::min(t, milliseconds(limits::kSmtpDataBlockTimeout));
    const char* stages[3] = {"MAIL FROM", "RCPT TO", chunking ? "end of data" : "DATA"};
    // The reply to the last command: 354 for DATA, 2xx after BDAT LAST.
    auto last_ok = [&](const smtp::Reply& r) { return chunking ? r.positive() : r.code == 354; };
    auto last_timeout = [&] { return chunking ? opts_.smtp_final_dot_timeout : t; };

    std::optional<smtp::Reply> failed;  // the first refusal
    const char* failed_stage = "";
    if (ext_.pipelining) {
      // RFC 2920 §3.1: MAIL, RCPT and DATA (or BDAT and its chunk) in one
      // write, the replies in order.
      if (chunking) {
        if (auto w = conn_->write(mail + rcpt_cmd + last_cmd + data, block); !w)
          return broken("MAIL FROM", w.error());
      } else if (auto w = conn_->write(mail + rcpt_cmd + last_cmd, t); !w) {
        return broken("MAIL FROM", w.error());
      }
      for (int i = 0; i < 3; ++i) {
        auto r = conn_->read_reply(i < 2 ? t : last_timeout());
        if (!r) return broken(stages[i], r.error());
        o.nothing_sent = false;
        const bool ok = i < 2 ? r->positive() : last_ok(*r);
        if (failed) {
          // DATA or BDAT LAST accepted although MAIL or RCPT failed (RFC
          // 2920 §3.1 and RFC 3030 §2 say it must not be): drop the
          // connection. With DATA nothing is delivered then; after BDAT a
          // delivery cannot be told, and the message stays on the POP3
          // server (a duplicate at worst, never a loss).
          if (i == 2 && ok) conn_.reset();
          continue;
        }
        if (!ok) {
          if (i == 2 && !chunking && r->positive())
            return broken("DATA", make_error(Errc::invalid, "DATA answered " + r->shown()));
          failed = std::move(*r);
          failed_stage = stages[i];
        }
      }
      if (failed) return refused(failed_stage, std::move(*failed));
      if (chunking) return o;
    } else {
      const std::string cmds[3] = {mail, rcpt_cmd, last_cmd};
      for (int i = 0; i < 3; ++i) {
        if (auto w = conn_->write(cmds[i], t); !w) return broken(stages[i], w.error());
        if (i == 2 && chunking) {
          if (auto w = conn_->write(data, block); !w) return broken("message data", w.error());
        }
        auto r = conn_->read_reply(i < 2 ? t : last_timeout());
        if (!r) return broken(stages[i], r.error());
        o.nothing_sent = false;
        const bool ok = i < 2 ? r->positive() : last_ok(*r);
        if (!ok) {
          if (i == 2 && !chunking && r->positive())
            return broken("DATA", make_error(Errc::invalid, "DATA answered " + r->shown()));
          return refused(stages[i], std::move(*r));
        }
      }
      if (chunking) return o;
    }
    if (auto w = conn_->write(data, block); !w) return broken("message data", w.error());
    // SMTP: one reply; LMTP (RFC 2033 §4.2): one per accepted recipient, here one.
    auto r = conn_->read_reply(opts_.smtp_final_dot_timeout);
    if (!r) return broken("end of data", r.error());
    if (!r->positive()) return refused("end of data", std::move(*r));
    return o;
  }

  HandoffTarget target_;
  DestinationOptions opts_;
  std::string helo_;
  std::string pool_key_;  // server and HELO name: whose pooled connections fit
  std::unique_ptr<Conn> conn_;
  smtp::Extensions ext_;
  // The last failed connection and until when it is not retried.
  std::optional<Error> down_;
  Clock::time_point down_until_;
};

}  // namespace

std::string HandoffTarget::describe() const {
  std::string out = lmtp ? "lmtp:" : "smtp:";
  if (unix_socket) return out + "unix:" + path;
  if (host.find(':') != std::string::npos) return out + "[" + host + "]:" + std::to_string(port);
  return out + host + ":" + std::to_string(port);
}

Result<HandoffTarget> parse_handoff_target(std::string_view kind, std::string_view arg) {
  HandoffTarget t;
  t.lmtp = kind == "lmtp";
  const std::string k(kind);
  const std::string usage = t.lmtp ? "expected lmtp:unix:PATH or lmtp:HOST:PORT"
                                   : "expected smtp:HOST[:PORT] or smtp:unix:PATH";
  if (arg.starts_with("unix:")) {
    std::string_view path = arg.substr(5);
    if (path.empty()) return make_error(Errc::invalid, k + ":unix: needs a socket path; " + usage);
    t.unix_socket = true;
    t.path = expand_home(path);
    if (t.path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      return make_error(Errc::invalid,
                        k + ":unix:" + printable(t.path) + ": socket path longer than " +
                            std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " octets");
    }
    return t;
  }
  std::string_view host = arg;
  std::string_view port;
  if (arg.starts_with("[")) {
    const std::size_t close = arg.find(']');
    if (close == std::string_view::npos) {
      return make_error(Errc::invalid, k + ":" + printable(arg) + ": unclosed '['; " + usage);
    }
    host = arg.substr(1, close - 1);
    std::string_view rest = arg.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return make_error(Errc::invalid, k + ":" + printable(arg) + ": " + usage);
      port = rest.substr(1);
      if (port.empty()) return make_error(Errc::invalid, k + ":" + printable(arg) + ": empty port");
    }
  } else {
    const std::size_t colon = arg.rfind(':');
    if (colon != std::string_view::npos) {
      host = arg.substr(0, colon);
      port = arg.substr(colon + 1);
      if (host.find(':') != std::string_view::npos) {
        return make_error(Errc::invalid, k + ":" + printable(arg) +
                                             ": write an IPv6 address in brackets; " + usage);
      }
      if (port.empty()) return make_error(Errc::invalid, k + ":" + printable(arg) + ": empty port");
    }
  }
  if (host.empty()) return make_error(Errc::invalid, k + ": needs a host; " + usage);
  for (char c : host) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f)
      return make_error(Errc::invalid, k + ": bad host name " + printable(host));
  }
  t.host = std::string(host);
  if (port.empty()) {
    if (t.lmtp) {
      return make_error(Errc::invalid, "lmtp:" + printable(arg) +
                                           ": needs a port (LMTP has none by default); " + usage);
    }
    t.port = 25;
    return t;
  }
  unsigned long v = 0;
  bool ok = port.size() <= 5;
  for (char c : port) {
    ok = ok && c >= '0' && c <= '9';
    if (ok) v = v * 10 + static_cast<unsigned long>(c - '0');
  }
  if (!ok || v == 0 || v > 65535) {
    return make_error(Errc::invalid,
                      k + ":" + printable(arg) + ": bad port '" + printable(port) + "'");
  }
  t.port = static_cast<std::uint16_t>(v);
  return t;
}

Result<std::unique_ptr<Destination>> open_handoff(std::string_view kind, std::string_view arg,
                                                  const DestinationOptions& options) {
  auto target = parse_handoff_target(kind, arg);
  if (!target) return target.error();
  if (options.deliver_to.empty()) {
    return make_error(Errc::invalid, std::string(kind) +
                                         ": needs the envelope recipient (--deliver-to ADDRESS, "
                                         "config key deliver_to)");
  }
  if (!smtp::valid_path_address(options.deliver_to)) {
    return make_error(Errc::invalid, "bad recipient address '" + printable(options.deliver_to) +
                                         "' (printable ASCII without spaces or <>, at most " +
                                         std::to_string(limits::kMaxSmtpPath - 2) + " octets)");
  }
  return std::unique_ptr<Destination>(
      std::make_unique<HandoffDestination>(std::move(*target), options));
}

std::string build_bounce(std::string_view message, const smtp::Reply& reply,
                         const BounceInfo& info) {
  // The original header: up to the first empty line, cut at a line end.
  std::size_t end = 0;
  std::size_t pos = 0;
  while (pos < message.size()) {
    std::size_t nl = message.find('\n', pos);
    const std::size_t line_end = nl == std::string_view::npos ? message.size() : nl;
    std::string_view line = message.substr(pos, line_end - pos);
    if (line.empty() || line == "\r") break;
    const std::size_t next = nl == std::string_view::npos ? message.size() : nl + 1;
    if (next > limits::kMaxBounceHeaders) break;
    end = next;
    pos = next;
  }
  std::string headers(message.substr(0, end));
  if (!headers.empty() && headers.back() != '\n') headers += '\n';

  const std::string boundary = "apop-bounce-" + info.unique;
  const std::string status =
      !reply.enhanced.empty() ? reply.enhanced
                              : std::string(1, static_cast<char>('0' + reply.code / 100)) + ".0.0";
  const std::string diagnostic = reply.shown(900);
  const std::string date = rfc5322_date(info.now);
  std::string out;
  out += "From: Mail Delivery System <MAILER-DAEMON@" + info.reporting_host + ">\n";
  out += "To: <" + info.sender + ">\n";
  out += "Subject: Undelivered Mail Returned to Sender\n";
  out += "Date: " + date + "\n";
  out += "Message-ID: <" + info.unique + ".bounce@" + info.reporting_host + ">\n";
  out += "Auto-Submitted: auto-replied\n";
  out += "MIME-Version: 1.0\n";
  out += "Content-Type: multipart/report; report-type=delivery-status;\n";
  out += "\tboundary=\"" + boundary + "\"\n";
  out += "\n";
  out += "This is a MIME-encapsulated message.\n\n";
  out += "--" + boundary + "\n";
  out += "Content-Type: text/plain; charset=us-ascii\n\n";
  out += "This is apop fetch at " + info.reporting_host + ".\n\n";
  out += "Your message to <" + info.recipient + "> could not be delivered:\n";
  out += info.remote + " answered\n\n    " + diagnostic + "\n\n";
  out += "The header of your message is attached.\n\n";
  out += "--" + boundary + "\n";
  out += "Content-Type: message/delivery-status\n\n";
  out += "Reporting-MTA: dns; " + info.reporting_host + "\n";
  out += "Arrival-Date: " + date + "\n\n";
  out += "Final-Recipient: rfc822; " + info.recipient + "\n";
  out += "Action: failed\n";
  out += "Status: " + status + "\n";
  out += "Diagnostic-Code: smtp; " + diagnostic + "\n";
  out += "Last-Attempt-Date: " + date + "\n\n";
  out += "--" + boundary + "\n";
  out += "Content-Type: text/rfc822-headers\n\n";
  out += headers;
  out += "\n--" + boundary + "--\n";
  return out;
}

}  // namespace apop::client
