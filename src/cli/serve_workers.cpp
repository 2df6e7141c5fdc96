// `apop serve --workers N`: a master, one auth process and N network
// workers (docs/architecture.md, "Processes").
//
//   master   binds the listeners (as root when started so), makes the
//            channels, starts and supervises the others; never opens
//            secret.key or the account database.
//   auth     opens the data directory's secret.key and the account store,
//            checks every credential for every worker (ipc::AuthService, one
//            thread per channel), keeps the failed-login state.
//   worker   TLS, POP3 and the maildrops on its own event loop; logins go to
//            the auth process (ipc::RemoteAuthenticator): the client's proof
//            out, a verdict back. It never holds a secret.
//
// Descriptors: the master creates every channel (SOCK_SEQPACKET pairs) and
// hands each end to the process that owns it, at fork or later over that
// process's control socket (SCM_RIGHTS) when the other side restarted. Each
// child closes every descriptor of the master's that is not its own.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "auth/username.hpp"
#include "cli/logging.hpp"
#include "cli/serve_setup.hpp"
#include "cli/serve_split.hpp"
#include "ipc/auth_service.hpp"
#include "ipc/remote_authenticator.hpp"
#include "ipc/remote_maildrop_locks.hpp"
#include "ipc/userdb.hpp"
#include "net/auth_channel.hpp"
#include "net/landlock.hpp"
#include "net/lmtp_server.hpp"
#include "net/metrics.hpp"
#include "net/process.hpp"
#include "net/sandbox.hpp"
#include "store/maildir.hpp"

namespace apop::cli {

namespace {

// How long the master's start waits for each worker to serve.
constexpr std::chrono::seconds kWorkerStartTimeout{60};

// What the auth process tells the master once the store is open: the
// session settings that come from the stored policies.
struct StoredFlags {
  bool apop_enabled = true;
  bool login_delay_per_user = false;
  bool expire_per_user = false;
  // The directories the accounts' own mail locations lie beneath (the
  // workers may open files there and nowhere else: net/landlock.hpp).
  std::vector<std::string> mail_roots;
};

std::string encode_flags(const StoredFlags& f) {
  std::string s = "ready ";
  s += f.apop_enabled ? '1' : '0';
  s += f.login_delay_per_user ? '1' : '0';
  s += f.expire_per_user ? '1' : '0';
  for (const auto& root : f.mail_roots) s += "\nroot " + root;
  return s;
}

std::optional<StoredFlags> decode_flags(std::string_view s) {
  const std::string_view first = s.substr(0, s.find('\n'));
  if (first.size() != 9 || first.substr(0, 6) != "ready ") return std::nullopt;
  for (char c : first.substr(6)) {
    if (c != '0' && c != '1') return std::nullopt;
  }
  StoredFlags f{first[6] == '1', first[7] == '1', first[8] == '1', {}};
  for (std::size_t pos = first.size(); pos < s.size();) {
    const std::size_t end = std::min(s.find('\n', pos + 1), s.size());
    const std::string_view line = s.substr(pos + 1, end - pos - 1);
    if (line.substr(0, 5) == "root " && line.size() > 5) f.mail_roots.emplace_back(line.substr(5));
    pos = end;
  }
  return f;
}

// The directories beneath the accounts' own mail locations.
std::vector<std::string> account_mail_roots(auth::CredentialStore& store, const DataDir& dir) {
  std::vector<std::string> roots;
  auto users = store.list();
  if (!users) return roots;
  for (const auto& u : *users) {
    if (!u.mail_location) continue;
    auto loc = store::parse_mail_location(*u.mail_location, false);
    if (!loc) continue;
    const std::string root = store::mail_location_root(*loc, dir.root).string();
    if (std::find(roots.begin(), roots.end(), root) == roots.end()) roots.push_back(root);
  }
  return roots;
}

// Whether `inner` is `outer` or lies beneath it (both made absolute).
bool beneath(const std::filesystem::path& inner, const std::filesystem::path& outer) {
  std::error_code ec;
  const auto i = std::filesystem::weakly_canonical(std::filesystem::absolute(inner), ec);
  const auto o = std::filesystem::weakly_canonical(std::filesystem::absolute(outer), ec);
  auto [oe, ie] = std::mismatch(o.begin(), o.end(), i.begin(), i.end());
  return oe == o.end();
}

// What a worker may open (net/landlock.hpp): the mail trees, the mbox lock
// and journal directories, the log file's directory, and, read-only, the
// files it re-reads on SIGHUP. Never the data directory itself, where
// secret.key and the account database are; a mail location that contains
// it is warned about.
std::vector<net::FsRule> worker_fs_rules(const ServeConfig& a, const DataDir& dir,
                                         const std::vector<std::string>& account_roots) {
  std::vector<net::FsRule> rules;
  std::vector<std::string> roots = account_roots;
  if (auto loc = store::parse_mail_location(a.mail_location, true)) {
    roots.push_back(store::mail_location_root(*loc, dir.root).string());
  }
  for (const auto& r : roots) {
    if (beneath(dir.root, r)) {
      spdlog::warn(
          "mail location root {} contains the data directory: the workers' file restriction "
          "cannot keep secret.key and the account database from them",
          r);
    }
    rules.push_back({r, true});
  }
  rules.push_back({(dir.root / "locks").string(), true});
  rules.push_back({(dir.root / "mbox-journal").string(), true});
  if (auto log = parse_log_target(a.log); log && log->kind == LogTarget::Kind::file) {
    // Its directory (rotation makes new files), unless that holds the data
    // directory: then the file itself (a rotated log needs a restart).
    const auto parent = std::filesystem::absolute(log->path).parent_path();
    rules.push_back(beneath(dir.root, parent) ? net::FsRule{log->path, true}
                                              : net::FsRule{parent.string(), true});
  }
  if (!a.config_path.empty()) rules.push_back({a.config_path, false});
  // Certificates are often replaced by a rename (certbot): their directory,
  // unless it holds the data directory (then the files themselves).
  for (const auto& f : {a.tls_cert, a.tls_key}) {
    if (f.empty()) continue;
    const auto parent = std::filesystem::absolute(f).parent_path();
    if (beneath(dir.root, parent)) {
      spdlog::warn(
          "{} is in a directory that holds the data directory: the workers may re-read that file "
          "only as it is now (a certificate replaced by a rename needs a restart)",
          f);
      rules.push_back({f, false});
    } else {
      rules.push_back({parent.string(), false});
    }
  }
  return rules;
}

// Every descriptor the master made for its children, by owner.
struct Fds {
  // Per worker (SO_REUSEPORT copies), or one set every worker shares.
  std::vector<std::vector<net::BoundListener>> listeners;
  UniqueFd auth_control_master, auth_control_child;
  std::vector<UniqueFd> worker_control_master, worker_control_child;  // per worker
  // Channels being handed over: per worker, the auth process's ends and the
  // worker's ends (closed in the master once the owner has them).
  std::vector<std::vector<UniqueFd>> auth_ends, worker_ends;
  UniqueFd ready_read, ready_write;                  // the auth process's first start only
  UniqueFd metrics_ready_read, metrics_ready_write;  // the metrics process's first start
  std::vector<net::BoundLmtpListener> lmtp;          // the LMTP process's listeners

