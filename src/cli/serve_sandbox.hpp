// The experimental `apop serve --sandbox` (issue 19): the network workers'
// seccomp allow-list (net/sandbox.hpp) applied to today's single-process
// server, to prove the list on the real server and its interop workload
// before the workers exist. Hidden from --help; not a configuration key.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/serve_config.hpp"

namespace apop::cli {

// Adds the hidden flag --sandbox to `serve`, writing into `*enabled`.
void add_sandbox_flag(CLI::App* serve, bool* enabled);

// After start-up (store open, listeners bound, root dropped, TLS loaded),
// before the first client: applies the worker list plus its SQLite set.
// Refused (logged, false) unless the account store is the local SQLite file
// (`sqlite_store`), there is no metrics endpoint (its threads make sockets)
// and the log does not go to syslog (reconnecting makes a socket).
bool apply_serve_sandbox(const ServeConfig& a, bool sqlite_store);

}  // namespace apop::cli
