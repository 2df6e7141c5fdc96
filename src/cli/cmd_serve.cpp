// `apop serve`: the POP3 server.
#include <spdlog/spdlog.h>

#include <memory>

#include "auth/authenticator.hpp"
#include "auth/challenge.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "net/server.hpp"
#include "store/maildir.hpp"

namespace apop::cli {

namespace {

struct ServeArgs {
  std::string data;
  std::vector<std::string> listen;
  std::vector<std::string> tls_listen;
  std::string tls_cert;
  std::string tls_key;
  std::string hostname;
  bool allow_plaintext_auth = false;
  bool no_secure_loopback = false;
  bool apop_requires_tls = false;
  unsigned max_auth_failures = limits::kMaxAuthFailures;
  unsigned max_bad_commands = limits::kMaxBadCommands;
  unsigned auth_threads = 2;
  unsigned login_timeout = static_cast<unsigned>(limits::kIdleTimeoutAuthorization.count());
  unsigned idle_timeout = static_cast<unsigned>(limits::kIdleTimeoutTransaction.count());
  bool no_implementation = false;
  bool verbose = false;
};

int run_serve(const ServeArgs& a) {
  if (a.verbose) spdlog::set_level(spdlog::level::debug);
  net::ServerOptions opts;
  for (const auto& l : a.listen) {
    auto spec = net::parse_listen(l);
    if (!spec) {
      spdlog::error("{}", spec.error().message);
      return kExitUsage;
    }
    opts.listen.push_back(*spec);
  }
  for (const auto& l : a.tls_listen) {
    auto spec = net::parse_listen(l);
    if (!spec) {
      spdlog::error("{}", spec.error().message);
      return kExitUsage;
    }
    opts.tls_listen.push_back(*spec);
  }
  if (opts.listen.empty() && opts.tls_listen.empty()) {
    spdlog::error("nothing to listen on: give --listen and/or --tls-listen");
    return kExitUsage;
  }
  if (a.tls_cert.empty() != a.tls_key.empty()) {
    spdlog::error("--tls-cert and --tls-key go together");
    return kExitUsage;
  }
  opts.tls.cert_file = a.tls_cert;
  opts.tls.key_file = a.tls_key;
  opts.secure_loopback = !a.no_secure_loopback;
  opts.login_timeout = std::chrono::seconds(a.login_timeout);
  opts.idle_timeout = std::chrono::seconds(a.idle_timeout);
  opts.session.allow_plaintext_auth = a.allow_plaintext_auth;
  opts.session.apop_requires_tls = a.apop_requires_tls;
  opts.session.max_auth_failures = a.max_auth_failures;
  opts.session.max_bad_commands = a.max_bad_commands;
  opts.auth_threads = a.auth_threads;
  opts.session.implementation = a.no_implementation ? "" : "apop 0.1.0";
  const std::string hostname = a.hostname.empty() ? local_hostname() : a.hostname;
  opts.session.greeting_text = "apop POP3 server ready";

  DataDir dir = resolve_data_dir(a.data);
  if (auto r = ensure_layout(dir); !r) {
    spdlog::error("data directory {}: {}", dir.root.string(), r.error().message);
    return kExitError;
  }
  auto store = open_credentials(dir);
  if (!store) {
    spdlog::error("credentials: {}", store.error().message);
    return kExitError;
  }
  // The stored default policy: APOP disabled for everyone means no timestamp
  // in the greeting (read at start-up; restart after changing it).
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
    if (!opts.session.apop_enabled) spdlog::info("APOP disabled by policy: no greeting timestamp");
  }
  auto challenges = std::make_shared<auth::ChallengeGenerator>(hostname);
  auth::StoreAuthenticator authenticator(**store, challenges.get());
  store::MaildirOpener opener(dir.mail_root());

  net::Server server(std::move(opts), authenticator, opener,
                     [challenges] { return challenges->next(); });
  if (auto r = server.bind(); !r) {
    spdlog::error("{}", r.error().message);
    return kExitError;
  }
  spdlog::info("serving data={} hostname={}", dir.root.string(), hostname);
  server.run();
  return kExitOk;
}

}  // namespace

void register_serve(CLI::App& app, Registry& registry) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* sub = app.add_subcommand("serve", "Run the POP3 server in the foreground");
  sub->add_option("--data", a->data, "Data directory (default: $APOP_DATA or ./apop-data)");
  sub->add_option("--listen", a->listen,
                  "ADDR:PORT to listen on, plain with STLS when TLS is configured (repeatable; "
                  "port 0 = any free)");
  sub->add_option("--tls-listen", a->tls_listen,
                  "ADDR:PORT to listen on with implicit TLS (repeatable; 995 by convention)");
  sub->add_option("--tls-cert", a->tls_cert, "PEM certificate chain (reloaded on SIGHUP)")
      ->check(CLI::ExistingFile);
  sub->add_option("--tls-key", a->tls_key, "PEM private key (reloaded on SIGHUP)")
      ->check(CLI::ExistingFile);
  sub->add_option("--hostname", a->hostname, "Host name in APOP timestamps (default: system)");
  sub->add_flag("--allow-plaintext-auth", a->allow_plaintext_auth,
                "Allow USER/PASS on non-secure connections");
  sub->add_flag("--apop-requires-tls", a->apop_requires_tls,
                "Refuse APOP before TLS (implicit TLS or after STLS)");
  sub->add_flag("--no-secure-loopback", a->no_secure_loopback,
                "Do not treat loopback connections as secure");
  sub->add_option("--max-auth-failures", a->max_auth_failures,
                  "Failed logins before a connection is closed")
      ->check(CLI::Range(1u, 100u));
  sub->add_option("--auth-threads", a->auth_threads,
                  "Threads that check credentials off the event loop (default 2)")
      ->check(CLI::Range(1u, 64u));
  sub->add_option("--max-bad-commands", a->max_bad_commands,
                  "Bad commands before a connection is closed")
      ->check(CLI::Range(1u, 1000u));
  sub->add_option("--login-timeout", a->login_timeout, "Seconds of inactivity allowed before login")
      ->check(CLI::Range(1u, 3600u));
  sub->add_option("--idle-timeout", a->idle_timeout,
                  "Seconds of inactivity allowed after login (RFC 1939: at least 600)")
      ->check(
          CLI::Range(static_cast<unsigned>(limits::kMinIdleTimeoutTransaction.count()), 86400u));
  sub->add_flag("--no-implementation", a->no_implementation, "Omit the IMPLEMENTATION capability");
  sub->add_flag("-v,--verbose", a->verbose, "Debug logging");
  registry.add(sub, [a] { return run_serve(*a); });
}

}  // namespace apop::cli
