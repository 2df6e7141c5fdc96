// `apop serve`'s set-up steps, shared by the single-process server
// (cmd_serve.cpp) and the multi-process one (serve_workers.cpp).
#include <spdlog/spdlog.h>

#include <cerrno>
#include <charconv>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <variant>

#include "auth/authenticator.hpp"
#include "auth/challenge.hpp"
#include "auth/throttle.hpp"
#include "cli/common.hpp"
#include "cli/logging.hpp"
#include "cli/serve_config.hpp"
#include "cli/serve_setup.hpp"
#include "cli/version.hpp"
#include "common/parse.hpp"
#include "common/text.hpp"
#include "net/privileges.hpp"
#include "net/server.hpp"
#include "pg/shared.hpp"
#include "store/mail_location.hpp"
#include "store/maildir.hpp"

namespace apop::cli {

namespace {

// "never" (any case) -> kExpireNever; "N" -> N days (0..kMaxExpireDays).
Result<std::int64_t> parse_expire(std::string_view v) {
  if (iequals(v, "never")) return auth::kExpireNever;
  std::int64_t days = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), days);
  if (v.empty() || ec != std::errc() || ptr != v.data() + v.size() || days < 0 ||
      days > limits::kMaxExpireDays) {
    return make_error(Errc::invalid, "expire: expected never or a number of days (0.." +
                                         std::to_string(limits::kMaxExpireDays) + "), not \"" +
                                         std::string(v) + "\"");
  }
  return days;
}

}  // namespace

// The server options a configuration asks for, or what is wrong with it
// (Errc::invalid, naming the setting).
Result<net::ServerOptions> server_options(const ServeConfig& a) {
  net::ServerOptions opts;
  for (const auto& l : a.listen) {
    auto spec = net::parse_listen(l);
    if (!spec) return make_error(Errc::invalid, "listen: " + spec.error().message);
    opts.listen.push_back(*spec);
  }
  for (const auto& l : a.tls_listen) {
    auto spec = net::parse_listen(l);
    if (!spec) return make_error(Errc::invalid, "tls_listen: " + spec.error().message);
    opts.tls_listen.push_back(*spec);
  }
  if (!a.metrics_listen.empty()) {
    auto spec = net::parse_listen(a.metrics_listen);
    if (!spec) return make_error(Errc::invalid, "metrics_listen: " + spec.error().message);
    opts.metrics_listen = *spec;
  }
  if (!a.users.empty() && !pg::is_postgres_url(a.users)) {
    return make_error(Errc::invalid,
                      "users: expected a postgresql:// URL (or nothing for the "
                      "SQLite file in the data directory)");
  }
  for (const auto& t : a.trusted_proxies) {
    auto range = net::parse_address_range(t);
    if (!range) return make_error(Errc::invalid, "trusted_proxies: " + range.error().message);
    opts.trusted_proxies.push_back(std::move(*range));
  }
  if (auto t = parse_log_target(a.log); !t)
    return make_error(Errc::invalid, "log: " + t.error().message);
  if (auto l = parse_log_level(a.log_level); !l)
    return make_error(Errc::invalid, "log_level: " + l.error().message);
  if (opts.listen.empty() && opts.tls_listen.empty()) {
    return make_error(Errc::invalid, "nothing to listen on: give --listen and/or --tls-listen");
  }
  if (a.tls_cert.empty() != a.tls_key.empty()) {
    return make_error(Errc::invalid, "--tls-cert and --tls-key (tls_cert, tls_key) go together");
  }
  if (!opts.tls_listen.empty() && a.tls_cert.empty()) {
    return make_error(Errc::invalid, "tls_listen needs tls_cert and tls_key");
  }
  for (const auto& f : {a.tls_cert, a.tls_key}) {
    std::error_code ec;
    if (!f.empty() && !std::filesystem::is_regular_file(f, ec)) {
      // After the privilege drop (SIGHUP) a root-only file is not "missing".
      if (ec && ec.value() != ENOENT) {
        return make_error(Errc::invalid, "cannot access " + f + ": " + ec.message());
      }
      return make_error(Errc::invalid, "no such file: " + f);
    }
  }
  opts.tls.cert_file = a.tls_cert;
  opts.tls.key_file = a.tls_key;
  opts.secure_loopback = a.secure_loopback;
  opts.login_timeout = std::chrono::seconds(a.login_timeout);
  opts.idle_timeout = std::chrono::seconds(a.idle_timeout);
  opts.session.allow_plaintext_auth = a.allow_plaintext_auth;
  opts.session.md5_challenge_requires_tls = a.md5_challenge_requires_tls;
  opts.session.max_auth_failures = a.max_auth_failures;
  opts.session.max_bad_commands = a.max_bad_commands;
  opts.auth_threads = a.auth_threads;
  if (a.auth_failure_delay_max_ms < a.auth_failure_delay_ms) {
    return make_error(Errc::invalid,
                      "auth_failure_delay_max_ms must not be below auth_failure_delay_ms");
  }
  opts.max_connections = a.max_connections;
  opts.max_connections_per_address = a.max_connections_per_address;
  opts.ipv6_prefix_length = a.ipv6_prefix_length;
  opts.max_sessions_per_user = a.max_sessions_per_user;
  opts.login_deadline = std::chrono::seconds(a.login_deadline);
  opts.session.implementation = a.implementation ? std::string(kVersionString) : "";
  // RFC 2449 LOGIN-DELAY / EXPIRE defaults (login_delay's range is checked
  // by its kSpecs row).
  opts.session.login_delay = a.login_delay;
  auto expire = parse_expire(a.expire);
  if (!expire) return expire.error();
  opts.session.expire_days = *expire;
  if (auto loc = store::parse_mail_location(a.mail_location, /*require_user=*/true); !loc) {
    return make_error(Errc::invalid, "mail_location: " + loc.error().message);
  }
  if (!store::parse_mbox_rewrite(a.mbox_rewrite)) {
    return make_error(Errc::invalid, "mbox_rewrite: \"" + a.mbox_rewrite +
                                         "\" is not one of auto, rename, in-place");
  }
  if (auto lmtp = lmtp_options(a, a.hostname); !lmtp) return lmtp.error();
  if (auto q = default_quota(a); !q) return q.error();
  return opts;
}