  // In a child: closes everything but what `keep` says is its own.
  void close_all_but(const std::vector<int>& keep) {
    auto close_unless_kept = [&](UniqueFd& fd) {
      if (!fd) return;
      for (int k : keep) {
        if (fd.get() == k) return;
      }
      fd.reset();
    };
    for (auto& set : listeners) {
      for (auto& l : set) close_unless_kept(l.fd);
    }
    close_unless_kept(auth_control_master);
    close_unless_kept(auth_control_child);
    for (auto& fd : worker_control_master) close_unless_kept(fd);
    for (auto& fd : worker_control_child) close_unless_kept(fd);
    for (auto& set : auth_ends) {
      for (auto& fd : set) close_unless_kept(fd);
    }
    for (auto& set : worker_ends) {
      for (auto& fd : set) close_unless_kept(fd);
    }
    close_unless_kept(ready_read);
    close_unless_kept(ready_write);
    close_unless_kept(metrics_ready_read);
    close_unless_kept(metrics_ready_write);
    for (auto& l : lmtp) close_unless_kept(l.fd);
  }
};

// `count` fresh channels for worker i: the auth ends and the worker ends.
Result<void> make_channels(Fds& fds, std::size_t i, unsigned count) {
  fds.auth_ends[i].clear();
  fds.worker_ends[i].clear();
  for (unsigned c = 0; c < count; ++c) {
    auto pair = net::seqpacket_pair();
    if (!pair) return pair.error();
    fds.auth_ends[i].push_back(std::move(pair->first));
    fds.worker_ends[i].push_back(std::move(pair->second));
  }
  return {};
}

std::vector<int> raw(const std::vector<UniqueFd>& v) {
  std::vector<int> out;
  for (const auto& fd : v) out.push_back(fd.get());
  return out;
}

// What a child writes to its ready pipe before closing it (or until
// `timeout`): the master's wait for the auth and metrics processes' starts.
std::string read_until_closed(UniqueFd& fd, std::chrono::seconds timeout) {
  std::string msg;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pollfd p{fd.get(), POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0 || retry_eintr([&] { return ::poll(&p, 1, static_cast<int>(left)); }) <= 0) {
      break;
    }
    char buf[4096];
    const ssize_t n = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
    if (n <= 0 || msg.size() > (1u << 20)) break;
    msg.append(buf, static_cast<std::size_t>(n));
  }
  fd.reset();
  return msg;
}

// Waits for a worker's first "ready" on its control socket: false when it
// exits first (peeked, not reaped: the supervisor reaps) or says nothing
// within kWorkerStartTimeout.
bool await_worker_ready(int control, pid_t pid) {
  const auto deadline = std::chrono::steady_clock::now() + kWorkerStartTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{control, POLLIN, 0};
    if (retry_eintr([&] { return ::poll(&p, 1, 100); }) > 0) {
      char buf[8];
      const ssize_t n = ::recv(control, buf, sizeof buf, MSG_DONTWAIT);
      if (n == 1 && buf[0] == 'R') return true;
    }
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == pid) {
      return false;
    }
  }
  return false;
}

// Blocks the stop signals before any thread starts (threads inherit the
// mask) and returns a signalfd that reads them.
UniqueFd stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  return UniqueFd(::signalfd(-1, &set, SFD_CLOEXEC));
}

// Channels per worker: one per thread of its blocking pool (PASS, AUTH,
// PostgreSQL's APOP), and the event loop's asynchronous one (APOP against
// the local database, many checks in flight: net/auth_channel.hpp).
unsigned channels_per_worker(const ServeConfig& a) { return a.auth_threads + 1; }

// ---- the auth process -----------------------------------------------------

// One worker's service and the threads serving its channels.
struct Served {
  std::unique_ptr<ipc::AuthService> service;
  std::vector<std::thread> threads;
  std::vector<int> fds;  // shut down at exit so that the threads return
};

// A worker's service; with PostgreSQL it holds the worker's shared
// maildrop locks (one per session at most: max_connections bounds them).
std::unique_ptr<ipc::AuthService> worker_service(Services& services, const ServeConfig& a) {
  ipc::AuthServiceLimits limits;
  limits.max_maildrop_locks = std::max<std::size_t>(limits.max_maildrop_locks, a.max_connections);
  return std::make_unique<ipc::AuthService>(
      *services.throttled, limits,
      services.shared_locks ? &services.shared_locks->locks() : nullptr);
}

