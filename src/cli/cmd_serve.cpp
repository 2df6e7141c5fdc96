// `apop serve`: the POP3 server.
#include <spdlog/spdlog.h>

#include <filesystem>
#include <iostream>
#include <memory>

#include "auth/authenticator.hpp"
#include "auth/challenge.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/serve_config.hpp"
#include "net/server.hpp"
#include "store/maildir.hpp"

namespace apop::cli {

namespace {

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
      return make_error(Errc::invalid, "no such file: " + f);
    }
  }
  opts.tls.cert_file = a.tls_cert;
  opts.tls.key_file = a.tls_key;
  opts.secure_loopback = a.secure_loopback;
  opts.login_timeout = std::chrono::seconds(a.login_timeout);
  opts.idle_timeout = std::chrono::seconds(a.idle_timeout);
  opts.session.allow_plaintext_auth = a.allow_plaintext_auth;
  opts.session.apop_requires_tls = a.apop_requires_tls;
  opts.session.max_auth_failures = a.max_auth_failures;
  opts.session.max_bad_commands = a.max_bad_commands;
  opts.auth_threads = a.auth_threads;
  opts.session.implementation = a.implementation ? "apop 0.1.0" : "";
  return opts;
}

int run_serve(const ServeConfig& a) {
  if (a.verbose) spdlog::set_level(spdlog::level::debug);
  auto checked = server_options(a);
  if (!checked) {
    spdlog::error("{}", checked.error().message);
    return kExitUsage;
  }
  net::ServerOptions opts = std::move(*checked);
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
    return run_serve(*cfg);
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
    std::cout << ServeOptions::dump(*cfg);
    return kExitOk;
  });
}

}  // namespace apop::cli