Result<net::LmtpServerOptions> lmtp_options(const ServeConfig& a, const std::string& hostname) {
  net::LmtpServerOptions o;
  for (const auto& l : a.lmtp_listen) {
    auto spec = net::parse_lmtp_listen(l);
    if (!spec) return make_error(Errc::invalid, "lmtp_listen: " + spec.error().message);
    o.listen.push_back(*spec);
  }
  const auto mode = parse_decimal<unsigned>(a.lmtp_socket_mode, {.max_digits = 4});
  bool octal = mode.has_value();
  for (char c : a.lmtp_socket_mode) octal = octal && c >= '0' && c <= '7';
  if (!octal) {
    return make_error(Errc::invalid,
                      "lmtp_socket_mode: expected an octal mode such as 0660, not \"" +
                          a.lmtp_socket_mode + "\"");
  }
  o.socket_mode = static_cast<unsigned>(std::stoul(a.lmtp_socket_mode, nullptr, 8));
  o.socket_owner = a.lmtp_socket_owner;
  o.socket_group = a.lmtp_socket_group;
  o.session.hostname = hostname.empty() ? "localhost" : hostname;
  o.session.max_recipients = a.lmtp_max_recipients;
  o.session.max_message_size = a.lmtp_max_message_size;
  o.session.over_quota_temporary = a.quota_full_tempfail;
  o.threads = a.lmtp_threads;
  return o;
}

// RFC 2449: some account has its own LOGIN-DELAY / EXPIRE, different from
// the server's, so CAPA before login appends "USER" (§6.5, §6.7). Read at
// start-up and on SIGHUP.
void mark_per_user_limits(const std::vector<auth::UserRecord>& users, pop3::SessionConfig& s) {
  s.login_delay_per_user = false;
  s.expire_per_user = false;
  for (const auto& u : users) {
    if (u.policy.login_delay && *u.policy.login_delay != s.login_delay) {
      s.login_delay_per_user = true;
    }
    if (u.policy.expire_days && *u.policy.expire_days != s.expire_days) s.expire_per_user = true;
  }
}

// The identity `user`/`group` name (nullopt when neither is set), checked
// against who the process is: Errc::invalid when it cannot be used.
Result<std::optional<net::Identity>> service_identity(const ServeConfig& a) {
  if (a.user.empty() && a.group.empty()) return std::optional<net::Identity>();
  auto id = net::lookup_identity(a.user, a.group);
  if (!id) return make_error(Errc::invalid, "user/group: " + id.error().message);
  return std::optional<net::Identity>(std::move(*id));
}

Step<Prelude> serve_prelude(const ServeConfig& a) {
  if (a.verbose) spdlog::set_level(spdlog::level::debug);
  if (!forbid_core_dumps(a, spdlog::level::err)) return Exit{kExitError};
  // The service identity is looked up first (nothing changes yet): the log
  // file may belong to that user.
  auto identity = service_identity(a);
  if (!start_logging(a, identity)) return Exit{kExitConfig};
  auto checked = server_options(a);
  if (!checked) {
    spdlog::error("{}", checked.error().message);
    return Exit{kExitUsage};
  }
  return Prelude{std::move(identity), std::move(*checked)};
}

