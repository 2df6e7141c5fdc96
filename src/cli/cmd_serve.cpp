// `apop serve`: the POP3 server.
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
#include "auth/username.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/fetch_accounts.hpp"
#include "cli/logging.hpp"
#include "cli/serve_config.hpp"
#include "cli/serve_sandbox.hpp"
#include "cli/serve_setup.hpp"
#include "cli/version.hpp"
#include "common/text.hpp"
#include "net/lmtp_server.hpp"
#include "net/privileges.hpp"
#include "net/server.hpp"
#include "pg/shared.hpp"
#include "store/mail_location.hpp"
#include "store/maildir.hpp"

namespace apop::cli {

namespace {

int run_serve(const ServeConfig& a, const Reread& reread) {
  if (a.workers > 0) return run_serve_workers(a, reread);
  auto prelude = serve_prelude(a);
  if (auto* e = std::get_if<Exit>(&prelude)) return e->code;
  if (!a.auth_user.empty()) {
    spdlog::error("auth_user needs workers (a separate auth process): set workers = N");
    return kExitConfig;
  }
  const auto& identity = std::get<Prelude>(prelude).identity;
  net::ServerOptions opts = std::move(std::get<Prelude>(prelude).options);
  const std::string hostname = a.hostname.empty() ? store::local_hostname() : a.hostname;
  opts.session.greeting_text = kGreeting;
  if (!check_identity(identity)) return kExitConfig;
  const std::optional<net::Identity>& id = identity.value();

  const DataDir dir = resolve_data_dir(a.data);
  auto opened = open_store(a, dir, id);
  if (auto* e = std::get_if<Exit>(&opened)) return e->code;
  OpenedCredentials& creds = std::get<OpenedCredentials>(opened);
  if (!apply_stored_policy(*creds.store, opts.session)) return kExitError;
  // The local SQLite file: APOP's check (a lookup and an MD5) runs on the
  // event loop rather than paying two thread hand-offs (docs/performance.md),
  // and last-login times are written behind, once a second, off the loop.
  opts.session.inline_apop = creds.postgres == nullptr;

  ReloadFixed fixed;
  fixed.apop_enabled = opts.session.apop_enabled;
  fixed.inline_apop = opts.session.inline_apop;
  fixed.creds = creds.store.get();
  auto services = build_services(std::move(creds), a, dir, hostname);
  auto challenges = services->challenges;
  net::Server server(std::move(opts), *services->throttled, services->opener(),
                     [challenges] { return challenges->next(); });
  // LMTP (before the privilege drop: a socket in a root-owned directory,
  // chown to Postfix's group). Accounts are looked up in the store the
  // logins use; mail goes where `apop deliver` puts it.
  auto lmtp_opts = lmtp_options(a, hostname).value();  // checked by server_options()
  std::unique_ptr<net::StoreLmtpDelivery> lmtp_delivery;
  std::unique_ptr<net::LmtpServer> lmtp;
  if (!lmtp_opts.listen.empty() && a.experimental_sandbox) {
    // The workers' allow-list has no delivery calls (memfd_create, link, fsync of new/).
    spdlog::error("--sandbox does not cover LMTP delivery: drop lmtp_listen or --sandbox");
    return kExitConfig;
  }
  if (!lmtp_opts.listen.empty()) {
    auth::CredentialStore* accounts = services->creds.store.get();
    const store::QuotaLimits default_limits = default_quota(a).value();  // checked at start
    lmtp_delivery = std::make_unique<net::StoreLmtpDelivery>(
        [accounts, default_limits](std::string_view user) {
          net::StoreLmtpDelivery::Account out;
          if (!auth::is_valid_username(user)) return out;  // unknown
          auto found = accounts->has_user(user);
          if (!found) {
            spdlog::warn("lmtp: user={} {}", user, found.error().message);
            out.status = net::LmtpRecipient::temporary;
            return out;
          }
          if (!*found) return out;
          auto own = accounts->mail_location(user);
          if (!own) {
            spdlog::warn("lmtp: user={} {}", user, own.error().message);
            out.status = net::LmtpRecipient::temporary;
            return out;
          }
          // Its own quota limits, else the server's defaults (store/quota.hpp).
          auto quota = accounts->quota(user);
          if (!quota) {
            spdlog::warn("lmtp: user={} {}", user, quota.error().message);
            out.status = net::LmtpRecipient::temporary;
            return out;
          }
          out.status = net::LmtpRecipient::ok;
          out.mail_location = *own;
          out.quota = effective_quota(*quota, default_limits);
          return out;
        },
        store::parse_mail_location(a.mail_location, true).value(), dir.root);
    lmtp_delivery->on_quota_rejection = [&server] { server.count_quota_rejection(); };
    lmtp = std::make_unique<net::LmtpServer>(std::move(lmtp_opts), *lmtp_delivery);
    if (auto r = lmtp->bind(); !r) {
      spdlog::error("{}", r.error().message);
      return kExitError;
    }
  }
  if (!bind_and_drop(server, a, id)) return kExitError;
  if (lmtp) lmtp->log_listening();
  if (a.experimental_sandbox && !apply_serve_sandbox(a, services->creds.sqlite != nullptr)) {
    return kExitError;
  }

  // After a drop, root-only files (a TLS key) can no longer be re-read.
  if (id) {
    fixed.hint =
        " (the server runs as user " + id->user + ": the files it re-reads must be readable by it)";
  }
  auto running = std::make_shared<ServeConfig>(a);
  server.on_reload([&server, &reread, running, fixed] { reload(server, reread, *running, fixed); });
  spdlog::info("serving data={} hostname={}", dir.root.string(), hostname);
  if (lmtp) lmtp->start();
  server.run();
  if (lmtp) lmtp->stop();
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
  auto sandbox = std::make_shared<bool>(false);
  add_sandbox_flag(sub, sandbox.get());
  registry.add(sub, [opts, config_file, sandbox] {
    auto cfg = effective(*opts, *config_file);
    if (cfg) cfg->experimental_sandbox = *sandbox;
    if (cfg) cfg->config_path = *config_file;
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
  auto fetch_file = std::make_shared<std::string>();
  CLI::Option* server_opt =
      check->add_option("--config", *check_file, "TOML configuration file of `apop serve`")
          ->check(CLI::ExistingFile);
  check
      ->add_option("--fetch", *fetch_file,
                   "TOML configuration file of `apop fetch --config` (accounts) instead")
      ->check(CLI::ExistingFile)
      ->excludes(server_opt);
  check_opts->add_to(check, std::make_shared<ServeConfig>());
  registry.add(check, [check_opts, check_file, fetch_file] {
    if (!fetch_file->empty()) {
      auto fc = load_fetch_config(*fetch_file);
      if (!fc) {
        std::cerr << "apop config check: " << fc.error().message << "\n";
        return kExitConfig;
      }
      std::cout << dump_fetch_config(*fc);
      return kExitOk;
    }
    if (check_file->empty()) {
      std::cerr << "apop config check: --config FILE (server) or --fetch FILE is required\n";
      return kExitUsage;
    }
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