void serve_channels(Served& s, std::vector<UniqueFd> channels) {
  for (auto& ch : channels) {
    const int fd = ch.release();
    s.fds.push_back(fd);
    s.threads.emplace_back([svc = s.service.get(), fd] {
      svc->serve(fd);
      ::close(fd);
    });
  }
}

// The auth-userdb socket and the thread that answers it (auth_user only).
// Listening is set up as root (the socket belongs to the auth user and the
// service group); run() starts answering once privileges are dropped; the
// destructor stops it and removes the socket.
class Userdb {
 public:
  Userdb(std::filesystem::path path, UniqueFd listener, std::unique_ptr<ipc::UserdbService> svc)
      : path_(std::move(path)), listener_(std::move(listener)), svc_(std::move(svc)) {}
  Userdb(Userdb&&) = default;
  ~Userdb() {
    if (!listener_) return;
    ::shutdown(listener_.get(), SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    ::unlink(path_.c_str());
  }
  void run() {
    thread_ = std::thread([this] { svc_->serve(listener_.get(), limits::kUserdbRequestTimeout); });
  }

 private:
  std::filesystem::path path_;
  UniqueFd listener_;
  std::unique_ptr<ipc::UserdbService> svc_;
  std::thread thread_;
};

// `owner`/`group`: the socket's (the auth user and the service group, or
// the service user alone without an auth user); `allowed`: the peer uids
// answered.
Result<Userdb> start_userdb(const DataDir& dir, auth::CredentialStore& store, uid_t owner,
                            gid_t group, std::vector<uid_t> allowed) {
  const auto path = dir.root / std::string(ipc::kUserdbSocketName);
  auto fd = ipc::listen_userdb(path, owner, group);
  if (!fd) return fd.error();
  auto lookup = [&store](std::string_view user) -> ipc::UserInfo {
    if (!auth::is_valid_username(user)) return {ipc::UserStatus::unknown, std::nullopt};
    auto has = store.has_user(user);
    if (!has) return {ipc::UserStatus::temporary, std::nullopt};
    if (!*has) return {ipc::UserStatus::unknown, std::nullopt};
    auto loc = store.mail_location(user);
    if (!loc) return {ipc::UserStatus::temporary, std::nullopt};
    // Its own quota limits: `apop deliver` enforces them (issue 21).
    auto quota = store.quota(user);
    if (!quota) return {ipc::UserStatus::temporary, std::nullopt};
    return {ipc::UserStatus::found, *loc, quota->bytes, quota->messages};
  };
  auto svc = std::make_unique<ipc::UserdbService>(lookup, std::move(allowed));
  spdlog::info("auth-userdb socket {}", path.string());
  return Userdb(path, std::move(*fd), std::move(svc));
}

// The auth process, and every thread it starts later, under SCHED_BATCH:
// the same CPU share as any process, but a worker's request that wakes one
// of its threads does not preempt the worker (nor its reply the next
// thread). The thread runs when a CPU is free or at the next scheduling
// point, and by then more requests are queued on its channel: measured on
// the 2-core machine with TLS sessions (bench test 7, c=48), the auth
// process's context switches per session fell from 1.3 to 0.35 and the
// server's CPU per session by about 25 us. A login waits at most a
// scheduler tick longer on a saturated machine. Without the policy (a
// kernel or seccomp that refuses it) nothing else changes.
void batch_scheduling() {
  const sched_param param{};
  if (::sched_setscheduler(0, SCHED_BATCH, &param) != 0) {
    spdlog::debug("auth: SCHED_BATCH: {}", std::strerror(errno));
  }
}

int run_auth(const ServeConfig& a, Fds& fds, std::size_t workers, bool first_start) {
  const int control = fds.auth_control_child.get();
  const int ready = first_start ? fds.ready_write.get() : -1;
  std::vector<int> keep{control, ready};
  for (const auto& set : fds.auth_ends) {
    for (const auto& fd : set) keep.push_back(fd.get());
  }
  fds.close_all_but(keep);
  batch_scheduling();
  // Read with signalfd below: SIGTERM stops the service in order, SIGHUP
  // is ignored.
  UniqueFd sig = stop_signals();
  auto identity = service_identity(a);
  const std::optional<net::Identity> id = identity ? *identity : std::nullopt;
  // Whom this process becomes: the auth user when there is one (checked by
  // the master), else the service user.
  std::optional<net::Identity> auth_id;
  if (!a.auth_user.empty() && id) {
    if (auto looked = net::lookup_identity(a.auth_user, ""); looked) auth_id = std::move(*looked);
  }
  if (!a.auth_user.empty() && !auth_id) {
    spdlog::error("auth: auth_user {} cannot be taken", a.auth_user);
    return kExitConfig;
  }
  const std::optional<net::Identity>& me = auth_id ? auth_id : id;
  const DataDir dir = resolve_data_dir(a.data);
  if (auth_id) {
    if (auto r = split_data_dir(dir, *auth_id, *id); !r) {
      spdlog::error("auth: data directory: {}", r.error().message);
      return kExitError;
    }
  }
  auto opened = open_store(a, dir, me);
  if (auto* e = std::get_if<Exit>(&opened)) return e->code;
  OpenedCredentials& creds = std::get<OpenedCredentials>(opened);
  pop3::SessionConfig session;
  if (!apply_stored_policy(*creds.store, session)) return kExitError;
  const std::vector<std::string> roots = account_mail_roots(*creds.store, dir);
  // The workers' mbox lock and journal directories exist before they
  // restrict themselves to them (created as the service user; with an auth
  // user, split_data_dir made them).
  if (!auth_id) {
    std::unique_ptr<net::ActingAs> acting;
    if (id && net::running_as_root()) {
      if (auto act = net::ActingAs::begin(*id)) acting = std::move(*act);
    }
    for (const char* sub : {"locks", "mbox-journal"}) {
      const std::string path = (dir.root / sub).string();
      if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
        spdlog::error("auth: cannot create {}: {}", path, std::strerror(errno));
        return kExitError;
      }
    }
  }
  const std::string hostname = a.hostname.empty() ? store::local_hostname() : a.hostname;
  auto services = build_services(std::move(creds), a, dir, hostname);
  // With an auth user, `apop deliver` (the service user) cannot read the
  // accounts: it asks here (ipc/userdb.hpp). So does the LMTP process,
  // with or without one.
  std::optional<Userdb> userdb;
  if (auth_id || !a.lmtp_listen.empty()) {
    // Answered: root (a delivery run by root), the service user (the MTA's
    // pipe, the LMTP process), the auth user (apop user ... run as it).
    std::vector<uid_t> allowed{0, ::getuid()};
    if (id) allowed.push_back(id->uid);
    if (auth_id) allowed.push_back(auth_id->uid);
    const uid_t owner = auth_id ? auth_id->uid : id ? id->uid : ::getuid();
    const gid_t group = id ? id->gid : ::getgid();
    auto started = start_userdb(dir, *services->creds.store, owner, group, std::move(allowed));
    if (!started) {
      spdlog::error("auth: {}", started.error().message);
      return kExitError;
    }
    userdb.emplace(std::move(*started));
  }
  if (me) {
    if (auto r = net::drop_privileges(*me); !r) {
      spdlog::critical("auth: {}; exiting", r.error().message);
      return kExitError;
    }
  }
  if (!forbid_core_dumps(a, spdlog::level::critical)) return kExitError;
  if (userdb) userdb->run();
  std::vector<Served> served;  // per worker, the current generation last
  for (std::size_t i = 0; i < workers; ++i) {
    Served s{worker_service(*services, a), {}, {}};
    serve_channels(s, std::move(fds.auth_ends[i]));
    served.push_back(std::move(s));
  }
  if (ready >= 0) {
    const std::string msg = encode_flags(
        {session.apop_enabled, session.login_delay_per_user, session.expire_per_user, roots});
    (void)write_all(ready, msg);
    fds.ready_write.reset();
  }
  spdlog::info("auth process serving {} workers", workers);
  // Until SIGTERM: new channels from the master (a worker restarted).
  for (bool running = true; running;) {
    pollfd p[2] = {{sig.get(), POLLIN, 0}, {control, POLLIN, 0}};
    if (retry_eintr([&] { return ::poll(p, 2, -1); }) < 0) break;
    if (p[0].revents & POLLIN) {
      signalfd_siginfo si{};
      if (::read(sig.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si) &&
          si.ssi_signo != SIGHUP) {
        running = false;
      }
    }
    if (p[1].revents & (POLLIN | POLLHUP)) {
      std::string payload;
      std::vector<UniqueFd> got;
      if (!net::recv_fds(control, payload, got) || payload.empty()) break;  // the master is gone
      // "W<index>": the channels of a (re)started worker.
      const std::size_t i = std::strtoul(payload.c_str() + 1, nullptr, 10);
      if (payload[0] != 'W' || i >= workers) continue;
      Served s{worker_service(*services, a), {}, {}};
      serve_channels(s, std::move(got));
      served.push_back(std::move(s));
    }
  }
  // Stop serving, then let the store write what it holds (login times).
  for (auto& s : served) {
    for (int fd : s.fds) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& s : served) {
    for (auto& t : s.threads) t.join();
  }
  served.clear();
  userdb.reset();
  services.reset();
  spdlog::info("auth process stopped");
  return kExitOk;
}

