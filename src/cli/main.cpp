// `apop`: one binary, thin subcommands over the library layers.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/version.hpp"

int main(int argc, char** argv) {
  // Logs go to stderr; stdout is for command output (e.g. a generated secret).
  auto logger = spdlog::stderr_color_mt("apop");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");

  CLI::App app{"apop: a POP3 server and toolkit with APOP (RFC 1939)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(apop::cli::kVersionString));
  apop::cli::Registry registry;
  apop::cli::register_serve(app, registry);
  apop::cli::register_user(app, registry);
  apop::cli::register_deliver(app, registry);
  apop::cli::register_probe(app, registry);
  apop::cli::register_fetch(app, registry);
  apop::cli::register_migrate(app, registry);
  apop::cli::register_uidl(app, registry);
  apop::cli::register_bench(app, registry);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return apop::cli::kExitUsage;
  }
  return registry.run();
}
