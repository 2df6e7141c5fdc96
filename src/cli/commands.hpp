// Subcommand registration. Each register_* adds its options to the app and
// a runner to the registry; main() runs the one that was chosen.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace apop::cli {

// A CLI11 validator for options that name an account
// (auth::is_valid_username); a bad name is a usage error.
CLI::Validator user_name_validator();

class Registry {
 public:
  void add(CLI::App* sub, std::function<int()> run) { entries_.push_back({sub, std::move(run)}); }
  int run() const {
    for (const auto& e : entries_) {
      if (e.sub->parsed()) return e.run();
    }
    return 64;
  }

 private:
  struct Entry {
    CLI::App* sub;
    std::function<int()> run;
  };
  std::vector<Entry> entries_;
};

void register_serve(CLI::App& app, Registry& registry);
void register_user(CLI::App& app, Registry& registry);
// `apop user import` (cmd_user_import.cpp), called by register_user.
void register_user_import(CLI::App& user, Registry& registry);
void register_user_quota(CLI::App& user, Registry& registry);
void register_deliver(CLI::App& app, Registry& registry);
void register_probe(CLI::App& app, Registry& registry);
void register_fetch(CLI::App& app, Registry& registry);
// `apop fetch import-config` (cmd_fetch_import.cpp), called by register_fetch.
void register_fetch_import(CLI::App* fetch, Registry& registry);
void register_migrate(CLI::App& app, Registry& registry);
void register_uidl(CLI::App& app, Registry& registry);
void register_bench(CLI::App& app, Registry& registry);

}  // namespace apop::cli
