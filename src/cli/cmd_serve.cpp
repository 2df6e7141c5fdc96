// `apop serve`: the POP3 server.
#include <spdlog/spdlog.h>

#include <cerrno>
#include <charconv>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>

#include "auth/authenticator.hpp"
#include "auth/challenge.hpp"
#include "auth/throttle.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/logging.hpp"
#include "cli/serve_config.hpp"
#include "net/privileges.hpp"
#include "net/server.hpp"
#include "pg/shared.hpp"
#include "store/mail_location.hpp"
#include "store/maildir.hpp"

namespace apop::cli {

namespace {

// "never" (any case) -> kExpireNever; "N" -> N days (0..kMaxExpireDays).
Result<std::int64_t> parse_expire(std::string_view v) {
  if (v.size() == 5) {
    std::string lower;
    for (char c : v) lower.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
    if (lower == "never") return auth::kExpireNever;
  }
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
  opts.session.implementation = a.implementation ? "apop 0.1.0" : "";
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
  return opts;
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

// Re-reads the configuration (file, then the command-line flags again).
using Reread = std::function<Result<ServeConfig>()>;

int run_serve(const ServeConfig& a, const Reread& reread) {
  if (a.verbose) spdlog::set_level(spdlog::level::debug);
  // No core file, no ptrace by the same user: the process holds secrets
  // (the key, passwords in flight). Again after the privilege drop below.
  if (!a.allow_core_dumps) {
    if (auto r = net::forbid_core_dumps(); !r) {
      spdlog::error("{}", r.error().message);
      return kExitError;
    }
  }
  // The service identity is looked up first (nothing changes yet): the log
  // file may belong to that user.
  auto identity = service_identity(a);
  LogFileOwners log_owners;
  if (identity && *identity) {
    log_owners.service_uid = (*identity)->uid;
    log_owners.service_user = (*identity)->user;
  }
  // The log target first, so that everything after goes there (the file is
  // opened before any privilege drop, without following a symbolic link and
  // only when root or the service user owns it; see docs/operations.md for
  // rotation).
  if (auto target = parse_log_target(a.log); target) {
    if (auto r = install_logger(*target, effective_log_level(a.log_level, a.verbose), log_owners);
        !r) {
      spdlog::error("log: {}", r.error().message);
      return kExitConfig;
    }
  }
  auto checked = server_options(a);
  if (!checked) {
    spdlog::error("{}", checked.error().message);
    return kExitUsage;
  }
  net::ServerOptions opts = std::move(*checked);
  const std::string hostname = a.hostname.empty() ? local_hostname() : a.hostname;
  opts.session.greeting_text = "apop POP3 server ready";

  // Privileges: started as root with user/group, the data directory is
  // opened as that user, the listeners are bound and the TLS key read as
  // root, then root is dropped for good before any client is accepted.
  if (!identity) {
    spdlog::error("{}", identity.error().message);
    return kExitConfig;
  }
  if (*identity) {
    if (auto r = net::check_can_become(**identity); !r) {
      spdlog::error("{}", r.error().message);
      return kExitConfig;
    }
  } else if (net::running_as_root()) {
    spdlog::warn(
        "running as root: set --user/--group (config keys user, group) so that the server drops "
        "root after binding its ports; see apop(8) and docs/service.md");
  }

  DataDir dir = resolve_data_dir(a.data);
  Result<std::unique_ptr<auth::CredentialStore>> store = make_error(Errc::permanent, "not opened");
  {
    // Files created in the data directory belong to the service user, and
    // access is checked as that user (a wrong owner fails here, at start-up).
    std::unique_ptr<net::ActingAs> acting;
    if (*identity && net::running_as_root()) {
      auto act = net::ActingAs::begin(**identity);
      if (!act) {
        spdlog::error("{}", act.error().message);
        return kExitError;
      }
      acting = std::move(*act);
    }
    if (auto r = ensure_layout(dir); !r) {
      spdlog::error("data directory {}: {}{}", dir.root.string(), r.error().message,
                    *identity ? " (it must be owned by user " + (*identity)->user + ")" : "");
      return kExitError;
    }
    store = open_credentials(dir, resolve_users(a.users), a.auth_threads + 1);
    // Last-login times (RFC 2449 LOGIN-DELAY) are written behind, once a
    // second, by a thread of the store: a login never waits for a write.
    auto* sqlite =
        store ? dynamic_cast<auth::SqliteCredentialStore*>(store.value().get()) : nullptr;
    if (sqlite != nullptr) {
      if (auto r = sqlite->defer_login_records(std::chrono::seconds(1)); !r) {
        spdlog::error("credentials: {}", r.error().message);
        return kExitError;
      }
    }
  }
  if (!store) {
    spdlog::error("credentials: {}", store.error().message);
    return kExitError;
  }
  // The stored default policy: APOP disabled for everyone means no timestamp
  // in the greeting (read at start-up; restart after changing it).
  bool opts_apop_enabled = true;
  {
    auto defaults = (*store)->default_policy();
    auto users = (*store)->list();
    if (!defaults || !users) {
      spdlog::error("credentials: {}",
                    !defaults ? defaults.error().message : users.error().message);
      return kExitError;
    }
    bool apop_somewhere = false;
    for (const auto& u : *users) {
      if (auth::resolve_policy(u.policy, *defaults).mechanisms & auth::kMechApop) {
        apop_somewhere = true;
      }
    }
    const bool apop_default =
        auth::resolve_policy(auth::Policy{}, *defaults).mechanisms & auth::kMechApop;
    opts.session.apop_enabled = apop_default || apop_somewhere;
    mark_per_user_limits(*users, opts.session);
    opts_apop_enabled = opts.session.apop_enabled;
    if (!opts.session.apop_enabled) spdlog::info("APOP disabled by policy: no greeting timestamp");
  }
  auto challenges = std::make_shared<auth::ChallengeGenerator>(hostname);
  auth::StoreAuthenticator authenticator(**store, challenges.get());
  // Failed-login defence in front of it.
  auth::ThrottleConfig throttle;
  throttle.base_delay = std::chrono::milliseconds(a.auth_failure_delay_ms);
  throttle.max_delay = std::chrono::milliseconds(a.auth_failure_delay_max_ms);
  throttle.block_after = a.block_after_failures;
  throttle.window = std::chrono::seconds(a.block_window);
  throttle.block_duration = std::chrono::seconds(a.block_duration);
  // With PostgreSQL the servers share the failed-login state and the
  // maildrop locks there (docs/scaling.md); alone, they live in memory and
  // in the maildrop's lock file.
  auto* shared = dynamic_cast<pg::PgCredentialStore*>(store.value().get());
  std::unique_ptr<auth::FailureTracker> failures;
  if (shared != nullptr) {
    failures = std::make_unique<pg::PgFailureTracker>(shared->pool(), throttle);
  } else {
    failures = std::make_unique<auth::MemoryFailureTracker>(throttle);
  }
  auth::ThrottlingAuthenticator throttled(authenticator, *failures, throttle);
  if (shared == nullptr) {
    // The local SQLite file: APOP's check (a lookup and an MD5) runs on the
    // event loop rather than paying two thread hand-offs (docs/performance.md),
    // and last-login times are written behind, once a second, off the loop.
    opts.session.inline_apop = true;
  }
  // Mail: the account's own location, else mail_location (checked above).
  store::MboxOptions mbox;
  mbox.session_lock_dir = dir.root / "locks";
  mbox.lock.lock_timeout = std::chrono::seconds(a.mbox_lock_timeout);
  mbox.rewrite = store::parse_mbox_rewrite(a.mbox_rewrite).value();  // checked above
  mbox.journal_dir = dir.root / "mbox-journal";
  auth::CredentialStore* accounts = store.value().get();
  store::LocationOpener locations(
      store::parse_mail_location(a.mail_location, true).value(), dir.root, mbox,
      [accounts](std::string_view user) { return accounts->mail_location(user); });
  std::unique_ptr<pg::SharedLockOpener> shared_locks;
  if (shared != nullptr) {
    shared_locks = std::make_unique<pg::SharedLockOpener>(shared->pool()->url(), locations);
    spdlog::info("shared state in PostgreSQL {}", pg::redact(shared->pool()->url()));
  }
  pop3::MaildropOpener& opener =
      shared_locks ? static_cast<pop3::MaildropOpener&>(*shared_locks) : locations;

  net::Server server(std::move(opts), throttled, opener,
                     [challenges] { return challenges->next(); });
  if (auto r = server.bind(); !r) {
    spdlog::error("{}", r.error().message);
    return kExitError;
  }
  if (*identity) {
    const net::Identity& id = **identity;
    if (auto r = net::drop_privileges(id); !r) {
      spdlog::critical("{}; exiting", r.error().message);
      return kExitError;
    }
    // The uid change reset the dumpable flag (to fs.suid_dumpable).
    if (!a.allow_core_dumps) {
      if (auto r = net::forbid_core_dumps(); !r) {
        spdlog::critical("{}; exiting", r.error().message);
        return kExitError;
      }
    }
    spdlog::info("running as user={} uid={} group={} gid={}", id.user, id.uid, id.group, id.gid);
  }
  // SIGHUP: re-read the configuration; apply what can change at run time
  // to new sessions, name what needs a restart, keep everything on error.
  auto running = std::make_shared<ServeConfig>(a);
  const bool apop_enabled = opts_apop_enabled;
  const bool inline_apop = shared == nullptr;
  auth::CredentialStore* creds = store.value().get();
  // After a drop, root-only files (a TLS key) can no longer be re-read.
  const std::string hint = *identity ? " (the server runs as user " + (*identity)->user +
                                           ": the files it re-reads must be readable by it)"
                                     : "";
  server.on_reload([&server, &reread, running, apop_enabled, inline_apop, creds, hint] {
    auto fresh = reread();
    if (!fresh) {
      spdlog::error("config reload failed, keeping the running configuration: {}{}",
                    fresh.error().message, hint);
      return;
    }
    std::vector<std::string> applied, restart;
    ServeConfig next = ServeOptions::merge_reload(*running, *fresh, applied, restart);
    for (const auto& key : restart) {
      spdlog::warn("config reload: {} changed, restart to apply", key);
    }
    auto next_opts = server_options(next);
    if (!next_opts) {
      spdlog::error("config reload failed, keeping the running configuration: {}{}",
                    next_opts.error().message, hint);
      return;
    }
    next_opts->session.greeting_text = "apop POP3 server ready";
    next_opts->session.apop_enabled = apop_enabled;
    next_opts->session.inline_apop = inline_apop;
    if (auto users = creds->list()) mark_per_user_limits(*users, next_opts->session);
    if (auto r = server.reconfigure(*next_opts); !r) {
      spdlog::error("tls reload failed, keeping the old certificate and configuration: {}{}",
                    r.error().message, hint);
      return;
    }
    *running = next;
    spdlog::set_level(effective_log_level(next.log_level, next.verbose));
    if (!next.tls_cert.empty()) spdlog::info("tls certificate reloaded cert={}", next.tls_cert);
    std::string keys;
    for (const auto& k : applied) keys += (keys.empty() ? "" : ",") + k;
    spdlog::info("config reloaded applied={}", keys.empty() ? "-" : keys);
  });
  spdlog::info("serving data={} hostname={}", dir.root.string(), hostname);
  server.run();
  return kExitOk;
}

// Builds the effective configuration: defaults, then --config FILE, then
// the flags given on the command line.
Result<ServeConfig> effective(const ServeOptions& opts, const std::string& config_file) {
  ServeConfig cfg;
  if (!config_file.empty()) {
    if (auto r = ServeOptions::load_file(config_file, cfg); !r) return r.error();
  }
  opts.apply_command_line(cfg);
  return cfg;
}

}  // namespace

void register_serve(CLI::App& app, Registry& registry) {
  auto cli = std::make_shared<ServeConfig>();
  auto opts = std::make_shared<ServeOptions>();
  auto config_file = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("serve", "Run the POP3 server in the foreground");
  sub->add_option("--config", *config_file,
                  "TOML configuration file (flags given here override it)")
      ->check(CLI::ExistingFile);
  opts->add_to(sub, cli);
  registry.add(sub, [opts, config_file] {
    auto cfg = effective(*opts, *config_file);
    if (!cfg) {
      spdlog::error("configuration: {}", cfg.error().message);
      return kExitConfig;
    }
    return run_serve(*cfg, [opts, config_file] { return effective(*opts, *config_file); });
  });

  // `apop config check`: validate and print the effective configuration.
  CLI::App* config = app.add_subcommand("config", "Configuration files");
  config->require_subcommand(1);
  auto check_opts = std::make_shared<ServeOptions>();
  auto check_file = std::make_shared<std::string>();
  CLI::App* check =
      config->add_subcommand("check",
                             "Validate a configuration file and print the effective "
                             "configuration (flags given here override it, as for serve)");
  check->add_option("--config", *check_file, "TOML configuration file")
      ->required()
      ->check(CLI::ExistingFile);
  check_opts->add_to(check, std::make_shared<ServeConfig>());
  registry.add(check, [check_opts, check_file] {
    auto cfg = effective(*check_opts, *check_file);
    if (!cfg) {
      std::cerr << "apop config check: " << cfg.error().message << "\n";
      return kExitConfig;
    }
    if (auto valid = server_options(*cfg); !valid) {
      std::cerr << "apop config check: " << *check_file << ": " << valid.error().message << "\n";
      return kExitConfig;
    }
    if (auto id = service_identity(*cfg); !id) {
      std::cerr << "apop config check: " << *check_file << ": " << id.error().message << "\n";
      return kExitConfig;
    }
    std::cout << ServeOptions::dump(*cfg);
    return kExitOk;
  });
}

}  // namespace apop::cli