// ---- the metrics process --------------------------------------------------

// Serves GET /metrics with the totals of the workers' rows: binds (as root
// when started so), becomes the service user, and only reads the mapping
// (read-only here) and answers HTTP. It opens no file (Landlock with no
// rule) and holds nothing secret.
int run_metrics(const ServeConfig& a, Fds& fds, const net::ListenSpec& where,
                std::shared_ptr<net::MetricsTable> table,
                std::vector<net::MetricsListenerLabel> labels, bool first_start) {
  const int ready = first_start ? fds.metrics_ready_write.get() : -1;
  fds.close_all_but({ready});
  UniqueFd sig = stop_signals();
  auto identity = service_identity(a);
  const std::optional<net::Identity> id = identity ? *identity : std::nullopt;
  if (a.sandbox) {
    // Before the endpoint's threads start (Landlock covers the threads a
    // process starts later, not those already running).
    if (auto r = net::restrict_filesystem({}); !r) {
      spdlog::critical("metrics: {}; exiting", r.error().message);
      return kExitError;
    }
  }
  if (auto r = table->make_read_only(); !r) {
    spdlog::critical("{}; exiting", r.error().message);
    return kExitError;
  }
  auto endpoint = net::MetricsEndpoint::open(where, table, std::move(labels));
  if (!endpoint) {
    spdlog::error("{}", endpoint.error().message);
    return kExitError;
  }
  if (id) {
    if (auto r = net::drop_privileges(*id); !r) {
      spdlog::critical("metrics: {}; exiting", r.error().message);
      return kExitError;
    }
  }
  if (!forbid_core_dumps(a, spdlog::level::critical)) return kExitError;
  spdlog::info("metrics on {}", (*endpoint)->where());
  if (ready >= 0) {
    (void)write_all(ready, "ok");
    fds.metrics_ready_write.reset();
  }
  for (;;) {
    signalfd_siginfo si{};
    const ssize_t n = retry_eintr([&] { return ::read(sig.get(), &si, sizeof si); });
    if (n != static_cast<ssize_t>(sizeof si) || si.ssi_signo != SIGHUP) break;
  }
  return kExitOk;
}