// No core file, no ptrace by the same user: the process holds secrets (the
// key, passwords in flight). Again after the privilege drop.
bool forbid_core_dumps(const ServeConfig& a, spdlog::level::level_enum level) {
  if (a.allow_core_dumps) return true;
  if (auto r = net::forbid_core_dumps(); !r) {
    spdlog::log(level, "{}{}", r.error().message,
                level == spdlog::level::critical ? "; exiting" : "");
    return false;
  }
  return true;
}

// The log target, so that everything after goes there (the file is opened
// before any privilege drop, without following a symbolic link and only when
// root or the service user owns it; see docs/operations.md for rotation).
bool start_logging(const ServeConfig& a, const Result<std::optional<net::Identity>>& identity) {
  LogFileOwners log_owners;
  if (identity && identity.value()) {
    log_owners.service_uid = identity.value()->uid;
    log_owners.service_user = identity.value()->user;
  }
  auto target = parse_log_target(a.log);
  if (!target) return true;  // reported by server_options()
  if (auto r = install_logger(*target, effective_log_level(a.log_level, a.verbose), log_owners);
      !r) {
    spdlog::error("log: {}", r.error().message);
    return false;
  }
  return true;
}

// Started as root with user/group, the data directory is opened as that
// user, the listeners are bound and the TLS key read as root, then root is
// dropped for good before any client is accepted. Checks that the identity
// can be taken (or warns about running as root without one).
bool check_identity(const Result<std::optional<net::Identity>>& identity) {
  if (!identity) {
    spdlog::error("{}", identity.error().message);
    return false;
  }
  if (identity.value()) {
    if (auto r = net::check_can_become(*identity.value()); !r) {
      spdlog::error("{}", r.error().message);
      return false;
    }
  } else if (net::running_as_root()) {
    spdlog::warn(
        "running as root: set --user/--group (config keys user, group) so that the server drops "
        "root after binding its ports; see apop(8) and docs/service.md");
  }
  return true;
}

// The data directory and the account store, opened as the service user
// (files created there belong to it, and access is checked as that user: a
// wrong owner fails here, at start-up). With the local SQLite file,
// last-login times (RFC 2449 LOGIN-DELAY) are written behind, once a second,
// by a thread of the store: a login never waits for a write.
Step<OpenedCredentials> open_store(const ServeConfig& a, const DataDir& dir,
                                   const std::optional<net::Identity>& identity) {
  std::unique_ptr<net::ActingAs> acting;
  if (identity && net::running_as_root()) {
    auto act = net::ActingAs::begin(*identity);
    if (!act) {
      spdlog::error("{}", act.error().message);
      return Exit{kExitError};
    }
    acting = std::move(*act);
  }
  if (auto r = ensure_layout(dir); !r) {
    spdlog::error("data directory {}: {}{}", dir.root.string(), r.error().message,
                  identity ? " (it must be owned by user " + identity->user + ")" : "");
    return Exit{kExitError};
  }
  auto store = open_typed_credentials(dir, resolve_users(a.users), a.auth_threads + 1);
  if (!store) {
    spdlog::error("credentials: {}", store.error().message);
    return Exit{kExitError};
  }
  if (store->sqlite != nullptr) {
    if (auto r = store->sqlite->defer_login_records(std::chrono::seconds(1)); !r) {
      spdlog::error("credentials: {}", r.error().message);
      return Exit{kExitError};
    }
  }
  return std::move(*store);
}

// What the stored policies mean for every session: APOP disabled for
// everyone means no timestamp in the greeting (read at start-up; restart
// after changing it), and per-account LOGIN-DELAY / EXPIRE values.
bool apply_stored_policy(auth::CredentialStore& store, pop3::SessionConfig& session) {
  auto defaults = store.default_policy();
  auto users = store.list();
  if (!defaults || !users) {
    spdlog::error("credentials: {}", !defaults ? defaults.error().message : users.error().message);
    return false;
  }
  bool apop_somewhere = false;
  for (const auto& u : *users) {
    if (auth::resolve_policy(u.policy, *defaults).mechanisms & auth::kMechApop) {
      apop_somewhere = true;
    }
  }
  const bool apop_default =
      auth::resolve_policy(auth::Policy{}, *defaults).mechanisms & auth::kMechApop;
  session.apop_enabled = apop_default || apop_somewhere;
  mark_per_user_limits(*users, session);
  if (!session.apop_enabled) spdlog::info("APOP disabled by policy: no greeting timestamp");
  return true;
}

auth::ThrottleConfig throttle_config(const ServeConfig& a) {
  auth::ThrottleConfig throttle;
  throttle.base_delay = std::chrono::milliseconds(a.auth_failure_delay_ms);
  throttle.max_delay = std::chrono::milliseconds(a.auth_failure_delay_max_ms);
  throttle.block_after = a.block_after_failures;
  throttle.window = std::chrono::seconds(a.block_window);
  throttle.block_duration = std::chrono::seconds(a.block_duration);
  return throttle;
}

