#include "cli/serve_sandbox.hpp"

#include <spdlog/spdlog.h>

#include "cli/logging.hpp"
#include "net/sandbox.hpp"

namespace apop::cli {

void add_sandbox_flag(CLI::App* serve, bool* enabled) {
  serve
      ->add_flag("--sandbox", *enabled,
                 "Experimental: seccomp allow-list of the network workers on the whole server "
                 "(SQLite account store only)")
      ->group("");  // hidden
}

bool apply_serve_sandbox(const ServeConfig& a, bool sqlite_store) {
  const char* refused = nullptr;
  auto log = parse_log_target(a.log);
  if (!sqlite_store) {
    refused = "needs the local SQLite account store";
  } else if (!a.metrics_listen.empty()) {
    refused = "cannot serve metrics (the endpoint's threads make sockets)";
  } else if (log && log->kind == LogTarget::Kind::syslog) {
    refused = "cannot log to syslog (a reconnection makes a socket)";
  }
  if (refused != nullptr) {
    spdlog::error("--sandbox {}", refused);
    return false;
  }
  net::SandboxOptions opts;
  opts.mbox = true;    // any account may have an mbox location
  opts.sqlite = true;  // the worker list plus what the SQLite store needs
  if (auto r = net::apply_worker_sandbox(opts); !r) {
    spdlog::error("{}", r.error().message);
    return false;
  }
  spdlog::warn("experimental: seccomp sandbox applied (worker list plus SQLite)");
  return true;
}

}  // namespace apop::cli
