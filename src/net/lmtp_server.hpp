// `apop serve --lmtp-listen`: the LMTP listeners (RFC 2033). In the
// one-process server they run beside the POP3 server; with workers, in an
// LMTP process of their own that the master forks and supervises
// (cli/serve_workers.cpp). `options.threads` threads each run an Asio
// io_context of their own (a lane) with one coroutine per connection
// feeding net::LmtpSession, and one more thread accepts and gives each new
// connection to the lane with the fewest; a delivery (a few file writes and
// an fsync) blocks its lane, so up to `threads` deliveries, each from its
// own connection, run at once.
// `StoreLmtpDelivery` stores with the code of `apop deliver`: store::deliver
// (Maildir) or store::mbox_deliver, same durability and the same quota
// enforcement (store/quota.hpp): RCPT's SIZE= is checked against the usage
// without the lock (an early 552/452), the message itself under it.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/limits.hpp"
#include "common/posix_fd.hpp"
#include "common/result.hpp"
#include "net/lmtp_session.hpp"
#include "net/server.hpp"
#include "store/mail_location.hpp"
#include "store/quota.hpp"

namespace apop::net {

// "unix:PATH" (an absolute or relative file name) or "ADDR:PORT" (as
// --listen; port 0: any free port).
struct LmtpListenSpec {
  std::string unix_path;  // set for a Unix socket
  ListenSpec tcp;
  bool is_unix() const { return !unix_path.empty(); }
};
Result<LmtpListenSpec> parse_lmtp_listen(std::string_view text);

struct LmtpServerOptions {
  std::vector<LmtpListenSpec> listen;
  // A Unix socket's mode (chmod after bind), owner and group (chown; empty:
  // the process's): Postfix's lmtp(8) runs as user postfix, so group
  // postfix with 0660 lets it, and only it, connect (or owner postfix with
  // 0600, as Dovecot's `unix_listener` examples do).
  unsigned socket_mode = 0660;
  std::string socket_owner;
  std::string socket_group;
  LmtpConfig session;
  // Threads serving the connections (deliveries at once); at least 1.
  unsigned threads = 1;
  // Silence allowed between commands and within a message's data, and the
  // longest a reply may take to be written.
  std::chrono::milliseconds timeout = limits::kLmtpServerTimeout;
};

// A bound LMTP listening socket (close-on-exec, non-blocking), made
// before the privilege drop -- by the master, with workers -- and served by
// LmtpServer::adopt().
struct BoundLmtpListener {
  UniqueFd fd;
  bool unix_socket = false;
  std::string where;  // "unix:PATH" or "ADDR:PORT" (port 0 resolved)
};

// Binds every listener of `options` (a stale Unix socket file is replaced;
// any other file there is an error) and gives the Unix sockets their mode
// and group.
Result<std::vector<BoundLmtpListener>> bind_lmtp_listeners(const LmtpServerOptions& options);
// Logs "listening on WHERE (lmtp)" for each (after the POP3 listeners'
// lines: tests take the first "listening on" line as POP3's).
void log_lmtp_listening(const std::vector<BoundLmtpListener>& listeners);

class LmtpServer {
 public:
  // Borrows `delivery`, which must outlive the server.
  LmtpServer(LmtpServerOptions options, LmtpDelivery& delivery);
  ~LmtpServer();  // stop()
  LmtpServer(const LmtpServer&) = delete;
  LmtpServer& operator=(const LmtpServer&) = delete;

  // bind_lmtp_listeners(options) and adopt().
  Result<void> bind();
  // Serves these listeners (before start()).
  Result<void> adopt(std::vector<BoundLmtpListener> listeners);
  // log_lmtp_listening() of the adopted listeners.
  void log_listening() const;
  // Serves on `options.threads` threads of its own (and one that accepts)
  // until stop(). The
  // threads exist before `before_serving` runs (in the caller's thread) but
  // take no connection until it returned true: a seccomp filter installed
  // there with TSYNC covers them before any client byte is read. False:
  // nothing is served (call stop()).
  bool start(const std::function<bool()>& before_serving = {});
  // Closes the listeners, ends open sessions (a message not yet
  // acknowledged is not stored: the client retries) and joins the thread.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The store behind `apop serve`'s LMTP: `lookup` says whether a user has an
// account and its own mail location (nullopt: `locations`' default);
// delivery is apop deliver's. A found account's lookup is reused for
// limits::kLmtpLookupCacheTtl (RCPT, then the delivery after DATA, then the
// next messages); "unknown" and "temporary" answers are never reused.
// Thread-safe: the LMTP server's threads call it at once.
class StoreLmtpDelivery final : public LmtpDelivery {
 public:
  struct Account {
    LmtpRecipient status = LmtpRecipient::unknown;  // ok, unknown or temporary
    std::optional<std::string> mail_location;
    // The account's effective quota (its own limits, else the server's
    // defaults); unlimited: no quota work.
    store::QuotaLimits quota = {};
  };
  using Lookup = std::function<Account(std::string_view user)>;
  StoreLmtpDelivery(Lookup lookup, store::MailLocation fallback, std::filesystem::path data_dir);
  // Called at each quota refusal (at RCPT or after DATA), on the LMTP
  // thread: the server's metrics counter.
  std::function<void()> on_quota_rejection;

  LmtpRecipient recipient(std::string_view user, std::uint64_t size) override;
  Result<void> deliver(std::string_view user, std::string_view sender, std::string_view trace,
                       std::string_view message) override;
  // Refusals for quota (at RCPT or after DATA), for the metrics.
  std::uint64_t quota_rejections() const { return quota_rejections_.load(); }

 private:
  Result<std::pair<store::MailLocation, std::filesystem::path>> resolve(std::string_view user,
                                                                        const Account& account);
  void note_quota_rejection();
  // lookup_(user), or its recent answer.
  Account cached_lookup(std::string_view user);
  struct Cached {
    Account account;
    std::chrono::steady_clock::time_point until;
  };
  std::mutex cache_mu_;
  std::unordered_map<std::string, Cached> cache_;
  std::atomic<std::uint64_t> quota_rejections_{0};  // LMTP threads count at once
  Lookup lookup_;
  store::MailLocation fallback_;
  std::filesystem::path data_dir_;
  std::string hostname_;
};

}  // namespace apop::net