// ---- the LMTP process -----------------------------------------------------

// Delivers what Postfix hands over (net/lmtp_server.hpp) as the service
// user: it looks each recipient up at the auth process's auth-userdb socket
// (it never opens the account database or secret.key) and writes into the
// mail trees, which are all it may open (Landlock), under a seccomp list
// with the delivery calls (net/sandbox.hpp). The master bound its listeners
// (as root: a socket in Postfix's queue directory) and keeps them, so a
// restarted LMTP process serves the same sockets and connections wait in
// the backlog meanwhile.
int run_lmtp(const ServeConfig& a, Fds& fds, net::LmtpServerOptions opts,
             const std::vector<net::FsRule>& fs_rules, std::shared_ptr<net::MetricsTable> metrics) {
  std::vector<int> keep;
  for (const auto& l : fds.lmtp) keep.push_back(l.fd.get());
  fds.close_all_but(keep);
  UniqueFd sig = stop_signals();
  auto identity = service_identity(a);
  const std::optional<net::Identity> id = identity ? *identity : std::nullopt;
  const DataDir dir = resolve_data_dir(a.data);
  const auto userdb = dir.root / std::string(ipc::kUserdbSocketName);
  auto fallback = store::parse_mail_location(a.mail_location, true);
  if (!fallback) {
    spdlog::error("lmtp: mail_location: {}", fallback.error().message);
    return kExitConfig;
  }
  const store::QuotaLimits default_limits = default_quota(a).value();  // checked at start
  net::StoreLmtpDelivery delivery(
      [userdb, default_limits](std::string_view user) {
        net::StoreLmtpDelivery::Account out;
        if (!auth::is_valid_username(user)) return out;  // unknown
        auto info = ipc::query_userdb(userdb, user, limits::kUserdbRequestTimeout);
        if (!info) {
          // Errc::not_found: the auth process is restarting.
          spdlog::warn("lmtp: user={} auth-userdb: {}", user, info.error().message);
          out.status = net::LmtpRecipient::temporary;
          return out;
        }
        switch (info->status) {
          case ipc::UserStatus::found:
            out.status = net::LmtpRecipient::ok;
            out.mail_location = info->mail_location;
            // Its own quota limits, else the server's defaults.
            out.quota = effective_quota({info->quota_bytes, info->quota_messages}, default_limits);
            break;
          case ipc::UserStatus::unknown:
            break;
          case ipc::UserStatus::temporary:
            out.status = net::LmtpRecipient::temporary;
            break;
        }
        return out;
      },
      *fallback, dir.root);
  if (metrics) {
    // The last row of the workers' mapping is this process's.
    net::MetricsRow* row = &metrics->row(metrics->rows() - 1);
    delivery.on_quota_rejection = [row] { net::MetricsTable::add(row->quota_rejections_lmtp, 1); };
  }
  net::LmtpServer server(std::move(opts), delivery);
  if (auto r = server.adopt(std::move(fds.lmtp)); !r) {
    spdlog::error("{}", r.error().message);
    return kExitError;
  }
  if (a.sandbox) {
    if (auto r = net::restrict_filesystem(fs_rules); !r) {
      spdlog::critical("lmtp: {}; exiting", r.error().message);
      return kExitError;
    }
  }
  if (id) {
    if (auto r = net::drop_privileges(*id); !r) {
      spdlog::critical("lmtp: {}; exiting", r.error().message);
      return kExitError;
    }
  }
  if (!forbid_core_dumps(a, spdlog::level::critical)) return kExitError;
  // Its threads exist before the filter (TSYNC covers them) and serve
  // nobody until it is in place.
  const bool serving = server.start([&a] {
    if (!a.sandbox) return true;
    net::SandboxOptions sandbox;
    sandbox.mbox = true;
    sandbox.delivery = true;
    if (auto r = net::apply_worker_sandbox(sandbox); !r) {
      spdlog::critical("lmtp: sandbox: {}; exiting", r.error().message);
      return false;
    }
    return true;
  });
  if (!serving) {
    server.stop();
    return kExitError;
  }
  // Until SIGTERM or SIGINT (SIGHUP: nothing of LMTP is re-read).
  for (;;) {
    signalfd_siginfo si{};
    const ssize_t n = retry_eintr([&] { return ::read(sig.get(), &si, sizeof si); });
    if (n != static_cast<ssize_t>(sizeof si) || si.ssi_signo != SIGHUP) break;
  }
  server.stop();
  return kExitOk;
}

// ---- a network worker -----------------------------------------------------

void probe_worker(std::string_view probe, std::size_t index) {
  if (probe == "exec") {
    char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
    ::execv("/bin/true", argv);
    spdlog::critical("worker {}: exec was not stopped by the sandbox", index + 1);
  } else if (probe.substr(0, 5) == "open:") {
    const std::string path(probe.substr(5));
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    spdlog::warn("worker {}: test probe: open {}: {}", index + 1, path,
                 fd >= 0 ? "opened" : std::strerror(errno));
    if (fd >= 0) ::close(fd);
  }
}