// The mail of an account: its own location (which the login returns with
// the verdict: AuthResult::mail_location), else mail_location (checked by
// server_options()).
std::unique_ptr<store::LocationOpener> mail_locations(const ServeConfig& a, const DataDir& dir) {
  store::MboxOptions mbox;
  mbox.session_lock_dir = dir.root / "locks";
  mbox.lock.lock_timeout = std::chrono::seconds(a.mbox_lock_timeout);
  mbox.rewrite = store::parse_mbox_rewrite(a.mbox_rewrite).value();  // checked
  mbox.journal_dir = dir.root / "mbox-journal";
  return std::make_unique<store::LocationOpener>(
      store::parse_mail_location(a.mail_location, true).value(), dir.root, mbox);
}

std::unique_ptr<Services> build_services(OpenedCredentials creds, const ServeConfig& a,
                                         const DataDir& dir, const std::string& hostname) {
  auto s = std::make_unique<Services>();
  s->creds = std::move(creds);
  auth::CredentialStore& store = *s->creds.store;
  s->challenges = std::make_shared<auth::ChallengeGenerator>(hostname);
  s->authenticator = std::make_unique<auth::StoreAuthenticator>(store, s->challenges.get());
  const auth::ThrottleConfig throttle = throttle_config(a);
  if (s->shared()) {
    s->failures = std::make_unique<pg::PgFailureTracker>(s->creds.postgres->pool(), throttle);
  } else {
    s->failures = std::make_unique<auth::MemoryFailureTracker>(throttle);
  }
  s->throttled =
      std::make_unique<auth::ThrottlingAuthenticator>(*s->authenticator, *s->failures, throttle);
  s->locations = mail_locations(a, dir);
  if (s->shared()) {
    const std::string& url = s->creds.postgres->pool()->url();
    s->shared_locks = std::make_unique<pg::SharedLockOpener>(url, *s->locations);
    spdlog::info("shared state in PostgreSQL {}", pg::redact(url));
  }
  return s;
}

// Binds the listeners, then drops root for good (when started as root
// with user/group).
bool bind_and_drop(net::Server& server, const ServeConfig& a,
                   const std::optional<net::Identity>& identity) {
  if (auto r = server.bind(); !r) {
    spdlog::error("{}", r.error().message);
    return false;
  }
  if (!identity) return true;
  if (auto r = net::drop_privileges(*identity); !r) {
    spdlog::critical("{}; exiting", r.error().message);
    return false;
  }
  // The uid change reset the dumpable flag (to fs.suid_dumpable).
  if (!forbid_core_dumps(a, spdlog::level::critical)) return false;
  spdlog::info("running as user={} uid={} group={} gid={}", identity->user, identity->uid,
               identity->group, identity->gid);
  return true;
}

// SIGHUP: re-read the configuration; apply what can change at run time to
// new sessions, name what needs a restart, keep everything on error.
void reload(net::Server& server, const Reread& reread, ServeConfig& running,
            const ReloadFixed& fixed) {
  auto fresh = reread();
  if (!fresh) {
    spdlog::error("config reload failed, keeping the running configuration: {}{}",
                  fresh.error().message, fixed.hint);
    return;
  }
  std::vector<std::string> applied, restart;
  ServeConfig next = ServeOptions::merge_reload(running, *fresh, applied, restart);
  for (const auto& key : restart) {
    spdlog::warn("config reload: {} changed, restart to apply", key);
  }
  auto next_opts = server_options(next);
  if (!next_opts) {
    spdlog::error("config reload failed, keeping the running configuration: {}{}",
                  next_opts.error().message, fixed.hint);
    return;
  }
  next_opts->session.greeting_text = kGreeting;
  next_opts->session.apop_enabled = fixed.apop_enabled;
  next_opts->session.inline_apop = fixed.inline_apop;
  if (fixed.creds == nullptr) {
    // A worker has no store: the per-user flags read at start-up stay.
    next_opts->session.login_delay_per_user = fixed.login_delay_per_user;
    next_opts->session.expire_per_user = fixed.expire_per_user;
  } else if (auto users = fixed.creds->list()) {
    mark_per_user_limits(*users, next_opts->session);
  }
  if (auto r = server.reconfigure(*next_opts); !r) {
    spdlog::error("tls reload failed, keeping the old certificate and configuration: {}{}",
                  r.error().message, fixed.hint);
    return;
  }
  running = next;
  spdlog::set_level(effective_log_level(next.log_level, next.verbose));
  if (!next.tls_cert.empty()) spdlog::info("tls certificate reloaded cert={}", next.tls_cert);
  std::string keys;
  for (const auto& k : applied) keys += (keys.empty() ? "" : ",") + k;
  spdlog::info("config reloaded applied={}", keys.empty() ? "-" : keys);
}

}  // namespace apop::cli
