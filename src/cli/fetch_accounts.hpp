// `apop fetch --config FILE [--daemon] [--metrics-listen ADDR:PORT]`: many
// accounts from a configuration file (client/fetch_config.hpp), polled once
// or, as a daemon, each on its interval (client/poll_scheduler.hpp), at most
// max_parallel at once. docs/fetch.md "Many accounts and the daemon".
#pragma once

#include <string>

#include "cli/pop3_target.hpp"
#include "client/fetch_config.hpp"
#include "common/result.hpp"

namespace apop::cli {

struct FetchConfigArgs {
  std::string file;
  bool daemon = false;
  std::string metrics_listen;  // ADDR:PORT; empty: none
  // The command line's --timeout, --insecure, --allow-plaintext,
  // --accept-downgrade, --max-messages, --max-listing-bytes and --verbose
  // apply to every account; auth, tls and ca_file come from each account.
  ConnectionArgs conn;
};

// Reads and checks `file`: the parser's checks, then each account's URL and
// tls against it (parse_url, resolve_endpoint). Errc::invalid with
// "FILE:LINE:COL: key KEY: problem" lines.
Result<client::FetchConfig> load_fetch_config(const std::string& file);

// The configuration as TOML, every key of every account with its effective
// value (for `apop config check --fetch FILE`). password_command shows its
// program only: its arguments may carry a secret.
std::string dump_fetch_config(const client::FetchConfig& cfg);

// Exit status of the once mode: 0 when every account's poll succeeded, else
// the largest FetchStatus among them; kExitConfig (78) for a bad file,
// kExitUsage (64) for a bad --metrics-listen. The daemon exits 0 after
// SIGTERM or SIGINT.
int run_fetch_config(const FetchConfigArgs& args);

}  // namespace apop::cli