int run_worker(const ServeConfig& a, const Reread& reread, net::ServerOptions opts, Fds& fds,
               std::size_t index, std::shared_ptr<net::SharedTally> tally,
               std::shared_ptr<net::MetricsTable> metrics,
               const std::vector<net::FsRule>& fs_rules) {
  const int control = fds.worker_control_child[index].get();
  std::vector<int> keep{control};
  auto& mine = fds.listeners[fds.listeners.size() == 1 ? 0 : index];
  for (const auto& l : mine) keep.push_back(l.fd.get());
  for (const auto& fd : fds.worker_ends[index]) keep.push_back(fd.get());
  fds.close_all_but(keep);
  auto identity = service_identity(a);
  const std::optional<net::Identity> id = identity ? *identity : std::nullopt;
  ipc::RemoteAuthenticator remote(std::move(fds.worker_ends[index]));
  if (auto r = remote.hello(static_cast<std::uint32_t>(index + 1)); !r) {
    spdlog::error("worker {}: auth process: {}", index + 1, r.error().message);
    return kExitError;
  }
  const DataDir dir = resolve_data_dir(a.data);
  // Before any thread starts (Landlock binds the calling thread and those
  // it starts later): from here on, only the mail trees and the files this
  // worker re-reads can be opened -- not secret.key, not the accounts.
  if (a.sandbox) {
    std::vector<std::string> skipped;
    auto limited = net::restrict_filesystem(fs_rules, &skipped);
    if (!limited) {
      spdlog::critical("worker {}: {}; exiting", index + 1, limited.error().message);
      return kExitError;
    }
    if (!*limited && index == 0) {
      spdlog::warn(
          "the kernel has no usable Landlock (ABI 2, Linux 5.19+): workers can open any file their "
          "uid can");
    }
  }
  auto opener = mail_locations(a, dir);
  // With PostgreSQL, the cluster-wide maildrop lock first, held by the auth
  // process for this worker (ipc/remote_maildrop_locks.hpp).
  ipc::RemoteMaildropLocks remote_locks(remote);
  pop3::LockingOpener shared_locks(remote_locks, *opener);
  pop3::MaildropOpener& mail =
      pg::is_postgres_url(a.users) ? static_cast<pop3::MaildropOpener&>(shared_locks) : *opener;
  const std::string hostname = a.hostname.empty() ? store::local_hostname() : a.hostname;
  auto challenges = std::make_shared<auth::ChallengeGenerator>(hostname);
  const ReloadFixed fixed = [&] {
    ReloadFixed f;
    f.apop_enabled = opts.session.apop_enabled;
    f.inline_apop = opts.session.inline_apop;
    f.login_delay_per_user = opts.session.login_delay_per_user;
    f.expire_per_user = opts.session.expire_per_user;
    if (id) {
      f.hint = " (the server runs as user " + id->user +
               ": the files it re-reads must be readable by it)";
    }
    return f;
  }();
  net::Server server(std::move(opts), remote, mail, [challenges] { return challenges->next(); });
  // The event loop's own channel (hello answered on it above): its APOP
  // checks and every login record go there.
  net::AuthChannel& async_channel = server.use_auth_channel(remote.take_channel());
  remote.route_records([&async_channel](std::string_view user, std::int64_t when) {
    async_channel.record_login(user, when);
  });
  if (auto r = server.adopt(std::move(mine)); !r) {
    spdlog::error("worker {}: {}", index + 1, r.error().message);
    return kExitError;
  }
  tally->set_worker(static_cast<unsigned>(index));
  server.share_limits(std::move(tally));
  if (metrics) server.share_metrics(std::move(metrics), static_cast<unsigned>(index));
  if (id) {
    if (auto r = net::drop_privileges(*id); !r) {
      spdlog::critical("worker {}: {}; exiting", index + 1, r.error().message);
      return kExitError;
    }
  }
  if (!forbid_core_dumps(a, spdlog::level::critical)) return kExitError;
  // New channels when the auth process restarted (the thread is started
  // before the sandbox, which covers it too).
  std::thread([control, &remote, &async_channel] {
    for (;;) {
      std::string payload;
      std::vector<UniqueFd> got;
      if (!net::recv_fds(control, payload, got) || payload.empty()) return;
      if (payload == "C" && !got.empty()) {
        remote.replace_channels(std::move(got));
        async_channel.replace(remote.take_channel());
      }
    }
  }).detach();
  if (a.sandbox) {
    // Everything the worker needs exists now: listeners, TLS context, log,
    // channels, the event loop and its pool.
    net::SandboxOptions sandbox;
    sandbox.mbox = true;  // any account may have an mbox location
    if (auto r = net::apply_worker_sandbox(sandbox); !r) {
      spdlog::critical("worker {}: sandbox: {}; exiting", index + 1, r.error().message);
      return kExitError;
    }
  }
  // Test seam: a worker that cannot start ("fail-start").
  const char* probe = std::getenv("APOP_TEST_WORKER_PROBE");
  if (probe != nullptr && std::string_view(probe) == "fail-start") return kExitError;
  // Serving from here on: the master's start waits for this (a worker that
  // cannot get this far fails the start instead of restarting forever).
  (void)::send(control, "R", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  // Test seam (tests/interop/test_workers.py), after every restriction:
  // "exec" tries what a taken-over worker would (it must die by SIGSYS);
  // "open:PATH" reports whether PATH can be opened for reading.
  if (probe != nullptr) probe_worker(probe, index);
  auto running = std::make_shared<ServeConfig>(a);
  server.on_reload([&server, &reread, running, fixed] { reload(server, reread, *running, fixed); });
  server.run();
  return kExitOk;
}

}  // namespace

int run_serve_workers(const ServeConfig& a, const Reread& reread) {
  auto prelude = serve_prelude(a);
  if (auto* e = std::get_if<Exit>(&prelude)) return e->code;
  const auto& identity = std::get<Prelude>(prelude).identity;
  if (a.experimental_sandbox) {
    spdlog::error(
        "--sandbox is the one-process server's experiment (with --workers 0); network workers are "
        "sandboxed already (--no-sandbox turns that off)");
    return kExitUsage;
  }
  if (!check_identity(identity)) return kExitConfig;
  if (!a.auth_user.empty()) {
    // The auth process under a uid of its own (cli/serve_split.hpp).
    const char* refused = nullptr;
    if (!identity.value()) {
      refused = "needs user (the service user the workers run as)";
    } else if (!net::running_as_root()) {
      refused = "needs a start as root (to give the auth process and the workers their users)";
    }
    auto auth = net::lookup_identity(a.auth_user, "");
    if (refused == nullptr && !auth) {
      spdlog::error("auth_user: {}", auth.error().message);
      return kExitConfig;
    }
    if (refused == nullptr && auth->uid == identity.value()->uid) {
      refused = "must be another user than user";
    }
    if (refused != nullptr) {
      spdlog::error("auth_user {}", refused);
      return kExitConfig;
    }
    spdlog::info("auth process user={} uid={}, workers user={} uid={}", auth->user, auth->uid,
                 identity.value()->user, identity.value()->uid);
  }
  if (!a.sandbox) {
    spdlog::warn(
        "workers run without their seccomp sandbox (--no-sandbox): a worker taken over through a "
        "parser or TLS bug can exec, ptrace and open sockets");
  }
  net::ServerOptions opts = std::move(std::get<Prelude>(prelude).options);
  // Every worker loads the certificate and key itself; one that cannot
  // would die and be restarted forever: a broken TLS setup stops the start
  // here, as it does a one-process server.
  if (auto tls = net::check_tls(opts); !tls) {
    spdlog::error("{}", tls.error().message);
    return kExitError;
  }
  opts.session.greeting_text = kGreeting;
  // APOP inline for the local SQLite file (through the auth process); not
  // with PostgreSQL, as in a single-process server.
  opts.session.inline_apop = !pg::is_postgres_url(a.users);
  const std::size_t workers = a.workers;

  auto fds = std::make_shared<Fds>();
  // One listening socket all workers accept from (a worker busy with a
  // login leaves new connections to the others), or with reuse_port one per
  // worker (SO_REUSEPORT: the kernel spreads connections by address hash,
  // whether or not that worker is busy; measured slower, docs/performance.md).
  auto listeners = net::bind_listeners(opts, a.reuse_port ? static_cast<unsigned>(workers) : 1);
  if (!listeners) {
    spdlog::error("{}", listeners.error().message);
    return kExitError;
  }
  fds->listeners = std::move(*listeners);
  // LMTP (as root when started so: a socket in Postfix's queue directory,
  // given Postfix's group), served by a process of its own.
  const std::string hostname = a.hostname.empty() ? store::local_hostname() : a.hostname;
  auto lmtp_opts = lmtp_options(a, hostname);
  if (!lmtp_opts) {
    spdlog::error("{}", lmtp_opts.error().message);
    return kExitConfig;
  }
  if (!lmtp_opts->listen.empty()) {
    auto bound = net::bind_lmtp_listeners(*lmtp_opts);
    if (!bound) {
      spdlog::error("{}", bound.error().message);
      return kExitError;
    }
    fds->lmtp = std::move(*bound);
  }
  auto auth_control = net::seqpacket_pair();
  if (!auth_control) {
    spdlog::error("{}", auth_control.error().message);
    return kExitError;
  }
  fds->auth_control_master = std::move(auth_control->first);
  fds->auth_control_child = std::move(auth_control->second);
  fds->auth_ends.resize(workers);
  fds->worker_ends.resize(workers);
  for (std::size_t i = 0; i < workers; ++i) {
    auto pair = net::seqpacket_pair();
    if (!pair) {
      spdlog::error("{}", pair.error().message);
      return kExitError;
    }
    fds->worker_control_master.push_back(std::move(pair->first));
    fds->worker_control_child.push_back(std::move(pair->second));
  }
  int ready_pipe[2];
  if (::pipe2(ready_pipe, O_CLOEXEC) != 0) {
    spdlog::error("pipe: {}", std::strerror(errno));
    return kExitError;
  }
  fds->ready_read.reset(ready_pipe[0]);
  fds->ready_write.reset(ready_pipe[1]);

  // The connection and session limits count across the workers.
  auto tally = net::SharedTally::create(static_cast<unsigned>(workers));
  if (!tally) {
    spdlog::error("{}", tally.error().message);
    return kExitError;
  }
  // The workers count into rows of one mapping the metrics process sums.
  std::shared_ptr<net::MetricsTable> metrics;
  std::vector<net::MetricsListenerLabel> metric_labels;
  if (opts.metrics_listen) {
    for (const auto& l : fds->listeners.front()) metric_labels.push_back({l.where, l.tls});
    if (metric_labels.size() > limits::kMaxListeners) {
      spdlog::error("at most {} listeners (listen and tls_listen together)", limits::kMaxListeners);
      return kExitConfig;
    }
    // A row per worker, and one for the LMTP process (its quota refusals).
    auto table =
        net::MetricsTable::create(static_cast<unsigned>(workers) + (fds->lmtp.empty() ? 0u : 1u));
    if (!table) {
      spdlog::error("{}", table.error().message);
      return kExitError;
    }
    metrics = std::move(*table);
    int pipe[2];
    if (::pipe2(pipe, O_CLOEXEC) != 0) {
      spdlog::error("pipe: {}", std::strerror(errno));
      return kExitError;
    }
    fds->metrics_ready_read.reset(pipe[0]);
    fds->metrics_ready_write.reset(pipe[1]);
  }
  net::Supervisor supervisor;
  if (metrics) {
    // Started first, so that a metrics address in use fails the start
    // before anything else runs.
    auto starts = std::make_shared<int>(0);
    net::ChildSpec spec;
    spec.name = "metrics";
    spec.run = [&a, fds, where = *opts.metrics_listen, metrics, metric_labels, starts] {
      return run_metrics(a, *fds, where, metrics, metric_labels, *starts == 0);
    };
    spec.started = [fds, starts](pid_t) {
      fds->metrics_ready_write.reset();
      ++*starts;
    };
    const pid_t pid = supervisor.start(std::move(spec));
    if (pid == 0) return kExitError;
    if (read_until_closed(fds->metrics_ready_read, std::chrono::seconds(30)) != "ok") {
      ::kill(pid, SIGTERM);
      const int code = supervisor.wait_exit(pid);
      return code == 0 ? kExitError : code;
    }
  }
  const unsigned per_worker = channels_per_worker(a);
  auto auth_starts = std::make_shared<int>(0);
  net::ChildSpec auth_spec;
  auth_spec.name = "auth";
  auth_spec.prepare = [fds, workers, per_worker]() -> Result<void> {
    for (std::size_t i = 0; i < workers; ++i) {
      if (auto r = make_channels(*fds, i, per_worker); !r) return r;
    }
    return {};
  };
  auth_spec.run = [&a, fds, workers, auth_starts] {
    return run_auth(a, *fds, workers, *auth_starts == 0);
  };
  auth_spec.started = [fds, workers, auth_starts](pid_t) {
    fds->ready_write.reset();
    for (std::size_t i = 0; i < workers; ++i) {
      fds->auth_ends[i].clear();
      if (*auth_starts > 0) {
        // A restart: the running workers get their new channels.
        auto r = net::send_fds(fds->worker_control_master[i].get(), "C", raw(fds->worker_ends[i]));
        if (!r) spdlog::error("worker {}: new auth channels: {}", i + 1, r.error().message);
        fds->worker_ends[i].clear();
      }
    }
    ++*auth_starts;
  };
  const pid_t auth_pid = supervisor.start(std::move(auth_spec));
  if (auth_pid == 0) return kExitError;
  // The workers start once the store is open (or not at all).
  StoredFlags flags;
  {
    // Until the auth process closes the pipe (or 120 s): the flags, then
    // one line per mail root.
    auto decoded = decode_flags(read_until_closed(fds->ready_read, std::chrono::seconds(120)));
    if (!decoded) {
      ::kill(auth_pid, SIGTERM);
      const int code = supervisor.wait_exit(auth_pid);
      spdlog::error("the auth process did not start (exit status {})", code);
      return code == 0 ? kExitError : code;
    }
    flags = *decoded;
  }
  opts.session.apop_enabled = flags.apop_enabled;
  opts.session.login_delay_per_user = flags.login_delay_per_user;
  opts.session.expire_per_user = flags.expire_per_user;
  if (!opts.session.apop_enabled) spdlog::info("APOP disabled by policy: no greeting timestamp");
  // The workers' file rules, made (and warned about) once for every start.
  const std::vector<net::FsRule> fs_rules =
      a.sandbox ? worker_fs_rules(a, resolve_data_dir(a.data), flags.mail_roots)
                : std::vector<net::FsRule>{};

  if (!fds->lmtp.empty()) {
    // The mail trees, the mbox lock directory and the log, as a worker's.
    std::vector<net::FsRule> lmtp_rules;
    if (a.sandbox) {
      ServeConfig plain = a;
      plain.config_path.clear();
      plain.tls_cert.clear();
      plain.tls_key.clear();
      lmtp_rules = worker_fs_rules(plain, resolve_data_dir(a.data), flags.mail_roots);
    }
    net::ChildSpec spec;
    spec.name = "lmtp";
    spec.run = [&a, fds, opts = *lmtp_opts, lmtp_rules, metrics] {
      return run_lmtp(a, *fds, opts, lmtp_rules, metrics);
    };
    if (supervisor.start(std::move(spec)) == 0) return kExitError;
  }

  std::vector<pid_t> worker_pids;
  for (std::size_t i = 0; i < workers; ++i) {
    auto starts = std::make_shared<int>(0);
    net::ChildSpec spec;
    spec.name = "worker " + std::to_string(i + 1);
    spec.prepare = [fds, i, per_worker, starts, t = *tally, metrics]() -> Result<void> {
      // A dead worker's connections and sessions are no longer counted.
      t->reset_worker(static_cast<unsigned>(i));
      if (metrics) metrics->reset_gauges(static_cast<unsigned>(i));
      // Its earlier "ready" messages are read by nobody else.
      char drop[8];
      while (::recv(fds->worker_control_master[i].get(), drop, sizeof drop, MSG_DONTWAIT) > 0) {
      }
      if (*starts == 0 && !fds->worker_ends[i].empty()) return {};  // made with the auth's
      if (auto r = make_channels(*fds, i, per_worker); !r) return r;
      const std::string payload = "W" + std::to_string(i);
      auto sent = net::send_fds(fds->auth_control_master.get(), payload, raw(fds->auth_ends[i]));
      fds->auth_ends[i].clear();
      return sent;
    };
    spec.run = [&a, &reread, opts, fds, i, t = *tally, metrics, &fs_rules] {
      return run_worker(a, reread, opts, *fds, i, t, metrics, fs_rules);
    };
    spec.started = [fds, i, starts](pid_t) {
      fds->worker_ends[i].clear();
      ++*starts;
    };
    const pid_t pid = supervisor.start(std::move(spec));
    if (pid == 0) return kExitError;
    worker_pids.push_back(pid);
  }
  for (std::size_t i = 0; i < workers; ++i) {
    if (!await_worker_ready(fds->worker_control_master[i].get(), worker_pids[i])) {
      spdlog::error("worker {} did not start; stopping", i + 1);
      supervisor.fail(kExitError);
      return supervisor.run();  // stops the others
    }
  }
  // Only now, with the store open and the workers started: scripts and
  // tests take "listening on" to mean the server serves.
  net::log_listening(fds->listeners.front());
  net::log_lmtp_listening(fds->lmtp);
  spdlog::info("serving data={} with {} workers", resolve_data_dir(a.data).root.string(), workers);
  const int code = supervisor.run();
  spdlog::info("stopped");
  return code;
}

}  // namespace apop::cli
